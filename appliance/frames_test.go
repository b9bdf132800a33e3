package appliance

// Frame builders and an output checker for the forwarder tests.
//
// Every byte of an input or expected output frame is written here, by hand,
// without package packet's writers or checksum code: a golden test that
// built its expectation with the code under test could not fail. Checksums
// come from slowSum, the obvious RFC 1071 loop. Forwarded frames are also
// decoded with gopacket (checkOutput), a decoder written by other people.

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/weirlb/weir/hashing"
	"github.com/weirlb/weir/packet"
)

// Protocol numbers, EtherTypes and TCP flags as the tests write them.
const (
	ipProtoICMP   = 1
	ipProtoIPIP   = 4
	ipProtoTCP    = 6
	ipProtoUDP    = 17
	ipProtoIPv6   = 41
	ipProtoFrag   = 44
	ipProtoICMPv6 = 58
	ipProtoDstOpt = 60

	etIPv4 = 0x0800
	etIPv6 = 0x86dd
	etARP  = 0x0806
	etVLAN = 0x8100
	etQinQ = 0x88a8

	flagFIN = 0x01
	flagSYN = 0x02
	flagRST = 0x04
	flagPSH = 0x08
	flagACK = 0x10

	ipDF = 0x4000
	ipMF = 0x2000
)

// routerMAC is the next hop that hands client traffic to the appliance (the
// source MAC of every input frame); localMAC is the appliance's own.
var (
	routerMAC = packet.MAC{0x02, 0x52, 0x00, 0x00, 0x00, 0x01}
	localMAC  = packet.MAC{0x02, 0x1b, 0x00, 0x00, 0x00, 0x01}
)

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func cat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// slowSum is RFC 1071 written the obvious way: 16-bit big-endian words added
// one at a time, the carry folded back after each addition, an odd last byte
// padded with zero. It returns the folded sum, not complemented.
func slowSum(parts ...[]byte) uint16 {
	b := cat(parts...)
	var sum uint32
	for i := 0; i < len(b); i += 2 {
		w := uint32(b[i]) << 8
		if i+1 < len(b) {
			w |= uint32(b[i+1])
		}
		sum += w
		if sum > 0xffff {
			sum = sum&0xffff + 1
		}
	}
	return uint16(sum)
}

// pseudoHeader is the TCP/UDP/ICMPv6 pseudo header (RFC 9293 3.1, RFC 8200 8.1).
func pseudoHeader(src, dst netip.Addr, proto uint8, length int) []byte {
	b := append(src.AsSlice(), dst.AsSlice()...)
	if src.Is4() {
		b = append(b, 0, proto)
		return binary.BigEndian.AppendUint16(b, uint16(length))
	}
	b = binary.BigEndian.AppendUint32(b, uint32(length))
	return append(b, 0, 0, 0, proto)
}

// ethHdr is an Ethernet header with the given VLAN IDs, outermost first: a
// single tag is 802.1Q; with two, the outer one is an 802.1ad service tag.
func ethHdr(dst, src packet.MAC, vlans []uint16, etherType uint16) []byte {
	b := append(dst[:], src[:]...)
	for i, id := range vlans {
		tpid := uint16(etVLAN)
		if len(vlans) > 1 && i == 0 {
			tpid = etQinQ
		}
		b = binary.BigEndian.AppendUint16(b, tpid)
		b = binary.BigEndian.AppendUint16(b, id)
	}
	return binary.BigEndian.AppendUint16(b, etherType)
}

// v4 describes an IPv4 header; build writes it with its checksum.
type v4 struct {
	tos      uint8
	id       uint16
	flags    uint16 // ipDF, ipMF and the fragment offset in 8-byte units
	ttl      uint8  // 0 means 64; use ttl0 for a real zero
	ttl0     bool
	proto    uint8
	src, dst netip.Addr
	options  []byte // a multiple of 4 bytes
}

func (h v4) build(payload []byte) []byte {
	hl := 20 + len(h.options)
	b := make([]byte, hl, hl+len(payload))
	b[0] = 0x40 | byte(hl/4)
	b[1] = h.tos
	binary.BigEndian.PutUint16(b[2:], uint16(hl+len(payload)))
	binary.BigEndian.PutUint16(b[4:], h.id)
	binary.BigEndian.PutUint16(b[6:], h.flags)
	b[8] = h.ttl
	if b[8] == 0 && !h.ttl0 {
		b[8] = 64
	}
	b[9] = h.proto
	s, d := h.src.As4(), h.dst.As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	copy(b[20:], h.options)
	binary.BigEndian.PutUint16(b[10:], ^slowSum(b))
	return append(b, payload...)
}

// v6 describes an IPv6 header; build writes it.
type v6 struct {
	tc       uint8
	flow     uint32
	next     uint8
	hop      uint8 // 0 means 64; use hop0 for a real zero
	hop0     bool
	src, dst netip.Addr
}

func (h v6) build(payload []byte) []byte {
	b := make([]byte, 40, 40+len(payload))
	binary.BigEndian.PutUint32(b[0:], 6<<28|uint32(h.tc)<<20|h.flow&0xfffff)
	binary.BigEndian.PutUint16(b[4:], uint16(len(payload)))
	b[6] = h.next
	b[7] = h.hop
	if b[7] == 0 && !h.hop0 {
		b[7] = 64
	}
	s, d := h.src.As16(), h.dst.As16()
	copy(b[8:], s[:])
	copy(b[24:], d[:])
	return append(b, payload...)
}

// ipHdr builds the IP header of src's family around payload: IPv4 with DF
// set, or IPv6.
func ipHdr(src, dst netip.Addr, proto uint8, payload []byte) []byte {
	if src.Is4() {
		return v4{flags: ipDF, proto: proto, src: src, dst: dst}.build(payload)
	}
	return v6{next: proto, src: src, dst: dst}.build(payload)
}

// tcpSeg is a 20-byte TCP header plus payload with a correct checksum.
func tcpSeg(src, dst netip.Addr, sport, dport uint16, flags uint8, payload []byte) []byte {
	b := make([]byte, 20, 20+len(payload))
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint32(b[4:], 0x01020304)
	if flags&flagACK != 0 {
		binary.BigEndian.PutUint32(b[8:], 0x0a0b0c0d)
	}
	b[12] = 5 << 4
	b[13] = flags
	binary.BigEndian.PutUint16(b[14:], 64240)
	b = append(b, payload...)
	binary.BigEndian.PutUint16(b[16:], ^slowSum(pseudoHeader(src, dst, ipProtoTCP, len(b)), b))
	return b
}

// udpDgram is a UDP header plus payload with a correct checksum (0xffff
// standing for a computed zero, RFC 768).
func udpDgram(src, dst netip.Addr, sport, dport uint16, payload []byte) []byte {
	b := udpNoSum(sport, dport, payload)
	sum := ^slowSum(pseudoHeader(src, dst, ipProtoUDP, len(b)), b)
	if sum == 0 {
		sum = 0xffff
	}
	binary.BigEndian.PutUint16(b[6:], sum)
	return b
}

// udpNoSum is a UDP header with a zero (absent) checksum plus payload.
func udpNoSum(sport, dport uint16, payload []byte) []byte {
	b := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint16(b[4:], uint16(8+len(payload)))
	return append(b, payload...)
}

// icmp4 is an ICMPv4 message with a correct checksum; rest is the second
// 32-bit word (the next-hop MTU of a fragmentation-needed message).
func icmp4(typ, code uint8, rest uint32, body []byte) []byte {
	b := []byte{typ, code, 0, 0}
	b = binary.BigEndian.AppendUint32(b, rest)
	b = append(b, body...)
	binary.BigEndian.PutUint16(b[2:], ^slowSum(b))
	return b
}

// icmp6 is an ICMPv6 message from src to dst with a correct checksum.
func icmp6(src, dst netip.Addr, typ, code uint8, rest uint32, body []byte) []byte {
	b := []byte{typ, code, 0, 0}
	b = binary.BigEndian.AppendUint32(b, rest)
	b = append(b, body...)
	binary.BigEndian.PutUint16(b[2:], ^slowSum(pseudoHeader(src, dst, ipProtoICMPv6, len(b)), b))
	return b
}

// fragHdr6 is an IPv6 fragment extension header; offset in 8-byte units.
func fragHdr6(next uint8, offset uint16, more bool, id uint32) []byte {
	fo := offset << 3
	if more {
		fo |= 1
	}
	b := []byte{next, 0}
	b = binary.BigEndian.AppendUint16(b, fo)
	return binary.BigEndian.AppendUint32(b, id)
}

// payloadOf returns n bytes of recognisable payload.
func payloadOf(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + i%26)
	}
	return b
}

// tcpPacket is a client's TCP packet to dst:dport as an IP packet (IPv4 with
// DF, or IPv6) with n bytes of payload.
func tcpPacket(src, dst netip.Addr, sport, dport uint16, flags uint8, n int) []byte {
	return ipHdr(src, dst, ipProtoTCP, tcpSeg(src, dst, sport, dport, flags, payloadOf(n)))
}

// udpPacket is tcpPacket for UDP.
func udpPacket(src, dst netip.Addr, sport, dport uint16, n int) []byte {
	return ipHdr(src, dst, ipProtoUDP, udpDgram(src, dst, sport, dport, payloadOf(n)))
}

// frameOf puts an IP packet in an Ethernet frame from the router to the
// appliance, with the given VLAN tags.
func frameOf(ip []byte, vlans ...uint16) []byte {
	et := uint16(etIPv4)
	if ip[0]>>4 == 6 {
		et = etIPv6
	}
	return cat(ethHdr(localMAC, routerMAC, vlans, et), ip)
}

// flowHash is the hash the forwarder must use for a flow, computed from a key
// the test builds itself (the hash function is package hashing's contract).
func flowHash(src, dst netip.Addr, sport, dport uint16, proto uint8) uint64 {
	k := packet.FlowKey{SrcPort: sport, DstPort: dport, Proto: proto, Family: 4}
	if src.Is6() {
		k.Family = 6
	}
	copy(k.Src[:], src.AsSlice())
	copy(k.Dst[:], dst.AsSlice())
	return hashing.FlowHash(&k, hashing.DefaultFlowSeed)
}

// The wire format of the encapsulations weir sends, written out here so the
// golden tests pin it: the GUE source port carries 14 bits of the flow hash
// in the ephemeral range, and an outer IPv6 header's flow label its low 20
// bits.
func gueSport(h uint64) uint16  { return 0xc000 | uint16(h>>32)&0x3fff }
func flowLabel(h uint64) uint32 { return uint32(h) & 0xfffff }

// encap describes the outer headers the forwarder must add for one packet.
type encap struct {
	mode     Mode       // ModeIPIP or ModeGUE
	src, dst netip.Addr // outer addresses (local address, backend)
	gport    uint16     // GUE destination port
	hash     uint64     // flow hash (GUE source port, IPv6 flow label)
	id       uint16     // outer IPv4 ID (non-DF inner packets only)
}

// encapIP wraps the inner IP packet in the outer IP (and UDP) headers.
func (e encap) encapIP(inner []byte) []byte {
	innerProto := uint8(ipProtoIPIP)
	tos := inner[1]
	df := true
	if inner[0]>>4 == 6 {
		innerProto = ipProtoIPv6
		tos = inner[0]<<4 | inner[1]>>4
	} else {
		df = binary.BigEndian.Uint16(inner[6:])&ipDF != 0
	}
	proto := innerProto
	body := inner
	if e.mode == ModeGUE {
		proto = ipProtoUDP
		if e.dst.Is4() {
			body = udpNoSum(gueSport(e.hash), e.gport, inner)
		} else {
			body = udpDgram(e.src, e.dst, gueSport(e.hash), e.gport, inner)
		}
	}
	if e.dst.Is6() {
		return v6{tc: tos, flow: flowLabel(e.hash), next: proto, src: e.src, dst: e.dst}.build(body)
	}
	var flags uint16
	if df {
		flags = ipDF
	}
	return v4{tos: tos, id: e.id, flags: flags, proto: proto, src: e.src, dst: e.dst}.build(body)
}

// encapFrame is the frame the forwarder must send for inner (an IP packet
// that arrived with the given VLAN tags) towards a backend behind mac.
func (e encap) encapFrame(mac packet.MAC, vlans []uint16, inner []byte) []byte {
	et := uint16(etIPv4)
	if e.dst.Is6() {
		et = etIPv6
	}
	return cat(ethHdr(mac, localMAC, vlans, et), e.encapIP(inner))
}

// dsrFrame is in with the destination MAC set to the backend's and the source
// MAC to the appliance's; nothing else changes.
func dsrFrame(in []byte, mac packet.MAC) []byte {
	out := cat(in)
	copy(out[0:6], mac[:])
	copy(out[6:12], localMAC[:])
	return out
}

// tooBigReply is the ICMP message the appliance must send back for the IP
// packet inner (from the client to the VIP): ICMPv4 "fragmentation needed" or
// ICMPv6 "packet too big" from the VIP to the client advertising mtu, quoting
// as much of inner as fits the minimum MTU (576 or 1280 bytes). The frame
// goes back to the router, VLAN tags kept.
func tooBigReply(vlans []uint16, inner []byte, mtu uint32) []byte {
	if inner[0]>>4 == 4 {
		src, dst := netip.AddrFrom4([4]byte(inner[12:16])), netip.AddrFrom4([4]byte(inner[16:20]))
		quote := inner[:min(len(inner), 576-28)]
		ip := v4{tos: 0xc0, flags: ipDF, proto: ipProtoICMP, src: dst, dst: src}.build(icmp4(3, 4, mtu&0xffff, quote))
		return cat(ethHdr(routerMAC, localMAC, vlans, etIPv4), ip)
	}
	src, dst := netip.AddrFrom16([16]byte(inner[8:24])), netip.AddrFrom16([16]byte(inner[24:40]))
	quote := inner[:min(len(inner), 1280-48)]
	ip := v6{next: ipProtoICMPv6, src: dst, dst: src}.build(icmp6(dst, src, 2, 0, mtu, quote))
	return cat(ethHdr(routerMAC, localMAC, vlans, etIPv6), ip)
}

// reversed is the packet the VIP (a backend answering for it) sends to the
// client for the client's TCP or UDP flow: what an ICMP error quotes.
func reversed(client, vip netip.Addr, cport, vport uint16, proto uint8) []byte {
	if proto == ipProtoTCP {
		return tcpPacket(vip, client, vport, cport, flagACK, 1400)
	}
	return udpPacket(vip, client, vport, cport, 1400)
}

// icmpTooBigFrom is the ICMP error a router on the way to the client sends to
// the VIP about a VIP-to-client packet: ICMPv4 fragmentation needed quoting
// its IPv4 header and 8 bytes, or ICMPv6 packet too big quoting as much as
// fits 1280 bytes.
func icmpTooBigFrom(router netip.Addr, quoted []byte, mtu uint32) []byte {
	if quoted[0]>>4 == 4 {
		vip := netip.AddrFrom4([4]byte(quoted[12:16]))
		hl := int(quoted[0]&0xf) * 4
		return v4{proto: ipProtoICMP, src: router, dst: vip}.build(icmp4(3, 4, mtu, quoted[:hl+8]))
	}
	vip := netip.AddrFrom16([16]byte(quoted[8:24]))
	q := quoted[:min(len(quoted), 1280-48)]
	return v6{next: ipProtoICMPv6, src: router, dst: vip}.build(icmp6(router, vip, 2, 0, mtu, q))
}

// decoded is what checkOutput learned from a forwarded frame.
type decoded struct {
	vlans   int
	outer   netip.Addr // destination of the outermost IP header
	encap   bool
	gueSrc  uint16
	icmpMTU uint32 // advertised MTU of a too-big reply
}

// checkOutput decodes the frame out that Forward made of in with gopacket,
// and checks that it is what the verdict says:
//   - VerdictTX in place (DSR): in with other MACs;
//   - VerdictTX encapsulated: the VLAN tags of in, an outer IP header (and a
//     UDP header for GUE), then exactly the IP packet of in;
//   - VerdictReply: an ICMP too-big message from the destination of in to its
//     source, quoting the start of in's IP packet.
//
// It verifies every checksum the appliance is responsible for: each IPv4
// header (outer, inner, reply), the UDP checksum of GUE over IPv6 (zero over
// IPv4), and the ICMP checksum of a reply. Layers past the client's IP header
// are the client's business and are not decoded.
func checkOutput(in, out []byte, v Verdict) (decoded, error) {
	var d decoded
	pkt := gopacket.NewPacket(out, layers.LayerTypeEthernet, gopacket.DecodeOptions{NoCopy: true})
	ls := pkt.Layers()
	fail := func(format string, args ...any) (decoded, error) {
		msg := fmt.Sprintf(format, args...)
		if el := pkt.ErrorLayer(); el != nil {
			msg += fmt.Sprintf(" (gopacket: %v)", el.Error())
		}
		return d, fmt.Errorf("%s\n%s", msg, pkt.Dump())
	}
	i := 0
	next := func() gopacket.Layer {
		if i >= len(ls) {
			return nil
		}
		i++
		return ls[i-1]
	}
	if _, ok := next().(*layers.Ethernet); !ok {
		return fail("no Ethernet layer")
	}
	l := next()
	for {
		if _, ok := l.(*layers.Dot1Q); !ok {
			break
		}
		d.vlans++
		l = next()
	}
	l2 := 14 + 4*d.vlans
	if len(in) < l2 || !bytes.Equal(in[12:l2-2], out[12:l2-2]) {
		return fail("VLAN tags differ from the input's")
	}
	if l == nil {
		return fail("no IP layer")
	}
	proto, src, dst, payload, err := checkIP(l)
	if err != nil {
		return fail("outer: %v", err)
	}
	d.outer = dst
	inIP := in[l2:]

	if v == VerdictReply {
		if len(inIP) < 20 {
			return fail("reply to a frame without an IP packet")
		}
		var inSrc, inDst netip.Addr
		if inIP[0]>>4 == 4 {
			inSrc, inDst = netip.AddrFrom4([4]byte(inIP[12:16])), netip.AddrFrom4([4]byte(inIP[16:20]))
		} else {
			inSrc, inDst = netip.AddrFrom16([16]byte(inIP[8:24])), netip.AddrFrom16([16]byte(inIP[24:40]))
		}
		if src != inDst || dst != inSrc {
			return fail("reply from %s to %s, want from %s to %s", src, dst, inDst, inSrc)
		}
		if len(payload) < 8 || !bytes.HasPrefix(inIP, payload[8:]) {
			return fail("reply does not quote the start of the input packet")
		}
		switch proto {
		case ipProtoICMP:
			c, ok := next().(*layers.ICMPv4)
			if !ok {
				return fail("reply: no ICMPv4 layer")
			}
			if c.TypeCode != layers.CreateICMPv4TypeCode(3, 4) {
				return fail("reply: ICMPv4 %v, want fragmentation needed", c.TypeCode)
			}
			if slowSum(payload) != 0xffff {
				return fail("reply: ICMPv4 checksum does not verify")
			}
			d.icmpMTU = uint32(c.Seq)
		case ipProtoICMPv6:
			c, ok := next().(*layers.ICMPv6)
			if !ok {
				return fail("reply: no ICMPv6 layer")
			}
			if c.TypeCode != layers.CreateICMPv6TypeCode(2, 0) {
				return fail("reply: ICMPv6 %v, want packet too big", c.TypeCode)
			}
			if slowSum(pseudoHeader(src, dst, ipProtoICMPv6, len(payload)), payload) != 0xffff {
				return fail("reply: ICMPv6 checksum does not verify")
			}
			d.icmpMTU = binary.BigEndian.Uint32(payload[4:8])
		default:
			return fail("reply: protocol %d is not ICMP", proto)
		}
		return d, nil
	}

	if len(out) == len(in) && bytes.Equal(out[12:], in[12:]) {
		return d, nil // in place (DSR): the client's packet, untouched
	}
	var inner []byte
	switch proto {
	case ipProtoIPIP, ipProtoIPv6:
		inner = payload
	case ipProtoUDP:
		u, ok := next().(*layers.UDP)
		if !ok {
			return fail("no UDP layer")
		}
		if int(u.Length) != len(payload) {
			return fail("outer UDP length %d, IP payload %d", u.Length, len(payload))
		}
		switch {
		case dst.Is6() && u.Checksum == 0:
			return fail("GUE over IPv6 without a UDP checksum")
		case u.Checksum != 0 && slowSum(pseudoHeader(src, dst, ipProtoUDP, len(payload)), payload) != 0xffff &&
			innerChecksumVerifies(u.Payload):
			// The forwarder may take the inner packet's sum from its own
			// checksum: a wrong one may make the outer one wrong, a right one
			// never.
			return fail("outer UDP checksum %#04x does not verify", u.Checksum)
		}
		d.gueSrc = uint16(u.SrcPort)
		inner = u.Payload
	default:
		return fail("output is neither the input frame nor an encapsulation (protocol %d)", proto)
	}
	d.encap = true
	if len(inner) == 0 || len(inner) > len(inIP) || !bytes.Equal(inner, inIP[:len(inner)]) {
		return fail("the encapsulated packet is not the input's IP packet")
	}
	lt := layers.LayerTypeIPv4
	if inner[0]>>4 == 6 {
		lt = layers.LayerTypeIPv6
	}
	ipkt := gopacket.NewPacket(inner, lt, gopacket.DecodeOptions{NoCopy: true, Lazy: true})
	il := ipkt.Layer(lt)
	if il == nil {
		return fail("inner packet does not decode as %v: %v", lt, ipkt.ErrorLayer())
	}
	if _, _, _, _, err := checkIP(il); err != nil {
		return fail("inner: %v", err)
	} else if n := ipPacketLen(inner); n != len(inner) {
		return fail("inner IP length %d does not cover the encapsulated packet (%d bytes)", n, len(inner))
	}
	return d, nil
}

// innerChecksumVerifies reports whether the transport checksum of the IP
// packet ip verifies (RFC 1071, written out here), or the packet has none the
// forwarder could take a shortcut from: fragments, IPv6 extension headers,
// UDP without a checksum, other protocols, short packets.
func innerChecksumVerifies(ip []byte) bool {
	if len(ip) < 20 {
		return true
	}
	var src, dst netip.Addr
	var proto uint8
	var seg []byte
	switch ip[0] >> 4 {
	case 4:
		hl, total := int(ip[0]&0x0f)*4, int(binary.BigEndian.Uint16(ip[2:4]))
		if hl < 20 || total < hl || total > len(ip) || binary.BigEndian.Uint16(ip[6:8])&0x3fff != 0 {
			return true
		}
		src, dst = netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20]))
		proto, seg = ip[9], ip[hl:total]
	case 6:
		if len(ip) < 40 || 40+int(binary.BigEndian.Uint16(ip[4:6])) > len(ip) {
			return true
		}
		src, dst = netip.AddrFrom16([16]byte(ip[8:24])), netip.AddrFrom16([16]byte(ip[24:40]))
		proto, seg = ip[6], ip[40:40+int(binary.BigEndian.Uint16(ip[4:6]))]
	default:
		return true
	}
	switch {
	case proto == ipProtoTCP && len(seg) >= 20,
		proto == ipProtoUDP && len(seg) >= 8 && binary.BigEndian.Uint16(seg[6:8]) != 0,
		proto == ipProtoICMPv6 && src.Is6() && len(seg) >= 8:
		return slowSum(pseudoHeader(src, dst, proto, len(seg)), seg) == 0xffff
	case proto == ipProtoICMP && src.Is4() && len(seg) >= 8:
		return slowSum(seg) == 0xffff
	}
	return true
}

// ipPacketLen is the length of the IP packet ip as its header gives it (not
// gopacket's payload, which for IPv6 leaves out a hop-by-hop header).
func ipPacketLen(ip []byte) int {
	if ip[0]>>4 == 4 {
		return int(binary.BigEndian.Uint16(ip[2:4]))
	}
	return 40 + int(binary.BigEndian.Uint16(ip[4:6]))
}

// checkIP verifies an IP layer decoded by gopacket (the IPv4 header checksum)
// and returns its upper-layer protocol, source, destination and payload.
func checkIP(l gopacket.Layer) (uint8, netip.Addr, netip.Addr, []byte, error) {
	switch ip := l.(type) {
	case *layers.IPv4:
		if s := slowSum(ip.Contents); s != 0xffff {
			return 0, netip.Addr{}, netip.Addr{}, nil, fmt.Errorf("IPv4 header checksum %#04x does not verify (sum %#04x)", ip.Checksum, s)
		}
		src, _ := netip.AddrFromSlice(ip.SrcIP)
		dst, _ := netip.AddrFromSlice(ip.DstIP)
		return uint8(ip.Protocol), src, dst, ip.Payload, nil
	case *layers.IPv6:
		src, _ := netip.AddrFromSlice(ip.SrcIP)
		dst, _ := netip.AddrFromSlice(ip.DstIP)
		return uint8(ip.NextHeader), src, dst, ip.Payload, nil
	}
	return 0, netip.Addr{}, netip.Addr{}, nil, fmt.Errorf("layer %v is not IP", l)
}
