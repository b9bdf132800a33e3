package packet_test

import (
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/weirlb/weir/packet"
)

type parseCase struct {
	name  string
	frame []byte
	// want is compared in full when want.Reason is OK; for any other reason
	// only the reason is specified.
	want packet.Parsed
}

const (
	l3     = packet.EthernetLen // IP header offset without VLAN tags
	l4v4   = l3 + 20
	l4v6   = l3 + 40
	tcp    = packet.ProtoTCP
	udp    = packet.ProtoUDP
	icmp4  = packet.ProtoICMP
	icmp6  = packet.ProtoICMPv6
	ext    = 8 // length of a minimal IPv6 extension header
	noNext = packet.ExtNoNextHeader
)

func truncatedCase(name string, frame []byte) parseCase {
	return parseCase{name: name, frame: frame, want: packet.Parsed{Reason: packet.ReasonTruncated}}
}

func badCase(name string, r packet.Reason, frame []byte) parseCase {
	return parseCase{name: name, frame: frame, want: packet.Parsed{Reason: r}}
}

// goldenCases is the table every parse test runs over: well-formed frames of
// every kind Parse distinguishes, and malformed ones with the reason each
// must be dropped for.
func goldenCases() []parseCase {
	eth4 := ethHdr(packet.EtherTypeIPv4)
	eth6 := ethHdr(packet.EtherTypeIPv6)
	tcp20 := func(flags uint8) []byte { return tcpSeg(51000, 443, flags, 0, nil) }
	hdrTCP4 := v4{Proto: tcp, Src: client4, Dst: vip4}
	hdrUDP4 := v4{Proto: udp, Src: client4, Dst: vip4}
	hdrTCP6 := v6{NH: tcp, Src: client6, Dst: vip6}
	hdrUDP6 := v6{NH: udp, Src: client6, Dst: vip6}
	k4tcp := key4(client4, vip4, 51000, 443, tcp)
	k6tcp := key6(client6, vip6, 51000, 443, tcp)
	k6udp := key6(client6, vip6, 40000, 53, udp)
	icmpErr4 := func(quote []byte) []byte {
		return cat(eth4, v4{Proto: icmp4, Src: router4, Dst: vip4}.build(
			icmpMsg(packet.ICMPv4DestUnr, packet.ICMPv4FragNeed, 1400, quote)))
	}
	icmpErr6 := func(quote []byte) []byte {
		return cat(eth6, v6{NH: icmp6, Src: router6, Dst: vip6}.build(
			icmpMsg(packet.ICMPv6TooBig, 0, 1280, quote)))
	}

	cases := []parseCase{
		// --- well-formed IPv4 ---
		{"ipv4-tcp-syn-df", frameV4TCP(), packet.Parsed{
			Key: k4tcp, L3Off: l3, L4Off: l4v4, IPLen: 40, Family: 4, Proto: tcp, DF: true, TCPFlags: packet.TCPFlagSYN}},
		{"ipv4-udp", frameV4UDP(), packet.Parsed{
			Key: key4(client4, vip4, 40000, 53, udp), L3Off: l3, L4Off: l4v4, IPLen: 128, Family: 4, Proto: udp}},
		{"ipv4-tcp-tos-fin-ack-data", cat(eth4, v4{TOS: 0xb8, Proto: tcp, Src: client4, Dst: vip4}.build(
			tcpSeg(51000, 443, packet.TCPFlagFIN|packet.TCPFlagACK, 12, make([]byte, 999)))), packet.Parsed{
			Key: k4tcp, L3Off: l3, L4Off: l4v4, IPLen: 20 + 32 + 999, Family: 4, Proto: tcp, TOS: 0xb8,
			TCPFlags: packet.TCPFlagFIN | packet.TCPFlagACK}},
		{"ipv4-tcp-rst-max-data-offset", cat(eth4, hdrTCP4.build(tcpSeg(51000, 443, packet.TCPFlagRST, 40, nil))), packet.Parsed{
			Key: k4tcp, L3Off: l3, L4Off: l4v4, IPLen: 80, Family: 4, Proto: tcp, TCPFlags: packet.TCPFlagRST}},
		{"ipv4-udp-length-below-ip-payload", cat(eth4, hdrUDP4.build(patch16(udpDgram(40000, 53, make([]byte, 10)), 4, 8))),
			// RFC 768 leaves the bytes after the UDP length to be ignored, as Linux does.
			packet.Parsed{Key: key4(client4, vip4, 40000, 53, udp), L3Off: l3, L4Off: l4v4, IPLen: 38, Family: 4, Proto: udp}},
		{"ipv4-gre-no-ports", cat(eth4, v4{Proto: 47, Src: client4, Dst: vip4}.build(make([]byte, 24))), packet.Parsed{
			Key: key4(client4, vip4, 0, 0, 47), L3Off: l3, L4Off: l4v4, IPLen: 44, Family: 4, Proto: 47}},
		{"ipv4-ipip", cat(eth4, v4{Proto: packet.ProtoIPIP, Src: client4, Dst: vip4}.build(frameV4TCP()[l3:])), packet.Parsed{
			Key: key4(client4, vip4, 0, 0, packet.ProtoIPIP), L3Off: l3, L4Off: l4v4, IPLen: 60, Family: 4, Proto: packet.ProtoIPIP}},
		{"ipv4-ethernet-padding", cat(eth4, hdrUDP4.build(udpDgram(40000, 53, []byte{1, 2, 3, 4})), []byte{0xde, 0xad, 0xbe, 0xef, 0xde, 0xad, 0xbe, 0xef, 0xde, 0xad, 0xbe, 0xef, 0xde, 0xad}),
			packet.Parsed{Key: key4(client4, vip4, 40000, 53, udp), L3Off: l3, L4Off: l4v4, IPLen: 32, Family: 4, Proto: udp}},
		{"ipv4-icmp-echo", cat(eth4, v4{Proto: icmp4, Src: client4, Dst: vip4}.build(icmpMsg(packet.ICMPv4EchoReq, 0, 0x00010002, make([]byte, 56)))),
			packet.Parsed{Key: key4(client4, vip4, 0, 0, icmp4), L3Off: l3, L4Off: l4v4, IPLen: 84, Family: 4, Proto: icmp4, ICMPType: packet.ICMPv4EchoReq}},
		{"ipv4-icmpv6-type-is-not-an-error", cat(eth4, v4{Proto: icmp6, Src: client4, Dst: vip4}.build(icmpMsg(packet.ICMPv6TooBig, 0, 0, quoteV4(vip4, client4, tcp, 443, 51000, 8)))),
			packet.Parsed{Key: key4(client4, vip4, 0, 0, icmp6), L3Off: l3, L4Off: l4v4, IPLen: 56, Family: 4, Proto: icmp6, ICMPType: packet.ICMPv6TooBig}},

		// --- IPv4 fragments: keyed without ports so that all pieces go one way ---
		{"ipv4-first-fragment", cat(eth4, v4{Frag: packet.IPv4FlagMF, Proto: tcp, Src: client4, Dst: vip4}.build(tcpSeg(51000, 443, packet.TCPFlagACK, 0, make([]byte, 1000)))),
			packet.Parsed{Key: key4(client4, vip4, 0, 0, tcp), L3Off: l3, L4Off: l4v4, IPLen: 1040, Family: 4, Proto: tcp, Fragment: true}},
		{"ipv4-middle-fragment", cat(eth4, v4{Frag: packet.IPv4FlagMF | 185, Proto: tcp, Src: client4, Dst: vip4}.build(make([]byte, 1480))),
			packet.Parsed{Key: key4(client4, vip4, 0, 0, tcp), L3Off: l3, IPLen: 1500, Family: 4, Proto: tcp, Fragment: true}},
		{"ipv4-last-fragment", cat(eth4, v4{Frag: 370, Proto: udp, Src: client4, Dst: vip4}.build(make([]byte, 3))),
			packet.Parsed{Key: key4(client4, vip4, 0, 0, udp), L3Off: l3, IPLen: 23, Family: 4, Proto: udp, Fragment: true}},
		{"ipv4-fragment-too-short-for-ports", cat(eth4, v4{Frag: packet.IPv4FlagMF, Proto: udp, Src: client4, Dst: vip4}.build(make([]byte, 2))),
			packet.Parsed{Key: key4(client4, vip4, 0, 0, udp), L3Off: l3, L4Off: l4v4, IPLen: 22, Family: 4, Proto: udp, Fragment: true}},

		// --- VLAN tags ---
		{"vlan-8100-ipv4", cat(ethHdr(packet.EtherTypeIPv4, packet.EtherTypeVLAN), hdrTCP4.build(tcp20(packet.TCPFlagACK))), packet.Parsed{
			Key: k4tcp, VLANTags: 1, L3Off: l3 + 4, L4Off: l4v4 + 4, IPLen: 40, Family: 4, Proto: tcp, TCPFlags: packet.TCPFlagACK}},
		{"vlan-88a8-ipv6", cat(ethHdr(packet.EtherTypeIPv6, packet.EtherTypeQinQ), hdrTCP6.build(tcp20(packet.TCPFlagSYN))), packet.Parsed{
			Key: k6tcp, VLANTags: 1, L3Off: l3 + 4, L4Off: l4v6 + 4, IPLen: 60, Family: 6, Proto: tcp, DF: true, TCPFlags: packet.TCPFlagSYN}},
		{"qinq-88a8-8100-ipv4", frameVLANv4TCP(), packet.Parsed{
			Key: key4(client4, vip4, 51000, 80, tcp), VLANTags: 2, L3Off: l3 + 8, L4Off: l4v4 + 8, IPLen: 240, Family: 4, Proto: tcp,
			TCPFlags: packet.TCPFlagACK | packet.TCPFlagPSH}},
		{"double-8100-ipv6-udp", cat(ethHdr(packet.EtherTypeIPv6, packet.EtherTypeVLAN, packet.EtherTypeVLAN), hdrUDP6.build(udpDgram(40000, 53, make([]byte, 17)))),
			packet.Parsed{Key: k6udp, VLANTags: 2, L3Off: l3 + 8, L4Off: l4v6 + 8, IPLen: 65, Family: 6, Proto: udp, DF: true}},
		badCase("three-vlan-tags", packet.ReasonTooManyVLANs,
			cat(ethHdr(packet.EtherTypeIPv4, packet.EtherTypeQinQ, packet.EtherTypeVLAN, packet.EtherTypeVLAN), hdrTCP4.build(tcp20(0)))),
		badCase("vlan-arp", packet.ReasonNotIP, cat(ethHdr(packet.EtherTypeARP, packet.EtherTypeVLAN), make([]byte, 28))),
		truncatedCase("vlan-tag-cut", ethHdr(packet.EtherTypeIPv4, packet.EtherTypeVLAN)[:16]),
		truncatedCase("second-vlan-tag-cut", ethHdr(packet.EtherTypeIPv4, packet.EtherTypeQinQ, packet.EtherTypeVLAN)[:20]),

		// --- well-formed IPv6 and extension headers ---
		{"ipv6-tcp", frameV6TCP(), packet.Parsed{
			Key: k6tcp, L3Off: l3, L4Off: l4v6, IPLen: 40 + 32 + 64, Family: 6, Proto: tcp, DF: true, TCPFlags: packet.TCPFlagACK}},
		{"ipv6-udp-traffic-class", cat(eth6, v6{TC: 0xb8, Flow: 0xabcde, NH: udp, Src: client6, Dst: vip6}.build(udpDgram(40000, 53, nil))), packet.Parsed{
			Key: k6udp, L3Off: l3, L4Off: l4v6, IPLen: 48, Family: 6, Proto: udp, TOS: 0xb8, DF: true}},
		{"ipv6-hop-by-hop-tcp", cat(eth6, v6{NH: packet.ExtHopByHop, Src: client6, Dst: vip6}.build(cat(ext6(tcp, 1), tcp20(packet.TCPFlagSYN)))),
			packet.Parsed{Key: k6tcp, L3Off: l3, L4Off: l4v6 + 8, IPLen: 68, Family: 6, Proto: tcp, DF: true, TCPFlags: packet.TCPFlagSYN}},
		{"ipv6-routing-udp", cat(eth6, v6{NH: packet.ExtRouting, Src: client6, Dst: vip6}.build(cat(ext6(udp, 3), udpDgram(40000, 53, make([]byte, 4))))),
			packet.Parsed{Key: k6udp, L3Off: l3, L4Off: l4v6 + 24, IPLen: 40 + 24 + 12, Family: 6, Proto: udp, DF: true}},
		{"ipv6-hbh-dest-routing-dest-tcp", cat(eth6, v6{NH: packet.ExtHopByHop, Src: client6, Dst: vip6}.build(cat(
			ext6(packet.ExtDestOptions, 2), ext6(packet.ExtRouting, 1), ext6(packet.ExtDestOptions, 3), ext6(tcp, 1), tcp20(packet.TCPFlagACK)))),
			packet.Parsed{Key: k6tcp, L3Off: l3, L4Off: l4v6 + 56, IPLen: 40 + 56 + 20, Family: 6, Proto: tcp, DF: true, TCPFlags: packet.TCPFlagACK}},
		{"ipv6-max-ext-headers", cat(eth6, v6{NH: packet.ExtDestOptions, Src: client6, Dst: vip6}.build(cat(
			destChain(packet.MaxIPv6ExtHeaders, tcp), tcp20(packet.TCPFlagSYN)))),
			packet.Parsed{Key: k6tcp, L3Off: l3, L4Off: l4v6 + 8*packet.MaxIPv6ExtHeaders, IPLen: 40 + 8*packet.MaxIPv6ExtHeaders + 20,
				Family: 6, Proto: tcp, DF: true, TCPFlags: packet.TCPFlagSYN}},
		badCase("ipv6-too-many-ext-headers", packet.ReasonBadExtHeader, cat(eth6, v6{NH: packet.ExtDestOptions, Src: client6, Dst: vip6}.build(cat(
			destChain(packet.MaxIPv6ExtHeaders+1, tcp), tcp20(packet.TCPFlagSYN))))),
		badCase("ipv6-ext-header-past-payload", packet.ReasonBadExtHeader, cat(eth6, v6{NH: packet.ExtHopByHop, Src: client6, Dst: vip6}.build(
			ext6(tcp, 2)[:8]))),
		badCase("ipv6-ext-header-shorter-than-8", packet.ReasonBadExtHeader, cat(eth6, v6{NH: packet.ExtRouting, Src: client6, Dst: vip6}.build(
			ext6(tcp, 1)[:6]))),
		badCase("ipv6-fragment-header-cut", packet.ReasonBadExtHeader, cat(eth6, v6{NH: packet.ExtFragment, Src: client6, Dst: vip6}.build(
			frag6(tcp, 0, true, 7)[:7]))),
		{"ipv6-no-next-header", cat(eth6, v6{NH: noNext, Src: client6, Dst: vip6}.build(nil)), packet.Parsed{
			Key: key6(client6, vip6, 0, 0, noNext), L3Off: l3, L4Off: l4v6, IPLen: 40, Family: 6, Proto: noNext, DF: true}},
		{"ipv6-ethernet-padding", cat(eth6, hdrUDP6.build(udpDgram(40000, 53, nil)), []byte{0xff, 0xff, 0xff, 0xff}), packet.Parsed{
			Key: k6udp, L3Off: l3, L4Off: l4v6, IPLen: 48, Family: 6, Proto: udp, DF: true}},

		// --- IPv6 fragments ---
		{"ipv6-first-fragment", cat(eth6, v6{NH: packet.ExtHopByHop, Src: client6, Dst: vip6}.build(cat(
			ext6(packet.ExtFragment, 1), frag6(tcp, 0, true, 0xdead), tcp20(packet.TCPFlagSYN), make([]byte, 1000)))),
			packet.Parsed{Key: key6(client6, vip6, 0, 0, tcp), L3Off: l3, L4Off: l4v6 + 16, IPLen: 40 + 16 + 1020, Family: 6, Proto: tcp, DF: true, Fragment: true}},
		{"ipv6-non-first-fragment", cat(eth6, v6{NH: packet.ExtFragment, Src: client6, Dst: vip6}.build(cat(
			frag6(tcp, 185, false, 0xdead), make([]byte, 77)))),
			packet.Parsed{Key: key6(client6, vip6, 0, 0, tcp), L3Off: l3, IPLen: 40 + 8 + 77, Family: 6, Proto: tcp, DF: true, Fragment: true}},
		{"ipv6-middle-fragment", cat(eth6, v6{NH: packet.ExtFragment, Src: client6, Dst: vip6}.build(cat(
			frag6(udp, 1, true, 1), make([]byte, 8)))),
			packet.Parsed{Key: key6(client6, vip6, 0, 0, udp), L3Off: l3, IPLen: 56, Family: 6, Proto: udp, DF: true, Fragment: true}},
		{"ipv6-atomic-fragment", cat(eth6, v6{NH: packet.ExtFragment, Src: client6, Dst: vip6}.build(cat(
			frag6(udp, 0, false, 9), udpDgram(40000, 53, make([]byte, 3))))),
			packet.Parsed{Key: k6udp, L3Off: l3, L4Off: l4v6 + 8, IPLen: 40 + 8 + 11, Family: 6, Proto: udp, DF: true}},

		// --- ICMP errors: the key is the quoted VIP->client flow turned around ---
		{"icmpv4-frag-needed", frameICMPv4FragNeeded(), packet.Parsed{
			Key: k4tcp, L3Off: l3, L4Off: l4v4, IPLen: 20 + 8 + 28, Family: 4, Proto: icmp4, TOS: 0xc0,
			ICMPError: true, ICMPType: packet.ICMPv4DestUnr, ICMPCode: packet.ICMPv4FragNeed}},
		{"icmpv4-frag-needed-long-quote", icmpErr4(quoteV4(vip4, client4, tcp, 443, 51000, 520)), packet.Parsed{
			Key: k4tcp, L3Off: l3, L4Off: l4v4, IPLen: 20 + 8 + 540, Family: 4, Proto: icmp4,
			ICMPError: true, ICMPType: packet.ICMPv4DestUnr, ICMPCode: packet.ICMPv4FragNeed}},
		{"icmpv4-time-exceeded-udp-quote", cat(ethHdr(packet.EtherTypeIPv4, packet.EtherTypeVLAN), v4{Proto: icmp4, Src: router4, Dst: vip4}.build(
			icmpMsg(packet.ICMPv4TimeExc, 0, 0, quoteV4(vip4, client4, udp, 53, 40000, 8)))), packet.Parsed{
			Key: key4(client4, vip4, 40000, 53, udp), VLANTags: 1, L3Off: l3 + 4, L4Off: l4v4 + 4, IPLen: 56, Family: 4, Proto: icmp4,
			ICMPError: true, ICMPType: packet.ICMPv4TimeExc}},
		{"icmpv4-quote-with-ip-options", icmpErr4(cat(
			v4{Proto: tcp, Src: vip4, Dst: client4, Opts: []byte{1, 1, 1, 0}}.build(tcpSeg(443, 51000, 0, 0, nil))[:32])), packet.Parsed{
			Key: k4tcp, L3Off: l3, L4Off: l4v4, IPLen: 20 + 8 + 32, Family: 4, Proto: icmp4,
			ICMPError: true, ICMPType: packet.ICMPv4DestUnr, ICMPCode: packet.ICMPv4FragNeed}},
		{"icmpv4-quote-first-fragment", icmpErr4(
			v4{Frag: packet.IPv4FlagMF, Proto: tcp, Src: vip4, Dst: client4}.build(tcpSeg(443, 51000, 0, 0, nil))[:28]), packet.Parsed{
			Key: k4tcp, L3Off: l3, L4Off: l4v4, IPLen: 56, Family: 4, Proto: icmp4,
			ICMPError: true, ICMPType: packet.ICMPv4DestUnr, ICMPCode: packet.ICMPv4FragNeed}},
		badCase("icmpv4-quote-from-other-address", packet.ReasonBadICMP, icmpErr4(quoteV4(other4, client4, tcp, 443, 51000, 8))),
		badCase("icmpv4-quote-7-bytes-of-ports", packet.ReasonBadICMP, icmpErr4(quoteV4(vip4, client4, tcp, 443, 51000, 7))),
		badCase("icmpv4-quote-shorter-than-ip-header", packet.ReasonBadICMP, icmpErr4(quoteV4(vip4, client4, tcp, 443, 51000, 0)[:19])),
		badCase("icmpv4-no-quote", packet.ReasonBadICMP, icmpErr4(nil)),
		badCase("icmpv4-quote-of-icmp", packet.ReasonBadICMP, icmpErr4(
			v4{Proto: icmp4, Src: vip4, Dst: client4}.build(icmpMsg(0, 0, 0, nil)))),
		badCase("icmpv4-quote-non-first-fragment", packet.ReasonBadICMP, icmpErr4(
			v4{Frag: 100, Proto: tcp, Src: vip4, Dst: client4}.build(tcpSeg(443, 51000, 0, 0, nil))[:28])),
		badCase("icmpv4-quote-version-6", packet.ReasonBadICMP, icmpErr4(patch(quoteV4(vip4, client4, tcp, 443, 51000, 8), 0, 0x65))),
		badCase("icmpv4-quote-ihl-4", packet.ReasonBadICMP, icmpErr4(patch(quoteV4(vip4, client4, tcp, 443, 51000, 8), 0, 0x44))),
		badCase("icmpv4-quote-ihl-15-past-quote", packet.ReasonBadICMP, icmpErr4(patch(quoteV4(vip4, client4, tcp, 443, 51000, 40), 0, 0x4f))),
		{"icmpv6-packet-too-big", frameICMPv6TooBig(), packet.Parsed{
			Key: k6tcp, L3Off: l3, L4Off: l4v6, IPLen: 40 + 8 + 1232, Family: 6, Proto: icmp6, DF: true,
			ICMPError: true, ICMPType: packet.ICMPv6TooBig}},
		{"icmpv6-too-big-after-hbh-quote-with-dest-opts", cat(eth6, v6{NH: packet.ExtHopByHop, Src: router6, Dst: vip6}.build(cat(ext6(icmp6, 1),
			icmpMsg(packet.ICMPv6TooBig, 0, 1280, quoteV6(vip6, client6, ext6(tcp, 2), packet.ExtDestOptions, 443, 51000, 8))))), packet.Parsed{
			Key: k6tcp, L3Off: l3, L4Off: l4v6 + 8, IPLen: 40 + 8 + 8 + 40 + 16 + 8, Family: 6, Proto: icmp6, DF: true,
			ICMPError: true, ICMPType: packet.ICMPv6TooBig}},
		{"icmpv6-dest-unreachable-quote-first-fragment", cat(eth6, v6{NH: icmp6, Src: router6, Dst: vip6}.build(
			icmpMsg(packet.ICMPv6DestUnr, 4, 0, quoteV6(vip6, client6, frag6(udp, 0, true, 1), packet.ExtFragment, 53, 40000, 8)))), packet.Parsed{
			Key: key6(client6, vip6, 40000, 53, udp), L3Off: l3, L4Off: l4v6, IPLen: 40 + 8 + 40 + 8 + 8, Family: 6, Proto: icmp6, DF: true,
			ICMPError: true, ICMPType: packet.ICMPv6DestUnr, ICMPCode: 4}},
		{"icmpv6-echo", cat(eth6, v6{NH: icmp6, Src: client6, Dst: vip6}.build(icmpMsg(packet.ICMPv6EchoReq, 0, 1, make([]byte, 8)))), packet.Parsed{
			Key: key6(client6, vip6, 0, 0, icmp6), L3Off: l3, L4Off: l4v6, IPLen: 56, Family: 6, Proto: icmp6, DF: true, ICMPType: packet.ICMPv6EchoReq}},
		{"icmpv4-type-in-ipv6-is-not-an-error", cat(eth6, v6{NH: icmp4, Src: client6, Dst: vip6}.build(icmpMsg(packet.ICMPv4DestUnr, 4, 0, nil))), packet.Parsed{
			Key: key6(client6, vip6, 0, 0, icmp4), L3Off: l3, L4Off: l4v6, IPLen: 48, Family: 6, Proto: icmp4, DF: true, ICMPType: packet.ICMPv4DestUnr, ICMPCode: 4}},
		badCase("icmpv6-quote-from-other-address", packet.ReasonBadICMP, icmpErr6(quoteV6(other6, client6, nil, tcp, 443, 51000, 8))),
		badCase("icmpv6-quote-7-bytes-of-ports", packet.ReasonBadICMP, icmpErr6(quoteV6(vip6, client6, nil, tcp, 443, 51000, 7))),
		badCase("icmpv6-quote-cut-in-ext-header", packet.ReasonBadICMP, icmpErr6(quoteV6(vip6, client6, ext6(tcp, 2), packet.ExtHopByHop, 443, 51000, 0)[:50])),
		badCase("icmpv6-quote-non-first-fragment", packet.ReasonBadICMP, icmpErr6(quoteV6(vip6, client6, frag6(tcp, 10, true, 1), packet.ExtFragment, 443, 51000, 8))),
		badCase("icmpv6-quote-version-4", packet.ReasonBadICMP, icmpErr6(patch(quoteV6(vip6, client6, nil, tcp, 443, 51000, 8), 0, 0x40))),
		badCase("icmpv6-quote-of-icmpv6", packet.ReasonBadICMP, icmpErr6(v6{NH: icmp6, Src: vip6, Dst: client6}.build(icmpMsg(packet.ICMPv6EchoReq, 0, 0, nil)))),
		badCase("icmpv6-quote-ipv4", packet.ReasonBadICMP, icmpErr6(quoteV4(vip4, client4, tcp, 443, 51000, 8))),

		// --- not IP ---
		badCase("arp", packet.ReasonNotIP, cat(ethHdr(packet.EtherTypeARP), make([]byte, 46))),
		badCase("lldp", packet.ReasonNotIP, cat(ethHdr(0x88cc), make([]byte, 46))),
		badCase("802.3-length", packet.ReasonNotIP, cat(ethHdr(46), make([]byte, 46))),

		// --- malformed IP headers ---
		truncatedCase("empty", nil),
		truncatedCase("13-bytes", frameV4TCP()[:13]),
		truncatedCase("ethernet-only", eth4),
		truncatedCase("ipv4-header-cut", frameV4TCP()[:l3+19]),
		truncatedCase("ipv6-header-cut", frameV6TCP()[:l3+39]),
		truncatedCase("ipv4-total-length-past-frame", patch16(frameV4TCP(), l3+2, 41)),
		truncatedCase("ipv6-payload-length-past-frame", patch16(frameV6TCP(), l3+4, 97)),
		badCase("ipv4-ethertype-version-6", packet.ReasonBadVersion, cat(eth4, hdrTCP6.build(tcp20(0)))),
		badCase("ipv6-ethertype-version-4", packet.ReasonBadVersion, cat(eth6, hdrTCP4.build(tcp20(0)), make([]byte, 20))),
		badCase("ipv4-version-0", packet.ReasonBadVersion, patch(frameV4TCP(), l3, 0x05)),
		badCase("ipv4-ihl-4", packet.ReasonBadIHL, patch(frameV4TCP(), l3, 0x44)),
		badCase("ipv4-ihl-0", packet.ReasonBadIHL, patch(frameV4TCP(), l3, 0x40)),
		badCase("ipv4-total-length-below-ihl", packet.ReasonBadLength, patch16(frameV4TCP(), l3+2, 19)),
		badCase("ipv4-total-length-0", packet.ReasonBadLength, patch16(frameV4TCP(), l3+2, 0)),
		badCase("ipv4-total-length-below-options", packet.ReasonBadLength, patch16(
			cat(eth4, v4{Proto: tcp, Src: client4, Dst: vip4, Opts: make([]byte, 8)}.build(tcp20(0))), l3+2, 24)),
		truncatedCase("ipv4-ihl-15-past-frame", cat(eth4, patch16(patch(hdrUDP4.build(nil), 0, 0x4f), 2, 60), make([]byte, 30))),
		badCase("ipv4-ttl-0", packet.ReasonTTLExpired, patch(frameV4TCP(), l3+8, 0)),
		badCase("ipv6-hop-limit-0", packet.ReasonTTLExpired, patch(frameV6TCP(), l3+7, 0)),

		// --- malformed transport headers ---
		badCase("tcp-data-offset-4", packet.ReasonBadLength, patch(frameV4TCP(), l4v4+12, 0x40)),
		badCase("tcp-data-offset-0", packet.ReasonBadLength, patch(frameV6TCP(), l4v6+12, 0x00)),
		badCase("tcp-data-offset-past-packet", packet.ReasonBadLength, patch(frameV4TCP(), l4v4+12, 0xf0)),
		badCase("tcp-data-offset-past-packet-into-padding", packet.ReasonBadLength, cat(patch(frameV4TCP(), l4v4+12, 0x60), make([]byte, 4))),
		truncatedCase("tcp-header-cut-by-ip-length", cat(eth4, hdrTCP4.build(tcp20(0)[:19]))),
		truncatedCase("tcp6-header-cut-by-ip-length", cat(eth6, hdrTCP6.build(tcp20(0)[:12]), make([]byte, 8))),
		truncatedCase("udp-header-cut-by-ip-length", cat(eth4, hdrUDP4.build(udpDgram(1, 2, nil)[:7]), make([]byte, 10))),
		truncatedCase("icmp-header-cut-by-ip-length", cat(eth4, v4{Proto: icmp4, Src: client4, Dst: vip4}.build(icmpMsg(8, 0, 0, nil)[:4]))),
		truncatedCase("icmpv6-header-cut-by-ip-length", cat(eth6, v6{NH: icmp6, Src: client6, Dst: vip6}.build(icmpMsg(128, 0, 0, nil)[:7]))),
		badCase("udp-length-7", packet.ReasonBadLength, patch16(frameV4UDP(), l4v4+4, 7)),
		badCase("udp-length-0", packet.ReasonBadLength, patch16(frameV4UDP(), l4v4+4, 0)),
		badCase("udp-length-past-ip-payload", packet.ReasonBadLength, patch16(frameV4UDP(), l4v4+4, 109)),
		badCase("udp6-length-past-ip-payload-into-padding", packet.ReasonBadLength, cat(
			patch16(cat(eth6, hdrUDP6.build(udpDgram(40000, 53, nil))), l4v6+4, 12), make([]byte, 8))),
	}

	// IPv4 options: every IHL from 6 to 15.
	for ihl := 6; ihl <= 15; ihl++ {
		opts := make([]byte, 4*(ihl-5))
		for i := range opts {
			opts[i] = 1 // NOP
		}
		if ihl%2 == 0 {
			opts[len(opts)-1] = 0 // end of option list
		}
		off := uint16(l3 + 4*ihl)
		cases = append(cases, parseCase{fmt.Sprintf("ipv4-ihl-%d", ihl),
			cat(eth4, v4{Proto: udp, Src: client4, Dst: vip4, Opts: opts}.build(udpDgram(40000, 53, make([]byte, 7)))),
			packet.Parsed{Key: key4(client4, vip4, 40000, 53, udp), L3Off: l3, L4Off: off, IPLen: off - l3 + 15, Family: 4, Proto: udp}})
	}
	return cases
}

// destChain returns n destination-options headers, the last announcing nh.
func destChain(n int, nh uint8) []byte {
	var b []byte
	for i := range n {
		next := uint8(packet.ExtDestOptions)
		if i == n-1 {
			next = nh
		}
		b = append(b, ext6(next, 1)...)
	}
	return b
}

// dirty is what every test's Parsed holds before Parse: Parse must overwrite
// all of it.
var dirty = packet.Parsed{
	Key:    packet.FlowKey{Src: [16]byte{0xee}, Dst: [16]byte{0xee}, SrcPort: 0xeeee, DstPort: 0xeeee, Proto: 0xee, Family: 0xee},
	Reason: 0xee, VLANTags: 0xee, L3Off: 0xeeee, L4Off: 0xeeee, IPLen: 0xeeee, Family: 0xee, Proto: 0xee, TOS: 0xee,
	DF: true, Fragment: true, ICMPError: true, ICMPType: 0xee, ICMPCode: 0xee, TCPFlags: 0xee,
}

func TestParseGolden(t *testing.T) {
	names := map[string]bool{}
	for _, tc := range goldenCases() {
		t.Run(tc.name, func(t *testing.T) {
			if names[tc.name] {
				t.Fatalf("duplicate case name")
			}
			names[tc.name] = true
			p := dirty
			packet.Parse(tc.frame, &p)
			if tc.want.Reason != packet.OK {
				if p.Reason != tc.want.Reason {
					t.Fatalf("Reason = %v, want %v (parsed %+v)", p.Reason, tc.want.Reason, p)
				}
				return
			}
			if p != tc.want {
				t.Fatalf("Parse mismatch\n got %s\nwant %s", fmtParsed(&p), fmtParsed(&tc.want))
			}
		})
	}
}

func fmtParsed(p *packet.Parsed) string {
	k := p.Key
	return fmt.Sprintf("{%v key{%x -> %x %d->%d proto %d fam %d} vlans %d l3 %d l4 %d iplen %d fam %d proto %d tos %#x df %v frag %v icmperr %v icmp %d/%d flags %#x}",
		p.Reason, k.Src, k.Dst, k.SrcPort, k.DstPort, k.Proto, k.Family, p.VLANTags, p.L3Off, p.L4Off, p.IPLen,
		p.Family, p.Proto, p.TOS, p.DF, p.Fragment, p.ICMPError, p.ICMPType, p.ICMPCode, p.TCPFlags)
}

// TestParsePrefixes parses every prefix of every well-formed golden frame:
// a prefix that ends before the IP packet does is truncated, one that keeps
// the whole IP packet (dropping only Ethernet padding) parses as the frame.
func TestParsePrefixes(t *testing.T) {
	for _, tc := range goldenCases() {
		if tc.want.Reason != packet.OK {
			continue
		}
		end := int(tc.want.L3Off) + int(tc.want.IPLen)
		for n := 0; n < len(tc.frame); n++ {
			var p packet.Parsed
			packet.Parse(tc.frame[:n], &p)
			if n < end && p.Reason != packet.ReasonTruncated {
				t.Errorf("%s: prefix of %d bytes (IP packet ends at %d): Reason = %v, want truncated", tc.name, n, end, p.Reason)
			}
			if n >= end && p != tc.want {
				t.Errorf("%s: prefix of %d bytes keeps the IP packet but parses as %s", tc.name, n, fmtParsed(&p))
			}
		}
	}
}

// TestParseShortIPLength lowers the IP length field of every well-formed,
// unfragmented golden frame to each value below its real length and cuts the
// frame to match: while the cut falls inside a header Parse needs, the frame
// must be rejected; it must never panic.
func TestParseShortIPLength(t *testing.T) {
	for _, tc := range goldenCases() {
		w := tc.want
		if w.Reason != packet.OK || w.Fragment {
			continue
		}
		l3off, l4off := int(w.L3Off), int(w.L4Off)
		need := l4off // bytes the frame must hold up to the end of what Parse reads
		switch w.Proto {
		case tcp:
			need += int(tc.frame[l4off+12]>>4) * 4
		case udp:
			need += int(binary.BigEndian.Uint16(tc.frame[l4off+4:]))
		case icmp4, icmp6:
			need += 8
		}
		minLen := 20
		if w.Family == 6 {
			minLen = 40
		}
		for ipLen := minLen; ipLen < int(w.IPLen); ipLen++ {
			f := append([]byte(nil), tc.frame[:l3off+ipLen]...)
			if w.Family == 4 {
				binary.BigEndian.PutUint16(f[l3off+2:], uint16(ipLen))
			} else {
				binary.BigEndian.PutUint16(f[l3off+4:], uint16(ipLen-40))
			}
			var p packet.Parsed
			packet.Parse(f, &p)
			if l3off+ipLen < need && p.Reason == packet.OK {
				t.Errorf("%s: IP length %d cuts a header (needs %d) but Parse says OK: %s", tc.name, ipLen, need-l3off, fmtParsed(&p))
			}
			if p.Reason == packet.OK && (p.IPLen != uint16(ipLen) || p.Key != w.Key) {
				t.Errorf("%s: IP length %d: parsed %s", tc.name, ipLen, fmtParsed(&p))
			}
		}
	}
}

func TestReasonString(t *testing.T) {
	seen := map[string]packet.Reason{}
	for r := packet.OK; r < packet.NumReasons; r++ {
		s := r.String()
		if s == "" || s == "unknown" {
			t.Errorf("Reason(%d) has no name", r)
		}
		if prev, ok := seen[s]; ok {
			t.Errorf("Reason(%d) and Reason(%d) are both %q", prev, r, s)
		}
		seen[s] = r
	}
	if got := packet.NumReasons.String(); got != "unknown" {
		t.Errorf("NumReasons.String() = %q, want unknown", got)
	}
	if got := packet.Reason(255).String(); got != "unknown" {
		t.Errorf("Reason(255).String() = %q, want unknown", got)
	}
}

// TestParseHugeIPv6 feeds IPv6 packets near the 64 KiB payload limit. Parsed
// holds offsets and lengths in 16 bits, so a packet that does not fit them
// must be rejected rather than reported with a wrapped length.
func TestParseHugeIPv6(t *testing.T) {
	for _, tc := range []struct {
		name  string
		l2    []byte
		plen  int
		wantR packet.Reason
	}{
		{"fits", ethHdr(packet.EtherTypeIPv6), 0xffff - 40 - l3, packet.OK},
		{"fits-with-vlans", ethHdr(packet.EtherTypeIPv6, packet.EtherTypeQinQ, packet.EtherTypeVLAN), 0xffff - 40 - l3 - 8, packet.OK},
		{"one-byte-too-many", ethHdr(packet.EtherTypeIPv6), 0xffff - 40 - l3 + 1, packet.ReasonBadLength},
		{"max-payload", ethHdr(packet.EtherTypeIPv6), 0xffff, packet.ReasonBadLength},
		{"max-payload-first-fragment", ethHdr(packet.EtherTypeIPv6), 0xffff, packet.ReasonBadLength},
	} {
		t.Run(tc.name, func(t *testing.T) {
			payload := udpDgram(40000, 53, make([]byte, tc.plen-8))
			if tc.plen > 0xffff-8 {
				payload = patch16(payload, 4, 8) // UDP length cannot say more
			}
			h := v6{NH: udp, Src: client6, Dst: vip6}
			if tc.name == "max-payload-first-fragment" {
				h.NH = packet.ExtFragment
				payload = cat(frag6(udp, 0, true, 1), payload)[:tc.plen]
			}
			f := cat(tc.l2, h.build(payload))
			var p packet.Parsed
			packet.Parse(f, &p)
			if p.Reason != tc.wantR {
				t.Fatalf("Reason = %v, want %v (%s)", p.Reason, tc.wantR, fmtParsed(&p))
			}
			if p.Reason == packet.OK && (int(p.L3Off)+int(p.IPLen) != len(f) || p.L4Off != p.L3Off+40) {
				t.Fatalf("parsed %s for a %d-byte frame", fmtParsed(&p), len(f))
			}
		})
	}
}
