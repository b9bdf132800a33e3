package lab

import (
	"errors"
	"fmt"
	"net/netip"
)

// PairConfig configures NewPair. The zero value is a working lab.
type PairConfig struct {
	// Prefix starts the name of both namespaces; the lab's ID is Prefix
	// plus a random suffix. Default "weir".
	Prefix string
	// Queues is the RX and TX queue count of both veth ends (1 to 64;
	// default 1). Frames that XDP_TX or XDP_REDIRECT push into a veth land
	// on the receiving end's queue numbered after the sending CPU, so a
	// benchmark that wants every frame on one queue keeps the default.
	Queues int
}

// The pair lab's MACs: 02:00 and the IPv4 address the host would have in
// 10.93.0.0/24, although no address is configured.
var (
	PairGeneratorMAC = macFor(netip.MustParseAddr("10.93.0.1"))
	PairApplianceMAC = macFor(netip.MustParseAddr("10.93.0.2"))
)

// Pair is the end-to-end benchmark's lab: two namespaces joined by one veth
// and nothing else.
//
//	<ID>-gen: eth0 (PairGeneratorMAC) ──veth── eth0 (PairApplianceMAC): <ID>-appliance
//
// Both ends have Queues RX and TX queues, GRO and TX checksum offload off
// (a GRO-enabled veth swallows XDP_TX frames), no IP addresses, and IPv6
// disabled in both namespaces, so the only frames on the link are the ones
// the benchmark sends. XDP_TX or XDP_REDIRECT into either end is delivered
// only while the other end runs an XDP program.
//
// Close removes the veth and both namespaces; it is idempotent.
type Pair struct {
	// ID is the lab's unique name; the namespaces are ID-gen and
	// ID-appliance.
	ID string
	// Generator and Appliance each have their namespace and their veth end
	// ("eth0"); each one's Peer is the other's NIC.
	Generator *Host
	Appliance *Host
	Queues    int

	undo undoStack
}

// pairSysctls keep the stack quiet on the link: without IPv6 no link-local
// address, no MLD report or router solicitation is sent.
var pairSysctls = [][2]string{
	{"net/ipv6/conf/all/disable_ipv6", "1"},
	{"net/ipv6/conf/default/disable_ipv6", "1"},
}

// NewPair builds a pair lab. On error everything it created is already
// removed.
func NewPair(cfg PairConfig) (_ *Pair, err error) {
	prefix := cfg.Prefix
	if prefix == "" {
		prefix = defaultPrefix
	}
	if err := checkName(prefix); err != nil || len(prefix) > 64 {
		return nil, fmt.Errorf("lab: pair config: prefix %q: want up to 64 letters, digits, '.', '_', '-'", prefix)
	}
	queues := cfg.Queues
	if queues == 0 {
		queues = 1
	}
	if queues < 1 || queues > maxQueues {
		return nil, fmt.Errorf("lab: pair config: queues %d: want 1 to %d", queues, maxQueues)
	}
	p := &Pair{ID: prefix + "-" + randomHex(3), Queues: queues}
	b := &builder{id: p.ID, undo: &p.undo}
	defer func() {
		if err != nil {
			err = fmt.Errorf("lab: build pair lab %s: %w", p.ID, errors.Join(err, p.undo.run()))
		}
	}()

	p.Generator = &Host{Name: "gen"}
	p.Appliance = &Host{Name: "appliance"}
	if p.Generator.NS, err = b.ns("gen", pairSysctls); err != nil {
		return nil, err
	}
	if p.Appliance.NS, err = b.ns("appliance", pairSysctls); err != nil {
		return nil, err
	}
	p.Generator.NIC, p.Appliance.NIC, err = b.veth(
		end{ns: p.Generator.NS, name: "eth0", mac: PairGeneratorMAC, mtu: defaultMTU, queues: queues},
		end{ns: p.Appliance.NS, name: "eth0", mac: PairApplianceMAC, mtu: defaultMTU, queues: queues})
	if err != nil {
		return nil, err
	}
	p.Generator.Peer, p.Generator.PeerNS = p.Appliance.NIC, p.Appliance.NS
	p.Appliance.Peer, p.Appliance.PeerNS = p.Generator.NIC, p.Generator.NS
	if err := setUp(p.Generator.NS, "eth0"); err != nil {
		return nil, err
	}
	if err := setUp(p.Appliance.NS, "eth0"); err != nil {
		return nil, err
	}
	if err := b.step("done"); err != nil {
		return nil, err
	}
	return p, nil
}

// Close removes the veth and both namespaces. It is idempotent.
func (p *Pair) Close() error { return p.undo.run() }

// Namespaces returns the generator's and the appliance's namespaces.
func (p *Pair) Namespaces() []*NS { return []*NS{p.Generator.NS, p.Appliance.NS} }
