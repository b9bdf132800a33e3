package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fakeEndpoint serves fixed exposition texts, the i-th request the i-th text
// (the last one from then on).
func fakeEndpoint(t *testing.T, texts ...string) string {
	t.Helper()
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		i := min(int(n.Add(1))-1, len(texts)-1)
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		fmt.Fprint(w, texts[i])
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// fixClock makes the two reads of weir stats exactly step apart, whatever
// the real interval.
func fixClock(t *testing.T, step time.Duration) {
	t.Helper()
	base := time.Unix(1800000000, 0)
	var calls atomic.Int64
	statsClock = func() time.Time { return base.Add(time.Duration(calls.Add(1)-1) * step) }
	t.Cleanup(func() { statsClock = time.Now })
}

// exposition builds a scrape of a weir endpoint with two VIPs. c scales the
// counters: the second read passes larger ones.
func exposition(web1, web2, dns1, rx, newFlows, noBackend float64, dns2 bool) string {
	var b strings.Builder
	b.WriteString(`# HELP weir_afxdp_info Always 1.
# TYPE weir_afxdp_info gauge
weir_afxdp_info{afxdp_mode="copy",interface="eth1",xdp_mode="native"} 1
# TYPE weir_snapshot_generation gauge
weir_snapshot_generation 7
# TYPE process_start_time_seconds gauge
process_start_time_seconds 1.7999964e+09
# TYPE weir_vip_info gauge
weir_vip_info{mode="dsr",name="web",vip="tcp/192.0.2.1:80"} 1
weir_vip_info{mode="gue",name="dns",vip="udp/[2001:db8::53]:*"} 1
# TYPE weir_backend_info gauge
weir_backend_info{backend="10.0.0.1",name="a",vip="tcp/192.0.2.1:80"} 1
weir_backend_info{backend="10.0.0.2",name="10.0.0.2",vip="tcp/192.0.2.1:80"} 1
weir_backend_info{backend="fd00::1",name="d1",vip="udp/[2001:db8::53]:*"} 1
`)
	if dns2 {
		b.WriteString(`weir_backend_info{backend="fd00::2",name="d2",vip="udp/[2001:db8::53]:*"} 1
`)
	}
	b.WriteString(`# TYPE weir_backend_state gauge
weir_backend_state{backend="10.0.0.1",state="active",vip="tcp/192.0.2.1:80"} 1
weir_backend_state{backend="10.0.0.1",state="draining",vip="tcp/192.0.2.1:80"} 0
weir_backend_state{backend="10.0.0.2",state="active",vip="tcp/192.0.2.1:80"} 0
weir_backend_state{backend="10.0.0.2",state="draining",vip="tcp/192.0.2.1:80"} 1
weir_backend_state{backend="fd00::1",state="failed",vip="udp/[2001:db8::53]:*"} 1
weir_backend_state{backend="fd00::2",state="active",vip="udp/[2001:db8::53]:*"} 1
# TYPE weir_backend_weight gauge
weir_backend_weight{backend="10.0.0.1",vip="tcp/192.0.2.1:80"} 3
weir_backend_weight{backend="10.0.0.2",vip="tcp/192.0.2.1:80"} 0
weir_backend_weight{backend="fd00::1",vip="udp/[2001:db8::53]:*"} 1
# TYPE weir_backend_next_hop_resolved gauge
weir_backend_next_hop_resolved{backend="10.0.0.1",vip="tcp/192.0.2.1:80"} 1
weir_backend_next_hop_resolved{backend="10.0.0.2",vip="tcp/192.0.2.1:80"} 0
weir_backend_next_hop_resolved{backend="fd00::1",vip="udp/[2001:db8::53]:*"} 1
# TYPE weir_backend_health gauge
weir_backend_health{backend="fd00::1",status="down",vip="udp/[2001:db8::53]:*"} 1
weir_backend_health{backend="fd00::1",status="up",vip="udp/[2001:db8::53]:*"} 0
# TYPE weir_backend_packets_total counter
`)
	fmt.Fprintf(&b, "weir_backend_packets_total{backend=\"10.0.0.1\",vip=\"tcp/192.0.2.1:80\"} %g\n", web1)
	fmt.Fprintf(&b, "weir_backend_packets_total{backend=\"10.0.0.2\",vip=\"tcp/192.0.2.1:80\"} %g\n", web2)
	fmt.Fprintf(&b, "weir_backend_packets_total{backend=\"fd00::1\",vip=\"udp/[2001:db8::53]:*\"} %g\n", dns1)
	if dns2 {
		b.WriteString("weir_backend_packets_total{backend=\"fd00::2\",vip=\"udp/[2001:db8::53]:*\"} 5\n")
	}
	b.WriteString("# TYPE weir_backend_bytes_total counter\n")
	fmt.Fprintf(&b, "weir_backend_bytes_total{backend=\"10.0.0.1\",vip=\"tcp/192.0.2.1:80\"} %g\n", 100*web1)
	fmt.Fprintf(&b, "weir_backend_bytes_total{backend=\"10.0.0.2\",vip=\"tcp/192.0.2.1:80\"} %g\n", 100*web2)
	fmt.Fprintf(&b, "weir_backend_bytes_total{backend=\"fd00::1\",vip=\"udp/[2001:db8::53]:*\"} %g\n", 100*dns1)
	b.WriteString("# TYPE weir_rx_packets_total counter\n")
	fmt.Fprintf(&b, "weir_rx_packets_total{queue=\"0\"} %g\nweir_rx_packets_total{queue=\"1\"} %g\n", rx, 2*rx)
	b.WriteString("# TYPE weir_rx_bytes_total counter\n")
	fmt.Fprintf(&b, "weir_rx_bytes_total{queue=\"0\"} %g\nweir_rx_bytes_total{queue=\"1\"} %g\n", 64*rx, 128*rx)
	b.WriteString("# TYPE weir_forwarded_packets_total counter\n")
	fmt.Fprintf(&b, "weir_forwarded_packets_total{queue=\"0\"} %g\nweir_forwarded_packets_total{queue=\"1\"} %g\n", web1+web2, dns1)
	b.WriteString("# TYPE weir_new_flows_total counter\n")
	fmt.Fprintf(&b, "weir_new_flows_total{queue=\"0\"} %g\nweir_new_flows_total{queue=\"1\"} 0\n", newFlows)
	b.WriteString("# TYPE weir_flow_table_entries gauge\nweir_flow_table_entries{queue=\"0\"} 300\nweir_flow_table_entries{queue=\"1\"} 100\n")
	b.WriteString("# TYPE weir_flow_table_capacity gauge\nweir_flow_table_capacity{queue=\"0\"} 1000\nweir_flow_table_capacity{queue=\"1\"} 1000\n")
	b.WriteString("# TYPE weir_dropped_packets_total counter\n")
	fmt.Fprintf(&b, "weir_dropped_packets_total{reason=\"no_backend\"} %g\n", noBackend)
	b.WriteString("weir_dropped_packets_total{reason=\"truncated\"} 0\nweir_dropped_packets_total{reason=\"tx_ring_full\"} 4\n")
	b.WriteString("# TYPE weir_xdp_packets_total counter\nweir_xdp_packets_total{result=\"redirected\"} 5000\nweir_xdp_packets_total{result=\"passed\"} 12\nweir_xdp_packets_total{result=\"dropped_no_socket\"} 0\n")
	b.WriteString("# TYPE weir_config_reloads_total counter\nweir_config_reloads_total{outcome=\"applied\"} 3\nweir_config_reloads_total{outcome=\"invalid\"} 1\n")
	b.WriteString("# TYPE weir_config_last_reload_successful gauge\nweir_config_last_reload_successful 0\n")
	return b.String()
}

func TestStatsRatesJSON(t *testing.T) {
	fixClock(t, 2*time.Second)
	addr := fakeEndpoint(t,
		exposition(1000, 50, 900, 3000, 40, 10, false),
		// web1 +600, web2 unchanged, dns1 reset (restart of that counter:
		// counts from 0), a new backend, rx +1000 (and +2000 on queue 1),
		// new flows +30, no_backend +6.
		exposition(1600, 50, 80, 4000, 70, 16, true))
	code, out, errOut := runCLI(t, "stats", "-addr", addr, "-interval", "10ms", "-json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var r statsReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	rate := func(what string, c counter, want float64) {
		t.Helper()
		if c.Rate == nil || math.Abs(*c.Rate-want) > 1e-9 {
			t.Errorf("%s: rate %v, want %v", what, c.Rate, want)
		}
	}
	if r.Interval != 2 || r.Interface != "eth1" || r.AFXDPMode != "copy" || r.XDPMode != "native" || r.Generation != 7 {
		t.Errorf("header: %+v", r)
	}
	if r.Uptime != 3600+2 {
		t.Errorf("uptime %v, want 3602", r.Uptime)
	}
	if len(r.VIPs) != 2 || r.VIPs[0].VIP != "tcp/192.0.2.1:80" || r.VIPs[1].VIP != "udp/[2001:db8::53]:*" {
		t.Fatalf("vips: %+v", r.VIPs)
	}
	web, dns := r.VIPs[0], r.VIPs[1]
	rate("web packets", web.Packets, 300)
	rate("web bytes", web.Bytes, 30000)
	if web.Packets.Total != 1650 || web.Name != "web" || web.Mode != "dsr" {
		t.Errorf("web: %+v", web)
	}
	if len(web.Backends) != 2 {
		t.Fatalf("web backends: %+v", web.Backends)
	}
	a, b := web.Backends[0], web.Backends[1]
	rate("10.0.0.1 packets", a.Packets, 300)
	rate("10.0.0.2 packets", b.Packets, 0)
	if a.Name != "a" || a.State != "active" || a.Weight != 3 || !a.Resolved || a.Health != "" || a.Packets.Total != 1600 {
		t.Errorf("10.0.0.1: %+v", a)
	}
	if b.State != "draining" || b.Resolved || b.Weight != 0 {
		t.Errorf("10.0.0.2: %+v", b)
	}
	if len(dns.Backends) != 2 {
		t.Fatalf("dns backends: %+v", dns.Backends)
	}
	rate("fd00::1 packets (reset)", dns.Backends[0].Packets, 40)
	if dns.Backends[0].Health != "down" || dns.Backends[0].State != "failed" {
		t.Errorf("fd00::1: %+v", dns.Backends[0])
	}
	if d2 := dns.Backends[1]; d2.Backend != "fd00::2" || d2.Packets.Rate != nil || d2.Packets.Total != 5 {
		t.Errorf("new backend fd00::2 should have a total and no rate: %+v", d2)
	}
	if dns.Packets.Rate != nil {
		t.Errorf("a VIP with a new backend has no rate, got %v", *dns.Packets.Rate)
	}
	if !strings.Contains(out, `"per_second": null`) {
		t.Errorf("unknown rate not null in JSON:\n%s", out)
	}

	tot := r.Totals
	rate("rx packets", tot.RXPackets, 1500)
	rate("rx bytes", tot.RXBytes, 96000)
	rate("new flows", tot.NewFlows, 15)
	rate("dropped", tot.Dropped, 3)
	if tot.RXPackets.Total != 12000 || tot.Queues != 2 || tot.FlowEntries != 400 || tot.FlowCapacity != 2000 {
		t.Errorf("totals: %+v", tot)
	}
	// Non-zero reasons only, the largest first.
	if len(r.Drops) != 2 || r.Drops[0].Reason != "no_backend" || r.Drops[0].Total != 16 || r.Drops[1].Reason != "tx_ring_full" {
		t.Errorf("drops: %+v", r.Drops)
	}
	rate("no_backend", r.Drops[0].counter, 3)
	if len(r.XDP) != 2 || r.XDP[0].Reason != "redirected" || r.XDP[1].Reason != "passed" {
		t.Errorf("xdp: %+v", r.XDP)
	}
	if len(r.Reloads) != 2 || r.ReloadOK == nil || *r.ReloadOK {
		t.Errorf("reloads: %+v ok %v", r.Reloads, r.ReloadOK)
	}
}

func TestStatsTable(t *testing.T) {
	fixClock(t, time.Second)
	addr := fakeEndpoint(t,
		exposition(1000, 50, 900, 3000, 40, 10, false),
		exposition(13345, 50, 1000, 4000, 70, 10, false))
	code, out, errOut := runCLI(t, "stats", "-addr", addr, "-interval", "1ms")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	t.Logf("\n%s", out)
	fields := func(prefix string) []string {
		t.Helper()
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, prefix) {
				return strings.Fields(strings.TrimPrefix(l, prefix))
			}
		}
		t.Fatalf("no line starts with %q:\n%s", prefix, out)
		return nil
	}
	for _, tc := range []struct {
		prefix string
		want   []string
	}{
		// state weight health pkts/s bytes/s packets bytes
		{"tcp/192.0.2.1:80 dsr (web) ", []string{"12.3k", "1.2M", "13.4k", "1.3M"}},
		{"  -> 10.0.0.1 (a) ", []string{"active", "3", "-", "12.3k", "1.2M", "13.3k", "1.3M"}},
		{"  -> 10.0.0.2 ", []string{"draining,no-mac", "0", "-", "0", "0", "50", "5000"}},
		{"udp/[2001:db8::53]:* gue (dns) ", []string{"100", "10.0k", "1000", "100.0k"}},
		{"  -> fd00::1 (d1) ", []string{"failed", "1", "down", "100", "10.0k", "1000", "100.0k"}},
	} {
		if got := fields(tc.prefix); strings.Join(got, " ") != strings.Join(tc.want, " ") {
			t.Errorf("%q: %q, want %q", tc.prefix, got, tc.want)
		}
	}
	for _, want := range []string{
		"weir on eth1 (AF_XDP copy, XDP native), snapshot generation 7, up 1h0m1s\n",
		"rates over 1.00s from http://" + addr + "/metrics\n",
		"total (2 queues): rx 3000 pkts/s 192.0k bytes/s, forwarded 12.4k pkts/s - bytes/s, new flows 30/s, dropped 0 pkts/s\n",
		"since start: rx 12.0k packets, forwarded 14.4k, new flows 70, dropped 14; flow tables 400 of 2000 (20.0%)\n",
		"drops: no_backend 10 (0/s), tx_ring_full 4 (0/s)\n",
		"xdp: redirected 5000 (0/s), passed 12 (0/s)\n",
		"reloads: applied 3 invalid 1; the last one was refused\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
}

func TestSI(t *testing.T) {
	for _, tc := range []struct {
		v    float64
		want string
	}{
		{0, "0"}, {0.25, "0.2"}, {3, "3"}, {9.96, "10.0"}, {12.4, "12"}, {9999, "9999"}, {10000, "10.0k"},
		{999949, "999.9k"}, {999950, "1.0M"}, {2.5e9, "2.5G"}, {7e15, "7000.0T"}, {-1500, "-1500"}, {math.NaN(), "?"},
	} {
		if got := si(tc.v); got != tc.want {
			t.Errorf("si(%v) = %q, want %q", tc.v, got, tc.want)
		}
	}
}

func TestStatsErrors(t *testing.T) {
	notWeir := fakeEndpoint(t, "# TYPE up gauge\nup 1\n")
	garbage := fakeEndpoint(t, "weir_rx_packets_total{queue=0} x\n")
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "broken", http.StatusInternalServerError)
	}))
	defer failing.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()

	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"-interval", "0s"}, 2, "-interval 0s out of range"},
		{[]string{"-interval", "2m"}, 2, "-interval 2m0s out of range"},
		{[]string{"-bogus"}, 2, "flag provided but not defined: -bogus"},
		{[]string{"extra"}, 2, `unexpected argument "extra"`},
		{[]string{"-addr", closed}, 1, "is weir running"},
		{[]string{"-addr", notWeir}, 1, "is not a weir appliance's endpoint"},
		{[]string{"-addr", garbage}, 1, "read metrics: http://" + garbage + "/metrics:"},
		{[]string{"-addr", failing.URL + "/metrics"}, 1, "answered 500 Internal Server Error"},
	} {
		code, out, errOut := runCLI(t, append([]string{"stats"}, tc.args...)...)
		if code != tc.code || out != "" || !strings.Contains(errOut, tc.want) {
			t.Errorf("stats %v: exit %d (want %d), stdout %q, stderr %q (want %q)", tc.args, code, tc.code, out, errOut, tc.want)
		}
	}
	code, out, _ := runCLI(t, "stats", "-h")
	if code != 0 || !strings.Contains(out, "usage: weir stats") || !strings.Contains(out, "-interval") {
		t.Errorf("stats -h: exit %d:\n%s", code, out)
	}
}

// TestStatsCancel checks that weir stats gives up when its context ends
// during the interval, instead of waiting it out.
func TestStatsCancel(t *testing.T) {
	addr := fakeEndpoint(t, exposition(1, 1, 1, 1, 1, 0, false))
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	var out, errb bytes.Buffer
	start := time.Now()
	code := run(ctx, &env{stdout: &out, stderr: &errb, getenv: func(string) string { return "" }},
		[]string{"stats", "-addr", addr, "-interval", "50s"})
	if code != 1 || time.Since(start) > 10*time.Second || !strings.Contains(errb.String(), "context deadline exceeded") {
		t.Errorf("exit %d after %s, stderr %q", code, time.Since(start), errb.String())
	}
}
