package packet

import "encoding/binary"

// Reason says why Parse could not make sense of a frame. Reasons are stable,
// named and counted by the appliance; OK means the frame parsed.
type Reason uint8

// Parse outcomes. Keep names in reasonNames in step.
const (
	OK                 Reason = iota
	ReasonTruncated           // a header or the IP length runs past the end of the frame
	ReasonNotIP               // EtherType is neither IPv4 nor IPv6 (ARP, LLDP, ...)
	ReasonTooManyVLANs        // more than MaxVLANTags VLAN tags
	ReasonBadVersion          // IP version nibble does not match the EtherType
	ReasonBadIHL              // IPv4 header length below 20 bytes
	ReasonBadLength           // a length field is inconsistent (total length < header, TCP offset < 20, ...)
	ReasonTTLExpired          // IPv4 TTL or IPv6 hop limit is zero
	ReasonBadExtHeader        // IPv6 extension-header chain too long or malformed
	ReasonBadICMP             // ICMP error whose quoted packet is unusable or not from the destination
	NumReasons
)

var reasonNames = [NumReasons]string{
	OK:                 "ok",
	ReasonTruncated:    "truncated",
	ReasonNotIP:        "not_ip",
	ReasonTooManyVLANs: "too_many_vlans",
	ReasonBadVersion:   "bad_ip_version",
	ReasonBadIHL:       "bad_ihl",
	ReasonBadLength:    "bad_length",
	ReasonTTLExpired:   "ttl_expired",
	ReasonBadExtHeader: "bad_ext_header",
	ReasonBadICMP:      "bad_icmp_quote",
}

// String returns the reason's metric label.
func (r Reason) String() string {
	if r < NumReasons {
		return reasonNames[r]
	}
	return "unknown"
}

// Parsed is what Parse learns about a frame. The caller owns it and reuses it
// for every frame; Parse overwrites every field.
type Parsed struct {
	// Key is the flow the packet belongs to, client to VIP. For an ICMP error
	// it is the flow of the quoted packet, turned around (the quoted packet
	// went from the VIP to the client). For fragments the ports are zero so
	// that every fragment of a datagram has the same key.
	Key FlowKey

	Reason    Reason
	VLANTags  uint8  // number of VLAN tags between Ethernet and IP
	L3Off     uint16 // offset of the IP header in the frame
	L4Off     uint16 // offset of the transport header; 0 when absent (non-first fragment)
	IPLen     uint16 // bytes from L3Off to the end of the IP packet (Ethernet padding excluded)
	Family    uint8  // 4 or 6
	Proto     uint8  // upper-layer protocol of the packet itself (ICMP for an ICMP error)
	TOS       uint8  // IPv4 TOS or IPv6 traffic class
	DF        bool   // IPv4 don't-fragment bit (always true for IPv6, which routers never fragment)
	Fragment  bool   // the packet is a fragment (first or not)
	ICMPError bool   // an ICMP error message; Key is the quoted flow
	ICMPType  uint8
	ICMPCode  uint8
	TCPFlags  uint8
}

// Parse decodes frame (starting at its Ethernet header) into p. It never
// allocates and never panics on any input; a frame it cannot use is reported
// in p.Reason and the remaining fields are unspecified.
//
// Almost every frame is an untagged IPv4 packet without options carrying a
// whole TCP segment or UDP datagram. Parse handles those in a straight line
// (with the same result as the general parser, which the tests check) and
// hands every other frame to parseOther.
func Parse(frame []byte, p *Parsed) {
	const l3, l4 = EthernetLen, EthernetLen + IPv4MinLen
	if len(frame) < l4+UDPLen {
		parse(frame, p)
		return
	}
	h := (*[l4 + UDPLen]byte)(frame)
	total := int(binary.BigEndian.Uint16(h[l3+2 : l3+4]))
	ff := binary.BigEndian.Uint16(h[l3+6 : l3+8])
	if binary.BigEndian.Uint16(h[12:14]) != EtherTypeIPv4 || h[l3] != 0x45 || h[l3+8] == 0 ||
		ff&(IPv4FlagMF|ipv4OffsetMask) != 0 || total < IPv4MinLen || total > len(frame)-l3 {
		parseOther(frame, p)
		return
	}
	proto := h[l3+9]
	seg := frame[l4 : l3+total]
	var sp, dp uint16
	var flags uint8
	switch {
	case proto == ProtoTCP && len(seg) >= TCPMinLen:
		t := (*[TCPMinLen]byte)(seg)
		if d := int(t[12]>>4) * 4; d < TCPMinLen || d > len(seg) {
			parse(frame, p)
			return
		}
		sp, dp, flags = binary.BigEndian.Uint16(t[0:2]), binary.BigEndian.Uint16(t[2:4]), t[13]
	case proto == ProtoUDP && len(seg) >= UDPLen:
		u := (*[UDPLen]byte)(seg)
		if n := int(binary.BigEndian.Uint16(u[4:6])); n < UDPLen || n > len(seg) {
			parse(frame, p)
			return
		}
		sp, dp = binary.BigEndian.Uint16(u[0:2]), binary.BigEndian.Uint16(u[2:4])
	default:
		parse(frame, p)
		return
	}
	p.Key.setV4(h[l3+12:l3+16], h[l3+16:l3+20], sp, dp, proto)
	p.Reason, p.VLANTags = OK, 0
	p.L3Off, p.L4Off, p.IPLen = l3, l4, uint16(total)
	p.Family, p.Proto, p.TOS = 4, proto, h[l3+1]
	p.DF, p.Fragment, p.ICMPError = ff&IPv4FlagDF != 0, false, false
	p.ICMPType, p.ICMPCode, p.TCPFlags = 0, 0, flags
}

// parseOther parses a frame Parse's IPv4 path does not take: an IPv6
// packet without extension headers carrying TCP or UDP takes a short path
// too, the rest the general parser.
func parseOther(frame []byte, p *Parsed) {
	if binary.BigEndian.Uint16(frame[12:14]) != EtherTypeIPv6 || !parseFast6(frame, p) {
		parse(frame, p)
	}
}

// parseFast6 parses an untagged IPv6 frame without extension headers that
// carries TCP or UDP, and reports false, having written nothing, for any
// other frame. frame holds at least 42 bytes.
func parseFast6(frame []byte, p *Parsed) bool {
	const l3, l4 = EthernetLen, EthernetLen + IPv6Len
	if len(frame) < l4 {
		return false
	}
	h := (*[l4]byte)(frame)
	total := IPv6Len + int(binary.BigEndian.Uint16(h[l3+4:l3+6]))
	proto := h[l3+6]
	// A total past len(frame) (at most 64 KiB) also keeps l3+total, which
	// Parsed stores in 16 bits, in range.
	if h[l3]>>4 != 6 || h[l3+7] == 0 || total > len(frame)-l3 || l3+total > 0xffff {
		return false
	}
	sp, dp, flags, ok := fastL4(frame[l4:l3+total], proto)
	if !ok {
		return false
	}
	p.Key.setV6(h[l3+8:l3+24], h[l3+24:l3+40], sp, dp, proto)
	p.Reason, p.VLANTags = OK, 0
	p.L3Off, p.L4Off, p.IPLen = l3, l4, uint16(total)
	p.Family, p.Proto, p.TOS = 6, proto, uint8(binary.BigEndian.Uint16(h[l3:l3+2])>>4)
	p.DF, p.Fragment, p.ICMPError = true, false, false
	p.ICMPType, p.ICMPCode, p.TCPFlags = 0, 0, flags
	return true
}

// fastL4 checks a TCP or UDP header at the start of l4 (which ends where the
// IP packet ends) as parseL4 does, and returns its ports and the TCP flags
// (0 for UDP). It reports false for any other protocol or a header parseL4
// would reject.
func fastL4(l4 []byte, proto uint8) (sp, dp uint16, flags uint8, ok bool) {
	switch proto {
	case ProtoTCP:
		if len(l4) < TCPMinLen {
			return 0, 0, 0, false
		}
		t := (*[TCPMinLen]byte)(l4)
		if d := int(t[12]>>4) * 4; d < TCPMinLen || d > len(l4) {
			return 0, 0, 0, false
		}
		return binary.BigEndian.Uint16(t[0:2]), binary.BigEndian.Uint16(t[2:4]), t[13], true
	case ProtoUDP:
		if len(l4) < UDPLen {
			return 0, 0, 0, false
		}
		u := (*[UDPLen]byte)(l4)
		if n := int(binary.BigEndian.Uint16(u[4:6])); n < UDPLen || n > len(l4) {
			return 0, 0, 0, false
		}
		return binary.BigEndian.Uint16(u[0:2]), binary.BigEndian.Uint16(u[2:4]), 0, true
	}
	return 0, 0, 0, false
}

// parse is the general parser, for every frame the fast paths do not take.
func parse(frame []byte, p *Parsed) {
	*p = Parsed{}
	if len(frame) < EthernetLen {
		p.Reason = ReasonTruncated
		return
	}
	off := EthernetLen
	etherType := binary.BigEndian.Uint16(frame[12:14])
	for etherType == EtherTypeVLAN || etherType == EtherTypeQinQ {
		if p.VLANTags == MaxVLANTags {
			p.Reason = ReasonTooManyVLANs
			return
		}
		if len(frame) < off+VLANTagLen {
			p.Reason = ReasonTruncated
			return
		}
		etherType = binary.BigEndian.Uint16(frame[off+2 : off+4])
		off += VLANTagLen
		p.VLANTags++
	}
	p.L3Off = uint16(off)
	switch etherType {
	case EtherTypeIPv4:
		parseIPv4(frame, off, p)
	case EtherTypeIPv6:
		parseIPv6(frame, off, p)
	default:
		p.Reason = ReasonNotIP
	}
}

func parseIPv4(frame []byte, off int, p *Parsed) {
	if len(frame)-off < IPv4MinLen {
		p.Reason = ReasonTruncated
		return
	}
	ip := IPv4(frame[off:])
	if ip.Version() != 4 {
		p.Reason = ReasonBadVersion
		return
	}
	hl := ip.HeaderLen()
	if hl < IPv4MinLen {
		p.Reason = ReasonBadIHL
		return
	}
	total := int(ip.TotalLen())
	if total < hl {
		p.Reason = ReasonBadLength
		return
	}
	if total > len(ip) {
		p.Reason = ReasonTruncated
		return
	}
	if ip.TTL() == 0 {
		p.Reason = ReasonTTLExpired
		return
	}
	p.Family = 4
	p.IPLen = uint16(total)
	p.Proto = ip.Protocol()
	p.TOS = ip.TOS()
	ff := ip.FlagsFragment()
	p.DF = ff&IPv4FlagDF != 0
	k := &p.Key
	k.Family = 4
	k.Proto = p.Proto
	copy(k.Src[:4], ip[12:16])
	copy(k.Dst[:4], ip[16:20])
	if ff&(IPv4FlagMF|ipv4OffsetMask) != 0 {
		// Every fragment is keyed on (source, destination, protocol) so that
		// the first fragment, which carries the ports, goes where the rest go.
		p.Fragment = true
		if ff&ipv4OffsetMask == 0 {
			p.L4Off = uint16(off + hl)
		}
		return
	}
	parseL4(frame[:off+total], off+hl, p)
}

func parseIPv6(frame []byte, off int, p *Parsed) {
	if len(frame)-off < IPv6Len {
		p.Reason = ReasonTruncated
		return
	}
	ip := IPv6(frame[off:])
	if ip.Version() != 6 {
		p.Reason = ReasonBadVersion
		return
	}
	total := IPv6Len + int(ip.PayloadLen())
	if total > len(ip) {
		p.Reason = ReasonTruncated
		return
	}
	if off+total > 0xffff {
		// Parsed holds offsets in 16 bits; a packet ending past 64 KiB (no
		// link weir serves carries one) would wrap IPLen or L4Off.
		p.Reason = ReasonBadLength
		return
	}
	if ip.HopLimit() == 0 {
		p.Reason = ReasonTTLExpired
		return
	}
	p.Family = 6
	p.IPLen = uint16(total)
	p.TOS = ip.TrafficClass()
	p.DF = true
	k := &p.Key
	k.Family = 6
	copy(k.Src[:], ip[8:24])
	copy(k.Dst[:], ip[24:40])
	end := off + total
	proto, l4, fragment, first, ok := walkIPv6Ext(frame[:end], off+IPv6Len, ip.NextHeader())
	if !ok {
		p.Reason = ReasonBadExtHeader
		return
	}
	p.Proto = proto
	k.Proto = proto
	if fragment {
		p.Fragment = true
		if first {
			p.L4Off = uint16(l4)
		}
		return
	}
	parseL4(frame[:end], l4, p)
}

// walkIPv6Ext follows the extension-header chain that starts at off with next
// header nh, inside pkt (which ends where the IPv6 payload ends). It returns
// the upper-layer protocol and its offset, whether the packet is a fragment
// (and if so whether the first one), and false when the chain is malformed.
func walkIPv6Ext(pkt []byte, off int, nh uint8) (proto uint8, l4 int, fragment, first, ok bool) {
	// Iteration i looks at header i+1 of the chain: up to MaxIPv6ExtHeaders
	// extension headers and then the upper-layer header.
	for i := 0; i <= MaxIPv6ExtHeaders; i++ {
		switch nh {
		case ExtHopByHop, ExtRouting, ExtDestOptions:
			if len(pkt)-off < 8 {
				return 0, 0, false, false, false
			}
			n := (int(pkt[off+1]) + 1) * 8
			if len(pkt)-off < n {
				return 0, 0, false, false, false
			}
			nh = pkt[off]
			off += n
		case ExtFragment:
			if len(pkt)-off < IPv6FragmentLen {
				return 0, 0, false, false, false
			}
			fo := binary.BigEndian.Uint16(pkt[off+2 : off+4])
			nh = pkt[off]
			off += IPv6FragmentLen
			if fo&0xfff9 != 0 { // offset or M flag: a real fragment, not an atomic one
				return nh, off, true, fo&0xfff8 == 0, true
			}
		default:
			return nh, off, false, false, true
		}
	}
	return 0, 0, false, false, false
}

// parseL4 reads the transport header at off of a non-fragmented packet whose
// IP packet ends at len(pkt).
func parseL4(pkt []byte, off int, p *Parsed) {
	p.L4Off = uint16(off)
	avail := len(pkt) - off
	k := &p.Key
	switch p.Proto {
	case ProtoTCP:
		if avail < TCPMinLen {
			p.Reason = ReasonTruncated
			return
		}
		t := TCP(pkt[off:])
		if d := t.DataOffset(); d < TCPMinLen || d > avail {
			p.Reason = ReasonBadLength
			return
		}
		k.SrcPort, k.DstPort = t.SrcPort(), t.DstPort()
		p.TCPFlags = t.Flags()
	case ProtoUDP:
		if avail < UDPLen {
			p.Reason = ReasonTruncated
			return
		}
		u := UDP(pkt[off:])
		if l := int(u.Length()); l < UDPLen || l > avail {
			p.Reason = ReasonBadLength
			return
		}
		k.SrcPort, k.DstPort = u.SrcPort(), u.DstPort()
	case ProtoICMP, ProtoICMPv6:
		if avail < ICMPHeaderLen {
			p.Reason = ReasonTruncated
			return
		}
		c := ICMP(pkt[off:])
		p.ICMPType, p.ICMPCode = c.Type(), c.Code()
		if (p.Proto == ProtoICMP && p.Family == 4 && IsICMPv4Error(p.ICMPType)) ||
			(p.Proto == ProtoICMPv6 && p.Family == 6 && IsICMPv6Error(p.ICMPType)) {
			p.ICMPError = true
			parseQuote(pkt, off+ICMPHeaderLen, p)
		}
	}
}

// parseQuote turns the packet quoted by an ICMP error (sent by the VIP to a
// client) into the key of the client-to-VIP flow it belongs to. The quoted
// packet must come from the address the error is sent to.
func parseQuote(pkt []byte, off int, p *Parsed) {
	outerDst := p.Key.Dst
	var inner Parsed
	q := pkt[off:]
	switch p.Family {
	case 4:
		if len(q) < IPv4MinLen || q[0]>>4 != 4 {
			p.Reason = ReasonBadICMP
			return
		}
		ip := IPv4(q)
		hl := ip.HeaderLen()
		if hl < IPv4MinLen || len(q) < hl+8 || ip.FragmentOffset() != 0 {
			p.Reason = ReasonBadICMP
			return
		}
		inner.Key.Family = 4
		inner.Key.Proto = ip.Protocol()
		copy(inner.Key.Src[:4], q[12:16])
		copy(inner.Key.Dst[:4], q[16:20])
		off = hl
	case 6:
		if len(q) < IPv6Len || q[0]>>4 != 6 {
			p.Reason = ReasonBadICMP
			return
		}
		// The quote is usually truncated, so walk it without trusting its
		// payload length.
		proto, l4, frag, first, ok := walkIPv6Ext(q, IPv6Len, q[6])
		if !ok || (frag && !first) || len(q) < l4+8 {
			p.Reason = ReasonBadICMP
			return
		}
		inner.Key.Family = 6
		inner.Key.Proto = proto
		copy(inner.Key.Src[:], q[8:24])
		copy(inner.Key.Dst[:], q[24:40])
		off = l4
	}
	if inner.Key.Src != outerDst {
		p.Reason = ReasonBadICMP
		return
	}
	switch inner.Key.Proto {
	case ProtoTCP, ProtoUDP:
	default:
		p.Reason = ReasonBadICMP
		return
	}
	// Turn the quoted VIP-to-client packet into the client-to-VIP key.
	k := &p.Key
	k.Src, k.Dst = inner.Key.Dst, inner.Key.Src
	k.Proto = inner.Key.Proto
	k.Family = inner.Key.Family
	k.DstPort = binary.BigEndian.Uint16(q[off : off+2])
	k.SrcPort = binary.BigEndian.Uint16(q[off+2 : off+4])
}
