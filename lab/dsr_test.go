package lab

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/weirlb/weir/internal/testutil"
)

func TestDSR(t *testing.T) {
	testutil.RequirePrivileged(t)
	prefix := testPrefix(t)
	d, err := NewDSR(DSRConfig{Prefix: prefix, Backends: 3, Queues: 3, Port: 8080})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	t.Log(d)

	// Every namespace is mounted under the lab's ID.
	names, err := ListNS(d.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != 6 || !strings.HasPrefix(d.ID, prefix+"-") {
		t.Errorf("lab %s has namespaces %v, want switch, client, appliance and 3 backends", d.ID, names)
	}

	// The address plan.
	if d.Client.Addr4 != netip.MustParseAddr("10.90.0.1") || d.Client.Addr6 != netip.MustParseAddr("fd00:90::1") ||
		d.Appliance.Addr4 != netip.MustParseAddr("10.90.0.2") || d.Appliance.Addr6 != netip.MustParseAddr("fd00:90::2") ||
		d.Backends[2].Addr4 != netip.MustParseAddr("10.90.0.13") || d.Backends[2].Addr6 != netip.MustParseAddr("fd00:90::13") {
		t.Errorf("address plan: client %v %v, appliance %v %v, backend-3 %v %v",
			d.Client.Addr4, d.Client.Addr6, d.Appliance.Addr4, d.Appliance.Addr6, d.Backends[2].Addr4, d.Backends[2].Addr6)
	}
	if d.VIP4 != DefaultVIP4 || d.VIP6 != DefaultVIP6 {
		t.Errorf("VIPs %v %v, want the defaults", d.VIP4, d.VIP6)
	}

	// The appliance NIC: reported as the kernel sees it, with the queues
	// on both ends of its veth.
	app, err := d.Appliance.NS.Iface("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if app != d.Appliance.NIC || app.MAC != (MAC{2, 0, 10, 90, 0, 2}) || app.MTU != 1500 {
		t.Errorf("appliance NIC %+v, reported %+v", app, d.Appliance.NIC)
	}
	checkQueues(t, d.Appliance.NS, "eth0", 3)
	checkQueues(t, d.Switch, d.Appliance.Peer.Name, 3)
	checkQueues(t, d.Client.NS, "eth0", 1)

	// Offloads off on every veth end, sysctls in place.
	for _, h := range d.Hosts() {
		checkOffloadsOff(t, h.NS, h.NIC.Name)
		checkOffloadsOff(t, h.PeerNS, h.Peer.Name)
		checkSysctl(t, h.NS, "net/ipv4/conf/all/rp_filter", "0")
		checkSysctl(t, h.NS, "net/ipv4/ip_forward", "0")
	}
	for _, b := range d.Backends {
		checkSysctl(t, b.NS, "net/ipv4/conf/all/arp_ignore", "1")
		checkSysctl(t, b.NS, "net/ipv4/conf/lo/arp_ignore", "1")
		checkSysctl(t, b.NS, "net/ipv4/conf/all/arp_announce", "2")
		checkSysctl(t, b.NS, "net/ipv4/conf/lo/arp_announce", "2")
		checkHasAddr(t, b.NS, "lo", netip.MustParsePrefix("192.0.2.1/32"))
		checkHasAddr(t, b.NS, "lo", netip.MustParsePrefix("2001:db8::1/128"))
		checkRoute(t, b.NS, d.Client.Addr4, netip.Addr{}) // replies go straight to the client
	}
	checkSysctl(t, d.Client.NS, "net/ipv4/conf/all/arp_ignore", "0")

	// The client reaches the VIPs through the appliance.
	checkRoute(t, d.Client.NS, d.VIP4, d.Appliance.Addr4)
	checkRoute(t, d.Client.NS, d.VIP6, d.Appliance.Addr6)

	// Reachability over the bridge, both families.
	checkTCP(t, d.Client.NS, d.Appliance.NS, d.Appliance.Addr4)
	checkTCP(t, d.Client.NS, d.Appliance.NS, d.Appliance.Addr6)
	checkTCP(t, d.Appliance.NS, d.Backends[0].NS, d.Backends[0].Addr4)
	checkTCP(t, d.Appliance.NS, d.Backends[0].NS, d.Backends[0].Addr6)

	// HTTP to the backends' own addresses; their servers also listen on
	// the VIPs (reached through weir, not tested here).
	before, err := d.Backends[1].NS.SNMP()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.StartHTTP(); err != nil {
		t.Fatal(err)
	}
	if err := d.StartHTTP(); err != nil {
		t.Errorf("second StartHTTP: %v", err)
	}
	if err := d.Backends[0].Serve(nil); err == nil {
		t.Error("Serve on a serving backend succeeded")
	}
	c := d.HTTPClient()
	for _, b := range d.Backends {
		checkGET(t, c, b.URL(b.Addr4, "/"), b.Name+"\n", b.Name)
		checkGET(t, c, b.URL(b.Addr6, "/"), b.Name+"\n", b.Name)
	}
	b := d.Backends[1]
	checkDownload(t, c, b.URL(b.Addr4, ""), 7, 8<<20)
	checkDownload(t, c, b.URL(b.Addr6, ""), 8, 1<<20+3)
	checkUpload(t, c, b.URL(b.Addr4, ""), 9, 4<<20)

	// The counters are the backend's own: it accepted exactly our five
	// connections, with no checksum errors or resets.
	after, err := b.NS.SNMP()
	if err != nil {
		t.Fatal(err)
	}
	if got := after.TCP.PassiveOpens - before.TCP.PassiveOpens; got != 5 {
		t.Errorf("%s accepted %d connections, want 5", b.Name, got)
	}
	if after.TCP.InSegs-before.TCP.InSegs < 100 {
		t.Errorf("%s received %d segments for 13 MiB of HTTP", b.Name, after.TCP.InSegs-before.TCP.InSegs)
	}
	if after.TCP.InCsumErrors != 0 || after.TCP.OutRsts != before.TCP.OutRsts {
		t.Errorf("%s: InCsumErrors %d, OutRsts %d -> %d", b.Name, after.TCP.InCsumErrors, before.TCP.OutRsts, after.TCP.OutRsts)
	}

	nss := d.Namespaces()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	checkClosed(t, nss)
	if b.Serving() {
		t.Error("backend still serving after Close")
	}
}

func TestDSRConfigErrors(t *testing.T) {
	for name, cfg := range map[string]DSRConfig{
		"too many backends": {Backends: 201},
		"negative queues":   {Queues: -1},
		"too many queues":   {Queues: 65},
		"bad prefix":        {Prefix: "a/b"},
		"VIP in the subnet": {VIPs: []netip.Addr{netip.MustParseAddr("10.90.0.200")}},
		"VIP twice":         {VIPs: []netip.Addr{DefaultVIP4, DefaultVIP4}},
		"zero VIP":          {VIPs: []netip.Addr{{}}},
		"multicast VIP":     {VIPs: []netip.Addr{netip.MustParseAddr("ff02::1")}},
		"mapped VIP":        {VIPs: []netip.Addr{netip.MustParseAddr("::ffff:192.0.2.1")}},
	} {
		if d, err := NewDSR(cfg); err == nil {
			d.Close()
			t.Errorf("%s: NewDSR accepted %+v", name, cfg)
		}
	}
}

// TestDSRPartialFailure fails the construction at each step in turn and
// checks that nothing of the half-built lab is left.
func TestDSRPartialFailure(t *testing.T) {
	testutil.RequirePrivileged(t)
	var steps []string
	buildHook = func(step string) error { steps = append(steps, step); return nil }
	d, err := NewDSR(DSRConfig{Prefix: testPrefix(t), Backends: 1})
	buildHook = nil
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if len(steps) < 10 {
		t.Fatalf("only %d construction steps seen: %v", len(steps), steps)
	}

	injected := errors.New("injected")
	for _, fail := range steps {
		prefix := testPrefix(t)
		buildHook = func(step string) error {
			if step == fail {
				return injected
			}
			return nil
		}
		d, err := NewDSR(DSRConfig{Prefix: prefix, Backends: 1})
		buildHook = nil
		if !errors.Is(err, injected) {
			if d != nil {
				d.Close()
			}
			t.Fatalf("failing at %q: NewDSR returned %v", fail, err)
		}
		if left, _ := ListNS(prefix); len(left) != 0 {
			t.Errorf("failing at %q left %v", fail, left)
		}
	}
}
