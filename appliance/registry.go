package appliance

import (
	"fmt"
	"net/netip"
	"sync"
)

// A real is one (VIP, backend) pair. Flow tables remember the real ID a flow
// was sent to, so the ID must stay the same across snapshots while the pair
// exists, and must never be mistaken for another pair after it is gone.
//
// A real ID is a slot index (low realSlotBits bits), which lets the hot path
// find the real with one slice index, and a tag (high bits) that changes each
// time a slot is reused, so a flow remembered for a removed pair cannot land
// on whatever pair reuses the slot.
const (
	realSlotBits  = 20
	realSlotMask  = 1<<realSlotBits - 1
	realTagLimit  = 1 << (32 - realSlotBits)
	MaxRealsLimit = 1 << realSlotBits
)

type realKey struct {
	vip     VIPKey
	backend netip.Addr
}

// Registry hands out stable real IDs. One registry lives as long as the
// appliance and is shared by every snapshot it builds; it is safe for
// concurrent use, but snapshots are expected to be built one at a time.
type Registry struct {
	mu    sync.Mutex
	max   int
	ids   map[realKey]uint32
	tags  []uint32 // last tag used per slot
	free  []uint32 // released slots, reused last-in first-out
	inUse int
}

// NewRegistry returns a registry for at most maxReals (VIP, backend) pairs.
func NewRegistry(maxReals int) (*Registry, error) {
	if maxReals < 1 || maxReals > MaxRealsLimit {
		return nil, fmt.Errorf("max reals %d out of range 1..%d", maxReals, MaxRealsLimit)
	}
	return &Registry{max: maxReals, ids: make(map[realKey]uint32)}, nil
}

// MaxReals returns the registry's capacity; per-worker counter arrays are
// sized by it.
func (r *Registry) MaxReals() int { return r.max }

// assign returns the ID of every pair in keys, allocating new ones, and
// releases the IDs of pairs not in keys. It fails without changing anything if
// the pairs do not fit.
func (r *Registry) assign(keys []realKey) ([]uint32, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	want := make(map[realKey]bool, len(keys))
	fresh := 0
	for _, k := range keys {
		if want[k] {
			continue
		}
		want[k] = true
		if _, ok := r.ids[k]; !ok {
			fresh++
		}
	}
	released := 0
	for k := range r.ids {
		if !want[k] {
			released++
		}
	}
	if r.inUse-released+fresh > r.max {
		return nil, fmt.Errorf("%d (VIP, backend) pairs exceed the limit of %d", r.inUse-released+fresh, r.max)
	}
	for k, id := range r.ids {
		if !want[k] {
			delete(r.ids, k)
			r.free = append(r.free, id&realSlotMask)
			r.inUse--
		}
	}
	out := make([]uint32, len(keys))
	for i, k := range keys {
		id, ok := r.ids[k]
		if !ok {
			var slot uint32
			if n := len(r.free); n > 0 {
				slot = r.free[n-1]
				r.free = r.free[:n-1]
			} else {
				slot = uint32(len(r.tags))
				r.tags = append(r.tags, 0)
			}
			tag := r.tags[slot]%(realTagLimit-1) + 1 // never 0, so no ID is 0
			r.tags[slot] = tag
			id = tag<<realSlotBits | slot
			r.ids[k] = id
			r.inUse++
		}
		out[i] = id
	}
	return out, nil
}

// slots returns how many slots have ever been used (the length a snapshot's
// real table needs).
func (r *Registry) slots() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.tags)
}
