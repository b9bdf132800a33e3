package firmware

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// XDP verdicts as BPF_PROG_TEST_RUN reports them.
const (
	xdpAborted  = 0
	xdpDrop     = 1
	xdpPass     = 2
	xdpTX       = 3
	xdpRedirect = 4
)

var (
	macClient = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x01}
	macLB     = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x02}
)

func verdictName(v uint32) string {
	switch v {
	case xdpAborted:
		return "XDP_ABORTED"
	case xdpDrop:
		return "XDP_DROP"
	case xdpPass:
		return "XDP_PASS"
	case xdpTX:
		return "XDP_TX"
	case xdpRedirect:
		return "XDP_REDIRECT"
	}
	return "verdict?"
}

func ip(s string) net.IP { return net.IP(netip.MustParseAddr(s).AsSlice()) }

// serialize builds a packet from layers with lengths and checksums computed,
// wiring every transport layer's checksum to the network layer before it.
func serialize(tb testing.TB, ls ...gopacket.SerializableLayer) []byte {
	tb.Helper()
	var net gopacket.NetworkLayer
	for _, l := range ls {
		switch l := l.(type) {
		case *layers.IPv4:
			net = l
		case *layers.IPv6:
			net = l
		case *layers.TCP:
			mustNoErr(tb, l.SetNetworkLayerForChecksum(net))
		case *layers.UDP:
			mustNoErr(tb, l.SetNetworkLayerForChecksum(net))
		case *layers.ICMPv6:
			mustNoErr(tb, l.SetNetworkLayerForChecksum(net))
		}
	}
	buf := gopacket.NewSerializeBuffer()
	err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...)
	mustNoErr(tb, err)
	return append([]byte(nil), buf.Bytes()...)
}

func mustNoErr(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatal(err)
	}
}

// ether wraps an L3 packet (already serialized) in an Ethernet header with
// the given VLAN tag protocol identifiers (0x8100 or 0x88a8), outermost
// first; VLAN IDs are 100, 101, ...
func ether(etherType layers.EthernetType, l3 []byte, tpids ...layers.EthernetType) []byte {
	hdr := make([]byte, 0, 14+4*len(tpids))
	hdr = append(hdr, macLB...)
	hdr = append(hdr, macClient...)
	for i, tpid := range tpids {
		hdr = binary.BigEndian.AppendUint16(hdr, uint16(tpid))
		hdr = binary.BigEndian.AppendUint16(hdr, uint16(100+i))
	}
	hdr = binary.BigEndian.AppendUint16(hdr, uint16(etherType))
	return append(hdr, l3...)
}

func eth4(l3 []byte, tpids ...layers.EthernetType) []byte {
	return ether(layers.EthernetTypeIPv4, l3, tpids...)
}

func eth6(l3 []byte, tpids ...layers.EthernetType) []byte {
	return ether(layers.EthernetTypeIPv6, l3, tpids...)
}

func ipv4(src, dst string, proto layers.IPProtocol) *layers.IPv4 {
	return &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Id: 0x1234, Protocol: proto, SrcIP: ip(src), DstIP: ip(dst)}
}

func ipv6(src, dst string, nh layers.IPProtocol) *layers.IPv6 {
	return &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: nh, SrcIP: ip(src), DstIP: ip(dst)}
}

func tcp(sport, dport uint16) *layers.TCP {
	return &layers.TCP{SrcPort: layers.TCPPort(sport), DstPort: layers.TCPPort(dport), Seq: 1000, SYN: true, Window: 65535}
}

func udp(sport, dport uint16) *layers.UDP {
	return &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}
}

func payload(n int) gopacket.Payload {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i)
	}
	return p
}

// tcp4 is a TCP SYN from src:sport to dst:dport.
func tcp4(tb testing.TB, src string, sport uint16, dst string, dport uint16) []byte {
	return serialize(tb, ipv4(src, dst, layers.IPProtocolTCP), tcp(sport, dport))
}

func udp4(tb testing.TB, src string, sport uint16, dst string, dport uint16) []byte {
	return serialize(tb, ipv4(src, dst, layers.IPProtocolUDP), udp(sport, dport), payload(16))
}

func tcp6(tb testing.TB, src string, sport uint16, dst string, dport uint16) []byte {
	return serialize(tb, ipv6(src, dst, layers.IPProtocolTCP), tcp(sport, dport))
}

func udp6(tb testing.TB, src string, sport uint16, dst string, dport uint16) []byte {
	return serialize(tb, ipv6(src, dst, layers.IPProtocolUDP), udp(sport, dport), payload(16))
}

// ipv6Ext is a raw IPv6 extension header: hop-by-hop or destination options
// padded with PadN to 8*(units) bytes.
func ipv6Opts(next layers.IPProtocol, units int) []byte {
	h := make([]byte, 8*units)
	h[0] = byte(next)
	h[1] = byte(units - 1)
	h[2] = 1 // PadN
	h[3] = byte(len(h) - 4)
	return h
}

// ipv6Routing is a type 2 routing header (24 bytes) naming one address.
func ipv6Routing(next layers.IPProtocol) []byte {
	h := make([]byte, 24)
	h[0] = byte(next)
	h[1] = 2 // (24 / 8) - 1
	h[2] = 2 // type 2
	h[3] = 1 // segments left
	copy(h[8:], ip("2001:db8::aa"))
	return h
}

// ipv6Frag is a fragment header: offset in 8-byte units.
func ipv6Frag(next layers.IPProtocol, offset uint16, more bool) []byte {
	h := make([]byte, 8)
	h[0] = byte(next)
	fo := offset << 3
	if more {
		fo |= 1
	}
	binary.BigEndian.PutUint16(h[2:], fo)
	binary.BigEndian.PutUint32(h[4:], 0xabcdef01)
	return h
}

// concat joins byte slices.
func concat(bs ...[]byte) []byte {
	var out []byte
	for _, b := range bs {
		out = append(out, b...)
	}
	return out
}
