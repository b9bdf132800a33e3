package packet

import "encoding/binary"

// Transport header lengths and ICMP types weir acts on.
const (
	UDPLen         = 8
	TCPMinLen      = 20
	ICMPHeaderLen  = 8
	ICMPv4EchoReq  = 8
	ICMPv4DestUnr  = 3
	ICMPv4TimeExc  = 11
	ICMPv4FragNeed = 4 // code of ICMPv4DestUnr: fragmentation needed and DF set
	ICMPv6DestUnr  = 1
	ICMPv6TooBig   = 2
	ICMPv6TimeExc  = 3
	ICMPv6EchoReq  = 128
)

// TCP flag bits (byte 13 of the header).
const (
	TCPFlagFIN = 0x01
	TCPFlagSYN = 0x02
	TCPFlagRST = 0x04
	TCPFlagPSH = 0x08
	TCPFlagACK = 0x10
)

// TCP is a view of a TCP header (RFC 9293):
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|          Source Port          |       Destination Port        |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                        Sequence Number                        |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                    Acknowledgment Number                      |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|  Data |       |C|E|U|A|P|R|S|F|                               |
//	| Offset| Rsrvd |W|C|R|C|S|S|Y|I|            Window             |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|           Checksum            |         Urgent Pointer        |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//
// Accessors do not bounds-check: the slice must hold at least TCPMinLen bytes.
type TCP []byte

// SrcPort returns the source port.
func (t TCP) SrcPort() uint16 { return binary.BigEndian.Uint16(t[0:2]) }

// DstPort returns the destination port.
func (t TCP) DstPort() uint16 { return binary.BigEndian.Uint16(t[2:4]) }

// DataOffset returns the header length in bytes.
func (t TCP) DataOffset() int { return int(t[12]>>4) * 4 }

// Flags returns the flag byte.
func (t TCP) Flags() uint8 { return t[13] }

// Checksum returns the checksum field.
func (t TCP) Checksum() uint16 { return binary.BigEndian.Uint16(t[16:18]) }

// UDP is a view of a UDP header (RFC 768):
//
//	 0      7 8     15 16    23 24    31
//	+--------+--------+--------+--------+
//	|     Source      |   Destination   |
//	|      Port       |      Port       |
//	+--------+--------+--------+--------+
//	|     Length      |    Checksum     |
//	+--------+--------+--------+--------+
//
// Accessors do not bounds-check: the slice must hold at least UDPLen bytes.
type UDP []byte

// SrcPort returns the source port.
func (u UDP) SrcPort() uint16 { return binary.BigEndian.Uint16(u[0:2]) }

// DstPort returns the destination port.
func (u UDP) DstPort() uint16 { return binary.BigEndian.Uint16(u[2:4]) }

// Length returns the length field.
func (u UDP) Length() uint16 { return binary.BigEndian.Uint16(u[4:6]) }

// Checksum returns the checksum field.
func (u UDP) Checksum() uint16 { return binary.BigEndian.Uint16(u[6:8]) }

// SetChecksum sets the checksum field.
func (u UDP) SetChecksum(c uint16) { binary.BigEndian.PutUint16(u[6:8], c) }

// PutUDPHeader is WriteUDPHeader for a fixed-size destination, in one store.
func PutUDPHeader(h *[UDPLen]byte, src, dst, length, checksum uint16) {
	binary.BigEndian.PutUint64(h[:], uint64(src)<<48|uint64(dst)<<32|uint64(length)<<16|uint64(checksum))
}

// WriteUDPHeader writes a UDP header at b[0:8] with the given checksum field.
func WriteUDPHeader(b []byte, src, dst, length, checksum uint16) {
	_ = b[7]
	binary.BigEndian.PutUint16(b[0:2], src)
	binary.BigEndian.PutUint16(b[2:4], dst)
	binary.BigEndian.PutUint16(b[4:6], length)
	binary.BigEndian.PutUint16(b[6:8], checksum)
}

// ICMP is a view of an ICMPv4 or ICMPv6 header; the layout of the first eight
// bytes is the same for the messages weir handles:
//
//	 0                   1                   2                   3
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|     Type      |     Code      |          Checksum             |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|  type-specific (MTU for frag-needed / packet-too-big)         |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|      quoted packet (for error messages) ...
//
// Accessors do not bounds-check: the slice must hold at least ICMPHeaderLen bytes.
type ICMP []byte

// Type returns the message type.
func (c ICMP) Type() uint8 { return c[0] }

// Code returns the message code.
func (c ICMP) Code() uint8 { return c[1] }

// Checksum returns the checksum field.
func (c ICMP) Checksum() uint16 { return binary.BigEndian.Uint16(c[2:4]) }

// SetChecksum sets the checksum field.
func (c ICMP) SetChecksum(v uint16) { binary.BigEndian.PutUint16(c[2:4], v) }

// MTU returns the next-hop MTU of an ICMPv4 fragmentation-needed message
// (the low 16 bits of the second word) or of an ICMPv6 packet-too-big message
// (the whole second word).
func (c ICMP) MTU() uint32 { return binary.BigEndian.Uint32(c[4:8]) }

// IsICMPv4Error reports whether an ICMPv4 type is an error weir forwards to the
// backend owning the quoted flow.
func IsICMPv4Error(typ uint8) bool { return typ == ICMPv4DestUnr || typ == ICMPv4TimeExc }

// IsICMPv6Error reports whether an ICMPv6 type is an error weir forwards to the
// backend owning the quoted flow.
func IsICMPv6Error(typ uint8) bool {
	return typ == ICMPv6DestUnr || typ == ICMPv6TooBig || typ == ICMPv6TimeExc
}
