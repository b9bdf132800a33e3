package perf

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"time"

	"github.com/weirlb/weir/appliance"
	"github.com/weirlb/weir/firmware"
	"github.com/weirlb/weir/lab"
	"github.com/weirlb/weir/packet"
	"github.com/weirlb/weir/ring"
)

// E2EConfig configures the end-to-end benchmark.
type E2EConfig struct {
	Size   int // frame size on the wire
	Family int // 4 or 6
	Flows  int // distinct flows the generator cycles through
	// Runs is the number of interleaved weir/reference pairs at the
	// generator's full rate.
	Runs     int
	Duration time.Duration // traffic time of one run
	// SearchSteps is the number of bisection steps, per system, towards
	// the highest offered rate with a loss below LossTarget; 0 skips the
	// search (and the latency figures, which come from it).
	SearchSteps int
	LossTarget  float64
	// Loads are offered rates in Mpps for the throughput curve, each run
	// for weir and the reference, interleaved. AutoLoads picks them from
	// the full-rate runs.
	Loads     []float64
	AutoLoads bool
	// GenCPU runs the generator (and, with it, the appliance veth's
	// receive path); WorkerCPU runs weir's worker.
	GenCPU, WorkerCPU int
	// GenBatch is how many frames the kernel prepares and flushes per
	// batch of a live-frames test run (1..256).
	GenBatch uint32
	// BatchSize and RingSize are weir's worker batch and ring sizes (the
	// appliance defaults when 0).
	BatchSize int
	RingSize  uint32
	// IdleSpin is how long weir's idle worker polls before it sleeps
	// (appliance.ApplianceConfig.IdleSpin; 0 sleeps at once).
	IdleSpin time.Duration
	// Prefix names the lab's namespaces.
	Prefix string
	// Logger receives weir's own log; nil discards it.
	Logger *slog.Logger
}

// DefaultE2EConfig is what `weir perf e2e` runs without flags.
func DefaultE2EConfig() E2EConfig {
	return E2EConfig{
		Size: 64, Family: 4, Flows: 65536,
		Runs: 5, Duration: 500 * time.Millisecond,
		SearchSteps: 6, LossTarget: 0.001, AutoLoads: true,
		GenCPU: 0, WorkerCPU: 1, GenBatch: 64,
		IdleSpin: appliance.DefaultIdleSpin,
		Prefix:   "weir-perf",
	}
}

func (c *E2EConfig) validate() error {
	switch {
	case c.Size < MinSize || c.Size > MaxSize:
		return fmt.Errorf("e2e: size %d: want %d..%d", c.Size, MinSize, MaxSize)
	case c.Family != 4 && c.Family != 6:
		return fmt.Errorf("e2e: family %d: want 4 or 6", c.Family)
	case c.Flows < 1 || c.Flows > 1<<24:
		return fmt.Errorf("e2e: %d flows: want 1..%d", c.Flows, 1<<24)
	case c.Runs < 1 || c.Runs > maxRuns:
		return fmt.Errorf("e2e: %d runs: want 1..%d", c.Runs, maxRuns)
	case c.Duration < time.Millisecond || c.Duration > time.Minute:
		return fmt.Errorf("e2e: run duration %v: want 1ms..1m", c.Duration)
	case c.SearchSteps < 0 || c.SearchSteps > 20:
		return fmt.Errorf("e2e: %d search steps: want 0..20", c.SearchSteps)
	case !(c.LossTarget > 0 && c.LossTarget < 1):
		return fmt.Errorf("e2e: loss target %v: want a share between 0 and 1", c.LossTarget)
	case c.GenBatch < 1 || c.GenBatch > 256:
		return fmt.Errorf("e2e: generator batch %d: want 1..256", c.GenBatch)
	case c.GenCPU < 0 || c.WorkerCPU < 0:
		return errors.New("e2e: the generator and the worker must be pinned (cpu >= 0)")
	case c.GenCPU == c.WorkerCPU:
		return fmt.Errorf("e2e: generator and worker both on cpu %d: give them a CPU each", c.GenCPU)
	case c.BatchSize < 0 || c.BatchSize > appliance.MaxBatch:
		return fmt.Errorf("e2e: batch size %d: want 1..%d", c.BatchSize, appliance.MaxBatch)
	case c.IdleSpin < 0 || c.IdleSpin > appliance.MaxIdleSpin:
		return fmt.Errorf("e2e: idle spin %v: want 0..%v", c.IdleSpin, appliance.MaxIdleSpin)
	}
	for _, l := range c.Loads {
		if !(l > 0 && l < 1000) {
			return fmt.Errorf("e2e: offered load %v Mpps: want more than 0", l)
		}
	}
	if err := checkCPU("generator", c.GenCPU); err != nil {
		return err
	}
	return checkCPU("worker", c.WorkerCPU)
}

// Systems under test.
const (
	SystemWeir      = "weir"
	SystemReference = "reference"
)

// Phases of the end-to-end benchmark.
const (
	PhaseFull   = "full"   // the generator's full rate
	PhaseSearch = "search" // bisection towards the highest lossless rate
	PhaseSweep  = "sweep"  // fixed offered loads for the throughput curve
)

// E2ERun is one run of one system.
type E2ERun struct {
	System string `json:"system"`
	Phase  string `json:"phase"`
	// TargetMpps is the rate the generator was paced to; 0 means as fast
	// as it goes.
	TargetMpps    float64 `json:"target_mpps"`
	OfferedMpps   float64 `json:"offered_mpps"`
	ForwardedMpps float64 `json:"forwarded_mpps"`
	Loss          float64 `json:"loss"`
	Sent          uint64  `json:"sent"`
	Received      uint64  `json:"received"`
	Seconds       float64 `json:"seconds"`
	// Latency is from the generator's timestamp to the sink, both in the
	// kernel on the same clock.
	Latency   LatencyUS `json:"latency_us"`
	GenCPU    CPUUse    `json:"generator_cpu"`
	WorkerCPU CPUUse    `json:"worker_cpu"`
	// The generator's thread (its test runs, and the receive path of the
	// appliance's veth that runs in their softirq context) and weir's
	// worker thread.
	GenThread    ThreadUse  `json:"generator_thread"`
	WorkerThread *ThreadUse `json:"worker_thread,omitempty"`
	// WrongMAC counts frames that came back without the backend's MAC (a
	// forwarding bug if ever non-zero); they do not count as received.
	WrongMAC uint64        `json:"wrong_mac"`
	Weir     *WeirRunStats `json:"weir,omitempty"`

	hist Histogram
}

// WeirRunStats are weir's own counters for one run.
type WeirRunStats struct {
	XDPRedirected uint64 `json:"xdp_redirected"`
	RXPackets     uint64 `json:"rx_packets"`
	TXPackets     uint64 `json:"tx_packets"`
	Dropped       uint64 `json:"dropped"`
	// From the socket: packets the kernel dropped for want of a fill
	// frame or RX ring room, and the times it found the fill ring empty.
	RXDropped     uint64 `json:"rx_dropped"`
	RXRingFull    uint64 `json:"rx_ring_full"`
	FillRingEmpty uint64 `json:"fill_ring_empty"`
	// TXRingFull counts forwarded frames dropped because the TX ring had
	// no room.
	TXRingFull   uint64  `json:"tx_ring_full"`
	Kicks        uint64  `json:"kicks"`
	KicksPerPkt  float64 `json:"kicks_per_pkt"`
	Batches      uint64  `json:"batches"`
	PktsPerBatch float64 `json:"pkts_per_batch"`
	// Sleeps counts the times the worker, idle for its idle spin, slept
	// in poll(2).
	Sleeps uint64 `json:"sleeps"`
}

// E2ERings summarises weir's ring counters over its full-rate runs.
type E2ERings struct {
	FillRingEmpty uint64  `json:"fill_ring_empty"`
	TXRingFull    uint64  `json:"tx_ring_full"`
	RXRingFull    uint64  `json:"rx_ring_full"`
	RXDropped     uint64  `json:"rx_dropped"`
	KicksPerPkt   float64 `json:"kicks_per_pkt"`
	PktsPerBatch  float64 `json:"pkts_per_batch"`
}

// E2ECPU is the CPU use during weir's full-rate runs (medians): the two
// CPUs as /proc/stat sees them, and the worker's and generator's threads.
type E2ECPU struct {
	Worker          CPUUse    `json:"worker"`
	Generator       CPUUse    `json:"generator"`
	WorkerThread    ThreadUse `json:"worker_thread"`
	GeneratorThread ThreadUse `json:"generator_thread"`
}

// E2EResult is the end-to-end benchmark's outcome. The headline figures
// are medians over the full-rate runs; the latency figures come from the
// run at the highest lossless rate.
type E2EResult struct {
	WeirMpps                 float64 `json:"weir_mpps"`
	ReferenceMpps            float64 `json:"reference_mpps"`
	Ratio                    float64 `json:"ratio"`
	Loss                     float64 `json:"loss"` // weir's, at the generator's full rate
	MaxLosslessMpps          float64 `json:"max_lossless_mpps"`
	ReferenceMaxLosslessMpps float64 `json:"reference_max_lossless_mpps"`
	// The generator could not offer more than these lossless rates: the
	// forwarder's true figure is at least this much.
	MaxLosslessGeneratorBound          bool      `json:"max_lossless_generator_bound"`
	ReferenceMaxLosslessGeneratorBound bool      `json:"reference_max_lossless_generator_bound"`
	AFXDPMode                          string    `json:"afxdp_mode"`
	XDPMode                            string    `json:"xdp_mode"`
	Latency                            LatencyUS `json:"latency_us"`
	ReferenceLatency                   LatencyUS `json:"reference_latency_us"`
	OfferedMpps                        float64   `json:"offered_mpps"`
	ReferenceOfferedMpps               float64   `json:"reference_offered_mpps"`
	ReferenceLoss                      float64   `json:"reference_loss"`
	WeirSpread                         Spread    `json:"weir_mpps_spread"`
	ReferenceSpread                    Spread    `json:"reference_mpps_spread"`
	CPU                                E2ECPU    `json:"cpu"`
	Rings                              E2ERings  `json:"rings"`
	Size                               int       `json:"size"`
	FrameBytes                         int       `json:"frame_bytes"`
	Family                             int       `json:"family"`
	Flows                              int       `json:"flows"`
	LossTarget                         float64   `json:"loss_target"`
	Runs                               []E2ERun  `json:"runs"`
	// CDFs of the latency at the highest lossless rate, for plots.
	LatencyCDF          []CDFPoint `json:"latency_cdf,omitempty"`
	ReferenceLatencyCDF []CDFPoint `json:"reference_latency_cdf,omitempty"`
}

// e2eBench is the lab and the programs of one end-to-end benchmark.
type e2eBench struct {
	cfg   E2EConfig
	log   *slog.Logger
	pair  *lab.Pair
	gen   *generator
	sink  *sink
	ref   *reference
	genT  *genThread
	frame []byte
	gcfg  generatorGenConfig
	model appliance.Model
	opts  appliance.Options

	afxdpMode, xdpMode string
}

// RunE2E builds the benchmark lab, measures weir and the reference
// interleaved, removes the lab and returns the figures. progress, if not
// nil, is called after every run.
func RunE2E(ctx context.Context, cfg E2EConfig, progress func(E2ERun)) (res *E2EResult, err error) {
	if cfg.GenBatch == 0 {
		cfg.GenBatch = 64
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	b, err := newE2EBench(cfg)
	if err != nil {
		return nil, err
	}
	defer func() {
		if cerr := b.close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("e2e: clean up: %w", cerr))
		}
	}()
	res = &E2EResult{Size: cfg.Size, FrameBytes: len(b.frame), Family: cfg.Family, Flows: cfg.Flows, LossTarget: cfg.LossTarget}
	run := func(sys string, target float64, phase string) (E2ERun, error) {
		if err := ctx.Err(); err != nil {
			return E2ERun{}, err
		}
		r, err := b.run(sys, target, phase)
		if err != nil {
			return r, fmt.Errorf("e2e: %s run at %s: %w", sys, rateName(target), err)
		}
		res.Runs = append(res.Runs, r)
		if progress != nil {
			progress(r)
		}
		return r, nil
	}

	// Warm-up, not recorded: the first start of anything pays for page
	// faults and the JIT's first use.
	for _, sys := range []string{SystemWeir, SystemReference} {
		if _, err := b.run(sys, 0, PhaseFull); err != nil {
			return nil, fmt.Errorf("e2e: warm-up %s: %w", sys, err)
		}
	}

	// Full rate, interleaved.
	var full [2][]E2ERun
	for range cfg.Runs {
		for i, sys := range []string{SystemWeir, SystemReference} {
			r, err := run(sys, 0, PhaseFull)
			if err != nil {
				return res, err
			}
			full[i] = append(full[i], r)
		}
	}
	summariseFull(res, full[0], full[1])
	res.AFXDPMode, res.XDPMode = b.afxdpMode, b.xdpMode

	// The highest lossless rate of each, interleaved step by step.
	if cfg.SearchSteps > 0 {
		searches := [2]*search{newSearch(res.WeirMpps), newSearch(res.ReferenceMpps)}
		for range cfg.SearchSteps {
			for i, sys := range []string{SystemWeir, SystemReference} {
				r, err := run(sys, searches[i].next(), PhaseSearch)
				if err != nil {
					return res, err
				}
				searches[i].record(r, cfg.LossTarget)
			}
		}
		// If every step lost packets, try once more far below.
		for i, sys := range []string{SystemWeir, SystemReference} {
			if searches[i].best == nil {
				r, err := run(sys, searches[i].hi/10, PhaseSearch)
				if err != nil {
					return res, err
				}
				searches[i].record(r, cfg.LossTarget)
			}
		}
		if w := searches[0].best; w != nil {
			res.MaxLosslessMpps, res.Latency, res.LatencyCDF = w.OfferedMpps, w.Latency, w.hist.CDF()
			res.MaxLosslessGeneratorBound = generatorBound(w)
		}
		if r := searches[1].best; r != nil {
			res.ReferenceMaxLosslessMpps, res.ReferenceLatency, res.ReferenceLatencyCDF = r.OfferedMpps, r.Latency, r.hist.CDF()
			res.ReferenceMaxLosslessGeneratorBound = generatorBound(r)
		}
	}

	// The throughput curve.
	loads := cfg.Loads
	if cfg.AutoLoads && len(loads) == 0 {
		loads = autoLoads(res.ReferenceOfferedMpps)
	}
	for _, l := range loads {
		for _, sys := range []string{SystemWeir, SystemReference} {
			if _, err := run(sys, l, PhaseSweep); err != nil {
				return res, err
			}
		}
	}
	return res, nil
}

// summariseFull fills the headline figures from the full-rate runs.
func summariseFull(res *E2EResult, weir, ref []E2ERun) {
	pick := func(rs []E2ERun, f func(*E2ERun) float64) []float64 {
		out := make([]float64, len(rs))
		for i := range rs {
			out[i] = f(&rs[i])
		}
		return out
	}
	fwd := func(r *E2ERun) float64 { return r.ForwardedMpps }
	res.WeirSpread = SpreadOf(pick(weir, fwd))
	res.ReferenceSpread = SpreadOf(pick(ref, fwd))
	res.WeirMpps, res.ReferenceMpps = res.WeirSpread.Median, res.ReferenceSpread.Median
	if res.ReferenceMpps > 0 {
		res.Ratio = res.WeirMpps / res.ReferenceMpps
	}
	res.Loss = SpreadOf(pick(weir, func(r *E2ERun) float64 { return r.Loss })).Median
	res.ReferenceLoss = SpreadOf(pick(ref, func(r *E2ERun) float64 { return r.Loss })).Median
	res.OfferedMpps = SpreadOf(pick(weir, func(r *E2ERun) float64 { return r.OfferedMpps })).Median
	res.ReferenceOfferedMpps = SpreadOf(pick(ref, func(r *E2ERun) float64 { return r.OfferedMpps })).Median

	med := func(f func(*E2ERun) float64) float64 { return SpreadOf(pick(weir, f)).Median }
	cpu := func(get func(*E2ERun) *CPUUse) CPUUse {
		u := CPUUse{CPU: get(&weir[0]).CPU}
		u.User = med(func(r *E2ERun) float64 { return get(r).User })
		u.System = med(func(r *E2ERun) float64 { return get(r).System })
		u.SoftIRQ = med(func(r *E2ERun) float64 { return get(r).SoftIRQ })
		u.IRQ = med(func(r *E2ERun) float64 { return get(r).IRQ })
		u.Idle = med(func(r *E2ERun) float64 { return get(r).Idle })
		u.Steal = med(func(r *E2ERun) float64 { return get(r).Steal })
		return u
	}
	thread := func(get func(*E2ERun) *ThreadUse) ThreadUse {
		var u ThreadUse
		var rs []E2ERun
		for i := range weir {
			if t := get(&weir[i]); t != nil {
				rs = append(rs, weir[i])
				u.Threads = max(u.Threads, t.Threads)
			}
		}
		m := func(f func(*ThreadUse) float64) float64 {
			return SpreadOf(pick(rs, func(r *E2ERun) float64 { return f(get(r)) })).Median
		}
		u.Running = m(func(t *ThreadUse) float64 { return t.Running })
		u.User = m(func(t *ThreadUse) float64 { return t.User })
		u.System = m(func(t *ThreadUse) float64 { return t.System })
		u.Waiting = m(func(t *ThreadUse) float64 { return t.Waiting })
		return u
	}
	if len(weir) > 0 {
		res.CPU.Worker = cpu(func(r *E2ERun) *CPUUse { return &r.WorkerCPU })
		res.CPU.Generator = cpu(func(r *E2ERun) *CPUUse { return &r.GenCPU })
		res.CPU.WorkerThread = thread(func(r *E2ERun) *ThreadUse { return r.WorkerThread })
		res.CPU.GeneratorThread = thread(func(r *E2ERun) *ThreadUse { return &r.GenThread })
	}
	var kicks, tx, batches uint64
	for _, r := range weir {
		if w := r.Weir; w != nil {
			res.Rings.FillRingEmpty += w.FillRingEmpty
			res.Rings.TXRingFull += w.TXRingFull
			res.Rings.RXRingFull += w.RXRingFull
			res.Rings.RXDropped += w.RXDropped
			kicks += w.Kicks
			tx += w.TXPackets
			batches += w.Batches
		}
	}
	if tx > 0 {
		res.Rings.KicksPerPkt = float64(kicks) / float64(tx)
	}
	if batches > 0 {
		res.Rings.PktsPerBatch = float64(tx) / float64(batches)
	}
}

// search bisects towards the highest offered rate whose loss stays below
// the target. The first probe is just below the full-rate throughput, where
// the answer usually is; until a probe fails, a passing one doubles the
// ceiling (a forwarder may carry more below saturation than at full
// load, where it also pays for what it drops).
//
// A probe the generator could not offer in full (it shares its CPU with the
// receive path) caps the ceiling at that target instead: the answer is then
// "at least what the generator offers" (see generatorBound).
type search struct {
	lo, hi float64 // lo passed (0: nothing yet); hi failed, or is a guess while !capped
	capped bool    // hi failed, or the generator could not reach it
	steps  int
	best   *E2ERun
}

// generatorBound reports whether r offered clearly less than its target:
// the generator, not the forwarder, was the limit.
// Pacing alone falls a few percent short of its target, so only a larger
// shortfall counts.
func generatorBound(r *E2ERun) bool { return r.TargetMpps > 0 && r.OfferedMpps < 0.9*r.TargetMpps }

func newSearch(fullMpps float64) *search {
	return &search{hi: max(fullMpps, 0.001) * 1.05}
}

func (s *search) next() float64 {
	if s.steps == 0 {
		return s.hi * 0.9
	}
	return (s.lo + s.hi) / 2
}

func (s *search) record(r E2ERun, target float64) {
	s.steps++
	if r.Loss >= target {
		s.hi, s.capped = r.TargetMpps, true
		return
	}
	s.lo = max(s.lo, r.TargetMpps)
	switch {
	case generatorBound(&r):
		s.hi, s.capped = r.TargetMpps, true
	case !s.capped:
		s.hi = max(s.hi, 2*r.TargetMpps)
	}
	if s.best == nil || r.OfferedMpps > s.best.OfferedMpps {
		best := r
		s.best = &best
	}
}

// autoLoads spreads offered loads over the range up to ceiling Mpps, in
// steps of a factor of two from 1/32 of it.
func autoLoads(ceiling float64) []float64 {
	if ceiling <= 0 {
		return nil
	}
	var out []float64
	for l := ceiling / 32; l < ceiling*0.95; l *= 2 {
		out = append(out, math.Round(l*1000)/1000)
	}
	return slices.Compact(out)
}

func rateName(target float64) string {
	if target == 0 {
		return "full rate"
	}
	return fmt.Sprintf("%.3f Mpps", target)
}

// Generator frame parameters.
const (
	genPortBase = 1024
	genMaxPorts = 60000
)

func newE2EBench(cfg E2EConfig) (_ *e2eBench, err error) {
	b := &e2eBench{cfg: cfg, log: cfg.Logger}
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, b.close())
		}
	}()
	if b.pair, err = lab.NewPair(lab.PairConfig{Prefix: cfg.Prefix, Queues: 1}); err != nil {
		return nil, fmt.Errorf("e2e: %w", err)
	}
	genMAC, appMAC := packet.MAC(lab.PairGeneratorMAC), packet.MAC(lab.PairApplianceMAC)

	// The template frame: the fields the generator varies are zero, and
	// the checksums cover it as it is.
	spec := FrameSpec{Size: cfg.Size, Proto: packet.ProtoUDP, SrcMAC: genMAC, DstMAC: appMAC,
		Src: benchClient4, Dst: benchVIP4, DstPort: benchPort}
	if cfg.Family == 6 {
		spec.Src, spec.Dst = benchClient6, benchVIP6
	}
	if spec.frameLen() < spec.payloadOffset()+payloadLen {
		// The payload must fit: grow the frame rather than the caller's
		// idea of the size (only IPv6 at 64 bytes needs this).
		spec.Size = spec.payloadOffset() + payloadLen + fcsLen
	}
	if b.frame, err = BuildFrame(spec); err != nil {
		return nil, fmt.Errorf("e2e: %w", err)
	}
	ports := min(cfg.Flows, genMaxPorts)
	b.gcfg = generatorGenConfig{
		Flows: uint32(cfg.Flows), Ports: uint32(ports), PortBase: genPortBase, Family: uint8(cfg.Family),
	}
	copy(b.gcfg.Eth[:], b.frame[:ethLen])
	if cfg.Family == 4 {
		copy(b.gcfg.IpCsum[:], b.frame[ethLen+10:ethLen+12])
	} else {
		copy(b.gcfg.UdpCsum[:], b.frame[spec.portOffset()+6:spec.portOffset()+8])
	}

	if b.gen, err = newGenerator(); err != nil {
		return nil, fmt.Errorf("e2e: %w", err)
	}
	if b.sink, err = newSink(genMAC); err != nil {
		return nil, fmt.Errorf("e2e: %w", err)
	}
	if b.ref, err = newReference(genMAC, appMAC); err != nil {
		return nil, fmt.Errorf("e2e: %w", err)
	}
	if err := b.pair.Generator.NS.Do(func() error { return b.sink.attach(b.pair.Generator.NIC.Index) }); err != nil {
		return nil, fmt.Errorf("e2e: %w", err)
	}
	if b.genT, err = startGenThread(b.pair.Generator.NS, cfg.GenCPU, b.gen, b.frame, b.pair.Generator.NIC.Index, cfg.GenBatch); err != nil {
		return nil, fmt.Errorf("e2e: %w", err)
	}

	// weir: one UDP VIP in DSR mode whose backends all carry the
	// generator's MAC, so every forwarded frame comes back to the sink.
	b.model = benchModel(appliance.ModeDSR, cfg.Family, packet.ProtoUDP, 8, func(int) packet.MAC { return genMAC })
	b.model.LocalMAC = packet.MAC{} // the interface's own
	b.opts = appliance.Options{
		Interface: b.pair.Appliance.NIC.Name,
		Queues:    1,
		CPUs:      []int{cfg.WorkerCPU},
		XDPMode:   firmware.AttachAuto,
		ZeroCopy:  ring.ZeroCopyAuto,
		RingSize:  cfg.RingSize,
		BatchSize: cfg.BatchSize,
		IdleSpin:  cfg.IdleSpin,
		Logger:    b.log,
	}
	return b, nil
}

func (b *e2eBench) close() error {
	var errs []error
	if b.genT != nil {
		b.genT.stop()
	}
	if b.ref != nil {
		errs = append(errs, b.ref.close())
	}
	if b.sink != nil {
		errs = append(errs, b.sink.close())
	}
	if b.gen != nil {
		errs = append(errs, b.gen.close())
	}
	if b.pair != nil {
		errs = append(errs, b.pair.Close())
	}
	return errors.Join(errs...)
}

// Drain: after the generator stops, frames still in rings reach the sink
// within microseconds to milliseconds. The sink is read once its count has
// stood still for drainQuiet, or after drainMax.
const (
	drainPoll  = 2 * time.Millisecond
	drainQuiet = 10 * time.Millisecond
	drainMax   = 500 * time.Millisecond
)

// run measures one system at one offered rate (0: the generator's full
// rate).
func (b *e2eBench) run(sys string, target float64, phase string) (r E2ERun, err error) {
	r = E2ERun{System: sys, Phase: phase, TargetMpps: target}
	var app *appliance.Appliance
	nic := b.pair.Appliance.NIC
	switch sys {
	case SystemWeir:
		err = b.pair.Appliance.NS.Do(func() error {
			var err error
			app, err = appliance.Start(b.opts, b.model)
			return err
		})
		if err != nil {
			return r, fmt.Errorf("start weir: %w", err)
		}
		defer func() {
			if app != nil {
				app.Stop()
			}
		}()
		b.afxdpMode, b.xdpMode = app.AFXDPMode().String(), app.XDPMode().String()
	case SystemReference:
		if err := b.pair.Appliance.NS.Do(func() error { return b.ref.attach(nic.Index) }); err != nil {
			return r, err
		}
		defer func() { err = errors.Join(err, b.ref.detach()) }()
	default:
		return r, fmt.Errorf("unknown system %q", sys)
	}

	gcfg := b.gcfg
	if target > 0 {
		gcfg.IntervalNs = uint64(math.Max(1, math.Round(1e3/target)))
		// Let the sender catch up by at most 64 frames after a stall (the
		// receive path shares its CPU), a burst weir's rings absorb.
		gcfg.BurstNs = 64 * gcfg.IntervalNs
	}
	if err := b.sink.reset(); err != nil {
		return r, err
	}
	tids := []int{b.genT.tid}
	var workers []int
	if app != nil {
		if workers, err = waitPinnedThreads(b.cfg.WorkerCPU, time.Second); err != nil {
			return r, fmt.Errorf("find weir's worker thread: %w", err)
		}
		tids = append(tids, workers...)
	}
	cpu0, err := readProcStat()
	if err != nil {
		return r, err
	}
	th0, err := sampleThreads(tids)
	if err != nil {
		return r, err
	}
	t0 := time.Now()
	gr := b.genT.generate(gcfg, b.cfg.Duration)
	if gr.err != nil {
		return r, gr.err
	}
	th1, err := sampleThreads(tids)
	if err != nil {
		return r, err
	}
	took := time.Since(t0)
	cpu1, err := readProcStat()
	if err != nil {
		return r, err
	}
	r.GenThread = threadUse(pickThreads(th0, b.genT.tid), pickThreads(th1, b.genT.tid), took)
	if app != nil {
		wu := threadUse(pickThreads(th0, workers...), pickThreads(th1, workers...), took)
		r.WorkerThread = &wu
	}
	if err := b.drain(); err != nil {
		return r, err
	}
	got, err := b.sink.read()
	if err != nil {
		return r, err
	}
	sent := gr.counters.Sent
	if sent == 0 {
		return r, errors.New("the generator sent nothing")
	}
	// Rates are over the generator's own sending window, which leaves
	// out the test runs' set-up and tear-down.
	secs := gr.counters.window().Seconds()
	if secs == 0 {
		secs = gr.end.Sub(gr.start).Seconds()
	}
	r.Seconds = secs
	r.Sent, r.Received, r.WrongMAC = sent, got.Received, got.WrongMAC
	r.OfferedMpps = float64(sent) / secs / 1e6
	r.ForwardedMpps = float64(got.Received) / secs / 1e6
	if sent > 0 {
		r.Loss = min(max(1-float64(got.Received)/float64(sent), 0), 1)
	}
	r.hist = got.Latency
	r.Latency = got.Latency.Latency()
	r.GenCPU = cpuUse(b.cfg.GenCPU, cpu0, cpu1)
	r.WorkerCPU = cpuUse(b.cfg.WorkerCPU, cpu0, cpu1)

	if app != nil {
		st, err := app.Stop()
		app = nil
		if err != nil {
			return r, fmt.Errorf("stop weir: %w", err)
		}
		w := &WeirRunStats{
			XDPRedirected: st.XDP.Redirected,
			RXPackets:     st.Total.RXPackets,
			TXPackets:     st.Total.TXPackets,
			Dropped:       st.Total.Dropped(),
		}
		for _, ws := range st.Workers {
			w.RXDropped += ws.Ring.RXDropped
			w.RXRingFull += ws.Ring.RXRingFull
			w.FillRingEmpty += ws.Ring.RXFillRingEmptyDescs
			w.TXRingFull += ws.TXRingFull
			w.Kicks += ws.Ring.Kicks
			w.Batches += ws.Batches
			w.Sleeps += ws.Sleeps
		}
		if w.TXPackets > 0 {
			w.KicksPerPkt = float64(w.Kicks) / float64(w.TXPackets)
		}
		if w.Batches > 0 {
			w.PktsPerBatch = float64(w.RXPackets) / float64(w.Batches)
		}
		r.Weir = w
	}
	return r, nil
}

// pickThreads returns the readings of tids in s.
func pickThreads(s threadSample, tids ...int) threadSample {
	out := make(threadSample, len(tids))
	for _, t := range tids {
		if v, ok := s[t]; ok {
			out[t] = v
		}
	}
	return out
}

// drain waits until the sink's count stands still.
func (b *e2eBench) drain() error {
	deadline := time.Now().Add(drainMax)
	var last uint64
	quietSince := time.Now()
	for time.Now().Before(deadline) {
		got, err := b.sink.read()
		if err != nil {
			return err
		}
		if got.Received != last {
			last, quietSince = got.Received, time.Now()
		} else if time.Since(quietSince) >= drainQuiet {
			return nil
		}
		time.Sleep(drainPoll)
	}
	return nil
}
