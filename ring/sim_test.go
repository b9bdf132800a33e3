package ring

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/weirlb/weir/umem"
)

func newMemUmem(tb testing.TB, frames uint32) *umem.Umem {
	tb.Helper()
	u, err := umem.New(umem.Config{FrameSize: 2048, FrameCount: frames})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := u.Close(); err != nil {
			tb.Error(err)
		}
	})
	return u
}

func newMem(tb testing.TB, frames uint32, size uint32) (*Socket, *SimKernel) {
	tb.Helper()
	s, k, err := NewInMemory(Config{Umem: newMemUmem(tb, frames), FillSize: size, CompletionSize: size, RXSize: size, TXSize: size})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil && !errors.Is(err, ErrClosed) {
			tb.Error(err)
		}
	})
	return s, k
}

func checkLedger(t *testing.T, u *umem.Umem, want umem.Accounting) {
	t.Helper()
	if err := u.Check(); err != nil {
		t.Fatal(err)
	}
	want.Total = int(u.Frames())
	if got := u.Accounting(); got != want {
		t.Fatalf("accounting %v, want %v", got, want)
	}
}

// A worker's whole cycle against the in-memory kernel, with the ledger
// checked at every step.
func TestInMemoryForward(t *testing.T) {
	s, k := newMem(t, 64, 16)
	u := s.Umem()
	if s.Mode() != ModeInMemory || s.FD() != -1 {
		t.Fatalf("mode %v fd %d", s.Mode(), s.FD())
	}
	if n := s.Refill(); n != 16 {
		t.Fatalf("Refill = %d, want the fill ring's 16", n)
	}
	checkLedger(t, u, umem.Accounting{Free: 48, KernelRX: 16})

	var pkts [][]byte
	for i := range 10 {
		pkts = append(pkts, []byte(fmt.Sprintf("packet %d", i)))
	}
	if n := k.Deliver(pkts); n != 10 {
		t.Fatalf("Deliver = %d", n)
	}
	rx := make([]Desc, 32)
	n := s.RX().Take(rx)
	if n != 10 {
		t.Fatalf("RX Take = %d", n)
	}
	checkLedger(t, u, umem.Accounting{Free: 48, KernelRX: 6, InHand: 10})

	// Prepend a header in the headroom and transmit from the new address.
	for i := range n {
		if !bytes.Equal(u.Frame(rx[i].Addr, rx[i].Len), pkts[i]) {
			t.Fatalf("packet %d = %q", i, u.Frame(rx[i].Addr, rx[i].Len))
		}
		addr, pkt, ok := u.Prepend(rx[i].Addr, rx[i].Len, 4)
		if !ok {
			t.Fatal("no headroom")
		}
		copy(pkt, "HDR:")
		rx[i] = Desc{Addr: addr, Len: rx[i].Len + 4}
	}
	if got := s.TX().Put(rx[:n]); got != n {
		t.Fatalf("TX Put = %d", got)
	}
	checkLedger(t, u, umem.Accounting{Free: 48, KernelRX: 6, KernelTX: 10})
	if out, err := s.FlushTX(4); err != nil || out != 10 {
		t.Fatalf("FlushTX = %d, %v; the in-memory kernel sends only when it runs", out, err)
	}

	var sent [][]byte
	if m := k.Transmit(64, func(d Desc, b []byte) { sent = append(sent, bytes.Clone(b)) }); m != 10 {
		t.Fatalf("Transmit = %d", m)
	}
	for i := range sent {
		if want := "HDR:" + string(pkts[i]); string(sent[i]) != want {
			t.Fatalf("sent %q, want %q", sent[i], want)
		}
	}
	if got := s.ReapCompletions(); got != 10 {
		t.Fatalf("ReapCompletions = %d", got)
	}
	checkLedger(t, u, umem.Accounting{Free: 58, KernelRX: 6})

	st, err := s.Stats()
	if err != nil || st.Kicks != 1 {
		t.Fatalf("Stats = %+v, %v; want one kick", st, err)
	}

	// Close hands everything back, including frames still in hand.
	u.AllocOne()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	checkLedger(t, u, umem.Accounting{Free: 64})
	if err := s.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second Close = %v", err)
	}
	if n, _ := s.RX().Peek(1); n != 0 {
		t.Fatal("closed RX ring not empty")
	}
	if s.Refill() != 0 || s.ReapCompletions() != 0 {
		t.Fatal("closed socket moved frames")
	}
	if err := s.KickTX(); !errors.Is(err, ErrClosed) {
		t.Fatalf("KickTX after Close = %v", err)
	}
	// The umem serves a new socket.
	s2, _, err := NewInMemory(Config{Umem: u})
	if err != nil {
		t.Fatal(err)
	}
	s2.Close()
}

func TestRecycleCompletions(t *testing.T) {
	s, k := newMem(t, 64, 8)
	u := s.Umem()
	s.Refill()
	k.DeliverLen(8, 60)
	rx := make([]Desc, 8)
	s.RX().Take(rx)
	for i := range rx {
		rx[i].Addr -= 20 // transmitted from the headroom
	}
	s.TX().Put(rx)
	checkLedger(t, u, umem.Accounting{Free: 56, KernelTX: 8})
	// Make the fill ring short of room: 3 frames the kernel has not taken.
	s.Refill()
	k.DeliverLen(5, 60)
	checkLedger(t, u, umem.Accounting{Free: 48, KernelRX: 8, KernelTX: 8})
	k.Transmit(8, nil)
	if n := s.RecycleCompletions(); n != 8 {
		t.Fatalf("RecycleCompletions = %d", n)
	}
	// 5 went back on the fill ring (its 5 free slots), 3 to the free stack.
	checkLedger(t, u, umem.Accounting{Free: 51, KernelRX: 13})
	if got := s.Fill().Outstanding(); got != 3+5 {
		t.Fatalf("fill ring holds %d", got)
	}
	// The kernel receives into the recycled frames at their data offset.
	s.RX().Take(rx)
	u.Free(descAddrs(rx[:5]))
	k.DeliverLen(8, 60)
	n := s.RX().Take(rx)
	for _, d := range rx[:n] {
		if u.Room(d.Addr) != u.DataOffset() {
			t.Fatalf("recycled frame received at %#x", d.Addr)
		}
	}
	u.Free(descAddrs(rx[:n]))
	checkLedger(t, u, umem.Accounting{Free: 64})
}

func descAddrs(ds []Desc) []uint64 {
	a := make([]uint64, len(ds))
	for i, d := range ds {
		a[i] = d.Addr
	}
	return a
}

func TestInMemoryDrops(t *testing.T) {
	s, k := newMem(t, 64, 8)
	u := s.Umem()
	pkt := [][]byte{make([]byte, 60)}

	// Empty fill ring: dropped.
	if n := k.Deliver(pkt); n != 0 {
		t.Fatalf("Deliver with an empty fill ring = %d", n)
	}
	// Full RX ring: dropped.
	s.Refill()
	if n := k.DeliverLen(12, 60); n != 8 {
		t.Fatalf("DeliverLen(12) into an RX ring of 8 = %d", n)
	}
	// Too large for a frame: dropped, the frame stays with the kernel.
	s.RX().Take(make([]Desc, 8))
	u.Free(allAddrs(t, u, 8))
	s.Refill()
	if n := k.Deliver([][]byte{make([]byte, u.MaxPacket()+1)}); n != 0 {
		t.Fatalf("oversized Deliver = %d", n)
	}
	checkLedger(t, u, umem.Accounting{Free: 56, KernelRX: 8})

	// Invalid TX descriptors are counted, not sent, and completed.
	a, _ := u.AllocOne()
	s.TX().Put([]Desc{{Addr: a + 2000, Len: 100}, {Addr: a, Len: 0}, {Addr: 1 << 40, Len: 10}})
	if n := k.Transmit(8, func(Desc, []byte) { t.Fatal("invalid descriptor sent") }); n != 0 {
		t.Fatalf("Transmit of invalid descriptors = %d", n)
	}
	done := make([]uint64, 8)
	if n := s.Completion().Take(done); n != 3 {
		t.Fatalf("%d completions of 3 invalid descriptors", n)
	}
	u.FreeOne(done[0])

	st, _ := s.Stats()
	want := Stats{RXDropped: 2, RXRingFull: 4, RXFillRingEmptyDescs: 1, TXInvalidDescs: 3}
	if st != want {
		t.Fatalf("stats %+v, want %+v", st, want)
	}
	checkLedger(t, u, umem.Accounting{Free: 56, KernelRX: 8})
}

// allAddrs rebuilds the addresses of n frames the test took off the RX ring
// (the kernel used the fill ring's frames in order: 0, 2048, ...).
func allAddrs(t *testing.T, u *umem.Umem, n int) []uint64 {
	t.Helper()
	a := make([]uint64, n)
	for i := range a {
		a[i] = uint64(i) * uint64(u.FrameSize())
	}
	return a
}

func TestNeedWakeupFlags(t *testing.T) {
	s, k := newMem(t, 64, 8)
	if s.NeedWakeupFill() || !s.NeedWakeupTX() {
		t.Fatalf("in-memory default: fill %v tx %v, want veth's false/true", s.NeedWakeupFill(), s.NeedWakeupTX())
	}
	k.SetNeedWakeup(true, false)
	if !s.NeedWakeupFill() || s.NeedWakeupTX() {
		t.Fatal("flags not seen")
	}
	// TX needs no wakeup: FlushTX leaves the ring to the "driver".
	a, _ := s.Umem().AllocOne()
	s.TX().Put([]Desc{{Addr: a, Len: 60}})
	if out, _ := s.FlushTX(4); out != 1 {
		t.Fatalf("FlushTX = %d", out)
	}
	if st, _ := s.Stats(); st.Kicks != 0 {
		t.Fatalf("%d kicks although the kernel did not ask", st.Kicks)
	}

	// Without need_wakeup every TX batch is kicked and RX never is.
	u := newMemUmem(t, 16)
	s2, k2, err := NewInMemory(Config{Umem: u, NoNeedWakeup: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	k2.SetNeedWakeup(true, false)
	if s2.NeedWakeupFill() || !s2.NeedWakeupTX() {
		t.Fatal("need_wakeup disabled but flags honoured")
	}
}

func TestInMemoryWait(t *testing.T) {
	s, k := newMem(t, 64, 8)
	s.Refill()
	if ok, err := s.Wait(time.Millisecond); ok || err != nil {
		t.Fatalf("Wait on an empty ring = %v, %v", ok, err)
	}
	go k.DeliverLen(1, 60)
	if ok, err := s.Wait(5 * time.Second); !ok || err != nil {
		t.Fatalf("Wait with a packet coming = %v, %v", ok, err)
	}
}

// The per-batch paths of a worker, and of the in-memory kernel, allocate
// nothing.
func TestNoAllocs(t *testing.T) {
	s, k := newMem(t, 256, 64)
	s.Refill()
	rx := make([]Desc, 64)
	allocs := testing.AllocsPerRun(200, func() {
		k.DeliverLen(32, 64)
		n, idx := s.RX().Peek(64)
		got, tidx := s.TX().Reserve(n)
		for i := range got {
			d := s.RX().Get(idx + i)
			s.TX().Set(tidx+i, d)
		}
		s.RX().Release(n)
		s.TX().Submit(got)
		if _, err := s.FlushTX(2); err != nil {
			t.Fatal(err)
		}
		k.Transmit(64, nil)
		s.RecycleCompletions()
		s.Refill()
		if err := s.WakeupRX(); err != nil {
			t.Fatal(err)
		}
		// The copying helpers.
		k.DeliverLen(4, 64)
		m := s.RX().Take(rx)
		s.TX().Put(rx[:m])
		k.Transmit(64, nil)
		c := make([]uint64, 0, 0) // zero-size: no allocation
		s.Completion().Take(c)
		s.ReapCompletions()
		s.Fill().Put(nil)
		s.Refill()
	})
	if allocs != 0 {
		t.Fatalf("batch paths allocate %v times per run", allocs)
	}
	if err := s.Umem().Check(); err != nil {
		t.Fatal(err)
	}
}
