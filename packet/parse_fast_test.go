package packet

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

// The short paths of Parse (untagged IPv4 or IPv6 carrying TCP or UDP) must
// give exactly what the general parser gives. These tests compare the two on
// frames that sit on every edge of the short paths' conditions.

// fastTemplates are frames the short paths take: IPv4 and IPv6, TCP and UDP,
// with a few payload bytes.
func fastTemplates() [][]byte {
	var out [][]byte
	for _, v6 := range []bool{false, true} {
		for _, proto := range []uint8{ProtoTCP, ProtoUDP} {
			l4len := TCPMinLen
			if proto == ProtoUDP {
				l4len = UDPLen
			}
			payload := 5
			var ip []byte
			if v6 {
				ip = make([]byte, IPv6Len+l4len+payload)
				ip[0], ip[1] = 0x6a, 0xb0 // traffic class 0xab
				binary.BigEndian.PutUint16(ip[4:6], uint16(l4len+payload))
				ip[6], ip[7] = proto, 64
				for i := 8; i < 40; i++ {
					ip[i] = byte(0x20 + i)
				}
			} else {
				ip = make([]byte, IPv4MinLen+l4len+payload)
				ip[0], ip[1] = 0x45, 0x2e
				binary.BigEndian.PutUint16(ip[2:4], uint16(len(ip)))
				binary.BigEndian.PutUint16(ip[6:8], IPv4FlagDF)
				ip[8], ip[9] = 64, proto
				copy(ip[12:20], []byte{198, 51, 100, 7, 192, 0, 2, 10})
			}
			l4 := ip[len(ip)-l4len-payload:]
			binary.BigEndian.PutUint16(l4[0:2], 51000)
			binary.BigEndian.PutUint16(l4[2:4], 443)
			if proto == ProtoTCP {
				l4[12], l4[13] = 5<<4, TCPFlagACK|TCPFlagPSH
			} else {
				binary.BigEndian.PutUint16(l4[4:6], uint16(l4len+payload))
			}
			eth := make([]byte, EthernetLen)
			copy(eth, []byte{2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2})
			et := uint16(EtherTypeIPv4)
			if v6 {
				et = EtherTypeIPv6
			}
			binary.BigEndian.PutUint16(eth[12:14], et)
			out = append(out, append(eth, ip...))
		}
	}
	return out
}

// checkSameAsGeneral parses frame with Parse and with the general parser,
// each into a Parsed full of garbage, and fails if they differ.
func checkSameAsGeneral(t *testing.T, frame []byte) {
	t.Helper()
	garbage := Parsed{
		Key:    FlowKey{Src: [16]byte{0xff, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}, Dst: [16]byte{15: 0xee}, SrcPort: 1, DstPort: 2, Proto: 3, Family: 9},
		Reason: ReasonBadICMP, VLANTags: 7, L3Off: 99, L4Off: 98, IPLen: 97, Family: 9, Proto: 96, TOS: 95,
		DF: true, Fragment: true, ICMPError: true, ICMPType: 94, ICMPCode: 93, TCPFlags: 92,
	}
	fast, general := garbage, garbage
	Parse(frame, &fast)
	parse(frame, &general)
	if fast.Reason != general.Reason || (general.Reason == OK && fast != general) {
		t.Fatalf("Parse and the general parser disagree on % x:\nParse   %+v\ngeneral %+v", frame, fast, general)
	}
}

func TestParseFastPathMatchesGeneral(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	// Offsets (from the start of the frame) of the bytes the short paths
	// decide on: EtherType, version/IHL, lengths, flags and fragment
	// offset, TTL/hop limit, protocol/next header, TCP data offset and UDP
	// length.
	hot4 := []int{12, 13, 14, 16, 17, 20, 21, 22, 23, 38, 39, 46}
	hot6 := []int{12, 13, 14, 18, 19, 20, 21, 58, 59, 66}
	edges := []byte{0, 1, 0x04, 0x05, 0x06, 0x08, 0x11, 0x14, 0x1f, 0x20, 0x28, 0x3f, 0x40, 0x45, 0x46, 0x50, 0x60, 0x86, 0x88, 0xdd, 0xf0, 0xff}
	for _, tmpl := range fastTemplates() {
		// The template itself, and every cut of it.
		for n := 0; n <= len(tmpl); n++ {
			checkSameAsGeneral(t, tmpl[:n])
		}
		hot := hot4
		if binary.BigEndian.Uint16(tmpl[12:14]) == EtherTypeIPv6 {
			hot = hot6
		}
		for range 20000 {
			f := append([]byte(nil), tmpl...)
			// Some trailing bytes (Ethernet padding or a longer payload).
			f = append(f, make([]byte, rng.IntN(8))...)
			for range 1 + rng.IntN(3) {
				i := hot[rng.IntN(len(hot))]
				if i >= len(f) {
					continue
				}
				if rng.IntN(2) == 0 {
					f[i] = edges[rng.IntN(len(edges))]
				} else {
					f[i] = byte(rng.Uint32())
				}
			}
			if rng.IntN(4) == 0 {
				f = f[:rng.IntN(len(f)+1)]
			}
			checkSameAsGeneral(t, f)
		}
	}
}

// FuzzParseFastPath compares Parse with the general parser on arbitrary
// frames (seeded with frames the short paths take).
func FuzzParseFastPath(f *testing.F) {
	for _, tmpl := range fastTemplates() {
		f.Add(tmpl)
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		checkSameAsGeneral(t, frame)
	})
}

// TestParseFastPathTemplates checks that the templates are frames the short
// paths take, so the comparisons above exercise them.
func TestParseFastPathTemplates(t *testing.T) {
	for _, tmpl := range fastTemplates() {
		var p Parsed
		parse(tmpl, &p)
		if p.Reason != OK {
			t.Fatalf("template % x does not parse: %v", tmpl, p.Reason)
		}
		if p.Family == 6 && !parseFast6(tmpl, &p) {
			t.Fatalf("the IPv6 short path does not take template % x", tmpl)
		}
	}
}
