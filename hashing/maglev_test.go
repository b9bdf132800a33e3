package hashing

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	maglev "github.com/dgryski/go-maglev"
)

// backendNames returns n distinct IDs that look like real ones (address and
// port) and do not come out sorted.
func backendNames(n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("10.%d.%d.%d:8080", (i*37)%251, i/256, i%256)
	}
	return names
}

func equalBackends(names []string, w uint32) []Backend {
	bs := make([]Backend, len(names))
	for i, n := range names {
		bs[i] = Backend{ID: n, Weight: w}
	}
	return bs
}

func mustTable(t testing.TB, bs []Backend, size uint32) *Table {
	t.Helper()
	tab, err := NewTable(bs, size)
	if err != nil {
		t.Fatalf("NewTable(%d backends, %d): %v", len(bs), size, err)
	}
	return tab
}

// ownerIDs returns the ID owning each slot ("" for none), which is how two
// tables built from differently ordered slices are compared.
func ownerIDs(tab *Table, bs []Backend) []string {
	ids := make([]string, tab.Size())
	for s := range ids {
		if o := tab.Owner(uint32(s)); o >= 0 {
			ids[s] = bs[o].ID
		}
	}
	return ids
}

// TestMatchesGoMaglev checks the equal-weight table slot by slot against
// go-maglev built from the sorted names. The input to NewTable is shuffled
// so that the index mapping back to the caller's slice is checked as well.
func TestMatchesGoMaglev(t *testing.T) {
	cases := []struct {
		n    int
		size uint32
	}{
		{1, DefaultTableSize}, {2, DefaultTableSize}, {3, DefaultTableSize}, {10, DefaultTableSize},
		{100, DefaultTableSize}, {1000, DefaultTableSize},
		{3, LargeTableSize}, {100, LargeTableSize}, {1000, LargeTableSize},
		{5, 7}, {13, 1009},
	}
	for _, c := range cases {
		for _, w := range []uint32{1, 7, math.MaxUint32} {
			if testing.Short() && c.size == LargeTableSize && c.n == 1000 {
				continue
			}
			t.Run(fmt.Sprintf("n=%d/size=%d/w=%d", c.n, c.size, w), func(t *testing.T) {
				names := backendNames(c.n)
				bs := equalBackends(names, w)
				rng := rand.New(rand.NewPCG(uint64(c.n), uint64(w)))
				rng.Shuffle(len(bs), func(i, j int) { bs[i], bs[j] = bs[j], bs[i] })
				tab := mustTable(t, bs, c.size)

				sorted := slices.Clone(names)
				slices.Sort(sorted)
				oracle := maglev.New(sorted, uint64(c.size))

				got := ownerIDs(tab, bs)
				for s := range got {
					if want := sorted[oracle.Lookup(uint64(s))]; got[s] != want {
						t.Fatalf("slot %d: owner %q, go-maglev says %q", s, got[s], want)
					}
				}
			})
		}
	}
}

// weightedBackends: n backends with weights 1..10 in turn, and a few large
// ratios mixed in.
func weightedBackends(n int) []Backend {
	bs := equalBackends(backendNames(n), 0)
	large := []uint32{50, 100, 500, 1000}
	for i := range bs {
		bs[i].Weight = uint32(i%10 + 1)
		if i%25 == 24 {
			bs[i].Weight = large[(i/25)%len(large)]
		}
	}
	return bs
}

// TestWeightsHonoured checks every backend's slot count against its exact
// proportional share size*w/sum. The V2 fill gives backend i
// floor(R*w_i/max) slots after R rounds, so the deviation is a couple of
// slots at most for ordinary weights; the bound asserted is
// 2 + N*w/sum slots (the last term is the partial final round, which only
// matters for a backend that holds a large part of the total weight), and
// separately a relative error of at most 1% for every backend whose
// expected count is at least 200 slots.
func TestWeightsHonoured(t *testing.T) {
	sets := map[string][]Backend{
		"1..10+large": weightedBackends(100),
		"one-heavy": func() []Backend {
			bs := equalBackends(backendNames(100), 1)
			bs[42].Weight = 1000
			return bs
		}(),
		"huge-ratios": func() []Backend {
			bs := weightedBackends(100)
			bs[3].Weight = 1 << 31
			bs[7].Weight = 1 << 30
			bs[11].Weight = 1 << 20
			return bs
		}(),
		"with-drained": func() []Backend {
			bs := weightedBackends(100)
			for i := 0; i < len(bs); i += 9 {
				bs[i].Weight = 0
			}
			return bs
		}(),
	}
	for name, bs := range sets {
		for _, size := range []uint32{DefaultTableSize, LargeTableSize} {
			t.Run(fmt.Sprintf("%s/%d", name, size), func(t *testing.T) {
				tab := mustTable(t, bs, size)
				var sum float64
				active := 0
				for _, b := range bs {
					sum += float64(b.Weight)
					if b.Weight > 0 {
						active++
					}
				}
				var total uint64
				var worstAbs, worstRel, worstShare float64
				for i, b := range bs {
					got := float64(tab.Count(i))
					total += uint64(tab.Count(i))
					want := float64(size) * float64(b.Weight) / sum
					if b.Weight == 0 {
						if got != 0 {
							t.Errorf("backend %d (%s) has weight 0 but %v slots", i, b.ID, got)
						}
						continue
					}
					dev := math.Abs(got - want)
					if limit := 2 + float64(active)*float64(b.Weight)/sum; dev > limit {
						t.Errorf("backend %d weight %d: %v slots, want %.1f ± %.1f", i, b.Weight, got, want, limit)
					}
					if want >= 200 && dev/want > 0.01 {
						t.Errorf("backend %d weight %d: %v slots, %.2f%% off %.1f", i, b.Weight, got, 100*dev/want, want)
					}
					worstAbs = max(worstAbs, dev)
					worstShare = max(worstShare, dev/float64(size))
					if want >= 100 {
						worstRel = max(worstRel, dev/want)
					}
				}
				if total != uint64(size) {
					t.Errorf("counts sum to %d, want %d", total, size)
				}
				t.Logf("worst deviation %.2f slots = %.5f share points; worst relative (expected >= 100 slots) %.3f%%",
					worstAbs, 100*worstShare, 100*worstRel)
			})
		}
	}
}

// moved reports the fraction of the slots owned in old by a backend that is
// still present in new which changed owner.
func moved(old, new []string, present map[string]bool) float64 {
	var kept, changed int
	for s := range old {
		if !present[old[s]] {
			continue
		}
		kept++
		if new[s] != old[s] {
			changed++
		}
	}
	return float64(changed) / float64(kept)
}

// TestRemovalDisruption removes one backend at a time and checks that at
// most 1/N + 1% of the slots belonging to the remaining backends move.
func TestRemovalDisruption(t *testing.T) {
	for _, n := range []int{10, 100} {
		for _, weighted := range []bool{false, true} {
			t.Run(fmt.Sprintf("n=%d/weighted=%v", n, weighted), func(t *testing.T) {
				bs := equalBackends(backendNames(n), 1)
				if weighted {
					bs = weightedBackends(n)
				}
				before := ownerIDs(mustTable(t, bs, DefaultTableSize), bs)
				limit := 1/float64(n) + 0.01
				var worst float64
				// Remove every backend in turn for small N, a spread
				// sample (including the heaviest) for large N.
				step := max(1, n/12)
				for r := 0; r < n; r += step {
					rest := slices.Delete(slices.Clone(bs), r, r+1)
					present := make(map[string]bool, len(rest))
					for _, b := range rest {
						present[b.ID] = true
					}
					after := ownerIDs(mustTable(t, rest, DefaultTableSize), rest)
					m := moved(before, after, present)
					worst = max(worst, m)
					if m > limit {
						t.Errorf("removing %s (weight %d) moved %.2f%% of the others' slots, limit %.2f%%",
							bs[r].ID, bs[r].Weight, 100*m, 100*limit)
					}
				}
				t.Logf("worst moved %.3f%% (limit %.3f%%)", 100*worst, 100*limit)
			})
		}
	}
}

// TestDrainEqualsRemoval: weight 0 must give the same table as leaving the
// backend out, so draining moves no more flows than removing.
func TestDrainEqualsRemoval(t *testing.T) {
	bs := weightedBackends(30)
	drained := slices.Clone(bs)
	drained[17].Weight = 0
	removed := slices.Delete(slices.Clone(bs), 17, 18)
	a := ownerIDs(mustTable(t, drained, DefaultTableSize), drained)
	b := ownerIDs(mustTable(t, removed, DefaultTableSize), removed)
	if !slices.Equal(a, b) {
		t.Fatal("draining a backend gives a different table from removing it")
	}
}

// TestOrderIndependence shuffles the input several times; the slot owners
// (by ID) must not change, and Lookup must keep pointing at the right
// element of each shuffled slice.
func TestOrderIndependence(t *testing.T) {
	for _, bs := range [][]Backend{equalBackends(backendNames(50), 3), weightedBackends(100)} {
		want := ownerIDs(mustTable(t, bs, DefaultTableSize), bs)
		rng := rand.New(rand.NewPCG(1, 2))
		for round := range 6 {
			sh := slices.Clone(bs)
			rng.Shuffle(len(sh), func(i, j int) { sh[i], sh[j] = sh[j], sh[i] })
			tab := mustTable(t, sh, DefaultTableSize)
			if got := ownerIDs(tab, sh); !slices.Equal(got, want) {
				t.Fatalf("shuffle %d: different table", round)
			}
			for i, b := range sh {
				var n uint32
				for s := range tab.Size() {
					if tab.Owner(s) == i {
						n++
					}
				}
				if n != tab.Count(i) {
					t.Fatalf("shuffle %d: backend %d (%s) owns %d slots, Count says %d", round, i, b.ID, n, tab.Count(i))
				}
			}
		}
	}
}

// TestFillStrategiesAgree: the round walk and the heap must produce the same
// fill order, since which one runs depends only on the weights.
func TestFillStrategiesAgree(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	names := backendNames(200)
	for round := range 40 {
		n := 1 + rng.IntN(len(names))
		bs := equalBackends(names[:n], 0)
		for i := range bs {
			switch rng.IntN(4) {
			case 0:
				bs[i].Weight = uint32(rng.IntN(3))
			case 1:
				bs[i].Weight = uint32(1 + rng.IntN(20))
			case 2:
				bs[i].Weight = uint32(1 + rng.IntN(1000))
			default:
				bs[i].Weight = rng.Uint32()
			}
		}
		sizes := []uint32{DefaultTableSize, 1009, 251}
		size := sizes[round%len(sizes)]
		var ms []member
		var maxW uint32
		for _, i := range sortedOrder(bs) {
			if bs[i].Weight > 0 {
				off, skip := permutation(bs[i].ID, size)
				ms = append(ms, member{orig: i, weight: bs[i].Weight, pos: off, skip: skip})
				maxW = max(maxW, bs[i].Weight)
			}
		}
		if len(ms) == 0 || len(ms) > int(size) {
			continue
		}
		a := &Table{slots: filled(size), counts: make([]uint32, len(bs))}
		b := &Table{slots: filled(size), counts: make([]uint32, len(bs))}
		fillRounds(a, slices.Clone(ms), maxW)
		fillHeap(b, slices.Clone(ms), maxW)
		if !slices.Equal(a.slots, b.slots) {
			t.Fatalf("round %d (%d backends, size %d): round walk and heap disagree", round, len(ms), size)
		}
	}
}

func sortedOrder(bs []Backend) []int32 {
	order := make([]int32, len(bs))
	for i := range order {
		order[i] = int32(i)
	}
	slices.SortFunc(order, func(a, b int32) int {
		switch {
		case bs[a].ID < bs[b].ID:
			return -1
		case bs[a].ID > bs[b].ID:
			return 1
		}
		return 0
	})
	return order
}

func filled(size uint32) []int32 {
	s := make([]int32, size)
	for i := range s {
		s[i] = -1
	}
	return s
}

// TestExtremeWeightsBuildFast: a weight ratio of 2^32 would cost billions of
// rounds in a naive round walk; the build must stay quick and still honour
// the ratio.
func TestExtremeWeightsBuildFast(t *testing.T) {
	bs := equalBackends(backendNames(1000), 1)
	bs[500].Weight = math.MaxUint32
	start := time.Now()
	tab := mustTable(t, bs, LargeTableSize)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("build took %v", d)
	}
	// Every backend of weight 1 still gets its floor share (0 here) and the
	// heavy one takes the rest.
	if c := tab.Count(500); c < LargeTableSize-1000 {
		t.Errorf("heavy backend owns %d slots, want >= %d", c, LargeTableSize-1000)
	}
}

func TestEmptyAndZeroWeight(t *testing.T) {
	for name, bs := range map[string][]Backend{
		"nil":       nil,
		"empty":     {},
		"all-zero":  equalBackends(backendNames(5), 0),
		"single-0":  {{ID: "a", Weight: 0}},
		"zero-1000": equalBackends(backendNames(1000), 0),
	} {
		t.Run(name, func(t *testing.T) {
			tab := mustTable(t, bs, DefaultTableSize)
			if tab.Size() != DefaultTableSize || tab.Backends() != len(bs) {
				t.Fatalf("Size %d Backends %d", tab.Size(), tab.Backends())
			}
			for _, h := range []uint64{0, 1, 1 << 63, math.MaxUint64, 0x123456789abcdef} {
				if got := tab.Lookup(h); got != -1 {
					t.Errorf("Lookup(%#x) = %d, want -1", h, got)
				}
			}
			for i := range bs {
				if tab.Count(i) != 0 {
					t.Errorf("Count(%d) = %d", i, tab.Count(i))
				}
			}
		})
	}
}

func TestSingleBackend(t *testing.T) {
	bs := []Backend{{ID: "drained", Weight: 0}, {ID: "only", Weight: 5}, {ID: "also-drained"}}
	tab := mustTable(t, bs, DefaultTableSize)
	if tab.Count(1) != DefaultTableSize {
		t.Fatalf("Count = %d, want all %d slots", tab.Count(1), DefaultTableSize)
	}
	for s := range tab.Size() {
		if tab.Owner(s) != 1 {
			t.Fatalf("slot %d owned by %d", s, tab.Owner(s))
		}
	}
	if got := tab.Lookup(math.MaxUint64); got != 1 {
		t.Fatalf("Lookup = %d", got)
	}
}

func TestBackendErrors(t *testing.T) {
	cases := []struct {
		name string
		bs   []Backend
		size uint32
		want error
	}{
		{"duplicate", []Backend{{"a", 1}, {"b", 1}, {"a", 2}}, DefaultTableSize, ErrDuplicateBackend},
		{"duplicate-drained", []Backend{{"a", 0}, {"a", 0}}, DefaultTableSize, ErrDuplicateBackend},
		{"empty-id", []Backend{{"a", 1}, {"", 1}}, DefaultTableSize, ErrEmptyBackendID},
		{"too-many-backends", equalBackends(backendNames(10), 1), 7, ErrInvalidTableSize},
		{"not-prime", []Backend{{"a", 1}}, 65536, ErrInvalidTableSize},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tab, err := NewTable(c.bs, c.size)
			if !errors.Is(err, c.want) || tab != nil {
				t.Fatalf("NewTable = %v, %v; want error %v", tab, err, c.want)
			}
			t.Log(err)
		})
	}
	// Only backends with weight count against the size.
	bs := equalBackends(backendNames(10), 0)
	for i := range 7 {
		bs[i].Weight = 1
	}
	if _, err := NewTable(bs, 7); err != nil {
		t.Fatalf("7 weighted backends in 7 slots: %v", err)
	}
}

func TestValidateTableSize(t *testing.T) {
	for _, ok := range []uint32{2, 3, 7, 1009, DefaultTableSize, LargeTableSize, 4194301} {
		if err := ValidateTableSize(ok); err != nil {
			t.Errorf("ValidateTableSize(%d) = %v", ok, err)
		}
	}
	for _, bad := range []uint32{0, 1, 4, 9, 65535, 65536, 655371, 4194319, math.MaxUint32, 1<<31 - 1} {
		err := ValidateTableSize(bad)
		if !errors.Is(err, ErrInvalidTableSize) {
			t.Errorf("ValidateTableSize(%d) = %v, want ErrInvalidTableSize", bad, err)
		}
		if _, err := NewTable([]Backend{{"a", 1}}, bad); !errors.Is(err, ErrInvalidTableSize) {
			t.Errorf("NewTable(size %d) = %v", bad, err)
		}
	}
	// isPrime against math/big over a range and around the named sizes.
	check := func(n uint32) {
		if got, want := isPrime(n), big.NewInt(int64(n)).ProbablyPrime(0); got != want {
			t.Fatalf("isPrime(%d) = %v, want %v", n, got, want)
		}
	}
	for n := range uint32(20000) {
		check(n)
	}
	for _, c := range []uint32{DefaultTableSize, LargeTableSize, MaxTableSize} {
		for n := c - 200; n < c+200; n++ {
			check(n)
		}
	}
}

func TestLookupMatchesSlotAndOwner(t *testing.T) {
	bs := weightedBackends(37)
	tab := mustTable(t, bs, 1009)
	rng := rand.New(rand.NewPCG(3, 4))
	hs := []uint64{0, 1, math.MaxUint64, 1 << 63, (1 << 63) - 1}
	for range 10000 {
		hs = append(hs, rng.Uint64())
	}
	for _, h := range hs {
		s := tab.Slot(h)
		if s >= tab.Size() {
			t.Fatalf("Slot(%#x) = %d out of range", h, s)
		}
		// floor(h*size/2^64) computed independently.
		want := new(big.Int).Rsh(new(big.Int).Mul(new(big.Int).SetUint64(h), big.NewInt(int64(tab.Size()))), 64)
		if uint64(s) != want.Uint64() {
			t.Fatalf("Slot(%#x) = %d, want %v", h, s, want)
		}
		if got := tab.Lookup(h); got != tab.Owner(s) || got < 0 || got >= len(bs) {
			t.Fatalf("Lookup(%#x) = %d, Owner(Slot) = %d", h, got, tab.Owner(s))
		}
	}
}

func TestLookupNoAllocs(t *testing.T) {
	tab := mustTable(t, weightedBackends(100), DefaultTableSize)
	h := uint64(0x9e3779b97f4a7c15)
	var sink int
	if a := testing.AllocsPerRun(1000, func() {
		h += 0x9e3779b97f4a7c15
		sink += tab.Lookup(h)
	}); a != 0 {
		t.Fatalf("Lookup allocates %v times per call", a)
	}
	_ = sink
}

// TestConcurrentLookup exists for the race detector: a table is read by
// every worker at once.
func TestConcurrentLookup(t *testing.T) {
	tab := mustTable(t, weightedBackends(20), DefaultTableSize)
	done := make(chan int)
	for g := range 4 {
		go func() {
			sum := 0
			for h := uint64(g); h < 1<<16; h++ {
				sum += tab.Lookup(h * 0x9e3779b97f4a7c15)
			}
			done <- sum
		}()
	}
	for range 4 {
		<-done
	}
}

func BenchmarkLookup(b *testing.B) {
	for _, size := range []uint32{DefaultTableSize, LargeTableSize} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			tab := mustTable(b, weightedBackends(100), size)
			h := uint64(1)
			sink := 0
			for b.Loop() {
				h = h*0x9e3779b97f4a7c15 + 1
				sink += tab.Lookup(h)
			}
			_ = sink
			reportPerPacket(b)
		})
	}
}

func BenchmarkNewTable(b *testing.B) {
	for _, c := range []struct {
		name string
		bs   []Backend
		size uint32
	}{
		{"100-equal/65537", equalBackends(backendNames(100), 1), DefaultTableSize},
		{"100-equal/655373", equalBackends(backendNames(100), 1), LargeTableSize},
		{"100-weighted/65537", weightedBackends(100), DefaultTableSize},
		{"100-weighted/655373", weightedBackends(100), LargeTableSize},
		{"1000-equal/655373", equalBackends(backendNames(1000), 1), LargeTableSize},
		{"1000-weighted/655373", weightedBackends(1000), LargeTableSize},
	} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := NewTable(c.bs, c.size); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkGoMaglevNew is the oracle's build time, for comparison.
func BenchmarkGoMaglevNew(b *testing.B) {
	names := backendNames(100)
	slices.Sort(names)
	for _, size := range []uint64{maglev.SmallM, maglev.BigM} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			for b.Loop() {
				maglev.New(names, size)
			}
		})
	}
}
