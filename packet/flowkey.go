package packet

// FlowKey identifies one direction of a flow: the 5-tuple of a packet as the
// appliance sees it (client to VIP). It is a fixed-size comparable value so it
// can be hashed, compared and stored in the flow table without allocation.
//
// IPv4 addresses occupy the first 4 bytes of Src and Dst; the remaining 12
// bytes are zero. For IP fragments (where ports are not available in every
// fragment) and for protocols without ports, SrcPort and DstPort are zero, so
// every fragment of a datagram has the same key.
type FlowKey struct {
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
