package perf

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/weirlb/weir/appliance"
	"github.com/weirlb/weir/flows"
	"github.com/weirlb/weir/packet"
	"github.com/weirlb/weir/ring"
	"github.com/weirlb/weir/umem"
)

// RingsConfig configures the rings benchmark: the appliance's worker
// (appliance.Worker, the loop every queue runs) over the real ring and umem
// code, against a simulated kernel (ring.SimKernel) on another CPU that
// receives packets into the fill ring's frames and transmits whatever the TX
// ring holds, as fast as it can.
type RingsConfig struct {
	Mode     appliance.Mode
	Family   int // 4 or 6
	Size     int // frame size on the wire
	Flows    int // established flows, visited in a shuffled order
	Runs     int
	Duration time.Duration // one run
	// CPU is the forwarding core, KernelCPU the simulated kernel's; a
	// negative value leaves that side unpinned.
	CPU, KernelCPU int
	BatchSize      int    // descriptors per batch (appliance.DefaultBatchSize when 0)
	RingSize       uint32 // entries of each ring (appliance.DefaultRingSize when 0)
}

// DefaultRingsConfig is what `weir perf rings` runs without flags.
func DefaultRingsConfig() RingsConfig {
	return RingsConfig{
		Mode: appliance.ModeDSR, Family: 4, Size: 64, Flows: 10_000,
		Runs: 5, Duration: 200 * time.Millisecond, CPU: -1, KernelCPU: -1,
	}
}

func (c *RingsConfig) validate() error {
	if c.Mode > appliance.ModeGUE {
		return fmt.Errorf("rings: unknown mode %v", c.Mode)
	}
	if c.Family != 4 && c.Family != 6 {
		return fmt.Errorf("rings: family %d: want 4 or 6", c.Family)
	}
	if c.Size < MinSize || c.Size > MaxSize {
		return fmt.Errorf("rings: size %d: want %d..%d", c.Size, MinSize, MaxSize)
	}
	if c.Flows < 1 || c.Flows > maxPipelineFlows {
		return fmt.Errorf("rings: %d flows: want 1..%d", c.Flows, maxPipelineFlows)
	}
	if c.Runs < minRuns || c.Runs > maxRuns {
		return fmt.Errorf("rings: %d runs: want %d..%d", c.Runs, minRuns, maxRuns)
	}
	if c.Duration <= 0 {
		return fmt.Errorf("rings: run duration %v: want more than 0", c.Duration)
	}
	if c.BatchSize < 1 || c.BatchSize > appliance.MaxBatch {
		return fmt.Errorf("rings: batch size %d: want 1..%d", c.BatchSize, appliance.MaxBatch)
	}
	if c.CPU >= 0 && c.CPU == c.KernelCPU {
		return fmt.Errorf("rings: forwarding and simulated kernel both on cpu %d: give them a CPU each", c.CPU)
	}
	if err := checkCPU("rings forwarding", c.CPU); err != nil {
		return err
	}
	return checkCPU("rings kernel", c.KernelCPU)
}

// RingsResult is what the rings benchmark measured. Mpps is the median over
// the runs of the packets forwarded per second on the forwarding core.
type RingsResult struct {
	Mpps       float64 `json:"mpps"`
	MppsSpread Spread  `json:"mpps_spread"`
	NsPerPkt   float64 `json:"ns_per_pkt"`
	Mode       string  `json:"mode"`
	Family     int     `json:"family"`
	Size       int     `json:"size"`
	Flows      int     `json:"flows"`
	BatchSize  int     `json:"batch_size"`
	RingSize   uint32  `json:"ring_size"`
	Packets    uint64  `json:"packets"` // forwarded during the timed runs
	// What the simulated kernel saw over the whole benchmark, warm-up
	// included: packets it could not deliver because the RX ring was full
	// or the fill ring empty (the forwarder was the bottleneck), and the
	// forwarder's TX kicks (counted, not made, with in-memory rings).
	RXRingFull    uint64  `json:"rx_ring_full"`
	FillRingEmpty uint64  `json:"fill_ring_empty"`
	TXRingFull    uint64  `json:"tx_ring_full"`
	KicksPerPkt   float64 `json:"kicks_per_pkt"`
}

// RunRings runs the rings benchmark.
func RunRings(ctx context.Context, cfg RingsConfig) (RingsResult, error) {
	if cfg.BatchSize == 0 {
		cfg.BatchSize = appliance.DefaultBatchSize
	}
	if cfg.RingSize == 0 {
		cfg.RingSize = appliance.DefaultRingSize
	}
	if err := cfg.validate(); err != nil {
		return RingsResult{}, err
	}
	rb, err := newRingsBench(cfg)
	if err != nil {
		return RingsResult{}, err
	}
	defer rb.close()

	var stop atomic.Bool
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	wg.Add(2)
	go func() {
		defer wg.Done()
		errs <- runPinned(cfg.KernelCPU, func() error { rb.kernel(&stop); return nil })
	}()
	// The worker pins (and locks) its own goroutine's thread.
	wctx, stopWorker := context.WithCancel(context.Background())
	defer stopWorker()
	go func() {
		defer wg.Done()
		errs <- rb.worker.Run(wctx)
	}()
	halt := func() error {
		stopWorker()
		stop.Store(true)
		wg.Wait()
		close(errs)
		var all []error
		for err := range errs {
			all = append(all, err)
		}
		// The worker has given back every frame it held: the ledger
		// balances with nothing in hand.
		if err := rb.u.Check(); err != nil {
			all = append(all, fmt.Errorf("rings: %w", err))
		} else if acc := rb.u.Accounting(); acc.InHand != 0 {
			all = append(all, fmt.Errorf("rings: the worker stopped holding %d frames: %v", acc.InHand, acc))
		}
		return errors.Join(all...)
	}

	// Warm up: every flow established, caches and rings in their steady
	// state.
	warmUntil := time.Now().Add(warmUpLimit)
	for rb.transmitted.Load() < uint64(2*cfg.Flows) && time.Now().Before(warmUntil) {
		if !sleepCtx(ctx, 10*time.Millisecond) {
			break
		}
	}
	sleepCtx(ctx, max(cfg.Duration/4, 20*time.Millisecond))
	var mpps []float64
	var total uint64
	for range cfg.Runs {
		n0, t0 := rb.transmitted.Load(), time.Now()
		if !sleepCtx(ctx, cfg.Duration) {
			break
		}
		n1, t1 := rb.transmitted.Load(), time.Now()
		mpps = append(mpps, float64(n1-n0)/t1.Sub(t0).Seconds()/1e6)
		total += n1 - n0
	}
	if err := halt(); err != nil {
		return RingsResult{}, err
	}
	if err := ctx.Err(); err != nil {
		return RingsResult{}, err
	}
	st, _ := rb.sock.Stats()
	ws := rb.worker.Stats() // final: Run has returned
	c := &ws.Counters
	if c.Dropped() != 0 {
		return RingsResult{}, fmt.Errorf("rings: the forwarder dropped %d packets: the benchmark is broken", c.Dropped())
	}
	r := RingsResult{
		MppsSpread: SpreadOf(mpps),
		Mode:       cfg.Mode.String(), Family: cfg.Family, Size: cfg.Size, Flows: cfg.Flows,
		BatchSize: cfg.BatchSize, RingSize: cfg.RingSize, Packets: total,
		RXRingFull: st.RXRingFull, FillRingEmpty: st.RXFillRingEmptyDescs, TXRingFull: ws.TXRingFull,
	}
	r.Mpps = r.MppsSpread.Median
	if r.Mpps > 0 {
		r.NsPerPkt = 1e3 / r.Mpps
	}
	if c.TXPackets > 0 {
		r.KicksPerPkt = float64(st.Kicks) / float64(c.TXPackets)
	}
	return r, nil
}

// warmUpLimit bounds the rings benchmark's warm-up.
const warmUpLimit = 10 * time.Second

// sleepCtx sleeps for d and reports whether ctx is still live.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// ringsBench is the state of one rings benchmark: an in-memory socket, its
// simulated kernel, the appliance's worker over it and the packets the
// kernel receives.
type ringsBench struct {
	cfg    RingsConfig
	u      *umem.Umem
	fwd    *appliance.Forwarder
	sock   *ring.Socket
	sim    *ring.SimKernel
	snap   atomic.Pointer[appliance.Snapshot]
	worker *appliance.Worker

	// Kernel side; transmitted (what left through the TX ring: the
	// forwarder's throughput) is read by the measuring goroutine.
	pkts        [][]byte // one kernelBatch of packets to receive
	clientAt    int
	seq         []uint32
	pos         int
	transmitted atomic.Uint64
}

func newRingsBench(cfg RingsConfig) (_ *ringsBench, err error) {
	m := benchModel(cfg.Mode, cfg.Family, packet.ProtoTCP, 8, syntheticMAC)
	reg, err := appliance.NewRegistry(appliance.DefaultMaxReals)
	if err != nil {
		return nil, err
	}
	snap, err := appliance.BuildSnapshot(m, reg, 1)
	if err != nil {
		return nil, err
	}
	fc := flows.DefaultConfig()
	fc.Capacity = max(fc.Capacity, 3*cfg.Flows)
	fwd, err := appliance.NewForwarder(fc, reg.MaxReals())
	if err != nil {
		return nil, err
	}
	u, err := umem.New(umem.Config{
		FrameSize:  appliance.DefaultFrameSize,
		FrameCount: 4 * cfg.RingSize, // as the appliance sizes a queue's UMEM
		Headroom:   appliance.DefaultHeadroom,
	})
	if err != nil {
		fwd.Close()
		return nil, fmt.Errorf("rings: %w", err)
	}
	rb := &ringsBench{cfg: cfg, u: u, fwd: fwd}
	rb.snap.Store(snap)
	defer func() {
		if err != nil {
			rb.close()
		}
	}()
	rb.sock, rb.sim, err = ring.NewInMemory(ring.Config{
		Umem: u, FillSize: cfg.RingSize, CompletionSize: cfg.RingSize, RXSize: cfg.RingSize, TXSize: cfg.RingSize,
	})
	if err != nil {
		return nil, fmt.Errorf("rings: %w", err)
	}
	rb.worker, err = appliance.NewWorker(appliance.WorkerConfig{
		CPU: cfg.CPU, Socket: rb.sock, Forwarder: fwd, Snapshot: &rb.snap, Batch: cfg.BatchSize,
	})
	if err != nil {
		return nil, fmt.Errorf("rings: %w", err)
	}

	spec := FrameSpec{Size: cfg.Size, Proto: packet.ProtoTCP, SrcMAC: syntheticMAC(100), DstMAC: benchLocalMAC,
		Src: benchClient4, Dst: benchVIP4, SrcPort: 40000, DstPort: benchPort}
	if cfg.Family == 6 {
		spec.Src, spec.Dst = benchClient6, benchVIP6
	}
	frame, err := BuildFrame(spec)
	if err != nil {
		return nil, err
	}
	rb.clientAt = spec.srcOffset()
	if cfg.Family == 6 {
		rb.clientAt += 12
	}
	rb.pkts = make([][]byte, kernelBatch)
	for i := range rb.pkts {
		rb.pkts[i] = append([]byte(nil), frame...)
	}
	rb.seq = make([]uint32, cfg.Flows)
	for i := range rb.seq {
		rb.seq[i] = clientBase + uint32(i)
	}
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(rb.seq), func(i, j int) { rb.seq[i], rb.seq[j] = rb.seq[j], rb.seq[i] })
	return rb, nil
}

// kernelBatch is how many packets the simulated kernel receives at once: a
// NAPI poll's budget, the most a driver puts on an AF_XDP RX ring before it
// publishes them. It does not follow the worker's batch size, so that
// -batch measures the worker alone.
const kernelBatch = 64

// close releases everything; the worker must have returned.
func (rb *ringsBench) close() {
	if rb.sock != nil {
		rb.sock.Close()
	}
	rb.u.Close()
	rb.fwd.Close()
}

// kernel plays the NIC and the kernel until stop: it receives a batch of
// packets of the next flows (copying each into a frame from the fill ring,
// as copy mode does, or as a NIC's DMA would), then transmits what the TX
// ring holds and completes it. When it found nothing to do at all it pauses
// for a moment instead of rereading the rings' shared words at once, as a
// NIC polling its rings would: spinning on them would only steal their
// cache lines from the forwarding core.
func (rb *ringsBench) kernel(stop *atomic.Bool) {
	for !stop.Load() {
		for _, p := range rb.pkts {
			putClient(p[rb.clientAt:], rb.seq[rb.pos])
			if rb.pos++; rb.pos == len(rb.seq) {
				rb.pos = 0
			}
		}
		d := rb.sim.Deliver(rb.pkts)
		t := rb.sim.Transmit(int(rb.cfg.RingSize), nil)
		if t > 0 {
			rb.transmitted.Add(uint64(t))
		}
		if d == 0 && t == 0 {
			spin(50)
		}
	}
}

var spinSink uint64

// spin burns a few hundred nanoseconds without a system call.
//
//go:noinline
func spin(n int) {
	x := spinSink
	for i := range n {
		x += uint64(i)
	}
	spinSink = x
}
