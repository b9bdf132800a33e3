package ring

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weirlb/weir/umem"
)

func smallConfig(u *umem.Umem, queue uint32) Config {
	return Config{Umem: u, Queue: queue, FillSize: 128, CompletionSize: 128, RXSize: 128, TXSize: 128}
}

func mustCheck(t *testing.T, u *umem.Umem) umem.Accounting {
	t.Helper()
	if err := u.Check(); err != nil {
		t.Fatal(err)
	}
	return u.Accounting()
}

func TestReceive(t *testing.T) {
	l := newLab(t, 1)
	u := newUmem(t, umem.Config{FrameSize: 2048, FrameCount: 256})
	s := l.open(smallConfig(u, 0))

	if s.Mode() != ModeCopy {
		t.Fatalf("mode on veth = %v, want copy", s.Mode())
	}
	if a := mustCheck(t, u); a.KernelRX != 128 || a.Free != 128 || a.InHand != 0 {
		t.Fatalf("after Refill: %v", a)
	}

	var sent [][]byte
	for i := range 100 {
		f := l.frame(uint32(i), 60+i*14) // 60 .. 1446 bytes
		sent = append(sent, f)
		l.send(f)
	}
	got := receive(t, s, len(sent), 5*time.Second)
	if len(got) != len(sent) {
		t.Fatalf("received %d of %d frames", len(got), len(sent))
	}
	for i := range sent {
		if !bytes.Equal(got[i], sent[i]) {
			t.Fatalf("frame %d differs:\n got %x\nwant %x", i, got[i], sent[i])
		}
	}
	if a := mustCheck(t, u); a.InHand != 0 || a.KernelRX != 128 || a.KernelTX != 0 {
		t.Fatalf("after receiving and refilling: %v", a)
	}
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.RXDropped != 0 || st.RXRingFull != 0 || st.RXInvalidDescs != 0 {
		t.Fatalf("drops while the fill ring was full: %+v", st)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if a := mustCheck(t, u); a.Free != a.Total {
		t.Fatalf("after Close: %v", a)
	}
}

// Transmit more than one kick moves (32 in copy mode) from frames written at
// different offsets, and see every byte on the peer.
func TestTransmit(t *testing.T) {
	l := newLab(t, 1)
	u := newUmem(t, umem.Config{FrameSize: 2048, FrameCount: 256})
	s := l.open(smallConfig(u, 0))

	const n = 100
	var sent [][]byte
	var descs []Desc
	for i := range n {
		base, ok := u.AllocOne()
		if !ok {
			t.Fatal("out of frames")
		}
		// Packets at the frame base, at the data offset, and in between.
		addr := base + uint64(i%3)*uint64(u.DataOffset())/2
		f := l.frame(uint32(i), 64+i*10)
		// From the XDP side to the peer.
		copy(f[0:6], l.peerMAC[:])
		copy(f[6:12], l.xdpMAC[:])
		copy(u.Frame(addr, uint32(len(f))), f)
		sent = append(sent, f)
		descs = append(descs, Desc{Addr: addr, Len: uint32(len(f))})
	}
	if got := s.TX().Put(descs); got != n {
		t.Fatalf("TX Put = %d, want %d", got, n)
	}
	if a := mustCheck(t, u); a.KernelTX != n || a.InHand != 0 {
		t.Fatalf("after TX submit: %v", a)
	}
	out, err := s.FlushTX(16)
	if err != nil || out != 0 {
		t.Fatalf("FlushTX = %d, %v; want everything sent", out, err)
	}
	st, _ := s.Stats()
	per := max(uint64(s.TXBudget()), KernelTXBudget)
	if st.Kicks < (n+per-1)/per {
		t.Fatalf("%d kicks moved %d descriptors; one kick moves at most %d", st.Kicks, n, per)
	}
	for i := range sent {
		f := l.recvPeer(2 * time.Second)
		if f == nil {
			t.Fatalf("peer received %d of %d frames", i, n)
		}
		if !bytes.Equal(f, sent[i]) {
			t.Fatalf("frame %d differs on the peer:\n got %x\nwant %x", i, f, sent[i])
		}
	}

	// Every completion returns the address that was transmitted.
	var completed []uint64
	deadline := time.Now().Add(2 * time.Second)
	for len(completed) < n && time.Now().Before(deadline) {
		c, idx := s.Completion().Peek(64)
		for i := range c {
			completed = append(completed, s.Completion().Get(idx+i))
		}
		s.Completion().Release(c)
	}
	if len(completed) != n {
		t.Fatalf("%d completions, want %d", len(completed), n)
	}
	for i, d := range descs {
		if completed[i] != d.Addr {
			t.Fatalf("completion %d = %#x, want the transmitted address %#x", i, completed[i], d.Addr)
		}
	}
	u.Free(completed)
	if a := mustCheck(t, u); a.KernelTX != 0 || a.InHand != 0 || a.Free != 256-128 {
		t.Fatalf("after completions: %v", a)
	}
}

// The appliance's encapsulation path: receive, prepend outer headers in the
// headroom, transmit from the lower address in the same frame, free the
// completed (interior) address.
func TestForwardInPlace(t *testing.T) {
	l := newLab(t, 1)
	u := newUmem(t, umem.Config{FrameSize: 2048, FrameCount: 256})
	s := l.open(smallConfig(u, 0))

	outer := make([]byte, 20)
	copy(outer[0:6], l.peerMAC[:])
	copy(outer[6:12], l.xdpMAC[:])
	binary.BigEndian.PutUint16(outer[12:14], testEtherType)
	copy(outer[14:], "OUTER!")

	const n = 64
	var inner [][]byte
	for i := range n {
		f := l.frame(uint32(i), 100+i)
		inner = append(inner, f)
		l.send(f)
	}
	forwarded := 0
	deadline := time.Now().Add(5 * time.Second)
	for forwarded < n && time.Now().Before(deadline) {
		m, idx := s.RX().Peek(32)
		if m == 0 {
			s.Wait(10 * time.Millisecond)
			continue
		}
		got, tidx := s.TX().Reserve(m)
		if got != m {
			t.Fatalf("TX reserve %d of %d", got, m)
		}
		for i := range m {
			d := s.RX().Get(idx + i)
			addr, pkt, ok := u.Prepend(d.Addr, d.Len, uint32(len(outer)))
			if !ok {
				t.Fatalf("no headroom in front of %#x", d.Addr)
			}
			copy(pkt, outer)
			s.TX().Set(tidx+i, Desc{Addr: addr, Len: d.Len + uint32(len(outer))})
		}
		s.RX().Release(m)
		s.TX().Submit(m)
		forwarded += int(m)
		if _, err := s.FlushTX(8); err != nil {
			t.Fatal(err)
		}
		mustCheck(t, u)
	}
	if forwarded != n {
		t.Fatalf("forwarded %d of %d", forwarded, n)
	}
	for i := range n {
		f := l.recvPeer(2 * time.Second)
		want := append(bytes.Clone(outer), inner[i]...)
		if !bytes.Equal(f, want) {
			t.Fatalf("forwarded frame %d:\n got %x\nwant %x", i, f, want)
		}
	}
	reaped := 0
	for reaped < n && time.Now().Before(deadline) {
		reaped += int(s.ReapCompletions())
	}
	if a := mustCheck(t, u); reaped != n || a.InHand != 0 || a.KernelTX != 0 || a.Free+a.KernelRX != a.Total {
		t.Fatalf("reaped %d: %v", reaped, a)
	}
}

func TestZeroCopyPolicy(t *testing.T) {
	l := newLab(t, 1)
	u := newUmem(t, umem.Config{FrameSize: 2048, FrameCount: 256})

	cfg := smallConfig(u, 0)
	cfg.ZeroCopy = ZeroCopyRequire
	_, err := l.tryOpen(cfg)
	if err == nil {
		t.Fatal("zero-copy required on veth: Open succeeded")
	}
	if !errors.Is(err, unix.EOPNOTSUPP) {
		t.Fatalf("Open = %v, want EOPNOTSUPP", err)
	}
	for _, want := range []string{"bind " + l.xdpName + " queue 0 in zero-copy mode", "veth never has", "auto or never"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	// The failed Open undid everything: the umem and the queue are free.
	if a := mustCheck(t, u); a.Free != a.Total {
		t.Fatalf("after failed Open: %v", a)
	}

	cfg.ZeroCopy = ZeroCopyAuto
	s, err := l.tryOpen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if s.Mode() != ModeCopy || !errors.Is(s.ZeroCopyError(), unix.EOPNOTSUPP) {
		t.Fatalf("auto on veth: mode %v, zero-copy error %v; want copy after EOPNOTSUPP", s.Mode(), s.ZeroCopyError())
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	cfg.ZeroCopy = ZeroCopyNever
	s, err = l.tryOpen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if s.Mode() != ModeCopy || s.ZeroCopyError() != nil {
		t.Fatalf("never: mode %v, zero-copy error %v", s.Mode(), s.ZeroCopyError())
	}
	if s.Mode().String() != "copy" || ModeZeroCopy.String() != "zero-copy" {
		t.Fatalf("mode names %q %q", s.Mode(), ModeZeroCopy)
	}
}

func TestOpenErrors(t *testing.T) {
	l := newLab(t, 1)
	u := newUmem(t, umem.Config{FrameSize: 2048, FrameCount: 64})

	cfg := smallConfig(u, 3) // the veth has one queue
	_, err := l.tryOpen(cfg)
	if !errors.Is(err, unix.EINVAL) || !strings.Contains(err.Error(), "queue does not exist") {
		t.Fatalf("Open on a missing queue = %v", err)
	}
	cfg = smallConfig(u, 0)
	cfg.Ifindex = 1 << 20
	var s *Socket
	l.do(func() error { s, err = Open(cfg); return nil })
	if err == nil {
		s.Close()
		t.Fatal("Open on a missing interface succeeded")
	}
	if !errors.Is(err, unix.ENODEV) || !strings.Contains(err.Error(), "no interface with index") {
		t.Fatalf("Open on a missing interface = %v", err)
	}
	if a := mustCheck(t, u); a.Free != a.Total {
		t.Fatalf("after failed Opens: %v", a)
	}

	// A queue can hold one socket; the second is refused with EBUSY.
	first := l.open(smallConfig(u, 0))
	u2 := newUmem(t, umem.Config{FrameSize: 2048, FrameCount: 64})
	_, err = l.tryOpen(smallConfig(u2, 0))
	if !errors.Is(err, unix.EBUSY) || !strings.Contains(err.Error(), "another AF_XDP socket is bound to this queue") {
		t.Fatalf("second socket on a bound queue = %v", err)
	}
	// One umem serves one socket.
	_, err = l.tryOpen(smallConfig(u, 0))
	if err == nil || !strings.Contains(err.Error(), "its own umem") {
		t.Fatalf("second socket on a used umem = %v", err)
	}
	first.Close()
}

// Close releases the queue at once, and reclaims every frame, even those the
// worker still held.
func TestCloseRebind(t *testing.T) {
	l := newLab(t, 1)
	u := newUmem(t, umem.Config{FrameSize: 2048, FrameCount: 256})

	for round := range 3 {
		start := time.Now()
		s := l.open(smallConfig(u, 0))
		t.Logf("round %d: bound in %v", round, time.Since(start))

		for i := range 10 {
			l.send(l.frame(uint32(i), 80))
		}
		got := receive(t, s, 10, 5*time.Second)
		if len(got) != 10 {
			t.Fatalf("round %d: received %d of 10", round, len(got))
		}
		// Keep three frames in hand and leave some in the TX ring.
		held := make([]uint64, 3)
		u.Alloc(held)
		s.TX().Put([]Desc{{Addr: held[0], Len: 60}})
		if a := mustCheck(t, u); a.InHand != 2 || a.KernelTX != 1 {
			t.Fatalf("round %d before Close: %v", round, a)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if a := mustCheck(t, u); a.Free != a.Total {
			t.Fatalf("round %d after Close: %v", round, a)
		}
		// A closed socket reads as empty and full, and says it is closed.
		if n, _ := s.RX().Peek(64); n != 0 {
			t.Fatalf("closed RX ring peeks %d", n)
		}
		if n, _ := s.TX().Reserve(1); n != 0 {
			t.Fatalf("closed TX ring reserves %d", n)
		}
		if err := s.KickTX(); !errors.Is(err, ErrClosed) {
			t.Fatalf("KickTX after Close = %v", err)
		}
		if _, err := s.Stats(); !errors.Is(err, ErrClosed) {
			t.Fatalf("Stats after Close = %v", err)
		}
		if err := s.Close(); !errors.Is(err, ErrClosed) {
			t.Fatalf("second Close = %v", err)
		}
	}
}

// Two queues, one socket each: every flow arrives exactly once, on one of
// them, and both queues carry traffic.
func TestMultiQueue(t *testing.T) {
	l := newLab(t, 2)
	var socks [2]*Socket
	for q := range socks {
		socks[q] = l.open(smallConfig(newUmem(t, umem.Config{FrameSize: 2048, FrameCount: 256}), uint32(q)))
	}
	const flows = 128
	for i := range flows {
		l.send(l.udpFrame(uint16(10000+i), []byte("multi-queue")))
	}
	seen := map[uint16]int{}
	var perQueue [2]int
	deadline := time.Now().Add(5 * time.Second)
	for len(seen) < flows && time.Now().Before(deadline) {
		for q, s := range socks {
			for _, f := range receive(t, s, 1, 5*time.Millisecond) {
				if len(f) < 42 || binary.BigEndian.Uint16(f[12:14]) != unix.ETH_P_IP {
					t.Fatalf("queue %d received a foreign frame %x", q, f)
				}
				seen[binary.BigEndian.Uint16(f[34:36])]++
				perQueue[q]++
			}
		}
	}
	if len(seen) != flows {
		t.Fatalf("received %d of %d flows", len(seen), flows)
	}
	for port, c := range seen {
		if c != 1 {
			t.Fatalf("flow %d received %d times", port, c)
		}
	}
	if perQueue[0] == 0 || perQueue[1] == 0 {
		t.Fatalf("all flows on one queue: %v", perQueue)
	}
	t.Logf("flows per queue: %v", perQueue)
	for _, s := range socks {
		mustCheck(t, s.Umem())
	}
}

func TestStats(t *testing.T) {
	l := newLab(t, 1)
	u := newUmem(t, umem.Config{FrameSize: 2048, FrameCount: 256})
	s, err := l.tryOpen(smallConfig(u, 0))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.xsks.Put(uint32(0), uint32(s.FD())); err != nil {
		t.Fatal(err)
	}
	// No Refill: the kernel finds the fill ring empty and drops.
	for i := range 20 {
		l.send(l.frame(uint32(i), 60))
	}
	var st Stats
	deadline := time.Now().Add(2 * time.Second)
	for st.RXDropped < 20 && time.Now().Before(deadline) {
		st, err = s.Stats()
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	if st.RXDropped != 20 || st.RXFillRingEmptyDescs == 0 {
		t.Fatalf("20 frames on an empty fill ring: %+v", st)
	}

	// An invalid TX descriptor is counted. Kernels differ on whether it then
	// completes (6.18 does); either way the ledger must account for it.
	a, _ := u.AllocOne()
	s.TX().Put([]Desc{{Addr: a + 2000, Len: 100}}) // crosses the frame end
	if out, err := s.FlushTX(4); err != nil || out != 0 {
		t.Fatalf("FlushTX = %d, %v", out, err)
	}
	if st, _ = s.Stats(); st.TXInvalidDescs != 1 {
		t.Fatalf("after an invalid descriptor: %+v", st)
	}
	time.Sleep(10 * time.Millisecond)
	reaped := s.ReapCompletions()
	acc := mustCheck(t, u)
	if int(reaped)+acc.KernelTX != 1 || acc.InHand != 0 {
		t.Fatalf("invalid descriptor: %d completed, %v", reaped, acc)
	}
	t.Logf("invalid TX descriptor completed: %v", reaped == 1)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if acc := mustCheck(t, u); acc.Free != acc.Total {
		t.Fatalf("after Close: %v", acc)
	}
}

// XDP_MAX_TX_SKB_BUDGET lets one kick move a whole batch in copy mode; by
// default the budget is the TX ring's size, and the kernel's own budget of
// 32 is what an explicit KernelTXBudget gives.
func TestTXBudget(t *testing.T) {
	for _, tc := range []struct {
		budget, want uint32 // want: the budget read back
		kicks        uint64 // for 200 descriptors
	}{
		{0, 256, 1},
		{256, 256, 1},
		{KernelTXBudget, KernelTXBudget, 7},
	} {
		t.Run(fmt.Sprint(tc.budget), func(t *testing.T) {
			l := newLab(t, 1)
			u := newUmem(t, umem.Config{FrameSize: 2048, FrameCount: 512})
			cfg := smallConfig(u, 0)
			cfg.TXSize, cfg.CompletionSize, cfg.TXBudget = 256, 256, tc.budget
			s := l.open(cfg)
			if s.TXBudget() == 0 {
				t.Skip("kernel without XDP_MAX_TX_SKB_BUDGET (before 6.17)")
			}
			if s.TXBudget() != tc.want {
				t.Fatalf("TXBudget() = %d, want %d", s.TXBudget(), tc.want)
			}
			descs := make([]Desc, 200)
			for i := range descs {
				a, _ := u.AllocOne()
				f := l.frame(uint32(i), 60)
				copy(f[0:6], l.peerMAC[:])
				copy(u.Frame(a, 60), f)
				descs[i] = Desc{Addr: a, Len: 60}
			}
			s.TX().Put(descs)
			if out, err := s.FlushTX(16); err != nil || out != 0 {
				t.Fatalf("FlushTX = %d, %v", out, err)
			}
			// The kernel cannot read the option back (getsockopt gives
			// EOPNOTSUPP on 6.18): the kicks one FlushTX takes prove it.
			if st, _ := s.Stats(); st.Kicks != tc.kicks {
				t.Fatalf("200 descriptors with a budget of %d took %d kicks, want %d", tc.want, st.Kicks, tc.kicks)
			}
			for i := range descs {
				if l.recvPeer(2*time.Second) == nil {
					t.Fatalf("peer received %d of %d", i, len(descs))
				}
			}
		})
	}
}

// The syscall paths a worker runs per batch allocate nothing.
func TestNoAllocsKernel(t *testing.T) {
	l := newLab(t, 1)
	u := newUmem(t, umem.Config{FrameSize: 2048, FrameCount: 256})
	s := l.open(smallConfig(u, 0))
	a, _ := u.AllocOne()
	copy(u.Frame(a, 60), l.frame(0, 60))
	d := []Desc{{Addr: a, Len: 60}}
	done := make([]uint64, 1)
	allocs := testing.AllocsPerRun(50, func() {
		s.TX().Put(d)
		if _, err := s.FlushTX(4); err != nil {
			t.Fatal(err)
		}
		// The completion comes when the peer has consumed the skb.
		deadline := time.Now().Add(time.Second)
		for s.Completion().Take(done) == 0 && time.Now().Before(deadline) {
		}
		d[0].Addr = done[0]
		if err := s.WakeupRX(); err != nil {
			t.Fatal(err)
		}
		s.Refill()
		if _, err := s.Wait(0); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("per-batch socket paths allocate %v times", allocs)
	}
	if acc := mustCheck(t, u); acc.InHand != 1 || acc.KernelTX != 0 {
		t.Fatalf("after the loop: %v", acc)
	}
}

// Copy-mode TX on veth, the path the field notes measured as the cost:
// 64-byte frames in batches of 64, with the kernel's budget of 32
// descriptors per sendto and with a budget of the whole ring (the default).
func BenchmarkVethTX(b *testing.B) {
	for _, budget := range []uint32{KernelTXBudget, 0} {
		b.Run(fmt.Sprintf("budget=%d", budget), func(b *testing.B) {
			l := newLab(b, 1)
			u := newUmem(b, umem.Config{FrameSize: 2048, FrameCount: 4096})
			cfg := Config{Umem: u, FillSize: 64, RXSize: 64, TXSize: 1024, CompletionSize: 1024, TXBudget: budget}
			cfg.Ifindex = l.xdpIf
			var s *Socket
			l.do(func() (err error) { s, err = Open(cfg); return err })
			defer s.Close()
			// The peer's packet socket would clone every frame: close it.
			unix.Close(l.pkt)
			l.pkt = -1
			frame := l.frame(0, 64)
			copy(frame[0:6], l.peerMAC[:])
			free := make([]uint64, 4096)
			nfree := u.Alloc(free)
			for _, a := range free[:nfree] {
				copy(u.Frame(a, 64), frame)
			}
			descs := make([]Desc, 64)
			sent := 0
			b.ResetTimer()
			for sent < b.N*64 {
				// Completed frames still hold the frame: reuse as is.
				done := s.Completion().Take(free[nfree:])
				nfree += int(done)
				k := min(64, nfree)
				for i := range k {
					descs[i] = Desc{Addr: free[nfree-1-i], Len: 64}
				}
				got := int(s.TX().Put(descs[:k]))
				nfree -= got
				sent += got
				if _, err := s.FlushTX(64); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			reportPkts(b, sent)
			st, _ := s.Stats()
			b.ReportMetric(float64(sent)/float64(st.Kicks), "pkts/kick")
		})
	}
}
