package packet_test

import (
	"bytes"
	"encoding/binary"
	"hash/fnv"
	"math/rand/v2"
	"net"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/weirlb/weir/packet"
)

// newRand returns a generator seeded from the test's name: every test sees
// its own fixed sequence, so a failure reproduces.
func newRand(t testing.TB) *rand.Rand {
	h := fnv.New64a()
	h.Write([]byte(t.Name()))
	return rand.New(rand.NewPCG(0x5eed, h.Sum64()))
}

func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// TestSlowChecksumReference pins the reference implementation itself to the
// worked example of RFC 1071 section 3 so the comparisons below mean something.
func TestSlowChecksumReference(t *testing.T) {
	b := []byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}
	if got := slowChecksum(b, 0); got != 0xddf2 {
		t.Fatalf("slowChecksum(RFC 1071 example) = %#04x, want 0xddf2", got)
	}
	if got := packet.Checksum(b, 0); got != 0xddf2 {
		t.Fatalf("Checksum(RFC 1071 example) = %#04x, want 0xddf2", got)
	}
}

func TestChecksumMatchesRFC1071(t *testing.T) {
	r := newRand(t)
	for n := 0; n <= 2000; n++ {
		for _, fill := range []string{"random", "ones", "zeros"} {
			var b []byte
			switch fill {
			case "random":
				b = randBytes(r, n)
			case "ones":
				b = bytes.Repeat([]byte{0xff}, n)
			case "zeros":
				b = make([]byte, n)
			}
			for _, initial := range []uint32{0, 0xffff, 0xffffffff, r.Uint32(), r.Uint32() & 0xffff} {
				got, want := packet.Checksum(b, initial), slowChecksum(b, initial)
				if got != want {
					t.Fatalf("Checksum(%s len %d, initial %#x) = %#04x, want %#04x", fill, n, initial, got, want)
				}
			}
		}
	}
}

// TestChecksumLargeBuffer sums more than 64 KiB of 0xff to make sure no carry
// is lost however long the accumulator runs.
func TestChecksumLargeBuffer(t *testing.T) {
	for _, n := range []int{65535, 65536, 1 << 20} {
		b := bytes.Repeat([]byte{0xff}, n)
		if got, want := packet.Checksum(b, 0xffffffff), slowChecksum(b, 0xffffffff); got != want {
			t.Errorf("Checksum(%d x 0xff) = %#04x, want %#04x", n, got, want)
		}
	}
}

// TestChecksumChained checks that summing a buffer in pieces (even-length
// pieces, the last of any length) gives the sum of the whole.
func TestChecksumChained(t *testing.T) {
	r := newRand(t)
	for range 5000 {
		n := r.IntN(2001)
		b := randBytes(r, n)
		initial := r.Uint32()
		want := slowChecksum(b, initial)
		sum := uint32(initial)
		rest := b
		for len(rest) > 0 {
			cut := r.IntN(len(rest) + 1)
			if cut < len(rest) {
				cut &^= 1 // every piece but the last has an even length
			}
			sum = uint32(packet.Checksum(rest[:cut], sum))
			rest = rest[cut:]
		}
		if n == 0 {
			sum = uint32(packet.Checksum(nil, sum))
		}
		if uint16(sum) != want {
			t.Fatalf("chained Checksum over %d bytes = %#04x, want %#04x", n, sum, want)
		}
	}
}

func TestFinish(t *testing.T) {
	for _, v := range []uint16{0, 1, 0x1234, 0xfffe, 0xffff} {
		if got := packet.Finish(v); got != ^v {
			t.Errorf("Finish(%#04x) = %#04x, want %#04x", v, got, ^v)
		}
	}
}

// randIPv4Header returns a random header with version 4, IHL 5..15 and a
// valid checksum.
func randIPv4Header(r *rand.Rand) []byte {
	hl := 4 * (5 + r.IntN(11))
	h := randBytes(r, hl)
	h[0] = 0x40 | byte(hl/4)
	h[10], h[11] = 0, 0
	binary.BigEndian.PutUint16(h[10:], ^slowChecksum(h, 0))
	return h
}

func TestUpdateChecksum16(t *testing.T) {
	r := newRand(t)
	special := []uint16{0, 1, 0x7fff, 0x8000, 0xfffe, 0xffff}
	for i := range 20000 {
		h := randIPv4Header(r)
		off := 2 * r.IntN(len(h)/2)
		if off == 10 {
			continue // the checksum field itself
		}
		old := binary.BigEndian.Uint16(h[off:])
		nw := uint16(r.Uint32())
		if i%4 == 0 {
			nw = special[r.IntN(len(special))]
		}
		if i%8 == 1 {
			binary.BigEndian.PutUint16(h[off:], special[r.IntN(len(special))])
			h[10], h[11] = 0, 0
			binary.BigEndian.PutUint16(h[10:], ^slowChecksum(h, 0))
			old = binary.BigEndian.Uint16(h[off:])
		}
		check := binary.BigEndian.Uint16(h[10:])
		got := packet.UpdateChecksum16(check, old, nw)

		binary.BigEndian.PutUint16(h[off:], nw)
		h[10], h[11] = 0, 0
		want := ^slowChecksum(h, 0)
		if got != want {
			t.Fatalf("UpdateChecksum16(%#04x, %#04x, %#04x) at offset %d = %#04x, recomputed %#04x", check, old, nw, off, got, want)
		}
	}
}

// TestUpdateChecksum32 rewrites an IPv4 address the way a NAT would and
// updates both the IPv4 header checksum and the TCP checksum (whose pseudo
// header holds the address) incrementally.
func TestUpdateChecksum32(t *testing.T) {
	r := newRand(t)
	for range 20000 {
		h := randIPv4Header(r)
		hl := len(h)
		seg := randBytes(r, 20+r.IntN(100))
		var src, dst [4]byte
		copy(src[:], h[12:16])
		copy(dst[:], h[16:20])
		seg[16], seg[17] = 0, 0
		tcpSum := ^slowChecksum(seg, uint32(slowChecksum(pseudo4(src, dst, packet.ProtoTCP, uint16(len(seg))), 0)))
		binary.BigEndian.PutUint16(seg[16:], tcpSum)

		addrOff := 12 + 4*r.IntN(2)
		old := binary.BigEndian.Uint32(h[addrOff:])
		nw := r.Uint32()
		if r.IntN(4) == 0 {
			nw = []uint32{0, 0xffffffff, 0x0000ffff, 0xffff0000}[r.IntN(4)]
		}
		gotIP := packet.UpdateChecksum32(binary.BigEndian.Uint16(h[10:]), old, nw)
		gotTCP := packet.UpdateChecksum32(tcpSum, old, nw)

		binary.BigEndian.PutUint32(h[addrOff:], nw)
		h[10], h[11] = 0, 0
		if want := ^slowChecksum(h[:hl], 0); gotIP != want {
			t.Fatalf("UpdateChecksum32 IPv4 header: got %#04x, recomputed %#04x", gotIP, want)
		}
		copy(src[:], h[12:16])
		copy(dst[:], h[16:20])
		seg[16], seg[17] = 0, 0
		if want := ^slowChecksum(seg, uint32(slowChecksum(pseudo4(src, dst, packet.ProtoTCP, uint16(len(seg))), 0))); gotTCP != want {
			t.Fatalf("UpdateChecksum32 TCP: got %#04x, recomputed %#04x", gotTCP, want)
		}
	}
}

func TestPseudoHeaderSum(t *testing.T) {
	r := newRand(t)
	for range 5000 {
		var s4, d4 [4]byte
		var s6, d6 [16]byte
		copy(s4[:], randBytes(r, 4))
		copy(d4[:], randBytes(r, 4))
		copy(s6[:], randBytes(r, 16))
		copy(d6[:], randBytes(r, 16))
		proto := uint8(r.Uint32())

		l4 := uint16(r.Uint32())
		if got, want := packet.PseudoHeaderSum(s4[:], d4[:], proto, uint32(l4)), slowChecksum(pseudo4(s4, d4, proto, l4), 0); got != want {
			t.Fatalf("PseudoHeaderSum v4(%v, %v, %d, %d) = %#04x, want %#04x", s4, d4, proto, l4, got, want)
		}
		l6 := r.Uint32()
		if r.IntN(2) == 0 {
			l6 &= 0xffff
		}
		if got, want := packet.PseudoHeaderSum(s6[:], d6[:], proto, l6), slowChecksum(pseudo6(s6, d6, proto, l6), 0); got != want {
			t.Fatalf("PseudoHeaderSum v6(%x, %x, %d, %d) = %#04x, want %#04x", s6, d6, proto, l6, got, want)
		}
	}
}

// TestPseudoHeaderSumUDP checks a complete UDP checksum built from
// PseudoHeaderSum and Checksum against gopacket's serializer.
func TestPseudoHeaderSumUDP(t *testing.T) {
	r := newRand(t)
	for range 200 {
		payload := randBytes(r, r.IntN(300))
		for _, fam := range []int{4, 6} {
			var ip gopacket.NetworkLayer
			var src, dst []byte
			if fam == 4 {
				src, dst = randBytes(r, 4), randBytes(r, 4)
				ip = &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: net.IP(src), DstIP: net.IP(dst)}
			} else {
				src, dst = randBytes(r, 16), randBytes(r, 16)
				ip = &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolUDP, SrcIP: net.IP(src), DstIP: net.IP(dst)}
			}
			udp := &layers.UDP{SrcPort: layers.UDPPort(r.Uint32()), DstPort: layers.UDPPort(r.Uint32())}
			if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
				t.Fatal(err)
			}
			buf := gopacket.NewSerializeBuffer()
			opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
			if err := gopacket.SerializeLayers(buf, opts, udp, gopacket.Payload(payload)); err != nil {
				t.Fatal(err)
			}
			dgram := append([]byte(nil), buf.Bytes()...)
			want := binary.BigEndian.Uint16(dgram[6:])
			dgram[6], dgram[7] = 0, 0
			got := packet.Finish(packet.Checksum(dgram, uint32(packet.PseudoHeaderSum(src, dst, packet.ProtoUDP, uint32(len(dgram))))))
			if got == 0 {
				got = 0xffff // RFC 768: a zero checksum is sent as all ones
			}
			if got != want {
				t.Fatalf("IPv%d UDP checksum = %#04x, gopacket %#04x", fam, got, want)
			}
		}
	}
}

func TestWriteIPv4Header(t *testing.T) {
	r := newRand(t)
	for range 2000 {
		tos, id, ttl, proto := uint8(r.Uint32()), uint16(r.Uint32()), uint8(r.Uint32()), uint8(r.Uint32())
		totalLen := uint16(20 + r.IntN(65516))
		flags := []uint16{0, packet.IPv4FlagDF, packet.IPv4FlagMF | 0x0123}[r.IntN(3)]
		var src, dst [4]byte
		copy(src[:], randBytes(r, 4))
		copy(dst[:], randBytes(r, 4))

		b := bytes.Repeat([]byte{0xa5}, 40)
		packet.WriteIPv4Header(b, tos, totalLen, id, flags, ttl, proto, src, dst)
		if !bytes.Equal(b[20:], bytes.Repeat([]byte{0xa5}, 20)) {
			t.Fatalf("WriteIPv4Header wrote past byte 20: % x", b[20:])
		}
		h := b[:20]
		if got := slowChecksum(h, 0); got != 0xffff {
			t.Fatalf("header sum = %#04x, want 0xffff; header % x", got, h)
		}
		if !packet.IPv4(h).ChecksumValid() || packet.IPv4(h).ComputeChecksum() != binary.BigEndian.Uint16(h[10:]) {
			t.Fatalf("IPv4 accessors disagree with the written checksum; header % x", h)
		}

		var ip layers.IPv4
		if err := ip.DecodeFromBytes(h, gopacket.NilDecodeFeedback); err != nil {
			t.Fatalf("gopacket cannot decode % x: %v", h, err)
		}
		if err, res := ip.VerifyChecksum(); err != nil || !res.Valid {
			t.Fatalf("gopacket: checksum invalid (%v, %+v)", err, res)
		}
		switch {
		case ip.Version != 4, ip.IHL != 5, ip.TOS != tos, ip.Length != totalLen, ip.Id != id,
			uint16(ip.Flags)<<13|ip.FragOffset != flags, ip.TTL != ttl, uint8(ip.Protocol) != proto,
			!ip.SrcIP.Equal(net.IP(src[:])), !ip.DstIP.Equal(net.IP(dst[:])):
			t.Fatalf("gopacket decoded %+v, want tos %d len %d id %d flags %#04x ttl %d proto %d %v -> %v",
				ip, tos, totalLen, id, flags, ttl, proto, src, dst)
		}
	}
}

func TestWriteIPv6Header(t *testing.T) {
	r := newRand(t)
	for range 1000 {
		tc, flow, plen, nh, hop := uint8(r.Uint32()), r.Uint32(), uint16(r.Uint32()), uint8(r.Uint32()), uint8(r.Uint32())
		var src, dst [16]byte
		copy(src[:], randBytes(r, 16))
		copy(dst[:], randBytes(r, 16))
		b := bytes.Repeat([]byte{0xa5}, 60)
		packet.WriteIPv6Header(b, tc, flow, plen, nh, hop, &src, &dst)
		if !bytes.Equal(b[40:], bytes.Repeat([]byte{0xa5}, 20)) {
			t.Fatalf("WriteIPv6Header wrote past byte 40")
		}
		h := packet.IPv6(b[:40])
		var want v6 = v6{TC: tc, Flow: flow, NH: nh, Hop: hop, Src: src, Dst: dst}
		ref := want.build(make([]byte, 0))
		binary.BigEndian.PutUint16(ref[4:], plen)
		if hop == 0 {
			ref[7] = 0
		}
		if !bytes.Equal(h, ref) {
			t.Fatalf("WriteIPv6Header = % x, want % x", []byte(h), ref)
		}
		if h.Version() != 6 || h.TrafficClass() != tc || h.FlowLabel() != flow&0xfffff || h.PayloadLen() != plen ||
			h.NextHeader() != nh || h.HopLimit() != hop || h.Src() != src || h.Dst() != dst {
			t.Fatalf("IPv6 accessors disagree with the written header % x", []byte(h))
		}
	}
}

// EncapsulatedSum, which reads only headers, against the bytes summed one by
// one: for inner packets whose checksums verify it gives the same sum; after
// one payload byte changes it no longer does (a receiver checking the outer
// checksum drops the packet, as the inner checksum would); and it declines
// the packets where the shortcut does not hold.
func TestEncapsulatedSum(t *testing.T) {
	r := newRand(t)
	same := func(a, b uint16) bool { // equal as ones'-complement values (0 and 0xffff are both zero)
		return a == b || a|b == 0xffff && (a == 0 || b == 0)
	}
	// build returns an inner IP packet of family fam carrying a valid
	// transport message of protocol proto with n bytes of data.
	build := func(fam int, proto uint8, n int, opts []byte) []byte {
		data := randBytes(r, n)
		var seg []byte
		switch proto {
		case packet.ProtoTCP:
			seg = tcpSeg(uint16(r.Uint32()), 443, 0x10, 4*r.IntN(4), data)
		case packet.ProtoUDP:
			seg = udpDgram(uint16(r.Uint32()), 53, data)
		default:
			seg = icmpMsg(8, 0, r.Uint32(), data) // echo request; ICMPv4 checksum set
		}
		ck := 16 // TCP
		switch proto {
		case packet.ProtoUDP:
			ck = 6
		case packet.ProtoICMP, packet.ProtoICMPv6:
			ck = 2
		}
		seg[ck], seg[ck+1] = 0, 0
		if fam == 4 {
			init := uint32(0)
			if proto != packet.ProtoICMP {
				init = uint32(slowChecksum(pseudo4(client4, vip4, proto, uint16(len(seg))), 0))
			}
			binary.BigEndian.PutUint16(seg[ck:], ^slowChecksum(seg, init))
			return v4{Proto: proto, Src: client4, Dst: vip4, Opts: opts}.build(seg)
		}
		init := uint32(slowChecksum(pseudo6(client6, vip6, proto, uint32(len(seg))), 0))
		binary.BigEndian.PutUint16(seg[ck:], ^slowChecksum(seg, init))
		return v6{NH: proto, Src: client6, Dst: vip6}.build(seg)
	}
	parse := func(ip []byte) *packet.Parsed {
		et := uint16(packet.EtherTypeIPv4)
		if ip[0]>>4 == 6 {
			et = packet.EtherTypeIPv6
		}
		var p packet.Parsed
		packet.Parse(cat(ethHdr(et), ip), &p)
		if p.Reason != packet.OK {
			t.Fatalf("test packet does not parse: %v", p.Reason)
		}
		return &p
	}
	for i := range 4000 {
		fam := 4 + 2*r.IntN(2)
		protos := []uint8{packet.ProtoTCP, packet.ProtoUDP, packet.ProtoICMP}
		if fam == 6 {
			protos[2] = packet.ProtoICMPv6
		}
		proto := protos[r.IntN(3)]
		var opts []byte
		if fam == 4 && r.IntN(4) == 0 {
			opts = make([]byte, 4*(1+r.IntN(10))) // end-of-options padding
		}
		n := r.IntN(1500)
		if i < 8 {
			n = i // empty and tiny payloads
		}
		ip := build(fam, proto, n, opts)
		p := parse(ip)
		got, ok := packet.EncapsulatedSum(ip, p)
		if want := slowChecksum(ip, 0); !ok || !same(got, want) {
			t.Fatalf("ipv%d proto %d, %d data bytes: EncapsulatedSum %#04x %v, summed %#04x", fam, proto, n, got, ok, want)
		}
		if n > 0 {
			ip[len(ip)-1-r.IntN(n)] ^= byte(1 + r.IntN(255))
			if got, ok := packet.EncapsulatedSum(ip, p); !ok || same(got, slowChecksum(ip, 0)) {
				t.Fatalf("ipv%d proto %d: a changed payload byte went unnoticed", fam, proto)
			}
		}
	}

	// Where the shortcut does not hold, it declines.
	udp0 := v4{Proto: packet.ProtoUDP, Src: client4, Dst: vip4}.build(udpDgram(1000, 53, []byte("no checksum")))
	first := v4{Proto: packet.ProtoTCP, Src: client4, Dst: vip4, Frag: packet.IPv4FlagMF}.build(tcpSeg(1000, 80, 0x10, 0, make([]byte, 64)))
	hbh := v6{NH: 0, Src: client6, Dst: vip6}.build(cat(ext6(packet.ProtoTCP, 1), tcpSeg(1000, 80, 0x10, 0, nil)))
	for name, ip := range map[string][]byte{"udp without checksum": udp0, "first fragment": first, "ipv6 hop-by-hop": hbh} {
		if _, ok := packet.EncapsulatedSum(ip, parse(ip)); ok {
			t.Errorf("%s: EncapsulatedSum did not decline", name)
		}
	}
}
