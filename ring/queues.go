package ring

import "github.com/weirlb/weir/umem"

// The four queue types below wrap the shared rings of one socket. Each is
// owned by one goroutine, the socket's worker: none of their methods may run
// concurrently with another method of the same queue (or of the socket's
// Umem). They never allocate or make system calls.
//
// Producer queues (FillQueue, TXQueue) follow Reserve, Set..., Submit;
// consumer queues (RXQueue, CompletionQueue) follow Peek, Get..., Release. A
// batch costs one atomic load of the other side's index (only when the cached
// view is short) and one atomic store of ours. Indices are free-running
// uint32s that wrap at 2^32; pass them back exactly as returned (idx, idx+1,
// ...).

// FillQueue is the fill ring: user space hands the kernel empty frames to
// receive into. Submitted frames come back through the RX ring.
type FillQueue struct {
	r producer[uint64]
	u *umem.Umem
}

// Size is the number of slots.
func (q *FillQueue) Size() uint32 { return q.r.size }

// Reserve reserves up to n slots starting at idx and returns how many.
func (q *FillQueue) Reserve(n uint32) (got, idx uint32) { return q.r.reserve(n) }

// Set puts the frame address addr into reserved slot idx. Any address in the
// frame will do; the kernel uses its base.
func (q *FillQueue) Set(idx uint32, addr uint64) { q.r.set(idx, addr) }

// Submit publishes the first n reserved slots to the kernel and gives up the
// rest of the reservation. The frames leave user space's hands.
func (q *FillQueue) Submit(n uint32) {
	q.r.submit(n)
	if q.u != nil {
		q.u.FillSubmitted(n)
	}
}

// Put reserves, sets and submits as many of addrs as fit and returns how
// many were submitted.
func (q *FillQueue) Put(addrs []uint64) uint32 {
	got, idx := q.r.reserve(uint32(min(len(addrs), int(q.r.size))))
	for i := range got {
		q.r.set(idx+i, addrs[i])
	}
	q.Submit(got)
	return got
}

// NeedWakeup reports the kernel's XDP_RING_NEED_WAKEUP flag on the fill ring:
// when set (with need_wakeup enabled), the driver sleeps until a syscall wakes
// it; see Socket.WakeupRX.
func (q *FillQueue) NeedWakeup() bool { return q.r.needWakeup() }

// Outstanding is the number of submitted frames the kernel has not yet taken
// off the ring.
func (q *FillQueue) Outstanding() uint32 { return q.r.outstanding() }

// TXQueue is the TX ring: user space hands the kernel packets to send. Sent
// frames come back through the completion ring, with the address that was
// submitted.
type TXQueue struct {
	r producer[Desc]
	u *umem.Umem
}

// Size is the number of slots.
func (q *TXQueue) Size() uint32 { return q.r.size }

// Reserve reserves up to n slots starting at idx and returns how many.
func (q *TXQueue) Reserve(n uint32) (got, idx uint32) { return q.r.reserve(n) }

// Set puts descriptor d into reserved slot idx. d.Addr may point anywhere in
// a frame (for instance into the headroom after umem.Prepend) as long as
// d.Addr+d.Len stays inside it.
func (q *TXQueue) Set(idx uint32, d Desc) { q.r.set(idx, d) }

// Slots returns reserved slots idx..idx+n-1 (n at most what Reserve granted)
// as one slice, or as two when they wrap around the end of the ring: a batch
// loop fills them directly instead of calling Set for each. Submit publishes
// them in order, first slice first.
func (q *TXQueue) Slots(idx, n uint32) (first, second []Desc) {
	return span(q.r.slots, q.r.mask, idx, n)
}

// Submit publishes the first n reserved slots and gives up the rest of the
// reservation. The frames leave user space's hands. On most devices the
// kernel only transmits after a kick: see Socket.FlushTX.
func (q *TXQueue) Submit(n uint32) {
	q.r.submit(n)
	if q.u != nil {
		q.u.TXSubmitted(n)
	}
}

// Put reserves, sets and submits as many of descs as fit and returns how
// many were submitted.
func (q *TXQueue) Put(descs []Desc) uint32 {
	got, idx := q.r.reserve(uint32(min(len(descs), int(q.r.size))))
	for i := range got {
		q.r.set(idx+i, descs[i])
	}
	q.Submit(got)
	return got
}

// NeedWakeup reports the kernel's XDP_RING_NEED_WAKEUP flag on the TX ring:
// when set, the kernel sends only after sendto (Socket.KickTX). On veth
// (copy mode) it is always set.
func (q *TXQueue) NeedWakeup() bool { return q.r.needWakeup() }

// Outstanding is the number of submitted descriptors the kernel has not yet
// taken off the ring.
func (q *TXQueue) Outstanding() uint32 { return q.r.outstanding() }

// RXQueue is the RX ring: the kernel hands user space received packets, in
// frames that came from the fill ring.
type RXQueue struct {
	r consumer[Desc]
	u *umem.Umem
}

// Size is the number of slots.
func (q *RXQueue) Size() uint32 { return q.r.size }

// Peek returns how many received descriptors, up to max, start at idx.
func (q *RXQueue) Peek(max uint32) (n, idx uint32) { return q.r.peek(max) }

// Get returns the descriptor in peeked slot idx.
func (q *RXQueue) Get(idx uint32) Desc { return q.r.get(idx) }

// Descs returns peeked descriptors idx..idx+n-1 (n at most what Peek
// returned) as one slice, or as two when they wrap around the end of the
// ring: a batch loop reads them directly instead of calling Get for each.
// They are the ring's own slots: read them before Release, never write them.
func (q *RXQueue) Descs(idx, n uint32) (first, second []Desc) {
	return span(q.r.slots, q.r.mask, idx, n)
}

// Release hands the first n peeked slots back to the kernel. Their frames
// are now in user space's hands: transmit them, refill them, or free them.
func (q *RXQueue) Release(n uint32) {
	q.r.release(n)
	if q.u != nil {
		q.u.RXReaped(n)
	}
}

// Take copies up to len(dst) received descriptors into dst, releases them and
// returns how many.
func (q *RXQueue) Take(dst []Desc) uint32 {
	n, idx := q.r.peek(uint32(min(len(dst), int(q.r.size))))
	for i := range n {
		dst[i] = q.r.get(idx + i)
	}
	q.Release(n)
	return n
}

// CompletionQueue is the completion ring: the kernel hands back the addresses
// of transmitted frames.
type CompletionQueue struct {
	r consumer[uint64]
	u *umem.Umem
}

// Size is the number of slots.
func (q *CompletionQueue) Size() uint32 { return q.r.size }

// Peek returns how many completed addresses, up to max, start at idx.
func (q *CompletionQueue) Peek(max uint32) (n, idx uint32) { return q.r.peek(max) }

// Get returns the address in peeked slot idx: the Addr of the transmitted
// descriptor, which may lie anywhere in its frame.
func (q *CompletionQueue) Get(idx uint32) uint64 { return q.r.get(idx) }

// Release hands the first n peeked slots back to the kernel. Their frames
// are now in user space's hands.
func (q *CompletionQueue) Release(n uint32) {
	q.r.release(n)
	if q.u != nil {
		q.u.CompletionReaped(n)
	}
}

// Take copies up to len(dst) completed addresses into dst, releases them and
// returns how many.
func (q *CompletionQueue) Take(dst []uint64) uint32 {
	n, idx := q.r.peek(uint32(min(len(dst), int(q.r.size))))
	for i := range n {
		dst[i] = q.r.get(idx + i)
	}
	q.Release(n)
	return n
}
