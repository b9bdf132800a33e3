package lab

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/weirlb/weir/internal/testutil"
)

func TestRouted(t *testing.T) {
	testutil.RequirePrivileged(t)
	r, err := NewRouted(RoutedConfig{Prefix: testPrefix(t), Backends: 2, FabricMTU: 1600, ReturnMTU: 1400})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	t.Log(r)

	if names, _ := ListNS(r.ID); len(names) != 6 {
		t.Errorf("namespaces %v, want switch, client, appliance, router and 2 backends", names)
	}
	be := r.Backends[1]
	if r.Router.Addr4 != netip.MustParseAddr("10.91.0.254") || be.Addr4 != netip.MustParseAddr("10.92.2.2") ||
		be.Addr6 != netip.MustParseAddr("fd00:92:2::2") || be.Gateway6 != netip.MustParseAddr("fd00:92:2::1") {
		t.Errorf("address plan: router %v, backend-2 %v %v via %v", r.Router.Addr4, be.Addr4, be.Addr6, be.Gateway6)
	}
	if be.PeerNS != r.Router.NS || be.Peer.Name != "be2" {
		t.Errorf("backend-2's peer is %s/%s, want the router's be2", be.PeerNS, be.Peer.Name)
	}

	checkQueues(t, r.Appliance.NS, "eth0", 2)
	checkQueues(t, r.Switch, r.Appliance.Peer.Name, 2)
	for _, h := range r.Hosts() {
		want := 1600
		if h == r.Client {
			want = 1500
		}
		if h.NIC.MTU != want || h.Peer.MTU != want {
			t.Errorf("%s: MTU %d, peer %d; want %d", h.Name, h.NIC.MTU, h.Peer.MTU, want)
		}
		checkOffloadsOff(t, h.NS, h.NIC.Name)
		checkOffloadsOff(t, h.PeerNS, h.Peer.Name)
	}
	checkSysctl(t, r.Router.NS, "net/ipv4/ip_forward", "1")
	checkSysctl(t, r.Router.NS, "net/ipv6/conf/all/forwarding", "1")
	checkSysctl(t, r.Appliance.NS, "net/ipv4/ip_forward", "0")
	checkSysctl(t, be.NS, "net/ipv4/conf/all/arp_ignore", "1")
	checkHasAddr(t, be.NS, "lo", netip.MustParsePrefix("2001:db8::1/128"))

	// Routes: VIPs via the appliance, backends via the router, and the
	// return path from backends through the router, not the appliance.
	checkRoute(t, r.Client.NS, r.VIP4, r.Appliance.Addr4)
	checkRoute(t, r.Client.NS, r.VIP6, r.Appliance.Addr6)
	checkRoute(t, r.Client.NS, be.Addr4, r.Router.Addr4)
	checkRoute(t, r.Appliance.NS, be.Addr4, r.Router.Addr4)
	checkRoute(t, r.Appliance.NS, be.Addr6, r.Router.Addr6)
	checkRoute(t, be.NS, r.Client.Addr4, be.Gateway4)
	checkRoute(t, be.NS, r.Client.Addr6, be.Gateway6)
	checkRoute(t, r.Router.NS, r.Client.Addr4, netip.Addr{})
	checkRoute(t, r.Router.NS, r.VIP4, r.Appliance.Addr4)
	checkRoute(t, r.Router.NS, r.VIP6, r.Appliance.Addr6)

	// Reachability across the router, both families.
	checkTCP(t, r.Client.NS, r.Appliance.NS, r.Appliance.Addr4)
	checkTCP(t, r.Client.NS, r.Appliance.NS, r.Appliance.Addr6)
	for _, b := range r.Backends {
		checkTCP(t, r.Client.NS, b.NS, b.Addr4)
		checkTCP(t, r.Client.NS, b.NS, b.Addr6)
		checkTCP(t, r.Appliance.NS, b.NS, b.Addr4)
	}

	// HTTP from the client to the backends' own addresses. The replies
	// are full-size segments and the return route allows 1400, so the
	// router must refuse the first ones and the backend adapt (path MTU
	// discovery); the transfers still arrive intact.
	if err := r.StartHTTP(); err != nil {
		t.Fatal(err)
	}
	before, err := r.Router.NS.SNMP()
	if err != nil {
		t.Fatal(err)
	}
	c := r.HTTPClient()
	for _, b := range r.Backends {
		checkGET(t, c, b.URL(b.Addr4, "/"), b.Name+"\n", b.Name)
		checkGET(t, c, b.URL(b.Addr6, "/"), b.Name+"\n", b.Name)
	}
	checkDownload(t, c, be.URL(be.Addr4, ""), 1, 4<<20)
	checkDownload(t, c, be.URL(be.Addr6, ""), 2, 4<<20)
	checkUpload(t, c, be.URL(be.Addr4, ""), 3, 2<<20)
	after, err := r.Router.NS.SNMP()
	if err != nil {
		t.Fatal(err)
	}
	if after.IP.ForwDatagrams-before.IP.ForwDatagrams < 1000 {
		t.Errorf("router forwarded %d IPv4 packets for 6 MiB", after.IP.ForwDatagrams-before.IP.ForwDatagrams)
	}
	if after.IP.FragFails == before.IP.FragFails || after.ICMP.OutDestUnreachs == before.ICMP.OutDestUnreachs {
		t.Errorf("router refused no packet for the 1400-byte return MTU: FragFails %d -> %d, OutDestUnreachs %d -> %d",
			before.IP.FragFails, after.IP.FragFails, before.ICMP.OutDestUnreachs, after.ICMP.OutDestUnreachs)
	}
	bs, err := be.NS.SNMP()
	if err != nil {
		t.Fatal(err)
	}
	if bs.TCP.InCsumErrors != 0 || bs.TCP.OutRsts != 0 {
		t.Errorf("%s: InCsumErrors %d, OutRsts %d", be.Name, bs.TCP.InCsumErrors, bs.TCP.OutRsts)
	}

	nss := r.Namespaces()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	checkClosed(t, nss)
}

func TestRoutedNoForwarding(t *testing.T) {
	testutil.RequirePrivileged(t)
	r, err := NewRouted(RoutedConfig{Prefix: testPrefix(t), Backends: 1, NoForwarding: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	checkSysctl(t, r.Router.NS, "net/ipv4/ip_forward", "0")
	checkSysctl(t, r.Router.NS, "net/ipv6/conf/all/forwarding", "0")
	if r.ReturnMTU != 0 {
		t.Errorf("ReturnMTU %d without FabricMTU above 1500, want 0", r.ReturnMTU)
	}
	ln, err := r.Backends[0].NS.Listen("tcp", netip.AddrPortFrom(r.Backends[0].Addr4, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if c, err := r.Client.NS.DialContext(ctx, "tcp", ln.Addr().String()); err == nil {
		c.Close()
		t.Error("client reached a backend through a router that does not forward")
	}
	// The router's own addresses still answer.
	checkTCP(t, r.Client.NS, r.Router.NS, r.Router.Addr4)
}

func TestRoutedConfigErrors(t *testing.T) {
	for name, cfg := range map[string]RoutedConfig{
		"fabric below 1500":       {FabricMTU: 1400},
		"fabric too big for XDP":  {FabricMTU: 9000},
		"return below IPv6 min":   {ReturnMTU: 1200},
		"return not below client": {ReturnMTU: 1500},
		"return above fabric":     {FabricMTU: 1500, ReturnMTU: 1499 + 2},
		"VIP in a backend subnet": {VIPs: []netip.Addr{netip.MustParseAddr("fd00:92:7::9")}},
		"too many backends":       {Backends: 300},
	} {
		if r, err := NewRouted(cfg); err == nil {
			r.Close()
			t.Errorf("%s: NewRouted accepted %+v", name, cfg)
		}
	}
}

func TestRoutedPartialFailure(t *testing.T) {
	testutil.RequirePrivileged(t)
	var steps []string
	buildHook = func(step string) error { steps = append(steps, step); return nil }
	r, err := NewRouted(RoutedConfig{Prefix: testPrefix(t), Backends: 1, ReturnMTU: 1400})
	buildHook = nil
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
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
		r, err := NewRouted(RoutedConfig{Prefix: prefix, Backends: 1, ReturnMTU: 1400})
		buildHook = nil
		if !errors.Is(err, injected) {
			if r != nil {
				r.Close()
			}
			t.Fatalf("failing at %q: NewRouted returned %v", fail, err)
		}
		if left, _ := ListNS(prefix); len(left) != 0 {
			t.Errorf("failing at %q left %v", fail, left)
		}
	}
}
