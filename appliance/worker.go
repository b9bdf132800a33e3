package appliance

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weirlb/weir/flows"
	"github.com/weirlb/weir/ring"
)

// Worker tuning that is not worth a configuration knob.
const (
	// maxKicksPerBatch bounds the sendto calls one batch may spend draining
	// the TX ring (copy mode moves at most the socket's TX budget per call:
	// the whole ring on Linux 6.17+, 32 descriptors before).
	maxKicksPerBatch = 16
	// idleWait is how long an idle worker sleeps in poll before it checks for
	// a stop request and, if publishInterval has passed, publishes its
	// counters.
	idleWait = 50 * time.Millisecond
	// publishInterval is how often a worker publishes its counters, busy or
	// idle.
	publishInterval = 100 * time.Millisecond
	// sweepPerBatch and sweepIdle bound the flow-table buckets swept for
	// expired entries per batch and per idle sweep; idle sweeps run at most
	// every idleWorkInterval (a full 1M-entry table then takes ~4 s).
	sweepPerBatch    = 4
	sweepIdle        = 4096
	idleWorkInterval = 10 * time.Millisecond
)

// MaxIdleSpin bounds WorkerConfig.IdleSpin: a spin that long already costs
// more CPU than it can save in latency.
const MaxIdleSpin = time.Millisecond

// WorkerStats is one worker's published view: its forwarding counters, its
// flow table's, and what it saw of its rings.
type WorkerStats struct {
	Queue      int
	CPU        int // -1 when not pinned
	Counters   Counters
	Flows      flows.Stats
	Ring       ring.Stats
	TXRingFull uint64 // forwarded frames dropped because the TX ring had no room
	Batches    uint64
	Sleeps     uint64 // times the worker, idle for IdleSpin, slept in poll(2)
	// Reals holds per-real counters, indexed by real slot, for the slots in
	// use when they were published.
	Reals []RealCounters
}

// WorkerConfig describes one worker.
type WorkerConfig struct {
	// Queue is the NIC queue the socket is bound to; it names the worker in
	// errors and stats.
	Queue int
	// CPU is the CPU Run pins its thread to; a negative value leaves it
	// unpinned.
	CPU int
	// Socket is the queue's AF_XDP socket (ring.Open) or an in-memory one
	// (ring.NewInMemory). The worker owns it, its rings and its Umem while
	// Run runs; the caller closes it after Run returns.
	Socket *ring.Socket
	// Forwarder makes the per-packet decisions; the worker owns it while Run
	// runs.
	Forwarder *Forwarder
	// Snapshot is where the control plane publishes snapshots; the worker
	// loads it once per batch. It must hold a snapshot before Run starts.
	Snapshot *atomic.Pointer[Snapshot]
	// Batch is the largest number of descriptors taken off the RX ring at
	// once, 1..MaxBatch (DefaultBatchSize when 0).
	Batch int
	// IdleSpin is how long the worker keeps polling its rings after the RX
	// ring ran empty before it sleeps in poll(2); 0 sleeps at once. See
	// ApplianceConfig.IdleSpin.
	IdleSpin time.Duration
	// Epoch is the origin of the forwarder's monotonic clock (flow idle
	// times); the zero value means the time NewWorker was called.
	Epoch time.Time
}

// Worker runs one NIC queue: it owns the queue's socket, UMEM, forwarder and
// flow table, all touched by the goroutine in Run alone. Its loop recycles
// completed TX frames into the fill ring, tops the fill ring up, takes a
// batch off the RX ring, forwards it, puts the frames to send on the TX ring
// (the others go back to the UMEM's free stack) and kicks the kernel when
// the ring asks for it. Stats may be called from any goroutine.
//
// A Worker runs once: build a new one (with a new or the same socket) to run
// the queue again.
type Worker struct {
	queue int
	cpu   int
	sock  *ring.Socket
	fwd   *Forwarder
	snap  *atomic.Pointer[Snapshot]
	batch uint32
	spin  time.Duration
	epoch time.Time // monotonic origin of the forwarder's clock
	// clock tells the idle loop the time (its spin, sweeps and publishing);
	// time.Now, or a test's hand-driven clock.
	clock func() time.Time

	started    atomic.Bool
	pkts       []Packet    // the batch handed to ForwardBatch
	bases      []uint64    // UMEM address of each batch frame
	out        []ring.Desc // the batch's TX descriptors
	drops      []uint64    // frames to free after a batch
	txRingFull uint64
	batches    uint64
	sleeps     uint64
	touch      uint64 // keeps loadBatch's header loads from being optimised away

	mu        sync.Mutex // guards published
	published WorkerStats
}

// NewWorker checks cfg and returns a worker ready to Run.
func NewWorker(cfg WorkerConfig) (*Worker, error) {
	switch {
	case cfg.Socket == nil:
		return nil, fmt.Errorf("worker for queue %d: no socket", cfg.Queue)
	case cfg.Forwarder == nil:
		return nil, fmt.Errorf("worker for queue %d: no forwarder", cfg.Queue)
	case cfg.Snapshot == nil:
		return nil, fmt.Errorf("worker for queue %d: no snapshot pointer", cfg.Queue)
	case cfg.Batch < 0 || cfg.Batch > MaxBatch:
		return nil, fmt.Errorf("worker for queue %d: batch size %d: want 1..%d", cfg.Queue, cfg.Batch, MaxBatch)
	case cfg.IdleSpin < 0 || cfg.IdleSpin > MaxIdleSpin:
		return nil, fmt.Errorf("worker for queue %d: idle spin %v: want 0..%v", cfg.Queue, cfg.IdleSpin, MaxIdleSpin)
	}
	if cfg.Batch == 0 {
		cfg.Batch = DefaultBatchSize
	}
	if cfg.Epoch.IsZero() {
		cfg.Epoch = time.Now()
	}
	w := newWorker(cfg.Queue, cfg.CPU, cfg.Socket, cfg.Forwarder, cfg.Snapshot, cfg.Batch, cfg.Epoch)
	w.spin = cfg.IdleSpin
	return w, nil
}

// newWorker builds a worker from checked arguments.
func newWorker(queue, cpu int, sock *ring.Socket, fwd *Forwarder, snap *atomic.Pointer[Snapshot], batch int, epoch time.Time) *Worker {
	return &Worker{
		queue: queue,
		cpu:   cpu,
		sock:  sock,
		fwd:   fwd,
		snap:  snap,
		batch: uint32(batch),
		epoch: epoch,
		clock: time.Now,
		pkts:  make([]Packet, batch),
		bases: make([]uint64, batch),
		out:   make([]ring.Desc, batch),
		drops: make([]uint64, batch),
	}
}

// Queue is the queue the worker serves.
func (w *Worker) Queue() int { return w.queue }

// Run is the worker's loop. It locks the calling goroutine to its thread
// (and pins it, see WorkerConfig.CPU) for good, so call it on a goroutine of
// its own, which ends when Run returns. It returns when ctx is done, after
// giving every frame that was in hand back to the UMEM (the ledger then has
// nothing in hand); the caller then closes the socket, which reclaims the
// frames the kernel held. It returns early with an error only when the
// socket fails.
func (w *Worker) Run(ctx context.Context) error {
	if w.started.Swap(true) {
		return fmt.Errorf("queue %d: worker already ran", w.queue)
	}
	// The thread stays locked for the worker's life and is never unlocked:
	// its affinity must not leak to other goroutines.
	runtime.LockOSThread()
	if w.cpu >= 0 {
		var set unix.CPUSet
		set.Set(w.cpu)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			return fmt.Errorf("queue %d: pin to cpu %d: %w", w.queue, w.cpu, err)
		}
	}
	if w.snap.Load() == nil {
		return fmt.Errorf("queue %d: %w", w.queue, errNoSnapshot)
	}
	s := w.sock
	s.Refill()
	lastPublish, lastIdleWork := w.clock(), w.clock()
	var idleSince time.Time // when the RX ring ran empty; zero while busy
	for ctx.Err() == nil {
		n, now, err := w.poll()
		if err != nil {
			return err
		}
		if n == 0 {
			now := w.clock()
			// Poll on for a while before sleeping: being woken from
			// poll(2) costs more latency than the next packet usually
			// takes to arrive.
			if idleSince.IsZero() {
				idleSince = now
			}
			if now.Sub(idleSince) < w.spin {
				continue
			}
			idleSince = time.Time{}
			w.sleeps++ // counted first, so that a publish below includes this sleep
			// Housekeeping when idle, but not on every wake-up: at a low
			// packet rate every packet finds the worker idle, and a sweep
			// plus a publish each time would add ~100 µs to its latency.
			if now.Sub(lastIdleWork) >= idleWorkInterval {
				w.fwd.Flows().Sweep(int64(now.Sub(w.epoch)), sweepIdle)
				lastIdleWork = now
			}
			if now.Sub(lastPublish) >= publishInterval {
				w.publish()
				lastPublish = now
			}
			if _, err := s.Wait(idleWait); err != nil {
				return err
			}
			continue
		}
		idleSince = time.Time{}
		if now.Sub(lastPublish) >= publishInterval {
			w.publish()
			lastPublish = now
		}
	}
	// Drain what is already queued for transmission; whatever the kernel
	// still holds comes back when the socket closes.
	s.FlushTX(maxKicksPerBatch)
	s.RecycleCompletions()
	w.publish()
	return nil
}

// errNoSnapshot is returned by Run when nothing was published for it.
var errNoSnapshot = errors.New("worker started before a snapshot was published")

// poll runs one turn of the loop: recycle completions, refill, take a batch
// off the RX ring and, if there is one, forward and transmit it. It returns
// the batch size (0 when the RX ring was empty; pending TX descriptors were
// then flushed) and the time the batch was taken.
func (w *Worker) poll() (uint32, time.Time, error) {
	s := w.sock
	u := s.Umem()
	rx, tx := s.RX(), s.TX()
	// Completed TX frames go straight back to the fill ring, then any free
	// frames top it up.
	s.RecycleCompletions()
	s.Refill()
	if err := s.WakeupRX(); err != nil {
		return 0, time.Time{}, err
	}
	n, idx := rx.Peek(w.batch)
	if n == 0 {
		if tx.Outstanding() > 0 {
			if _, err := s.FlushTX(maxKicksPerBatch); err != nil {
				return 0, time.Time{}, err
			}
		}
		return 0, time.Time{}, nil
	}
	now := time.Now()
	w.fwd.Begin(w.snap.Load(), int64(now.Sub(w.epoch)))
	// Locals, not the worker's or the Umem's fields: the compiler keeps
	// them in registers across the stores into the batch.
	area, frameSize := u.Area(), uint64(u.FrameSize())
	pkts, bases := w.pkts[:n], w.bases[:n]
	// The batch's descriptors wrap around the end of the RX ring at most
	// once.
	d1, d2 := rx.Descs(idx, n)
	w.touch += loadBatch(pkts[:len(d1)], bases[:len(d1)], d1, area, frameSize)
	w.touch += loadBatch(pkts[len(d1):], bases[len(d1):], d2, area, frameSize)
	w.fwd.ForwardBatch(pkts)
	// Compact what is to be sent, in order, then copy as much of it as the
	// TX ring takes (in two runs where the ring wraps) with copy: no ring
	// arithmetic, call or append in the per-packet loop.
	out, drops := w.out[:n], w.drops[:n]
	var k, nd int
	for i := range pkts {
		pk := &pkts[i]
		if pk.Verdict == VerdictDrop {
			drops[nd] = bases[i]
			nd++
			continue
		}
		out[k] = ring.Desc{Addr: bases[i] + uint64(pk.OutStart), Len: uint32(pk.OutLen)}
		k++
	}
	got, tidx := tx.Reserve(uint32(k))
	t1, t2 := tx.Slots(tidx, got)
	c := copy(t1, out)
	copy(t2, out[c:])
	sent := got
	for _, d := range out[got:k] {
		drops[nd] = d.Addr &^ (frameSize - 1)
		nd++
	}
	w.txRingFull += uint64(uint32(k) - got)
	drops = drops[:nd]
	rx.Release(n)
	tx.Submit(sent)
	u.Free(drops)
	if sent > 0 && s.NeedWakeupTX() {
		if _, err := s.FlushTX(maxKicksPerBatch); err != nil {
			return 0, time.Time{}, err
		}
	}
	w.batches++
	w.fwd.Flows().Sweep(int64(now.Sub(w.epoch)), sweepPerBatch)
	return n, now, nil
}

// loadBatch points each packet at its frame in area and records the frame's
// base, for descriptors of frames of frameSize bytes. ForwardBatch sets the
// verdict and output bounds of every packet: only the input is written here.
//
// Not inlined: inside poll, the values poll keeps live across the loop were
// spilled and reloaded on every packet (the write barrier's slow path is a
// call); on its own the loop keeps everything in registers.
//
// It also reads the first byte of every packet and returns their sum: the
// frames were just written by the kernel (or a NIC) on another core, and
// these independent loads, in a loop that does little else, bring the
// batch's headers in with their misses overlapping, where the parser would
// otherwise wait for each frame in turn.
//
//go:noinline
func loadBatch(pkts []Packet, bases []uint64, descs []ring.Desc, area []byte, frameSize uint64) (touch uint64) {
	mask := frameSize - 1
	pkts, bases = pkts[:len(descs)], bases[:len(descs)]
	for i, d := range descs {
		base := d.Addr &^ mask
		bases[i] = base
		pk := &pkts[i]
		pk.Buf = area[base : base+frameSize : base+frameSize]
		pk.Start, pk.Len = int(d.Addr&mask), int(d.Len)
		touch += uint64(pk.Buf[pk.Start])
	}
	return touch
}

// publish copies the worker's counters where other goroutines can read them.
// It runs on the worker's goroutine, at most every publishInterval.
func (w *Worker) publish() {
	// The counters belong to the snapshot of the last batch, not to one
	// published since.
	reals := 0
	if s := w.fwd.Snapshot(); s != nil {
		reals = len(s.reals)
	}
	st, _ := w.sock.Stats()
	w.mu.Lock()
	p := &w.published
	p.Queue, p.CPU = w.queue, w.cpu
	p.Counters = w.fwd.c
	p.Flows = w.fwd.Flows().Stats()
	p.Ring = st
	p.TXRingFull = w.txRingFull
	p.Batches = w.batches
	p.Sleeps = w.sleeps
	p.Reals = append(p.Reals[:0], w.fwd.reals[:min(reals, len(w.fwd.reals))]...)
	w.mu.Unlock()
}

// StatsMaxAge bounds how old a running worker's published counters are: a
// worker publishes every publishInterval, and an idle one notices that the
// interval has passed once its idle spin (at most MaxIdleSpin) is over and
// within idleWait. A reader that wants every packet counted waits until two
// reads at least StatsMaxAge apart agree.
const StatsMaxAge = publishInterval + MaxIdleSpin + idleWait

// Stats returns a copy of the counters the worker last published: at most
// StatsMaxAge old while it runs, final once Run has returned. Any goroutine
// may call it.
func (w *Worker) Stats() WorkerStats {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.published
	out.Reals = append([]RealCounters(nil), w.published.Reals...)
	return out
}
