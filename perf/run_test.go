package perf

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"math"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weirlb/weir/appliance"
	"github.com/weirlb/weir/internal/testutil"
	"github.com/weirlb/weir/lab"
)

// checkSpread checks that a spread is ordered and positive.
func checkSpread(t *testing.T, what string, s Spread, n int) {
	t.Helper()
	if s.N != n || !(s.Min > 0 && s.Min <= s.Median && s.Median <= s.Max) || math.IsInf(s.Max, 0) {
		t.Errorf("%s: spread %+v over %d runs", what, s, n)
	}
}

// A tiny pipeline run: every case present, figures positive and ordered,
// the flow mix as configured.
func TestPipelineShort(t *testing.T) {
	cfg := DefaultPipelineConfig()
	cfg.Modes = []appliance.Mode{appliance.ModeDSR, appliance.ModeGUE}
	cfg.Families = []int{4, 6}
	cfg.Sizes = []int{64, 1500}
	cfg.Flows = []int{1, 1000}
	cfg.NewShares = []float64{0, 0.5}
	// An odd number of runs: the median Mpps is then exactly the median
	// ns/pkt's inverse.
	cfg.Runs, cfg.Duration = 3, 2*time.Millisecond
	var seen int
	res, err := RunPipeline(context.Background(), cfg, func(PipelineResult) { seen++ })
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 2*2*2*2*2 || seen != len(res)*cfg.Runs {
		t.Fatalf("%d results, %d progress calls", len(res), seen)
	}
	for _, r := range res {
		checkSpread(t, r.Mode+" "+r.Case, r.MppsSpread, 3)
		checkSpread(t, r.Mode+" "+r.Case, r.NsSpread, 3)
		if r.Packets == 0 || math.Abs(r.Mpps*r.NsPerPkt-1e3) > 1e-6 {
			t.Errorf("%+v: Mpps and ns/pkt disagree", r)
		}
		wantHits := 1 - r.NewShare
		if math.Abs(r.FlowHitRatio-wantHits) > 0.05 {
			t.Errorf("%s %s %d flows: flow hit ratio %.3f, want about %.2f", r.Mode, r.Case, r.Flows, r.FlowHitRatio, wantHits)
		}
		if r.Size == 64 && r.Family == 6 && r.FrameBytes != 74 {
			t.Errorf("ipv6 64-byte frame has %d bytes", r.FrameBytes)
		}
	}
}

func TestPipelineConfigRejects(t *testing.T) {
	for name, mut := range map[string]func(*PipelineConfig){
		"no modes": func(c *PipelineConfig) { c.Modes = nil },
		"family":   func(c *PipelineConfig) { c.Families = []int{5} },
		"size":     func(c *PipelineConfig) { c.Sizes = []int{9000} },
		"flows":    func(c *PipelineConfig) { c.Flows = []int{0} },
		"share":    func(c *PipelineConfig) { c.NewShares = []float64{1.5} },
		"runs":     func(c *PipelineConfig) { c.Runs = 0 },
		"duration": func(c *PipelineConfig) { c.Duration = 0 },
		"batch":    func(c *PipelineConfig) { c.BatchSize = appliance.MaxBatch + 1 },
		"cpu":      func(c *PipelineConfig) { c.CPU = 4096 },
	} {
		cfg := DefaultPipelineConfig()
		mut(&cfg)
		if _, err := RunPipeline(context.Background(), cfg, nil); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// A tiny rings run, unpinned: packets flow through the real rings and the
// ledger balances (RunRings checks it).
func TestRingsShort(t *testing.T) {
	cfg := DefaultRingsConfig()
	cfg.Flows, cfg.Runs, cfg.Duration = 100, 2, 20*time.Millisecond
	for _, mode := range []appliance.Mode{appliance.ModeDSR, appliance.ModeIPIP} {
		cfg.Mode = mode
		r, err := RunRings(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		// Unpinned on a busy machine a 20 ms window can pass without
		// progress: only the order of the spread is certain.
		if s := r.MppsSpread; s.N != 2 || s.Min < 0 || s.Min > s.Median || s.Median > s.Max {
			t.Errorf("%s: spread %+v", mode, s)
		}
		if r.Packets == 0 || r.NsPerPkt <= 0 || r.RingSize != appliance.DefaultRingSize || r.BatchSize != appliance.DefaultBatchSize {
			t.Errorf("%s: %+v", mode, r)
		}
	}
	bad := cfg
	bad.CPU, bad.KernelCPU = 0, 0
	if _, err := RunRings(context.Background(), bad); err == nil {
		t.Error("both sides on one CPU accepted")
	}
}

// runPinned pins only its own thread.
func TestRunPinned(t *testing.T) {
	cpus, err := AllowedCPUs()
	if err != nil {
		t.Fatal(err)
	}
	last := cpus[len(cpus)-1]
	err = runPinned(last, func() error {
		var set unix.CPUSet
		if err := unix.SchedGetaffinity(0, &set); err != nil {
			return err
		}
		if set.Count() != 1 || !set.IsSet(last) {
			t.Errorf("pinned thread may run on %d CPUs", set.Count())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var set unix.CPUSet
	unix.SchedGetaffinity(0, &set)
	if set.Count() != len(cpus) {
		t.Errorf("the pin leaked: this thread may run on %d of %d CPUs", set.Count(), len(cpus))
	}
	if err := checkCPU("test", 4096); err == nil {
		t.Error("cpu 4096 accepted")
	}
}

func TestE2EConfigRejects(t *testing.T) {
	for name, mut := range map[string]func(*E2EConfig){
		"size":      func(c *E2EConfig) { c.Size = 10 },
		"family":    func(c *E2EConfig) { c.Family = 0 },
		"flows":     func(c *E2EConfig) { c.Flows = 0 },
		"runs":      func(c *E2EConfig) { c.Runs = 0 },
		"duration":  func(c *E2EConfig) { c.Duration = 0 },
		"loss":      func(c *E2EConfig) { c.LossTarget = 0 },
		"same cpu":  func(c *E2EConfig) { c.WorkerCPU = c.GenCPU },
		"unpinned":  func(c *E2EConfig) { c.GenCPU = -1 },
		"gen batch": func(c *E2EConfig) { c.GenBatch = 1000 },
		"load":      func(c *E2EConfig) { c.Loads = []float64{-1} },
	} {
		cfg := DefaultE2EConfig()
		mut(&cfg)
		if _, err := RunE2E(context.Background(), cfg, nil); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// A tiny end-to-end run: weir and the reference both forward, the figures
// are sane, the JSON holds the keys, and the lab is gone afterwards.
func TestE2EShort(t *testing.T) {
	testutil.RequirePrivileged(t)
	cpus, err := AllowedCPUs()
	if err != nil {
		t.Fatal(err)
	}
	if len(cpus) < 2 {
		t.Skip("needs two CPUs")
	}
	b := make([]byte, 3)
	rand.Read(b)
	prefix := "wpt" + hex.EncodeToString(b)
	t.Cleanup(func() {
		if left, _ := lab.ListNS(prefix); len(left) > 0 {
			t.Errorf("namespaces left behind: %v", left)
			for _, n := range left {
				lab.RemoveNS(n)
			}
		}
	})
	cfg := DefaultE2EConfig()
	cfg.GenCPU, cfg.WorkerCPU = cpus[0], cpus[1]
	cfg.Runs, cfg.Duration, cfg.SearchSteps = 1, 50*time.Millisecond, 1
	cfg.Flows = 1000
	cfg.AutoLoads, cfg.Loads = false, []float64{0.05}
	cfg.Prefix = prefix
	cfg.Logger = testLogger(t)
	var runs int
	res, err := RunE2E(context.Background(), cfg, func(E2ERun) { runs++ })
	if err != nil {
		t.Fatal(err)
	}
	// 1 pair at full rate, 1 search step each (plus a fallback if it lost),
	// 1 sweep load each.
	if runs < 6 || len(res.Runs) != runs {
		t.Errorf("%d runs reported, %d recorded", runs, len(res.Runs))
	}
	if res.WeirMpps <= 0 || res.ReferenceMpps <= 0 || res.Ratio <= 0 || res.OfferedMpps <= 0 {
		t.Errorf("throughputs weir %v reference %v ratio %v offered %v", res.WeirMpps, res.ReferenceMpps, res.Ratio, res.OfferedMpps)
	}
	for _, r := range res.Runs {
		if r.Loss < 0 || r.Loss > 1 || r.Sent == 0 || r.Received > r.Sent || r.WrongMAC != 0 || r.Seconds <= 0 {
			t.Errorf("run %+v", r)
		}
		if (r.System == SystemWeir) != (r.Weir != nil) || (r.System == SystemWeir) != (r.WorkerThread != nil) {
			t.Errorf("%s run: weir stats %v, worker thread %v", r.System, r.Weir, r.WorkerThread)
		}
		if w := r.Weir; w != nil && (w.TXPackets == 0 || w.TXPackets < r.Received || w.XDPRedirected < w.RXPackets) {
			t.Errorf("weir run counters %+v, sink received %d", w, r.Received)
		}
		if r.Received > 0 && r.Latency.Count == 0 {
			t.Errorf("%s run received %d frames and measured no latency", r.System, r.Received)
		}
	}
	if res.AFXDPMode != "copy" || (res.XDPMode != "native" && res.XDPMode != "generic") {
		t.Errorf("modes: AF_XDP %q, XDP %q", res.AFXDPMode, res.XDPMode)
	}
	if res.Loss < 0 || res.Loss > 1 || res.ReferenceLoss < 0 || res.ReferenceLoss > 1 {
		t.Errorf("loss %v, reference %v", res.Loss, res.ReferenceLoss)
	}
	if res.MaxLosslessMpps > 0 && (res.Latency.P50 <= 0 || res.Latency.P50 > res.Latency.P99 || res.Latency.P99 > res.Latency.P999) {
		t.Errorf("latency %+v", res.Latency)
	}

	rep := &Report{Machine: ThisMachine(), Command: "e2e", Config: map[string]string{}, E2E: res}
	var buf bytes.Buffer
	if err := rep.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	checkJSONKeys(t, m)
	if left, _ := lab.ListNS(prefix); len(left) > 0 {
		t.Errorf("RunE2E returned with namespaces left: %v", left)
	}
}
