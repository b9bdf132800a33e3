package packet_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"testing"

	"github.com/gopacket/gopacket/layers"

	"github.com/weirlb/weir/packet"
)

// The writers work in the headroom of a UMEM frame. The tests place the
// frame at buf[headroom:] and fill everything else with a position-dependent
// canary so that a write outside [newStart, start+len(frame)) is caught,
// including one that is merely shifted.
const headroom = 256

func canaryAt(i int) byte { return byte(0xa5 ^ i*31) }

func placeFrame(frame []byte, tail int) (buf []byte, start int) {
	buf = make([]byte, headroom+len(frame)+tail)
	for i := range buf {
		buf[i] = canaryAt(i)
	}
	copy(buf[headroom:], frame)
	return buf, headroom
}

// checkCanary fails unless buf is untouched outside [lo, hi).
func checkCanary(t *testing.T, buf []byte, lo, hi int) {
	t.Helper()
	for i := range buf {
		if (i < lo || i >= hi) && buf[i] != canaryAt(i) {
			t.Fatalf("byte %d outside the allowed range [%d, %d) was written (%#02x)", i, lo, hi, buf[i])
		}
	}
}

// innerFrame builds a client->VIP TCP frame with the given VLAN TPIDs and
// dataLen bytes of payload, plus pad bytes of Ethernet padding.
func innerFrame(family int, dataLen, pad int, tpids ...uint16) (frame []byte, l2Len, ipLen int) {
	seg := tcpSeg(51000, 443, packet.TCPFlagACK|packet.TCPFlagPSH, 12, bytes.Repeat([]byte("weir"), dataLen/4+1)[:dataLen])
	var ip []byte
	if family == 4 {
		ip = v4{TOS: 0x28, ID: 0x1234, Frag: packet.IPv4FlagDF, Proto: tcp, Src: client4, Dst: vip4}.build(seg)
		frame = ethHdr(packet.EtherTypeIPv4, tpids...)
	} else {
		ip = v6{TC: 0x28, Flow: 0x12345, NH: tcp, Src: client6, Dst: vip6}.build(seg)
		frame = ethHdr(packet.EtherTypeIPv6, tpids...)
	}
	l2Len = len(frame)
	frame = cat(frame, ip, bytes.Repeat([]byte{0xee}, pad))
	return frame, l2Len, len(ip)
}

var vlanStacks = map[string][]uint16{
	"untagged": nil,
	"vlan":     {packet.EtherTypeVLAN},
	"qinq":     {packet.EtherTypeQinQ, packet.EtherTypeVLAN},
}

// checkL2 decodes the Ethernet header and VLAN tags of out with gopacket
// and checks them against the original frame's (MACs swapped if swapped).
func checkL2(t *testing.T, out, orig []byte, l2Len int, swapped bool, wantType layers.EthernetType) {
	t.Helper()
	var eth layers.Ethernet
	if err := eth.DecodeFromBytes(out, nf); err != nil {
		t.Fatalf("gopacket ethernet: %v", err)
	}
	wantDst, wantSrc := orig[0:6], orig[6:12]
	if swapped {
		wantDst, wantSrc = wantSrc, wantDst
	}
	if !bytes.Equal(eth.DstMAC, wantDst) || !bytes.Equal(eth.SrcMAC, wantSrc) {
		t.Fatalf("MACs %v -> %v, want %v -> %v", eth.SrcMAC, eth.DstMAC, net.HardwareAddr(wantSrc), net.HardwareAddr(wantDst))
	}
	et, off := eth.EthernetType, 14
	for off < l2Len {
		if et != layers.EthernetType(binary.BigEndian.Uint16(orig[off-2:])) {
			t.Fatalf("TPID at %d = %v, want %#04x", off-2, et, binary.BigEndian.Uint16(orig[off-2:]))
		}
		var d layers.Dot1Q
		if err := d.DecodeFromBytes(out[off:], nf); err != nil {
			t.Fatalf("gopacket dot1q: %v", err)
		}
		if want := binary.BigEndian.Uint16(orig[off:]) & 0xfff; d.VLANIdentifier != want {
			t.Fatalf("VLAN ID %d, want %d", d.VLANIdentifier, want)
		}
		et, off = d.Type, off+4
	}
	if et != wantType {
		t.Fatalf("EtherType %v, want %v", et, wantType)
	}
}

func TestEncapIPv4(t *testing.T) {
	src, dst := a4("10.0.0.1"), a4("10.1.2.3")
	for stackName, tpids := range vlanStacks {
		for _, innerFam := range []int{4, 6} {
			for _, mode := range []string{"ipip", "gue"} {
				for _, pad := range []int{0, 6} {
					name := fmt.Sprintf("%s/inner-v%d/%s/pad-%d", stackName, innerFam, mode, pad)
					t.Run(name, func(t *testing.T) {
						frame, l2Len, ipLen := innerFrame(innerFam, 333, pad, tpids...)
						buf, start := placeFrame(frame, 64)
						extra, proto := 0, packet.InnerProto(uint8(innerFam))
						if mode == "gue" {
							extra, proto = packet.UDPLen, udp
						}
						ns := packet.EncapIPv4(buf, start, l2Len, ipLen, extra, proto, 0x28, true, 0xbeef, src, dst)
						if want := start - 20 - extra; ns != want {
							t.Fatalf("new start %d, want %d", ns, want)
						}
						if mode == "gue" {
							packet.WriteUDPHeader(buf[ns+l2Len+20:], 0xc001, 6080, uint16(8+ipLen), 0)
						}
						checkCanary(t, buf, ns, start+len(frame))
						out := buf[ns : start+l2Len+ipLen]
						checkL2(t, out, frame, l2Len, false, layers.EthernetTypeIPv4)

						var ip layers.IPv4
						if err := ip.DecodeFromBytes(out[l2Len:], nf); err != nil {
							t.Fatalf("gopacket ipv4: %v", err)
						}
						if err, res := ip.VerifyChecksum(); err != nil || !res.Valid {
							t.Fatalf("outer IPv4 checksum invalid: %+v", res)
						}
						if got := slowChecksum(out[l2Len:l2Len+20], 0); got != 0xffff {
							t.Fatalf("outer IPv4 header sums to %#04x", got)
						}
						if ip.Version != 4 || ip.IHL != 5 || ip.TOS != 0x28 || int(ip.Length) != 20+extra+ipLen || ip.Id != 0xbeef ||
							ip.Flags != layers.IPv4DontFragment || ip.FragOffset != 0 || ip.TTL != packet.DefaultTTL ||
							uint8(ip.Protocol) != proto || !ip.SrcIP.Equal(net.IP(src[:])) || !ip.DstIP.Equal(net.IP(dst[:])) {
							t.Fatalf("outer IPv4 %+v", ip)
						}
						inner := ip.Payload
						if mode == "gue" {
							var u layers.UDP
							if err := u.DecodeFromBytes(ip.Payload, nf); err != nil {
								t.Fatalf("gopacket udp: %v", err)
							}
							if u.SrcPort != 0xc001 || u.DstPort != 6080 || int(u.Length) != 8+ipLen || u.Checksum != 0 {
								t.Fatalf("UDP %+v", u)
							}
							inner = u.Payload
						}
						if !bytes.Equal(inner, frame[l2Len:l2Len+ipLen]) {
							t.Fatalf("inner packet changed")
						}

						// The result is a frame Parse accepts as the outer flow.
						var p packet.Parsed
						packet.Parse(out, &p)
						want := packet.Parsed{Key: key4(src, dst, 0, 0, proto), VLANTags: uint8(len(tpids)), L3Off: uint16(l2Len),
							L4Off: uint16(l2Len + 20), IPLen: uint16(20 + extra + ipLen), Family: 4, Proto: proto, TOS: 0x28, DF: true}
						if mode == "gue" {
							want.Key.SrcPort, want.Key.DstPort = 0xc001, 6080
						}
						if p != want {
							t.Fatalf("Parse(encapsulated)\n got %s\nwant %s", fmtParsed(&p), fmtParsed(&want))
						}
					})
				}
			}
		}
	}
}

func TestEncapIPv6(t *testing.T) {
	src, dst := a16("fd00::1"), a16("fd00:1::2:3")
	for stackName, tpids := range vlanStacks {
		for _, innerFam := range []int{4, 6} {
			for _, mode := range []string{"ipip", "gue"} {
				for _, pad := range []int{0, 6} {
					name := fmt.Sprintf("%s/inner-v%d/%s/pad-%d", stackName, innerFam, mode, pad)
					t.Run(name, func(t *testing.T) {
						frame, l2Len, ipLen := innerFrame(innerFam, 334, pad, tpids...)
						buf, start := placeFrame(frame, 64)
						extra, nh := 0, packet.InnerProto(uint8(innerFam))
						if mode == "gue" {
							extra, nh = packet.UDPLen, udp
						}
						ns := packet.EncapIPv6(buf, start, l2Len, ipLen, extra, nh, 0x28, 0xabcde, &src, &dst)
						if want := start - 40 - extra; ns != want {
							t.Fatalf("new start %d, want %d", ns, want)
						}
						if mode == "gue" {
							// IPv6 needs a UDP checksum: the forwarder sums the
							// pseudo header and the inner packet.
							l := uint32(8 + ipLen)
							u := buf[ns+l2Len+40:]
							packet.WriteUDPHeader(u, 0xc001, 6080, uint16(l), 0)
							sum := packet.Checksum(u[:l], uint32(packet.PseudoHeaderSum(src[:], dst[:], udp, l)))
							packet.UDP(u).SetChecksum(packet.Finish(sum))
						}
						checkCanary(t, buf, ns, start+len(frame))
						out := buf[ns : start+l2Len+ipLen]
						checkL2(t, out, frame, l2Len, false, layers.EthernetTypeIPv6)

						var ip layers.IPv6
						if err := ip.DecodeFromBytes(out[l2Len:], nf); err != nil {
							t.Fatalf("gopacket ipv6: %v", err)
						}
						if ip.Version != 6 || ip.TrafficClass != 0x28 || ip.FlowLabel != 0xabcde || int(ip.Length) != extra+ipLen ||
							uint8(ip.NextHeader) != nh || ip.HopLimit != packet.DefaultTTL ||
							!ip.SrcIP.Equal(net.IP(src[:])) || !ip.DstIP.Equal(net.IP(dst[:])) {
							t.Fatalf("outer IPv6 %+v", ip)
						}
						inner := ip.Payload
						if mode == "gue" {
							var u layers.UDP
							if err := u.DecodeFromBytes(ip.Payload, nf); err != nil {
								t.Fatalf("gopacket udp: %v", err)
							}
							if u.SrcPort != 0xc001 || u.DstPort != 6080 || int(u.Length) != 8+ipLen {
								t.Fatalf("UDP %+v", u)
							}
							_ = u.SetNetworkLayerForChecksum(&ip)
							if err, res := u.VerifyChecksum(); err != nil || !res.Valid || u.Checksum == 0 {
								t.Fatalf("UDP checksum invalid: %v %+v", err, res)
							}
							if got := slowChecksum(ip.Payload, uint32(slowChecksum(pseudo6(src, dst, udp, uint32(8+ipLen)), 0))); got != 0xffff {
								t.Fatalf("UDP sums to %#04x with its pseudo header", got)
							}
							inner = u.Payload
						}
						if !bytes.Equal(inner, frame[l2Len:l2Len+ipLen]) {
							t.Fatalf("inner packet changed")
						}

						var p packet.Parsed
						packet.Parse(out, &p)
						want := packet.Parsed{Key: key6(src, dst, 0, 0, nh), VLANTags: uint8(len(tpids)), L3Off: uint16(l2Len),
							L4Off: uint16(l2Len + 40), IPLen: uint16(40 + extra + ipLen), Family: 6, Proto: nh, TOS: 0x28, DF: true}
						if mode == "gue" {
							want.Key.SrcPort, want.Key.DstPort = 0xc001, 6080
						}
						if p != want {
							t.Fatalf("Parse(encapsulated)\n got %s\nwant %s", fmtParsed(&p), fmtParsed(&want))
						}
					})
				}
			}
		}
	}
}

func TestInnerProto(t *testing.T) {
	if got := packet.InnerProto(4); got != packet.ProtoIPIP {
		t.Errorf("InnerProto(4) = %d, want 4", got)
	}
	if got := packet.InnerProto(6); got != packet.ProtoIPv6 {
		t.Errorf("InnerProto(6) = %d, want 41", got)
	}
}

func TestWriteICMPTooBig(t *testing.T) {
	type sizeCase struct {
		name    string
		dataLen int
		pad     int
		mtu     uint32
	}
	sizes := []sizeCase{
		{"full-size", 1448, 0, 1400},  // quote cut to the minimum-MTU limit
		{"odd-length", 49, 0, 1280},   // whole packet quoted, odd checksum length
		{"small-padded", 0, 14, 1300}, // padding must not be quoted
		{"mtu-above-16-bits", 1448, 0, 70000},
		{"just-at-limit-v4", 576 - 28 - 52, 0, 1000},
		{"just-at-limit-v6", 1280 - 48 - 72, 0, 1280},
	}
	for stackName, tpids := range vlanStacks {
		for _, fam := range []int{4, 6} {
			for _, sc := range sizes {
				t.Run(fmt.Sprintf("%s/v%d/%s", stackName, fam, sc.name), func(t *testing.T) {
					frame, l2Len, ipLen := innerFrame(fam, sc.dataLen, sc.pad, tpids...)
					buf, start := placeFrame(frame, 64)
					var p packet.Parsed
					packet.Parse(frame, &p)
					if p.Reason != packet.OK {
						t.Fatalf("input does not parse: %v", p.Reason)
					}
					orig := p.Key
					ns, n := packet.WriteICMPTooBig(buf, start, &p, sc.mtu)

					prefix, limit := 28, 576
					if fam == 6 {
						prefix, limit = 48, 1280
					}
					quote := min(ipLen, limit-prefix)
					if ns != start-prefix || n != l2Len+prefix+quote {
						t.Fatalf("WriteICMPTooBig = (%d, %d), want (%d, %d)", ns, n, start-prefix, l2Len+prefix+quote)
					}
					checkCanary(t, buf, ns, start+len(frame))
					out := buf[ns : ns+n]
					if len(out)-l2Len > limit {
						t.Fatalf("reply IP packet is %d bytes, above the %d-byte minimum MTU", len(out)-l2Len, limit)
					}
					if fam == 4 {
						checkL2(t, out, frame, l2Len, true, layers.EthernetTypeIPv4)
						checkTooBig4(t, out[l2Len:], frame[l2Len:l2Len+quote], sc.mtu)
					} else {
						checkL2(t, out, frame, l2Len, true, layers.EthernetTypeIPv6)
						checkTooBig6(t, out[l2Len:], frame[l2Len:l2Len+quote], sc.mtu)
					}

					// The reply is an ICMP error that Parse reads back as the
					// original flow seen from the other side.
					var back packet.Parsed
					packet.Parse(out, &back)
					want := orig
					want.Src, want.Dst, want.SrcPort, want.DstPort = orig.Dst, orig.Src, orig.DstPort, orig.SrcPort
					if back.Reason != packet.OK || !back.ICMPError || back.Key != want {
						t.Fatalf("Parse(reply) = %s, want an ICMP error keyed %+v", fmtParsed(&back), want)
					}
				})
			}
		}
	}
}

func checkTooBig4(t *testing.T, ipb, quote []byte, mtu uint32) {
	t.Helper()
	var ip layers.IPv4
	if err := ip.DecodeFromBytes(ipb, nf); err != nil {
		t.Fatalf("gopacket ipv4: %v", err)
	}
	if err, res := ip.VerifyChecksum(); err != nil || !res.Valid || slowChecksum(ipb[:20], 0) != 0xffff {
		t.Fatalf("IPv4 checksum invalid: %+v", res)
	}
	if ip.Version != 4 || ip.IHL != 5 || int(ip.Length) != 28+len(quote) || ip.Protocol != layers.IPProtocolICMPv4 ||
		ip.TTL != packet.DefaultTTL || ip.Flags != layers.IPv4DontFragment || ip.FragOffset != 0 || ip.TOS != 0xc0 ||
		!ip.SrcIP.Equal(net.IP(vip4[:])) || !ip.DstIP.Equal(net.IP(client4[:])) {
		t.Fatalf("IPv4 header %+v", ip)
	}
	var c layers.ICMPv4
	if err := c.DecodeFromBytes(ip.Payload, nf); err != nil {
		t.Fatalf("gopacket icmpv4: %v", err)
	}
	if err, res := c.VerifyChecksum(); err != nil || !res.Valid {
		t.Fatalf("ICMPv4 checksum invalid: %v %+v", err, res)
	}
	if got := slowChecksum(ip.Payload, 0); got != 0xffff {
		t.Fatalf("ICMPv4 message sums to %#04x", got)
	}
	if c.TypeCode.Type() != layers.ICMPv4TypeDestinationUnreachable || c.TypeCode.Code() != layers.ICMPv4CodeFragmentationNeeded ||
		c.Id != 0 || uint32(c.Seq) != min(mtu, 0xffff) {
		t.Fatalf("ICMPv4 %v id %d next-hop MTU %d, want frag-needed with MTU %d", c.TypeCode, c.Id, c.Seq, min(mtu, 0xffff))
	}
	if !bytes.Equal(c.Payload, quote) {
		t.Fatalf("quote differs from the first %d bytes of the packet", len(quote))
	}
}

func checkTooBig6(t *testing.T, ipb, quote []byte, mtu uint32) {
	t.Helper()
	var ip layers.IPv6
	if err := ip.DecodeFromBytes(ipb, nf); err != nil {
		t.Fatalf("gopacket ipv6: %v", err)
	}
	if ip.Version != 6 || int(ip.Length) != 8+len(quote) || ip.NextHeader != layers.IPProtocolICMPv6 ||
		ip.HopLimit != packet.DefaultTTL || ip.TrafficClass != 0 || ip.FlowLabel != 0 ||
		!ip.SrcIP.Equal(net.IP(vip6[:])) || !ip.DstIP.Equal(net.IP(client6[:])) {
		t.Fatalf("IPv6 header %+v", ip)
	}
	var c layers.ICMPv6
	if err := c.DecodeFromBytes(ip.Payload, nf); err != nil {
		t.Fatalf("gopacket icmpv6: %v", err)
	}
	_ = c.SetNetworkLayerForChecksum(&ip)
	if err, res := c.VerifyChecksum(); err != nil || !res.Valid {
		t.Fatalf("ICMPv6 checksum invalid: %v %+v", err, res)
	}
	if got := slowChecksum(ip.Payload, uint32(slowChecksum(pseudo6(vip6, client6, icmp6, uint32(len(ip.Payload))), 0))); got != 0xffff {
		t.Fatalf("ICMPv6 message sums to %#04x with its pseudo header", got)
	}
	if c.TypeCode.Type() != layers.ICMPv6TypePacketTooBig || c.TypeCode.Code() != 0 {
		t.Fatalf("ICMPv6 %v, want packet too big", c.TypeCode)
	}
	if got := binary.BigEndian.Uint32(c.Payload); got != mtu {
		t.Fatalf("MTU %d, want %d", got, mtu)
	}
	if !bytes.Equal(c.Payload[4:], quote) {
		t.Fatalf("quote differs from the first %d bytes of the packet", len(quote))
	}
}

// TestICMPAccessors reads hand-built ICMP errors through the ICMP accessor
// type.
func TestICMPAccessors(t *testing.T) {
	f := frameICMPv6TooBig()
	c := packet.ICMP(f[l4v6:])
	if c.Type() != packet.ICMPv6TooBig || c.Code() != 0 || c.MTU() != 1280 || c.Checksum() != binary.BigEndian.Uint16(f[l4v6+2:]) {
		t.Fatalf("ICMP accessors: type %d code %d mtu %d", c.Type(), c.Code(), c.MTU())
	}
	c.SetChecksum(0x1234)
	if binary.BigEndian.Uint16(f[l4v6+2:]) != 0x1234 {
		t.Fatalf("SetChecksum did not write the field")
	}
	f4 := frameICMPv4FragNeeded()
	if c4 := packet.ICMP(f4[l4v4:]); c4.MTU()&0xffff != 1400 || c4.Type() != packet.ICMPv4DestUnr || c4.Code() != packet.ICMPv4FragNeed {
		t.Fatalf("ICMPv4 accessors: type %d code %d mtu %d", c4.Type(), c4.Code(), c4.MTU())
	}
	for typ := range 256 {
		want4 := typ == 3 || typ == 11
		want6 := typ == 1 || typ == 2 || typ == 3
		if packet.IsICMPv4Error(uint8(typ)) != want4 || packet.IsICMPv6Error(uint8(typ)) != want6 {
			t.Errorf("type %d: IsICMPv4Error %v IsICMPv6Error %v", typ, packet.IsICMPv4Error(uint8(typ)), packet.IsICMPv6Error(uint8(typ)))
		}
	}
}
