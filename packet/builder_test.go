package packet_test

// Frame builders for the tests. They write every byte themselves so that the
// tests never build their input with the code under test; checksums come from
// slowChecksum, the obviously-correct RFC 1071 loop below.

import (
	"encoding/binary"
	"net/netip"

	"github.com/weirlb/weir/packet"
)

var (
	macA = packet.MAC{0x02, 0x00, 0x5e, 0x00, 0x00, 0x0a}
	macB = packet.MAC{0x02, 0x00, 0x5e, 0x00, 0x00, 0x0b}
)

// Addresses used by the golden tests: a client talks to a VIP; a router on
// the way back sends ICMP errors to the VIP.
var (
	client4 = a4("198.51.100.7")
	vip4    = a4("203.0.113.10")
	router4 = a4("192.0.2.1")
	other4  = a4("203.0.113.99")
	client6 = a16("2001:db8:c::7")
	vip6    = a16("2001:db8:f::10")
	router6 = a16("2001:db8:1::1")
	other6  = a16("2001:db8:f::99")
)

func a4(s string) [4]byte   { return netip.MustParseAddr(s).As4() }
func a16(s string) [16]byte { return netip.MustParseAddr(s).As16() }

// slowChecksum is RFC 1071 written the obvious way: 16-bit big-endian words
// added one at a time with the carry folded back in after every addition,
// an odd trailing byte padded with zero on the right. initial is folded
// first. The result is the folded sum, not complemented.
func slowChecksum(b []byte, initial uint32) uint16 {
	sum := uint64(initial)
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	for i := 0; i < len(b); i += 2 {
		w := uint64(b[i]) << 8
		if i+1 < len(b) {
			w |= uint64(b[i+1])
		}
		sum += w
		if sum > 0xffff {
			sum = sum&0xffff + 1
		}
	}
	return uint16(sum)
}

// pseudo4 and pseudo6 build the transport pseudo headers of RFC 768/9293 and
// RFC 8200 section 8.1 byte by byte.
func pseudo4(src, dst [4]byte, proto uint8, length uint16) []byte {
	b := append(src[:], dst[:]...)
	b = append(b, 0, proto)
	return binary.BigEndian.AppendUint16(b, length)
}

func pseudo6(src, dst [16]byte, nh uint8, length uint32) []byte {
	b := append(src[:], dst[:]...)
	b = binary.BigEndian.AppendUint32(b, length)
	return append(b, 0, 0, 0, nh)
}

func cat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// ethHdr returns an Ethernet header from macB to macA with one 4-byte tag per
// TPID (VLAN IDs 100, 200, ...) followed by etherType.
func ethHdr(etherType uint16, tpids ...uint16) []byte {
	b := cat(macA[:], macB[:])
	for i, t := range tpids {
		b = binary.BigEndian.AppendUint16(b, t)
		b = binary.BigEndian.AppendUint16(b, uint16(100*(i+1)))
	}
	return binary.BigEndian.AppendUint16(b, etherType)
}

// v4 describes an IPv4 header; build adds the payload and a valid checksum.
type v4 struct {
	TOS   uint8
	ID    uint16
	Frag  uint16 // flags and fragment offset word (IPv4FlagDF, IPv4FlagMF, offset/8)
	TTL   uint8  // 0 means 64; tests that need TTL 0 patch the byte
	Proto uint8
	Src   [4]byte
	Dst   [4]byte
	Opts  []byte // a multiple of 4 bytes
}

func (h v4) build(payload []byte) []byte {
	hl := 20 + len(h.Opts)
	if hl%4 != 0 || hl > 60 {
		panic("bad IPv4 options length")
	}
	ttl := h.TTL
	if ttl == 0 {
		ttl = 64
	}
	b := make([]byte, hl, hl+len(payload))
	b[0] = 0x40 | byte(hl/4)
	b[1] = h.TOS
	binary.BigEndian.PutUint16(b[2:], uint16(hl+len(payload)))
	binary.BigEndian.PutUint16(b[4:], h.ID)
	binary.BigEndian.PutUint16(b[6:], h.Frag)
	b[8] = ttl
	b[9] = h.Proto
	copy(b[12:], h.Src[:])
	copy(b[16:], h.Dst[:])
	copy(b[20:], h.Opts)
	binary.BigEndian.PutUint16(b[10:], ^slowChecksum(b, 0))
	return append(b, payload...)
}

// v6 describes a fixed IPv6 header; build adds the payload (extension
// headers included) and sets the payload length.
type v6 struct {
	TC   uint8
	Flow uint32
	NH   uint8
	Hop  uint8 // 0 means 64
	Src  [16]byte
	Dst  [16]byte
}

func (h v6) build(payload []byte) []byte {
	hop := h.Hop
	if hop == 0 {
		hop = 64
	}
	b := make([]byte, 40, 40+len(payload))
	binary.BigEndian.PutUint32(b, 6<<28|uint32(h.TC)<<20|h.Flow&0xfffff)
	binary.BigEndian.PutUint16(b[4:], uint16(len(payload)))
	b[6] = h.NH
	b[7] = hop
	copy(b[8:], h.Src[:])
	copy(b[24:], h.Dst[:])
	return append(b, payload...)
}

// ext6 returns a hop-by-hop, routing or destination-options header of n8*8
// bytes whose body is all zero (Pad1 options; routing type 0 with no
// segments left).
func ext6(nh uint8, n8 int) []byte {
	b := make([]byte, n8*8)
	b[0] = nh
	b[1] = byte(n8 - 1)
	return b
}

// frag6 returns an IPv6 fragment header; offset is in 8-byte units.
func frag6(nh uint8, offset uint16, more bool, id uint32) []byte {
	b := make([]byte, 8)
	b[0] = nh
	w := offset << 3
	if more {
		w |= 1
	}
	binary.BigEndian.PutUint16(b[2:], w)
	binary.BigEndian.PutUint32(b[4:], id)
	return b
}

// tcpSeg returns a TCP segment with optLen bytes of NOP options (a multiple
// of 4) and a zero checksum (Parse does not verify transport checksums).
func tcpSeg(sport, dport uint16, flags uint8, optLen int, data []byte) []byte {
	b := make([]byte, 20+optLen, 20+optLen+len(data))
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint32(b[4:], 0x01020304)
	binary.BigEndian.PutUint32(b[8:], 0x0a0b0c0d)
	b[12] = byte((20+optLen)/4) << 4
	b[13] = flags
	binary.BigEndian.PutUint16(b[14:], 65535)
	for i := 20; i < 20+optLen; i++ {
		b[i] = 1 // NOP
	}
	return append(b, data...)
}

// udpDgram returns a UDP datagram with a correct length and a zero checksum.
func udpDgram(sport, dport uint16, data []byte) []byte {
	b := make([]byte, 8, 8+len(data))
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint16(b[4:], uint16(8+len(data)))
	return append(b, data...)
}

// icmpMsg returns an ICMP message; rest is the second word (MTU, id/seq).
// The checksum is the ICMPv4 one (no pseudo header); ICMPv6 tests that care
// recompute it.
func icmpMsg(typ, code uint8, rest uint32, body []byte) []byte {
	b := []byte{typ, code, 0, 0}
	b = binary.BigEndian.AppendUint32(b, rest)
	b = append(b, body...)
	binary.BigEndian.PutUint16(b[2:], ^slowChecksum(b, 0))
	return b
}

// patch returns a copy of b with the bytes at off replaced by v.
func patch(b []byte, off int, v ...byte) []byte {
	c := append([]byte(nil), b...)
	copy(c[off:], v)
	return c
}

// patch16 returns a copy of b with the big-endian word at off set to v.
func patch16(b []byte, off int, v uint16) []byte {
	return patch(b, off, byte(v>>8), byte(v))
}

func key4(src, dst [4]byte, sport, dport uint16, proto uint8) packet.FlowKey {
	k := packet.FlowKey{SrcPort: sport, DstPort: dport, Proto: proto, Family: 4}
	copy(k.Src[:], src[:])
	copy(k.Dst[:], dst[:])
	return k
}

func key6(src, dst [16]byte, sport, dport uint16, proto uint8) packet.FlowKey {
	return packet.FlowKey{Src: src, Dst: dst, SrcPort: sport, DstPort: dport, Proto: proto, Family: 6}
}

// Ready-made frames used by several tests.

func frameV4TCP() []byte {
	return cat(ethHdr(packet.EtherTypeIPv4),
		v4{Proto: packet.ProtoTCP, Src: client4, Dst: vip4, Frag: packet.IPv4FlagDF}.build(
			tcpSeg(51000, 443, packet.TCPFlagSYN, 0, nil)))
}

func frameV4UDP() []byte {
	return cat(ethHdr(packet.EtherTypeIPv4),
		v4{Proto: packet.ProtoUDP, Src: client4, Dst: vip4}.build(
			udpDgram(40000, 53, make([]byte, 100))))
}

func frameV6TCP() []byte {
	return cat(ethHdr(packet.EtherTypeIPv6),
		v6{NH: packet.ProtoTCP, Src: client6, Dst: vip6}.build(
			tcpSeg(51000, 443, packet.TCPFlagACK, 12, make([]byte, 64))))
}

func frameVLANv4TCP() []byte {
	return cat(ethHdr(packet.EtherTypeIPv4, packet.EtherTypeQinQ, packet.EtherTypeVLAN),
		v4{Proto: packet.ProtoTCP, Src: client4, Dst: vip4}.build(
			tcpSeg(51000, 80, packet.TCPFlagACK|packet.TCPFlagPSH, 0, make([]byte, 200))))
}

// quoteV4 is what a router quotes from a VIP->client TCP packet: the IPv4
// header and the first dataLen bytes of the segment.
func quoteV4(src, dst [4]byte, proto uint8, sport, dport uint16, dataLen int) []byte {
	var l4 []byte
	if proto == packet.ProtoUDP {
		l4 = udpDgram(sport, dport, make([]byte, 1000))
	} else {
		l4 = tcpSeg(sport, dport, packet.TCPFlagACK, 0, make([]byte, 1000))
	}
	ip := v4{Proto: proto, Src: src, Dst: dst, Frag: packet.IPv4FlagDF}.build(l4)
	return ip[:20+dataLen]
}

func quoteV6(src, dst [16]byte, exts []byte, nh uint8, sport, dport uint16, dataLen int) []byte {
	ip := v6{NH: nh, Src: src, Dst: dst}.build(cat(exts, tcpSeg(sport, dport, packet.TCPFlagACK, 0, make([]byte, 1200))))
	return ip[:40+len(exts)+dataLen]
}

func frameICMPv4FragNeeded() []byte {
	return cat(ethHdr(packet.EtherTypeIPv4),
		v4{Proto: packet.ProtoICMP, Src: router4, Dst: vip4, TOS: 0xc0}.build(
			icmpMsg(packet.ICMPv4DestUnr, packet.ICMPv4FragNeed, 1400,
				quoteV4(vip4, client4, packet.ProtoTCP, 443, 51000, 8))))
}

func frameICMPv6TooBig() []byte {
	return cat(ethHdr(packet.EtherTypeIPv6),
		v6{NH: packet.ProtoICMPv6, Src: router6, Dst: vip6}.build(
			icmpMsg(packet.ICMPv6TooBig, 0, 1280,
				quoteV6(vip6, client6, nil, packet.ProtoTCP, 443, 51000, 1232-40))))
}
