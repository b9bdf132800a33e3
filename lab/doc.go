// Package lab builds network-namespace topologies for weir: a client, the
// appliance and backends joined by veths, set up with netlink (no `ip`,
// `ethtool` or `sysctl` commands). `weir lab`, the end-to-end benchmark and
// the privileged integration tests of other packages run on them. All
// traffic stays inside the lab's own namespaces; nothing is created in the
// namespace of the calling process.
//
// # Namespaces
//
// NS is a named network namespace, bind-mounted under /run/netns like
// `ip netns add` does, so `ip netns list` and `ip netns exec` see it while it
// lives. NS.Do runs a function on a thread inside it; NS.Listen,
// NS.DialContext and NS.HTTPClient create sockets inside it (sockets keep
// their namespace for life, so servers and clients then work from any
// goroutine); NS.Sysctl, NS.SNMP, NS.SetTxChecksum and NS.SetGRO configure and
// observe it.
//
// # DSR lab (NewDSR)
//
// One L2 segment: a bridge in its own "switch" namespace, and a namespace
// per host with one veth ("eth0") to it. The VIPs are on each backend's lo;
// the appliance's MAC rewrite delivers client packets to a backend, which
// answers the client directly.
//
//	                     <ID>-switch: bridge br0
//	      +----------------+----------------+----- ... -----+
//	  port client    port appliance     port be1   ...   port beN
//	      |                |                |                |
//	     eth0             eth0             eth0             eth0
//	  <ID>-client     <ID>-appliance   <ID>-backend-1   <ID>-backend-N
//	  10.90.0.1/24    10.90.0.2/24     10.90.0.11/24    10.90.0.(10+N)/24
//	  fd00:90::1/64   fd00:90::2/64    fd00:90::11/64   fd00:90::(10+N)/64
//	                                   lo: the VIPs as /32 and /128
//
//	client routes:   each VIP via the appliance (10.90.0.2, fd00:90::2)
//	backends:        arp_ignore=1, arp_announce=2 on all and lo; the client
//	                 is on-link, so replies go straight to it
//	appliance:       both ends of its veth have Queues RX and TX queues
//
// # Routed lab (NewRouted)
//
// The client, the appliance and a router share a front bridge; each
// backend has its own subnet behind the router, so the appliance reaches
// backends only through the router (IPIP or GUE, never L2 DSR), and
// backends reply through the router straight to the client.
//
//	                     <ID>-switch: bridge br0
//	      +----------------+----------------+
//	  port client    port appliance    port router
//	      |                |                |
//	     eth0             eth0             eth0 10.91.0.254/24, fd00:91::254/64
//	  <ID>-client     <ID>-appliance   <ID>-router (forwarding on)
//	  10.91.0.1/24    10.91.0.2/24       be1 10.92.1.1/24, fd00:92:1::1/64
//	  fd00:91::1/64   fd00:91::2/64       |
//	                                     eth0 <ID>-backend-1: 10.92.1.2/24, fd00:92:1::2/64
//	                                     ...
//	                                     beN 10.92.N.1/24, fd00:92:N::1/64
//	                                      |
//	                                     eth0 <ID>-backend-N: 10.92.N.2/24, fd00:92:N::2/64
//	                                     (every backend: the VIPs on lo as /32 and /128)
//
//	client routes:     each VIP via the appliance; 10.92.0.0/16 and
//	                   fd00:92::/32 via the router
//	appliance routes:  10.92.0.0/16 and fd00:92::/32 via the router
//	router routes:     each VIP via the appliance, so ICMP errors about
//	                   VIP-sourced replies reach it; the client's /32 and
//	                   /128 with MTU ReturnMTU (1500 when only FabricMTU
//	                   is set above 1500)
//	backend routes:    default via the router (10.92.i.1, fd00:92:i::1)
//
// The client's link has MTU 1500; every other link has FabricMTU (default
// 1500), so a larger FabricMTU carries full-size client packets
// encapsulated.
//
// # Benchmark pair (NewPair)
//
// Two namespaces, a traffic generator and the appliance, joined by one bare
// veth with GRO and checksum offload off and no addresses: the end-to-end
// benchmark (package perf) sends frames from a BPF generator on one end and
// counts them back with a BPF sink. See Pair.
//
// # Addresses
//
// Default VIPs are 192.0.2.1 and 2001:db8::1 (documentation ranges). Hosts
// have the same number in both families, the IPv6 one written with the
// same digits (10.90.0.11 and fd00:90::11). Each NIC's MAC is 02:00
// followed by its IPv4 address (10.90.0.11 -> 02:00:0a:5a:00:0b); bridge
// ports keep kernel-chosen MACs. The addresses exist only inside the lab,
// so labs running side by side do not collide.
//
// # What every lab sets up
//
//   - TX checksum offload and GRO off on both ends of every veth: a veth
//     sends partial checksums, which XDP and AF_XDP lose (the receiver then
//     drops the segment, TcpInCsumErrors); a GRO-enabled peer swallows
//     XDP_TX frames. With offload off on the bridge ports too, even a
//     partial checksum from elsewhere is completed before it reaches a host.
//   - The appliance's veth has Queues RX and TX queues on both ends, so XDP
//     attaches (it fails with ENOSPC when the NIC has fewer RX queues than
//     its peer has TX queues). XDP_TX into the NIC needs a program on
//     Host.Peer; AF_XDP copy-mode TX does not.
//   - Sysctls that make the lab independent of the machine: rp_filter off
//     (the traffic is asymmetric by design), IPv6 on with DAD off and
//     addresses added nodad (usable at once), no router solicitations,
//     forwarding off except on the router.
//   - Nothing forwards VIP traffic: without weir's datapath on the appliance,
//     packets to a VIP are dropped there.
//
// # Lifetime
//
// Constructors either return a complete lab or remove everything they
// created and return an error. Close (idempotent, safe after any error)
// stops the backends' HTTP servers, deletes every veth and bridge, and
// releases the namespaces: a named namespace disappears from /run/netns at
// once and the kernel frees it when the last socket or process in it is
// gone, so close the listeners and connections you opened in it too. Defer
// Close (or t.Cleanup it) right after a successful constructor. If a
// process dies without closing its lab, ListNS(prefix) finds the leftover
// namespaces and RemoveNS removes them (`weir lab` should offer that).
//
// The NS and Host values of a lab belong to it: do not Close them yourself,
// and do not use them, or the *netlink.Handle from NS.Netlink, after the lab
// is closed (a closed netlink.Handle would silently act on the calling
// thread's namespace; NS.Netlink returns nil after Close to make misuse
// fail loudly instead).
//
// Everything here needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN for the bind
// mounts). Tests call testutil.RequirePrivileged first.
package lab
