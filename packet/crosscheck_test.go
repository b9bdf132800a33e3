package packet_test

// Cross-check Parse against gopacket: random valid frames are serialized by
// gopacket's layers and decoded by gopacket's DecodingLayers, and Parse must
// agree with both the generator and the decoder.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/weirlb/weir/packet"
)

var nf = gopacket.NilDecodeFeedback

// gpView is what gopacket decodes from a frame, in the terms Parse uses.
type gpView struct {
	tags      int
	l3off     int
	family    int
	src, dst  net.IP
	ipLen     int
	tos       uint8
	df        bool
	frag      bool // a fragment that is not atomic
	firstFrag bool
	proto     uint8
	l4off     int // 0 for a non-first fragment
	ports     bool
	sport     uint16
	dport     uint16
	tcpFlags  uint8
	icmp      bool
	icmpType  uint8
	icmpCode  uint8
	icmpBody  []byte // the bytes after the 8-byte ICMP header
}

// gpDecode decodes frame layer by layer with gopacket's DecodingLayers.
func gpDecode(frame []byte) (v gpView, err error) {
	var eth layers.Ethernet
	if err := eth.DecodeFromBytes(frame, nf); err != nil {
		return v, fmt.Errorf("ethernet: %w", err)
	}
	off := len(eth.Contents)
	et := eth.EthernetType
	for et == layers.EthernetTypeDot1Q || et == layers.EthernetTypeQinQ {
		var d layers.Dot1Q
		if err := d.DecodeFromBytes(frame[off:], nf); err != nil {
			return v, fmt.Errorf("dot1q: %w", err)
		}
		off += len(d.Contents)
		et = d.Type
		v.tags++
	}
	v.l3off = off
	var nh layers.IPProtocol
	switch et {
	case layers.EthernetTypeIPv4:
		var ip layers.IPv4
		if err := ip.DecodeFromBytes(frame[off:], nf); err != nil {
			return v, fmt.Errorf("ipv4: %w", err)
		}
		if ip.Version != 4 {
			return v, errors.New("ipv4: bad version")
		}
		v.family, v.src, v.dst = 4, ip.SrcIP, ip.DstIP
		v.ipLen, v.tos = int(ip.Length), ip.TOS
		v.df = ip.Flags&layers.IPv4DontFragment != 0
		v.frag = ip.Flags&layers.IPv4MoreFragments != 0 || ip.FragOffset != 0
		v.firstFrag = v.frag && ip.FragOffset == 0
		nh = ip.Protocol
		off += len(ip.Contents)
	case layers.EthernetTypeIPv6:
		var ip layers.IPv6
		if err := ip.DecodeFromBytes(frame[off:], nf); err != nil {
			return v, fmt.Errorf("ipv6: %w", err)
		}
		if ip.Version != 6 {
			return v, errors.New("ipv6: bad version")
		}
		v.family, v.src, v.dst = 6, ip.SrcIP, ip.DstIP
		v.ipLen, v.tos, v.df = 40+int(ip.Length), ip.TrafficClass, true
		nh = ip.NextHeader
		off += len(ip.Contents)
		if ip.HopByHop != nil {
			nh = ip.HopByHop.NextHeader
			off += len(ip.HopByHop.Contents)
		}
		end := v.l3off + v.ipLen
		if end > len(frame) {
			return v, errors.New("ipv6: truncated")
		}
	exts:
		for {
			switch nh {
			case layers.IPProtocolIPv6HopByHop, layers.IPProtocolIPv6Routing, layers.IPProtocolIPv6Destination:
				var x layers.IPv6ExtensionSkipper
				if err := x.DecodeFromBytes(frame[off:end], nf); err != nil {
					return v, fmt.Errorf("ipv6 extension %d: %w", nh, err)
				}
				off += len(x.Contents)
				nh = x.NextHeader
			case layers.IPProtocolIPv6Fragment:
				var f layers.IPv6Fragment
				if err := f.DecodeFromBytes(frame[off:end], nf); err != nil {
					return v, fmt.Errorf("ipv6 fragment: %w", err)
				}
				off += len(f.Contents)
				nh = f.NextHeader
				if f.FragmentOffset != 0 || f.MoreFragments {
					v.frag, v.firstFrag = true, f.FragmentOffset == 0
					break exts
				}
			default:
				break exts
			}
		}
	default:
		return v, fmt.Errorf("not IP: %v", et)
	}
	v.proto = uint8(nh)
	if v.frag && !v.firstFrag {
		return v, nil
	}
	v.l4off = off
	if v.frag {
		return v, nil
	}
	end := v.l3off + v.ipLen
	if end > len(frame) || off > end {
		return v, errors.New("truncated")
	}
	l4 := frame[off:end]
	switch nh {
	case layers.IPProtocolTCP:
		var t layers.TCP
		if err := t.DecodeFromBytes(l4, nf); err != nil {
			return v, fmt.Errorf("tcp: %w", err)
		}
		v.ports, v.sport, v.dport = true, uint16(t.SrcPort), uint16(t.DstPort)
		for i, f := range []bool{t.FIN, t.SYN, t.RST, t.PSH, t.ACK, t.URG, t.ECE, t.CWR} {
			if f {
				v.tcpFlags |= 1 << i
			}
		}
	case layers.IPProtocolUDP:
		var u layers.UDP
		if err := u.DecodeFromBytes(l4, nf); err != nil {
			return v, fmt.Errorf("udp: %w", err)
		}
		v.ports, v.sport, v.dport = true, uint16(u.SrcPort), uint16(u.DstPort)
	case layers.IPProtocolICMPv4:
		var c layers.ICMPv4
		if err := c.DecodeFromBytes(l4, nf); err != nil {
			return v, fmt.Errorf("icmpv4: %w", err)
		}
		v.icmp, v.icmpType, v.icmpCode, v.icmpBody = true, c.TypeCode.Type(), c.TypeCode.Code(), c.Payload
	case layers.IPProtocolICMPv6:
		var c layers.ICMPv6
		if err := c.DecodeFromBytes(l4, nf); err != nil {
			return v, fmt.Errorf("icmpv6: %w", err)
		}
		if len(c.Payload) < 4 {
			return v, errors.New("icmpv6: truncated")
		}
		v.icmp, v.icmpType, v.icmpCode, v.icmpBody = true, c.TypeCode.Type(), c.TypeCode.Code(), c.Payload[4:]
	}
	return v, nil
}

// gpQuote decodes the packet an ICMP error quotes: its addresses, protocol
// and the first four bytes of its transport header.
func gpQuote(q []byte, family int) (src, dst net.IP, proto uint8, sport, dport uint16, err error) {
	off := 0
	nh := layers.IPProtocol(0)
	if family == 4 {
		var ip layers.IPv4
		if err := ip.DecodeFromBytes(q, nf); err != nil {
			return nil, nil, 0, 0, 0, err
		}
		src, dst, nh, off = ip.SrcIP, ip.DstIP, ip.Protocol, len(ip.Contents)
	} else {
		var ip layers.IPv6
		if err := ip.DecodeFromBytes(q, nf); err != nil {
			return nil, nil, 0, 0, 0, err
		}
		src, dst, nh, off = ip.SrcIP, ip.DstIP, ip.NextHeader, len(ip.Contents)
		if ip.HopByHop != nil {
			nh, off = ip.HopByHop.NextHeader, off+len(ip.HopByHop.Contents)
		}
		for nh == layers.IPProtocolIPv6HopByHop || nh == layers.IPProtocolIPv6Destination ||
			nh == layers.IPProtocolIPv6Routing || nh == layers.IPProtocolIPv6Fragment {
			if nh == layers.IPProtocolIPv6Fragment {
				var f layers.IPv6Fragment
				if err := f.DecodeFromBytes(q[off:], nf); err != nil {
					return nil, nil, 0, 0, 0, err
				}
				if f.FragmentOffset != 0 {
					return nil, nil, 0, 0, 0, errors.New("quote is a non-first fragment")
				}
				nh, off = f.NextHeader, off+len(f.Contents)
				continue
			}
			var x layers.IPv6ExtensionSkipper
			if err := x.DecodeFromBytes(q[off:], nf); err != nil {
				return nil, nil, 0, 0, 0, err
			}
			nh, off = x.NextHeader, off+len(x.Contents)
		}
	}
	if len(q) < off+4 {
		return nil, nil, 0, 0, 0, errors.New("quote too short for ports")
	}
	return src, dst, uint8(nh), binary.BigEndian.Uint16(q[off:]), binary.BigEndian.Uint16(q[off+2:]), nil
}

// genFrame is a random valid frame and the Parsed it must give.
type genFrame struct {
	desc  string
	frame []byte
	want  packet.Parsed
}

func randIP(r *rand.Rand, family int) net.IP {
	if family == 4 {
		return net.IP(randBytes(r, 4))
	}
	ip := net.IP(randBytes(r, 16))
	if ip.To4() != nil {
		ip[0] = 0x20 // keep gopacket from treating it as IPv4-mapped
	}
	return ip
}

func addrKey(ip net.IP) (a [16]byte) {
	if v4 := ip.To4(); v4 != nil && len(ip) == 4 {
		copy(a[:], v4)
		return a
	}
	copy(a[:], ip)
	return a
}

func mustSerialize(tb testing.TB, ls ...gopacket.SerializableLayer) []byte {
	tb.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		tb.Fatalf("gopacket serialize: %v", err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// genRandomFrame builds a random frame with gopacket: 0-2 VLAN tags, IPv4
// (with options and fragments) or IPv6 (with extension chains and
// fragments), TCP, UDP, ICMP echo, ICMP errors quoting a VIP->client packet,
// or another protocol.
func genRandomFrame(tb testing.TB, r *rand.Rand) genFrame {
	tb.Helper()
	var g genFrame
	w := &g.want
	family := 4 + 2*r.IntN(2)
	w.Family = uint8(family)

	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr(randBytes(r, 6)), DstMAC: net.HardwareAddr(randBytes(r, 6))}
	ls := []gopacket.SerializableLayer{eth}
	ipType := layers.EthernetTypeIPv4
	if family == 6 {
		ipType = layers.EthernetTypeIPv6
	}
	tags := r.IntN(3)
	w.VLANTags = uint8(tags)
	tpids := []layers.EthernetType{layers.EthernetTypeDot1Q, layers.EthernetTypeQinQ}
	next := &eth.EthernetType
	for range tags {
		*next = tpids[r.IntN(2)]
		tag := &layers.Dot1Q{Priority: uint8(r.IntN(8)), VLANIdentifier: uint16(r.IntN(4096))}
		ls = append(ls, tag)
		next = &tag.Type
	}
	*next = ipType
	w.L3Off = uint16(14 + 4*tags)

	// The transport: what it is decides the rest.
	kind := []string{"tcp", "udp", "tcp", "udp", "echo", "error", "other"}[r.IntN(7)]
	fragKind := "none"
	if (kind == "tcp" || kind == "udp" || kind == "other") && r.IntN(4) == 0 {
		fragKind = []string{"first", "middle", "last"}[r.IntN(3)]
	}
	src, dst := randIP(r, family), randIP(r, family)
	w.Key.Family = uint8(family)
	w.Key.Src, w.Key.Dst = addrKey(src), addrKey(dst)
	w.TOS = uint8(r.Uint32())
	w.DF = family == 6 || r.IntN(2) == 0
	w.Fragment = fragKind != "none"

	var proto layers.IPProtocol
	var netLayer gopacket.NetworkLayer
	hdrLen := 0 // bytes of IP header and extension headers before L4
	var ipLayers []gopacket.SerializableLayer
	switch kind {
	case "tcp":
		proto = layers.IPProtocolTCP
	case "udp":
		proto = layers.IPProtocolUDP
	case "echo", "error":
		proto = layers.IPProtocolICMPv4
		if family == 6 {
			proto = layers.IPProtocolICMPv6
		}
	case "other":
		proto = layers.IPProtocol([]uint8{47, 50, 51, 132, 253}[r.IntN(5)])
	}
	if family == 4 {
		ip := &layers.IPv4{Version: 4, TOS: w.TOS, Id: uint16(r.Uint32()), TTL: uint8(1 + r.IntN(255)), Protocol: proto, SrcIP: src, DstIP: dst}
		if w.DF {
			ip.Flags |= layers.IPv4DontFragment
		}
		switch fragKind {
		case "first":
			ip.Flags |= layers.IPv4MoreFragments
		case "middle":
			ip.Flags |= layers.IPv4MoreFragments
			ip.FragOffset = uint16(1 + r.IntN(0x1fff))
		case "last":
			ip.FragOffset = uint16(1 + r.IntN(0x1fff))
		}
		if r.IntN(4) == 0 {
			n := r.IntN(40)
			for range n {
				ip.Options = append(ip.Options, layers.IPv4Option{OptionType: 1})
			}
			ip.Options = append(ip.Options, layers.IPv4Option{OptionType: 0})
		}
		hdrLen = 20 + (len(ip.Options)+3)/4*4
		ipLayers = append(ipLayers, ip)
		netLayer = ip
	} else {
		ip := &layers.IPv6{Version: 6, TrafficClass: w.TOS, FlowLabel: r.Uint32() & 0xfffff, HopLimit: uint8(1 + r.IntN(255)), SrcIP: src, DstIP: dst}
		ipLayers = append(ipLayers, ip)
		netLayer = ip
		hdrLen = 40
		nextHdr := &ip.NextHeader
		nExt := r.IntN(5)
		if fragKind != "none" && nExt == 0 {
			nExt = 1
		}
		fragAt := -1
		if fragKind != "none" {
			fragAt = r.IntN(nExt)
		} else if r.IntN(5) == 0 && nExt > 0 {
			fragAt = r.IntN(nExt) // an atomic fragment
		}
		for i := range nExt {
			switch {
			case i == fragAt:
				f := &layers.IPv6Fragment{Identification: r.Uint32()}
				switch fragKind {
				case "first":
					f.MoreFragments = true
				case "middle":
					f.MoreFragments, f.FragmentOffset = true, uint16(1+r.IntN(0x1fff))
				case "last":
					f.FragmentOffset = uint16(1 + r.IntN(0x1fff))
				}
				*nextHdr = layers.IPProtocolIPv6Fragment
				nextHdr = &f.NextHeader
				ipLayers = append(ipLayers, f)
				hdrLen += 8
			case i == 0 && r.IntN(2) == 0:
				h := &layers.IPv6HopByHop{Options: []*layers.IPv6HopByHopOption{{OptionType: 0x1e, OptionData: randBytes(r, 4+8*r.IntN(3))}}}
				*nextHdr = layers.IPProtocolIPv6HopByHop
				nextHdr = &h.NextHeader
				ipLayers = append(ipLayers, h)
				hdrLen += 4 + len(h.Options[0].OptionData)
			case r.IntN(2) == 0:
				d := &layers.IPv6Destination{Options: []*layers.IPv6DestinationOption{{OptionType: 0x1e, OptionData: randBytes(r, 4+8*r.IntN(3))}}}
				*nextHdr = layers.IPProtocolIPv6Destination
				nextHdr = &d.NextHeader
				ipLayers = append(ipLayers, d)
				hdrLen += 4 + len(d.Options[0].OptionData)
			default:
				rt := &layers.IPv6Routing{RoutingType: 253, Data: randBytes(r, 8*r.IntN(4))}
				*nextHdr = layers.IPProtocolIPv6Routing
				nextHdr = &rt.NextHeader
				ipLayers = append(ipLayers, rt)
				hdrLen += 8 + len(rt.Data)
			}
			if i == fragAt && fragKind != "none" {
				break // nothing after the fragment header is parsed
			}
		}
		*nextHdr = proto
	}
	w.Proto = uint8(proto)
	w.Key.Proto = uint8(proto)
	ls = append(ls, ipLayers...)
	if fragKind != "middle" && fragKind != "last" {
		w.L4Off = w.L3Off + uint16(hdrLen)
	}

	payload := gopacket.Payload(randBytes(r, r.IntN(300)))
	switch {
	case fragKind == "middle" || fragKind == "last":
		ls = append(ls, payload)
	case kind == "tcp":
		t := &layers.TCP{SrcPort: layers.TCPPort(r.Uint32()), DstPort: layers.TCPPort(r.Uint32()), Seq: r.Uint32(), Ack: r.Uint32(),
			Window: uint16(r.Uint32()), FIN: r.IntN(2) == 0, SYN: r.IntN(2) == 0, RST: r.IntN(4) == 0, PSH: r.IntN(2) == 0,
			ACK: r.IntN(2) == 0, URG: r.IntN(8) == 0, ECE: r.IntN(8) == 0, CWR: r.IntN(8) == 0}
		if r.IntN(2) == 0 {
			t.Options = []layers.TCPOption{{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{5, 0xb4}}}
		}
		if err := t.SetNetworkLayerForChecksum(netLayer); err != nil {
			tb.Fatal(err)
		}
		ls = append(ls, t, payload)
		if fragKind == "none" {
			w.Key.SrcPort, w.Key.DstPort = uint16(t.SrcPort), uint16(t.DstPort)
			for i, f := range []bool{t.FIN, t.SYN, t.RST, t.PSH, t.ACK, t.URG, t.ECE, t.CWR} {
				if f {
					w.TCPFlags |= 1 << i
				}
			}
		}
	case kind == "udp":
		u := &layers.UDP{SrcPort: layers.UDPPort(r.Uint32()), DstPort: layers.UDPPort(r.Uint32())}
		if err := u.SetNetworkLayerForChecksum(netLayer); err != nil {
			tb.Fatal(err)
		}
		ls = append(ls, u, payload)
		if fragKind == "none" {
			w.Key.SrcPort, w.Key.DstPort = uint16(u.SrcPort), uint16(u.DstPort)
		}
	case kind == "other":
		ls = append(ls, payload)
	case kind == "echo" && family == 4:
		w.ICMPType = uint8(layers.ICMPv4TypeEchoRequest)
		ls = append(ls, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(w.ICMPType, 0), Id: uint16(r.Uint32()), Seq: uint16(r.Uint32())}, payload)
	case kind == "echo":
		w.ICMPType = uint8(layers.ICMPv6TypeEchoRequest)
		c := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(w.ICMPType, 0)}
		if err := c.SetNetworkLayerForChecksum(netLayer); err != nil {
			tb.Fatal(err)
		}
		ls = append(ls, c, &layers.ICMPv6Echo{Identifier: uint16(r.Uint32()), SeqNumber: uint16(r.Uint32())}, payload)
	case kind == "error":
		// The outer packet goes router -> VIP; the quote VIP -> client.
		vip, client := dst, randIP(r, family)
		qProto := []layers.IPProtocol{layers.IPProtocolTCP, layers.IPProtocolUDP}[r.IntN(2)]
		vipPort, clientPort := uint16(r.Uint32()), uint16(r.Uint32())
		var qls []gopacket.SerializableLayer
		var qNet gopacket.NetworkLayer
		qHdr := 0
		if family == 4 {
			q := &layers.IPv4{Version: 4, TTL: 60, Protocol: qProto, SrcIP: vip, DstIP: client, Flags: layers.IPv4DontFragment}
			qls, qNet, qHdr = append(qls, q), q, 20
		} else {
			q := &layers.IPv6{Version: 6, HopLimit: 60, NextHeader: qProto, SrcIP: vip, DstIP: client}
			qls, qNet, qHdr = append(qls, q), q, 40
			if r.IntN(3) == 0 {
				d := &layers.IPv6Destination{Options: []*layers.IPv6DestinationOption{{OptionType: 0x1e, OptionData: randBytes(r, 4)}}}
				d.NextHeader = qProto
				q.NextHeader = layers.IPProtocolIPv6Destination
				qls, qHdr = append(qls, d), qHdr+8
			}
		}
		if qProto == layers.IPProtocolTCP {
			t := &layers.TCP{SrcPort: layers.TCPPort(vipPort), DstPort: layers.TCPPort(clientPort), ACK: true, Seq: r.Uint32()}
			_ = t.SetNetworkLayerForChecksum(qNet)
			qls = append(qls, t)
		} else {
			u := &layers.UDP{SrcPort: layers.UDPPort(vipPort), DstPort: layers.UDPPort(clientPort)}
			_ = u.SetNetworkLayerForChecksum(qNet)
			qls = append(qls, u)
		}
		quoted := mustSerialize(tb, append(qls, gopacket.Payload(randBytes(r, 600)))...)
		maxQuote := 576 - 28
		if family == 6 {
			maxQuote = 1280 - 48
		}
		quote := quoted[:qHdr+8+r.IntN(min(len(quoted), maxQuote)-qHdr-8+1)]

		w.ICMPError = true
		w.Key.Src, w.Key.Dst = addrKey(client), addrKey(vip)
		w.Key.SrcPort, w.Key.DstPort, w.Key.Proto = clientPort, vipPort, uint8(qProto)
		if family == 4 {
			w.ICMPType, w.ICMPCode = []uint8{3, 11}[r.IntN(2)], uint8(r.IntN(16))
			ls = append(ls, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(w.ICMPType, w.ICMPCode), Seq: uint16(r.Uint32())}, gopacket.Payload(quote))
		} else {
			w.ICMPType = []uint8{1, 2, 3}[r.IntN(3)]
			c := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(w.ICMPType, w.ICMPCode)}
			if err := c.SetNetworkLayerForChecksum(netLayer); err != nil {
				tb.Fatal(err)
			}
			ls = append(ls, c, gopacket.Payload(cat(binary.BigEndian.AppendUint32(nil, 1280), quote)))
		}
	}
	g.frame = mustSerialize(tb, ls...)
	// gopacket pads short frames to 60 bytes: the IP packet ends where its
	// header says.
	var ipEnd int
	if family == 4 {
		ipEnd = int(w.L3Off) + int(binary.BigEndian.Uint16(g.frame[w.L3Off+2:]))
	} else {
		ipEnd = int(w.L3Off) + 40 + int(binary.BigEndian.Uint16(g.frame[w.L3Off+4:]))
	}
	w.IPLen = uint16(ipEnd - int(w.L3Off))
	if r.IntN(8) == 0 {
		g.frame = append(g.frame, randBytes(r, 1+r.IntN(8))...) // a trailer such as an FCS
	}
	g.desc = fmt.Sprintf("IPv%d %s frag=%s tags=%d", family, kind, fragKind, tags)
	return g
}

func TestParseCrossCheckGopacket(t *testing.T) {
	r := newRand(t)
	n := 20000
	if testing.Short() {
		n = 2000
	}
	var p packet.Parsed
	seen := map[string]int{}
	for i := range n {
		g := genRandomFrame(t, r)
		seen[g.desc[:strings.LastIndexByte(g.desc, ' ')]]++
		packet.Parse(g.frame, &p)
		if p != g.want {
			t.Fatalf("frame %d (%s) % x\n got %s\nwant %s", i, g.desc, g.frame, fmtParsed(&p), fmtParsed(&g.want))
		}
		v, err := gpDecode(g.frame)
		if err != nil {
			t.Fatalf("frame %d (%s): gopacket cannot decode its own frame: %v\n% x", i, g.desc, err, g.frame)
		}
		if err := agree(&p, &v); err != nil {
			t.Fatalf("frame %d (%s): Parse and gopacket disagree: %v\n% x\nparsed %s\ngopacket %+v", i, g.desc, err, g.frame, fmtParsed(&p), v)
		}
	}
	// The generator must have produced every kind of frame.
	for _, fam := range []int{4, 6} {
		for _, kind := range []string{"tcp frag=none", "udp frag=none", "echo frag=none", "error frag=none", "other frag=none",
			"tcp frag=first", "udp frag=middle", "other frag=last"} {
			if d := fmt.Sprintf("IPv%d %s", fam, kind); seen[d] == 0 {
				t.Errorf("no %q frame generated", d)
			}
		}
	}
}

// errQuoteUndecodable says gopacket could not decode a quote that Parse
// accepted. Parse reads only the addresses and ports of a quote, so the
// fuzz test tolerates it (a quoted header with a nonsense length, say); the
// cross-check, whose quotes are well formed, does not.
var errQuoteUndecodable = errors.New("gopacket cannot decode the quote Parse accepted")

// agree compares a successful Parse with gopacket's decoding of the same frame.
func agree(p *packet.Parsed, v *gpView) error {
	switch {
	case int(p.VLANTags) != v.tags:
		return fmt.Errorf("VLAN tags %d, gopacket %d", p.VLANTags, v.tags)
	case int(p.L3Off) != v.l3off:
		return fmt.Errorf("L3Off %d, gopacket %d", p.L3Off, v.l3off)
	case int(p.Family) != v.family || int(p.Key.Family) != v.family:
		return fmt.Errorf("family %d/%d, gopacket %d", p.Family, p.Key.Family, v.family)
	case int(p.IPLen) != v.ipLen:
		return fmt.Errorf("IPLen %d, gopacket %d", p.IPLen, v.ipLen)
	case p.TOS != v.tos:
		return fmt.Errorf("TOS %#x, gopacket %#x", p.TOS, v.tos)
	case p.DF != v.df:
		return fmt.Errorf("DF %v, gopacket %v", p.DF, v.df)
	case p.Fragment != v.frag:
		return fmt.Errorf("Fragment %v, gopacket %v", p.Fragment, v.frag)
	case p.Proto != v.proto:
		return fmt.Errorf("Proto %d, gopacket %d", p.Proto, v.proto)
	case int(p.L4Off) != v.l4off:
		return fmt.Errorf("L4Off %d, gopacket %d", p.L4Off, v.l4off)
	}
	if v.icmp {
		if p.ICMPType != v.icmpType || p.ICMPCode != v.icmpCode {
			return fmt.Errorf("ICMP %d/%d, gopacket %d/%d", p.ICMPType, p.ICMPCode, v.icmpType, v.icmpCode)
		}
	}
	if p.ICMPError {
		src, dst, proto, sport, dport, err := gpQuote(v.icmpBody, v.family)
		if err != nil {
			return fmt.Errorf("%w: %w", errQuoteUndecodable, err)
		}
		if !src.Equal(v.dst) {
			return fmt.Errorf("Parse accepted a quote from %v in an error to %v", src, v.dst)
		}
		want := packet.FlowKey{Src: addrKey(dst), Dst: addrKey(src), SrcPort: dport, DstPort: sport, Proto: proto, Family: uint8(v.family)}
		if p.Key != want {
			return fmt.Errorf("ICMP error key %+v, gopacket quote gives %+v", p.Key, want)
		}
		return nil
	}
	if p.Key.Src != addrKey(v.src) || p.Key.Dst != addrKey(v.dst) {
		return fmt.Errorf("addresses %x -> %x, gopacket %v -> %v", p.Key.Src, p.Key.Dst, v.src, v.dst)
	}
	if p.Key.Proto != v.proto {
		return fmt.Errorf("key proto %d, gopacket %d", p.Key.Proto, v.proto)
	}
	// Without ports (fragments, other protocols) gopacket's are zero too.
	if p.Key.SrcPort != v.sport || p.Key.DstPort != v.dport {
		return fmt.Errorf("ports %d -> %d, gopacket %d -> %d", p.Key.SrcPort, p.Key.DstPort, v.sport, v.dport)
	}
	if p.TCPFlags != v.tcpFlags {
		return fmt.Errorf("TCP flags %#x, gopacket %#x", p.TCPFlags, v.tcpFlags)
	}
	return nil
}

// TestGpDecodeGolden runs the gopacket view over the well-formed golden
// frames too, so the two decoders are compared on the hand-built edge cases
// (VLAN stacks, extension chains, padding, ICMP quotes) as well.
func TestGpDecodeGolden(t *testing.T) {
	// gopacket reads an IPv6 payload length of 0 as a jumbogram.
	skip := map[string]bool{"ipv6-no-next-header": true}
	for _, tc := range goldenCases() {
		if tc.want.Reason != packet.OK || skip[tc.name] {
			continue
		}
		v, err := gpDecode(tc.frame)
		if err != nil {
			t.Errorf("%s: gopacket: %v", tc.name, err)
			continue
		}
		var p packet.Parsed
		packet.Parse(tc.frame, &p)
		if err := agree(&p, &v); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}
