package packet_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/weirlb/weir/packet"
)

// FuzzParse feeds arbitrary frames to Parse. It must never panic; when it
// says OK, every offset and length it reports must be consistent and inside
// the frame, and gopacket, where it can decode the frame, must agree on it.
//
// Run it with: go test -run='^$' -fuzz=FuzzParse -fuzztime=60s ./packet
// Crashers the fuzzer finds land in testdata/fuzz/FuzzParse and stay there.
func FuzzParse(f *testing.F) {
	eth4 := ethHdr(packet.EtherTypeIPv4)
	eth6 := ethHdr(packet.EtherTypeIPv6)
	tcp20 := tcpSeg(51000, 443, packet.TCPFlagSYN, 0, nil)

	// Shortest frames: nothing, a byte, an Ethernet header cut by one.
	f.Add([]byte{})
	f.Add([]byte{0x08})
	f.Add(eth4[:13])
	// IHL 15: 40 bytes of options, and an IPv4 total length of 0xffff in a
	// frame of 60 bytes (the length runs past the frame).
	f.Add(cat(eth4, v4{Proto: tcp, Src: client4, Dst: vip4, Opts: bytes.Repeat([]byte{1}, 40)}.build(tcp20)))
	f.Add(patch16(cat(eth4, v4{Proto: udp, Src: client4, Dst: vip4}.build(udpDgram(1, 2, nil))), l3+2, 0xffff))
	// IPv4 total length 0 (what TSO senders put there) and IHL 15 in a
	// 20-byte packet.
	f.Add(patch16(frameV4TCP(), l3+2, 0))
	f.Add(patch(frameV4TCP(), l3, 0x4f))
	// Fragments: first with MF and a TCP header cut to 2 bytes, last at the
	// largest offset.
	f.Add(cat(eth4, v4{Frag: packet.IPv4FlagMF, Proto: tcp, Src: client4, Dst: vip4}.build([]byte{0xc7, 0x38})))
	f.Add(cat(eth4, v4{Frag: 0x1fff, Proto: udp, Src: client4, Dst: vip4}.build(make([]byte, 8))))
	// IPv6 payload length 0 with a hop-by-hop header following (a jumbogram
	// without its option).
	f.Add(cat(patch16(cat(eth6, v6{NH: packet.ExtHopByHop, Src: client6, Dst: vip6}.build(nil)), l3+4, 0), ext6(tcp, 1), tcp20))
	// IPv6 extension chains: exactly MaxIPv6ExtHeaders, one more, a header
	// claiming 2048 bytes, and a fragment header followed by more options.
	f.Add(cat(eth6, v6{NH: packet.ExtDestOptions, Src: client6, Dst: vip6}.build(cat(destChain(packet.MaxIPv6ExtHeaders, tcp), tcp20))))
	f.Add(cat(eth6, v6{NH: packet.ExtDestOptions, Src: client6, Dst: vip6}.build(cat(destChain(packet.MaxIPv6ExtHeaders+1, tcp), tcp20))))
	f.Add(cat(eth6, v6{NH: packet.ExtRouting, Src: client6, Dst: vip6}.build(patch(cat(ext6(tcp, 1), tcp20), 1, 255))))
	f.Add(cat(eth6, v6{NH: packet.ExtFragment, Src: client6, Dst: vip6}.build(cat(frag6(packet.ExtDestOptions, 0, true, 1), ext6(tcp, 1), tcp20))))
	// ICMP errors: a v4 quote with IHL 15 that the quote cannot hold, a v6
	// quote cut inside its extension chain, and an error quoting an error.
	f.Add(cat(eth4, v4{Proto: icmp4, Src: router4, Dst: vip4}.build(icmpMsg(3, 4, 1400, patch(quoteV4(vip4, client4, tcp, 443, 51000, 8), 0, 0x4f)))))
	f.Add(cat(eth6, v6{NH: icmp6, Src: router6, Dst: vip6}.build(icmpMsg(2, 0, 1280,
		quoteV6(vip6, client6, ext6(tcp, 3), packet.ExtHopByHop, 443, 51000, 0)[:60]))))
	f.Add(cat(eth4, v4{Proto: icmp4, Src: router4, Dst: vip4}.build(icmpMsg(11, 0, 0,
		v4{Proto: icmp4, Src: vip4, Dst: client4}.build(icmpMsg(3, 4, 0, quoteV4(client4, vip4, tcp, 51000, 443, 8)))))))
	// Three VLAN tags, and a VLAN stack cut inside the second tag.
	f.Add(cat(ethHdr(packet.EtherTypeIPv4, packet.EtherTypeQinQ, packet.EtherTypeQinQ, packet.EtherTypeVLAN), v4{Proto: tcp, Src: client4, Dst: vip4}.build(tcp20)))
	f.Add(ethHdr(packet.EtherTypeIPv6, packet.EtherTypeQinQ, packet.EtherTypeVLAN)[:21])
	// And every golden frame, good and bad.
	for _, tc := range goldenCases() {
		f.Add(tc.frame)
	}

	f.Fuzz(func(t *testing.T, frame []byte) {
		orig := append([]byte(nil), frame...)
		p := dirty
		packet.Parse(frame, &p)
		if !bytes.Equal(frame, orig) {
			t.Fatalf("Parse modified the frame")
		}
		var again packet.Parsed
		packet.Parse(frame, &again)
		if p.Reason >= packet.NumReasons {
			t.Fatalf("Reason %d out of range", p.Reason)
		}
		if p.Reason != again.Reason || (p.Reason == packet.OK && p != again) {
			t.Fatalf("Parse depends on the previous contents of Parsed:\n%s\n%s", fmtParsed(&p), fmtParsed(&again))
		}
		if p.Reason != packet.OK {
			return
		}
		if err := checkParsed(frame, &p); err != nil {
			t.Fatalf("%v\nparsed %s\nframe % x", err, fmtParsed(&p), frame)
		}
		v, err := gpDecode(frame)
		if err != nil {
			return // gopacket is stricter in places (IPv4 options, IPv6 TLVs, jumbograms)
		}
		if err := agree(&p, &v); err != nil && !errors.Is(err, errQuoteUndecodable) {
			t.Fatalf("Parse and gopacket disagree: %v\nparsed %s\ngopacket %+v\nframe % x", err, fmtParsed(&p), v, frame)
		}
	})
}

// checkParsed checks what must hold of any frame Parse accepts, reading the
// frame's bytes directly.
func checkParsed(frame []byte, p *packet.Parsed) error {
	l3off, l4off, ipLen := int(p.L3Off), int(p.L4Off), int(p.IPLen)
	end := l3off + ipLen
	switch {
	case p.VLANTags > packet.MaxVLANTags || l3off != packet.EthernetLen+packet.VLANTagLen*int(p.VLANTags):
		return fmt.Errorf("L3Off %d with %d VLAN tags", l3off, p.VLANTags)
	case p.Family != 4 && p.Family != 6, p.Key.Family != p.Family:
		return fmt.Errorf("family %d, key family %d", p.Family, p.Key.Family)
	case end > len(frame):
		return fmt.Errorf("IP packet ends at %d, past the %d-byte frame", end, len(frame))
	}
	ip := frame[l3off:end]
	hdrLen, addrOff, addrLen := 40, 8, 16
	if p.Family == 4 {
		hdrLen, addrOff, addrLen = int(ip[0]&0xf)*4, 12, 4
		if ip[0]>>4 != 4 || hdrLen < 20 || ipLen != int(binary.BigEndian.Uint16(ip[2:])) {
			return fmt.Errorf("IPv4 header %x does not match IPLen %d", ip[:4], ipLen)
		}
		if p.DF != (ip[6]&0x40 != 0) || p.TOS != ip[1] || ip[8] == 0 {
			return fmt.Errorf("IPv4 DF/TOS/TTL wrong")
		}
		if fo := binary.BigEndian.Uint16(ip[6:]); p.Fragment != (fo&0x3fff != 0) {
			return fmt.Errorf("IPv4 flags %#04x but Fragment %v", fo, p.Fragment)
		}
		if !p.ICMPError && p.Proto != ip[9] {
			return fmt.Errorf("Proto %d, header says %d", p.Proto, ip[9])
		}
		var zero [12]byte
		if [12]byte(p.Key.Src[4:]) != zero || [12]byte(p.Key.Dst[4:]) != zero {
			return fmt.Errorf("IPv4 key with bytes beyond the address: %+v", p.Key)
		}
	} else {
		if ip[0]>>4 != 6 || ipLen != 40+int(binary.BigEndian.Uint16(ip[4:])) || !p.DF || ip[7] == 0 {
			return fmt.Errorf("IPv6 header does not match IPLen %d / DF / hop limit", ipLen)
		}
	}
	if ipLen < hdrLen {
		return fmt.Errorf("IPLen %d below the %d-byte header", ipLen, hdrLen)
	}
	if p.ICMPError {
		// The key is the quoted flow turned around: it ends at the address
		// the error was sent to.
		if !bytes.Equal(p.Key.Dst[:addrLen], ip[addrOff+addrLen:addrOff+2*addrLen]) {
			return fmt.Errorf("ICMP error key does not end at the error's destination")
		}
		if p.Key.Proto != tcp && p.Key.Proto != udp {
			return fmt.Errorf("ICMP error quoting protocol %d", p.Key.Proto)
		}
		if (p.Family == 4 && p.Proto != icmp4) || (p.Family == 6 && p.Proto != icmp6) {
			return fmt.Errorf("ICMP error with Proto %d", p.Proto)
		}
	} else {
		if !bytes.Equal(p.Key.Src[:addrLen], ip[addrOff:addrOff+addrLen]) || !bytes.Equal(p.Key.Dst[:addrLen], ip[addrOff+addrLen:addrOff+2*addrLen]) {
			return fmt.Errorf("key addresses differ from the header")
		}
		if p.Key.Proto != p.Proto {
			return fmt.Errorf("key proto %d, Proto %d", p.Key.Proto, p.Proto)
		}
	}
	if p.Fragment {
		if p.Key.SrcPort != 0 || p.Key.DstPort != 0 || p.TCPFlags != 0 || p.ICMPError {
			return fmt.Errorf("fragment with ports, flags or an ICMP error")
		}
		if l4off != 0 && (l4off < l3off+hdrLen || l4off > end) {
			return fmt.Errorf("fragment L4Off %d outside [%d, %d]", l4off, l3off+hdrLen, end)
		}
		return nil
	}
	if l4off < l3off+hdrLen || l4off > end {
		return fmt.Errorf("L4Off %d outside [%d, %d]", l4off, l3off+hdrLen, end)
	}
	if p.Family == 4 && l4off != l3off+hdrLen {
		return fmt.Errorf("IPv4 L4Off %d, header ends at %d", l4off, l3off+hdrLen)
	}
	l4 := frame[l4off:end]
	switch p.Proto {
	case tcp:
		if len(l4) < 20 || int(l4[12]>>4)*4 < 20 || int(l4[12]>>4)*4 > len(l4) {
			return fmt.Errorf("TCP header does not fit")
		}
		if p.Key.SrcPort != binary.BigEndian.Uint16(l4) || p.Key.DstPort != binary.BigEndian.Uint16(l4[2:]) || p.TCPFlags != l4[13] {
			return fmt.Errorf("TCP ports or flags differ from the header")
		}
	case udp:
		if n := len(l4); n < 8 || int(binary.BigEndian.Uint16(l4[4:])) < 8 || int(binary.BigEndian.Uint16(l4[4:])) > n {
			return fmt.Errorf("UDP header does not fit")
		}
		if p.Key.SrcPort != binary.BigEndian.Uint16(l4) || p.Key.DstPort != binary.BigEndian.Uint16(l4[2:]) {
			return fmt.Errorf("UDP ports differ from the header")
		}
	case icmp4, icmp6:
		if len(l4) < 8 || p.ICMPType != l4[0] || p.ICMPCode != l4[1] {
			return fmt.Errorf("ICMP header does not fit or differs")
		}
	default:
		if p.Key.SrcPort != 0 || p.Key.DstPort != 0 {
			return fmt.Errorf("ports for protocol %d", p.Proto)
		}
	}
	if p.Proto != tcp && p.TCPFlags != 0 {
		return fmt.Errorf("TCP flags on protocol %d", p.Proto)
	}
	if p.ICMPError != (p.Family == 4 && p.Proto == icmp4 && packet.IsICMPv4Error(p.ICMPType) ||
		p.Family == 6 && p.Proto == icmp6 && packet.IsICMPv6Error(p.ICMPType)) {
		return fmt.Errorf("ICMPError %v for type %d", p.ICMPError, p.ICMPType)
	}
	return nil
}

// TestWriteFuzzCorpus regenerates testdata/fuzz/FuzzParse/golden-* from the
// golden table when WEIR_WRITE_FUZZ_CORPUS=1, so the committed corpus
// follows the table. Otherwise it checks that every committed golden entry
// still matches a golden frame.
func TestWriteFuzzCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzParse")
	cases := goldenCases()
	if os.Getenv("WEIR_WRITE_FUZZ_CORPUS") == "1" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, tc := range cases {
			if err := os.WriteFile(filepath.Join(dir, "golden-"+tc.name), corpusEntry(tc.frame), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return
	}
	matches, err := filepath.Glob(filepath.Join(dir, "golden-*"))
	if err != nil {
		t.Fatal(err)
	}
	if len(matches) == 0 {
		t.Fatalf("no golden corpus entries in %s; run with WEIR_WRITE_FUZZ_CORPUS=1", dir)
	}
	byName := map[string][]byte{}
	for _, tc := range cases {
		byName["golden-"+tc.name] = tc.frame
	}
	for _, m := range matches {
		b, err := os.ReadFile(m)
		if err != nil {
			t.Fatal(err)
		}
		frame, ok := byName[filepath.Base(m)]
		if !ok || !bytes.Equal(b, corpusEntry(frame)) {
			t.Errorf("%s is stale; run with WEIR_WRITE_FUZZ_CORPUS=1", m)
		}
	}
}

// corpusEntry encodes a frame in the fuzz corpus file format, escaping every
// byte that is not printable ASCII so the file shows the bytes exactly.
func corpusEntry(frame []byte) []byte {
	b := []byte("go test fuzz v1\n[]byte(\"")
	for _, c := range frame {
		if c >= 0x20 && c < 0x7f && c != '"' && c != '\\' {
			b = append(b, c)
		} else {
			b = fmt.Appendf(b, "\\x%02x", c)
		}
	}
	return append(b, "\")\n"...)
}
