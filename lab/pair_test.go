package lab

import (
	"errors"
	"strings"
	"testing"

	"github.com/weirlb/weir/internal/testutil"
)

func TestPair(t *testing.T) {
	testutil.RequirePrivileged(t)
	prefix := testPrefix(t)
	p, err := NewPair(PairConfig{Prefix: prefix, Queues: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })

	names, err := ListNS(p.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != 2 || !strings.HasPrefix(p.ID, prefix+"-") {
		t.Errorf("pair %s has namespaces %v, want gen and appliance", p.ID, names)
	}
	for _, h := range []*Host{p.Generator, p.Appliance} {
		nic, err := h.NS.Iface("eth0")
		if err != nil {
			t.Fatal(err)
		}
		if nic != h.NIC || nic.MTU != 1500 {
			t.Errorf("%s: NIC %+v, reported %+v", h.Name, nic, h.NIC)
		}
		l, err := h.NS.Netlink().LinkByName("eth0")
		if err != nil {
			t.Fatal(err)
		}
		if l.Attrs().OperState.String() == "down" {
			t.Errorf("%s: eth0 is down", h.Name)
		}
		checkQueues(t, h.NS, "eth0", 2)
		checkOffloadsOff(t, h.NS, "eth0")
		checkSysctl(t, h.NS, "net/ipv6/conf/all/disable_ipv6", "1")
		if h.PeerNS == h.NS {
			t.Errorf("%s: peer in its own namespace", h.Name)
		}
	}
	if p.Generator.NIC.MAC != PairGeneratorMAC || p.Appliance.NIC.MAC != PairApplianceMAC {
		t.Errorf("MACs %v and %v, want %v and %v", p.Generator.NIC.MAC, p.Appliance.NIC.MAC, PairGeneratorMAC, PairApplianceMAC)
	}
	if p.Generator.Peer != p.Appliance.NIC || p.Appliance.Peer != p.Generator.NIC {
		t.Error("the ends do not name each other as peers")
	}

	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if names, _ := ListNS(p.ID); len(names) != 0 {
		t.Errorf("namespaces left after Close: %v", names)
	}
}

// A failure at any step of NewPair removes everything built so far.
func TestPairBuildFailure(t *testing.T) {
	testutil.RequirePrivileged(t)
	prefix := testPrefix(t)
	for _, step := range []string{"namespace gen", "namespace appliance", "veth eth0-eth0", "done"} {
		boom := errors.New("injected")
		buildHook = func(s string) error {
			if s == step {
				return boom
			}
			return nil
		}
		p, err := NewPair(PairConfig{Prefix: prefix})
		buildHook = nil
		if !errors.Is(err, boom) || p != nil {
			t.Fatalf("failing at %q: NewPair = %v, %v", step, p, err)
		}
		if names, _ := ListNS(prefix); len(names) != 0 {
			t.Fatalf("failing at %q left %v", step, names)
		}
	}
}

func TestPairConfig(t *testing.T) {
	for _, cfg := range []PairConfig{{Prefix: "bad/name"}, {Queues: -1}, {Queues: 65}} {
		if _, err := NewPair(cfg); err == nil {
			t.Errorf("NewPair(%+v) succeeded", cfg)
		}
	}
}
