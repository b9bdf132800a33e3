package packet

import "encoding/binary"

// EtherType values weir understands.
const (
	EtherTypeIPv4  = 0x0800
	EtherTypeARP   = 0x0806
	EtherTypeVLAN  = 0x8100 // 802.1Q customer tag
	EtherTypeQinQ  = 0x88a8 // 802.1ad service tag
	EtherTypeIPv6  = 0x86dd
	EthernetLen    = 14
	VLANTagLen     = 4
	MaxVLANTags    = 2
	MaxL2HeaderLen = EthernetLen + MaxVLANTags*VLANTagLen
)

// MAC is a 48-bit Ethernet address.
type MAC [6]byte

// Ethernet is a view of an Ethernet II header:
//
//	 0                   1                   2                   3
//	+-------------------------------+-------------------------------+
//	|                 destination MAC (6 bytes)                     |
//	+                               +-------------------------------+
//	|                               |      source MAC (6 bytes)     |
//	+-------------------------------+                               +
//	|                                                               |
//	+-------------------------------+-------------------------------+
//	|          EtherType            |
//	+-------------------------------+
//
// Accessors do not bounds-check: the slice must hold at least EthernetLen bytes.
type Ethernet []byte

// Dst returns the destination MAC.
func (e Ethernet) Dst() MAC { return MAC(e[0:6]) }

// Src returns the source MAC.
func (e Ethernet) Src() MAC { return MAC(e[6:12]) }

// SetDst sets the destination MAC. (An array store, unlike copy, compiles
// to two moves with no aliasing check.)
func (e Ethernet) SetDst(m MAC) { *(*MAC)(e[0:6]) = m }

// SetSrc sets the source MAC.
func (e Ethernet) SetSrc(m MAC) { *(*MAC)(e[6:12]) = m }

// Type returns the EtherType (or the TPID of a first VLAN tag).
func (e Ethernet) Type() uint16 { return binary.BigEndian.Uint16(e[12:14]) }

// SetType sets the EtherType.
func (e Ethernet) SetType(t uint16) { binary.BigEndian.PutUint16(e[12:14], t) }

// String formats the MAC as aa:bb:cc:dd:ee:ff.
func (m MAC) String() string {
	const hexDigits = "0123456789abcdef"
	buf := make([]byte, 0, 17)
	for i, b := range m {
		if i > 0 {
			buf = append(buf, ':')
		}
		buf = append(buf, hexDigits[b>>4], hexDigits[b&0xf])
	}
	return string(buf)
}
