package perf

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/weirlb/weir/packet"
)

// Frame sizes follow RFC 2544: a size is the Ethernet frame on the wire,
// FCS included, so a frame in memory is four bytes shorter. A size smaller
// than the headers (64 bytes with IPv6 and TCP) gives the smallest frame
// that holds them.
const (
	fcsLen       = 4
	ethLen       = 14
	tcpLen       = packet.TCPMinLen
	udpLen       = packet.UDPLen
	payloadLen   = 16 // struct payload in perf.h
	payloadMagic = 0x77656972
	// MinSize and MaxSize bound FrameSpec.Size: a 1500-byte MTU carries
	// at most a 1518-byte frame.
	MinSize = 64
	MaxSize = 1518
)

// FrameSpec describes a synthetic frame: Ethernet, IPv4 or IPv6 without
// options or extension headers, TCP (an ACK) or UDP, and zero padding.
type FrameSpec struct {
	Size             int // on the wire, FCS included (MinSize..MaxSize)
	Proto            uint8
	SrcMAC, DstMAC   packet.MAC
	Src, Dst         netip.Addr // the same family
	SrcPort, DstPort uint16
}

// frameLen is the length of the frame in memory.
func (s FrameSpec) frameLen() int {
	return max(s.Size-fcsLen, s.headerLen())
}

func (s FrameSpec) l3Len() int {
	if s.Src.Is4() {
		return packet.IPv4MinLen
	}
	return packet.IPv6Len
}

func (s FrameSpec) l4Len() int {
	if s.Proto == packet.ProtoTCP {
		return tcpLen
	}
	return udpLen
}

func (s FrameSpec) headerLen() int { return ethLen + s.l3Len() + s.l4Len() }

// WireSize is the frame's size on the wire as built: Size, or more when the
// headers do not fit in Size.
func (s FrameSpec) WireSize() int { return s.frameLen() + fcsLen }

// srcOffset is the offset of the source address in the frame, portOffset the
// offset of the source port and payloadOffset that of the L4 payload.
func (s FrameSpec) srcOffset() int {
	if s.Src.Is4() {
		return ethLen + 12
	}
	return ethLen + 8
}
func (s FrameSpec) portOffset() int    { return ethLen + s.l3Len() }
func (s FrameSpec) payloadOffset() int { return s.headerLen() }

func (s FrameSpec) validate() error {
	switch {
	case s.Size < MinSize || s.Size > MaxSize:
		return fmt.Errorf("frame size %d: want %d..%d bytes (on the wire, FCS included)", s.Size, MinSize, MaxSize)
	case s.Proto != packet.ProtoTCP && s.Proto != packet.ProtoUDP:
		return fmt.Errorf("frame protocol %d: want TCP or UDP", s.Proto)
	case !s.Src.IsValid() || !s.Dst.IsValid() || s.Src.Is4() != s.Dst.Is4():
		return fmt.Errorf("frame addresses %v -> %v: want two addresses of one family", s.Src, s.Dst)
	case s.Src.Is4In6() || s.Dst.Is4In6():
		return fmt.Errorf("frame addresses %v -> %v: IPv4-mapped IPv6 addresses are not allowed", s.Src, s.Dst)
	}
	return nil
}

// BuildFrame returns the frame s describes, with correct checksums.
func BuildFrame(s FrameSpec) ([]byte, error) {
	if err := s.validate(); err != nil {
		return nil, err
	}
	b := make([]byte, s.frameLen())
	eth := packet.Ethernet(b)
	eth.SetDst(s.DstMAC)
	eth.SetSrc(s.SrcMAC)
	ipLen := len(b) - ethLen
	l4 := b[ethLen+s.l3Len():]
	var pseudo uint16
	if s.Src.Is4() {
		eth.SetType(0x0800)
		packet.WriteIPv4Header(b[ethLen:], 0, uint16(ipLen), 0, packet.IPv4FlagDF, 64, s.Proto, s.Src.As4(), s.Dst.As4())
		src, dst := s.Src.As4(), s.Dst.As4()
		pseudo = packet.PseudoHeaderSum(src[:], dst[:], s.Proto, uint32(len(l4)))
	} else {
		eth.SetType(0x86DD)
		src, dst := s.Src.As16(), s.Dst.As16()
		packet.WriteIPv6Header(b[ethLen:], 0, 0, uint16(len(l4)), s.Proto, 64, &src, &dst)
		pseudo = packet.PseudoHeaderSum(src[:], dst[:], s.Proto, uint32(len(l4)))
	}
	if s.Proto == packet.ProtoTCP {
		binary.BigEndian.PutUint16(l4[0:2], s.SrcPort)
		binary.BigEndian.PutUint16(l4[2:4], s.DstPort)
		binary.BigEndian.PutUint32(l4[4:8], 1)  // sequence number
		binary.BigEndian.PutUint32(l4[8:12], 1) // acknowledgment number
		l4[12] = 5 << 4                         // data offset: 5 words
		l4[13] = packet.TCPFlagACK
		binary.BigEndian.PutUint16(l4[14:16], 65535) // window
		binary.BigEndian.PutUint16(l4[16:18], packet.Finish(packet.Checksum(l4, uint32(pseudo))))
	} else {
		packet.WriteUDPHeader(l4, s.SrcPort, s.DstPort, uint16(len(l4)), 0)
		ck := packet.Finish(packet.Checksum(l4, uint32(pseudo)))
		if ck == 0 {
			ck = 0xffff
		}
		packet.UDP(l4).SetChecksum(ck)
	}
	return b, nil
}
