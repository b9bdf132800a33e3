package lab

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
)

// The routed lab's subnets (see doc.go): the front segment shared by the
// client, the appliance and the router, and the aggregates from which each
// backend gets its own subnet (backend i: 10.92.i.0/24 and fd00:92:i::/64).
var (
	RoutedFront4    = netip.MustParsePrefix("10.91.0.0/24")
	RoutedFront6    = netip.MustParsePrefix("fd00:91::/64")
	RoutedBackends4 = netip.MustParsePrefix("10.92.0.0/16")
	RoutedBackends6 = netip.MustParsePrefix("fd00:92::/32")
)

// Host numbers: on the front segment, and in each backend's subnet.
const (
	frontClientHost    = 1
	frontApplianceHost = 2
	frontRouterHost    = 254
	legRouterHost      = 1
	legBackendHost     = 2
)

// RoutedConfig configures NewRouted. The zero value is a working lab.
type RoutedConfig struct {
	// Prefix, Backends, Queues, Port and VIPs mean what they mean in
	// DSRConfig.
	Prefix   string
	Backends int
	Queues   int
	Port     uint16
	VIPs     []netip.Addr

	// FabricMTU is the MTU of every veth behind the client: the
	// appliance's NIC, the router's interfaces and the backends' NICs
	// (1500 to 3400; default 1500). The client keeps 1500, so a FabricMTU
	// of at least 1500 plus the encapsulation overhead (20 or 40 bytes for
	// IPIP, 28 or 48 for GUE) carries full-size client packets
	// encapsulated; at 1500 they no longer fit, which is how to test what
	// weir does then.
	FabricMTU int
	// ReturnMTU, if not zero, is the MTU of the router's routes to the
	// client (1280 to 1499, and not above FabricMTU): the return path
	// backend -> router -> client narrows there, and the router answers
	// bigger packets with ICMP "fragmentation needed" / "packet too big".
	// It is a route MTU rather than a link MTU because a veth also drops,
	// silently, frames bigger than its MTU that arrive on it, which would
	// narrow the forward path too. Without ReturnMTU, a FabricMTU above
	// 1500 gives those routes MTU 1500, the client's.
	ReturnMTU int
	// NoForwarding leaves IP forwarding off on the router, for tests that
	// need a router that routes nothing.
	NoForwarding bool
}

// Routed is a routed lab for encapsulation: the client, the appliance and a
// router share a front segment (a bridge); each backend has its own subnet
// behind the router, so the appliance can only reach it through the router
// and L2 DSR is impossible. The VIPs sit on the backends' loopback. The
// client reaches the VIPs via the appliance; backends reply through the
// router straight to the client. The router routes the VIPs to the
// appliance, as an upstream router would, so ICMP errors about
// VIP-sourced replies reach the appliance. Close removes everything; it is
// safe to call more than once.
type Routed struct {
	// ID is the lab's unique name; every namespace is named ID-<role>.
	ID string
	// Switch holds the front bridge.
	Switch *NS
	Bridge Iface
	// Client, Appliance and Router have their NIC on the front bridge.
	// Router.NIC is its front interface; its interface to backend i is
	// Backends[i].Peer.
	Client, Appliance, Router *Host
	// Backends[i] (named backend-<i+1>) has its NIC on its own subnet, and
	// its default routes via Gateway4 and Gateway6 on the router.
	Backends []*Backend

	VIPs       []netip.Addr
	VIP4, VIP6 netip.Addr
	Port       uint16
	Queues     int
	FabricMTU  int
	// ReturnMTU is the MTU of the router's routes to the client, 0 if
	// there are none.
	ReturnMTU int

	undo undoStack
}

// NewRouted builds a routed lab. On error everything it created is already
// removed.
func NewRouted(cfg RoutedConfig) (_ *Routed, err error) {
	c, err := checkCommon(cfg.Prefix, cfg.Backends, cfg.Queues, cfg.Port, cfg.VIPs,
		RoutedFront4, RoutedFront6, RoutedBackends4, RoutedBackends6)
	if err != nil {
		return nil, fmt.Errorf("lab: routed config: %w", err)
	}
	fabric := cfg.FabricMTU
	if fabric == 0 {
		fabric = defaultMTU
	}
	if fabric < defaultMTU || fabric > maxMTU {
		return nil, fmt.Errorf("lab: routed config: FabricMTU %d: want %d to %d", fabric, defaultMTU, maxMTU)
	}
	ret := cfg.ReturnMTU
	if ret != 0 && (ret < minMTU || ret >= defaultMTU || ret > fabric) {
		return nil, fmt.Errorf("lab: routed config: ReturnMTU %d: want %d to %d", ret, minMTU, min(defaultMTU-1, fabric))
	}
	if ret == 0 && fabric > defaultMTU {
		ret = defaultMTU
	}

	r := &Routed{ID: c.prefix + "-" + randomHex(3), VIPs: c.vips, Port: c.port, Queues: c.queues,
		FabricMTU: fabric, ReturnMTU: ret}
	r.VIP4, r.VIP6 = vipFamilies(c.vips)
	b := &builder{id: r.ID, undo: &r.undo}
	defer func() {
		if err != nil {
			err = fmt.Errorf("lab: build routed lab %s: %w", r.ID, errors.Join(err, r.undo.run()))
		}
	}()

	if r.Switch, err = b.ns("switch", switchSysctls); err != nil {
		return nil, err
	}
	if r.Bridge, err = addBridge(b, r.Switch, "br0"); err != nil {
		return nil, err
	}
	front := func(name string, host, queues, mtu int, forward bool) (*Host, error) {
		h := &Host{
			Name: name, PeerNS: r.Switch,
			Prefix4: RoutedFront4, Prefix6: RoutedFront6,
			Addr4: hostAddr(RoutedFront4, host), Addr6: hostAddr(RoutedFront6, host),
		}
		var err error
		if h.NS, err = b.ns(name, hostSysctls(forward)); err != nil {
			return nil, err
		}
		if h.Peer, h.NIC, err = link(b, r.Switch, name, h, "eth0", queues, mtu); err != nil {
			return nil, err
		}
		if err := enslave(r.Switch, name, r.Bridge.Name); err != nil {
			return nil, err
		}
		return h, setUp(r.Switch, name)
	}

	if r.Client, err = front("client", frontClientHost, 1, defaultMTU, false); err != nil {
		return nil, err
	}
	if r.Appliance, err = front("appliance", frontApplianceHost, c.queues, fabric, false); err != nil {
		return nil, err
	}
	if r.Router, err = front("router", frontRouterHost, 1, fabric, !cfg.NoForwarding); err != nil {
		return nil, err
	}

	toBackends := []route{
		{dst: RoutedBackends4, gw: r.Router.Addr4, dev: "eth0"},
		{dst: RoutedBackends6, gw: r.Router.Addr6, dev: "eth0"},
	}
	clientRoutes := toBackends
	var routerRoutes []route
	for _, v := range r.VIPs {
		clientRoutes = append(clientRoutes, route{dst: hostPrefix(v), gw: r.Appliance.Addr(v), dev: "eth0"})
		routerRoutes = append(routerRoutes, route{dst: hostPrefix(v), gw: r.Appliance.Addr(v), dev: "eth0"})
	}
	if ret != 0 {
		routerRoutes = append(routerRoutes,
			route{dst: hostPrefix(r.Client.Addr4), dev: "eth0", mtu: ret},
			route{dst: hostPrefix(r.Client.Addr6), dev: "eth0", mtu: ret})
	}
	if err := addRoutes(r.Client.NS, clientRoutes...); err != nil {
		return nil, err
	}
	if err := addRoutes(r.Appliance.NS, toBackends...); err != nil {
		return nil, err
	}
	if err := addRoutes(r.Router.NS, routerRoutes...); err != nil {
		return nil, err
	}
	if err := b.step("front routes"); err != nil {
		return nil, err
	}

	for i := 1; i <= c.backends; i++ {
		name := fmt.Sprintf("backend-%d", i)
		p4 := netip.MustParsePrefix(fmt.Sprintf("10.92.%d.0/24", i))
		p6 := netip.MustParsePrefix(fmt.Sprintf("fd00:92:%d::/64", i))
		be := &Backend{
			Host: Host{
				Name: name, PeerNS: r.Router.NS, Prefix4: p4, Prefix6: p6,
				Addr4: hostAddr(p4, legBackendHost), Addr6: hostAddr(p6, legBackendHost),
			},
			Gateway4: hostAddr(p4, legRouterHost), Gateway6: hostAddr(p6, legRouterHost),
			Port: c.port,
		}
		if be.NS, err = b.ns(name, hostSysctls(false), backendSysctls); err != nil {
			return nil, err
		}
		leg := fmt.Sprintf("be%d", i)
		if be.Peer, be.NIC, err = link(b, r.Router.NS, leg, &be.Host, "eth0", 1, fabric); err != nil {
			return nil, err
		}
		err = addAddrs(r.Router.NS, leg,
			netip.PrefixFrom(be.Gateway4, p4.Bits()), netip.PrefixFrom(be.Gateway6, p6.Bits()))
		if err != nil {
			return nil, err
		}
		if err := setUp(r.Router.NS, leg); err != nil {
			return nil, err
		}
		err = addRoutes(be.NS,
			route{dst: netip.MustParsePrefix("0.0.0.0/0"), gw: be.Gateway4, dev: "eth0"},
			route{dst: netip.MustParsePrefix("::/0"), gw: be.Gateway6, dev: "eth0"})
		if err != nil {
			return nil, err
		}
		if err := addVIPs(be.NS, r.VIPs); err != nil {
			return nil, err
		}
		r.Backends = append(r.Backends, be)
		if err := b.step("host " + name); err != nil {
			return nil, err
		}
	}
	r.undo.push("backend servers", stopServers(r.Backends))
	return r, b.step("done")
}

// link creates the veth between port in peerNS and nic in h.NS, gives the
// host end a MAC from h.Addr4 and h's addresses, and sets it up. The peer
// end is left down for the caller to finish (enslave, address) first.
func link(b *builder, peerNS *NS, port string, h *Host, nic string, queues, mtu int) (Iface, Iface, error) {
	peer, hostEnd, err := b.veth(
		end{ns: peerNS, name: port, mtu: mtu, queues: queues},
		end{ns: h.NS, name: nic, mac: macFor(h.Addr4), mtu: mtu, queues: queues})
	if err != nil {
		return Iface{}, Iface{}, err
	}
	if err := setUp(h.NS, nic); err != nil {
		return Iface{}, Iface{}, err
	}
	err = addAddrs(h.NS, nic, netip.PrefixFrom(h.Addr4, h.Prefix4.Bits()), netip.PrefixFrom(h.Addr6, h.Prefix6.Bits()))
	if err != nil {
		return Iface{}, Iface{}, err
	}
	return peer, hostEnd, b.step("host " + h.Name + " link")
}

// Close stops the backends' servers and removes every link and namespace
// of the lab. It is idempotent.
func (r *Routed) Close() error { return r.undo.run() }

// StartHTTP starts BackendHandler on every backend not serving yet (see
// Backend.Serve). Close stops them.
func (r *Routed) StartHTTP() error { return startHTTP(r.Backends) }

// HTTPClient returns an HTTP client whose connections start in the client
// namespace, one fresh TCP connection per request.
func (r *Routed) HTTPClient() *http.Client { return r.Client.NS.HTTPClient() }

// Hosts returns the client, the appliance, the router and the backends.
func (r *Routed) Hosts() []*Host {
	hs := []*Host{r.Client, r.Appliance, r.Router}
	for _, b := range r.Backends {
		hs = append(hs, &b.Host)
	}
	return hs
}

// Namespaces returns every namespace of the lab, the switch first.
func (r *Routed) Namespaces() []*NS {
	ns := []*NS{r.Switch}
	for _, h := range r.Hosts() {
		ns = append(ns, h.NS)
	}
	return ns
}

// String describes the lab, one host per line.
func (r *Routed) String() string { return summary("routed", r.ID, r.VIPs, r.Port, r.Hosts()) }
