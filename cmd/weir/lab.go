package main

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"text/template"
	"time"

	"github.com/weirlb/weir/appliance"
	"github.com/weirlb/weir/firmware"
	"github.com/weirlb/weir/lab"
)

func init() {
	commands["lab"] = command{summary: "build a namespace lab, send real HTTP through weir, print a report", run: runLab}
}

//go:embed lab.toml.tmpl
var labConfigTemplate string

// Lab defaults: the embedded default is DSR, one TCP VIP and three
// backends weighted 1/1/2.
var labWeights = []uint32{1, 1, 2}

const (
	labFirstPort = 20000           // client source ports are labFirstPort, labFirstPort+1, ...
	labFabricMTU = 1600            // routed labs: room for the outer headers of a full-size packet
	labTimeout   = 5 * time.Second // per request
	labGUEPort   = appliance.DefaultGUEPort
	labSettle    = 300 * time.Millisecond // after the last request, before stopping the appliance
)

type labFlags struct {
	mode        string
	family      int
	requests    int
	concurrency int
	json        bool
	printConfig bool
	verbose     bool
}

// labReport is what `weir lab` prints; --json prints it as one object.
type labReport struct {
	Mode        string            `json:"mode"`
	Family      int               `json:"family"`
	VIP         string            `json:"vip"`
	Requests    int               `json:"requests"`
	Succeeded   int               `json:"succeeded"`
	Failed      int               `json:"failed"`
	Errors      []string          `json:"errors,omitempty"` // the first few failures
	ResetsSent  uint64            `json:"resets_sent"`      // TCP RSTs sent by the appliance namespace's own stack
	AFXDPMode   string            `json:"afxdp_mode"`
	XDPMode     string            `json:"xdp_mode"`
	Queues      int               `json:"queues"`
	PerBackend  map[string]int    `json:"per_backend"`
	Weights     map[string]uint32 `json:"weights"`
	Counters    labCounters       `json:"counters"`
	DurationSec float64           `json:"duration_seconds"`
	Pass        bool              `json:"pass"`
}

type labCounters struct {
	Received           uint64            `json:"received"`
	Forwarded          uint64            `json:"forwarded"`
	Dropped            map[string]uint64 `json:"dropped"`
	NewFlows           uint64            `json:"new_flows"`
	FlowHits           uint64            `json:"flow_hits"`
	PerQueueReceived   []uint64          `json:"per_queue_received"`
	XDPRedirected      uint64            `json:"xdp_redirected"`
	XDPPassed          uint64            `json:"xdp_passed"`
	XDPDroppedNoSocket uint64            `json:"xdp_dropped_no_socket"`
	Decapsulated       uint64            `json:"backend_decapsulated,omitempty"`
}

func runLab(ctx context.Context, e *env, args []string) int {
	fs := flag.NewFlagSet("weir lab", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	var f labFlags
	fs.StringVar(&f.mode, "mode", "dsr", "forwarding mode: dsr (backends on the appliance's L2 segment), ipip or gue (backends behind a router)")
	fs.IntVar(&f.family, "family", 4, "address family of the VIP and backends: 4 or 6")
	fs.IntVar(&f.requests, "n", 300, "HTTP requests to send, each on a fresh TCP connection from its own source port")
	fs.IntVar(&f.concurrency, "c", 4, "requests in flight at once")
	fs.BoolVar(&f.json, "json", false, "print the report as one JSON object")
	fs.BoolVar(&f.printConfig, "print-config", false, "print the appliance configuration the lab runs with, and exit")
	fs.BoolVar(&f.verbose, "v", false, "log the appliance's info messages to stderr")
	fs.Usage = func() {
		fmt.Fprintln(e.stderr, "usage: weir lab [flags]")
		fmt.Fprintln(e.stderr, "\nBuilds network namespaces (client, appliance, backends; a router for ipip/gue), runs weir on")
		fmt.Fprintln(e.stderr, "the appliance's interface, sends HTTP requests to the VIP and reports what happened. Needs root.")
		fmt.Fprintln(e.stderr, "Exit status 0 only if every request succeeded and the appliance's stack sent no TCP reset.\n\nflags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(e.stderr, "weir lab: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if err := f.validate(); err != nil {
		fmt.Fprintf(e.stderr, "weir lab: %v\n", err)
		return 2
	}
	if f.printConfig {
		cfg, err := renderLabConfig(f, exampleLabTopology(f))
		if err != nil {
			fmt.Fprintf(e.stderr, "weir lab: %v\n", err)
			return 1
		}
		e.stdout.Write(cfg)
		return 0
	}
	level := slog.LevelWarn
	if f.verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: level}))
	rep, err := runLabOnce(ctx, f, log)
	if err != nil {
		fmt.Fprintf(e.stderr, "weir lab: %v\n", err)
		return 1
	}
	if f.json {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		enc.Encode(rep)
	} else {
		printLabReport(e.stdout, rep)
	}
	if !rep.Pass {
		return 1
	}
	return 0
}

func (f labFlags) validate() error {
	if _, err := appliance.ParseMode(f.mode); err != nil {
		return err
	}
	if f.family != 4 && f.family != 6 {
		return fmt.Errorf("-family %d: want 4 or 6", f.family)
	}
	if f.requests < 1 || f.requests > 40000 {
		return fmt.Errorf("-n %d: want 1..40000 (one source port each)", f.requests)
	}
	if f.concurrency < 1 || f.concurrency > 256 {
		return fmt.Errorf("-c %d: want 1..256", f.concurrency)
	}
	return nil
}

// labTopology is what the config template and the report need of a lab,
// whichever kind it is.
type labTopology struct {
	Interface      string
	Local4, Local6 netip.Addr
	VIP            netip.Addr
	Port           uint16
	Mode           string
	MTU            int
	GUEPort        uint16
	Backends       []labBackend
}

type labBackend struct {
	Name   string
	Addr   netip.Addr
	Weight uint32
}

func exampleLabTopology(f labFlags) labTopology {
	t := labTopology{Interface: "eth0", Port: 80, Mode: f.mode, MTU: labFabricMTU, GUEPort: labGUEPort}
	t.VIP = lab.DefaultVIP4
	if f.family == 6 {
		t.VIP = lab.DefaultVIP6
	}
	for i, w := range labWeights {
		n := i + 1
		var a netip.Addr
		switch {
		case f.mode == "dsr" && f.family == 4:
			a = netip.AddrFrom4([4]byte{10, 90, 0, byte(10 + n)})
		case f.mode == "dsr":
			a = netip.MustParseAddr(fmt.Sprintf("fd00:90::%d", 10+n))
		case f.family == 4:
			a = netip.AddrFrom4([4]byte{10, 92, byte(n), 2})
		default:
			a = netip.MustParseAddr(fmt.Sprintf("fd00:92:%d::2", n))
		}
		t.Backends = append(t.Backends, labBackend{Name: fmt.Sprintf("backend-%d", n), Addr: a, Weight: w})
	}
	if f.mode != "dsr" {
		t.Local4 = netip.MustParseAddr("10.91.0.2")
		t.Local6 = netip.MustParseAddr("fd00:91::2")
	}
	return t
}

func renderLabConfig(f labFlags, t labTopology) ([]byte, error) {
	tmpl, err := template.New("lab.toml").Parse(labConfigTemplate)
	if err != nil {
		return nil, fmt.Errorf("lab config template: %w", err)
	}
	var b bytes.Buffer
	if err := tmpl.Execute(&b, t); err != nil {
		return nil, fmt.Errorf("lab config template: %w", err)
	}
	return b.Bytes(), nil
}

// labRun is one lab's namespaces, whichever kind.
type labRun struct {
	client    *lab.NS
	appliance *lab.Host
	backends  []*lab.Backend
	vip       netip.Addr
	port      uint16
	close     func() error
	startHTTP func() error
}

func buildLab(f labFlags) (*labRun, error) {
	vips := []netip.Addr{lab.DefaultVIP4, lab.DefaultVIP6}
	if f.mode == "dsr" {
		d, err := lab.NewDSR(lab.DSRConfig{Prefix: "weirlab", Backends: len(labWeights), Queues: 2, VIPs: vips})
		if err != nil {
			return nil, err
		}
		return &labRun{client: d.Client.NS, appliance: d.Appliance, backends: d.Backends, vip: d.VIPs[f.family/6], port: d.Port, close: d.Close, startHTTP: d.StartHTTP}, nil
	}
	r, err := lab.NewRouted(lab.RoutedConfig{Prefix: "weirlab", Backends: len(labWeights), Queues: 2, VIPs: vips, FabricMTU: labFabricMTU})
	if err != nil {
		return nil, err
	}
	return &labRun{client: r.Client.NS, appliance: r.Appliance, backends: r.Backends, vip: r.VIPs[f.family/6], port: r.Port, close: r.Close, startHTTP: r.StartHTTP}, nil
}

func runLabOnce(ctx context.Context, f labFlags, log *slog.Logger) (rep *labReport, err error) {
	start := time.Now()
	l, err := buildLab(f)
	if err != nil {
		return nil, fmt.Errorf("build lab: %w", err)
	}
	defer func() {
		if cerr := l.close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("remove lab: %w", cerr))
		}
	}()
	if err := l.startHTTP(); err != nil {
		return nil, fmt.Errorf("start backends: %w", err)
	}

	topo := labTopology{Interface: l.appliance.NIC.Name, VIP: l.vip, Port: l.port, Mode: f.mode, MTU: labFabricMTU, GUEPort: labGUEPort}
	if f.mode != "dsr" {
		topo.Local4, topo.Local6 = l.appliance.Addr4, l.appliance.Addr6
	}
	weights := map[string]uint32{}
	for i, b := range l.backends {
		w := labWeights[i%len(labWeights)]
		topo.Backends = append(topo.Backends, labBackend{Name: b.Name, Addr: b.Addr(l.vip), Weight: w})
		weights[b.Name] = w
	}
	text, err := renderLabConfig(f, topo)
	if err != nil {
		return nil, err
	}
	cfg, err := appliance.ParseConfig("lab.toml", text)
	if err != nil {
		return nil, err
	}

	// Backends of encapsulating modes take the outer headers off with the
	// project's decap program (these kernels have no ipip or fou module).
	var decaps []*firmware.Decap
	defer func() {
		for _, d := range decaps {
			d.Close()
		}
	}()
	if f.mode != "dsr" {
		for _, b := range l.backends {
			err := b.NS.Do(func() error {
				d, err := firmware.LoadDecap(firmware.DecapConfig{VIPs: []netip.Addr{l.vip}, GUEPort: labGUEPort})
				if err != nil {
					return err
				}
				decaps = append(decaps, d)
				_, err = d.Attach(b.NIC.Index, firmware.AttachAuto)
				return err
			})
			if err != nil {
				return nil, fmt.Errorf("decap program on %s: %w", b.Name, err)
			}
		}
	}

	opts := cfg.Options()
	opts.Logger = log
	var app *appliance.Appliance
	if err := l.appliance.NS.Do(func() error {
		var err error
		app, err = appliance.Start(opts, cfg.Model())
		return err
	}); err != nil {
		return nil, fmt.Errorf("start appliance: %w", err)
	}
	stopped := false
	defer func() {
		if !stopped {
			app.Stop()
		}
	}()

	rep = &labReport{
		Mode: f.mode, Family: f.family, VIP: netip.AddrPortFrom(l.vip, l.port).String(),
		Requests: f.requests, PerBackend: map[string]int{}, Weights: weights,
		AFXDPMode: app.AFXDPMode().String(), XDPMode: app.XDPMode().String(),
	}
	sendLabRequests(ctx, l, f, rep)
	// Let the last FINs and ACKs through before the counters are read.
	time.Sleep(labSettle)

	stopped = true
	st, stopErr := app.Stop()
	if stopErr != nil {
		return nil, fmt.Errorf("stop appliance: %w", stopErr)
	}
	rep.Queues = len(st.Workers)
	c := &rep.Counters
	c.Received, c.Forwarded = st.Total.RXPackets, st.Total.TXPackets
	c.NewFlows, c.FlowHits = st.Total.NewFlows, st.Total.FlowHits
	c.Dropped = map[string]uint64{}
	for _, r := range appliance.DropReasons() {
		if n := st.Total.Drops[r]; n > 0 {
			c.Dropped[r.String()] = n
		}
	}
	for _, w := range st.Workers {
		c.PerQueueReceived = append(c.PerQueueReceived, w.Counters.RXPackets)
	}
	c.XDPRedirected, c.XDPPassed, c.XDPDroppedNoSocket = st.XDP.Redirected, st.XDP.Passed, st.XDP.DroppedNoSocket
	for _, d := range decaps {
		if dc, err := d.Counters(); err == nil {
			c.Decapsulated += dc.Decapsulated()
		}
	}
	snmp, err := l.appliance.NS.SNMP()
	if err != nil {
		return nil, fmt.Errorf("read the appliance's TCP counters: %w", err)
	}
	rep.ResetsSent = snmp.TCP.OutRsts
	rep.Pass = rep.Succeeded == rep.Requests && rep.ResetsSent == 0
	rep.DurationSec = time.Since(start).Seconds()
	return rep, ctx.Err()
}

// sendLabRequests sends f.requests GETs to the VIP, each on a fresh
// connection from its own source port, and records which backend answered.
func sendLabRequests(ctx context.Context, l *labRun, f labFlags, rep *labReport) {
	var mu sync.Mutex
	next := 0
	var wg sync.WaitGroup
	for w := 0; w < f.concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= f.requests || ctx.Err() != nil {
					return
				}
				name, err := labGet(ctx, l, uint16(labFirstPort+i))
				mu.Lock()
				if err != nil {
					rep.Failed++
					if len(rep.Errors) < 5 {
						rep.Errors = append(rep.Errors, fmt.Sprintf("source port %d: %v", labFirstPort+i, err))
					}
				} else {
					rep.Succeeded++
					rep.PerBackend[name]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
}

// labGet makes one HTTP request from the client namespace, from source port
// sport, and returns the name of the backend that answered.
func labGet(ctx context.Context, l *labRun, sport uint16) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, labTimeout)
	defer cancel()
	var conn net.Conn
	err := l.client.Do(func() error {
		var local net.Addr = &net.TCPAddr{Port: int(sport)}
		d := net.Dialer{LocalAddr: local}
		var err error
		conn, err = d.DialContext(ctx, "tcp", netip.AddrPortFrom(l.vip, l.port).String())
		return err
	})
	if err != nil {
		return "", err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	host := netip.AddrPortFrom(l.vip, l.port).String()
	if _, err := fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", host); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %s", resp.Status)
	}
	return strings.TrimSpace(string(body)), nil
}

func printLabReport(w io.Writer, r *labReport) {
	fam := "IPv4"
	if r.Family == 6 {
		fam = "IPv6"
	}
	fmt.Fprintf(w, "weir lab: %s, %s, VIP %s, %d backends; XDP %s, AF_XDP %s, %d queues\n",
		r.Mode, fam, r.VIP, len(r.Weights), r.XDPMode, r.AFXDPMode, r.Queues)
	fmt.Fprintf(w, "requests: %d sent, %d succeeded, %d failed (fresh TCP connection each, source ports %d-%d)\n",
		r.Requests, r.Succeeded, r.Failed, labFirstPort, labFirstPort+r.Requests-1)
	for _, e := range r.Errors {
		fmt.Fprintf(w, "  error: %s\n", e)
	}
	var names []string
	var wsum uint32
	for n, wt := range r.Weights {
		names = append(names, n)
		wsum += wt
	}
	sort.Strings(names)
	fmt.Fprintf(w, "\n  %-12s %6s %8s %9s %8s\n", "backend", "weight", "share", "requests", "share")
	for _, n := range names {
		got := 0.0
		if r.Succeeded > 0 {
			got = 100 * float64(r.PerBackend[n]) / float64(r.Succeeded)
		}
		fmt.Fprintf(w, "  %-12s %6d %7.1f%% %9d %7.1f%%\n", n, r.Weights[n], 100*float64(r.Weights[n])/float64(wsum), r.PerBackend[n], got)
	}
	c := &r.Counters
	fmt.Fprintf(w, "\nappliance: received %d, forwarded %d, new flows %d, flow-table hits %d, received per queue %v\n",
		c.Received, c.Forwarded, c.NewFlows, c.FlowHits, c.PerQueueReceived)
	if len(c.Dropped) == 0 {
		fmt.Fprintln(w, "dropped:   none")
	} else {
		var rs []string
		for k, v := range c.Dropped {
			rs = append(rs, fmt.Sprintf("%s %d", k, v))
		}
		sort.Strings(rs)
		fmt.Fprintf(w, "dropped:   %s\n", strings.Join(rs, ", "))
	}
	fmt.Fprintf(w, "xdp:       redirected %d, passed to the host stack %d, dropped for want of a socket %d\n",
		c.XDPRedirected, c.XDPPassed, c.XDPDroppedNoSocket)
	if r.Mode != "dsr" {
		fmt.Fprintf(w, "backends:  decapsulated %d packets\n", c.Decapsulated)
	}
	fmt.Fprintf(w, "tcp resets sent by the appliance's own stack: %d\n", r.ResetsSent)
	verdict := "PASS"
	if !r.Pass {
		verdict = "FAIL"
	}
	fmt.Fprintf(w, "\n%s in %.1fs\n", verdict, r.DurationSec)
}
