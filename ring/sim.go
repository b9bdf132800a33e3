package ring

import (
	"fmt"
	"sync/atomic"
	"time"
)

// NewInMemory builds a Socket whose four rings live in ordinary memory, with
// a SimKernel playing the kernel's side. Workers, tests and benchmarks run
// against it exactly as against a bound socket, without privileges: the same
// queue types, the same Umem ledger, the same need_wakeup flags (the TX ring
// asks for a kick, like veth in copy mode; kicks are only counted).
// Ifindex, Queue, ZeroCopy and TXBudget of cfg are ignored. Stop whatever
// drives the SimKernel before closing the Socket.
func NewInMemory(cfg Config) (*Socket, *SimKernel, error) {
	cfg, err := cfg.normalize()
	if err != nil {
		return nil, nil, fmt.Errorf("ring: in-memory socket: %w", err)
	}
	if err := cfg.Umem.Claim(); err != nil {
		return nil, nil, fmt.Errorf("ring: in-memory socket: %w", err)
	}
	// Each shared word on its own cache line, as the kernel lays them out,
	// so the two sides do not false-share.
	type word struct {
		v uint32
		_ [60]byte
	}
	type words struct{ prod, cons, flags word }
	var mem [4]words
	w := func(i int) shared { return shared{&mem[i].prod.v, &mem[i].cons.v, &mem[i].flags.v} }
	mem[3].flags.v = needWakeupFlag // TX: kick needed

	fillSlots := make([]uint64, cfg.FillSize)
	compSlots := make([]uint64, cfg.CompletionSize)
	rxSlots := make([]Desc, cfg.RXSize)
	txSlots := make([]Desc, cfg.TXSize)

	s := &Socket{
		fd:         -1,
		ifname:     "in-memory",
		mode:       ModeInMemory,
		needWakeup: !cfg.NoNeedWakeup,
		u:          cfg.Umem,
		scratch:    make([]uint64, max(cfg.FillSize, cfg.CompletionSize)),
		fill:       FillQueue{r: newProducer(fillSlots, w(0)), u: cfg.Umem},
		comp:       CompletionQueue{r: newConsumer(compSlots, w(1)), u: cfg.Umem},
		rx:         RXQueue{r: newConsumer(rxSlots, w(2)), u: cfg.Umem},
		tx:         TXQueue{r: newProducer(txSlots, w(3)), u: cfg.Umem},
	}
	k := &SimKernel{
		area:       cfg.Umem.Area(),
		frameSize:  uint64(cfg.Umem.FrameSize()),
		dataOffset: uint64(cfg.Umem.DataOffset()),
		maxPacket:  cfg.Umem.MaxPacket(),
		fill:       newConsumer(fillSlots, w(0)),
		comp:       newProducer(compSlots, w(1)),
		rx:         newProducer(rxSlots, w(2)),
		tx:         newConsumer(txSlots, w(3)),
	}
	s.sim = k
	return s, k, nil
}

// SimKernel is the kernel's side of an in-memory Socket: it takes frames from
// the fill ring and posts received packets on the RX ring, and it takes TX
// descriptors and posts their addresses on the completion ring, behaving like
// a copy-mode driver (packets land at Umem.DataOffset, a full RX ring or an
// empty fill ring drops and counts, an invalid TX descriptor is counted,
// not sent, and completed, as Linux 6.18 does).
//
// A SimKernel is owned by one goroutine, which may be another than the
// socket's worker: the two meet only through the rings' atomics, like user
// space and the kernel. It writes frame bytes and never touches the Umem
// object itself once built.
type SimKernel struct {
	// The Umem's geometry, copied as the kernel copies it at registration:
	// the Umem object also holds the worker's free stack and ledger, and
	// reading its fields here would put their cache line in both cores'
	// caches, so that every write of the worker's bookkeeping had to take
	// the line back from this goroutine's core.
	area       []byte
	frameSize  uint64
	dataOffset uint64
	maxPacket  uint32

	fill consumer[uint64]
	comp producer[uint64]
	rx   producer[Desc]
	tx   consumer[Desc]

	rxDropped  atomic.Uint64
	rxRingFull atomic.Uint64
	fillEmpty  atomic.Uint64
	txInvalid  atomic.Uint64
	txEmpty    atomic.Uint64
}

// Deliver receives pkts: each is copied into a frame from the fill ring and
// posted on the RX ring. It returns how many were delivered; the others were
// dropped and counted (RXRingFull, RXDropped).
func (k *SimKernel) Deliver(pkts [][]byte) int {
	return k.deliver(pkts, uint32(len(pkts)), 0)
}

// DeliverLen posts n RX descriptors of length bytes without writing the
// frames, for benchmarks of the rings alone. It returns how many were posted.
func (k *SimKernel) DeliverLen(n int, length uint32) int {
	return k.deliver(nil, uint32(n), length)
}

func (k *SimKernel) deliver(pkts [][]byte, n, length uint32) int {
	room, ridx := k.rx.reserve(n)
	if room < n {
		k.rxRingFull.Add(uint64(n - room))
	}
	frames, fidx := k.fill.peek(room)
	if frames < room {
		k.fillEmpty.Add(1)
		k.rxDropped.Add(uint64(room - frames))
	}
	area, mask, off, maxLen := k.area, k.frameSize-1, k.dataOffset, k.maxPacket
	posted := uint32(0)
	for i := range frames {
		l := length
		if pkts != nil {
			l = uint32(len(pkts[i]))
		}
		if l > maxLen {
			k.rxDropped.Add(1)
			continue // the frame stays with the kernel for the next packet, as in a driver
		}
		addr := k.fill.get(fidx+posted)&^mask + off
		if pkts != nil {
			copy(area[addr:addr+uint64(l)], pkts[i])
		}
		k.rx.set(ridx+posted, Desc{Addr: addr, Len: l})
		posted++
	}
	k.fill.release(posted)
	k.rx.submit(posted)
	return int(posted)
}

// Transmit takes up to max descriptors off the TX ring, hands each valid one
// and its bytes to fn (if not nil; the bytes are only valid during the call),
// and posts the addresses of all of them on the completion ring. It stops
// early when the completion ring is full, as the kernel does. It returns how
// many packets were sent.
func (k *SimKernel) Transmit(max int, fn func(d Desc, pkt []byte)) int {
	n, idx := k.tx.peek(uint32(max))
	if n == 0 {
		k.txEmpty.Add(1)
		return 0
	}
	room, cidx := k.comp.reserve(n)
	size, fs, mask := uint64(len(k.area)), uint32(k.frameSize), k.frameSize-1
	sent := uint32(0)
	for i := range room {
		d := k.tx.get(idx + i)
		if d.Addr >= size || d.Len == 0 || d.Len > fs || uint32(d.Addr&mask)+d.Len > fs {
			k.txInvalid.Add(1)
		} else {
			if fn != nil {
				fn(d, k.area[d.Addr:d.Addr+uint64(d.Len):d.Addr&^mask+k.frameSize])
			}
			sent++
		}
		k.comp.set(cidx+i, d.Addr)
	}
	k.tx.release(room)
	k.comp.submit(room)
	return int(sent)
}

// SetNeedWakeup sets or clears XDP_RING_NEED_WAKEUP on the fill and TX rings,
// to test how a worker reacts to the flags.
func (k *SimKernel) SetNeedWakeup(fill, tx bool) {
	flag := func(b bool) uint32 {
		if b {
			return needWakeupFlag
		}
		return 0
	}
	atomic.StoreUint32(k.fill.flags, flag(fill))
	atomic.StoreUint32(k.tx.flags, flag(tx))
}

func (k *SimKernel) stats(st *Stats) {
	st.RXDropped = k.rxDropped.Load()
	st.RXRingFull = k.rxRingFull.Load()
	st.RXFillRingEmptyDescs = k.fillEmpty.Load()
	st.TXInvalidDescs = k.txInvalid.Load()
	st.TXRingEmptyDescs = k.txEmpty.Load()
}

// wait polls the socket's RX ring until it holds descriptors or timeout
// passes.
func (k *SimKernel) wait(s *Socket, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		if n, _ := s.rx.Peek(1); n > 0 {
			return true
		}
		if !time.Now().Before(deadline) {
			return false
		}
		time.Sleep(20 * time.Microsecond)
	}
}
