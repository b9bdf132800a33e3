package perf

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"time"

	"github.com/weirlb/weir/appliance"
	"github.com/weirlb/weir/flows"
	"github.com/weirlb/weir/packet"
)

// PipelineConfig selects the cases of the pipeline benchmark: every
// combination of mode, family, size, flow count and new-flow share.
type PipelineConfig struct {
	Modes    []appliance.Mode
	Families []int // 4, 6
	Sizes    []int // frame sizes on the wire (see FrameSpec)
	Flows    []int // established (concurrent) flows, at least 1
	// NewShares are the shares of packets (0..1) that open a new flow
	// instead of belonging to an established one.
	NewShares []float64
	Runs      int           // timed runs per case, interleaved over the cases (the spread is over them)
	Duration  time.Duration // length of one run
	// CPU is the CPU the benchmark runs on; negative leaves it unpinned.
	CPU int
	// BatchSize is the number of frames per ForwardBatch call
	// (appliance.DefaultBatchSize when 0).
	BatchSize int
	// Backends is the number of backends behind the VIP (8 when 0).
	Backends int
}

// DefaultPipelineConfig is what `weir perf pipeline` runs without flags.
func DefaultPipelineConfig() PipelineConfig {
	return PipelineConfig{
		Modes:     []appliance.Mode{appliance.ModeDSR, appliance.ModeIPIP, appliance.ModeGUE},
		Families:  []int{4, 6},
		Sizes:     []int{64, 1500},
		Flows:     []int{1, 10_000, 1_000_000},
		NewShares: []float64{0},
		Runs:      5,
		Duration:  200 * time.Millisecond,
		CPU:       -1,
	}
}

// Limits of PipelineConfig.
const (
	maxPipelineFlows = 1 << 24
	minRuns          = 1
	maxRuns          = 1000
)

func (c *PipelineConfig) validate() error {
	if len(c.Modes) == 0 || len(c.Families) == 0 || len(c.Sizes) == 0 || len(c.Flows) == 0 || len(c.NewShares) == 0 {
		return errors.New("pipeline: every list (modes, families, sizes, flows, new shares) needs at least one value")
	}
	for _, m := range c.Modes {
		if m > appliance.ModeGUE {
			return fmt.Errorf("pipeline: unknown mode %v", m)
		}
	}
	for _, f := range c.Families {
		if f != 4 && f != 6 {
			return fmt.Errorf("pipeline: family %d: want 4 or 6", f)
		}
	}
	for _, s := range c.Sizes {
		if s < MinSize || s > MaxSize {
			return fmt.Errorf("pipeline: size %d: want %d..%d", s, MinSize, MaxSize)
		}
	}
	for _, n := range c.Flows {
		if n < 1 || n > maxPipelineFlows {
			return fmt.Errorf("pipeline: %d flows: want 1..%d", n, maxPipelineFlows)
		}
	}
	for _, s := range c.NewShares {
		if !(s >= 0 && s <= 1) {
			return fmt.Errorf("pipeline: new-flow share %v: want 0..1", s)
		}
	}
	if c.Runs < minRuns || c.Runs > maxRuns {
		return fmt.Errorf("pipeline: %d runs: want %d..%d", c.Runs, minRuns, maxRuns)
	}
	if c.Duration <= 0 {
		return fmt.Errorf("pipeline: run duration %v: want more than 0", c.Duration)
	}
	if c.BatchSize < 0 || c.BatchSize > appliance.MaxBatch {
		return fmt.Errorf("pipeline: batch size %d: want 1..%d", c.BatchSize, appliance.MaxBatch)
	}
	if c.Backends < 0 || c.Backends > 1000 {
		return fmt.Errorf("pipeline: %d backends: want 1..1000", c.Backends)
	}
	return checkCPU("pipeline", c.CPU)
}

// PipelineResult is one case of the pipeline benchmark. NsPerPkt and Mpps
// are medians over the runs; the spreads hold the minimum and maximum too.
type PipelineResult struct {
	Mode       string  `json:"mode"`
	Family     int     `json:"family"`
	Size       int     `json:"size"`
	Flows      int     `json:"flows"`
	Case       string  `json:"case"`
	NewShare   float64 `json:"new_share"`
	FrameBytes int     `json:"frame_bytes"` // the frame in memory (no FCS)
	NsPerPkt   float64 `json:"ns_per_pkt"`
	Mpps       float64 `json:"mpps"`
	NsSpread   Spread  `json:"ns_per_pkt_spread"`
	MppsSpread Spread  `json:"mpps_spread"`
	Packets    uint64  `json:"packets"` // forwarded in all runs
	// FlowHitRatio is the share of packets found in the flow table.
	FlowHitRatio float64 `json:"flow_hit_ratio"`
}

// caseName names a new-flow share: "established" when every packet
// belongs to an established flow, "new" when every packet opens one, and
// "new-P%" in between.
func caseName(share float64) string {
	switch share {
	case 0:
		return "established"
	case 1:
		return "new"
	}
	return fmt.Sprintf("new-%g%%", math.Round(share*10000)/100)
}

// pipelineCaseSpec names one case of the pipeline benchmark.
type pipelineCaseSpec struct {
	mode                 appliance.Mode
	family, size, nflows int
	share                float64
}

func (c pipelineCaseSpec) String() string {
	return fmt.Sprintf("%s ipv%d %dB %d flows %s", c.mode, c.family, c.size, c.nflows, caseName(c.share))
}

// RunPipeline runs every case of cfg on one goroutine pinned to cfg.CPU and
// returns one result per case, in the order of the configuration's lists.
// The runs are interleaved: round after round, every case is set up afresh,
// warmed up and timed once, so that a burst of noise from the rest of the
// machine lands on one run of many cases rather than on every run of one.
// progress, if not nil, is called after every timed run with that case's
// figures so far. RunPipeline stops early, returning what it has, when ctx
// is done.
func RunPipeline(ctx context.Context, cfg PipelineConfig, progress func(PipelineResult)) ([]PipelineResult, error) {
	if cfg.BatchSize == 0 {
		cfg.BatchSize = appliance.DefaultBatchSize
	}
	if cfg.Backends == 0 {
		cfg.Backends = 8
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	var specs []pipelineCaseSpec
	for _, mode := range cfg.Modes {
		for _, fam := range cfg.Families {
			for _, size := range cfg.Sizes {
				for _, nflows := range cfg.Flows {
					for _, share := range cfg.NewShares {
						specs = append(specs, pipelineCaseSpec{mode, fam, size, nflows, share})
					}
				}
			}
		}
	}
	accs := make([]pipelineAcc, len(specs))
	err := runPinned(cfg.CPU, func() error {
		for range cfg.Runs {
			for i, spec := range specs {
				if err := ctx.Err(); err != nil {
					return err
				}
				run, err := runPipelineOnce(cfg, spec)
				if err != nil {
					return fmt.Errorf("pipeline %s: %w", spec, err)
				}
				accs[i].add(run)
				if progress != nil {
					progress(accs[i].result(spec))
				}
			}
		}
		return nil
	})
	var out []PipelineResult
	for i, spec := range specs {
		if len(accs[i].ns) > 0 {
			out = append(out, accs[i].result(spec))
		}
	}
	return out, err
}

// pipelineRun is one timed run of one case.
type pipelineRun struct {
	packets    uint64
	took       time.Duration
	hits       uint64 // flow-table hits among the packets
	frameBytes int
}

// pipelineAcc gathers a case's runs.
type pipelineAcc struct {
	ns, mpps      []float64
	packets, hits uint64
	frameBytes    int
}

func (a *pipelineAcc) add(r pipelineRun) {
	ns := float64(r.took.Nanoseconds()) / float64(r.packets)
	a.ns = append(a.ns, ns)
	a.mpps = append(a.mpps, 1e3/ns)
	a.packets += r.packets
	a.hits += r.hits
	a.frameBytes = r.frameBytes
}

func (a *pipelineAcc) result(c pipelineCaseSpec) PipelineResult {
	r := PipelineResult{
		Mode: c.mode.String(), Family: c.family, Size: c.size, Flows: c.nflows,
		Case: caseName(c.share), NewShare: c.share, FrameBytes: a.frameBytes,
		NsSpread: SpreadOf(a.ns), MppsSpread: SpreadOf(a.mpps), Packets: a.packets,
	}
	r.NsPerPkt, r.Mpps = r.NsSpread.Median, r.MppsSpread.Median
	if a.packets > 0 {
		r.FlowHitRatio = float64(a.hits) / float64(a.packets)
	}
	return r
}

// Addresses of the synthetic traffic, from the benchmarking ranges of RFC
// 2544 (198.18.0.0/15) and RFC 5180 (2001:2::/48).
var (
	benchVIP4     = netip.MustParseAddr("198.19.0.1")
	benchVIP6     = netip.MustParseAddr("2001:2::1")
	benchClient4  = netip.MustParseAddr("198.18.0.0")
	benchClient6  = netip.MustParseAddr("2001:2:0:c::")
	benchLocal4   = netip.MustParseAddr("198.19.255.1")
	benchLocal6   = netip.MustParseAddr("2001:2:0:ff::1")
	benchLocalMAC = packet.MAC{0x02, 0x00, 0x5e, 0x00, 0x00, 0x01}
	benchPort     = uint16(80)
)

// backendAddr returns the i-th backend's address of a family (i from 0).
func backendAddr(family, i int) netip.Addr {
	if family == 4 {
		return netip.AddrFrom4([4]byte{198, 19, 1, byte(1 + i)})
	}
	a := [16]byte{0x20, 0x01, 0, 2, 0, 0, 0, 1}
	binary.BigEndian.PutUint16(a[14:], uint16(1+i))
	return netip.AddrFrom16(a)
}

// benchModel is one VIP of the mode and family with n backends, all
// resolved. The MTU of 9000 lets encapsulated full-size packets through (a
// fabric with jumbo frames), so every case measures forwarding, not drops.
func benchModel(mode appliance.Mode, family int, proto uint8, n int, backendMAC func(i int) packet.MAC) appliance.Model {
	vip := appliance.VIP{
		VIPKey:  appliance.VIPKey{Addr: benchVIP4, Proto: proto, Port: benchPort},
		Name:    "bench",
		Mode:    mode,
		MTU:     9000,
		GUEPort: appliance.DefaultGUEPort,
	}
	if family == 6 {
		vip.Addr = benchVIP6
	}
	for i := range n {
		vip.Backends = append(vip.Backends, appliance.Backend{
			Addr:   backendAddr(family, i),
			Weight: 1,
			MAC:    backendMAC(i),
		})
	}
	return appliance.Model{
		LocalMAC:   benchLocalMAC,
		LocalAddr4: benchLocal4,
		LocalAddr6: benchLocal6,
		VIPs:       []appliance.VIP{vip},
	}
}

func syntheticMAC(i int) packet.MAC { return packet.MAC{0x02, 0x00, 0x5e, 0x00, 0x01, byte(1 + i)} }

// putClient writes client number c into the low 32 bits of a client
// address at b.
func putClient(b []byte, c uint32) { binary.BigEndian.PutUint32(b, c) }

// pipelineCase is the state of one case: a forwarder, a batch of frame
// buffers and the flow sequence.
type pipelineCase struct {
	f    *appliance.Forwarder
	snap *appliance.Snapshot
	pkts []appliance.Packet
	// Where each frame's Ethernet header and client number are, so that
	// restoring them is two stores without bounds checks.
	heads    []*[ethLen]byte
	clientOf []*[4]byte
	eth      [ethLen]byte
	clientAt int      // offset of the low 32 bits of the client address in a buffer
	seq      []uint32 // established clients in visiting order
	pos      int      // next index into seq
	next     uint32   // next new client
	shareQ   uint32   // new-flow share in 1/65536
	acc      uint32   // share accumulator
	epoch    time.Time
}

// headroom in front of every benchmark frame: the worker's UMEM default.
const pipelineHeadroom = appliance.DefaultHeadroom

// Clients: established flows count up from clientBase, new ones from
// newClientBase, so they never collide.
const (
	clientBase    = 0x0a000000
	newClientBase = 0x40000000
)

func newPipelineCase(cfg PipelineConfig, mode appliance.Mode, family, size, nflows int, share float64) (*pipelineCase, int, error) {
	m := benchModel(mode, family, packet.ProtoTCP, cfg.Backends, syntheticMAC)
	reg, err := appliance.NewRegistry(appliance.DefaultMaxReals)
	if err != nil {
		return nil, 0, err
	}
	snap, err := appliance.BuildSnapshot(m, reg, 1)
	if err != nil {
		return nil, 0, err
	}
	fc := flows.DefaultConfig()
	// Room for the established flows with the table at most a third full,
	// as an operator would size it; new flows then evict old entries only
	// once the table fills.
	fc.Capacity = max(fc.Capacity, 3*nflows)
	f, err := appliance.NewForwarder(fc, reg.MaxReals())
	if err != nil {
		return nil, 0, err
	}
	spec := FrameSpec{Size: size, Proto: packet.ProtoTCP, SrcMAC: syntheticMAC(100), DstMAC: benchLocalMAC,
		Src: benchClient4, Dst: benchVIP4, SrcPort: 40000, DstPort: benchPort}
	if family == 6 {
		spec.Src, spec.Dst = benchClient6, benchVIP6
	}
	frame, err := BuildFrame(spec)
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	pc := &pipelineCase{
		f: f, snap: snap,
		next:   newClientBase,
		shareQ: uint32(math.Round(share * 65536)),
		epoch:  time.Now(),
	}
	// The client number goes into the source address's last four bytes.
	pc.clientAt = pipelineHeadroom + spec.srcOffset()
	if family == 6 {
		pc.clientAt += 12
	}
	copy(pc.eth[:], frame)
	pc.pkts = make([]appliance.Packet, cfg.BatchSize)
	for i := range pc.pkts {
		buf := make([]byte, pipelineHeadroom+len(frame))
		copy(buf[pipelineHeadroom:], frame)
		pc.pkts[i] = appliance.Packet{Buf: buf, Start: pipelineHeadroom, Len: len(frame)}
		pc.heads = append(pc.heads, (*[ethLen]byte)(buf[pipelineHeadroom:]))
		pc.clientOf = append(pc.clientOf, (*[4]byte)(buf[pc.clientAt:]))
	}

	// Establish the flows, then visit them in a shuffled order so that
	// large tables miss the caches as they would in production.
	clients := make([]uint32, nflows)
	for i := range clients {
		clients[i] = clientBase + uint32(i)
	}
	for i := 0; i < nflows; i += len(pc.pkts) {
		n := min(len(pc.pkts), nflows-i)
		pc.batch(pc.pkts[:n], clients[i:i+n], 0)
	}
	c := f.Counters()
	if c.TXPackets != uint64(nflows) {
		f.Close()
		return nil, 0, fmt.Errorf("establishing %d flows forwarded %d packets (drops: %d)", nflows, c.TXPackets, c.Dropped())
	}
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(clients), func(i, j int) { clients[i], clients[j] = clients[j], clients[i] })
	pc.seq = clients
	return pc, len(frame), nil
}

// batch prepares the frames of one batch and forwards them. With clients
// set, frame j carries clients[j]; otherwise each frame carries the next
// established client or, at the configured share, a new one. Each frame
// gets its Ethernet header back (the MAC rewrite or the outer headers
// overwrote it; the IP packet itself is never changed) and its client
// address: the same few bytes in every case.
func (pc *pipelineCase) batch(pkts []appliance.Packet, clients []uint32, now int64) {
	heads, clientOf := pc.heads[:len(pkts)], pc.clientOf[:len(pkts)]
	clientOf = clientOf[:len(heads)]
	eth := pc.eth
	for j, h := range heads {
		*h = eth
		var c uint32
		switch {
		case clients != nil:
			c = clients[j]
		default:
			pc.acc += pc.shareQ
			if pc.acc >= 65536 {
				pc.acc -= 65536
				c = pc.next
				pc.next++
			} else {
				c = pc.seq[pc.pos]
				if pc.pos++; pc.pos == len(pc.seq) {
					pc.pos = 0
				}
			}
		}
		putClient(clientOf[j][:], c)
	}
	pc.f.Begin(pc.snap, now)
	pc.f.ForwardBatch(pkts)
}

// run forwards batches for d and returns how many packets it forwarded and
// how long that took.
func (pc *pipelineCase) run(d time.Duration) (uint64, time.Duration) {
	var n uint64
	start := time.Now()
	deadline := start.Add(d)
	now := start
	for {
		// Reading the clock once per batch, as a worker does.
		pc.batch(pc.pkts, nil, int64(now.Sub(pc.epoch)))
		n += uint64(len(pc.pkts))
		now = time.Now()
		if !now.Before(deadline) {
			break
		}
	}
	return n, now.Sub(start)
}

// runPipelineOnce sets a case up, warms it up and times one run.
func runPipelineOnce(cfg PipelineConfig, c pipelineCaseSpec) (pipelineRun, error) {
	pc, frameLen, err := newPipelineCase(cfg, c.mode, c.family, c.size, c.nflows, c.share)
	if err != nil {
		return pipelineRun{}, err
	}
	defer pc.f.Close()
	// Setting up a million flows, and the previous case, leave garbage:
	// collect it now rather than during the timed run.
	runtime.GC()
	// A short warm-up brings the caches and branch predictors to their
	// steady state.
	pc.run(cfg.Duration / 10)
	cnt := pc.f.Counters()
	tx0, hits0 := cnt.TXPackets, cnt.FlowHits
	n, took := pc.run(cfg.Duration)
	if got := cnt.TXPackets - tx0; got != n {
		return pipelineRun{}, fmt.Errorf("%d of %d packets forwarded (drops: %d): the benchmark is broken", got, n, cnt.Dropped())
	}
	return pipelineRun{packets: n, took: took, hits: cnt.FlowHits - hits0, frameBytes: frameLen}, nil
}
