package ring

import (
	"sync/atomic"
)

// Desc is an RX or TX descriptor, laid out like the kernel's struct
// xdp_desc: Addr is an address in the UMEM (see package umem), Len the
// packet length, Options the XDP_PKT_CONTD / XDP_TX_METADATA bits (always 0
// here: multi-buffer and TX metadata are not enabled).
type Desc struct {
	Addr    uint64
	Len     uint32
	Options uint32
}

// needWakeupFlag is XDP_RING_NEED_WAKEUP in a ring's flags word.
const needWakeupFlag = 1

// shared names the three words of a ring that both sides see.
type shared struct {
	prod, cons, flags *uint32
}

// producer is our side of a ring that we fill and another party (the kernel,
// or the in-memory kernel of Sim) drains. Indices are free-running uint32s;
// slots[i&mask] is slot i, and all arithmetic is modulo 2^32, so the ring
// works across the wrap of the shared words.
//
// A producer is owned by one goroutine.
type producer[T any] struct {
	slots []T
	mask  uint32
	size  uint32

	prod  *uint32 // shared producer word: we write it (release)
	cons  *uint32 // shared consumer word: the other side writes it (acquire)
	flags *uint32

	cached   uint32 // the producer value we last published
	reserved uint32 // slots handed out by reserve since the last submit
	consSeen uint32 // the consumer value we last read
}

func newProducer[T any](slots []T, w shared) producer[T] {
	n := uint32(len(slots))
	return producer[T]{
		slots: slots, mask: n - 1, size: n,
		prod: w.prod, cons: w.cons, flags: w.flags,
		cached: atomic.LoadUint32(w.prod), consSeen: atomic.LoadUint32(w.cons),
	}
}

// free is the number of slots we may still reserve according to consSeen.
// A consumer word that claims more was consumed than produced (a bug on the
// other side) yields 0 rather than a huge count that would overwrite slots
// still in use.
func (r *producer[T]) free() uint32 {
	used := r.cached + r.reserved - r.consSeen
	if used > r.size {
		return 0
	}
	return r.size - used
}

// reserve hands out up to n consecutive free slots starting at index idx and
// returns how many. It reads the shared consumer word only when the cached
// view has fewer than n free slots. Fill the slots with set, then submit.
// Slots reserved but not submitted are given up by the next submit.
func (r *producer[T]) reserve(n uint32) (got, idx uint32) {
	free := r.free()
	if free < n {
		r.consSeen = atomic.LoadUint32(r.cons)
		free = r.free()
	}
	got = min(n, free)
	idx = r.cached + r.reserved
	r.reserved += got
	return got, idx
}

func (r *producer[T]) set(idx uint32, v T) { r.slots[idx&r.mask] = v }

// span returns slots idx..idx+n-1 (n at most the ring size) as one slice, or
// as two when they wrap around the end of the ring.
func span[T any](slots []T, mask, idx, n uint32) (first, second []T) {
	if n == 0 {
		return nil, nil
	}
	i := idx & mask
	if left := uint32(len(slots)) - i; n > left {
		return slots[i:], slots[:n-left]
	}
	return slots[i : i+n], nil
}

// copySpans copies the slots of the source span (s1, s2) into the
// destination span (d1, d2) of the same total length, with at most four
// copies however the two wrap.
func copySpans[T any](d1, d2, s1, s2 []T) {
	c := copy(d1, s1)
	if c < len(s1) { // d1 is full
		c = copy(d2, s1[c:])
		copy(d2[c:], s2)
		return
	}
	c2 := copy(d1[c:], s2)
	copy(d2, s2[c2:])
}

// submit publishes the first n reserved slots with one atomic store (release:
// the slot writes are visible to whoever reads the new producer value) and
// gives up the rest of the reservation.
func (r *producer[T]) submit(n uint32) {
	if n > r.reserved {
		panic("ring: submit of more slots than reserved")
	}
	r.reserved = 0
	if n == 0 {
		return
	}
	r.cached += n
	atomic.StoreUint32(r.prod, r.cached)
}

// outstanding is the number of published slots the other side has not yet
// consumed. It reads the shared consumer word.
func (r *producer[T]) outstanding() uint32 {
	r.consSeen = atomic.LoadUint32(r.cons)
	if d := r.cached - r.consSeen; d <= r.size {
		return d
	}
	return 0
}

func (r *producer[T]) needWakeup() bool {
	return atomic.LoadUint32(r.flags)&needWakeupFlag != 0
}

// consumer is our side of a ring that another party fills and we drain.
// A consumer is owned by one goroutine.
type consumer[T any] struct {
	slots []T
	mask  uint32
	size  uint32

	prod  *uint32 // shared producer word: the other side writes it (acquire)
	cons  *uint32 // shared consumer word: we write it (release)
	flags *uint32

	cached   uint32 // the consumer value we last published
	prodSeen uint32 // the producer value we last read
}

func newConsumer[T any](slots []T, w shared) consumer[T] {
	n := uint32(len(slots))
	return consumer[T]{
		slots: slots, mask: n - 1, size: n,
		prod: w.prod, cons: w.cons, flags: w.flags,
		cached: atomic.LoadUint32(w.cons), prodSeen: atomic.LoadUint32(w.prod),
	}
}

// avail is the number of filled slots according to prodSeen; an impossible
// producer word yields 0.
func (r *consumer[T]) avail() uint32 {
	a := r.prodSeen - r.cached
	if a > r.size {
		return 0
	}
	return a
}

// peek returns how many filled slots, up to max, start at index idx. It reads
// the shared producer word (acquire) only when the cached view has fewer than
// max. Peek does not consume: read the slots with get, then release.
func (r *consumer[T]) peek(max uint32) (n, idx uint32) {
	a := r.avail()
	if a < max {
		r.prodSeen = atomic.LoadUint32(r.prod)
		a = r.avail()
	}
	return min(a, max), r.cached
}

func (r *consumer[T]) get(idx uint32) T { return r.slots[idx&r.mask] }

// moveTo moves the first n peeked slots into n slots of dst reserved from
// didx, without submitting or releasing them.
func (r *consumer[T]) moveTo(dst *producer[T], didx, idx, n uint32) {
	s1, s2 := span(r.slots, r.mask, idx, n)
	d1, d2 := span(dst.slots, dst.mask, didx, n)
	copySpans(d1, d2, s1, s2)
}

// release hands the first n peeked slots back to the producer with one
// atomic store (release: our reads of the slots happen before the other side
// may overwrite them).
func (r *consumer[T]) release(n uint32) {
	if n > r.avail() {
		panic("ring: release of more slots than peeked")
	}
	if n == 0 {
		return
	}
	r.cached += n
	atomic.StoreUint32(r.cons, r.cached)
}

func (r *consumer[T]) needWakeup() bool {
	return atomic.LoadUint32(r.flags)&needWakeupFlag != 0
}
