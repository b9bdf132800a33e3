package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weirlb/weir/appliance"
	"github.com/weirlb/weir/ring"
)

func init() {
	commands["run"] = command{summary: "run the appliance until SIGTERM; SIGHUP reloads the configuration", run: runRun}
}

func runUsage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintln(w, "usage: weir run [-c FILE] [-pid-file FILE] [-status-file FILE]")
	fmt.Fprintln(w, "\nLoad and validate the configuration, attach weir to the configured interface and forward")
	fmt.Fprintln(w, "VIP traffic until SIGTERM or SIGINT, then detach and stop cleanly.")
	fmt.Fprintln(w, "\nSIGHUP (or 'weir reload') re-reads the same file: a file with problems, or one that changes")
	fmt.Fprintln(w, "settings only a restart can apply (interface, queues, cpus, frame and ring sizes, xdp mode,")
	fmt.Fprintln(w, "flow tables, metrics address, log format), is refused and the running configuration stays")
	fmt.Fprintln(w, "in force; otherwise the new VIPs and backends are published without breaking established")
	fmt.Fprintln(w, "flows. Every outcome is logged, and written to the status file for 'weir reload'.")
	fmt.Fprintln(w, "\nNeeds CAP_NET_ADMIN, CAP_BPF, CAP_NET_RAW, and CAP_IPC_LOCK or an unlimited RLIMIT_MEMLOCK")
	fmt.Fprintln(w, "(root has them all; deploy/weir.service grants them to a dedicated user).")
	fmt.Fprintln(w, "\nflags:")
	fs.SetOutput(w)
	fs.PrintDefaults()
}

// runRun is `weir run`. Start-up failures exit 1 with a message that says
// what to change; a clean stop exits 0.
func runRun(ctx context.Context, e *env, args []string) int {
	// SIGHUP is caught before anything else: its default action kills the
	// process, and a reload sent while weir starts must not.
	hup := make(chan os.Signal, 4)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	path := fs.String("c", appliance.DefaultConfigPath, "configuration `FILE`")
	pidFile := fs.String("pid-file", "", "write the process ID to `FILE` while running (for 'weir reload')")
	statusFile := fs.String("status-file", "", "write start-up and reload results to `FILE` (default: the pid file's name with .status.json)")
	noCapCheck := fs.Bool("no-cap-check", false, "skip the start-up check of capabilities and let the kernel decide (for kernels or security modules that grant differently)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			runUsage(e.stdout, fs)
			return 0
		}
		fmt.Fprintf(e.stderr, "weir run: %v\n\n", err)
		runUsage(e.stderr, fs)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(e.stderr, "weir run: unexpected argument %q (name the file with -c)\n\n", fs.Arg(0))
		runUsage(e.stderr, fs)
		return 2
	}
	opts := daemonOptions{
		path:       *path,
		pidFile:    *pidFile,
		statusFile: statusPathFor(*pidFile, *statusFile),
		stderr:     e.stderr,
		notify:     newNotifier(e.getenv("NOTIFY_SOCKET")),
		noCapCheck: *noCapCheck,
	}
	cfg, ok := loadForRun(e.stderr, *path)
	if !ok {
		return 1
	}
	if !*noCapCheck {
		if err := checkCapabilities(); err != nil {
			fmt.Fprintf(e.stderr, "weir run: %v\n", err)
			return 1
		}
	}
	d, err := startDaemon(cfg, opts)
	if err != nil {
		fmt.Fprintf(e.stderr, "weir run: %v\n", err)
		return 1
	}
	if err := d.serve(ctx, hup); err != nil {
		fmt.Fprintf(e.stderr, "weir run: %v\n", err)
		return 1
	}
	return 0
}

// loadForRun loads and validates the configuration, printing every problem.
func loadForRun(stderr io.Writer, path string) (*appliance.Config, bool) {
	cfg, err := appliance.LoadConfig(path)
	if err == nil {
		return cfg, true
	}
	if ce, ok := errors.AsType[*appliance.ConfigError](err); ok {
		for _, p := range ce.Problems {
			fmt.Fprintln(stderr, p)
		}
		fmt.Fprintf(stderr, "weir run: %s: %d problem(s); not starting\n", path, len(ce.Problems))
		return nil, false
	}
	fmt.Fprintf(stderr, "weir run: %v\n", err)
	return nil, false
}

// daemonOptions are what `weir run` passes its core; tests fill in the
// hooks to drive it in-process.
type daemonOptions struct {
	path                string
	pidFile, statusFile string
	stderr              io.Writer // log output
	notify              *notifier // systemd notification socket; nil outside systemd
	noCapCheck          bool      // leave capability and memlock checks to the kernel
	// enter runs fn in the network namespace the appliance serves; nil
	// runs it on the calling goroutine (the process's namespace).
	enter func(fn func() error) error
	// dial, if set, opens the appliance's health-check connections (from
	// the served namespace when enter switches namespaces).
	dial appliance.DialFunc
	// onReload, if set, is called with the result of every reload after it
	// was logged and written to the status file.
	onReload func(appliance.ReloadResult)
}

// daemon is the core of `weir run`: a started appliance, its reloader, its
// logger and the files that tell other processes about it. startDaemon makes
// one, serve runs it until its context ends and then stops it.
type daemon struct {
	opts     daemonOptions
	log      *slog.Logger
	level    *slog.LevelVar
	app      *appliance.Appliance
	reloader *appliance.Reloader
	status   *statusWriter
	metrics  func() error // stops the metrics endpoint; nil if none
}

// startDaemon starts the appliance described by cfg, which LoadConfig
// validated, and writes the pid and status files. On error nothing is left
// running.
func startDaemon(cfg *appliance.Config, opts daemonOptions) (_ *daemon, err error) {
	d := &daemon{opts: opts, level: new(slog.LevelVar)}
	d.level.Set(cfg.Log.Level)
	hopts := &slog.HandlerOptions{Level: d.level}
	if cfg.Log.Format == appliance.LogJSON {
		d.log = slog.New(slog.NewJSONHandler(opts.stderr, hopts))
	} else {
		d.log = slog.New(slog.NewTextHandler(opts.stderr, hopts))
	}
	enter := opts.enter
	if enter == nil {
		enter = func(fn func() error) error { return fn() }
	}
	d.log.Info("starting", "config", cfg.Path, "interface", cfg.Appliance.Interface, "vips", len(cfg.VIPs), "backends", cfg.Backends())
	if err := enter(func() error { return d.startAppliance(cfg) }); err != nil {
		return nil, explainStartError(err)
	}
	defer func() {
		if err != nil {
			d.stopAppliance()
		}
	}()
	d.reloader = appliance.NewReloader(d.app, cfg, d.log)
	if err := enter(d.startMetrics); err != nil {
		return nil, fmt.Errorf("%w (set [metrics] listen to a free address, or to \"\" to serve no endpoint)", err)
	}
	if opts.statusFile != "" {
		if d.status, err = newStatusWriter(opts.statusFile, cfg.Path); err != nil {
			return nil, err
		}
		if err := d.status.write(d.app.Snapshot().Generation, d.reloader); err != nil {
			return nil, err
		}
	}
	if opts.pidFile != "" {
		if err := writePIDFile(opts.pidFile); err != nil {
			d.status.remove()
			return nil, err
		}
	}
	_, _, mac := d.app.Interface()
	gen := d.app.Snapshot().Generation
	d.log.Info("running", "generation", gen, "mac", mac.String(), "pid", os.Getpid())
	opts.notify.send(fmt.Sprintf("READY=1\nSTATUS=forwarding, generation %d\nMAINPID=%d", gen, os.Getpid()))
	return d, nil
}

// startAppliance runs in the served network namespace: it checks the
// interface against the configuration with messages that say what to
// change, then starts the appliance.
func (d *daemon) startAppliance(cfg *appliance.Config) error {
	name := cfg.Appliance.Interface
	ifc, err := net.InterfaceByName(name)
	if err != nil {
		return fmt.Errorf("interface %s not found in this network namespace: set [appliance] interface in %s to one of %s", name, cfg.Path, interfaceNames())
	}
	if ifc.Flags&net.FlagUp == 0 {
		return fmt.Errorf("interface %s is down: bring it up (ip link set dev %s up) before starting weir", name, name)
	}
	if !d.opts.noCapCheck {
		if err := checkMemlock(); err != nil {
			return err
		}
	}
	opts := cfg.Options()
	opts.Logger = d.log
	if d.opts.dial != nil {
		opts.Dial = d.opts.dial
	}
	// The CPUs follow this process's affinity mask (CPUAffinity= in the
	// unit, taskset), which Options alone does not know.
	if rx, err := ring.RXQueues(name); err == nil {
		cpus, err := cfg.QueueCPUs(rx)
		if err != nil {
			return fmt.Errorf("%s: %w", cfg.Path, err)
		}
		opts.Queues, opts.CPUs = len(cpus), cpus
	}
	d.app, err = appliance.Start(opts, cfg.Model())
	return err
}

func interfaceNames() string {
	ifs, err := net.Interfaces()
	if err != nil || len(ifs) == 0 {
		return "the interfaces 'ip link' lists"
	}
	var names []string
	for _, i := range ifs {
		if i.Flags&net.FlagLoopback == 0 {
			names = append(names, i.Name)
		}
	}
	return strings.Join(names, ", ")
}

// explainStartError adds what to change to errors whose cause is a missing
// privilege: the kernel says only "operation not permitted".
func explainStartError(err error) error {
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		if missing := missingCapabilities(); len(missing) > 0 {
			return fmt.Errorf("start appliance: %w\n%s", err, capabilityAdvice(missing))
		}
	}
	return fmt.Errorf("start appliance: %w", err)
}

// serve handles reload signals until ctx ends, then stops the appliance.
// It returns an error if stopping found a problem (a worker failure or
// frames unaccounted for).
func (d *daemon) serve(ctx context.Context, reload <-chan os.Signal) error {
	for {
		select {
		case <-ctx.Done():
			return d.stop()
		case <-reload:
			d.reload()
		}
	}
}

// reload re-reads the configuration file and applies it, and reports the
// outcome everywhere it is looked for.
func (d *daemon) reload() appliance.ReloadResult {
	d.opts.notify.send("STATUS=reloading " + d.opts.path)
	d.log.Info("reload requested", "file", d.opts.path)
	res := d.reloader.Reload()
	if res.Outcome.OK() && res.Config.Log.Level != d.level.Level() {
		d.log.Info("log level changed", "from", d.level.Level().String(), "to", res.Config.Log.Level.String())
		d.level.Set(res.Config.Log.Level)
	}
	if d.status != nil {
		if err := d.status.write(res.Generation, d.reloader); err != nil {
			d.log.Error("write status file", "err", err)
		}
	}
	d.opts.notify.send(fmt.Sprintf("STATUS=forwarding, generation %d; last reload %s", res.Generation, res.Outcome))
	if d.opts.onReload != nil {
		d.opts.onReload(res)
	}
	return res
}

// stop stops the appliance, logs its final counters and removes the pid
// and status files.
func (d *daemon) stop() error {
	d.opts.notify.send("STOPPING=1")
	d.log.Info("stopping")
	err := d.stopAppliance()
	if d.opts.pidFile != "" {
		removePIDFile(d.opts.pidFile)
	}
	d.status.remove()
	if err != nil {
		d.log.Error("stopped with errors", "err", err)
		return err
	}
	d.log.Info("stopped cleanly")
	return nil
}

func (d *daemon) stopAppliance() error {
	var errs []error
	if d.metrics != nil {
		errs = append(errs, d.metrics())
		d.metrics = nil
	}
	if d.app == nil {
		return errors.Join(errs...)
	}
	start := time.Now()
	st, err := d.app.Stop()
	d.app = nil
	errs = append(errs, err)
	t := &st.Total
	var drops []any
	for _, r := range appliance.DropReasons() {
		if n := t.Drops[r]; n > 0 {
			drops = append(drops, slog.Uint64(r.String(), n))
		}
	}
	d.log.Info("final counters",
		"received", t.RXPackets, "forwarded", t.TXPackets, "forwarded_bytes", t.TXBytes,
		"new_flows", t.NewFlows, "flow_hits", t.FlowHits, "flows_moved", t.FlowsMoved,
		"dropped", t.Dropped(), slog.Group("drops", drops...),
		"xdp_redirected", st.XDP.Redirected, "xdp_passed", st.XDP.Passed,
		"xdp_dropped_no_socket", st.XDP.DroppedNoSocket,
		slog.Group("frames", "total", st.Frames.Total, "free", st.Frames.Free, "in_hand", st.Frames.InHand,
			"kernel_rx", st.Frames.KernelRX, "kernel_tx", st.Frames.KernelTX),
		"stop_took", time.Since(start).Round(time.Millisecond).String())
	return errors.Join(errs...)
}
