// Package firmware owns the eBPF programs shipped with weir and their Go
// API: loading them, attaching them through bpf_links, filling their maps
// and reading their counters.
//
// The C sources sit next to the bpf2go output (redirect.c, decap.c and the
// shared parse.h). The generated *_bpfel.go and *_bpfel.o are committed, so building
// weir needs no clang; `go generate ./firmware` rebuilds them with Debian's
// clang 14 byte for byte. Only the little-endian BPF target (bpfel) is
// generated: the package builds on amd64, arm64 and other little-endian
// architectures.
//
// # The redirect program (appliance side)
//
// weir_redirect runs in XDP on the appliance's NIC. It sends every frame of a
// VIP flow to the AF_XDP socket of the RX queue the frame arrived on, with
// bpf_redirect_map(&xsks, rx_queue_index, XDP_DROP): if that queue has no
// socket the frame is dropped, never passed, because the host stack would
// answer a SYN for a VIP it does not serve with a RST. Everything else (ARP,
// IPv6 neighbour discovery, the host's own traffic, other addresses) goes to
// the stack untouched.
//
// A frame belongs to a VIP flow when, after at most two 802.1Q/802.1ad tags:
//   - its (destination address, protocol, destination port) is a VIP, or its
//     (address, protocol) has a port-0 VIP (every port). Ports are read for
//     TCP, UDP and SCTP; other protocols match port-0 VIPs only.
//   - it is an ICMPv4 destination-unreachable (incl. fragmentation needed) or
//     time-exceeded, or an ICMPv6 destination-unreachable, packet-too-big or
//     time-exceeded message, whose quoted packet came from a VIP: quoted
//     source address, protocol and source port are a VIP (or a port-0 VIP).
//     These are the replies to a backend's direct-server-return traffic, and
//     PMTU discovery needs them to reach weir.
//   - it is an IP fragment: a first fragment carries ports and matches as
//     above; a later one carries none and matches when its destination
//     address has any VIP of its protocol. IPv6 hop-by-hop, routing,
//     destination-options and fragment headers are walked (eight at most).
//
// Decisions: ICMP echo to a VIP address is not a VIP flow and passes (the
// host answers if it holds the address), unless the address has an ICMP VIP.
// Neighbour discovery always passes, even to an address with an ICMPv6 VIP.
// A malformed frame (truncated headers, IHL < 5, lengths past the frame, an
// overlong extension chain, a tiny first fragment) whose destination address
// could be read and has a VIP of any protocol is dropped and counted: it
// cannot be served, and the stack must not see it. Other malformed frames are
// counted and passed; the stack discards them.
//
// Maps (see redirect.c, one comment per map):
//   - vips: hash, key {addr [16]byte (IPv4 in the first 4 bytes); family 4
//     or 6; protocol; port in network byte order (0: every port)}, value 1.
//   - vip_addrs: hash, same key with port 0, once per (address, protocol) with
//     a VIP and once with protocol 0 per address; value: how many VIPs stand
//     behind the entry. Derived from vips by this package; used for
//     non-first fragments and malformed frames.
//   - xsks: XSKMAP, RX queue index -> AF_XDP socket (RedirectConfig.MaxQueues
//     entries).
//   - counters: per-CPU array of one struct; Redirect.Counters sums it.
//
// # The decap program (backend side)
//
// weir_decap runs in XDP on a backend's interface, because the kernels weir
// targets may lack the ipip, ip6_tunnel and fou modules. It recognises
//   - IPv4 in IPv4 (outer protocol 4) and IPv6 in IPv4 (protocol 41),
//   - IPv4 in IPv6 (outer next header 4) and IPv6 in IPv6 (next header 41),
//   - GUE variant 1: outer IPv4 or IPv6, UDP to DecapConfig.GUEPort, the
//     inner IP header right after the UDP header (its version nibble, 4 or
//     6, says which),
//
// behind at most two VLAN tags, and only when the inner destination is one of
// the configured VIP addresses. It removes the outer IP (and UDP) header with
// bpf_xdp_adjust_head, writes the frame's own Ethernet header and VLAN tags
// (same MACs, same tags) back in front of the inner packet with the inner
// family's ethertype, and returns XDP_PASS: the stack receives the client's
// packet as if it had been delivered directly. The inner packet is not
// changed, except that an outer ECN CE mark is copied into it (RFC 6040,
// IPv4 checksum updated incrementally); an outer CE over a not-ECT inner
// packet is dropped and counted, as RFC 6040 requires.
//
// Everything else passes untouched: other traffic, tunnel packets to other
// inner addresses (counted as not_vip), GUE to other ports, fragmented outer
// IPv4 packets, outer IPv6 packets with extension headers (weir never adds
// any). Tunnel packets with broken headers pass untouched and are counted as
// malformed: a wrong outer IPv4 checksum, outer lengths past the frame, an
// inner version that contradicts the outer protocol, an inner length that
// differs from what the outer headers say, GUE with a UDP length mismatch or
// a version nibble other than 4 and 6 (GUE variant 0). The outer UDP checksum
// is not verified; the inner packet's own checksums are, by the stack.
// The outer destination address is not checked. The outer source is checked
// only against an allow-list (DecapConfig.AllowSources,
// Decap.SetAllowSources), which should name the load balancers: with it, a
// tunnel packet to a VIP from any other source passes untouched (the stack,
// with no tunnel device, drops it) and is counted as foreign_src, so hosts
// that can reach the backend cannot speak for arbitrary clients. Without it
// (the default, for compatibility) every source is accepted.
//
// Maps (see decap.c):
//   - decap_vips: hash, key {addr [16]byte (IPv4 in the first 4 bytes);
//     family uint32, 4 or 6}, value 1. Filled from DecapConfig.VIPs and
//     Decap.SetVIPs.
//   - decap_src4, decap_src6: LPM tries, key {prefixlen uint32; addr [4]
//     or [16]byte}, value 1: the outer source allow-list, filled from
//     DecapConfig.AllowSources and Decap.SetAllowSources.
//   - decap_config: array of one struct {allow_src uint32}: 1 while the
//     allow-list is in force (set after the tries are filled, cleared
//     before they are emptied).
//   - decap_stats: per-CPU array of one struct; Decap.Counters sums it.
//   - .rodata gue_port: the GUE port, fixed when the program is loaded (the
//     verifier sees it as a constant); to change it load a new Decap.
//
// # Lifetime
//
// LoadRedirect and LoadDecap return a verified program (LoadRedirect's with
// empty maps, LoadDecap's with its configured VIPs) that sees no traffic
// until Attach. Attach uses a bpf_link: the kernel detaches the program when
// the link's last descriptor closes, so a crashed appliance does
// not leave its program on the NIC (and the NIC does not keep dropping VIP
// traffic for a dead process). Attachment.Close detaches one interface;
// Redirect.Close and Decap.Close detach every attachment made through them
// and free the program and maps. AF_XDP sockets handed to SetSocket stay the
// caller's. The methods of Redirect and Decap are safe for concurrent use;
// they are control-plane calls (map updates are syscalls), never for the
// per-packet path.
package firmware
