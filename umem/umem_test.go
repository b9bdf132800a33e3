package umem

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

func newTest(tb testing.TB, cfg Config) *Umem {
	tb.Helper()
	u, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if u.claimed {
			u.Reclaim()
		}
		if err := u.Close(); err != nil {
			tb.Error(err)
		}
	})
	return u
}

func mustCheck(tb testing.TB, u *Umem) {
	tb.Helper()
	if err := u.Check(); err != nil {
		tb.Fatal(err)
	}
}

func TestNewDefaults(t *testing.T) {
	u := newTest(t, Config{})
	if u.FrameSize() != 4096 || u.Frames() != 4096 || u.Headroom() != 256 {
		t.Fatalf("geometry %d x %d headroom %d, want 4096 x 4096 headroom 256", u.FrameSize(), u.Frames(), u.Headroom())
	}
	if u.DataOffset() != 512 || u.MaxPacket() != 3584 || u.Size() != 16<<20 {
		t.Fatalf("data offset %d max packet %d size %d", u.DataOffset(), u.MaxPacket(), u.Size())
	}
	if got := u.Accounting(); got != (Accounting{Total: 4096, Free: 4096}) {
		t.Fatalf("fresh umem accounting %v", got)
	}
	mustCheck(t, u)
}

func TestNewRejects(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{FrameSize: 1024}, "must be 2048 or 4096"},
		{Config{FrameSize: 3000}, "must be 2048 or 4096"},
		{Config{FrameSize: 8192}, "must be 2048 or 4096"},
		{Config{FrameCount: maxFrameCount + 1}, "frame count"},
		{Config{FrameSize: 2048, Headroom: 2048 - KernelHeadroom}, "must be below frame size"},
		{Config{FrameSize: 2048, Headroom: 512}, "use frame size 4096 or less headroom"},
	} {
		u, err := New(tc.cfg)
		if err == nil {
			u.Close()
			t.Errorf("New(%+v) succeeded, want error containing %q", tc.cfg, tc.want)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v, want error containing %q", tc.cfg, err, tc.want)
		}
	}
	// The tightest legal 2048-byte layout still fits a tagged 1500-byte frame.
	u := newTest(t, Config{FrameSize: 2048, FrameCount: 8, Headroom: 2048 - KernelHeadroom - MinPacketRoom})
	if u.MaxPacket() != MinPacketRoom {
		t.Fatalf("max packet %d, want %d", u.MaxPacket(), MinPacketRoom)
	}
}

func TestAllocFreeLIFO(t *testing.T) {
	u := newTest(t, Config{FrameSize: 2048, FrameCount: 8})
	got := make([]uint64, 3)
	if n := u.Alloc(got); n != 3 {
		t.Fatalf("Alloc = %d, want 3", n)
	}
	for i, a := range got {
		if a != uint64(i)*2048 {
			t.Fatalf("fresh Alloc gave %#x at %d, want ascending frame bases", a, i)
		}
	}
	if u.Available() != 5 || u.Accounting().InHand != 3 {
		t.Fatalf("after Alloc: %v", u.Accounting())
	}
	mustCheck(t, u)
	u.Free(got[:2]) // frames 0 and 2048; 2048 is on top
	one, ok := u.AllocOne()
	if !ok || one != 2048 {
		t.Fatalf("AllocOne = %#x %v, want the last freed frame 0x800", one, ok)
	}
	mustCheck(t, u)
	u.FreeOne(one)
	u.FreeOne(got[2])
	if a := u.Accounting(); a != (Accounting{Total: 8, Free: 8}) {
		t.Fatalf("all freed: %v", a)
	}
	mustCheck(t, u)
}

func TestAllocExhausts(t *testing.T) {
	u := newTest(t, Config{FrameSize: 2048, FrameCount: 4})
	all := make([]uint64, 10)
	if n := u.Alloc(all); n != 4 {
		t.Fatalf("Alloc from 4 frames = %d", n)
	}
	if n := u.Alloc(all); n != 0 {
		t.Fatalf("Alloc from empty stack = %d", n)
	}
	if _, ok := u.AllocOne(); ok {
		t.Fatal("AllocOne from empty stack succeeded")
	}
	mustCheck(t, u)
	u.Free(all[:4])
	mustCheck(t, u)
}

// A completion returns the transmitted address, which may point anywhere in
// the frame (into the headroom after Prepend). Free must mask it.
func TestFreeMasksInteriorAddress(t *testing.T) {
	u := newTest(t, Config{FrameSize: 4096, FrameCount: 4})
	base, _ := u.AllocOne()
	u.Free([]uint64{base + 4095})
	again, _ := u.AllocOne()
	if again != base {
		t.Fatalf("freed %#x+4095, Alloc gave %#x", base, again)
	}
	u.FreeOne(again + 300)
	mustCheck(t, u)
	if u.Available() != 4 {
		t.Fatalf("available %d", u.Available())
	}
}

func mustPanic(t *testing.T, want string, f func()) {
	t.Helper()
	defer func() {
		r := recover()
		if r == nil {
			t.Fatalf("no panic, want one containing %q", want)
		}
		if s := fmt.Sprint(r); !strings.Contains(s, want) {
			t.Fatalf("panic %v, want one containing %q", r, want)
		}
	}()
	f()
}

func TestFreeRejectsBugs(t *testing.T) {
	u := newTest(t, Config{FrameSize: 2048, FrameCount: 4})
	a, _ := u.AllocOne()
	u.FreeOne(a)
	mustPanic(t, "double free", func() { u.FreeOne(a + 100) })
	mustPanic(t, "outside the area", func() { u.FreeOne(4 * 2048) })
	// The refused frees changed nothing.
	mustCheck(t, u)
}

func TestFrameAndPrepend(t *testing.T) {
	u := newTest(t, Config{FrameSize: 2048, FrameCount: 4})
	base, _ := u.AllocOne()
	addr := base + uint64(u.DataOffset())
	payload := []byte("inner packet")
	copy(u.Frame(addr, uint32(len(payload))), payload)
	if f := u.Frame(addr, 1); cap(f) != int(2048-u.DataOffset()) {
		t.Fatalf("Frame capacity %d, want the rest of the frame %d", cap(f), 2048-u.DataOffset())
	}
	if u.Room(addr) != u.DataOffset() || u.Base(addr) != base {
		t.Fatalf("Room %d Base %#x", u.Room(addr), u.Base(addr))
	}

	outer := []byte("OUTER-HEADERS")
	n, hdr := uint32(len(payload)), uint32(len(outer))
	newAddr, pkt, ok := u.Prepend(addr, n, hdr)
	if !ok || newAddr != addr-uint64(hdr) || len(pkt) != int(hdr+n) {
		t.Fatalf("Prepend = %#x len %d %v", newAddr, len(pkt), ok)
	}
	copy(pkt, outer)
	if want := append(append([]byte{}, outer...), payload...); !bytes.Equal(u.Frame(newAddr, hdr+n), want) {
		t.Fatalf("frame holds %q, want %q", u.Frame(newAddr, hdr+n), want)
	}
	if _, _, ok := u.Prepend(base+10, 1, 11); ok {
		t.Fatal("Prepend beyond the frame start succeeded")
	}
	if a, p, ok := u.Prepend(base+10, 1, 10); !ok || a != base || len(p) != 11 {
		t.Fatalf("Prepend to the exact frame start = %#x %d %v", a, len(p), ok)
	}
	mustPanic(t, "out of range", func() { u.Frame(base+2000, 100) })
	u.FreeOne(newAddr)
}

// Drive the ledger the way package ring does and check the invariant at
// every step.
func TestLedger(t *testing.T) {
	u := newTest(t, Config{FrameSize: 2048, FrameCount: 16})
	if err := u.Claim(); err != nil {
		t.Fatal(err)
	}
	step := func(want Accounting) {
		t.Helper()
		want.Total = 16
		if got := u.Accounting(); got != want {
			t.Fatalf("accounting %v, want %v", got, want)
		}
		mustCheck(t, u)
	}
	buf := make([]uint64, 16)
	u.Alloc(buf[:10])
	step(Accounting{Free: 6, InHand: 10})
	u.FillSubmitted(10)
	step(Accounting{Free: 6, KernelRX: 10})
	u.RXReaped(4)
	step(Accounting{Free: 6, InHand: 4, KernelRX: 6})
	u.TXSubmitted(3)
	step(Accounting{Free: 6, InHand: 1, KernelRX: 6, KernelTX: 3})
	u.CompletionReaped(3)
	step(Accounting{Free: 6, InHand: 4, KernelRX: 6})
	u.Free(buf[:4])
	step(Accounting{Free: 10, KernelRX: 6})

	// Close of the socket: the kernel lets go of everything.
	u.Reclaim()
	step(Accounting{Free: 16})
}

func TestCheckCatchesCorruption(t *testing.T) {
	u := newTest(t, Config{FrameSize: 2048, FrameCount: 8})
	// Submitting frames that were never taken: in hand goes negative.
	u.FillSubmitted(1)
	if err := u.Check(); err == nil || !strings.Contains(err.Error(), "in hand count -1") {
		t.Fatalf("Check = %v, want in-hand error", err)
	}
	u.reset()
	// Reaping more than was submitted.
	u.RXReaped(1)
	if err := u.Check(); err == nil || !strings.Contains(err.Error(), "kernel rx count -1") {
		t.Fatalf("Check = %v, want kernel rx error", err)
	}
	u.reset()
	// A duplicate on the stack that bypassed the bitmap.
	u.AllocOne()
	u.stack[u.nfree] = u.stack[u.nfree-1]
	u.nfree++
	u.inHand--
	if err := u.Check(); err == nil || !strings.Contains(err.Error(), "free bitmap") {
		t.Fatalf("Check = %v, want bitmap error", err)
	}
	u.reset()
	// A misaligned stack entry.
	u.stack[0] = 5
	if err := u.Check(); err == nil || !strings.Contains(err.Error(), "not a free frame base") {
		t.Fatalf("Check = %v, want misaligned entry error", err)
	}
	u.reset()
	mustCheck(t, u)
}

func TestClaim(t *testing.T) {
	u, err := New(Config{FrameSize: 2048, FrameCount: 4})
	if err != nil {
		t.Fatal(err)
	}
	if err := u.Claim(); err != nil {
		t.Fatal(err)
	}
	if err := u.Claim(); err == nil || !strings.Contains(err.Error(), "its own umem") {
		t.Fatalf("second Claim = %v", err)
	}
	if err := u.Close(); err == nil || !strings.Contains(err.Error(), "close the socket first") {
		t.Fatalf("Close while claimed = %v", err)
	}
	u.Reclaim()
	if err := u.Close(); err != nil {
		t.Fatal(err)
	}
	if err := u.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	if err := u.Claim(); err == nil {
		t.Fatal("Claim of a closed umem succeeded")
	}
}

func TestNoAllocs(t *testing.T) {
	u := newTest(t, Config{FrameSize: 2048, FrameCount: 256})
	batch := make([]uint64, 64)
	if n := testing.AllocsPerRun(100, func() {
		n := u.Alloc(batch)
		u.Free(batch[:n])
		a, _ := u.AllocOne()
		f := u.Frame(a+uint64(u.DataOffset()), 64)
		f[0] = 1
		na, pkt, _ := u.Prepend(a+uint64(u.DataOffset()), 64, 36)
		pkt[0] = 2
		u.FreeOne(na)
		u.RXReaped(1)
		u.FillSubmitted(1)
	}); n != 0 {
		t.Fatalf("batch paths allocate %v times per run", n)
	}
	mustCheck(t, u)
}

func BenchmarkAllocFree64(b *testing.B) {
	u := newTest(b, Config{FrameSize: 2048, FrameCount: 4096})
	batch := make([]uint64, 64)
	b.ReportAllocs()
	for b.Loop() {
		n := u.Alloc(batch)
		u.Free(batch[:n])
	}
	nsPerFrame := float64(b.Elapsed().Nanoseconds()) / float64(b.N*64)
	b.ReportMetric(nsPerFrame, "ns/frame")
}
