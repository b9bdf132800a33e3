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
