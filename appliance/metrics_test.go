package appliance

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/weirlb/weir/firmware"
	"github.com/weirlb/weir/flows"
	"github.com/weirlb/weir/packet"
	"github.com/weirlb/weir/ring"
)

// fixedSource is a metricsSource that returns one sample.
type fixedSource struct{ s metricsSample }

func (f fixedSource) metricsSample() metricsSample { return f.s }

// fixedReloads is a reloadSource with set counts.
type fixedReloads struct {
	counts ReloadCounts
	last   ReloadResult
}

func (f fixedReloads) Counts() ReloadCounts { return f.counts }
func (f fixedReloads) Last() ReloadResult   { return f.last }

// metricsTestSample is a sample with two VIPs, two queues and two checked
// backends, every number distinct so that a value read from the wrong
// field shows.
func metricsTestSample() metricsSample {
	web := VIP{VIPKey: VIPKey{Addr: netip.MustParseAddr("192.0.2.1"), Proto: packet.ProtoTCP, Port: 80}, Name: "web", Mode: ModeDSR,
		Backends: []Backend{
			{Addr: netip.MustParseAddr("10.0.0.1"), Name: "a", Weight: 2, State: StateActive, MAC: packet.MAC{2, 0, 0, 0, 0, 1}},
			{Addr: netip.MustParseAddr("10.0.0.2"), Weight: 0, State: StateDraining}, // unnamed, unresolved
		}}
	dns := VIP{VIPKey: VIPKey{Addr: netip.MustParseAddr("2001:db8::53"), Proto: packet.ProtoUDP}, Name: "dns", Mode: ModeGUE,
		Backends: []Backend{
			{Addr: netip.MustParseAddr("fd00::1"), Name: "d1", Weight: 1, State: StateFailed, MAC: packet.MAC{2, 0, 0, 0, 0, 2}},
		}}
	w0 := WorkerStats{Queue: 0, CPU: 1, TXRingFull: 3, Batches: 40, Sleeps: 21,
		Counters: Counters{RXPackets: 1000, RXBytes: 64000, TXPackets: 900, TXBytes: 61000, Replies: 7, NewFlows: 50,
			FlowHits: 850, FlowsMoved: 2, Fragments: 4, ICMPErrors: 5},
		Flows: flows.Stats{Entries: 45, Evictions: 6, Expired: 8, RateLimited: 9},
		Ring: ring.Stats{RXDropped: 11, RXInvalidDescs: 12, TXInvalidDescs: 13, RXRingFull: 14, RXFillRingEmptyDescs: 15,
			TXRingEmptyDescs: 16, Kicks: 17, KickRetryable: 18, RXWakeups: 19}}
	w0.Counters.Drops[DropNoBackend] = 90
	w0.Counters.Drops[DropTruncated] = 3
	w1 := WorkerStats{Queue: 1, CPU: -1, Batches: 2,
		Counters: Counters{RXPackets: 20, RXBytes: 1280, TXPackets: 19, TXBytes: 1216, NewFlows: 1},
		Flows:    flows.Stats{Entries: 1}}
	w1.Counters.Drops[DropNoBackend] = 1
	return metricsSample{
		iface: "eth1", afxdp: ring.ModeCopy, xdpMode: firmware.AttachNative,
		generation: 42,
		vips:       []VIP{web, dns},
		traffic:    [][]RealCounters{{{Packets: 600, Bytes: 40000, NewFlows: 31}, {Packets: 300, Bytes: 21000, NewFlows: 17}}, {{Packets: 19, Bytes: 1216, NewFlows: 3}}},
		workers:    []WorkerStats{w0, w1},
		capacity:   []int{1024, 2048},
		xdp:        firmware.RedirectCounters{Redirected: 1020, Passed: 77, DroppedNoSocket: 1, DroppedMalformed: 2, Malformed: 5, ICMPErrors: 6, Fragments: 8},
		health: []BackendHealth{
			{VIP: web.VIPKey, Addr: web.Backends[0].Addr, Status: HealthUp, Ups: 1, Probes: 30, ProbeFailures: 1, LastRTT: 1500 * time.Microsecond},
			{VIP: dns.VIPKey, Addr: dns.Backends[0].Addr, Status: HealthDown, Ups: 2, Downs: 3, Probes: 31, ProbeFailures: 12},
		},
	}
}

// gather collects m through a pedantic registry (which also checks that
// every metric is described and consistent) and returns each sample as
// `name{label="value",...}` (labels sorted by name) → value.
func gather(t *testing.T, c prometheus.Collector) (map[string]float64, []*dto.MetricFamily) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatalf("register: %v", err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	return flatten(mfs), mfs
}

func flatten(mfs []*dto.MetricFamily) map[string]float64 {
	out := make(map[string]float64)
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			sort.Strings(labels)
			key := mf.GetName()
			if len(labels) > 0 {
				key += "{" + strings.Join(labels, ",") + "}"
			}
			switch {
			case m.Counter != nil:
				out[key] = m.GetCounter().GetValue()
			case m.Gauge != nil:
				out[key] = m.GetGauge().GetValue()
			case m.Untyped != nil:
				out[key] = m.GetUntyped().GetValue()
			}
		}
	}
	return out
}

func TestMetricsValues(t *testing.T) {
	r := fixedReloads{last: ReloadResult{Seq: 4, Outcome: ReloadInvalid, Time: time.Unix(1700000000, 0)}}
	r.counts[ReloadApplied] = 2
	r.counts[ReloadInvalid] = 1
	r.counts[ReloadRestartRequired] = 1
	m := newMetrics(fixedSource{metricsTestSample()})
	m.reloads = r
	got, _ := gather(t, m)

	const (
		web = `vip="tcp/192.0.2.1:80"`
		dns = `vip="udp/[2001:db8::53]:*"`
	)
	want := map[string]float64{
		`weir_afxdp_info{afxdp_mode="copy",interface="eth1",xdp_mode="native"}`: 1,
		`weir_snapshot_generation`: 42,

		`weir_vip_info{mode="dsr",name="web",` + web + `}`:                               1,
		`weir_vip_info{mode="gue",name="dns",` + dns + `}`:                               1,
		`weir_backend_packets_total{backend="10.0.0.1",` + web + `}`:                     600,
		`weir_backend_bytes_total{backend="10.0.0.1",` + web + `}`:                       40000,
		`weir_backend_packets_total{backend="10.0.0.2",` + web + `}`:                     300,
		`weir_backend_bytes_total{backend="10.0.0.2",` + web + `}`:                       21000,
		`weir_backend_packets_total{backend="fd00::1",` + dns + `}`:                      19,
		`weir_backend_new_flows_total{backend="10.0.0.1",` + web + `}`:                   31,
		`weir_backend_new_flows_total{backend="10.0.0.2",` + web + `}`:                   17,
		`weir_backend_new_flows_total{backend="fd00::1",` + dns + `}`:                    3,
		`weir_backend_bytes_total{backend="fd00::1",` + dns + `}`:                        1216,
		`weir_backend_info{backend="10.0.0.1",name="a",` + web + `}`:                     1,
		`weir_backend_info{backend="10.0.0.2",name="10.0.0.2",` + web + `}`:              1,
		`weir_backend_state{backend="10.0.0.1",state="active",` + web + `}`:              1,
		`weir_backend_state{backend="10.0.0.1",state="draining",` + web + `}`:            0,
		`weir_backend_state{backend="10.0.0.2",state="draining",` + web + `}`:            1,
		`weir_backend_state{backend="10.0.0.2",state="active",` + web + `}`:              0,
		`weir_backend_state{backend="fd00::1",state="failed",` + dns + `}`:               1,
		`weir_backend_weight{backend="10.0.0.1",` + web + `}`:                            2,
		`weir_backend_weight{backend="10.0.0.2",` + web + `}`:                            0,
		`weir_backend_next_hop_resolved{backend="10.0.0.1",` + web + `}`:                 1,
		`weir_backend_next_hop_resolved{backend="10.0.0.2",` + web + `}`:                 0,
		`weir_next_hops_unresolved`:                                                      1,
		`weir_backend_health{backend="10.0.0.1",status="up",` + web + `}`:                1,
		`weir_backend_health{backend="10.0.0.1",status="down",` + web + `}`:              0,
		`weir_backend_health{backend="10.0.0.1",status="unknown",` + web + `}`:           0,
		`weir_backend_health{backend="fd00::1",status="down",` + dns + `}`:               1,
		`weir_backend_health_transitions_total{backend="fd00::1",to="up",` + dns + `}`:   2,
		`weir_backend_health_transitions_total{backend="fd00::1",to="down",` + dns + `}`: 3,
		`weir_backend_health_probes_total{backend="fd00::1",` + dns + `}`:                31,
		`weir_backend_health_probe_failures_total{backend="fd00::1",` + dns + `}`:        12,
		`weir_backend_health_probe_duration_seconds{backend="10.0.0.1",` + web + `}`:     0.0015,

		`weir_config_reloads_total{outcome="applied"}`:          2,
		`weir_config_reloads_total{outcome="unchanged"}`:        0,
		`weir_config_reloads_total{outcome="invalid"}`:          1,
		`weir_config_reloads_total{outcome="restart_required"}`: 1,
		`weir_config_reloads_total{outcome="failed"}`:           0,
		`weir_config_last_reload_successful`:                    0,
		`weir_config_last_reload_timestamp_seconds`:             1700000000,

		`weir_worker_cpu{queue="0"}`:                              1,
		`weir_worker_cpu{queue="1"}`:                              -1,
		`weir_worker_batches_total{queue="0"}`:                    40,
		`weir_worker_sleeps_total{queue="0"}`:                     21,
		`weir_rx_packets_total{queue="0"}`:                        1000,
		`weir_rx_bytes_total{queue="0"}`:                          64000,
		`weir_rx_packets_total{queue="1"}`:                        20,
		`weir_tx_packets_total{queue="0"}`:                        900 + 7 - 3,
		`weir_tx_packets_total{queue="1"}`:                        19,
		`weir_forwarded_packets_total{queue="0"}`:                 900,
		`weir_forwarded_bytes_total{queue="0"}`:                   61000,
		`weir_icmp_replies_total{queue="0"}`:                      7,
		`weir_new_flows_total{queue="0"}`:                         50,
		`weir_new_flows_total{queue="1"}`:                         1,
		`weir_flow_hits_total{queue="0"}`:                         850,
		`weir_flows_moved_total{queue="0"}`:                       2,
		`weir_fragments_forwarded_total{queue="0"}`:               4,
		`weir_icmp_errors_forwarded_total{queue="0"}`:             5,
		`weir_flow_table_entries{queue="0"}`:                      45,
		`weir_flow_table_entries{queue="1"}`:                      1,
		`weir_flow_table_capacity{queue="0"}`:                     1024,
		`weir_flow_table_capacity{queue="1"}`:                     2048,
		`weir_flow_table_evictions_total{queue="0"}`:              6,
		`weir_flow_table_expired_total{queue="0"}`:                8,
		`weir_flow_table_rate_limited_total{queue="0"}`:           9,
		`weir_xsk_rx_dropped_packets_total{queue="0"}`:            11,
		`weir_xsk_invalid_descriptors_total{queue="0",ring="rx"}`: 12,
		`weir_xsk_invalid_descriptors_total{queue="0",ring="tx"}`: 13,
		`weir_xsk_rx_ring_full_packets_total{queue="0"}`:          14,
		`weir_xsk_fill_ring_empty_total{queue="0"}`:               15,
		`weir_xsk_tx_ring_empty_total{queue="0"}`:                 16,
		`weir_xsk_tx_kicks_total{queue="0"}`:                      17,
		`weir_xsk_tx_kick_retries_total{queue="0"}`:               18,
		`weir_xsk_rx_wakeups_total{queue="0"}`:                    19,

		`weir_dropped_packets_total{reason="no_backend"}`:   91,
		`weir_dropped_packets_total{reason="tx_ring_full"}`: 3,
		`weir_dropped_packets_total{reason="unknown_vip"}`:  0,

		`weir_xdp_packets_total{result="redirected"}`:        1020,
		`weir_xdp_packets_total{result="passed"}`:            77,
		`weir_xdp_packets_total{result="dropped_no_socket"}`: 1,
		`weir_xdp_packets_total{result="dropped_malformed"}`: 2,
		`weir_xdp_malformed_packets_total`:                   5,
		`weir_xdp_icmp_errors_total`:                         6,
		`weir_xdp_fragments_total`:                           8,
	}
	want[`weir_dropped_packets_total{reason="`+DropTruncated.String()+`"}`] = 3
	for k, v := range want {
		g, ok := got[k]
		if !ok {
			t.Errorf("missing %s", k)
		} else if g != v {
			t.Errorf("%s = %v, want %v", k, g, v)
		}
	}
	// Every drop reason is exported, zero or not, and nothing else.
	var reasons []string
	for k := range got {
		if r, ok := strings.CutPrefix(k, `weir_dropped_packets_total{reason="`); ok {
			reasons = append(reasons, strings.TrimSuffix(r, `"}`))
		}
	}
	wantReasons := []string{dropTXRingFull}
	for _, r := range DropReasons() {
		wantReasons = append(wantReasons, r.String())
	}
	slices.Sort(reasons)
	slices.Sort(wantReasons)
	if !slices.Equal(reasons, wantReasons) {
		t.Errorf("drop reasons exported %v, want %v", reasons, wantReasons)
	}
	// Only checked backends have health series.
	for k := range got {
		if strings.HasPrefix(k, "weir_backend_health") && strings.Contains(k, `backend="10.0.0.2"`) {
			t.Errorf("unchecked backend has a health series: %s", k)
		}
	}
}

// TestMetricsLint runs promlint over every metric the collector exports
// (with a sample that exercises every family) and over the whole registry
// weir serves.
func TestMetricsLint(t *testing.T) {
	m := newMetrics(fixedSource{metricsTestSample()})
	m.reloads = fixedReloads{}
	problems, err := testutil.CollectAndLint(m)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	problems, err = testutil.GatherAndLint(NewMetricsRegistry(m))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint (registry): %s: %s", p.Metric, p.Text)
	}
	// Every described family is exported by a full sample, and has a
	// help string that says something.
	_, mfs := gather(t, m)
	ch := make(chan *prometheus.Desc, 100)
	m.Describe(ch)
	close(ch)
	described := 0
	for range ch {
		described++
	}
	if len(mfs) != described {
		var names []string
		for _, mf := range mfs {
			names = append(names, mf.GetName())
		}
		t.Errorf("%d metric families described, %d exported: %v", described, len(mfs), names)
	}
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "weir_") || len(mf.GetHelp()) < 20 {
			t.Errorf("%s: name without weir_ prefix or help too short: %q", mf.GetName(), mf.GetHelp())
		}
	}
}

// TestMetricsWithoutReloaderOrSnapshot checks that an appliance without a
// reloader exports no reload metrics, and that a failed read of the XDP
// counters leaves the rest of the scrape intact.
func TestMetricsPartial(t *testing.T) {
	s := metricsTestSample()
	s.xdpErr = errors.New("read redirect counters: closed")
	m := newMetrics(fixedSource{s})
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m)
	mfs, err := reg.Gather()
	if err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("gather error %v, want the XDP read error", err)
	}
	got := flatten(mfs)
	if got[`weir_rx_packets_total{queue="0"}`] != 1000 {
		t.Errorf("the rest of the scrape is gone: %v", got)
	}
	for k := range got {
		if strings.HasPrefix(k, "weir_xdp_") || strings.HasPrefix(k, "weir_config_") {
			t.Errorf("exported %s", k)
		}
	}
}

// TestServeMetrics serves a registry on a loopback port, scrapes it over
// HTTP, and checks that cancelling the context shuts the server down.
func TestServeMetrics(t *testing.T) {
	m := newMetrics(fixedSource{metricsTestSample()})
	ln, err := ListenMetrics("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeMetrics(ctx, ln, NewMetricsRegistry(m), testLogger(t)) }()
	url := "http://" + ln.Addr().String()

	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Errorf("GET /metrics: %s, Content-Type %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	for _, line := range []string{
		`weir_backend_packets_total{backend="10.0.0.1",vip="tcp/192.0.2.1:80"} 600`,
		`# TYPE weir_dropped_packets_total counter`,
		`weir_flow_table_capacity{queue="1"} 2048`,
		`# TYPE go_goroutines gauge`,
		`# TYPE process_open_fds gauge`,
	} {
		if !strings.Contains(string(body), line+"\n") {
			t.Errorf("scrape lacks %q", line)
		}
	}
	if err := testutil.ScrapeAndCompare(url+"/metrics", strings.NewReader(`
# HELP weir_snapshot_generation Generation of the forwarding snapshot in use: it grows with every reload, health change and next-hop change that was published.
# TYPE weir_snapshot_generation gauge
weir_snapshot_generation 42
`), "weir_snapshot_generation"); err != nil {
		t.Error(err)
	}
	resp, err = http.Get(url + "/nothing")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /nothing: %s", resp.Status)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("ServeMetrics: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ServeMetrics did not return after cancel")
	}
	if c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Error("the metrics port still accepts connections after shutdown")
	}
}

func TestListenMetricsErrors(t *testing.T) {
	ln, err := ListenMetrics("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if _, err := ListenMetrics(ln.Addr().String()); err == nil || !strings.Contains(err.Error(), "metrics endpoint") {
		t.Errorf("listening twice on %s: %v", ln.Addr(), err)
	}
}

// TestRealTraffic checks that the per-real counters the workers publish (by
// real slot) are summed over workers and put under the right backend,
// against an oracle that goes through the snapshot's reals the other way
// round, after a rebuild that moved slots around.
func TestRealTraffic(t *testing.T) {
	reg, err := NewRegistry(64)
	if err != nil {
		t.Fatal(err)
	}
	mk := func(addrs ...string) VIP {
		v := VIP{VIPKey: VIPKey{Addr: netip.MustParseAddr("192.0.2.9"), Proto: packet.ProtoTCP, Port: 443}, Mode: ModeDSR}
		for _, a := range addrs {
			v.Backends = append(v.Backends, Backend{Addr: netip.MustParseAddr(a), Name: "n" + a, Weight: 1, MAC: packet.MAC{2, 1, 1, 1, 1, 1}})
		}
		return v
	}
	v6 := VIP{VIPKey: VIPKey{Addr: netip.MustParseAddr("2001:db8::1"), Proto: packet.ProtoUDP, Port: 53}, Mode: ModeDSR,
		Backends: []Backend{{Addr: netip.MustParseAddr("2001:db8::10"), Name: "six", Weight: 1, MAC: packet.MAC{2, 1, 1, 1, 1, 2}}}}
	if _, err := BuildSnapshot(Model{VIPs: []VIP{mk("10.1.0.1", "10.1.0.2", "10.1.0.3"), v6}}, reg, 1); err != nil {
		t.Fatal(err)
	}
	snap, err := BuildSnapshot(Model{VIPs: []VIP{v6, mk("10.1.0.3", "10.1.0.4", "10.1.0.1")}}, reg, 2)
	if err != nil {
		t.Fatal(err)
	}
	workers := make([]WorkerStats, 3)
	for k := range workers {
		workers[k].Reals = make([]RealCounters, len(snap.reals))
		for slot := range snap.reals {
			workers[k].Reals[slot] = RealCounters{Packets: uint64(100*slot + k + 1), Bytes: uint64(1000*slot + 10*k), NewFlows: uint64(slot + 3*k)}
		}
	}
	workers[2].Reals = workers[2].Reals[:1] // published before the last slots existed
	oracle := map[string]RealCounters{}
	for slot, r := range snap.reals {
		if r.id == 0 {
			continue
		}
		for k := range workers {
			if slot < len(workers[k].Reals) {
				c := oracle[r.name]
				c.Packets += workers[k].Reals[slot].Packets
				c.Bytes += workers[k].Reals[slot].Bytes
				c.NewFlows += workers[k].Reals[slot].NewFlows
				oracle[r.name] = c
			}
		}
	}
	got := realTraffic(snap, workers)
	n := 0
	for i, v := range snap.Model.VIPs {
		for j, b := range v.Backends {
			n++
			if got[i][j] != oracle[b.Name] {
				t.Errorf("%s %s: %+v, want %+v", v.VIPKey, b.Name, got[i][j], oracle[b.Name])
			}
		}
	}
	if n != len(oracle) || n != 4 {
		t.Errorf("%d backends, oracle has %d", n, len(oracle))
	}
}

// BenchmarkMetricsGather measures one scrape's collection and gathering for
// a large appliance: 100 VIPs of 10 checked backends each, 8 queues. It runs
// off the packet path, once per scrape interval.
func BenchmarkMetricsGather(b *testing.B) {
	s := metricsTestSample()
	s.vips, s.traffic, s.health = nil, nil, nil
	for i := range 100 {
		v := VIP{VIPKey: VIPKey{Addr: netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), Proto: packet.ProtoTCP, Port: 443}, Name: fmt.Sprint("vip", i)}
		var tr []RealCounters
		for j := range 10 {
			addr := netip.AddrFrom4([4]byte{10, 1, byte(i), byte(j)})
			v.Backends = append(v.Backends, Backend{Addr: addr, Weight: 1, MAC: packet.MAC{2, 0, 0, 0, byte(i), byte(j)}})
			tr = append(tr, RealCounters{Packets: uint64(i * j), Bytes: uint64(i * j * 100)})
			s.health = append(s.health, BackendHealth{VIP: v.VIPKey, Addr: addr, Status: HealthUp, Probes: 9})
		}
		s.vips, s.traffic = append(s.vips, v), append(s.traffic, tr)
	}
	for q := 2; q < 8; q++ {
		w := s.workers[1]
		w.Queue = q
		s.workers = append(s.workers, w)
		s.capacity = append(s.capacity, 1<<20)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(newMetrics(fixedSource{s}))
	series := 0
	b.ReportAllocs()
	for b.Loop() {
		mfs, err := reg.Gather()
		if err != nil {
			b.Fatal(err)
		}
		if series == 0 {
			for _, mf := range mfs {
				series += len(mf.GetMetric())
			}
		}
	}
	b.ReportMetric(float64(series), "series")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(series), "ns/series")
}
