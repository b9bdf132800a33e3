package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/weirlb/weir/appliance"
)

func init() {
	commands["stats"] = command{summary: "show per-VIP and per-backend rates of a running appliance", run: runStats}
}

func statsUsage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintln(w, "usage: weir stats [-addr HOST:PORT] [-interval D] [-json]")
	fmt.Fprintln(w, "\nRead the metrics endpoint of a running appliance twice, -interval apart, and")
	fmt.Fprintln(w, "print every VIP and backend with its packet and byte rates and totals, its")
	fmt.Fprintln(w, "state and health, then the appliance's totals and its non-zero drop reasons.")
	fmt.Fprintln(w, "A rate is '-' for a series that appeared between the two reads.")
	fmt.Fprintln(w, "\nflags:")
	fs.SetOutput(w)
	fs.PrintDefaults()
}

// Limits of weir stats.
const (
	statsMaxInterval = time.Minute
	statsTimeout     = 5 * time.Second // per scrape
	statsMaxBody     = 64 << 20        // a scrape larger than this is not weir's
)

func runStats(ctx context.Context, e *env, args []string) int {
	fs := flag.NewFlagSet("stats", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	addr := fs.String("addr", appliance.DefaultMetricsListen, "`HOST:PORT` of the appliance's metrics endpoint ([metrics] listen), or its URL")
	interval := fs.Duration("interval", time.Second, "time between the two reads the rates are computed over")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			statsUsage(e.stdout, fs)
			return 0
		}
		fmt.Fprintf(e.stderr, "weir stats: %v\n\n", err)
		statsUsage(e.stderr, fs)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(e.stderr, "weir stats: unexpected argument %q\n\n", fs.Arg(0))
		statsUsage(e.stderr, fs)
		return 2
	}
	if *interval <= 0 || *interval > statsMaxInterval {
		fmt.Fprintf(e.stderr, "weir stats: -interval %s out of range: give a duration above 0 and up to %s\n", *interval, statsMaxInterval)
		return 2
	}
	url := metricsURL(*addr)
	client := &http.Client{Timeout: statsTimeout}
	first, err := scrape(ctx, client, url)
	if err != nil {
		fmt.Fprintf(e.stderr, "weir stats: %v\n", err)
		return 1
	}
	select {
	case <-ctx.Done():
		fmt.Fprintf(e.stderr, "weir stats: %v\n", ctx.Err())
		return 1
	case <-time.After(*interval):
	}
	second, err := scrape(ctx, client, url)
	if err != nil {
		fmt.Fprintf(e.stderr, "weir stats: %v\n", err)
		return 1
	}
	rep := buildStatsReport(url, first, second)
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			fmt.Fprintf(e.stderr, "weir stats: %v\n", err)
			return 1
		}
		return 0
	}
	rep.print(e.stdout)
	return 0
}

// statsClock times the reads (tests replace it to fix the interval).
var statsClock = time.Now

// metricsURL turns -addr into the endpoint's URL.
func metricsURL(addr string) string {
	if strings.Contains(addr, "://") {
		return addr
	}
	return "http://" + addr + "/metrics"
}

// sample is one read of the endpoint: every series, keyed by name and
// labels (seriesKey), with the time the answer arrived.
type sample struct {
	at     time.Time
	series map[string]float64
	fams   map[string]*dto.MetricFamily
}

// scrape reads and parses the endpoint.
func scrape(ctx context.Context, c *http.Client, url string) (*sample, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("metrics endpoint %s: %w", url, err)
	}
	// The text format is the one every Prometheus client library serves.
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("read metrics: %w (is weir running, with [metrics] listen at this address?)", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("read metrics: %s answered %s", url, resp.Status)
	}
	at := statsClock()
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(io.LimitReader(resp.Body, statsMaxBody))
	if err != nil {
		return nil, fmt.Errorf("read metrics: %s: %w", url, err)
	}
	if _, ok := fams["weir_afxdp_info"]; !ok {
		return nil, fmt.Errorf("read metrics: %s is not a weir appliance's endpoint (no weir_afxdp_info)", url)
	}
	s := &sample{at: at, series: make(map[string]float64), fams: fams}
	for name, mf := range fams {
		for _, m := range mf.GetMetric() {
			s.series[seriesKey(name, labelsOf(m))] = metricValue(m)
		}
	}
	return s, nil
}

func labelsOf(m *dto.Metric) map[string]string {
	out := make(map[string]string, len(m.GetLabel()))
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

func metricValue(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Untyped != nil:
		return m.GetUntyped().GetValue()
	}
	return math.NaN()
}

// seriesKey names one series: the metric name and its labels, sorted.
func seriesKey(name string, labels map[string]string) string {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString(name)
	for _, k := range keys {
		fmt.Fprintf(&b, "\x00%s=%s", k, labels[k])
	}
	return b.String()
}

// each calls fn for every series of a metric.
func (s *sample) each(name string, fn func(labels map[string]string, v float64)) {
	mf := s.fams[name]
	if mf == nil {
		return
	}
	for _, m := range mf.GetMetric() {
		fn(labelsOf(m), metricValue(m))
	}
}

// sum adds every series of a metric whose labels include match.
func (s *sample) sum(name string, match map[string]string) float64 {
	var total float64
	s.each(name, func(l map[string]string, v float64) {
		for k, want := range match {
			if l[k] != want {
				return
			}
		}
		total += v
	})
	return total
}

// counter is a counter's value at the second read and its rate between
// the two; Rate is nil when the first read did not have the series.
type counter struct {
	Total float64  `json:"total"`
	Rate  *float64 `json:"per_second"`
}

// rateOf computes a counter over the two reads, summed over the series of
// name whose labels include match. A series that went down was reset (an
// appliance restart): its rate counts from zero, as Prometheus does. The
// rate is unknown (nil) when a series is new or none matches.
func rateOf(a, b *sample, name string, match map[string]string) counter {
	dt := b.at.Sub(a.at).Seconds()
	var c counter
	var rate float64
	known, found := true, false
	b.each(name, func(l map[string]string, v float64) {
		for k, want := range match {
			if l[k] != want {
				return
			}
		}
		found = true
		c.Total += v
		before, ok := a.series[seriesKey(name, l)]
		switch {
		case !ok:
			known = false
		case v >= before:
			rate += v - before
		default:
			rate += v
		}
	})
	if known && found && dt > 0 {
		r := rate / dt
		c.Rate = &r
	}
	return c
}

// statsReport is what weir stats prints.
type statsReport struct {
	Endpoint   string        `json:"endpoint"`
	Interval   float64       `json:"interval_seconds"` // between the two reads, as measured
	Interface  string        `json:"interface"`
	AFXDPMode  string        `json:"afxdp_mode"`
	XDPMode    string        `json:"xdp_mode"`
	Generation uint64        `json:"snapshot_generation"`
	Uptime     float64       `json:"uptime_seconds,omitempty"`
	VIPs       []vipStats    `json:"vips"`
	Totals     totalStats    `json:"totals"`
	Drops      []dropStats   `json:"drops"`
	XDP        []dropStats   `json:"xdp"`
	Reloads    []reloadCount `json:"reloads,omitempty"`
	ReloadOK   *bool         `json:"last_reload_ok,omitempty"`
}

type vipStats struct {
	VIP      string         `json:"vip"`
	Name     string         `json:"name"`
	Mode     string         `json:"mode"`
	Packets  counter        `json:"packets"`
	Bytes    counter        `json:"bytes"`
	Backends []backendStats `json:"backends"`
}

type backendStats struct {
	Backend string  `json:"backend"`
	Name    string  `json:"name"`
	State   string  `json:"state"`
	Weight  float64 `json:"weight"`
	Health  string  `json:"health,omitempty"` // empty when not checked
	// Resolved is false while the next hop has no MAC (no traffic).
	Resolved bool    `json:"next_hop_resolved"`
	Packets  counter `json:"packets"`
	Bytes    counter `json:"bytes"`
}

type totalStats struct {
	RXPackets      counter `json:"rx_packets"`
	RXBytes        counter `json:"rx_bytes"`
	Forwarded      counter `json:"forwarded_packets"`
	ForwardedBytes counter `json:"forwarded_bytes"`
	NewFlows       counter `json:"new_flows"`
	Dropped        counter `json:"dropped_packets"`
	FlowEntries    float64 `json:"flow_table_entries"`
	FlowCapacity   float64 `json:"flow_table_capacity"`
	Queues         int     `json:"queues"`
}

type dropStats struct {
	Reason string `json:"reason"`
	counter
}

type reloadCount struct {
	Outcome string  `json:"outcome"`
	Count   float64 `json:"count"`
}

func buildStatsReport(url string, a, b *sample) *statsReport {
	r := &statsReport{Endpoint: url, Interval: b.at.Sub(a.at).Seconds()}
	b.each("weir_afxdp_info", func(l map[string]string, _ float64) {
		r.Interface, r.AFXDPMode, r.XDPMode = l["interface"], l["afxdp_mode"], l["xdp_mode"]
	})
	r.Generation = uint64(b.sum("weir_snapshot_generation", nil))
	if start := b.sum("process_start_time_seconds", nil); start > 0 {
		r.Uptime = math.Max(0, float64(b.at.UnixNano())/1e9-start)
	}

	health := map[string]string{} // vip \x00 backend -> status
	b.each("weir_backend_health", func(l map[string]string, v float64) {
		if v == 1 {
			health[l["vip"]+"\x00"+l["backend"]] = l["status"]
		}
	})
	backends := map[string][]backendStats{}
	b.each("weir_backend_info", func(l map[string]string, _ float64) {
		vip, addr := l["vip"], l["backend"]
		id := map[string]string{"vip": vip, "backend": addr}
		bs := backendStats{
			Backend:  addr,
			Name:     l["name"],
			Weight:   b.sum("weir_backend_weight", id),
			Health:   health[vip+"\x00"+addr],
			Resolved: b.sum("weir_backend_next_hop_resolved", id) == 1,
			Packets:  rateOf(a, b, "weir_backend_packets_total", id),
			Bytes:    rateOf(a, b, "weir_backend_bytes_total", id),
		}
		b.each("weir_backend_state", func(sl map[string]string, v float64) {
			if v == 1 && sl["vip"] == vip && sl["backend"] == addr {
				bs.State = sl["state"]
			}
		})
		backends[vip] = append(backends[vip], bs)
	})
	b.each("weir_vip_info", func(l map[string]string, _ float64) {
		vip := l["vip"]
		vs := vipStats{VIP: vip, Name: l["name"], Mode: l["mode"], Backends: backends[vip]}
		if vs.Backends == nil {
			vs.Backends = []backendStats{}
		}
		slices.SortFunc(vs.Backends, func(x, y backendStats) int { return cmp.Compare(x.Backend, y.Backend) })
		id := map[string]string{"vip": vip}
		vs.Packets = rateOf(a, b, "weir_backend_packets_total", id)
		vs.Bytes = rateOf(a, b, "weir_backend_bytes_total", id)
		r.VIPs = append(r.VIPs, vs)
	})
	slices.SortFunc(r.VIPs, func(x, y vipStats) int { return cmp.Compare(x.VIP, y.VIP) })

	t := &r.Totals
	t.RXPackets = rateOf(a, b, "weir_rx_packets_total", nil)
	t.RXBytes = rateOf(a, b, "weir_rx_bytes_total", nil)
	t.Forwarded = rateOf(a, b, "weir_forwarded_packets_total", nil)
	t.ForwardedBytes = rateOf(a, b, "weir_forwarded_bytes_total", nil)
	t.NewFlows = rateOf(a, b, "weir_new_flows_total", nil)
	t.Dropped = rateOf(a, b, "weir_dropped_packets_total", nil)
	t.FlowEntries = b.sum("weir_flow_table_entries", nil)
	t.FlowCapacity = b.sum("weir_flow_table_capacity", nil)
	b.each("weir_rx_packets_total", func(map[string]string, float64) { t.Queues++ })

	r.Drops = nonZero(a, b, "weir_dropped_packets_total", "reason")
	r.XDP = nonZero(a, b, "weir_xdp_packets_total", "result")
	b.each("weir_config_reloads_total", func(l map[string]string, v float64) {
		r.Reloads = append(r.Reloads, reloadCount{Outcome: l["outcome"], Count: v})
	})
	slices.SortFunc(r.Reloads, func(x, y reloadCount) int { return cmp.Compare(x.Outcome, y.Outcome) })
	if mf := b.fams["weir_config_last_reload_successful"]; mf != nil {
		ok := b.sum("weir_config_last_reload_successful", nil) == 1
		r.ReloadOK = &ok
	}
	return r
}

// nonZero returns, for each value of label across a metric's series, the
// counter and its rate, leaving out those that are zero and did not move.
func nonZero(a, b *sample, name, label string) []dropStats {
	var out []dropStats
	b.each(name, func(l map[string]string, v float64) {
		c := rateOf(a, b, name, map[string]string{label: l[label]})
		if c.Total == 0 {
			return
		}
		out = append(out, dropStats{Reason: l[label], counter: c})
	})
	slices.SortFunc(out, func(x, y dropStats) int {
		return cmp.Or(cmp.Compare(y.Total, x.Total), cmp.Compare(x.Reason, y.Reason))
	})
	return out
}

// print writes the report as a table, in the spirit of ipvsadm -Ln --rate.
func (r *statsReport) print(w io.Writer) {
	fmt.Fprintf(w, "weir on %s (AF_XDP %s, XDP %s), snapshot generation %d", r.Interface, r.AFXDPMode, r.XDPMode, r.Generation)
	if r.Uptime > 0 {
		fmt.Fprintf(w, ", up %s", time.Duration(r.Uptime*float64(time.Second)).Round(time.Second))
	}
	fmt.Fprintf(w, "\nrates over %.2fs from %s\n\n", r.Interval, r.Endpoint)

	// First column: VIP lines, then backends indented under them.
	type row struct {
		name, state, weight, health string
		pkts, bytes                 counter
	}
	var rows []row
	for _, v := range r.VIPs {
		label := v.VIP + " " + v.Mode
		if v.Name != "" {
			label += " (" + v.Name + ")"
		}
		rows = append(rows, row{name: label, pkts: v.Packets, bytes: v.Bytes})
		for _, b := range v.Backends {
			name := "  -> " + b.Backend
			if b.Name != "" && b.Name != b.Backend {
				name += " (" + b.Name + ")"
			}
			state := b.State
			if !b.Resolved {
				state += ",no-mac"
			}
			rows = append(rows, row{name: name, state: state, weight: strconv.FormatFloat(b.Weight, 'f', -1, 64),
				health: cmp.Or(b.Health, "-"), pkts: b.Packets, bytes: b.Bytes})
		}
	}
	width := len("VIP / backend")
	for _, x := range rows {
		width = max(width, len(x.name))
	}
	const line = "%-*s  %-15s %6s %-7s %9s %9s %9s %9s\n"
	fmt.Fprintf(w, line, width, "VIP / backend", "state", "weight", "health", "pkts/s", "bytes/s", "packets", "bytes")
	for _, x := range rows {
		fmt.Fprintf(w, line, width, x.name, x.state, x.weight, x.health,
			rateString(x.pkts), rateString(x.bytes), si(x.pkts.Total), si(x.bytes.Total))
	}
	if len(rows) == 0 {
		fmt.Fprintln(w, "(no VIPs)")
	}

	t := &r.Totals
	fmt.Fprintf(w, "\ntotal (%d queues): rx %s pkts/s %s bytes/s, forwarded %s pkts/s %s bytes/s, new flows %s/s, dropped %s pkts/s\n",
		t.Queues, rateString(t.RXPackets), rateString(t.RXBytes), rateString(t.Forwarded), rateString(t.ForwardedBytes),
		rateString(t.NewFlows), rateString(t.Dropped))
	occupancy := 0.0
	if t.FlowCapacity > 0 {
		occupancy = 100 * t.FlowEntries / t.FlowCapacity
	}
	fmt.Fprintf(w, "since start: rx %s packets, forwarded %s, new flows %s, dropped %s; flow tables %s of %s (%.1f%%)\n",
		si(t.RXPackets.Total), si(t.Forwarded.Total), si(t.NewFlows.Total), si(t.Dropped.Total),
		si(t.FlowEntries), si(t.FlowCapacity), occupancy)
	printReasons(w, "drops", r.Drops)
	printReasons(w, "xdp", r.XDP)
	if len(r.Reloads) > 0 {
		fmt.Fprint(w, "reloads:")
		for _, c := range r.Reloads {
			fmt.Fprintf(w, " %s %s", c.Outcome, si(c.Count))
		}
		if r.ReloadOK != nil && !*r.ReloadOK {
			fmt.Fprint(w, "; the last one was refused")
		}
		fmt.Fprintln(w)
	}
}

func printReasons(w io.Writer, title string, list []dropStats) {
	if len(list) == 0 {
		fmt.Fprintf(w, "%s: none\n", title)
		return
	}
	fmt.Fprintf(w, "%s:", title)
	for i, d := range list {
		sep := ","
		if i == 0 {
			sep = ""
		}
		fmt.Fprintf(w, "%s %s %s (%s/s)", sep, d.Reason, si(d.Total), rateString(d.counter))
	}
	fmt.Fprintln(w)
}

func rateString(c counter) string {
	if c.Rate == nil {
		return "-"
	}
	return si(*c.Rate)
}

// si prints a number compactly: integers as they are up to 9999, then with
// a k, M, G or T suffix; fractions below 10 with one decimal.
func si(v float64) string {
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return "?"
	case v < 0:
		return "-" + si(-v)
	case v < 10 && v != math.Trunc(v):
		return strconv.FormatFloat(v, 'f', 1, 64)
	case v < 10000:
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	for _, u := range []string{"k", "M", "G", "T"} {
		v /= 1000
		if v < 999.95 || u == "T" {
			return strconv.FormatFloat(v, 'f', 1, 64) + u
		}
	}
	panic("unreachable")
}
