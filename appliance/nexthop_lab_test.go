package appliance

import (
	"testing"
	"time"

	"github.com/weirlb/weir/internal/testutil"
	"github.com/weirlb/weir/lab"
)

// TestDSRLabUnresolvedBackendGetsNoTrafficUntilResolved starts the appliance
// while one backend's link is down, so its MAC cannot be resolved: it is
// reported, gets no connection, and the others serve everything. Once its
// link comes up, the next-hop refresh resolves it and it gets traffic again,
// with no Publish from outside.
func TestDSRLabUnresolvedBackendGetsNoTrafficUntilResolved(t *testing.T) {
	testutil.RequirePrivileged(t)
	d, err := lab.NewDSR(lab.DSRConfig{Backends: 3, Queues: 2})
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
	late := d.Backends[2]
	setLink := func(up bool) {
		t.Helper()
		nl := late.NS.Netlink()
		link, err := nl.LinkByName(late.NIC.Name)
		if err != nil {
			t.Fatal(err)
		}
		if up {
			err = nl.LinkSetUp(link)
		} else {
			err = nl.LinkSetDown(link)
		}
		if err != nil {
			t.Fatalf("set %s of %s up=%v: %v", late.NIC.Name, late.Name, up, err)
		}
	}
	setLink(false)

	// IPv4 only: a link going down flushes IPv6 addresses.
	m, _ := dsrModel(d, []uint32{1, 1, 1})
	m.VIPs = m.VIPs[:1]
	vip := m.VIPs[0].Addr
	var app *Appliance
	if err := d.Appliance.NS.Do(func() error {
		var err error
		app, err = Start(Options{Interface: d.Appliance.NIC.Name, Logger: testLogger(t)}, m)
		return err
	}); err != nil {
		t.Fatalf("start appliance: %v", err)
	}
	t.Cleanup(func() {
		if _, err := app.Stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
	})

	un := app.Unresolved()
	if len(un) != 1 {
		t.Fatalf("unresolved backends %v, want exactly %s", un, late.Name)
	}
	for k, why := range un {
		t.Logf("unresolved: %s: %s", k, why)
	}
	counts := map[string]int{}
	for i := 0; i < 60; i++ {
		name, err := get(t, d, vip)
		if err != nil {
			t.Fatalf("request %d with one backend unresolved: %v", i, err)
		}
		counts[name]++
	}
	if counts[late.Name] != 0 || len(counts) != 2 {
		t.Fatalf("with %s unresolved, requests went to %v", late.Name, counts)
	}

	setLink(true)
	deadline := time.Now().Add(10 * time.Second)
	for len(app.Unresolved()) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%s still unresolved 10 s after its link came up: %v", late.Name, app.Unresolved())
		}
		time.Sleep(100 * time.Millisecond)
	}
	counts = map[string]int{}
	for i := 0; i < 90; i++ {
		name, err := get(t, d, vip)
		if err != nil {
			t.Fatalf("request %d after resolution: %v", i, err)
		}
		counts[name]++
	}
	if counts[late.Name] == 0 {
		t.Errorf("%s resolved but served nothing: %v", late.Name, counts)
	}
	t.Logf("after resolution: %v", counts)
}
