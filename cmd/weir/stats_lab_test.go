package main

import (
	"context"
	"encoding/json"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weirlb/weir/appliance"
	"github.com/weirlb/weir/internal/testutil"
	"github.com/weirlb/weir/lab"
	"github.com/weirlb/weir/packet"
)

// TestStatsLab runs `weir stats` against the real metrics endpoint of an
// appliance in a DSR lab, served on a loopback port of the test process:
// first while clients open connections through it (every rate moves), then
// once it is idle (the totals equal the appliance's own per-backend
// counters, and every rate is zero).
func TestStatsLab(t *testing.T) {
	testutil.RequirePrivileged(t)
	d, err := lab.NewDSR(lab.DSRConfig{Backends: 2, Queues: 2})
	if err != nil {
		t.Fatalf("build lab: %v", err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("close lab: %v", err)
		}
	})
	if err := d.StartHTTP(); err != nil {
		t.Fatal(err)
	}
	vip := appliance.VIP{VIPKey: appliance.VIPKey{Addr: d.VIP4, Proto: packet.ProtoTCP, Port: d.Port}, Name: "web", Mode: appliance.ModeDSR}
	for _, b := range d.Backends {
		vip.Backends = append(vip.Backends, appliance.Backend{Addr: b.Addr(d.VIP4), Name: b.Name, Weight: 1})
	}
	var app *appliance.Appliance
	err = d.Appliance.NS.Do(func() error {
		var err error
		app, err = appliance.Start(appliance.Options{Interface: d.Appliance.NIC.Name}, appliance.Model{VIPs: []appliance.VIP{vip}})
		return err
	})
	if err != nil {
		t.Fatalf("start appliance: %v", err)
	}
	t.Cleanup(func() {
		if _, err := app.Stop(); err != nil {
			t.Errorf("stop appliance: %v", err)
		}
	})
	ln, err := appliance.ListenMetrics("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	serving := make(chan error, 1)
	go func() {
		serving <- appliance.ServeMetrics(ctx, ln, appliance.NewMetricsRegistry(appliance.NewMetrics(app, nil)), nil)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-serving; err != nil {
			t.Errorf("serve metrics: %v", err)
		}
	})
	addr := ln.Addr().String()

	// Clients open connections until weir stats has read twice.
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var mu sync.Mutex
	var reqErr error
	requests := 0
	client := d.HTTPClient()
	url := lab.URL(d.VIP4, d.Port, "/")
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := client.Get(url)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				mu.Lock()
				requests++
				if err != nil && reqErr == nil {
					reqErr = err
				}
				mu.Unlock()
			}
		})
	}
	// Let the first read see every series.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		mu.Lock()
		n := requests
		mu.Unlock()
		if n >= 20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d requests in 10s", n)
		}
	}
	busy := statsJSON(t, addr)
	close(stop)
	wg.Wait()
	if reqErr != nil {
		t.Fatalf("request through the VIP: %v", reqErr)
	}
	t.Logf("%d requests", requests)
	if len(busy.VIPs) != 1 || busy.VIPs[0].VIP != vip.VIPKey.String() || len(busy.VIPs[0].Backends) != 2 {
		t.Fatalf("vips: %+v", busy.VIPs)
	}
	positive := func(what string, c counter) {
		t.Helper()
		if c.Rate == nil || *c.Rate <= 0 || c.Total <= 0 {
			t.Errorf("%s while busy: total %v, rate %v", what, c.Total, c.Rate)
		}
	}
	positive("VIP packets", busy.VIPs[0].Packets)
	positive("VIP bytes", busy.VIPs[0].Bytes)
	for _, b := range busy.VIPs[0].Backends {
		positive(b.Name+" packets", b.Packets)
	}
	positive("rx packets", busy.Totals.RXPackets)
	positive("new flows", busy.Totals.NewFlows)
	if busy.AFXDPMode != "copy" || busy.Interface != d.Appliance.NIC.Name || busy.Totals.Queues != 2 || len(busy.Drops) != 0 {
		t.Errorf("busy report: %+v", busy)
	}

	settleStats(t, app)
	idle := statsJSON(t, addr)
	reals := map[string]appliance.RealStat{}
	for _, r := range app.RealStats() {
		reals[r.Backend] = r
	}
	var sum float64
	for _, b := range idle.VIPs[0].Backends {
		r := reals[b.Name]
		if b.Packets.Total != float64(r.Packets) || b.Bytes.Total != float64(r.Bytes) || b.Packets.Total == 0 {
			t.Errorf("%s: stats says %v packets %v bytes, the appliance %d and %d", b.Name, b.Packets.Total, b.Bytes.Total, r.Packets, r.Bytes)
		}
		if b.Packets.Rate == nil || *b.Packets.Rate != 0 {
			t.Errorf("%s: packet rate %v while idle", b.Name, b.Packets.Rate)
		}
		if b.State != "active" || !b.Resolved || b.Weight != 1 {
			t.Errorf("%s: %+v", b.Name, b)
		}
		sum += b.Packets.Total
	}
	st, err := app.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if idle.VIPs[0].Packets.Total != sum || idle.Totals.Forwarded.Total != float64(st.Total.TXPackets) ||
		idle.Totals.RXPackets.Total != float64(st.Total.RXPackets) || idle.Totals.NewFlows.Total != float64(st.Total.NewFlows) {
		t.Errorf("idle totals %+v (VIP %v), appliance %+v", idle.Totals, idle.VIPs[0].Packets.Total, st.Total)
	}
	if idle.Totals.NewFlows.Total < float64(requests) {
		t.Errorf("%v new flows for %d connections", idle.Totals.NewFlows.Total, requests)
	}

	// And the table.
	code, out, errOut := runCLI(t, "stats", "-addr", addr, "-interval", "100ms")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	t.Logf("\n%s", out)
	for _, want := range []string{vip.VIPKey.String() + " dsr (web)", "-> " + vip.Backends[0].Addr.String() + " (" + d.Backends[0].Name + ")", "drops: none"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q", want)
		}
	}
}

func statsJSON(t *testing.T, addr string) statsReport {
	t.Helper()
	code, out, errOut := runCLI(t, "stats", "-addr", addr, "-interval", "300ms", "-json")
	if code != 0 {
		t.Fatalf("weir stats: exit %d: %s", code, errOut)
	}
	var r statsReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("weir stats -json: %v\n%s", err, out)
	}
	return r
}

// settleStats waits until the appliance's counters stop moving: what the
// workers publish is at most appliance.StatsMaxAge old.
func settleStats(t *testing.T, app *appliance.Appliance) {
	t.Helper()
	var prev appliance.Counters
	for stable, deadline := 0, time.Now().Add(5*time.Second); stable < 2; time.Sleep(appliance.StatsMaxAge) {
		if time.Now().After(deadline) {
			t.Fatal("counters still moving after 5s")
		}
		st, err := app.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if st.Total == prev {
			stable++
		} else {
			stable = 0
		}
		prev = st.Total
	}
}
