package ring

import (
	"errors"
	"fmt"
	"math/bits"
	"sync"
	"sync/atomic"

	"github.com/weirlb/weir/umem"
)

// DefaultRingSize is the size of every ring whose Config field is zero.
const DefaultRingSize = 2048

// MaxRingSize bounds ring sizes; the kernel allows more, but a deeper ring
// only adds latency and memory to a forwarding path.
const MaxRingSize = 1 << 16

// ErrClosed is returned by operations on a closed Socket.
var ErrClosed = errors.New("ring: socket closed")

// ZeroCopy is the policy for the zero-copy mode of a socket.
type ZeroCopy uint8

const (
	// ZeroCopyAuto tries zero-copy and falls back to copy mode; the reason
	// zero-copy was refused is kept in Socket.ZeroCopyError.
	ZeroCopyAuto ZeroCopy = iota
	// ZeroCopyRequire fails Open when the driver cannot do zero-copy.
	ZeroCopyRequire
	// ZeroCopyNever binds in copy mode.
	ZeroCopyNever
)

func (z ZeroCopy) String() string {
	switch z {
	case ZeroCopyAuto:
		return "auto"
	case ZeroCopyRequire:
		return "require"
	case ZeroCopyNever:
		return "never"
	}
	return fmt.Sprintf("ZeroCopy(%d)", uint8(z))
}

// Mode is how a bound socket moves packets.
type Mode uint8

const (
	// ModeCopy: the kernel copies packets between its buffers and the UMEM
	// (every driver, including veth; generic XDP).
	ModeCopy Mode = iota + 1
	// ModeZeroCopy: the driver DMAs straight into and out of the UMEM.
	ModeZeroCopy
	// ModeInMemory: the rings live in ordinary memory and a SimKernel plays
	// the kernel (NewInMemory).
	ModeInMemory
)

func (m Mode) String() string {
	switch m {
	case ModeCopy:
		return "copy"
	case ModeZeroCopy:
		return "zero-copy"
	case ModeInMemory:
		return "in-memory"
	}
	return fmt.Sprintf("Mode(%d)", uint8(m))
}

// Config describes a socket. Zero ring sizes take DefaultRingSize.
type Config struct {
	// Ifindex and Queue name the NIC queue to bind. The interface is looked
	// up in the network namespace of the calling thread.
	Ifindex int
	Queue   uint32
	// Umem holds the frames. It must not be in use by another open socket;
	// every socket gets its own.
	Umem *umem.Umem
	// Ring sizes, powers of two up to MaxRingSize. The completion ring
	// should be at least as large as the TX ring, or TX stalls until
	// completions are reaped.
	FillSize, CompletionSize, RXSize, TXSize uint32
	// ZeroCopy is the zero-copy policy (default ZeroCopyAuto).
	ZeroCopy ZeroCopy
	// NoNeedWakeup disables XDP_USE_NEED_WAKEUP. With it enabled (the
	// default) the kernel says through the ring flags when a syscall is
	// needed, and the socket skips syscalls that are not.
	NoNeedWakeup bool
	// TXBudget sets XDP_MAX_TX_SKB_BUDGET in copy mode: how many
	// descriptors one sendto may move (the kernel's own default is
	// KernelTXBudget). It must lie in [KernelTXBudget, TXSize]; zero means
	// TXSize, so that one kick drains the ring (on veth that halved the
	// kicks per packet of a worker taking batches of 64, at the same
	// throughput, see the README's Performance section). Kernels before
	// 6.17 lack the option; it is then ignored and Socket.TXBudget reports
	// 0.
	TXBudget uint32
}

// KernelTXBudget is how many descriptors one sendto moves in copy mode when
// nothing else is set (the kernel's TX_BATCH_SIZE).
const KernelTXBudget = 32

func (c Config) normalize() (Config, error) {
	if c.Umem == nil {
		return c, errors.New("no umem in config")
	}
	for _, r := range []struct {
		name string
		size *uint32
	}{{"fill", &c.FillSize}, {"completion", &c.CompletionSize}, {"rx", &c.RXSize}, {"tx", &c.TXSize}} {
		if *r.size == 0 {
			*r.size = DefaultRingSize
		}
		if bits.OnesCount32(*r.size) != 1 || *r.size > MaxRingSize {
			return c, fmt.Errorf("%s ring size %d: must be a power of two up to %d", r.name, *r.size, MaxRingSize)
		}
	}
	if c.ZeroCopy > ZeroCopyNever {
		return c, fmt.Errorf("unknown zero-copy policy %v", c.ZeroCopy)
	}
	if c.TXBudget == 0 && c.TXSize > KernelTXBudget {
		c.TXBudget = c.TXSize
	}
	if c.TXBudget != 0 && (c.TXBudget < KernelTXBudget || c.TXBudget > c.TXSize) {
		return c, fmt.Errorf("tx budget %d: must lie in [%d, tx ring size %d]", c.TXBudget, KernelTXBudget, c.TXSize)
	}
	return c, nil
}

// Stats are a socket's counters.
type Stats struct {
	// From the kernel (getsockopt XDP_STATISTICS).
	RXDropped            uint64 // received packets dropped (no fill frame, and other reasons)
	RXInvalidDescs       uint64 // invalid fill ring entries
	TXInvalidDescs       uint64 // invalid TX descriptors, skipped without completion
	RXRingFull           uint64 // packets dropped because the RX ring was full
	RXFillRingEmptyDescs uint64 // times the fill ring was found empty
	TXRingEmptyDescs     uint64 // times the TX ring was found empty
	// From user space.
	Kicks         uint64 // TX kicks (sendto)
	KickRetryable uint64 // kicks that returned EAGAIN, EBUSY, ENOBUFS or ENETDOWN
	RXWakeups     uint64 // RX wakeups (recvfrom) because the fill ring asked for one
}

// Socket is an AF_XDP socket bound to one NIC queue, with its four rings and
// its Umem. One goroutine, the queue's worker, owns a Socket: its rings, its
// Umem and every method except FD, Mode, Stats and the other accessors of
// immutable state, which any goroutine may call.
type Socket struct {
	fd         int // -1 for in-memory rings
	ifindex    int
	ifname     string
	queue      uint32
	mode       Mode
	needWakeup bool
	zcErr      error
	txBudget   uint32
	u          *umem.Umem
	sim        *SimKernel

	fill FillQueue
	comp CompletionQueue
	rx   RXQueue
	tx   TXQueue

	scratch []uint64 // Refill, ReapCompletions, RecycleCompletions
	maps    [][]byte // the mmapped rings
	dead    [3]uint32

	life          sync.RWMutex // Stats (any goroutine) against Close
	closed        atomic.Bool
	kicks         atomic.Uint64
	kickRetryable atomic.Uint64
	rxWakeups     atomic.Uint64
}

// FD is the socket's file descriptor, for the XSKMAP entry of its queue
// (-1 for in-memory rings). It is meaningless after Close.
func (s *Socket) FD() int { return s.fd }

// Mode is the mode the kernel granted (read back with XDP_OPTIONS).
func (s *Socket) Mode() Mode { return s.mode }

// ZeroCopyError says why ZeroCopyAuto fell back to copy mode (it wraps the
// kernel's errno, EOPNOTSUPP on veth); nil otherwise.
func (s *Socket) ZeroCopyError() error { return s.zcErr }

// TXBudget is the XDP_MAX_TX_SKB_BUDGET set on the socket, 0 if none was
// (zero-copy mode, a kernel before 6.17, or a TX ring of at most
// KernelTXBudget entries).
func (s *Socket) TXBudget() uint32 { return s.txBudget }

// Ifindex is the bound interface's index.
func (s *Socket) Ifindex() int { return s.ifindex }

// Queue is the bound queue id.
func (s *Socket) Queue() uint32 { return s.queue }

// Umem is the socket's frame area.
func (s *Socket) Umem() *umem.Umem { return s.u }

// Fill is the fill ring.
func (s *Socket) Fill() *FillQueue { return &s.fill }

// Completion is the completion ring.
func (s *Socket) Completion() *CompletionQueue { return &s.comp }

// RX is the RX ring.
func (s *Socket) RX() *RXQueue { return &s.rx }

// TX is the TX ring.
func (s *Socket) TX() *TXQueue { return &s.tx }

// NeedWakeupFill reports whether the fill side needs a syscall to make
// progress (WakeupRX). Always false without need_wakeup: the kernel then
// never sleeps on the fill ring.
func (s *Socket) NeedWakeupFill() bool { return s.needWakeup && s.fill.NeedWakeup() }

// NeedWakeupTX reports whether submitted TX descriptors need a kick
// (KickTX). Always true without need_wakeup.
func (s *Socket) NeedWakeupTX() bool { return !s.needWakeup || s.tx.NeedWakeup() }

// Refill moves as many frames as fit from the Umem's free stack to the fill
// ring and returns how many.
func (s *Socket) Refill() uint32 {
	got, idx := s.fill.Reserve(uint32(len(s.scratch)))
	if got == 0 {
		return 0
	}
	n := uint32(s.u.Alloc(s.scratch[:got]))
	for i := range n {
		s.fill.Set(idx+i, s.scratch[i])
	}
	s.fill.Submit(n)
	return n
}

// ReapCompletions takes every completed address off the completion ring and
// frees its frame. It returns how many.
func (s *Socket) ReapCompletions() uint32 {
	n := s.comp.Take(s.scratch)
	s.u.Free(s.scratch[:n])
	return n
}

// RecycleCompletions takes every completed address off the completion ring
// and puts its frame straight back on the fill ring, the cheapest path for a
// forwarder (the free stack is not touched); frames the fill ring has no
// room for are freed. It returns how many completions it took.
func (s *Socket) RecycleCompletions() uint32 {
	n, idx := s.comp.Peek(s.comp.Size())
	if n == 0 {
		return 0
	}
	got, fidx := s.fill.Reserve(n)
	// Whole runs of slots are copied at once. The kernel masks fill
	// addresses to the frame base (aligned mode).
	s.comp.r.moveTo(&s.fill.r, fidx, idx, got)
	rest := s.scratch[:n-got]
	r1, r2 := span(s.comp.r.slots, s.comp.r.mask, idx+got, n-got)
	copySpans(rest, nil, r1, r2)
	s.comp.Release(n)
	s.fill.Submit(got)
	s.u.Free(rest)
	return n
}

// FlushTX kicks the kernel until it has taken every submitted TX descriptor,
// at most maxKicks times: in copy mode one sendto moves at most TXBudget
// descriptors (32 on kernels before 6.17). It stops early when the kernel does not need a
// kick (need_wakeup clear: the driver drains the ring by itself) or a kick
// made no progress (completion ring full, device busy); reap completions and
// call it again on the next batch. It returns how many descriptors are still
// in the ring, and an error only for a kick failure that retrying cannot
// fix.
func (s *Socket) FlushTX(maxKicks int) (outstanding uint32, err error) {
	out := s.tx.Outstanding()
	for k := 0; out > 0 && k < maxKicks; k++ {
		if !s.NeedWakeupTX() {
			break
		}
		if err := s.KickTX(); err != nil {
			return out, err
		}
		prev := out
		if out = s.tx.Outstanding(); out == prev {
			break
		}
	}
	return out, nil
}

// Close unmaps the rings and closes the socket, so that the queue can be
// bound again at once (Open waits out the kernel's short delay), and then
// gives every frame of the Umem back to its free stack: the kernel no longer
// holds any, and frames the worker still held are reclaimed too. The worker
// must have stopped using the socket and every frame address; afterwards the
// rings read as empty and full. The Umem stays mapped and can serve a new
// socket.
func (s *Socket) Close() error {
	if s.closed.Swap(true) {
		return ErrClosed
	}
	s.detachQueues()
	s.life.Lock()
	err := s.release()
	s.life.Unlock()
	if err != nil {
		// The kernel may still hold the socket and write into frames, so
		// the Umem stays claimed rather than hand those frames out again.
		return fmt.Errorf("ring: close %s queue %d: %w", s.ifname, s.queue, err)
	}
	s.u.Reclaim()
	return nil
}

// detachQueues points the queues at a zero-sized ring in s.dead, so any use
// after Close finds nothing to read or reserve instead of touching unmapped
// memory.
func (s *Socket) detachQueues() {
	w := shared{&s.dead[0], &s.dead[1], &s.dead[2]}
	s.fill = FillQueue{r: newProducer[uint64](nil, w)}
	s.tx = TXQueue{r: newProducer[Desc](nil, w)}
	s.rx = RXQueue{r: newConsumer[Desc](nil, w)}
	s.comp = CompletionQueue{r: newConsumer[uint64](nil, w)}
}
