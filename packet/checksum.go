package packet

import "encoding/binary"

// Checksum returns the 16-bit ones'-complement sum (RFC 1071) of b added to
// initial, folded but not complemented. Chain calls to sum several pieces; an
// odd-length piece must be the last one. Complement the final value to get the
// field to store (see Finish).
func Checksum(b []byte, initial uint32) uint16 {
	// Sum 32-bit big-endian words into a 64-bit accumulator: no carry can be
	// lost for any frame size weir handles, and it is about four times fewer
	// iterations than a 16-bit loop.
	acc := uint64(initial)
	for len(b) >= 32 {
		acc += uint64(binary.BigEndian.Uint32(b[0:4])) + uint64(binary.BigEndian.Uint32(b[4:8])) +
			uint64(binary.BigEndian.Uint32(b[8:12])) + uint64(binary.BigEndian.Uint32(b[12:16])) +
			uint64(binary.BigEndian.Uint32(b[16:20])) + uint64(binary.BigEndian.Uint32(b[20:24])) +
			uint64(binary.BigEndian.Uint32(b[24:28])) + uint64(binary.BigEndian.Uint32(b[28:32]))
		b = b[32:]
	}
	for len(b) >= 4 {
		acc += uint64(binary.BigEndian.Uint32(b[0:4]))
		b = b[4:]
	}
	if len(b) >= 2 {
		acc += uint64(binary.BigEndian.Uint16(b[0:2]))
		b = b[2:]
	}
	if len(b) == 1 {
		acc += uint64(b[0]) << 8
	}
	return fold64(acc)
}

// fold64 folds a 64-bit ones'-complement accumulator to 16 bits.
func fold64(acc uint64) uint16 {
	acc = (acc >> 32) + (acc & 0xffffffff)
	acc = (acc >> 32) + (acc & 0xffffffff)
	acc = (acc >> 16) + (acc & 0xffff)
	acc = (acc >> 16) + (acc & 0xffff)
	acc = (acc >> 16) + (acc & 0xffff)
	return uint16(acc)
}

// Finish complements a folded sum into the value stored in a checksum field.
func Finish(sum uint16) uint16 { return ^sum }

// PseudoHeaderSum returns the folded sum of the TCP/UDP/ICMPv6 pseudo header for
// the given addresses (4 or 16 bytes each), protocol and upper-layer length.
func PseudoHeaderSum(src, dst []byte, proto uint8, length uint32) uint16 {
	sum := Checksum(src, 0)
	sum = Checksum(dst, uint32(sum))
	return fold64(uint64(sum) + uint64(proto) + uint64(length>>16) + uint64(length&0xffff))
}

// UpdateChecksum16 returns the checksum field value after a 16-bit word covered
// by it changed from old to new (RFC 1624, equation 3: HC' = ~(~HC + ~m + m')).
func UpdateChecksum16(check, old, new uint16) uint16 {
	acc := uint64(^check) + uint64(^old) + uint64(new)
	return ^fold64(acc)
}

// UpdateChecksum32 is UpdateChecksum16 for a 32-bit field (an IPv4 address).
func UpdateChecksum32(check uint16, old, new uint32) uint16 {
	acc := uint64(^check) + uint64(^uint16(old>>16)) + uint64(^uint16(old)) +
		uint64(uint16(new>>16)) + uint64(uint16(new))
	return ^fold64(acc)
}

// EncapsulatedSum returns the ones'-complement sum (folded, not complemented)
// of the whole IP packet ip, parsed into p, reading only its headers: the
// sum a UDP checksum in front of it (GUE over IPv6) needs. A transport
// checksum that verifies makes the sum of its segment the negative of its
// pseudo header's sum, and an ICMPv4 message's sum zero, so the payload need
// not be read (the shortcut of Linux's local checksum offload). The
// addresses, in both the IP header and the pseudo header, then cancel out:
// what remains are the header's other words, less the protocol and the
// segment's length.
//
// ok is false, and the caller must sum the bytes, where that does not hold or
// is not known: fragments, IPv6 extension headers, UDP without a checksum,
// protocols other than TCP, UDP, ICMP and ICMPv6. A packet whose own
// transport checksum is wrong gets a wrong sum, so that a receiver checking
// the outer checksum drops what the inner one would have dropped.
func EncapsulatedSum(ip []byte, p *Parsed) (sum uint16, ok bool) {
	if p.Fragment || p.L4Off <= p.L3Off {
		return 0, false
	}
	hl, n := int(p.L4Off-p.L3Off), int(p.IPLen)
	if hl > n || n > len(ip) {
		return 0, false
	}
	seg := ip[hl:n]
	var pseudo bool // the transport checksum covers a pseudo header
	switch {
	case p.Proto == ProtoTCP && len(seg) >= TCPMinLen,
		p.Proto == ProtoUDP && len(seg) >= UDPLen && binary.BigEndian.Uint16(seg[6:8]) != 0,
		p.Proto == ProtoICMPv6 && p.Family == 6 && len(seg) >= ICMPHeaderLen:
		pseudo = true
	case p.Proto == ProtoICMP && p.Family == 4 && len(seg) >= ICMPHeaderLen:
	default:
		return 0, false
	}
	switch {
	case p.Family == 4 && hl >= IPv4MinLen:
		if !pseudo {
			return Checksum(ip[:hl], 0), true
		}
		// Words 0-5 (version to checksum), then any options; the
		// addresses cancel. The length is under 2^16.
		acc := uint64(binary.BigEndian.Uint32(ip[0:4])) + uint64(binary.BigEndian.Uint32(ip[4:8])) +
			uint64(binary.BigEndian.Uint32(ip[8:12])) + uint64(^uint16(p.Proto)) + uint64(^uint16(len(seg)))
		if hl > IPv4MinLen {
			acc += uint64(Checksum(ip[IPv4MinLen:hl], 0))
		}
		return fold64(acc), true
	case p.Family == 6 && hl == IPv6Len:
		// Version to hop limit; the addresses cancel.
		acc := uint64(binary.BigEndian.Uint32(ip[0:4])) + uint64(binary.BigEndian.Uint32(ip[4:8])) +
			uint64(^uint16(p.Proto)) + uint64(^uint16(len(seg)>>16)) + uint64(^uint16(len(seg)))
		return fold64(acc), true
	}
	return 0, false
}
