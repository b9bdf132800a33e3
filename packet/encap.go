package packet

import "encoding/binary"

// Lengths of the outer headers each encapsulation puts in front of the inner
// IP packet (the Ethernet header and VLAN tags are reused, not added).
const (
	EncapIPIP4Len = IPv4MinLen          // outer IPv4
	EncapIPIP6Len = IPv6Len             // outer IPv6
	EncapGUE4Len  = IPv4MinLen + UDPLen // outer IPv4 + UDP (GUE variant 1 has no GUE header)
	EncapGUE6Len  = IPv6Len + UDPLen    // outer IPv6 + UDP
	MaxEncapLen   = EncapGUE6Len
	DefaultTTL    = 64
)

// InnerProto returns the protocol number that announces an inner IP packet of
// the given family in an outer IP header: 4 (IPIP) or 41 (IPv6).
func InnerProto(family uint8) uint8 {
	if family == 6 {
		return ProtoIPv6
	}
	return ProtoIPIP
}

// moveL2 moves the l2Len-byte Ethernet header (with any VLAN tags) at
// buf[start:] back by n bytes, sets the EtherType that announces the next
// header to etherType, and returns the new start.
func moveL2(buf []byte, start, l2Len, n int, etherType uint16) int {
	ns := start - n
	if l2Len == EthernetLen && n >= EthernetLen {
		// The untagged header, by far the most common, as a fixed-size
		// copy (two loads and two stores) rather than a memmove call. The
		// two places do not overlap.
		h := (*[EthernetLen]byte)(buf[ns : ns+EthernetLen])
		*h = [EthernetLen]byte(buf[start : start+EthernetLen])
		binary.BigEndian.PutUint16(h[12:14], etherType)
		return ns
	}
	copy(buf[ns:ns+l2Len], buf[start:start+l2Len])
	binary.BigEndian.PutUint16(buf[ns+l2Len-2:ns+l2Len], etherType)
	return ns
}

// EncapIPv4 puts an outer IPv4 header (protocol proto: 4 or 41 for IPIP, 17 for
// GUE, whose UDP header the caller writes right after) in front of the ipLen-byte
// IP packet that follows the l2Len-byte L2 header at buf[start:]. extra is the
// number of bytes between the outer IP header and the inner packet (8 for
// GUE). buf must have EncapIPIP4Len+extra bytes of headroom before start. It
// returns the new frame start; the outer header is at newStart+l2Len.
func EncapIPv4(buf []byte, start, l2Len, ipLen, extra int, proto, tos uint8, df bool, id uint16, src, dst [4]byte) int {
	n := IPv4MinLen + extra
	ns := moveL2(buf, start, l2Len, n, EtherTypeIPv4)
	var flags uint16
	if df {
		flags = IPv4FlagDF
	}
	w0, w1, w2 := IPv4HeaderWords(tos, uint16(ipLen+n), id, flags, DefaultTTL, proto)
	PutIPv4HeaderWords((*[IPv4MinLen]byte)(buf[ns+l2Len:]), w0, w1, w2,
		uint64(binary.BigEndian.Uint32(src[:])), uint64(binary.BigEndian.Uint32(dst[:])))
	return ns
}

// EncapIPv6 is EncapIPv4 with an outer IPv6 header.
func EncapIPv6(buf []byte, start, l2Len, ipLen, extra int, nextHeader, trafficClass uint8, flowLabel uint32, src, dst *[16]byte) int {
	n := IPv6Len + extra
	ns := moveL2(buf, start, l2Len, n, EtherTypeIPv6)
	WriteIPv6Header(buf[ns+l2Len:], trafficClass, flowLabel, uint16(ipLen+extra), nextHeader, DefaultTTL, src, dst)
	return ns
}

// WriteICMPTooBig rewrites, in place, the frame at buf[start:] (described by p)
// into an ICMPv4 "fragmentation needed" or ICMPv6 "packet too big" message
// from the packet's destination back to its source, advertising mtu. MACs are
// swapped and VLAN tags kept. The quoted part is cut so that the reply fits
// the minimum MTU (576 bytes for IPv4, 1280 for IPv6). buf needs 48 bytes of
// headroom before start. It returns the new frame start and length.
func WriteICMPTooBig(buf []byte, start int, p *Parsed, mtu uint32) (newStart, newLen int) {
	l2Len := int(p.L3Off)
	l3 := start + l2Len
	if p.Family == 4 {
		const prefix = IPv4MinLen + ICMPHeaderLen
		quote := min(int(p.IPLen), 576-prefix)
		ip := IPv4(buf[l3:])
		src, dst := ip.Src(), ip.Dst()
		ns := moveL2(buf, start, l2Len, prefix, EtherTypeIPv4)
		swapMACs(buf[ns:])
		WriteIPv4Header(buf[ns+l2Len:], 0xc0, uint16(prefix+quote), 0, IPv4FlagDF, DefaultTTL, ProtoICMP, dst, src)
		c := buf[ns+l2Len+IPv4MinLen:]
		c[0], c[1] = ICMPv4DestUnr, ICMPv4FragNeed
		binary.BigEndian.PutUint16(c[2:4], 0)
		binary.BigEndian.PutUint16(c[4:6], 0)
		binary.BigEndian.PutUint16(c[6:8], uint16(min(mtu, 0xffff)))
		binary.BigEndian.PutUint16(c[2:4], Finish(Checksum(c[:ICMPHeaderLen+quote], 0)))
		return ns, l2Len + prefix + quote
	}
	const prefix = IPv6Len + ICMPHeaderLen
	quote := min(int(p.IPLen), 1280-prefix)
	ip := IPv6(buf[l3:])
	src, dst := ip.Src(), ip.Dst()
	ns := moveL2(buf, start, l2Len, prefix, EtherTypeIPv6)
	swapMACs(buf[ns:])
	WriteIPv6Header(buf[ns+l2Len:], 0, 0, uint16(ICMPHeaderLen+quote), ProtoICMPv6, DefaultTTL, &dst, &src)
	c := buf[ns+l2Len+IPv6Len:]
	c[0], c[1] = ICMPv6TooBig, 0
	binary.BigEndian.PutUint16(c[2:4], 0)
	binary.BigEndian.PutUint32(c[4:8], mtu)
	sum := PseudoHeaderSum(dst[:], src[:], ProtoICMPv6, uint32(ICMPHeaderLen+quote))
	binary.BigEndian.PutUint16(c[2:4], Finish(Checksum(c[:ICMPHeaderLen+quote], uint32(sum))))
	return ns, l2Len + prefix + quote
}

func swapMACs(eth []byte) {
	var tmp [6]byte
	copy(tmp[:], eth[0:6])
	copy(eth[0:6], eth[6:12])
	copy(eth[6:12], tmp[:])
}
