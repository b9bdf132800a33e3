package packet

import "encoding/binary"

// IPv4 is a view of an IPv4 header (RFC 791):
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|Version|  IHL  |Type of Service|          Total Length         |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|         Identification        |Flags|      Fragment Offset    |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|  Time to Live |    Protocol   |         Header Checksum       |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                       Source Address                          |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                    Destination Address                        |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                    Options                    |    Padding    |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//
// Accessors do not bounds-check: the slice must hold at least IPv4MinLen bytes
// (HeaderLen bytes for options). Parse validates a header before it is used.
type IPv4 []byte

// IPv4 header constants.
const (
	IPv4MinLen     = 20
	IPv4MaxLen     = 60
	IPv4FlagDF     = 0x4000
	IPv4FlagMF     = 0x2000
	ipv4OffsetMask = 0x1fff
)

// HeaderLen returns IHL in bytes.
func (h IPv4) HeaderLen() int { return int(h[0]&0x0f) * 4 }

// Version returns the version nibble.
func (h IPv4) Version() uint8 { return h[0] >> 4 }

// TOS returns the type-of-service (DSCP and ECN) byte.
func (h IPv4) TOS() uint8 { return h[1] }

// TotalLen returns the total length field.
func (h IPv4) TotalLen() uint16 { return binary.BigEndian.Uint16(h[2:4]) }

// ID returns the identification field.
func (h IPv4) ID() uint16 { return binary.BigEndian.Uint16(h[4:6]) }

// FlagsFragment returns the flags and fragment-offset word.
func (h IPv4) FlagsFragment() uint16 { return binary.BigEndian.Uint16(h[6:8]) }

// IsFragment reports whether the packet is any fragment of a larger datagram.
func (h IPv4) IsFragment() bool { return h.FlagsFragment()&(IPv4FlagMF|ipv4OffsetMask) != 0 }

// FragmentOffset returns the fragment offset in bytes.
func (h IPv4) FragmentOffset() int { return int(h.FlagsFragment()&ipv4OffsetMask) * 8 }

// TTL returns the time-to-live.
func (h IPv4) TTL() uint8 { return h[8] }

// Protocol returns the upper-layer protocol.
func (h IPv4) Protocol() uint8 { return h[9] }

// Checksum returns the header checksum field.
func (h IPv4) Checksum() uint16 { return binary.BigEndian.Uint16(h[10:12]) }

// Src returns the source address.
func (h IPv4) Src() [4]byte { return [4]byte(h[12:16]) }

// Dst returns the destination address.
func (h IPv4) Dst() [4]byte { return [4]byte(h[16:20]) }

// SetTotalLen sets the total length (the checksum is not updated).
func (h IPv4) SetTotalLen(n uint16) { binary.BigEndian.PutUint16(h[2:4], n) }

// SetChecksum sets the header checksum field.
func (h IPv4) SetChecksum(c uint16) { binary.BigEndian.PutUint16(h[10:12], c) }

// SetSrc sets the source address (the checksum is not updated).
func (h IPv4) SetSrc(a [4]byte) { copy(h[12:16], a[:]) }

// SetDst sets the destination address (the checksum is not updated).
func (h IPv4) SetDst(a [4]byte) { copy(h[16:20], a[:]) }

// ComputeChecksum returns the checksum field value for the header as it is,
// treating the current checksum field as zero.
func (h IPv4) ComputeChecksum() uint16 {
	hl := h.HeaderLen()
	sum := Checksum(h[:10], 0)
	return Finish(Checksum(h[12:hl], uint32(sum)))
}

// ChecksumValid reports whether the header checksum verifies.
func (h IPv4) ChecksumValid() bool { return Checksum(h[:h.HeaderLen()], 0) == 0xffff }

// WriteIPv4Header writes a 20-byte IPv4 header without options at b[0:20]
// with a correct checksum. flags carries IPv4FlagDF when set.
func WriteIPv4Header(b []byte, tos uint8, totalLen uint16, id uint16, flags uint16, ttl, proto uint8, src, dst [4]byte) {
	w0, w1, w2 := IPv4HeaderWords(tos, totalLen, id, flags, ttl, proto)
	PutIPv4HeaderWords((*[IPv4MinLen]byte)(b), w0, w1, w2,
		uint64(binary.BigEndian.Uint32(src[:])), uint64(binary.BigEndian.Uint32(dst[:])))
}

// IPv4HeaderWords returns the first three 32-bit words of an IPv4 header
// without options, the checksum left zero, for PutIPv4HeaderWords.
func IPv4HeaderWords(tos uint8, totalLen uint16, id uint16, flags uint16, ttl, proto uint8) (w0, w1, w2 uint64) {
	return 0x45<<24 | uint64(tos)<<16 | uint64(totalLen), uint64(id)<<16 | uint64(flags), uint64(ttl)<<24 | uint64(proto)<<16
}

// PutIPv4HeaderWords stores the 32-bit header words w0, w1 and w2 (checksum
// zero) and the addresses src and dst (big-endian integers: bytes a.b.c.d
// as a<<24|b<<16|c<<8|d) at h, with the checksum. The five words sum to
// less than 2^35, and that sum folds to the same one's complement sum as
// the ten 16-bit words would. With IPv4HeaderWords it is WriteIPv4Header in
// two pieces small enough to inline into the per-packet path; both take
// scalars so that nothing goes through memory.
func PutIPv4HeaderWords(h *[IPv4MinLen]byte, w0, w1, w2, src, dst uint64) {
	acc := w0 + w1 + w2 + src + dst
	acc = acc>>16 + acc&0xffff // < 2^20 (2^16 is 1 in one's complement)
	acc = acc>>16 + acc&0xffff // <= 0xffff + 15
	acc = acc>>16 + acc&0xffff // <= 0xffff
	binary.BigEndian.PutUint64(h[0:8], w0<<32|w1)
	binary.BigEndian.PutUint64(h[8:16], (w2|^acc&0xffff)<<32|src)
	binary.BigEndian.PutUint32(h[16:20], uint32(dst))
}
