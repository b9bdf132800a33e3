package lab

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Host is one namespace of a topology with its lab-facing interface.
type Host struct {
	// Name is the host's role: "client", "appliance", "router",
	// "backend-1", ...; its namespace is named <lab ID>-<Name>.
	Name string
	NS   *NS
	// NIC is the host's interface on the lab network ("eth0"), as seen
	// inside NS.
	NIC Iface
	// Peer is the other end of NIC's veth, inside PeerNS: a bridge port in
	// the switch namespace, or a router interface. XDP_TX into NIC needs a
	// program on Peer (see FIELD-NOTES).
	Peer   Iface
	PeerNS *NS
	// Addr4 and Addr6 are NIC's addresses, in the subnets Prefix4 and
	// Prefix6.
	Addr4, Addr6     netip.Addr
	Prefix4, Prefix6 netip.Prefix
}

// Addr returns the host's address of the same family as a.
func (h *Host) Addr(like netip.Addr) netip.Addr {
	if like.Is4() {
		return h.Addr4
	}
	return h.Addr6
}

// Default addresses; doc.go has the whole plan.
var (
	DefaultVIP4 = netip.MustParseAddr("192.0.2.1")
	DefaultVIP6 = netip.MustParseAddr("2001:db8::1")
)

const (
	defaultPrefix   = "weir"
	defaultBackends = 2
	defaultQueues   = 2
	defaultPort     = 80
	maxBackends     = 200
	maxQueues       = 64
	defaultMTU      = 1500
	// maxMTU keeps the appliance NIC attachable: XDP programs without
	// fragment support fail with ERANGE on a veth above about 3500.
	maxMTU = 3400
	// minMTU is IPv6's minimum; below it the kernel drops IPv6 from a link.
	minMTU = 1280
)

// common is the part of the configuration both topologies share.
type common struct {
	prefix   string
	backends int
	queues   int
	port     uint16
	vips     []netip.Addr
}

func checkCommon(prefix string, backends, queues int, port uint16, vips []netip.Addr, subnets ...netip.Prefix) (common, error) {
	c := common{prefix: prefix, backends: backends, queues: queues, port: port}
	if c.prefix == "" {
		c.prefix = defaultPrefix
	}
	if err := checkName(c.prefix); err != nil || len(c.prefix) > 64 {
		return c, fmt.Errorf("prefix %q: want up to 64 letters, digits, '.', '_', '-'", c.prefix)
	}
	if c.backends == 0 {
		c.backends = defaultBackends
	}
	if c.backends < 1 || c.backends > maxBackends {
		return c, fmt.Errorf("backends %d: want 1 to %d", c.backends, maxBackends)
	}
	if c.queues == 0 {
		c.queues = defaultQueues
	}
	if c.queues < 1 || c.queues > maxQueues {
		return c, fmt.Errorf("queues %d: want 1 to %d", c.queues, maxQueues)
	}
	if c.port == 0 {
		c.port = defaultPort
	}
	c.vips = vips
	if len(c.vips) == 0 {
		c.vips = []netip.Addr{DefaultVIP4, DefaultVIP6}
	}
	seen := map[netip.Addr]bool{}
	for _, v := range c.vips {
		switch {
		case !v.IsValid(), v.Zone() != "", v.Is4In6(), v.IsUnspecified(), v.IsLoopback(),
			v.IsMulticast(), v.IsLinkLocalUnicast(), v == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
			return c, fmt.Errorf("VIP %v: want a unicast IPv4 or IPv6 address", v)
		case seen[v]:
			return c, fmt.Errorf("VIP %v listed twice", v)
		}
		for _, s := range subnets {
			if s.Contains(v) {
				return c, fmt.Errorf("VIP %v lies in the lab subnet %v", v, s)
			}
		}
		seen[v] = true
	}
	return c, nil
}

// vipFamilies returns the first IPv4 and the first IPv6 VIP (zero if none).
func vipFamilies(vips []netip.Addr) (v4, v6 netip.Addr) {
	for _, v := range vips {
		if v.Is4() && !v4.IsValid() {
			v4 = v
		}
		if v.Is6() && !v6.IsValid() {
			v6 = v
		}
	}
	return v4, v6
}

// hostAddr returns address number host of the subnet p. For IPv6 the
// decimal digits of host are read as hex digits, so that 10.90.0.11 and
// fd00:90::11 are the same host.
func hostAddr(p netip.Prefix, host int) netip.Addr {
	base := p.Masked().Addr()
	if base.Is4() {
		b := base.As4()
		binary.BigEndian.PutUint32(b[:], binary.BigEndian.Uint32(b[:])+uint32(host))
		return netip.AddrFrom4(b)
	}
	v, _ := strconv.ParseUint(strconv.Itoa(host), 16, 64)
	b := base.As16()
	binary.BigEndian.PutUint64(b[8:], binary.BigEndian.Uint64(b[8:])+v)
	return netip.AddrFrom16(b)
}

// macFor gives a lab interface a stable, locally administered MAC built
// from its IPv4 address (10.90.0.11 -> 02:00:0a:5a:00:0b), so captures and
// neighbour tables read the same on every run.
func macFor(a netip.Addr) MAC {
	b := a.As4()
	return MAC{0x02, 0x00, b[0], b[1], b[2], b[3]}
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func hostPrefix(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, a.BitLen()) }

// Sysctls every lab namespace gets before any link exists, so links
// created later inherit them from "default". They make the lab independent
// of the machine's settings: no reverse-path filter (DSR and encapsulation
// are asymmetric by design), IPv6 on and without duplicate address detection
// (addresses usable at once), no router solicitations (stray packets in
// packet counts), forwarding off unless the namespace routes.
func hostSysctls(forward bool) [][2]string {
	fwd := "0"
	if forward {
		fwd = "1"
	}
	return [][2]string{
		{"net/ipv4/conf/all/rp_filter", "0"},
		{"net/ipv4/conf/default/rp_filter", "0"},
		{"net/ipv6/conf/all/disable_ipv6", "0"},
		{"net/ipv6/conf/default/disable_ipv6", "0"},
		{"net/ipv6/conf/all/accept_dad", "0"},
		{"net/ipv6/conf/default/accept_dad", "0"},
		{"net/ipv6/conf/default/router_solicitations", "0"},
		{"net/ipv4/ip_forward", fwd},
		{"net/ipv6/conf/all/forwarding", fwd},
	}
}

// The switch namespace only bridges: without IPv6 its ports send no
// link-local or multicast traffic of their own.
var switchSysctls = [][2]string{
	{"net/ipv6/conf/all/disable_ipv6", "1"},
	{"net/ipv6/conf/default/disable_ipv6", "1"},
}

// Backends answer for the VIPs on lo but must not claim them on the wire:
// arp_ignore=1 answers ARP only for addresses on the asking interface,
// arp_announce=2 never uses a VIP as the source of an ARP request. (IPv6
// needs nothing: Linux answers neighbour solicitations only for addresses
// on the interface they arrive on.)
var backendSysctls = [][2]string{
	{"net/ipv4/conf/all/arp_ignore", "1"},
	{"net/ipv4/conf/lo/arp_ignore", "1"},
	{"net/ipv4/conf/all/arp_announce", "2"},
	{"net/ipv4/conf/lo/arp_announce", "2"},
}

// buildHook, when set by a test, is called at every construction step and
// fails the construction with its error: it proves that a topology is
// removed whole whichever step fails.
var buildHook func(step string) error

// builder creates the parts of one topology and records how to remove them.
type builder struct {
	id   string
	undo *undoStack
}

func (b *builder) step(what string) error {
	if buildHook != nil {
		if err := buildHook(what); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
	}
	return nil
}

// ns creates the namespace <id>-<role> and applies sysctls to it.
func (b *builder) ns(role string, sysctls ...[][2]string) (*NS, error) {
	n, err := createNS(b.id + "-" + role)
	if err != nil {
		return nil, err
	}
	b.undo.push("namespace "+n.Name(), n.Close)
	for _, list := range sysctls {
		for _, kv := range list {
			if err := n.Sysctl(kv[0], kv[1]); err != nil {
				return nil, err
			}
		}
	}
	return n, b.step("namespace " + role)
}

// end is one end of a veth to create.
type end struct {
	ns     *NS
	name   string
	mac    MAC // zero: the kernel picks one
	mtu    int
	queues int // RX and TX queue count
}

// veth creates a veth from a to z (created in a's namespace, z's end moved
// straight into its own), with TX checksum offload and GRO off on both
// ends, and returns both ends as seen in their namespaces. The ends are
// left down.
func (b *builder) veth(a, z end) (Iface, Iface, error) {
	what := fmt.Sprintf("veth %s/%s - %s/%s", a.ns.Name(), a.name, z.ns.Name(), z.name)
	la := netlink.NewLinkAttrs()
	la.Name = a.name
	la.MTU = a.mtu
	la.NumTxQueues, la.NumRxQueues = a.queues, a.queues
	if a.mac != (MAC{}) {
		la.HardwareAddr = a.mac.HardwareAddr()
	}
	v := &netlink.Veth{
		LinkAttrs:       la,
		PeerName:        z.name,
		PeerTxQLen:      -1,
		PeerMTU:         uint32(z.mtu),
		PeerNumTxQueues: uint32(z.queues),
		PeerNumRxQueues: uint32(z.queues),
	}
	if z.mac != (MAC{}) {
		v.PeerHardwareAddr = z.mac.HardwareAddr()
	}
	h := a.ns.Netlink()
	z.ns.mu.RLock()
	if z.ns.fd < 0 || h == nil {
		z.ns.mu.RUnlock()
		return Iface{}, Iface{}, fmt.Errorf("lab: %s: %w", what, ErrClosed)
	}
	v.PeerNamespace = netlink.NsFd(z.ns.fd)
	err := h.LinkAdd(v)
	z.ns.mu.RUnlock()
	if err != nil {
		return Iface{}, Iface{}, fmt.Errorf("lab: %s: %w", what, err)
	}
	// Deleting one end deletes both. Do it explicitly rather than leave it
	// to namespace teardown, which waits for every socket and process in
	// the namespace to let go.
	b.undo.push(what, func() error { return delLink(a.ns, a.name) })

	for _, e := range []end{a, z} {
		if err := e.ns.SetTxChecksum(e.name, false); err != nil {
			return Iface{}, Iface{}, err
		}
		if err := e.ns.SetGRO(e.name, false); err != nil {
			return Iface{}, Iface{}, err
		}
	}
	ai, err := a.ns.Iface(a.name)
	if err != nil {
		return Iface{}, Iface{}, err
	}
	zi, err := z.ns.Iface(z.name)
	if err != nil {
		return Iface{}, Iface{}, err
	}
	return ai, zi, b.step("veth " + a.name + "-" + z.name)
}

func delLink(n *NS, name string) error {
	h := n.Netlink()
	if h == nil {
		return nil // the namespace is gone, and its links with it
	}
	l, err := h.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("%s: find %s: %w", n.Name(), name, err)
	}
	if err := h.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("%s: delete %s: %w", n.Name(), name, err)
	}
	return nil
}

func setUp(n *NS, names ...string) error {
	for _, name := range names {
		l, err := n.Netlink().LinkByName(name)
		if err == nil {
			err = n.Netlink().LinkSetUp(l)
		}
		if err != nil {
			return fmt.Errorf("lab: %s: set %s up: %w", n.Name(), name, err)
		}
	}
	return nil
}

// addAddrs assigns the addresses (with prefix length) to link; IPv6 ones
// with nodad so they are usable at once.
func addAddrs(n *NS, link string, addrs ...netip.Prefix) error {
	l, err := n.Netlink().LinkByName(link)
	if err != nil {
		return fmt.Errorf("lab: %s: %s: %w", n.Name(), link, err)
	}
	for _, p := range addrs {
		a := &netlink.Addr{IPNet: ipNet(p)}
		if p.Addr().Is6() {
			a.Flags = unix.IFA_F_NODAD
		}
		if err := n.Netlink().AddrAdd(l, a); err != nil {
			return fmt.Errorf("lab: %s: add %v to %s: %w", n.Name(), p, link, err)
		}
	}
	return nil
}

// route is a static route: via gw if it is valid, else on-link out of dev.
type route struct {
	dst netip.Prefix
	gw  netip.Addr
	dev string
	mtu int
}

func addRoutes(n *NS, routes ...route) error {
	for _, r := range routes {
		l, err := n.Netlink().LinkByName(r.dev)
		if err != nil {
			return fmt.Errorf("lab: %s: route %v: %w", n.Name(), r.dst, err)
		}
		nr := &netlink.Route{Dst: ipNet(r.dst.Masked()), LinkIndex: l.Attrs().Index, MTU: r.mtu}
		if r.gw.IsValid() {
			nr.Gw = r.gw.AsSlice()
		} else {
			nr.Scope = netlink.SCOPE_LINK
		}
		if err := n.Netlink().RouteAdd(nr); err != nil {
			return fmt.Errorf("lab: %s: route %v via %v dev %s: %w", n.Name(), r.dst, r.gw, r.dev, err)
		}
	}
	return nil
}

// addVIPs puts the VIPs on a backend's lo, each as a host route.
func addVIPs(n *NS, vips []netip.Addr) error {
	ps := make([]netip.Prefix, len(vips))
	for i, v := range vips {
		ps[i] = hostPrefix(v)
	}
	return addAddrs(n, "lo", ps...)
}

// stopServers is the undo step that stops the backends' HTTP servers, so
// their sockets do not keep the namespaces alive.
func stopServers(bs []*Backend) func() error {
	return func() error {
		var errs []error
		for _, b := range bs {
			errs = append(errs, b.Stop())
		}
		return errors.Join(errs...)
	}
}

// startHTTP starts the default server on every backend that is not serving
// yet; on failure it stops the ones it started.
func startHTTP(bs []*Backend) error {
	var started []*Backend
	for _, b := range bs {
		if b.Serving() {
			continue
		}
		if err := b.Serve(nil); err != nil {
			stopServers(started)()
			return err
		}
		started = append(started, b)
	}
	return nil
}

// summary describes hosts one per line, for logs and `weir lab`.
func summary(kind, id string, vips []netip.Addr, port uint16, hosts []*Host) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "%s lab %s, VIPs %v port %d\n", kind, id, vips, port)
	for _, h := range hosts {
		fmt.Fprintf(&sb, "  %-10s ns %-24s %s ifindex %d mac %s mtu %d  %v %v\n",
			h.Name, h.NS.Name(), h.NIC.Name, h.NIC.Index, h.NIC.MAC, h.NIC.MTU, h.Addr4, h.Addr6)
	}
	return sb.String()
}
