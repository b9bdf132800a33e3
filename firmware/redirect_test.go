package firmware

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/weirlb/weir/internal/testutil"
)

// Addresses of the redirect tests. 192.0.2.1 / 2001:db8::1 are the host's
// own; .10/.20/.30 and ::10/::20/::30 carry VIPs; .99 and ::99 carry none.
var testVIPs = []VIP{
	{Addr: netip.MustParseAddr("192.0.2.10"), Proto: ProtoTCP, Port: 80},
	{Addr: netip.MustParseAddr("192.0.2.10"), Proto: ProtoUDP, Port: 53},
	{Addr: netip.MustParseAddr("192.0.2.20"), Proto: ProtoTCP, Port: 0},
	{Addr: netip.MustParseAddr("2001:db8::10"), Proto: ProtoTCP, Port: 443},
	{Addr: netip.MustParseAddr("2001:db8::10"), Proto: ProtoUDP, Port: 0},
	{Addr: netip.MustParseAddr("2001:db8::20"), Proto: ProtoSCTP, Port: 9000},
	{Addr: netip.MustParseAddr("2001:db8::30"), Proto: ProtoICMPv6, Port: 0},
}

func loadTestRedirect(tb testing.TB, vips []VIP) *Redirect {
	tb.Helper()
	testutil.RequirePrivileged(tb)
	r, err := LoadRedirect()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := r.Close(); err != nil {
			tb.Error(err)
		}
	})
	if err := r.SetVIPs(vips); err != nil {
		tb.Fatal(err)
	}
	return r
}

// Expected counter deltas of one frame, with no socket in the XSKMAP.
var (
	cPass          = RedirectCounters{Passed: 1}
	cPassMalformed = RedirectCounters{Passed: 1, Malformed: 1}
	cDropMalformed = RedirectCounters{DroppedMalformed: 1, Malformed: 1}
	cVIP           = RedirectCounters{DroppedNoSocket: 1}
	cVIPICMP       = RedirectCounters{DroppedNoSocket: 1, ICMPErrors: 1}
	cVIPFrag       = RedirectCounters{DroppedNoSocket: 1, Fragments: 1}
)

func sub(a, b RedirectCounters) RedirectCounters {
	return RedirectCounters{
		Redirected:       a.Redirected - b.Redirected,
		Passed:           a.Passed - b.Passed,
		DroppedNoSocket:  a.DroppedNoSocket - b.DroppedNoSocket,
		DroppedMalformed: a.DroppedMalformed - b.DroppedMalformed,
		Malformed:        a.Malformed - b.Malformed,
		ICMPErrors:       a.ICMPErrors - b.ICMPErrors,
		Fragments:        a.Fragments - b.Fragments,
	}
}

// runRedirect runs frame through r's program once and checks the verdict,
// that the frame comes out unchanged, and the counters' change.
func runRedirect(t *testing.T, r *Redirect, frame []byte, opts *ebpf.RunOptions, want uint32, wantC RedirectCounters) {
	t.Helper()
	runRedirectWith(t, r, r.Program().Run, frame, opts, want, wantC)
}

// runRedirectWith is runRedirect with the test run made by run.
func runRedirectWith(t *testing.T, r *Redirect, run func(*ebpf.RunOptions) (uint32, error),
	frame []byte, opts *ebpf.RunOptions, want uint32, wantC RedirectCounters) {
	t.Helper()
	before, err := r.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if opts == nil {
		opts = &ebpf.RunOptions{}
	}
	opts.Data = frame
	opts.DataOut = make([]byte, len(frame)+256)
	got, err := run(opts)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if got != want {
		t.Errorf("verdict %s, want %s", verdictName(got), verdictName(want))
	}
	if out := opts.DataOut; !slices.Equal(out, frame) {
		t.Errorf("program changed the frame:\n got %x\nwant %x", out, frame)
	}
	after, err := r.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if d := sub(after, before); d != wantC {
		t.Errorf("counters changed by %+v, want %+v", d, wantC)
	}
}

type redirectCase struct {
	name  string
	frame []byte
	want  uint32
	count RedirectCounters
}

func runRedirectCases(t *testing.T, r *Redirect, cases []redirectCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			runRedirect(t, r, tc.frame, nil, tc.want, tc.count)
		})
	}
}

func TestRedirectVIPMatching(t *testing.T) {
	r := loadTestRedirect(t, testVIPs)
	const client, client6 = "198.51.100.7", "2001:db8:c::7"
	tcp4VIP := tcp4(t, client, 40000, "192.0.2.10", 80)
	runRedirectCases(t, r, []redirectCase{
		{"tcp4 to vip port", eth4(tcp4VIP), xdpDrop, cVIP},
		{"udp4 to vip port", eth4(udp4(t, client, 40000, "192.0.2.10", 53)), xdpDrop, cVIP},
		{"tcp4 to wrong port", eth4(tcp4(t, client, 40000, "192.0.2.10", 81)), xdpPass, cPass},
		{"udp4 to the tcp vip's port", eth4(udp4(t, client, 40000, "192.0.2.10", 80)), xdpPass, cPass},
		{"tcp4 to port-0 vip, port 22", eth4(tcp4(t, client, 40000, "192.0.2.20", 22)), xdpDrop, cVIP},
		{"tcp4 to port-0 vip, port 65535", eth4(tcp4(t, client, 40000, "192.0.2.20", 65535)), xdpDrop, cVIP},
		{"udp4 to port-0 tcp vip", eth4(udp4(t, client, 40000, "192.0.2.20", 22)), xdpPass, cPass},
		{"tcp4 to non-vip", eth4(tcp4(t, client, 40000, "192.0.2.99", 80)), xdpPass, cPass},
		{"tcp4 to the host", eth4(tcp4(t, client, 40000, "192.0.2.1", 22)), xdpPass, cPass},
		{"tcp4 from a vip address", eth4(tcp4(t, "192.0.2.10", 80, client, 40000)), xdpPass, cPass},
		{"tcp6 to vip port", eth6(tcp6(t, client6, 40000, "2001:db8::10", 443)), xdpDrop, cVIP},
		{"tcp6 to wrong port", eth6(tcp6(t, client6, 40000, "2001:db8::10", 80)), xdpPass, cPass},
		{"udp6 to port-0 vip", eth6(udp6(t, client6, 40000, "2001:db8::10", 5000)), xdpDrop, cVIP},
		{"udp6 to non-vip", eth6(udp6(t, client6, 40000, "2001:db8::99", 5000)), xdpPass, cPass},
		{"tcp6 to the v4-vip's bytes", eth6(tcp6(t, client6, 40000, "c000:20a::", 80)), xdpPass, cPass},
		{"sctp6 to vip port", eth6(serialize(t, ipv6(client6, "2001:db8::20", layers.IPProtocolSCTP),
			&layers.SCTP{SrcPort: 40000, DstPort: 9000, VerificationTag: 1})), xdpDrop, cVIP},
		{"sctp6 to wrong port", eth6(serialize(t, ipv6(client6, "2001:db8::20", layers.IPProtocolSCTP),
			&layers.SCTP{SrcPort: 40000, DstPort: 9001, VerificationTag: 1})), xdpPass, cPass},
		{"ethernet padding after a vip frame", concat(eth4(udp4(t, client, 1, "192.0.2.10", 53)), make([]byte, 20)), xdpDrop, cVIP},
	})
}

func TestRedirectNonIP(t *testing.T) {
	r := loadTestRedirect(t, testVIPs)
	arp := serialize(t, &layers.ARP{
		AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4,
		HwAddressSize: 6, ProtAddressSize: 4, Operation: layers.ARPRequest,
		SourceHwAddress: macClient, SourceProtAddress: ip("198.51.100.7"),
		DstHwAddress: make([]byte, 6), DstProtAddress: ip("192.0.2.10"),
	})
	// A neighbour solicitation for a VIP address on an address that has an
	// ICMPv6 VIP: neighbour discovery still belongs to the stack.
	ns := func(typ uint8, dst string) []byte {
		icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(typ, 0)}
		ip6 := ipv6("fe80::1", dst, layers.IPProtocolICMPv6)
		ip6.HopLimit = 255
		return eth6(serialize(t, ip6, icmp, &layers.ICMPv6NeighborSolicitation{TargetAddress: ip("2001:db8::30")}))
	}
	echo6 := eth6(serialize(t, ipv6("2001:db8:c::7", "2001:db8::30", layers.IPProtocolICMPv6),
		&layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeEchoRequest, 0)},
		&layers.ICMPv6Echo{Identifier: 1, SeqNumber: 1}))
	echo4 := eth4(serialize(t, ipv4("198.51.100.7", "192.0.2.10", layers.IPProtocolICMPv4),
		&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: 1, Seq: 1}))
	runRedirectCases(t, r, []redirectCase{
		{"arp for a vip", ether(layers.EthernetTypeARP, arp), xdpPass, cPass},
		{"arp for a vip, vlan", ether(layers.EthernetTypeARP, arp, layers.EthernetTypeDot1Q), xdpPass, cPass},
		{"neighbour solicitation to vip address", ns(135, "2001:db8::30"), xdpPass, cPass},
		{"neighbour solicitation to solicited-node", ns(135, "ff02::1:ff00:30"), xdpPass, cPass},
		{"neighbour advertisement to vip address", ns(136, "2001:db8::30"), xdpPass, cPass},
		{"router solicitation", ns(133, "ff02::2"), xdpPass, cPass},
		// Echo is not a VIP flow: it passes (the host answers if it
		// holds the address), unless the address has an ICMP VIP.
		{"icmp echo to tcp/udp vip address", echo4, xdpPass, cPass},
		{"icmpv6 echo to icmpv6 vip", echo6, xdpDrop, cVIP},
		{"lldp", ether(0x88cc, payload(40)), xdpPass, cPass},
	})
}

func TestRedirectVLAN(t *testing.T) {
	r := loadTestRedirect(t, testVIPs)
	vip4 := tcp4(t, "198.51.100.7", 40000, "192.0.2.10", 80)
	vip6 := tcp6(t, "2001:db8:c::7", 40000, "2001:db8::10", 443)
	other := tcp4(t, "198.51.100.7", 40000, "192.0.2.99", 80)
	q, ad := layers.EthernetTypeDot1Q, layers.EthernetTypeQinQ
	runRedirectCases(t, r, []redirectCase{
		{"802.1q vip4", eth4(vip4, q), xdpDrop, cVIP},
		{"802.1q vip6", eth6(vip6, q), xdpDrop, cVIP},
		{"802.1q non-vip", eth4(other, q), xdpPass, cPass},
		{"802.1ad+802.1q vip4", eth4(vip4, ad, q), xdpDrop, cVIP},
		{"802.1q+802.1q vip6", eth6(vip6, q, q), xdpDrop, cVIP},
		{"802.1ad+802.1q non-vip", eth4(other, ad, q), xdpPass, cPass},
		// A third tag is not parsed: the frame is not IP to the program.
		{"three tags vip4", eth4(vip4, ad, q, q), xdpPass, cPass},
		{"truncated tag", eth4(nil, q)[:16], xdpPass, cPassMalformed},
		{"truncated second tag", eth4(nil, ad, q)[:20], xdpPass, cPassMalformed},
	})
}

// icmp4Error is an ICMPv4 error quoting the first 28 bytes of quoted.
func icmp4Error(tb testing.TB, typ, code uint8, from, to string, quoted []byte) []byte {
	ic := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(typ, code)}
	if typ == 3 && code == 4 {
		ic.Seq = 1400 // next-hop MTU
	}
	return eth4(serialize(tb, ipv4(from, to, layers.IPProtocolICMPv4), ic, gopacket.Payload(quoted[:28])))
}

// icmp6Error is an ICMPv6 error quoting quoted.
func icmp6Error(tb testing.TB, typ, code uint8, from, to string, quoted []byte) []byte {
	rest := []byte{0, 0, 0x05, 0x00} // MTU 1280 for packet-too-big, unused otherwise
	return eth6(serialize(tb, ipv6(from, to, layers.IPProtocolICMPv6),
		&layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(typ, code)}, gopacket.Payload(concat(rest, quoted))))
}

func TestRedirectICMPErrors(t *testing.T) {
	r := loadTestRedirect(t, testVIPs)
	const router, client = "203.0.113.1", "198.51.100.7"
	const router6, client6 = "2001:db8:ffff::1", "2001:db8:c::7"
	// Packets a backend sent from a VIP (direct server return) that a
	// router could not forward.
	fromVIP := tcp4(t, "192.0.2.10", 80, client, 40000)
	fromVIPUDP := udp4(t, "192.0.2.10", 53, client, 40000)
	fromWildcard := tcp4(t, "192.0.2.20", 8080, client, 40000)
	fromOtherPort := tcp4(t, "192.0.2.10", 81, client, 40000)
	fromNonVIP := tcp4(t, "192.0.2.99", 80, client, 40000)
	fromVIP6 := tcp6(t, "2001:db8::10", 443, client6, 40000)
	fromVIP6Ext := serialize(t, ipv6("2001:db8::10", client6, layers.IPProtocolIPv6Destination),
		gopacket.Payload(ipv6Opts(layers.IPProtocolUDP, 1)), udp(5353, 40000), payload(8))
	fromOther6 := tcp6(t, "2001:db8::10", 80, client6, 40000)
	truncatedQuote := eth4(serialize(t, ipv4(router, "192.0.2.10", layers.IPProtocolICMPv4),
		&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(3, 4), Seq: 1400}, gopacket.Payload(fromVIP[:22])))

	runRedirectCases(t, r, []redirectCase{
		{"frag needed quoting a vip flow", icmp4Error(t, 3, 4, router, "192.0.2.10", fromVIP), xdpDrop, cVIPICMP},
		{"port unreachable quoting a udp vip flow", icmp4Error(t, 3, 3, router, "192.0.2.10", fromVIPUDP), xdpDrop, cVIPICMP},
		{"time exceeded quoting a vip flow", icmp4Error(t, 11, 0, router, "192.0.2.10", fromVIP), xdpDrop, cVIPICMP},
		{"frag needed quoting a port-0 vip flow", icmp4Error(t, 3, 4, router, "192.0.2.20", fromWildcard), xdpDrop, cVIPICMP},
		{"frag needed quoting a vip flow, vlan", func() []byte {
			f := icmp4Error(t, 3, 4, router, "192.0.2.10", fromVIP)
			return eth4(f[14:], layers.EthernetTypeDot1Q)
		}(), xdpDrop, cVIPICMP},
		{"frag needed quoting a non-vip port", icmp4Error(t, 3, 4, router, "192.0.2.10", fromOtherPort), xdpPass, cPass},
		{"frag needed quoting a non-vip address", icmp4Error(t, 3, 4, router, "192.0.2.99", fromNonVIP), xdpPass, cPass},
		{"redirect message quoting a vip flow", icmp4Error(t, 5, 1, router, "192.0.2.10", fromVIP), xdpPass, cPass},
		{"quote too short for ports", truncatedQuote, xdpPass, cPass},
		{"packet too big quoting a vip flow", icmp6Error(t, 2, 0, router6, "2001:db8::10", fromVIP6), xdpDrop, cVIPICMP},
		{"dest unreachable quoting a vip flow", icmp6Error(t, 1, 4, router6, "2001:db8::10", fromVIP6), xdpDrop, cVIPICMP},
		{"time exceeded quoting a vip flow", icmp6Error(t, 3, 0, router6, "2001:db8::10", fromVIP6), xdpDrop, cVIPICMP},
		{"packet too big quoting a port-0 vip flow behind an ext header", icmp6Error(t, 2, 0, router6, "2001:db8::10", fromVIP6Ext), xdpDrop, cVIPICMP},
		{"packet too big quoting a non-vip port", icmp6Error(t, 2, 0, router6, "2001:db8::10", fromOther6), xdpPass, cPass},
		{"parameter problem quoting a vip flow", icmp6Error(t, 4, 0, router6, "2001:db8::10", fromVIP6), xdpPass, cPass},
	})
}

func TestRedirectFragments(t *testing.T) {
	r := loadTestRedirect(t, testVIPs)
	const client, client6 = "198.51.100.7", "2001:db8:c::7"
	frag4 := func(dst string, proto layers.IPProtocol, offset uint16, more bool, l ...gopacket.SerializableLayer) []byte {
		h := ipv4(client, dst, proto)
		h.FragOffset = offset
		if more {
			h.Flags = layers.IPv4MoreFragments
		}
		return eth4(serialize(t, append([]gopacket.SerializableLayer{h}, l...)...))
	}
	frag6After := func(dst string, first layers.IPProtocol, ext []byte, l ...gopacket.SerializableLayer) []byte {
		h := ipv6(client6, dst, first)
		return eth6(serialize(t, append([]gopacket.SerializableLayer{h, gopacket.Payload(ext)}, l...)...))
	}
	// frag6: the extension chain starts with the fragment header.
	frag6 := func(dst string, ext []byte, l ...gopacket.SerializableLayer) []byte {
		return frag6After(dst, layers.IPProtocolIPv6Fragment, ext, l...)
	}
	runRedirectCases(t, r, []redirectCase{
		{"v4 first fragment to vip port", frag4("192.0.2.10", layers.IPProtocolTCP, 0, true, tcp(40000, 80), payload(64)), xdpDrop, cVIPFrag},
		{"v4 first fragment to wrong port", frag4("192.0.2.10", layers.IPProtocolTCP, 0, true, tcp(40000, 81), payload(64)), xdpPass, cPass},
		{"v4 non-first fragment, tcp to vip address", frag4("192.0.2.10", layers.IPProtocolTCP, 10, true, payload(64)), xdpDrop, cVIPFrag},
		{"v4 last fragment, udp to vip address", frag4("192.0.2.10", layers.IPProtocolUDP, 185, false, payload(64)), xdpDrop, cVIPFrag},
		{"v4 non-first fragment, sctp to vip address", frag4("192.0.2.10", layers.IPProtocolSCTP, 10, true, payload(64)), xdpPass, cPass},
		{"v4 non-first fragment to non-vip", frag4("192.0.2.99", layers.IPProtocolTCP, 10, true, payload(64)), xdpPass, cPass},
		{"v4 tiny first fragment to vip", frag4("192.0.2.10", layers.IPProtocolTCP, 0, true, payload(8)), xdpDrop, cDropMalformed},
		{"v6 first fragment to vip port", frag6("2001:db8::10", ipv6Frag(layers.IPProtocolTCP, 0, true), tcp(40000, 443), payload(64)), xdpDrop, cVIPFrag},
		{"v6 first fragment after hop-by-hop", frag6After("2001:db8::10", layers.IPProtocolIPv6HopByHop, concat(ipv6Opts(44, 1), ipv6Frag(layers.IPProtocolTCP, 0, true)), tcp(40000, 443), payload(64)), xdpDrop, cVIPFrag},
		{"v6 first fragment to wrong port", frag6("2001:db8::10", ipv6Frag(layers.IPProtocolTCP, 0, true), tcp(40000, 444), payload(64)), xdpPass, cPass},
		{"v6 non-first fragment, tcp to vip address", frag6("2001:db8::10", ipv6Frag(layers.IPProtocolTCP, 100, true), payload(64)), xdpDrop, cVIPFrag},
		{"v6 last fragment, udp to vip address", frag6("2001:db8::10", ipv6Frag(layers.IPProtocolUDP, 100, false), payload(64)), xdpDrop, cVIPFrag},
		{"v6 non-first fragment, dstopts first, to vip address", frag6("2001:db8::20", ipv6Frag(layers.IPProtocolIPv6Destination, 100, true), payload(64)), xdpDrop, cVIPFrag},
		{"v6 non-first fragment, sctp to tcp/udp vip address", frag6("2001:db8::10", ipv6Frag(layers.IPProtocolSCTP, 100, true), payload(64)), xdpPass, cPass},
		{"v6 non-first fragment to non-vip", frag6("2001:db8::99", ipv6Frag(layers.IPProtocolTCP, 100, true), payload(64)), xdpPass, cPass},
	})
}

func TestRedirectIPv6ExtensionHeaders(t *testing.T) {
	r := loadTestRedirect(t, testVIPs)
	const client6 = "2001:db8:c::7"
	withExt := func(dst string, first layers.IPProtocol, ext []byte, l ...gopacket.SerializableLayer) []byte {
		return eth6(serialize(t, append([]gopacket.SerializableLayer{ipv6(client6, dst, first), gopacket.Payload(ext)}, l...)...))
	}
	hop, dst, rt := layers.IPProtocolIPv6HopByHop, layers.IPProtocolIPv6Destination, layers.IPProtocolIPv6Routing
	tcpP := layers.IPProtocolTCP
	var long []byte // eight destination-options headers, then TCP
	for i := 0; i < 8; i++ {
		next := dst
		if i == 7 {
			next = tcpP
		}
		long = append(long, ipv6Opts(next, 1)...)
	}
	tooLong := concat(ipv6Opts(dst, 1), long) // nine headers
	runRedirectCases(t, r, []redirectCase{
		{"hop-by-hop then tcp to vip", withExt("2001:db8::10", hop, ipv6Opts(tcpP, 1), tcp(40000, 443)), xdpDrop, cVIP},
		{"hop-by-hop, routing, dstopts then tcp to vip", withExt("2001:db8::10", hop,
			concat(ipv6Opts(rt, 2), ipv6Routing(dst), ipv6Opts(tcpP, 3)), tcp(40000, 443)), xdpDrop, cVIP},
		{"dstopts then tcp to wrong port", withExt("2001:db8::10", dst, ipv6Opts(tcpP, 1), tcp(40000, 80)), xdpPass, cPass},
		{"dstopts then tcp to non-vip", withExt("2001:db8::99", dst, ipv6Opts(tcpP, 1), tcp(40000, 443)), xdpPass, cPass},
		{"eight headers then tcp to vip", withExt("2001:db8::10", dst, long, tcp(40000, 443)), xdpDrop, cVIP},
		{"nine headers to vip address", withExt("2001:db8::10", dst, tooLong, tcp(40000, 443)), xdpDrop, cDropMalformed},
		{"nine headers to non-vip", withExt("2001:db8::99", dst, tooLong, tcp(40000, 443)), xdpPass, cPassMalformed},
		{"no next header", withExt("2001:db8::10", dst, ipv6Opts(layers.IPProtocolNoNextHeader, 1)), xdpPass, cPass},
		{"ext header overruns the packet, to vip address", withExt("2001:db8::10", dst, ipv6Opts(tcpP, 1)[:6]), xdpDrop, cDropMalformed},
	})
}

func TestRedirectMalformed(t *testing.T) {
	r := loadTestRedirect(t, testVIPs)
	const client, client6 = "198.51.100.7", "2001:db8:c::7"
	vip4 := eth4(tcp4(t, client, 40000, "192.0.2.10", 80))
	non4 := eth4(tcp4(t, client, 40000, "192.0.2.99", 80))
	vip6 := eth6(tcp6(t, client6, 40000, "2001:db8::10", 443))
	non6 := eth6(tcp6(t, client6, 40000, "2001:db8::99", 443))
	patch := func(f []byte, off int, b ...byte) []byte {
		f = slices.Clone(f)
		copy(f[off:], b)
		return f
	}
	setTotLen := func(f []byte, n int) []byte {
		return patch(f, 14+2, byte(n>>8), byte(n))
	}
	truncTCP := func(dst string) []byte { // IP length covers 10 bytes of TCP
		return eth4(serialize(t, ipv4(client, dst, layers.IPProtocolTCP), payload(10)))
	}
	// TCP data offset of 4 words (16 bytes), less than the header itself.
	badDoff := patch(vip4, 14+20+12, 0x40)
	// Changing ihl needs no checksum: the program does not verify it.
	runRedirectCases(t, r, []redirectCase{
		{"ethernet header only, ipv4 type", eth4(nil), xdpPass, cPassMalformed},
		{"ipv4 header cut at 15 bytes", vip4[:14+15], xdpPass, cPassMalformed},
		{"ipv4 header cut at 19 bytes", vip4[:14+19], xdpPass, cPassMalformed},
		{"ihl 4 to vip", patch(vip4, 14, 0x44), xdpDrop, cDropMalformed},
		{"ihl 0 to non-vip", patch(non4, 14, 0x40), xdpPass, cPassMalformed},
		{"ihl 15 past the end to vip", patch(vip4, 14, 0x4f), xdpDrop, cDropMalformed},
		{"version 6 in an ipv4 frame to vip", patch(vip4, 14, 0x65), xdpDrop, cDropMalformed},
		{"total length past the frame, to vip", setTotLen(vip4, 200), xdpDrop, cDropMalformed},
		{"total length past the frame, to non-vip", setTotLen(non4, 200), xdpPass, cPassMalformed},
		{"total length below ihl, to vip", setTotLen(vip4, 19), xdpDrop, cDropMalformed},
		{"tcp header cut, to vip", truncTCP("192.0.2.10"), xdpDrop, cDropMalformed},
		{"tcp header cut, to the wildcard vip", truncTCP("192.0.2.20"), xdpDrop, cDropMalformed},
		{"tcp header cut, to non-vip", truncTCP("192.0.2.99"), xdpPass, cPassMalformed},
		{"tcp frame cut inside the header, to vip", vip4[:14+20+12], xdpDrop, cDropMalformed},
		{"tcp data offset below 5, to vip", badDoff, xdpDrop, cDropMalformed},
		// Malformed traffic to a VIP address is dropped whatever its
		// protocol: the address's owner is the appliance.
		{"udp header cut, to a tcp-only vip address", eth4(serialize(t, ipv4(client, "192.0.2.20", layers.IPProtocolUDP), payload(4))), xdpDrop, cDropMalformed},
		{"icmp header cut, to vip", eth4(serialize(t, ipv4(client, "192.0.2.10", layers.IPProtocolICMPv4), payload(4))), xdpDrop, cDropMalformed},
		{"ipv6 header cut", vip6[:14+39], xdpPass, cPassMalformed},
		{"ipv6 payload length past the frame, to vip", patch(vip6, 14+4, 0x01, 0x00), xdpDrop, cDropMalformed},
		{"ipv6 payload length past the frame, to non-vip", patch(non6, 14+4, 0x01, 0x00), xdpPass, cPassMalformed},
		{"ipv6 version 4, to vip", patch(vip6, 14, 0x40), xdpDrop, cDropMalformed},
		{"tcp6 header cut, to vip", eth6(serialize(t, ipv6(client6, "2001:db8::10", layers.IPProtocolTCP), payload(12))), xdpDrop, cDropMalformed},
		{"icmpv6 header cut, to vip", eth6(serialize(t, ipv6(client6, "2001:db8::30", layers.IPProtocolICMPv6), payload(4))), xdpDrop, cDropMalformed},
	})

	t.Run("shorter than an ethernet header", func(t *testing.T) {
		// The kernel never hands XDP less than 14 bytes, and test_run
		// refuses such input: nothing to classify.
		_, err := r.Program().Run(&ebpf.RunOptions{Data: vip4[:13]})
		if err == nil {
			t.Fatal("test_run accepted a 13-byte frame")
		}
	})
}

// TestRedirectCountersAddUp checks that every frame lands in exactly one
// verdict counter, over a mix of frames.
func TestRedirectCountersAddUp(t *testing.T) {
	r := loadTestRedirect(t, testVIPs)
	frames := [][]byte{
		eth4(tcp4(t, "198.51.100.7", 1, "192.0.2.10", 80)),
		eth4(tcp4(t, "198.51.100.7", 1, "192.0.2.99", 80)),
		eth4(tcp4(t, "198.51.100.7", 1, "192.0.2.10", 80))[:14+30],
		eth6(tcp6(t, "2001:db8:c::7", 1, "2001:db8::10", 443)),
		ether(0x88cc, payload(40)),
	}
	const repeat = 1000
	for _, f := range frames {
		if _, err := r.Program().Run(&ebpf.RunOptions{Data: f, Repeat: repeat}); err != nil {
			t.Fatal(err)
		}
	}
	c, err := r.Counters()
	if err != nil {
		t.Fatal(err)
	}
	total := c.Redirected + c.Passed + c.DroppedNoSocket + c.DroppedMalformed
	if total != uint64(len(frames))*repeat {
		t.Errorf("verdict counters sum to %d, want %d: %+v", total, len(frames)*repeat, c)
	}
	want := RedirectCounters{Passed: 2 * repeat, DroppedNoSocket: 2 * repeat, DroppedMalformed: repeat, Malformed: repeat}
	if c != want {
		t.Errorf("counters %+v, want %+v", c, want)
	}
}

func TestVIPValidation(t *testing.T) {
	a := netip.MustParseAddr("192.0.2.10")
	bad := []VIP{
		{},
		{Addr: a, Proto: 0, Port: 80},
		{Addr: a, Proto: ProtoICMP, Port: 1},
		{Addr: netip.MustParseAddr("0.0.0.0"), Proto: ProtoTCP, Port: 80},
		{Addr: netip.MustParseAddr("::"), Proto: ProtoTCP, Port: 80},
		{Addr: netip.MustParseAddr("fe80::1%eth0"), Proto: ProtoTCP, Port: 80},
	}
	for _, v := range bad {
		if _, err := v.normalize(); !errors.Is(err, ErrInvalidVIP) {
			t.Errorf("normalize(%v) = %v, want ErrInvalidVIP", v, err)
		}
	}
	n, err := VIP{Addr: netip.MustParseAddr("::ffff:192.0.2.10"), Proto: ProtoTCP, Port: 80}.normalize()
	if err != nil || n != (VIP{Addr: a, Proto: ProtoTCP, Port: 80}) {
		t.Errorf("v4-mapped vip normalized to %v, %v", n, err)
	}
	for v, want := range map[VIP]string{
		{Addr: a, Proto: ProtoTCP, Port: 80}:                                  "192.0.2.10:80/tcp",
		{Addr: a, Proto: ProtoUDP}:                                            "192.0.2.10:*/udp",
		{Addr: netip.MustParseAddr("2001:db8::1"), Proto: ProtoSCTP, Port: 9}: "[2001:db8::1]:9/sctp",
		{Addr: a, Proto: 47}:                                                  "192.0.2.10:*/47",
	} {
		if got := v.String(); got != want {
			t.Errorf("String() = %q, want %q", got, want)
		}
	}
}

func TestVIPKeyLayout(t *testing.T) {
	k := vipKey(VIP{Addr: netip.MustParseAddr("192.0.2.10"), Proto: ProtoTCP, Port: 0x1234})
	b, err := binaryMarshal(k)
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{192, 0, 2, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 6, 0x12, 0x34}
	if !slices.Equal(b, want) {
		t.Errorf("v4 key %x, want %x", b, want)
	}
	k = vipKey(VIP{Addr: netip.MustParseAddr("2001:db8::1"), Proto: ProtoUDP, Port: 53})
	b, _ = binaryMarshal(k)
	want = append(netip.MustParseAddr("2001:db8::1").AsSlice(), 6, 17, 0, 53)
	if !slices.Equal(b, want) {
		t.Errorf("v6 key %x, want %x", b, want)
	}
}

func binaryMarshal(v any) ([]byte, error) {
	return binary.Append(nil, binary.NativeEndian, v)
}

// readAddrRefs returns the vip_addrs map as "addr/family/proto" -> count.
func readAddrRefs(t *testing.T, r *Redirect) map[redirectVipKey]uint32 {
	t.Helper()
	got := map[redirectVipKey]uint32{}
	var k redirectVipKey
	var n uint32
	it := r.objs.VipAddrs.Iterate()
	for it.Next(&k, &n) {
		got[k] = n
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return got
}

func readVIPKeys(t *testing.T, r *Redirect) []redirectVipKey {
	t.Helper()
	var keys []redirectVipKey
	var k redirectVipKey
	var v uint8
	it := r.objs.Vips.Iterate()
	for it.Next(&k, &v) {
		keys = append(keys, k)
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return keys
}

// checkMaps compares the kernel maps with what vips should produce, computed
// independently of the Go mirror.
func checkMaps(t *testing.T, r *Redirect, vips []VIP) {
	t.Helper()
	wantRefs := map[redirectVipKey]uint32{}
	var wantKeys []redirectVipKey
	seen := map[VIP]bool{}
	for _, v := range vips {
		v.Addr = v.Addr.Unmap()
		if seen[v] {
			continue
		}
		seen[v] = true
		wantRefs[addrKey(v.Addr, v.Proto)]++
		wantRefs[addrKey(v.Addr, 0)]++
		wantKeys = append(wantKeys, vipKey(v))
	}
	if got := readAddrRefs(t, r); !mapsEqual(got, wantRefs) {
		t.Errorf("vip_addrs = %v, want %v", got, wantRefs)
	}
	cmpKey := func(a, b redirectVipKey) int {
		ab, _ := binaryMarshal(a)
		bb, _ := binaryMarshal(b)
		return slices.Compare(ab, bb)
	}
	got := readVIPKeys(t, r)
	slices.SortFunc(got, cmpKey)
	slices.SortFunc(wantKeys, cmpKey)
	if !slices.Equal(got, wantKeys) {
		t.Errorf("vips = %v, want %v", got, wantKeys)
	}
}

func mapsEqual[K comparable, V comparable](a, b map[K]V) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestRedirectVIPSet(t *testing.T) {
	r := loadTestRedirect(t, nil)
	checkMaps(t, r, nil)
	a := netip.MustParseAddr("192.0.2.10")
	v80 := VIP{Addr: a, Proto: ProtoTCP, Port: 80}
	v443 := VIP{Addr: a, Proto: ProtoTCP, Port: 443}
	v53 := VIP{Addr: a, Proto: ProtoUDP, Port: 53}
	v6 := VIP{Addr: netip.MustParseAddr("2001:db8::1"), Proto: ProtoTCP}

	mustNoErr(t, r.AddVIP(v80))
	mustNoErr(t, r.AddVIP(v80)) // idempotent
	checkMaps(t, r, []VIP{v80})
	mustNoErr(t, r.AddVIP(v443))
	mustNoErr(t, r.AddVIP(VIP{Addr: netip.MustParseAddr("::ffff:192.0.2.10"), Proto: ProtoUDP, Port: 53}))
	checkMaps(t, r, []VIP{v80, v443, v53})
	mustNoErr(t, r.RemoveVIP(v80))
	mustNoErr(t, r.RemoveVIP(v80)) // idempotent
	checkMaps(t, r, []VIP{v443, v53})

	mustNoErr(t, r.SetVIPs([]VIP{v6, v53, v53}))
	checkMaps(t, r, []VIP{v6, v53})
	if got := r.VIPs(); !slices.Equal(got, []VIP{v53, v6}) {
		t.Errorf("VIPs() = %v", got)
	}
	if err := r.SetVIPs([]VIP{v6, {Addr: a, Proto: ProtoICMP, Port: 3}}); !errors.Is(err, ErrInvalidVIP) {
		t.Errorf("SetVIPs with an invalid vip: %v", err)
	}
	checkMaps(t, r, []VIP{v6, v53}) // unchanged
	mustNoErr(t, r.SetVIPs(nil))
	checkMaps(t, r, nil)

	// Behaviour follows the maps: the frame matches only while its VIP is set.
	frame := eth4(tcp4(t, "198.51.100.7", 40000, "192.0.2.10", 443))
	runRedirect(t, r, frame, nil, xdpPass, cPass)
	mustNoErr(t, r.AddVIP(v443))
	runRedirect(t, r, frame, nil, xdpDrop, cVIP)
	mustNoErr(t, r.RemoveVIP(v443))
	runRedirect(t, r, frame, nil, xdpPass, cPass)
}

func TestRedirectCapacity(t *testing.T) {
	testutil.RequirePrivileged(t)
	r, err := LoadRedirectConfig(RedirectConfig{MaxVIPs: 3, MaxQueues: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	vip := func(i int) VIP {
		return VIP{Addr: netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), Proto: ProtoTCP, Port: 80}
	}
	mustNoErr(t, r.SetVIPs([]VIP{vip(1), vip(2), vip(3)}))
	if err := r.AddVIP(vip(4)); err == nil {
		t.Error("AddVIP beyond MaxVIPs succeeded")
	}
	// Replacing the whole set needs room for both sets at once.
	if err := r.SetVIPs([]VIP{vip(4), vip(5), vip(6)}); err == nil {
		t.Error("SetVIPs that needs 6 entries in a table of 3 succeeded")
	}
	checkMaps(t, r, []VIP{vip(1), vip(2), vip(3)})
	mustNoErr(t, r.SetVIPs([]VIP{vip(1), vip(2)}))
	mustNoErr(t, r.SetVIPs([]VIP{vip(1), vip(3)}))
	checkMaps(t, r, []VIP{vip(1), vip(3)})

	if err := r.SetSocket(2, 0); err == nil {
		t.Error("SetSocket on queue 2 of 2 succeeded")
	}
	if err := r.ClearSocket(1); err != nil {
		t.Errorf("ClearSocket on an empty queue: %v", err)
	}
	if _, err := LoadRedirectConfig(RedirectConfig{MaxQueues: -1}); err == nil {
		t.Error("negative MaxQueues accepted")
	}
}

// TestRedirectReloadKeepsAddress swaps the only VIP of an address for
// another one over and over while fragments to that address keep arriving:
// because SetVIPs adds before it removes, the address never loses its
// vip_addrs entry and no fragment reaches the host stack.
func TestRedirectReloadKeepsAddress(t *testing.T) {
	r := loadTestRedirect(t, nil)
	a := netip.MustParseAddr("192.0.2.10")
	setA := []VIP{{Addr: a, Proto: ProtoTCP, Port: 80}}
	setB := []VIP{{Addr: a, Proto: ProtoTCP, Port: 8080}}
	mustNoErr(t, r.SetVIPs(setA))

	h := ipv4("198.51.100.7", "192.0.2.10", layers.IPProtocolTCP)
	h.FragOffset = 100
	frag := eth4(serialize(t, h, payload(64)))

	var stop atomic.Bool
	var passed, runs atomic.Int64
	var wg sync.WaitGroup
	started := make(chan struct{})
	wg.Go(func() {
		defer close(started)
		for !stop.Load() {
			v, err := r.Program().Run(&ebpf.RunOptions{Data: frag, Repeat: 50})
			if err != nil {
				t.Error(err)
				return
			}
			if runs.Add(1) == 1 {
				started <- struct{}{}
			}
			if v != xdpDrop {
				passed.Add(1)
			}
		}
	})
	// Reload only while fragments are arriving: on a busy machine the
	// goroutine may not run at all during a quick burst of reloads.
	<-started
	for i := 0; i < 300 || (runs.Load() < 50 && i < 100000); i++ {
		next := setB
		if i%2 == 1 {
			next = setA
		}
		if err := r.SetVIPs(next); err != nil {
			t.Error(err)
			break
		}
	}
	stop.Store(true)
	wg.Wait()
	if passed.Load() != 0 {
		t.Errorf("%d of %d runs passed a VIP fragment during reloads", passed.Load(), runs.Load())
	}
	if runs.Load() < 2 {
		t.Fatalf("only %d runs overlapped the reloads", runs.Load())
	}
	c, err := r.Counters()
	mustNoErr(t, err)
	if c.Passed != 0 || c.Fragments == 0 {
		t.Errorf("counters %+v: want fragments only", c)
	}
}

func TestRedirectClosed(t *testing.T) {
	testutil.RequirePrivileged(t)
	r, err := LoadRedirect()
	mustNoErr(t, err)
	mustNoErr(t, r.Close())
	mustNoErr(t, r.Close())
	v := VIP{Addr: netip.MustParseAddr("192.0.2.10"), Proto: ProtoTCP, Port: 80}
	if err := r.AddVIP(v); !errors.Is(err, ErrClosed) {
		t.Errorf("AddVIP after Close: %v", err)
	}
	if _, err := r.Counters(); !errors.Is(err, ErrClosed) {
		t.Errorf("Counters after Close: %v", err)
	}
	if _, err := r.Attach(1, AttachGeneric); !errors.Is(err, ErrClosed) {
		t.Errorf("Attach after Close: %v", err)
	}
}

// TestRedirectAddRollback fills vip_addrs behind the Go side's back so that
// AddVIP fails half-way, and checks that it leaves no reference behind.
func TestRedirectAddRollback(t *testing.T) {
	testutil.RequirePrivileged(t)
	r, err := LoadRedirectConfig(RedirectConfig{MaxVIPs: 2}) // vip_addrs holds 4
	mustNoErr(t, err)
	defer r.Close()
	v1 := VIP{Addr: netip.MustParseAddr("192.0.2.1"), Proto: ProtoTCP, Port: 80}
	mustNoErr(t, r.AddVIP(v1)) // 2 entries
	junk := addrKey(netip.MustParseAddr("203.0.113.1"), ProtoUDP)
	mustNoErr(t, r.objs.VipAddrs.Update(junk, uint32(1), ebpf.UpdateNoExist)) // 3 entries: one slot left

	v2 := VIP{Addr: netip.MustParseAddr("192.0.2.2"), Proto: ProtoTCP, Port: 80}
	if err := r.AddVIP(v2); err == nil {
		t.Fatal("AddVIP succeeded with vip_addrs full")
	}
	mustNoErr(t, r.objs.VipAddrs.Delete(junk))
	checkMaps(t, r, []VIP{v1})
	if got := r.VIPs(); !slices.Equal(got, []VIP{v1}) {
		t.Errorf("VIPs() = %v after a failed add", got)
	}
	mustNoErr(t, r.AddVIP(v2))
	checkMaps(t, r, []VIP{v1, v2})
}
