package packet

import "encoding/binary"

// IPv6 is a view of the fixed IPv6 header (RFC 8200):
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|Version| Traffic Class |           Flow Label                  |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|         Payload Length        |  Next Header  |   Hop Limit   |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                                                               |
//	+                         Source Address                        +
//	|                          (16 bytes)                           |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                                                               |
//	+                      Destination Address                      +
//	|                          (16 bytes)                           |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//
// Accessors do not bounds-check: the slice must hold at least IPv6Len bytes.
type IPv6 []byte

// IPv6 header constants and the extension headers weir walks.
const (
	IPv6Len           = 40
	IPv6FragmentLen   = 8
	ExtHopByHop       = 0
	ExtRouting        = 43
	ExtFragment       = 44
	ExtDestOptions    = 60
	ExtNoNextHeader   = 59
	MaxIPv6ExtHeaders = 8 // a longer chain is dropped as malformed
)

// Version returns the version nibble.
func (h IPv6) Version() uint8 { return h[0] >> 4 }

// TrafficClass returns the traffic class byte.
func (h IPv6) TrafficClass() uint8 { return h[0]<<4 | h[1]>>4 }

// FlowLabel returns the 20-bit flow label.
func (h IPv6) FlowLabel() uint32 { return binary.BigEndian.Uint32(h[0:4]) & 0xfffff }

// PayloadLen returns the payload length field.
func (h IPv6) PayloadLen() uint16 { return binary.BigEndian.Uint16(h[4:6]) }

// NextHeader returns the next-header field.
func (h IPv6) NextHeader() uint8 { return h[6] }

// HopLimit returns the hop limit.
func (h IPv6) HopLimit() uint8 { return h[7] }

// Src returns the source address.
func (h IPv6) Src() [16]byte { return [16]byte(h[8:24]) }

// Dst returns the destination address.
func (h IPv6) Dst() [16]byte { return [16]byte(h[24:40]) }

// SetPayloadLen sets the payload length.
func (h IPv6) SetPayloadLen(n uint16) { binary.BigEndian.PutUint16(h[4:6], n) }

// SetSrc sets the source address.
func (h IPv6) SetSrc(a [16]byte) { copy(h[8:24], a[:]) }

// SetDst sets the destination address.
func (h IPv6) SetDst(a [16]byte) { copy(h[24:40], a[:]) }

// WriteIPv6Header writes a 40-byte IPv6 header at b[0:40].
func WriteIPv6Header(b []byte, trafficClass uint8, flowLabel uint32, payloadLen uint16, nextHeader, hopLimit uint8, src, dst *[16]byte) {
	_ = b[39]
	binary.BigEndian.PutUint32(b[0:4], 6<<28|uint32(trafficClass)<<20|flowLabel&0xfffff)
	binary.BigEndian.PutUint16(b[4:6], payloadLen)
	b[6] = nextHeader
	b[7] = hopLimit
	copy(b[8:24], src[:])
	copy(b[24:40], dst[:])
}
