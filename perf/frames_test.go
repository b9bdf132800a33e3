package perf

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/weirlb/weir/packet"
)

// l4ChecksumOK verifies the TCP or UDP checksum of a frame built by
// BuildFrame.
func l4ChecksumOK(t *testing.T, s FrameSpec, f []byte) bool {
	t.Helper()
	l4 := f[s.portOffset():]
	var src, dst []byte
	if s.Src.Is4() {
		a, b := s.Src.As4(), s.Dst.As4()
		src, dst = a[:], b[:]
	} else {
		a, b := s.Src.As16(), s.Dst.As16()
		src, dst = a[:], b[:]
	}
	sum := packet.PseudoHeaderSum(src, dst, s.Proto, uint32(len(l4)))
	return packet.Checksum(l4, uint32(sum)) == 0xffff
}

func TestBuildFrame(t *testing.T) {
	mac1, mac2 := packet.MAC{2, 0, 0, 0, 0, 1}, packet.MAC{2, 0, 0, 0, 0, 2}
	for _, c := range []struct {
		size, family int
		proto        uint8
		wantLen      int
	}{
		{64, 4, packet.ProtoTCP, 60},
		{64, 4, packet.ProtoUDP, 60},
		{64, 6, packet.ProtoTCP, 74}, // the headers do not fit 60 bytes
		{64, 6, packet.ProtoUDP, 62},
		{1500, 4, packet.ProtoTCP, 1496},
		{1518, 6, packet.ProtoUDP, 1514},
	} {
		s := FrameSpec{Size: c.size, Proto: c.proto, SrcMAC: mac1, DstMAC: mac2,
			Src: benchClient4, Dst: benchVIP4, SrcPort: 1234, DstPort: 80}
		if c.family == 6 {
			s.Src, s.Dst = benchClient6, benchVIP6
		}
		f, err := BuildFrame(s)
		if err != nil {
			t.Fatal(err)
		}
		if len(f) != c.wantLen || s.WireSize() != c.wantLen+4 {
			t.Errorf("%+v: %d bytes (wire %d), want %d", c, len(f), s.WireSize(), c.wantLen)
		}
		var p packet.Parsed
		packet.Parse(f, &p)
		if p.Reason != packet.OK || int(p.Family) != c.family || p.Proto != c.proto ||
			p.Key.SrcPort != 1234 || p.Key.DstPort != 80 || int(p.IPLen) != len(f)-ethLen {
			t.Errorf("%+v: parsed %+v", c, p)
		}
		eth := packet.Ethernet(f)
		if eth.Src() != mac1 || eth.Dst() != mac2 {
			t.Errorf("%+v: MACs %v -> %v", c, eth.Src(), eth.Dst())
		}
		if c.family == 4 && !packet.IPv4(f[ethLen:]).ChecksumValid() {
			t.Errorf("%+v: bad IPv4 header checksum", c)
		}
		if !l4ChecksumOK(t, s, f) {
			t.Errorf("%+v: bad L4 checksum", c)
		}
		// The offsets the benchmarks write at.
		if c.family == 4 && netip.AddrFrom4([4]byte(f[s.srcOffset():s.srcOffset()+4])) != s.Src ||
			c.family == 6 && netip.AddrFrom16([16]byte(f[s.srcOffset():s.srcOffset()+16])) != s.Src {
			t.Errorf("%+v: source address not at offset %d", c, s.srcOffset())
		}
		if binary.BigEndian.Uint16(f[s.portOffset():]) != 1234 || s.payloadOffset() != s.headerLen() {
			t.Errorf("%+v: source port not at offset %d", c, s.portOffset())
		}
	}
}

func TestBuildFrameRejects(t *testing.T) {
	ok := FrameSpec{Size: 64, Proto: packet.ProtoUDP, Src: benchClient4, Dst: benchVIP4}
	for name, mut := range map[string]func(*FrameSpec){
		"small":    func(s *FrameSpec) { s.Size = 63 },
		"large":    func(s *FrameSpec) { s.Size = 1519 },
		"proto":    func(s *FrameSpec) { s.Proto = 1 },
		"families": func(s *FrameSpec) { s.Dst = benchVIP6 },
		"no addr":  func(s *FrameSpec) { s.Src = netip.Addr{} },
		"mapped":   func(s *FrameSpec) { s.Src, s.Dst = netip.MustParseAddr("::ffff:1.2.3.4"), benchVIP6 },
	} {
		s := ok
		mut(&s)
		if _, err := BuildFrame(s); err == nil {
			t.Errorf("%s: BuildFrame(%+v) succeeded", name, s)
		}
	}
	if _, err := BuildFrame(ok); err != nil {
		t.Fatal(err)
	}
}
