package packet_test

import (
	"strconv"
	"testing"

	"github.com/weirlb/weir/packet"
)

// TestNoAllocs proves the per-packet functions allocate nothing: Parse on
// every golden frame (each kind of good and bad frame), the checksums, and
// every writer.
func TestNoAllocs(t *testing.T) {
	var p packet.Parsed
	for _, tc := range goldenCases() {
		frame := tc.frame
		if n := testing.AllocsPerRun(100, func() { packet.Parse(frame, &p) }); n != 0 {
			t.Errorf("Parse(%s) allocates %v times", tc.name, n)
		}
	}

	data := randBytes(newRand(t), 1501)
	var sink uint16
	var src4, dst4 [4]byte
	var src6, dst6 [16]byte
	for name, f := range map[string]func(){
		"Checksum-64":       func() { sink += packet.Checksum(data[:64], 0) },
		"Checksum-1501":     func() { sink += packet.Checksum(data, 0) },
		"PseudoHeaderSum-6": func() { sink += packet.PseudoHeaderSum(src6[:], dst6[:], udp, 1500) },
		"UpdateChecksum16":  func() { sink += packet.UpdateChecksum16(sink, 1, 2) },
		"UpdateChecksum32":  func() { sink += packet.UpdateChecksum32(sink, 1, 2) },
		"WriteIPv4Header":   func() { packet.WriteIPv4Header(data, 0, 40, 1, 0, 64, tcp, src4, dst4) },
		"WriteIPv6Header":   func() { packet.WriteIPv6Header(data, 0, 0, 20, tcp, 64, &src6, &dst6) },
		"WriteUDPHeader":    func() { packet.WriteUDPHeader(data, 1, 2, 8, 0) },
	} {
		if n := testing.AllocsPerRun(100, f); n != 0 {
			t.Errorf("%s allocates %v times", name, n)
		}
	}

	// The writers change the frame in place, so each run starts again
	// from a fresh copy (copy does not allocate).
	for _, tpids := range vlanStacks {
		for _, fam := range []int{4, 6} {
			frame, l2Len, ipLen := innerFrame(fam, 1400, 0, tpids...)
			buf, start := placeFrame(frame, 0)
			var pp packet.Parsed
			packet.Parse(frame, &pp)
			for name, f := range map[string]func(){
				"EncapIPv4-ipip": func() {
					packet.EncapIPv4(buf, start, l2Len, ipLen, 0, packet.InnerProto(uint8(fam)), 0, true, 1, src4, dst4)
				},
				"EncapIPv4-gue": func() {
					ns := packet.EncapIPv4(buf, start, l2Len, ipLen, packet.UDPLen, udp, 0, true, 1, src4, dst4)
					packet.WriteUDPHeader(buf[ns+l2Len+packet.IPv4MinLen:], 1, 6080, uint16(8+ipLen), 0)
				},
				"EncapIPv6-gue": func() {
					ns := packet.EncapIPv6(buf, start, l2Len, ipLen, packet.UDPLen, udp, 0, 1, &src6, &dst6)
					u := buf[ns+l2Len+packet.IPv6Len:]
					packet.WriteUDPHeader(u, 1, 6080, uint16(8+ipLen), 0)
					packet.UDP(u).SetChecksum(packet.Finish(packet.Checksum(u[:8+ipLen],
						uint32(packet.PseudoHeaderSum(src6[:], dst6[:], udp, uint32(8+ipLen))))))
				},
				"WriteICMPTooBig": func() {
					copy(buf[start:], frame)
					packet.WriteICMPTooBig(buf, start, &pp, 1280)
				},
			} {
				if n := testing.AllocsPerRun(100, f); n != 0 {
					t.Errorf("%s (IPv%d, %d tags) allocates %v times", name, fam, len(tpids), n)
				}
			}
		}
	}
	_ = sink
}

// reportPerPacket adds ns/pkt and Mpps for a benchmark that handles one
// packet per iteration.
func reportPerPacket(b *testing.B, n int) {
	ns := float64(b.Elapsed().Nanoseconds()) / float64(n)
	b.ReportMetric(ns, "ns/pkt")
	b.ReportMetric(1e3/ns, "Mpps")
}

func BenchmarkParse(b *testing.B) {
	for _, bc := range []struct {
		name  string
		frame []byte
	}{
		{"ipv4-tcp", frameV4TCP()},
		{"ipv4-udp", frameV4UDP()},
		{"ipv6-tcp", frameV6TCP()},
		{"vlan", frameVLANv4TCP()},
		{"ipv6-ext-chain", cat(ethHdr(packet.EtherTypeIPv6), v6{NH: packet.ExtHopByHop, Src: client6, Dst: vip6}.build(cat(
			ext6(packet.ExtDestOptions, 1), ext6(packet.ExtRouting, 1), ext6(tcp, 3), tcpSeg(1, 2, 0, 0, nil))))},
		{"icmp-error", frameICMPv4FragNeeded()},
		{"icmpv6-error", frameICMPv6TooBig()},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var p packet.Parsed
			n := 0
			for b.Loop() {
				packet.Parse(bc.frame, &p)
				n++
			}
			if p.Reason != packet.OK {
				b.Fatalf("%s does not parse: %v", bc.name, p.Reason)
			}
			reportPerPacket(b, n)
		})
	}
}

func BenchmarkChecksum(b *testing.B) {
	data := randBytes(newRand(b), 1500)
	for _, size := range []int{20, 64, 1500} {
		b.Run(strconv.Itoa(size), func(b *testing.B) {
			buf := data[:size]
			b.SetBytes(int64(size))
			var sum uint16
			for b.Loop() {
				sum += packet.Checksum(buf, 0)
			}
			_ = sum
		})
	}
}

func BenchmarkWriters(b *testing.B) {
	var src4, dst4 [4]byte
	var src6, dst6 [16]byte
	frame4, l2Len4, ipLen4 := innerFrame(4, 64, 0)
	frame6, l2Len6, ipLen6 := innerFrame(6, 1400, 0)
	b.Run("encap-ipip4", func(b *testing.B) {
		buf, start := placeFrame(frame4, 0)
		n := 0
		for b.Loop() {
			packet.EncapIPv4(buf, start, l2Len4, ipLen4, 0, packet.ProtoIPIP, 0, true, 1, src4, dst4)
			n++
		}
		reportPerPacket(b, n)
	})
	b.Run("encap-gue6-udp-checksum-1400", func(b *testing.B) {
		buf, start := placeFrame(frame6, 0)
		n := 0
		for b.Loop() {
			ns := packet.EncapIPv6(buf, start, l2Len6, ipLen6, packet.UDPLen, udp, 0, 1, &src6, &dst6)
			u := buf[ns+l2Len6+packet.IPv6Len:]
			packet.WriteUDPHeader(u, 1, 6080, uint16(8+ipLen6), 0)
			packet.UDP(u).SetChecksum(packet.Finish(packet.Checksum(u[:8+ipLen6],
				uint32(packet.PseudoHeaderSum(src6[:], dst6[:], udp, uint32(8+ipLen6))))))
			n++
		}
		reportPerPacket(b, n)
	})
	for _, fam := range []int{4, 6} {
		frame, _, _ := innerFrame(fam, 1400, 0)
		b.Run("icmp-too-big-v"+strconv.Itoa(fam), func(b *testing.B) {
			var p packet.Parsed
			packet.Parse(frame, &p)
			buf, start := placeFrame(frame, 0)
			n := 0
			for b.Loop() {
				copy(buf[start:], frame) // the writer consumes its input
				packet.WriteICMPTooBig(buf, start, &p, 1280)
				n++
			}
			reportPerPacket(b, n)
		})
	}
}
