package appliance

import (
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weirlb/weir/packet"
)

// nextHops finds the MAC addresses frames to backends must carry: for a DSR
// backend its own MAC, for an encapsulated one the MAC of the next hop on
// the route to it. Both come from the kernel's routing and neighbour tables
// through netlink; an unknown neighbour is probed (NTF_USE makes the kernel
// start ARP or neighbour discovery) and reported as unresolved until it
// answers. A backend without a MAC gets no traffic.
type nextHops struct {
	nl      *netlink.Handle
	ifindex int
	ifname  string
}

// resolution is what resolve learned about one backend.
type resolution struct {
	mac     packet.MAC
	nextHop netip.Addr
	err     error // why it is not resolved (nil while a probe is pending)
}

// resolve looks up the MAC for backend addr of a VIP in the given mode.
func (h *nextHops) resolve(mode Mode, addr netip.Addr) resolution {
	hop := addr
	if mode != ModeDSR {
		routes, err := h.nl.RouteGet(net.IP(addr.AsSlice()))
		if err != nil || len(routes) == 0 {
			return resolution{err: fmt.Errorf("no route to backend %s: %v", addr, err)}
		}
		r := routes[0]
		if r.LinkIndex != h.ifindex {
			return resolution{err: fmt.Errorf("route to backend %s leaves through another interface (index %d), not %s: encapsulated packets go out of the interface they came in", addr, r.LinkIndex, h.ifname)}
		}
		if r.Gw != nil {
			gw, _ := netip.AddrFromSlice(r.Gw)
			hop = gw.Unmap()
		}
	}
	res := resolution{nextHop: hop}
	family := netlink.FAMILY_V4
	if hop.Is6() {
		family = netlink.FAMILY_V6
	}
	neighs, err := h.nl.NeighList(h.ifindex, family)
	if err != nil {
		res.err = fmt.Errorf("list neighbours of %s: %w", h.ifname, err)
		return res
	}
	for _, n := range neighs {
		ip, ok := netip.AddrFromSlice(n.IP)
		if !ok || ip.Unmap() != hop {
			continue
		}
		usable := n.State&(netlink.NUD_REACHABLE|netlink.NUD_STALE|netlink.NUD_DELAY|netlink.NUD_PROBE|netlink.NUD_PERMANENT|netlink.NUD_NOARP) != 0
		if usable && len(n.HardwareAddr) == 6 {
			res.mac = packet.MAC(n.HardwareAddr)
			if n.State&(netlink.NUD_STALE) != 0 {
				h.probe(hop) // confirm it is still there
			}
			return res
		}
		if n.State&netlink.NUD_FAILED != 0 {
			res.err = fmt.Errorf("neighbour %s on %s does not answer", hop, h.ifname)
		}
	}
	h.probe(hop)
	return res
}

// probe asks the kernel to resolve addr on the interface.
func (h *nextHops) probe(addr netip.Addr) {
	family := netlink.FAMILY_V4
	if addr.Is6() {
		family = netlink.FAMILY_V6
	}
	// NTF_USE with NLM_F_CREATE creates the entry if needed and kicks off
	// resolution, without sending anything ourselves.
	h.nl.NeighSet(&netlink.Neigh{
		LinkIndex: h.ifindex,
		Family:    family,
		IP:        net.IP(addr.AsSlice()),
		Flags:     unix.NTF_USE,
	})
}

// fillMACs sets the MAC of every backend of m that has no static MAC, from
// resolve, and returns the backends it could not resolve (key: "vip
// backend").
func (h *nextHops) fillMACs(m *Model) map[string]resolution {
	unresolved := make(map[string]resolution)
	for i := range m.VIPs {
		v := &m.VIPs[i]
		for j := range v.Backends {
			b := &v.Backends[j]
			if b.MAC != (packet.MAC{}) {
				continue
			}
			r := h.resolve(v.Mode, b.Addr)
			if r.mac == (packet.MAC{}) {
				unresolved[v.VIPKey.String()+" "+b.Addr.String()] = r
				continue
			}
			b.MAC = r.mac
		}
	}
	return unresolved
}

// waitResolved resolves m's MACs, probing and retrying until every backend
// has one or timeout passes; it returns the model with what was found.
func (h *nextHops) waitResolved(m Model, timeout time.Duration) (Model, map[string]resolution) {
	deadline := time.Now().Add(timeout)
	for {
		mm := m.clone()
		unresolved := h.fillMACs(&mm)
		if len(unresolved) == 0 || time.Now().After(deadline) {
			return mm, unresolved
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// clone deep-copies the model so resolved MACs never leak into the caller's.
func (m Model) clone() Model {
	out := m
	out.VIPs = make([]VIP, len(m.VIPs))
	for i, v := range m.VIPs {
		out.VIPs[i] = v
		out.VIPs[i].Backends = append([]Backend(nil), v.Backends...)
	}
	return out
}
