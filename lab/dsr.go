package lab

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// The DSR lab's subnets (see doc.go).
var (
	DSRSubnet4 = netip.MustParsePrefix("10.90.0.0/24")
	DSRSubnet6 = netip.MustParsePrefix("fd00:90::/64")
)

// Host numbers in the DSR subnets: backend i (from 1) is dsrBackendBase+i.
const (
	dsrClientHost    = 1
	dsrApplianceHost = 2
	dsrBackendBase   = 10
)

// DSRConfig configures NewDSR. The zero value is a working lab.
type DSRConfig struct {
	// Prefix starts the name of every namespace; the lab's ID is Prefix
	// plus a random suffix. Default "weir".
	Prefix string
	// Backends is the number of backend namespaces (1 to 200; default 2).
	Backends int
	// Queues is the RX and TX queue count of both ends of the appliance's
	// veth (1 to 64; default 2). XDP needs the NIC's RX queues to be at
	// least its peer's TX queues, so both ends get the same count.
	Queues int
	// Port is the backends' HTTP port (default 80).
	Port uint16
	// VIPs are put on every backend's lo and routed from the client via
	// the appliance (default 192.0.2.1 and 2001:db8::1).
	VIPs []netip.Addr
}

// DSR is an L2 direct-server-return lab: client, appliance and backends on
// one bridge, the VIPs on the backends' loopback, the client's routes to
// the VIPs via the appliance. Backends answer the client directly. Close
// removes everything; it is safe to call more than once.
type DSR struct {
	// ID is the lab's unique name; every namespace is named ID-<role>.
	ID string
	// Switch holds the bridge Bridge that joins all hosts.
	Switch *NS
	Bridge Iface
	// Client, Appliance and Backends[i] each have their own namespace and
	// one NIC ("eth0") on the bridge. The appliance's NIC and its bridge
	// port have Queues RX and TX queues.
	Client    *Host
	Appliance *Host
	Backends  []*Backend
	// VIPs as configured; VIP4 and VIP6 are the first of each family (zero
	// if there is none).
	VIPs       []netip.Addr
	VIP4, VIP6 netip.Addr
	Port       uint16
	Queues     int

	undo undoStack
}

// NewDSR builds a DSR lab. On error everything it created is already
// removed.
func NewDSR(cfg DSRConfig) (_ *DSR, err error) {
	c, err := checkCommon(cfg.Prefix, cfg.Backends, cfg.Queues, cfg.Port, cfg.VIPs, DSRSubnet4, DSRSubnet6)
	if err != nil {
		return nil, fmt.Errorf("lab: dsr config: %w", err)
	}
	d := &DSR{ID: c.prefix + "-" + randomHex(3), VIPs: c.vips, Port: c.port, Queues: c.queues}
	d.VIP4, d.VIP6 = vipFamilies(c.vips)
	b := &builder{id: d.ID, undo: &d.undo}
	defer func() {
		if err != nil {
			err = fmt.Errorf("lab: build dsr lab %s: %w", d.ID, errors.Join(err, d.undo.run()))
		}
	}()

	if d.Switch, err = b.ns("switch", switchSysctls); err != nil {
		return nil, err
	}
	if d.Bridge, err = addBridge(b, d.Switch, "br0"); err != nil {
		return nil, err
	}

	join := func(name, port string, host, queues int, sysctls ...[][2]string) (*Host, error) {
		h := &Host{
			Name: name, PeerNS: d.Switch,
			Prefix4: DSRSubnet4, Prefix6: DSRSubnet6,
			Addr4: hostAddr(DSRSubnet4, host), Addr6: hostAddr(DSRSubnet6, host),
		}
		var err error
		if h.NS, err = b.ns(name, sysctls...); err != nil {
			return nil, err
		}
		if h.Peer, h.NIC, err = link(b, d.Switch, port, h, "eth0", queues, defaultMTU); err != nil {
			return nil, err
		}
		if err := enslave(d.Switch, port, d.Bridge.Name); err != nil {
			return nil, err
		}
		if err := setUp(d.Switch, port); err != nil {
			return nil, err
		}
		return h, b.step("host " + name)
	}

	if d.Client, err = join("client", "client", dsrClientHost, 1, hostSysctls(false)); err != nil {
		return nil, err
	}
	if d.Appliance, err = join("appliance", "appliance", dsrApplianceHost, c.queues, hostSysctls(false)); err != nil {
		return nil, err
	}
	var toVIPs []route
	for _, v := range d.VIPs {
		toVIPs = append(toVIPs, route{dst: hostPrefix(v), gw: d.Appliance.Addr(v), dev: "eth0"})
	}
	if err := addRoutes(d.Client.NS, toVIPs...); err != nil {
		return nil, err
	}
	if err := b.step("client routes"); err != nil {
		return nil, err
	}

	for i := 1; i <= c.backends; i++ {
		name := fmt.Sprintf("backend-%d", i)
		h, err := join(name, fmt.Sprintf("be%d", i), dsrBackendBase+i, 1, hostSysctls(false), backendSysctls)
		if err != nil {
			return nil, err
		}
		if err := addVIPs(h.NS, d.VIPs); err != nil {
			return nil, err
		}
		d.Backends = append(d.Backends, &Backend{Host: *h, Port: c.port})
	}
	d.undo.push("backend servers", stopServers(d.Backends))
	return d, b.step("done")
}

// addBridge creates an up bridge in n without multicast snooping: with
// snooping and no querier, IPv6 neighbour discovery between the hosts
// depends on timers.
func addBridge(b *builder, n *NS, name string) (Iface, error) {
	off := false
	la := netlink.NewLinkAttrs()
	la.Name = name
	if err := n.Netlink().LinkAdd(&netlink.Bridge{LinkAttrs: la, MulticastSnooping: &off}); err != nil {
		return Iface{}, fmt.Errorf("lab: %s: add bridge %s: %w", n.Name(), name, err)
	}
	b.undo.push("bridge "+name, func() error { return delLink(n, name) })
	if err := setUp(n, name); err != nil {
		return Iface{}, err
	}
	i, err := n.Iface(name)
	if err != nil {
		return Iface{}, err
	}
	return i, b.step("bridge")
}

func enslave(n *NS, port, bridge string) error {
	h := n.Netlink()
	p, err := h.LinkByName(port)
	if err != nil {
		return fmt.Errorf("lab: %s: %s: %w", n.Name(), port, err)
	}
	br, err := h.LinkByName(bridge)
	if err != nil {
		return fmt.Errorf("lab: %s: %s: %w", n.Name(), bridge, err)
	}
	if err := h.LinkSetMaster(p, br); err != nil {
		return fmt.Errorf("lab: %s: add %s to %s: %w", n.Name(), port, bridge, err)
	}
	return nil
}

// Close stops the backends' servers and removes every link and namespace
// of the lab. It is idempotent.
func (d *DSR) Close() error { return d.undo.run() }

// StartHTTP starts BackendHandler on every backend not serving yet (see
// Backend.Serve). Close stops them.
func (d *DSR) StartHTTP() error { return startHTTP(d.Backends) }

// HTTPClient returns an HTTP client whose connections start in the client
// namespace, one fresh TCP connection per request.
func (d *DSR) HTTPClient() *http.Client { return d.Client.NS.HTTPClient() }

// Hosts returns the client, the appliance and the backends.
func (d *DSR) Hosts() []*Host {
	hs := []*Host{d.Client, d.Appliance}
	for _, b := range d.Backends {
		hs = append(hs, &b.Host)
	}
	return hs
}

// Namespaces returns every namespace of the lab, the switch first.
func (d *DSR) Namespaces() []*NS {
	ns := []*NS{d.Switch}
	for _, h := range d.Hosts() {
		ns = append(ns, h.NS)
	}
	return ns
}

// String describes the lab, one host per line.
func (d *DSR) String() string { return summary("dsr", d.ID, d.VIPs, d.Port, d.Hosts()) }
