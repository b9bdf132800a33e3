package ring

import (
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// pair builds both ends of one ring of size slots over ordinary memory whose
// shared producer and consumer words start at start, as after start
// operations.
func pair(size int, start uint32) (*producer[uint64], *consumer[uint64], *[3]uint32) {
	words := new([3]uint32)
	words[0], words[1] = start, start
	w := shared{&words[0], &words[1], &words[2]}
	slots := make([]uint64, size)
	p := newProducer(slots, w)
	c := newConsumer(slots, w)
	return &p, &c, words
}

func TestRingEmptyFull(t *testing.T) {
	for _, start := range []uint32{0, 1<<32 - 3} { // the second wraps inside the test
		p, c, words := pair(8, start)
		if n, _ := c.peek(4); n != 0 {
			t.Fatalf("start %#x: empty ring peeks %d", start, n)
		}
		got, idx := p.reserve(10)
		if got != 8 || idx != start {
			t.Fatalf("start %#x: reserve(10) on an empty ring of 8 = %d at %#x", start, got, idx)
		}
		for i := range got {
			p.set(idx+i, uint64(100+i))
		}
		p.submit(8)
		if words[0] != start+8 {
			t.Fatalf("start %#x: producer word %#x after submitting 8", start, words[0])
		}
		if got, _ := p.reserve(1); got != 0 {
			t.Fatalf("start %#x: full ring reserves %d", start, got)
		}
		p.submit(0)
		n, idx := c.peek(3)
		if n != 3 || idx != start {
			t.Fatalf("start %#x: peek(3) = %d at %#x", start, n, idx)
		}
		for i := range n {
			if v := c.get(idx + i); v != uint64(100+i) {
				t.Fatalf("start %#x: slot %d = %d", start, i, v)
			}
		}
		c.release(3)
		if words[1] != start+3 {
			t.Fatalf("start %#x: consumer word %#x after releasing 3", start, words[1])
		}
		// The producer sees the freed slots only after rereading the
		// consumer word, which reserve does when its cached view is short.
		if got, idx := p.reserve(5); got != 3 || idx != start+8 {
			t.Fatalf("start %#x: reserve(5) after 3 freed = %d at %#x", start, got, idx)
		}
		p.submit(3)
		if n, idx := c.peek(100); n != 8 || idx != start+3 {
			t.Fatalf("start %#x: peek(100) of a full ring = %d at %#x", start, n, idx)
		}
		c.release(8)
		if n, _ := c.peek(1); n != 0 {
			t.Fatalf("start %#x: drained ring peeks %d", start, n)
		}
		if p.outstanding() != 0 {
			t.Fatalf("start %#x: outstanding %d after the consumer drained the ring", start, p.outstanding())
		}
	}
}

func TestRingPartialSubmitCancels(t *testing.T) {
	p, c, _ := pair(8, 0)
	got, idx := p.reserve(5)
	for i := range got {
		p.set(idx+i, uint64(i))
	}
	p.submit(2)
	if n, _ := c.peek(8); n != 2 {
		t.Fatalf("consumer sees %d after submitting 2 of 5 reserved", n)
	}
	// The 3 unsubmitted slots were given up: the next reservation starts
	// right after the submitted ones.
	if got, idx := p.reserve(1); got != 1 || idx != 2 {
		t.Fatalf("reserve after partial submit = %d at %d, want 1 at 2", got, idx)
	}
	// Two reservations before one submit continue each other.
	if got, idx := p.reserve(2); got != 2 || idx != 3 {
		t.Fatalf("second reserve = %d at %d, want 2 at 3", got, idx)
	}
	p.submit(3)
	if n, _ := c.peek(8); n != 5 {
		t.Fatalf("consumer sees %d, want 5", n)
	}
}

func mustPanic(t *testing.T, want string, f func()) {
	t.Helper()
	defer func() {
		r := recover()
		if s, _ := r.(string); !strings.Contains(s, want) {
			t.Fatalf("panic %v, want one containing %q", r, want)
		}
	}()
	f()
}

func TestRingMisuse(t *testing.T) {
	p, c, _ := pair(4, 0)
	p.reserve(2)
	mustPanic(t, "more slots than reserved", func() { p.submit(3) })
	p.submit(2)
	c.peek(4)
	mustPanic(t, "more slots than peeked", func() { c.release(3) })
	c.release(2)
}

// A bogus index from the other side must not make us overwrite or read
// slots that are not ours.
func TestRingIgnoresImpossibleIndices(t *testing.T) {
	p, c, words := pair(8, 1000)
	got, _ := p.reserve(8)
	p.submit(got)
	words[1] = 1000 + 50 // consumer claims to be ahead of the producer
	if got, _ := p.reserve(4); got != 0 {
		t.Fatalf("reserve with a consumer ahead of the producer = %d", got)
	}
	if p.outstanding() != 0 {
		t.Fatalf("outstanding with a consumer ahead = %d", p.outstanding())
	}
	words[1] = 1000
	words[0] = 1000 + 9 // producer claims more than the ring holds
	if n, _ := c.peek(4); n != 0 {
		t.Fatalf("peek with a producer 9 ahead in a ring of 8 = %d", n)
	}
}

// Random batches against a model, across the 2^32 wrap of both indices.
func TestRingWrapModel(t *testing.T) {
	const size = 16
	start := uint32(1<<32 - 1000)
	p, c, words := pair(size, start)
	rng := rand.New(rand.NewPCG(1, 2))
	var next, expect uint64 // next value to produce, next value to consume
	for step := 0; step < 20000; step++ {
		if rng.IntN(2) == 0 {
			want := uint32(rng.IntN(size + 3))
			got, idx := p.reserve(want)
			inFlight := uint32(next - expect)
			if got != min(want, size-inFlight) {
				t.Fatalf("step %d: reserve(%d) = %d with %d in flight", step, want, got, inFlight)
			}
			for i := range got {
				p.set(idx+i, next+uint64(i))
			}
			k := uint32(0)
			if got > 0 {
				k = uint32(rng.IntN(int(got) + 1))
			}
			p.submit(k)
			next += uint64(k)
		} else {
			max := uint32(rng.IntN(size + 3))
			n, idx := c.peek(max)
			if n != min(max, uint32(next-expect)) {
				t.Fatalf("step %d: peek(%d) = %d with %d in flight", step, max, n, next-expect)
			}
			for i := range n {
				if v := c.get(idx + i); v != expect+uint64(i) {
					t.Fatalf("step %d: got %d, want %d", step, v, expect+uint64(i))
				}
			}
			k := uint32(0)
			if n > 0 {
				k = uint32(rng.IntN(int(n) + 1))
			}
			c.release(k)
			expect += uint64(k)
		}
	}
	if next < 1000 || words[0] >= start {
		t.Fatalf("the test did not cross the wrap: produced %d, producer word %#x", next, words[0])
	}
}

// Two goroutines, like user space and the kernel, move a sequence across the
// wrap; run with -race to check the acquire/release pairing.
func TestRingConcurrent(t *testing.T) {
	const total = 1 << 17
	p, c, _ := pair(64, 1<<32-5000)
	var wg sync.WaitGroup
	var bad atomic.Value
	wg.Go(func() {
		var v uint64
		for v < total {
			got, idx := p.reserve(uint32(min(17, total-v)))
			for i := range got {
				p.set(idx+i, v+uint64(i))
			}
			p.submit(got)
			v += uint64(got)
			if got == 0 {
				runtime.Gosched()
			}
		}
	})
	wg.Go(func() {
		var want uint64
		for want < total {
			n, idx := c.peek(23)
			for i := range n {
				if v := c.get(idx + i); v != want+uint64(i) && bad.Load() == nil {
					bad.Store(v)
				}
			}
			c.release(n)
			want += uint64(n)
			if n == 0 {
				runtime.Gosched()
			}
		}
	})
	wg.Wait()
	if v := bad.Load(); v != nil {
		t.Fatalf("consumer read %v out of order", v)
	}
}

func TestConfigNormalize(t *testing.T) {
	u := newMemUmem(t, 64)
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{}, "no umem"},
		{Config{Umem: u, RXSize: 100}, "rx ring size 100: must be a power of two"},
		{Config{Umem: u, FillSize: MaxRingSize * 2}, "fill ring size"},
		{Config{Umem: u, TXBudget: 16}, "tx budget 16"},
		{Config{Umem: u, TXSize: 64, TXBudget: 128}, "tx budget 128"},
		{Config{Umem: u, ZeroCopy: 7}, "zero-copy policy"},
	} {
		if _, err := tc.cfg.normalize(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("normalize(%+v) = %v, want %q", tc.cfg, err, tc.want)
		}
	}
	c, err := Config{Umem: u, TXSize: 64}.normalize()
	if err != nil || c.FillSize != DefaultRingSize || c.TXSize != 64 || c.TXBudget != 64 {
		t.Fatalf("normalize defaults = %+v, %v", c, err)
	}
	// A TX ring no larger than the kernel's own budget leaves it alone.
	for _, size := range []uint32{16, KernelTXBudget} {
		if c, err := (Config{Umem: u, TXSize: size}).normalize(); err != nil || c.TXBudget != 0 {
			t.Fatalf("normalize with a TX ring of %d = %+v, %v; want no budget", size, c, err)
		}
	}
	if c, err := (Config{Umem: u, TXBudget: KernelTXBudget}).normalize(); err != nil || c.TXBudget != KernelTXBudget {
		t.Fatalf("normalize with the kernel's budget = %+v, %v", c, err)
	}
}

func TestNames(t *testing.T) {
	for v, want := range map[interface{ String() string }]string{
		ModeCopy: "copy", ModeZeroCopy: "zero-copy", ModeInMemory: "in-memory", Mode(0): "Mode(0)",
		ZeroCopyAuto: "auto", ZeroCopyRequire: "require", ZeroCopyNever: "never", ZeroCopy(9): "ZeroCopy(9)",
	} {
		if v.String() != want {
			t.Errorf("%#v.String() = %q, want %q", v, v.String(), want)
		}
	}
}
