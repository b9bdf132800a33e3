package appliance

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/weirlb/weir/firmware"
	"github.com/weirlb/weir/flows"
	"github.com/weirlb/weir/internal/testutil"
	"github.com/weirlb/weir/packet"
	"github.com/weirlb/weir/ring"
	"github.com/weirlb/weir/umem"
)

// scrapeMetrics GETs url and returns its samples keyed like flatten's.
func scrapeMetrics(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("scrape: parse: %v", err)
	}
	var list []*dto.MetricFamily
	for _, mf := range mfs {
		list = append(list, mf)
	}
	return flatten(list)
}

// TestMetricsLab scrapes the metrics endpoint of an appliance in the DSR
// lab, over HTTP, after a known number of TCP connections through it, and
// checks the numbers against the traffic and the appliance's own reports.
func TestMetricsLab(t *testing.T) {
	l := newDSRLab(t, []uint32{1, 2, 3})
	m := NewMetrics(l.app, nil)
	ln, err := ListenMetrics("127.0.0.1:0") // the test process's namespace, loopback only
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	serving := make(chan error, 1)
	go func() { serving <- ServeMetrics(ctx, ln, NewMetricsRegistry(m), testLogger(t)) }()
	t.Cleanup(func() {
		cancel()
		if err := <-serving; err != nil {
			t.Errorf("serve metrics: %v", err)
		}
	})
	url := "http://" + ln.Addr().String() + "/metrics"

	before := scrapeMetrics(t, url)
	if before[`weir_new_flows_total{queue="0"}`]+before[`weir_new_flows_total{queue="1"}`] != 0 {
		t.Fatalf("new flows before any traffic: %v", before)
	}

	retransBefore := tcpSNMP(t, l.Client.NS).RetransSegs
	const perVIP = 40
	served := map[string]int{} // "vip backend-name" -> connections
	for _, vip := range l.VIPs {
		for i := 0; i < perVIP; i++ {
			name, err := get(t, l.DSR, vip)
			if err != nil {
				t.Fatalf("request %d to %s: %v", i, vip, err)
			}
			served[vip.String()+" "+name]++
		}
	}
	conns := perVIP * len(l.VIPs)
	st := l.settle(t)
	got := scrapeMetrics(t, url)

	sum := func(name string, queues int) float64 {
		var s float64
		for q := range queues {
			s += got[fmt.Sprintf(`%s{queue="%d"}`, name, q)]
		}
		return s
	}
	q := len(st.Workers)
	if q != l.Queues {
		t.Fatalf("%d workers, lab has %d queues", q, l.Queues)
	}
	rx, fwd := sum("weir_rx_packets_total", q), sum("weir_forwarded_packets_total", q)
	check := func(what string, got, want float64) {
		t.Helper()
		if got != want {
			t.Errorf("%s = %v, want %v", what, got, want)
		}
	}
	// Every connection is one new flow, and each is still in its table.
	// A retransmission timeout may rehash a client socket onto another RX
	// queue, whose worker sees the flow as new: each retransmitted segment
	// may add one.
	retrans := float64(tcpSNMP(t, l.Client.NS).RetransSegs - retransBefore)
	for _, name := range []string{"weir_new_flows_total", "weir_flow_table_entries"} {
		if n := sum(name, q); n < float64(conns) || n > float64(conns)+retrans {
			t.Errorf("%s = %v for %d connections (%v client retransmissions)", name, n, conns, retrans)
		}
	}
	// Every frame the XDP program redirected reached a worker, and every
	// one was forwarded: nothing dropped anywhere.
	check("rx packets vs xdp redirected", rx, got[`weir_xdp_packets_total{result="redirected"}`])
	check("rx packets vs forwarded", fwd, rx)
	check("tx packets", sum("weir_tx_packets_total", q), rx)
	check("rx packets vs the appliance's stats", rx, float64(st.Total.RXPackets))
	check("xdp dropped (no socket)", got[`weir_xdp_packets_total{result="dropped_no_socket"}`], 0)
	check("socket drops", sum("weir_xsk_rx_dropped_packets_total", q)+sum("weir_xsk_rx_ring_full_packets_total", q), 0)
	var drops float64
	for k, v := range got {
		if strings.HasPrefix(k, "weir_dropped_packets_total{") {
			drops += v
		}
	}
	check("drops", drops, 0)
	// DSR leaves frames as they came: the bytes out are the bytes in.
	check("forwarded bytes vs rx bytes", sum("weir_forwarded_bytes_total", q), sum("weir_rx_bytes_total", q))

	// Per backend: the appliance's own per-real counters, and every
	// backend that answered got packets.
	names := map[string]string{} // "vip backend-name" -> backend address
	for _, v := range l.app.Snapshot().Model.VIPs {
		for _, b := range v.Backends {
			names[v.VIPKey.String()+" "+b.Name] = b.Addr.String()
		}
	}
	var backendPkts float64
	reals := l.app.RealStats()
	if len(reals) != len(l.VIPs)*len(l.Backends) {
		t.Fatalf("%d reals, want %d", len(reals), len(l.VIPs)*len(l.Backends))
	}
	for _, r := range reals {
		addr := names[r.VIP.String()+" "+r.Backend]
		labels := fmt.Sprintf(`{backend=%q,vip=%q}`, addr, r.VIP.String())
		pk, by := got["weir_backend_packets_total"+labels], got["weir_backend_bytes_total"+labels]
		check("packets of "+labels, pk, float64(r.Packets))
		check("bytes of "+labels, by, float64(r.Bytes))
		backendPkts += pk
		if n := served[r.VIP.Addr.String()+" "+r.Backend]; (n > 0) != (pk > 0) {
			t.Errorf("%s answered %d connections and was sent %v packets", labels, n, pk)
		}
		check("state of "+labels, got[`weir_backend_state{backend="`+addr+`",state="active",vip="`+r.VIP.String()+`"}`], 1)
		check("next hop of "+labels, got["weir_backend_next_hop_resolved"+labels], 1)
	}
	check("backend packets vs forwarded", backendPkts, fwd)

	check("generation", got["weir_snapshot_generation"], float64(l.app.Snapshot().Generation))
	info := fmt.Sprintf(`weir_afxdp_info{afxdp_mode=%q,interface=%q,xdp_mode=%q}`,
		afxdpModeLabel(l.app.AFXDPMode()), l.Appliance.NIC.Name, l.app.XDPMode())
	check(info, got[info], 1)
	check("unresolved next hops", got["weir_next_hops_unresolved"], 0)
	for k := range got {
		if strings.HasPrefix(k, "weir_backend_health") {
			t.Errorf("health series without a health check: %s", k)
		}
	}
	t.Logf("%d connections: rx %v packets, xdp %+v", conns, rx, st.XDP)
}

// TestMetricsHealthLab checks the health metrics of a real check: every
// backend up, then one whose server stops goes down (and failed in the
// snapshot), then comes back when its server does, each transition counted.
func TestMetricsHealthLab(t *testing.T) {
	l, _ := newHealthLab(t, HealthConfig{Type: HealthTCP, Interval: 100 * time.Millisecond, Timeout: 50 * time.Millisecond, Rise: 2, Fall: 2})
	m := NewMetrics(l.app, nil)
	victim := l.Backends[0]
	vip := VIPKey{Addr: l.VIP4, Proto: packet.ProtoTCP, Port: l.Port}
	series := func(name, status string) string {
		return fmt.Sprintf(`%s{backend=%q,%s,vip=%q}`, name, victim.Addr(l.VIP4).String(), status, vip.String())
	}
	up, down := series("weir_backend_health", `status="up"`), series("weir_backend_health", `status="down"`)
	toUp := series("weir_backend_health_transitions_total", `to="up"`)
	toDown := series("weir_backend_health_transitions_total", `to="down"`)
	failed := series("weir_backend_state", `state="failed"`)
	waitFor := func(what string, ok func(map[string]float64) bool) map[string]float64 {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			got, _ := gather(t, m)
			if ok(got) {
				return got
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 10s; health series: %v", what, healthSeries(got))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	got := waitFor("every backend up", func(g map[string]float64) bool {
		n := 0
		for k, v := range g {
			if strings.HasPrefix(k, "weir_backend_health{") && strings.Contains(k, `status="up"`) && v == 1 {
				n++
			}
		}
		return n == len(l.Backends)*len(l.VIPs)
	})
	gen := got["weir_snapshot_generation"]
	if got[toUp] != 1 || got[toDown] != 0 || got[failed] != 0 {
		t.Errorf("after start: up transitions %v, down %v, failed %v", got[toUp], got[toDown], got[failed])
	}

	if err := victim.Stop(); err != nil {
		t.Fatal(err)
	}
	got = waitFor("victim down and failed", func(g map[string]float64) bool { return g[down] == 1 && g[failed] == 1 })
	if got[up] != 0 || got[toDown] != 1 || got[toUp] != 1 || got["weir_snapshot_generation"] <= gen {
		t.Errorf("after stop: up %v, transitions up %v down %v, generation %v (was %v)",
			got[up], got[toUp], got[toDown], got["weir_snapshot_generation"], gen)
	}
	if got[fmt.Sprintf(`weir_backend_health_probe_failures_total{backend=%q,vip=%q}`, victim.Addr(l.VIP4).String(), vip.String())] < 2 {
		t.Errorf("fewer than fall=2 failed probes counted: %v", healthSeries(got))
	}

	if err := victim.Serve(nil); err != nil {
		t.Fatal(err)
	}
	got = waitFor("victim back up", func(g map[string]float64) bool { return g[up] == 1 && g[failed] == 0 })
	if got[toUp] != 2 || got[toDown] != 1 {
		t.Errorf("after restart: transitions up %v down %v, want 2 and 1", got[toUp], got[toDown])
	}
}

func healthSeries(g map[string]float64) []string {
	var out []string
	for k, v := range g {
		if strings.HasPrefix(k, "weir_backend_health") || strings.HasPrefix(k, "weir_backend_state") && v == 1 {
			out = append(out, fmt.Sprintf("%s=%v", k, v))
		}
	}
	slices.Sort(out)
	return out
}

// TestMetricsBeforeFirstPublish scrapes an appliance whose workers have not
// published their counters yet (the first 50 ms after Start): the scrape
// must still name every queue once, with zero counters.
func TestMetricsBeforeFirstPublish(t *testing.T) {
	testutil.RequirePrivileged(t) // the redirect program
	red, err := firmware.LoadRedirect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { red.Close() })
	a := &Appliance{ifname: "test0", redirect: red}
	snap, err := BuildSnapshot(Model{}, newRegistry(t), 1)
	if err != nil {
		t.Fatal(err)
	}
	a.snap.Store(snap)
	for q := range 3 {
		u, err := umem.New(umem.Config{FrameSize: 2048, FrameCount: 64})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { u.Close() })
		sock, _, err := ring.NewInMemory(ring.Config{Umem: u, FillSize: 32, CompletionSize: 32, RXSize: 32, TXSize: 32})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sock.Close() })
		fc := flows.DefaultConfig()
		fc.Capacity = 64
		fwd, err := NewForwarder(fc, 16)
		if err != nil {
			t.Fatal(err)
		}
		a.workers = append(a.workers, newWorker(q, q-1, sock, fwd, &a.snap, 32, time.Now()))
	}
	got, _ := gather(t, NewMetrics(a, nil))
	for q := range 3 {
		key := fmt.Sprintf(`weir_rx_packets_total{queue="%d"}`, q)
		if v, ok := got[key]; !ok || v != 0 {
			t.Errorf("%s = %v (present %v)", key, v, ok)
		}
		if cpu := got[fmt.Sprintf(`weir_worker_cpu{queue="%d"}`, q)]; cpu != float64(q-1) {
			t.Errorf("queue %d: cpu %v", q, cpu)
		}
	}
}
