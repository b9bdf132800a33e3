package packet

import (
	"encoding/binary"
	"math/bits"
	"unsafe"
)

// FlowKey identifies one direction of a flow: the 5-tuple of a packet as the
// appliance sees it (client to VIP). It is a fixed-size comparable value so it
// can be hashed, compared and stored in the flow table without allocation.
//
// IPv4 addresses occupy the first 4 bytes of Src and Dst; the remaining 12
// bytes are zero. For IP fragments (where ports are not available in every
// fragment) and for protocols without ports, SrcPort and DstPort are zero, so
// every fragment of a datagram has the same key.
type FlowKey struct {
	// Eight-byte alignment lets the parser fill the key in whole words
	// (see setV4 and setV6).
	_                [0]uint64
	Src, Dst         [16]byte
	SrcPort, DstPort uint16
	Proto            uint8 // IP protocol number (6 TCP, 17 UDP, ...)
	Family           uint8 // 4 or 6
	_                [2]byte
}

// IP protocol numbers used across weir.
const (
	ProtoICMP   = 1
	ProtoIPIP   = 4
	ProtoTCP    = 6
	ProtoUDP    = 17
	ProtoIPv6   = 41
	ProtoICMPv6 = 58
)

// The parser fills a key just before FlowHash and the flow table read it back
// in 8-byte words. A load that spans several smaller stores still in flight
// cannot be forwarded from them and waits for them to retire, about a dozen
// cycles, and that wait was a third of FlowHash's time. setV4 and setV6
// therefore write each 8-byte word of the key in one store, so that every
// later load falls inside one store and is forwarded at once.

// words views a key as its five 8-byte words.
func (k *FlowKey) words() *[5]uint64 { return (*[5]uint64)(unsafe.Pointer(k)) }

// Equal reports whether k and o are the same flow. It compares the keys as
// five 8-byte words, padding included, which is the same as comparing their
// fields because every writer leaves the padding zero: field assignments and
// composite literals never set it, and setV4 and setV6 store it as zero.
func (k *FlowKey) Equal(o *FlowKey) bool {
	a, b := k.words(), o.words()
	return (a[0]^b[0])|(a[1]^b[1])|(a[2]^b[2])|(a[3]^b[3])|(a[4]^b[4]) == 0
}

// Tail returns the key's ports, protocol and family as one integer:
// SrcPort | DstPort<<16 | Proto<<32 | Family<<40. On a little-endian machine
// that is the key's last word as stored (the padding is zero), one load.
func (k *FlowKey) Tail() uint64 {
	if nativeLittleEndian {
		return k.words()[4]
	}
	return uint64(k.SrcPort) | uint64(k.DstPort)<<16 | uint64(k.Proto)<<32 | uint64(k.Family)<<40
}

// tail returns the key's last word as stored: the ports, protocol and family
// in their fields' native byte order, and the padding zero.
func tail(srcPort, dstPort uint16, proto, family uint8) uint64 {
	if nativeLittleEndian {
		return uint64(srcPort) | uint64(dstPort)<<16 | uint64(proto)<<32 | uint64(family)<<40
	}
	return uint64(srcPort)<<48 | uint64(dstPort)<<32 | uint64(proto)<<24 | uint64(family)<<16
}

// inOrder returns the word whose in-memory bytes are w's little-endian
// encoding.
func inOrder(w uint64) uint64 {
	if nativeLittleEndian {
		return w
	}
	return bits.ReverseBytes64(w)
}

// setV4 fills the key of an IPv4 packet from its source and destination
// address fields (4 bytes each); the rest of each address is zero.
func (k *FlowKey) setV4(src, dst []byte, srcPort, dstPort uint16, proto uint8) {
	w := k.words()
	w[0] = inOrder(uint64(binary.LittleEndian.Uint32(src)))
	w[1] = 0
	w[2] = inOrder(uint64(binary.LittleEndian.Uint32(dst)))
	w[3] = 0
	w[4] = tail(srcPort, dstPort, proto, 4)
}

// setV6 fills the key of an IPv6 packet from its address fields (16 bytes
// each).
func (k *FlowKey) setV6(src, dst []byte, srcPort, dstPort uint16, proto uint8) {
	w := k.words()
	w[0] = inOrder(binary.LittleEndian.Uint64(src[0:8]))
	w[1] = inOrder(binary.LittleEndian.Uint64(src[8:16]))
	w[2] = inOrder(binary.LittleEndian.Uint64(dst[0:8]))
	w[3] = inOrder(binary.LittleEndian.Uint64(dst[8:16]))
	w[4] = tail(srcPort, dstPort, proto, 6)
}
