package perf

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"text/tabwriter"
	"time"
)

// Report is what `weir perf` prints and writes with --json: the machine,
// the configuration and every figure, so runs can be compared across
// machines and commits.
type Report struct {
	Machine Machine   `json:"machine"`
	Started time.Time `json:"started"`
	Command string    `json:"command"`
	// Config holds every setting the run used, by flag name.
	Config   map[string]string `json:"config"`
	Pipeline []PipelineResult  `json:"pipeline,omitempty"`
	Rings    *RingsResult      `json:"rings,omitempty"`
	E2E      *E2EResult        `json:"e2e,omitempty"`
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes the report as tables for people.
func (r *Report) WriteText(w io.Writer) error {
	m := r.Machine
	fmt.Fprintf(w, "machine: %s, %d CPUs, Linux %s, %s", orUnknown(m.CPUModel), m.Cores, orUnknown(m.Kernel), m.Go)
	if m.Commit != "" {
		fmt.Fprintf(w, ", weir %s", shortCommit(m.Commit))
	}
	fmt.Fprintln(w)
	if len(r.Pipeline) > 0 {
		fmt.Fprintln(w)
		writePipelineTable(w, r.Pipeline)
	}
	if r.Rings != nil {
		fmt.Fprintln(w)
		writeRingsTable(w, r.Rings)
	}
	if r.E2E != nil {
		fmt.Fprintln(w)
		writeE2ETable(w, r.E2E)
	}
	return nil
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// shortCommit shortens a 40-digit revision to 12, keeping a "-dirty"
// suffix.
func shortCommit(c string) string {
	if len(c) >= 40 {
		return c[:12] + c[40:]
	}
	return c
}

func writePipelineTable(w io.Writer, rs []PipelineResult) {
	fmt.Fprintln(w, "pipeline: the forwarding decision alone, in memory, one pinned core (median over runs, [min, max])")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "mode\tfamily\tsize\tflows\tcase\tns/pkt\t[min, max]\tMpps\t[min, max]\tflow hits")
	for _, r := range rs {
		fmt.Fprintf(tw, "%s\tipv%d\t%d\t%s\t%s\t%.1f\t[%.1f, %.1f]\t%.2f\t[%.2f, %.2f]\t%.1f%%\n",
			r.Mode, r.Family, r.Size, countName(r.Flows), r.Case,
			r.NsPerPkt, r.NsSpread.Min, r.NsSpread.Max, r.Mpps, r.MppsSpread.Min, r.MppsSpread.Max, 100*r.FlowHitRatio)
	}
	tw.Flush()
}

// countName writes 10000 as 10k and 1000000 as 1M.
func countName(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	}
	return fmt.Sprint(n)
}

func writeRingsTable(w io.Writer, r *RingsResult) {
	fmt.Fprintln(w, "rings: weir's worker loop over the real rings and UMEM, against a simulated kernel on another core")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "traffic\t%s, ipv%d, %d bytes, %s flows, batch %d, rings of %d\n", r.Mode, r.Family, r.Size, countName(r.Flows), r.BatchSize, r.RingSize)
	fmt.Fprintf(tw, "forwarded Mpps, one core\t%.2f\t[%.2f, %.2f] over %d runs\n", r.Mpps, r.MppsSpread.Min, r.MppsSpread.Max, r.MppsSpread.N)
	fmt.Fprintf(tw, "ns/pkt\t%.1f\n", r.NsPerPkt)
	fmt.Fprintf(tw, "simulated kernel found the RX ring full\t%d packets\t(the forwarder was the bottleneck)\n", r.RXRingFull)
	fmt.Fprintf(tw, "TX kicks per packet\t%.3f\n", r.KicksPerPkt)
	tw.Flush()
}

func writeE2ETable(w io.Writer, r *E2EResult) {
	fmt.Fprintf(w, "e2e: generator -> veth -> forwarder -> veth -> sink, %d-byte frames (%d in memory), ipv%d, %s flows\n",
		r.Size, r.FrameBytes, r.Family, countName(r.Flows))
	fmt.Fprintf(w, "weir: AF_XDP %s mode, XDP %s, one worker; reference: XDP MAC rewrite + XDP_TX on the same interface\n",
		r.AFXDPMode, r.XDPMode)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\tweir\treference\tweir/reference\t")
	fmt.Fprintf(tw, "forwarded Mpps at full offered load (median)\t%.3f\t%.3f\t%.3f\t\n", r.WeirMpps, r.ReferenceMpps, r.Ratio)
	fmt.Fprintf(tw, "  [min, max] over %d runs\t[%.3f, %.3f]\t[%.3f, %.3f]\t\t\n", r.WeirSpread.N, r.WeirSpread.Min, r.WeirSpread.Max, r.ReferenceSpread.Min, r.ReferenceSpread.Max)
	fmt.Fprintf(tw, "offered Mpps\t%.3f\t%.3f\t\t\n", r.OfferedMpps, r.ReferenceOfferedMpps)
	fmt.Fprintf(tw, "loss at full offered load\t%s\t%s\t\t\n", pct(r.Loss), pct(r.ReferenceLoss))
	if r.Latency.Count > 0 || r.ReferenceLatency.Count > 0 {
		fmt.Fprintf(tw, "highest rate with loss < %s, Mpps\t%s\t%s\t%s\t\n", pct(r.LossTarget),
			atLeast(r.MaxLosslessGeneratorBound)+mppsOrDash(r.MaxLosslessMpps),
			atLeast(r.ReferenceMaxLosslessGeneratorBound)+mppsOrDash(r.ReferenceMaxLosslessMpps),
			ratio(r.MaxLosslessMpps, r.ReferenceMaxLosslessMpps))
		fmt.Fprintf(tw, "latency at that rate, µs: p50\t%.1f\t%.1f\t\t\n", r.Latency.P50, r.ReferenceLatency.P50)
		fmt.Fprintf(tw, "p99\t%.1f\t%.1f\t\t\n", r.Latency.P99, r.ReferenceLatency.P99)
		fmt.Fprintf(tw, "p99.9\t%.1f\t%.1f\t\t\n", r.Latency.P999, r.ReferenceLatency.P999)
	} else {
		fmt.Fprintf(tw, "highest rate with loss < %s\tnot searched\t\t\t\n", pct(r.LossTarget))
	}
	tw.Flush()
	if r.MaxLosslessGeneratorBound || r.ReferenceMaxLosslessGeneratorBound {
		fmt.Fprintln(w, "(≥: the generator offered no more; it shares its CPU with the receive path of the appliance's veth)")
	}

	c := r.CPU
	fmt.Fprintln(w, "weir at full offered load (medians):")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "  worker cpu %d\tuser %.0f%%\tsystem %.0f%%\tsoftirq %.0f%%\tidle %.0f%%\t(/proc/stat: every task on the CPU)\n",
		c.Worker.CPU, c.Worker.User, c.Worker.System, c.Worker.SoftIRQ, c.Worker.Idle)
	fmt.Fprintf(tw, "  worker thread\tuser %.0f%%\tsystem %.0f%%\trunning %.0f%%\twaiting %.0f%%\t(waiting: runnable while other work had the CPU)\n",
		c.WorkerThread.User, c.WorkerThread.System, c.WorkerThread.Running, c.WorkerThread.Waiting)
	fmt.Fprintf(tw, "  generator cpu %d\tuser %.0f%%\tsystem %.0f%%\tsoftirq %.0f%%\tidle %.0f%%\t\n",
		c.Generator.CPU, c.Generator.User, c.Generator.System, c.Generator.SoftIRQ, c.Generator.Idle)
	tw.Flush()
	g := r.Rings
	fmt.Fprintf(w, "  rings: fill ring found empty %d times, %d frames dropped for a full TX ring, %d for a full RX ring; %.3f TX kicks and %.1f packets per batch\n",
		g.FillRingEmpty, g.TXRingFull, g.RXRingFull, g.KicksPerPkt, g.PktsPerBatch)

	fmt.Fprintln(w, "runs, in the order they ran:")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "system\tphase\ttarget Mpps\toffered\tforwarded\tloss\tp50 µs\tp99 µs\t")
	for _, run := range r.Runs {
		target := "full"
		if run.TargetMpps > 0 {
			target = fmt.Sprintf("%.3f", run.TargetMpps)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.3f\t%.3f\t%s\t%.1f\t%.1f\t\n", run.System, run.Phase, target,
			run.OfferedMpps, run.ForwardedMpps, pct(run.Loss), run.Latency.P50, run.Latency.P99)
	}
	tw.Flush()
}

func atLeast(bound bool) string {
	if bound {
		return "≥ "
	}
	return ""
}

func mppsOrDash(x float64) string {
	if x == 0 {
		return "-"
	}
	return fmt.Sprintf("%.3f", x)
}

func pct(x float64) string {
	switch {
	case x == 0:
		return "0%"
	case x < 0.0001:
		return fmt.Sprintf("%.4f%%", 100*x)
	case x < 0.01:
		return fmt.Sprintf("%.2f%%", 100*x)
	}
	return fmt.Sprintf("%.1f%%", 100*x)
}

func ratio(a, b float64) string {
	if b == 0 || math.IsNaN(a/b) {
		return ""
	}
	return fmt.Sprintf("%.3f", a/b)
}
