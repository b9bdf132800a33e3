package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/weirlb/weir/appliance"
	"github.com/weirlb/weir/perf"
)

func init() {
	commands["perf"] = command{summary: "benchmark weir: the forwarding pipeline, the rings, and end to end against the kernel", run: runPerf}
}

// perfModes are the benchmarks of 'weir perf', in the order the usage
// lists them.
var perfModes = []struct {
	name, summary string
	run           func(ctx context.Context, e *env, args []string) int
}{
	{"pipeline", "the forwarding decision alone, in memory, on one pinned core", runPerfPipeline},
	{"rings", "weir's worker loop over the real rings against a simulated kernel", runPerfRings},
	{"e2e", "weir with AF_XDP against an in-kernel XDP forwarder, on a veth lab (root)", runPerfE2E},
	{"show", "print and plot a report saved with --json", runPerfShow},
}

func perfUsage(w io.Writer) {
	fmt.Fprintln(w, "usage: weir perf <benchmark> [flags]")
	fmt.Fprintln(w, "\nMeasure weir on this machine. Every benchmark prints a table; --json FILE")
	fmt.Fprintln(w, "writes every figure with the machine and the settings used, --svg FILE a plot.")
	fmt.Fprintln(w, "\nbenchmarks:")
	for _, m := range perfModes {
		fmt.Fprintf(w, "  %-9s %s\n", m.name, m.summary)
	}
	fmt.Fprintln(w, "\nRun 'weir perf <benchmark> -h' for its flags.")
}

func runPerf(ctx context.Context, e *env, args []string) int {
	if len(args) == 0 {
		perfUsage(e.stderr)
		return 2
	}
	if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		perfUsage(e.stdout)
		return 0
	}
	for _, m := range perfModes {
		if m.name == args[0] {
			return m.run(ctx, e, args[1:])
		}
	}
	fmt.Fprintf(e.stderr, "weir perf: unknown benchmark %q\n\n", args[0])
	perfUsage(e.stderr)
	return 2
}

// perfOutput are the output flags every benchmark has.
type perfOutput struct {
	json, svg string
}

func (o *perfOutput) register(fs *flag.FlagSet) {
	fs.StringVar(&o.json, "json", "", "also write every figure, the machine and the settings as JSON to `FILE` (- for stdout, instead of the table)")
	fs.StringVar(&o.svg, "svg", "", "also draw the results as an SVG image into `FILE`")
}

// parsePerfFlags parses args for benchmark name; it returns the exit code
// and false when the command should stop.
func parsePerfFlags(e *env, fs *flag.FlagSet, name, about string, args []string) (int, bool) {
	fs.SetOutput(io.Discard)
	usage := func(w io.Writer) {
		fmt.Fprintf(w, "usage: weir perf %s [flags]\n\n%s\n\nflags:\n", name, about)
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage(e.stdout)
			return 0, false
		}
		fmt.Fprintf(e.stderr, "weir perf %s: %v\n\n", name, err)
		usage(e.stderr)
		return 2, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(e.stderr, "weir perf %s: unexpected argument %q\n\n", name, fs.Arg(0))
		usage(e.stderr)
		return 2, false
	}
	return 0, true
}

// perfFlagValues records every flag's value, for the report.
func perfFlagValues(fs *flag.FlagSet) map[string]string {
	m := map[string]string{}
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name != "json" && f.Name != "svg" {
			m[f.Name] = f.Value.String()
		}
	})
	return m
}

// finish prints the report and writes the files asked for.
func (o *perfOutput) finish(e *env, name string, rep *perf.Report) int {
	code := 0
	if o.json == "-" {
		if err := rep.WriteJSON(e.stdout); err != nil {
			fmt.Fprintf(e.stderr, "weir perf %s: %v\n", name, err)
			code = 1
		}
	} else {
		rep.WriteText(e.stdout)
		if o.json != "" {
			if err := writePerfFile(o.json, rep.WriteJSON); err != nil {
				fmt.Fprintf(e.stderr, "weir perf %s: %v\n", name, err)
				code = 1
			}
		}
	}
	if o.svg != "" {
		if err := writePerfFile(o.svg, rep.WriteSVG); err != nil {
			fmt.Fprintf(e.stderr, "weir perf %s: %v\n", name, err)
			code = 1
		}
	}
	return code
}

func writePerfFile(path string, write func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func newPerfReport(name string, fs *flag.FlagSet) *perf.Report {
	return &perf.Report{Machine: perf.ThisMachine(), Started: time.Now().UTC(), Command: name, Config: perfFlagValues(fs)}
}

// perfLastCPU is the highest CPU the process may use (-1 if unknown): the
// default for benchmarks that want one pinned core, leaving CPU 0 to the
// rest of the machine.
func perfLastCPU() int {
	cpus, err := perf.AllowedCPUs()
	if err != nil || len(cpus) == 0 {
		return -1
	}
	return cpus[len(cpus)-1]
}

// Lists in flags.

type perfIntList []int

func (l *perfIntList) String() string {
	var s []string
	for _, v := range *l {
		s = append(s, strconv.Itoa(v))
	}
	return strings.Join(s, ",")
}

func (l *perfIntList) Set(v string) error {
	var out []int
	for _, f := range strings.Split(v, ",") {
		f = strings.TrimSpace(f)
		mult := 1
		switch {
		case strings.HasSuffix(f, "k"):
			f, mult = strings.TrimSuffix(f, "k"), 1000
		case strings.HasSuffix(f, "M"):
			f, mult = strings.TrimSuffix(f, "M"), 1_000_000
		}
		n, err := strconv.Atoi(f)
		if err != nil {
			return fmt.Errorf("%q is not a number", f)
		}
		out = append(out, n*mult)
	}
	*l = out
	return nil
}

type perfFloatList []float64

func (l *perfFloatList) String() string {
	var s []string
	for _, v := range *l {
		s = append(s, strconv.FormatFloat(v, 'g', -1, 64))
	}
	return strings.Join(s, ",")
}

func (l *perfFloatList) Set(v string) error {
	var out []float64
	for _, f := range strings.Split(v, ",") {
		x, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil {
			return fmt.Errorf("%q is not a number", f)
		}
		out = append(out, x)
	}
	*l = out
	return nil
}

type perfModeList []appliance.Mode

func (l *perfModeList) String() string {
	var s []string
	for _, m := range *l {
		s = append(s, m.String())
	}
	return strings.Join(s, ",")
}

func (l *perfModeList) Set(v string) error {
	var out []appliance.Mode
	for _, f := range strings.Split(v, ",") {
		m, err := appliance.ParseMode(strings.TrimSpace(f))
		if err != nil {
			return err
		}
		out = append(out, m)
	}
	*l = out
	return nil
}

type perfModeFlag struct{ m *appliance.Mode }

func (f perfModeFlag) String() string {
	if f.m == nil {
		return ""
	}
	return f.m.String()
}

func (f perfModeFlag) Set(v string) error {
	m, err := appliance.ParseMode(v)
	if err == nil {
		*f.m = m
	}
	return err
}

func runPerfPipeline(ctx context.Context, e *env, args []string) int {
	cfg := perf.DefaultPipelineConfig()
	cfg.CPU = perfLastCPU()
	fs := flag.NewFlagSet("perf pipeline", flag.ContinueOnError)
	modes, fams, sizes, nflows, shares := perfModeList(cfg.Modes), perfIntList(cfg.Families), perfIntList(cfg.Sizes), perfIntList(cfg.Flows), perfFloatList(cfg.NewShares)
	fs.Var(&modes, "modes", "forwarding `modes` to measure (dsr, ipip, gue)")
	fs.Var(&fams, "families", "address `families` (4, 6)")
	fs.Var(&sizes, "sizes", "frame `sizes` in bytes on the wire, FCS included (64..1518)")
	fs.Var(&nflows, "flows", "established `flows` (k and M suffixes allowed)")
	fs.Var(&shares, "new-share", "`shares` of packets (0..1) that open a new flow; each is a case")
	fs.IntVar(&cfg.Runs, "runs", cfg.Runs, "timed runs per case, interleaved over the cases: the spread is over them")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "length of one run")
	fs.IntVar(&cfg.CPU, "cpu", cfg.CPU, "CPU to pin the benchmark to (-1: not pinned)")
	fs.IntVar(&cfg.BatchSize, "batch", appliance.DefaultBatchSize, "frames per ForwardBatch call (the worker's batch size)")
	var out perfOutput
	out.register(fs)
	about := "Times appliance.Forwarder's ForwardBatch over synthetic TCP frames, with no I/O,\n" +
		"on one pinned core, for every combination of the listed values. Needs no privileges."
	if code, ok := parsePerfFlags(e, fs, "pipeline", about, args); !ok {
		return code
	}
	cfg.Modes, cfg.Families, cfg.Sizes, cfg.Flows, cfg.NewShares = modes, fams, sizes, nflows, shares
	rep := newPerfReport("pipeline", fs)
	n := len(cfg.Modes) * len(cfg.Families) * len(cfg.Sizes) * len(cfg.Flows) * len(cfg.NewShares) * cfg.Runs
	done := 0
	res, err := perf.RunPipeline(ctx, cfg, func(r perf.PipelineResult) {
		done++
		fmt.Fprintf(e.stderr, "[%d/%d] %s ipv%d %dB %d flows %s, run %d: median so far %.1f ns/pkt, %.2f Mpps\n",
			done, n, r.Mode, r.Family, r.Size, r.Flows, r.Case, r.NsSpread.N, r.NsPerPkt, r.Mpps)
	})
	rep.Pipeline = res
	if err != nil {
		fmt.Fprintf(e.stderr, "weir perf pipeline: %v\n", err)
		if len(res) > 0 {
			out.finish(e, "pipeline", rep)
		}
		return 1
	}
	return out.finish(e, "pipeline", rep)
}

func runPerfRings(ctx context.Context, e *env, args []string) int {
	cfg := perf.DefaultRingsConfig()
	cfg.CPU = perfLastCPU()
	cfg.KernelCPU = 0
	if cfg.CPU == 0 {
		cfg.KernelCPU = -1
	}
	fs := flag.NewFlagSet("perf rings", flag.ContinueOnError)
	fs.Var(perfModeFlag{&cfg.Mode}, "mode", "forwarding `mode` (dsr, ipip, gue)")
	fs.IntVar(&cfg.Family, "family", cfg.Family, "address family (4, 6)")
	fs.IntVar(&cfg.Size, "size", cfg.Size, "frame size in bytes on the wire, FCS included")
	fs.IntVar(&cfg.Flows, "flows", cfg.Flows, "established flows, visited in a shuffled order")
	fs.IntVar(&cfg.Runs, "runs", cfg.Runs, "timed runs: the spread is over them")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "length of one run")
	fs.IntVar(&cfg.CPU, "cpu", cfg.CPU, "CPU of the forwarding loop (-1: not pinned)")
	fs.IntVar(&cfg.KernelCPU, "kernel-cpu", cfg.KernelCPU, "CPU of the simulated kernel (-1: not pinned)")
	fs.IntVar(&cfg.BatchSize, "batch", appliance.DefaultBatchSize, "descriptors per batch")
	ringSize := fs.Uint("ring-size", uint(appliance.DefaultRingSize), "entries of each ring")
	var out perfOutput
	out.register(fs)
	about := "Runs weir's worker loop (rings, UMEM, ForwardBatch) against a simulated kernel on\n" +
		"another core that receives and transmits as fast as it can: what user space sustains\n" +
		"when the kernel is not the limit. Needs no privileges."
	if code, ok := parsePerfFlags(e, fs, "rings", about, args); !ok {
		return code
	}
	cfg.RingSize = uint32(*ringSize)
	rep := newPerfReport("rings", fs)
	res, err := perf.RunRings(ctx, cfg)
	if err != nil {
		fmt.Fprintf(e.stderr, "weir perf rings: %v\n", err)
		return 1
	}
	rep.Rings = &res
	return out.finish(e, "rings", rep)
}

// perfLoadsFlag is --loads: "auto", "none" or a list of Mpps.
type perfLoadsFlag struct{ cfg *perf.E2EConfig }

func (f perfLoadsFlag) String() string {
	if f.cfg == nil {
		return ""
	}
	switch {
	case f.cfg.AutoLoads:
		return "auto"
	case len(f.cfg.Loads) == 0:
		return "none"
	}
	l := perfFloatList(f.cfg.Loads)
	return l.String()
}

func (f perfLoadsFlag) Set(v string) error {
	switch v {
	case "auto":
		f.cfg.AutoLoads, f.cfg.Loads = true, nil
	case "none", "":
		f.cfg.AutoLoads, f.cfg.Loads = false, nil
	default:
		var l perfFloatList
		if err := l.Set(v); err != nil {
			return err
		}
		sort.Float64s(l)
		f.cfg.AutoLoads, f.cfg.Loads = false, l
	}
	return nil
}

func runPerfE2E(ctx context.Context, e *env, args []string) int {
	cfg := perf.DefaultE2EConfig()
	fs := flag.NewFlagSet("perf e2e", flag.ContinueOnError)
	fs.IntVar(&cfg.Size, "size", cfg.Size, "frame size in bytes on the wire, FCS included")
	fs.IntVar(&cfg.Family, "family", cfg.Family, "address family (4, 6)")
	fs.IntVar(&cfg.Flows, "flows", cfg.Flows, "flows the generator cycles through (source address and port)")
	fs.IntVar(&cfg.Runs, "runs", cfg.Runs, "interleaved weir/reference pairs at the generator's full rate")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "traffic time of one run")
	fs.IntVar(&cfg.SearchSteps, "search-steps", cfg.SearchSteps, "bisection steps per system towards the highest lossless rate (0: skip, and no latency)")
	fs.Float64Var(&cfg.LossTarget, "loss", cfg.LossTarget, "loss share that still counts as lossless")
	fs.Var(perfLoadsFlag{&cfg}, "loads", "offered loads for the throughput curve: auto, none, or a list of Mpps")
	fs.IntVar(&cfg.GenCPU, "gen-cpu", cfg.GenCPU, "CPU of the traffic generator (and of the appliance veth's receive path)")
	fs.IntVar(&cfg.WorkerCPU, "worker-cpu", cfg.WorkerCPU, "CPU of weir's worker")
	genBatch := fs.Uint("gen-batch", uint(cfg.GenBatch), "frames the kernel prepares and flushes per generator batch (1..256)")
	fs.IntVar(&cfg.BatchSize, "batch", appliance.DefaultBatchSize, "weir's worker batch size")
	ringSize := fs.Uint("ring-size", uint(appliance.DefaultRingSize), "entries of each of weir's rings")
	fs.DurationVar(&cfg.IdleSpin, "idle-spin", cfg.IdleSpin, "how long weir's idle worker polls before it sleeps (0: at once)")
	fs.StringVar(&cfg.Prefix, "prefix", cfg.Prefix, "name prefix of the lab's namespaces")
	verbose := fs.Bool("v", false, "log weir's own messages to stderr")
	var out perfOutput
	out.register(fs)
	about := "Builds two namespaces joined by a veth (generator, appliance) and measures, interleaved,\n" +
		"weir (AF_XDP workers, redirect program, a DSR VIP) and an in-kernel XDP program doing the same\n" +
		"MAC rewrite with XDP_TX. A BPF live-frames generator sends, a BPF sink counts what comes back\n" +
		"and measures latency. Needs root and two CPUs; everything is removed afterwards."
	if code, ok := parsePerfFlags(e, fs, "e2e", about, args); !ok {
		return code
	}
	cfg.GenBatch, cfg.RingSize = uint32(*genBatch), uint32(*ringSize)
	if *verbose {
		cfg.Logger = slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(e.stderr, "weir perf e2e: needs root (network namespaces, BPF programs, AF_XDP sockets)")
		return 1
	}
	rep := newPerfReport("e2e", fs)
	res, err := perf.RunE2E(ctx, cfg, func(r perf.E2ERun) {
		target := "full rate"
		if r.TargetMpps > 0 {
			target = fmt.Sprintf("%.3f Mpps", r.TargetMpps)
		}
		fmt.Fprintf(e.stderr, "%-9s %-6s at %-12s offered %.3f, forwarded %.3f Mpps, loss %.3f%%, p50 %.1f µs\n",
			r.System, r.Phase, target, r.OfferedMpps, r.ForwardedMpps, 100*r.Loss, r.Latency.P50)
	})
	rep.E2E = res
	if err != nil {
		fmt.Fprintf(e.stderr, "weir perf e2e: %v\n", err)
		return 1
	}
	return out.finish(e, "e2e", rep)
}

// runPerfShow reads a report written with --json and prints its tables,
// and draws it with --svg: for comparing runs across machines and commits.
func runPerfShow(_ context.Context, e *env, args []string) int {
	fs := flag.NewFlagSet("perf show", flag.ContinueOnError)
	svg := fs.String("svg", "", "draw the report as an SVG image into `FILE`")
	fs.SetOutput(io.Discard)
	usage := func(w io.Writer) {
		fmt.Fprintln(w, "usage: weir perf show [--svg FILE] REPORT.json")
		fmt.Fprintln(w, "\nPrints the tables of a report saved with 'weir perf <benchmark> --json', and draws it.")
		fmt.Fprintln(w, "\nflags:")
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage(e.stdout)
			return 0
		}
		fmt.Fprintf(e.stderr, "weir perf show: %v\n\n", err)
		usage(e.stderr)
		return 2
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(e.stderr, "weir perf show: name one report file")
		usage(e.stderr)
		return 2
	}
	b, err := os.ReadFile(fs.Arg(0))
	if err != nil {
		fmt.Fprintf(e.stderr, "weir perf show: %v\n", err)
		return 1
	}
	var rep perf.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		fmt.Fprintf(e.stderr, "weir perf show: %s: %v\n", fs.Arg(0), err)
		return 1
	}
	out := perfOutput{svg: *svg}
	return out.finish(e, "show", &rep)
}
