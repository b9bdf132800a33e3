package hashing

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"strings"

	"github.com/dchest/siphash"
)

// Table sizes. Any prime from 2 to MaxTableSize is accepted; the two named
// sizes are the ones go-maglev (the test oracle) and the Maglev paper use.
// For even spreading the size should be well above the number of backends
// (the Maglev paper suggests at least 100 times).
const (
	DefaultTableSize uint32 = 65537
	LargeTableSize   uint32 = 655373

	// MaxTableSize bounds a table to 16 MiB of slots and a build time of a
	// fraction of a second (about 0.2-0.4 s with 1000 backends). Anything
	// larger is almost certainly a typo.
	MaxTableSize uint32 = 1 << 22
)

// The SipHash-2-4 key that turns a backend ID into its permutation (offset
// and skip). It is go-maglev's, so that equal-weight tables equal its
// tables; it must never change, or every appliance upgraded separately
// from its peers would move flows.
const (
	permKey0 = 0xdeadbeefcafebabe
	permKey1 = 0
)

// Errors returned by NewTable and ValidateTableSize, wrapped with context.
var (
	// ErrInvalidTableSize: the size is not prime, too small for the
	// backends, or larger than MaxTableSize.
	ErrInvalidTableSize = errors.New("invalid maglev table size")
	// ErrDuplicateBackend: two backends share an ID.
	ErrDuplicateBackend = errors.New("duplicate backend id")
	// ErrEmptyBackendID: a backend has an empty ID.
	ErrEmptyBackendID = errors.New("empty backend id")
)

// Backend is one entry of the set a Table is built from.
type Backend struct {
	// ID is the backend's identity: it alone decides where the backend's
	// slots fall, so it must be stable across reloads and identical on
	// every appliance (for example the backend's address as text).
	ID string
	// Weight is relative: a backend's share of the slots is
	// Weight / (sum of all weights). 0 gives it no slots at all (drain).
	Weight uint32
}

// Table is an immutable weighted Maglev lookup table. Build it with
// NewTable; after that it is never modified, so any number of goroutines may
// call its methods concurrently without synchronisation. Replace a table by
// building a new one and publishing the pointer. The zero Table is not
// usable.
type Table struct {
	// slots maps a slot to the owning backend's index in the slice given to
	// NewTable, or -1 in every slot when no backend has weight.
	slots []int32
	// counts[i] is the number of slots owned by backend i (original index).
	counts []uint32
}

// ValidateTableSize reports whether size can be used as a Maglev table size:
// a prime no larger than MaxTableSize. The error wraps ErrInvalidTableSize.
func ValidateTableSize(size uint32) error {
	switch {
	case size > MaxTableSize:
		return fmt.Errorf("maglev table size %d: %w: larger than the maximum %d (use %d or %d)",
			size, ErrInvalidTableSize, MaxTableSize, DefaultTableSize, LargeTableSize)
	case !isPrime(size):
		return fmt.Errorf("maglev table size %d: %w: not prime (use %d or %d)",
			size, ErrInvalidTableSize, DefaultTableSize, LargeTableSize)
	}
	return nil
}

// isPrime tests n by trial division: n is at most MaxTableSize here, so
// that is at most about a thousand divisions.
func isPrime(n uint32) bool {
	if n < 2 {
		return false
	}
	if n%2 == 0 {
		return n == 2
	}
	for d := uint32(3); d*d <= n; d += 2 {
		if n%d == 0 {
			return false
		}
	}
	return true
}

// member is a backend with weight while the table is being filled.
type member struct {
	orig   int32  // index in the caller's slice
	weight uint32 // > 0
	pos    uint32 // next slot of this backend's permutation to try
	skip   uint32 // step of the permutation, in [1, size-1]
	cum    uint64 // round-robin credit (fillRounds)
	placed uint64 // slots taken so far (fillHeap)
}

// NewTable builds the weighted Maglev table of the given size for backends.
//
// The result depends only on the set of (ID, Weight) pairs and the size, not
// on the order of backends; Lookup nevertheless reports indexes into this
// backends slice, so callers can keep their own per-backend data in a
// parallel slice. Backends with weight 0 own no slot. If no backend has
// weight the table is empty and Lookup returns -1.
//
// Errors: the size fails ValidateTableSize or is smaller than the number of
// backends with weight (ErrInvalidTableSize), an ID is empty
// (ErrEmptyBackendID) or appears twice (ErrDuplicateBackend).
//
// NewTable allocates the table (4 bytes per slot) and a few small slices;
// it is meant for the control plane, not the packet path.
func NewTable(backends []Backend, size uint32) (*Table, error) {
	if err := ValidateTableSize(size); err != nil {
		return nil, err
	}
	if len(backends) > math.MaxInt32 {
		return nil, fmt.Errorf("maglev table: %d backends is more than the %d supported", len(backends), math.MaxInt32)
	}
	for i := range backends {
		if backends[i].ID == "" {
			return nil, fmt.Errorf("maglev table: backend %d: %w", i, ErrEmptyBackendID)
		}
	}

	// Sorting by ID is what makes the table independent of input order; the
	// ID is the only tie-breaker the fill needs.
	order := make([]int32, len(backends))
	for i := range order {
		order[i] = int32(i)
	}
	slices.SortFunc(order, func(a, b int32) int { return strings.Compare(backends[a].ID, backends[b].ID) })
	for j := 1; j < len(order); j++ {
		if a, b := order[j-1], order[j]; backends[a].ID == backends[b].ID {
			return nil, fmt.Errorf("maglev table: backend %q (indexes %d and %d): %w",
				backends[a].ID, min(a, b), max(a, b), ErrDuplicateBackend)
		}
	}

	var members []member
	var maxWeight uint32
	var sumWeight uint64
	for _, i := range order {
		w := backends[i].Weight
		if w == 0 {
			continue
		}
		offset, skip := permutation(backends[i].ID, size)
		members = append(members, member{orig: i, weight: w, pos: offset, skip: skip})
		maxWeight = max(maxWeight, w)
		sumWeight += uint64(w)
	}
	if uint64(len(members)) > uint64(size) {
		return nil, fmt.Errorf("maglev table size %d: %w: smaller than the %d backends with weight",
			size, ErrInvalidTableSize, len(members))
	}

	t := &Table{slots: make([]int32, size), counts: make([]uint32, len(backends))}
	for i := range t.slots {
		t.slots[i] = -1
	}
	if len(members) == 0 {
		return t, nil
	}
	if useRounds(size, len(members), maxWeight, sumWeight) {
		fillRounds(t, members, maxWeight)
	} else {
		fillHeap(t, members, maxWeight)
	}
	return t, nil
}

// permutation derives a backend's Maglev permutation of the slots: it visits
// offset, offset+skip, offset+2*skip, ... (mod size). Since size is prime and
// 1 <= skip < size, the walk visits every slot exactly once. The derivation
// (SipHash-2-4 of the ID; offset from the high 32 bits, skip from the low
// ones) is go-maglev's.
func permutation(id string, size uint32) (offset, skip uint32) {
	h := siphash.Hash(permKey0, permKey1, []byte(id))
	m := uint64(size)
	return uint32((h >> 32) % m), uint32((h&0xffffffff)%(m-1) + 1)
}

// The fill order is that of Katran's "MaglevHashV2": rounds in which every
// backend, in ID order, earns its weight in credit and takes its next free
// preferred slot each time its credit reaches the largest weight. A backend
// of weight w therefore takes its k-th slot in round ceil(k*maxWeight/w),
// and the fill stops when every slot is taken. With equal weights every
// backend takes one slot per round, which is plain Maglev (and go-maglev).
//
// Two implementations produce exactly that order. fillRounds walks the
// rounds, costing (rounds x backends) steps: cheap when weights are of
// similar size. When one weight dwarfs the others the rounds multiply while
// most backends earn nothing, so fillHeap instead keeps the backends in a
// heap keyed by (round of next slot, ID order) and costs log(backends) per
// slot whatever the weights.

// useRounds reports whether walking the rounds is cheaper than the heap.
func useRounds(size uint32, n int, maxWeight uint32, sumWeight uint64) bool {
	// Number of rounds: about size*max/sum, plus one partial round.
	rounds := uint64(size)*uint64(maxWeight)/sumWeight + 1
	steps := rounds * uint64(n)
	heapSteps := uint64(size) * uint64(bits.Len(uint(n))+1)
	// Measured: a round step costs about 1 ns (a predictable add and
	// compare), a heap level about 5 ns (an unpredictable comparison).
	return steps <= 4*heapSteps
}

func fillRounds(t *Table, ms []member, maxWeight uint32) {
	f := newFiller(t)
	total := len(t.slots)
	placed := 0
	for {
		for i := range ms {
			b := &ms[i]
			b.cum += uint64(b.weight)
			if b.cum < uint64(maxWeight) {
				continue
			}
			b.cum -= uint64(maxWeight)
			f.place(b)
			placed++
			if placed == total {
				return
			}
		}
	}
}

// neverRound caps the round numbers kept in the heap. The backend with the
// largest weight takes a slot every round, so the fill ends by round
// Size() <= MaxTableSize < neverRound: a capped backend is never reached,
// and the cap keeps a round in 32 bits so that (round, ID order) packs into
// one uint64 key that compares with a single instruction.
const neverRound = 1 << 31

// nextRound is the round in which a backend of weight w that has taken
// placed slots takes its next one: ceil((placed+1)*maxWeight/w), capped at
// neverRound. The product is below 2^23 * 2^32, so it cannot overflow.
func nextRound(placed uint64, maxWeight, w uint32) uint64 {
	return min(((placed+1)*uint64(maxWeight)+uint64(w)-1)/uint64(w), neverRound)
}

func fillHeap(t *Table, ms []member, maxWeight uint32) {
	f := newFiller(t)
	// Key: round in the high 32 bits, index into ms (ID order) in the low.
	h := make([]uint64, len(ms))
	for i := range ms {
		h[i] = nextRound(0, maxWeight, ms[i].weight)<<32 | uint64(i)
	}
	for i := len(h)/2 - 1; i >= 0; i-- {
		siftDown(h, i)
	}
	for range len(t.slots) {
		idx := uint32(h[0])
		b := &ms[idx]
		f.place(b)
		b.placed++
		h[0] = nextRound(b.placed, maxWeight, b.weight)<<32 | uint64(idx)
		siftDown(h, 0)
	}
}

func siftDown(h []uint64, i int) {
	n := len(h)
	x := h[i]
	for {
		c := 2*i + 1
		if c >= n {
			break
		}
		if c+1 < n && h[c+1] < h[c] {
			c++
		}
		if x <= h[c] {
			break
		}
		h[i] = h[c]
		i = c
	}
	h[i] = x
}

// filler holds the state of one table build.
type filler struct {
	t *Table
	// taken mirrors which slots are assigned, one bit per slot: probing
	// reads it instead of the 32-bit slots, so the probe loop stays in
	// cache (80 KiB for 655373 slots, against 2.5 MiB).
	taken []uint64
}

func newFiller(t *Table) *filler {
	return &filler{t: t, taken: make([]uint64, (len(t.slots)+63)/64)}
}

// place gives b the first free slot of its permutation. A free slot always
// exists because the callers stop once every slot is taken, and the
// permutation visits every slot.
func (f *filler) place(b *member) {
	size, skip := uint32(len(f.t.slots)), b.skip
	c := b.pos
	for f.taken[c>>6]&(1<<(c&63)) != 0 {
		c = step(c, skip, size)
	}
	f.taken[c>>6] |= 1 << (c & 63)
	f.t.slots[c] = b.orig
	f.t.counts[b.orig]++
	b.pos = step(c, skip, size)
}

// step returns (c + skip) mod size for c, skip < size <= MaxTableSize.
// It is branch-free on purpose: the wrap happens at random, and a
// mispredicted branch there made the whole build markedly slower.
func step(c, skip, size uint32) uint32 {
	d := c + skip - size
	// d is negative as an int32 exactly when no wrap was needed.
	return d + size&uint32(int32(d)>>31)
}

// Lookup returns the index, in the slice given to NewTable, of the backend
// that owns hash h, or -1 if the table has no backend with weight. It does
// not allocate or lock: one multiplication and one load (see Slot).
func (t *Table) Lookup(h uint64) int {
	hi, _ := bits.Mul64(h, uint64(len(t.slots)))
	return int(t.slots[hi])
}

// Slot returns the slot that hash h falls into: the high 64 bits of the
// 128-bit product h*Size(), i.e. floor(h*Size()/2^64) (Lemire's
// multiply-shift reduction). It is exact integer arithmetic, identical on
// every architecture, and much cheaper than h % Size(). It uses the high
// bits of h, so h must be well mixed there, as FlowHash is.
func (t *Table) Slot(h uint64) uint32 {
	hi, _ := bits.Mul64(h, uint64(len(t.slots)))
	return uint32(hi)
}

// Owner returns the index of the backend owning slot (as in Lookup), or -1
// if the table is empty. It panics if slot >= Size().
func (t *Table) Owner(slot uint32) int { return int(t.slots[slot]) }

// Size returns the number of slots.
func (t *Table) Size() uint32 { return uint32(len(t.slots)) }

// Backends returns the length of the backend slice the table was built from.
func (t *Table) Backends() int { return len(t.counts) }

// Count returns the number of slots owned by backend i (an index into the
// slice given to NewTable): its share of new flows is Count(i)/Size(). It is
// meant for metrics and tests. It panics if i is out of range.
func (t *Table) Count(i int) uint32 { return t.counts[i] }
