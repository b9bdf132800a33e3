package packet_test

import (
	"bytes"
	"net"
	"testing"

	"github.com/gopacket/gopacket/layers"

	"github.com/weirlb/weir/packet"
)

// TestAccessorsMatchGopacket reads random gopacket-built frames through the
// header accessor types and compares every field with gopacket's decoding,
// then rewrites fields with the setters and checks gopacket sees the change.
func TestAccessorsMatchGopacket(t *testing.T) {
	r := newRand(t)
	var p packet.Parsed
	for i := range 3000 {
		g := genRandomFrame(t, r)
		f := g.frame
		packet.Parse(f, &p)
		if p.Reason != packet.OK {
			t.Fatalf("frame %d does not parse", i)
		}

		var eth layers.Ethernet
		if err := eth.DecodeFromBytes(f, nf); err != nil {
			t.Fatal(err)
		}
		e := packet.Ethernet(f)
		if d, s := e.Dst(), e.Src(); !bytes.Equal(d[:], eth.DstMAC) || !bytes.Equal(s[:], eth.SrcMAC) || e.Type() != uint16(eth.EthernetType) {
			t.Fatalf("Ethernet accessors: %v %v %#04x, gopacket %v", d, s, e.Type(), eth)
		}

		l3 := f[p.L3Off:]
		if p.Family == 4 {
			var ip layers.IPv4
			if err := ip.DecodeFromBytes(l3, nf); err != nil {
				t.Fatal(err)
			}
			h := packet.IPv4(l3)
			src, dst := h.Src(), h.Dst()
			switch {
			case h.Version() != ip.Version, h.HeaderLen() != int(ip.IHL)*4, h.TOS() != ip.TOS, h.TotalLen() != ip.Length,
				h.ID() != ip.Id, h.FlagsFragment() != uint16(ip.Flags)<<13|ip.FragOffset,
				h.IsFragment() != (ip.Flags&layers.IPv4MoreFragments != 0 || ip.FragOffset != 0),
				h.FragmentOffset() != int(ip.FragOffset)*8, h.TTL() != ip.TTL, h.Protocol() != uint8(ip.Protocol),
				h.Checksum() != ip.Checksum, !net.IP(src[:]).Equal(ip.SrcIP), !net.IP(dst[:]).Equal(ip.DstIP):
				t.Fatalf("IPv4 accessors disagree with gopacket %+v", ip)
			}
			if !h.ChecksumValid() || h.ComputeChecksum() != ip.Checksum {
				t.Fatalf("IPv4 checksum %#04x: valid %v, computed %#04x", ip.Checksum, h.ChecksumValid(), h.ComputeChecksum())
			}
			// Rewrite the addresses and length the way a NAT would, fix the
			// checksum, and let gopacket verify it.
			newSrc, newDst := [4]byte(randBytes(r, 4)), [4]byte(randBytes(r, 4))
			h.SetSrc(newSrc)
			h.SetDst(newDst)
			h.SetTotalLen(h.TotalLen())
			h.SetChecksum(h.ComputeChecksum())
			var ip2 layers.IPv4
			if err := ip2.DecodeFromBytes(l3, nf); err != nil {
				t.Fatal(err)
			}
			if err, res := ip2.VerifyChecksum(); err != nil || !res.Valid || !h.ChecksumValid() {
				t.Fatalf("checksum after rewrite invalid: %+v", res)
			}
			if !ip2.SrcIP.Equal(net.IP(newSrc[:])) || !ip2.DstIP.Equal(net.IP(newDst[:])) {
				t.Fatalf("SetSrc/SetDst: gopacket reads %v -> %v", ip2.SrcIP, ip2.DstIP)
			}
		} else {
			var ip layers.IPv6
			if err := ip.DecodeFromBytes(l3, nf); err != nil {
				t.Fatal(err)
			}
			h := packet.IPv6(l3)
			src, dst := h.Src(), h.Dst()
			switch {
			case h.Version() != ip.Version, h.TrafficClass() != ip.TrafficClass, h.FlowLabel() != ip.FlowLabel,
				h.PayloadLen() != ip.Length, h.NextHeader() != uint8(ip.NextHeader), h.HopLimit() != ip.HopLimit,
				!net.IP(src[:]).Equal(ip.SrcIP), !net.IP(dst[:]).Equal(ip.DstIP):
				t.Fatalf("IPv6 accessors disagree with gopacket %+v", ip)
			}
			newSrc, newDst := [16]byte(randBytes(r, 16)), [16]byte(randBytes(r, 16))
			h.SetSrc(newSrc)
			h.SetDst(newDst)
			h.SetPayloadLen(h.PayloadLen())
			if h.Src() != newSrc || h.Dst() != newDst {
				t.Fatalf("SetSrc/SetDst did not stick")
			}
		}

		if p.Fragment || p.ICMPError {
			continue
		}
		l4 := f[p.L4Off : int(p.L3Off)+int(p.IPLen)]
		switch p.Proto {
		case tcp:
			var tc layers.TCP
			if err := tc.DecodeFromBytes(l4, nf); err != nil {
				t.Fatal(err)
			}
			h := packet.TCP(l4)
			if h.SrcPort() != uint16(tc.SrcPort) || h.DstPort() != uint16(tc.DstPort) || h.DataOffset() != int(tc.DataOffset)*4 ||
				h.Flags() != p.TCPFlags || h.Checksum() != tc.Checksum {
				t.Fatalf("TCP accessors disagree with gopacket %+v", tc)
			}
		case udp:
			var u layers.UDP
			if err := u.DecodeFromBytes(l4, nf); err != nil {
				t.Fatal(err)
			}
			h := packet.UDP(l4)
			if h.SrcPort() != uint16(u.SrcPort) || h.DstPort() != uint16(u.DstPort) || h.Length() != u.Length || h.Checksum() != u.Checksum {
				t.Fatalf("UDP accessors disagree with gopacket %+v", u)
			}
			h.SetChecksum(0x4242)
			if h.Checksum() != 0x4242 {
				t.Fatalf("UDP SetChecksum did not stick")
			}
		}
	}
}

func TestEthernetSetters(t *testing.T) {
	f := frameVLANv4TCP()
	e := packet.Ethernet(f)
	e.SetDst(macB)
	e.SetSrc(macA)
	e.SetType(packet.EtherTypeIPv6)
	var eth layers.Ethernet
	if err := eth.DecodeFromBytes(f, nf); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(eth.DstMAC, macB[:]) || !bytes.Equal(eth.SrcMAC, macA[:]) || eth.EthernetType != layers.EthernetTypeIPv6 {
		t.Fatalf("after setters gopacket reads %v -> %v type %v", eth.SrcMAC, eth.DstMAC, eth.EthernetType)
	}
	if !bytes.Equal(f[14:], frameVLANv4TCP()[14:]) {
		t.Fatalf("setters wrote past the Ethernet header")
	}
}

func TestMACString(t *testing.T) {
	for _, m := range []packet.MAC{{}, macA, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, {0x0a, 0xb0, 0x0c, 0xd0, 0x0e, 0xf0}} {
		if got, want := m.String(), net.HardwareAddr(m[:]).String(); got != want {
			t.Errorf("MAC(%x).String() = %q, want %q", m[:], got, want)
		}
	}
}
