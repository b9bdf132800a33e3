package appliance

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/weirlb/weir/flows"
	"github.com/weirlb/weir/packet"
)

// Addresses of the golden model. Clients and routers sit on the Internet
// side; backends and the appliance's own addresses on the inside.
var (
	client4 = addr("198.51.100.7")
	client6 = addr("2001:db8:c::7")
	router4 = addr("198.51.100.254") // sends ICMP errors about VIP-to-client packets
	router6 = addr("2001:db8:c::fe")
	local4  = addr("203.0.113.1")
	local6  = addr("2001:db8:ff::1")
)

// beMAC is the MAC of backend n (or of the next hop towards it).
func beMAC(n int) packet.MAC { return packet.MAC{0x02, 0xbe, 0x00, 0x00, byte(n >> 8), byte(n)} }

// be is an active backend of weight 1 whose MAC is beMAC(n).
func be(a string, n int) Backend { return Backend{Addr: addr(a), Weight: 1, MAC: beMAC(n)} }

func vip(a string, proto uint8, port uint16, mode Mode, backends ...Backend) VIP {
	return VIP{VIPKey: VIPKey{Addr: addr(a), Proto: proto, Port: port}, Mode: mode, Backends: backends}
}

// goldenModel has one single-backend VIP per case the golden table covers,
// so that every output frame is fully determined.
func goldenModel() Model {
	tooBigDrop := vip("192.0.2.20", ipProtoTCP, 80, ModeIPIP, be("10.1.0.20", 20))
	tooBigDrop.MTU = 576
	tooBig4 := vip("192.0.2.21", ipProtoTCP, 80, ModeGUE, be("10.1.0.21", 21))
	tooBig4.MTU, tooBig4.TooBig = 1000, TooBigICMP
	tooBig4in6 := vip("192.0.2.22", ipProtoTCP, 80, ModeIPIP, be("fd00:1::22", 22))
	tooBig4in6.MTU, tooBig4in6.TooBig = 1000, TooBigICMP
	tooBig6 := vip("2001:db8::21", ipProtoTCP, 80, ModeGUE, be("fd00:1::21", 121))
	tooBig6.MTU, tooBig6.TooBig = 1400, TooBigICMP
	icmpDrop := vip("192.0.2.23", ipProtoTCP, 80, ModeIPIP, be("10.1.0.23", 23))
	icmpDrop.ICMPErrors = ICMPDrop
	gue4in6 := vip("192.0.2.14", ipProtoTCP, 443, ModeGUE, be("fd00:1::14", 14))
	gue4in6.GUEPort = 6080
	failed := be("10.1.0.52", 52)
	failed.State = StateFailed
	drained := be("10.1.0.51", 51)
	drained.Weight = 0
	unresolved := be("10.1.0.53", 53)
	unresolved.MAC = packet.MAC{}
	return Model{
		LocalMAC:   localMAC,
		LocalAddr4: local4,
		LocalAddr6: local6,
		VIPs: []VIP{
			vip("192.0.2.10", ipProtoTCP, 80, ModeDSR, be("10.1.0.10", 10)),
			vip("192.0.2.11", ipProtoTCP, 80, ModeIPIP, be("10.1.0.11", 11)),
			vip("192.0.2.12", ipProtoTCP, 80, ModeIPIP, be("fd00:1::12", 12)),
			vip("192.0.2.13", ipProtoUDP, 53, ModeGUE, be("10.1.0.13", 13)),
			gue4in6,
			icmpDrop,
			vip("2001:db8::10", ipProtoTCP, 80, ModeDSR, be("2001:db8:1::10", 110)),
			vip("2001:db8::11", ipProtoTCP, 80, ModeIPIP, be("fd00:1::11", 111)),
			vip("2001:db8::12", ipProtoUDP, 443, ModeIPIP, be("10.1.0.112", 112)),
			vip("2001:db8::13", ipProtoTCP, 80, ModeGUE, be("fd00:1::13", 113)),
			vip("2001:db8::14", ipProtoUDP, 4500, ModeGUE, be("10.1.0.114", 114)),
			// All ports of an address, and one port of it that goes elsewhere.
			vip("192.0.2.30", ipProtoTCP, 0, ModeIPIP, be("10.1.0.30", 30)),
			vip("192.0.2.30", ipProtoTCP, 22, ModeDSR, be("10.1.0.31", 31)),
			// Fragments: two ports on one address go to the lowest port's
			// VIP; an all-ports VIP of the address takes them over.
			vip("192.0.2.40", ipProtoUDP, 123, ModeIPIP, be("10.1.0.41", 41)),
			vip("192.0.2.40", ipProtoUDP, 53, ModeIPIP, be("10.1.0.40", 40)),
			vip("192.0.2.41", ipProtoUDP, 53, ModeIPIP, be("10.1.0.42", 42)),
			vip("192.0.2.41", ipProtoUDP, 0, ModeIPIP, be("10.1.0.43", 43)),
			vip("2001:db8::40", ipProtoUDP, 53, ModeGUE, be("fd00:1::40", 140)),
			vip("2001:db8::40", ipProtoUDP, 5353, ModeGUE, be("fd00:1::41", 141)),
			tooBigDrop, tooBig4, tooBig4in6, tooBig6,
			// No backend may take a new flow.
			vip("192.0.2.50", ipProtoTCP, 80, ModeDSR, drained, failed, unresolved),
		},
	}
}

// defaultStart is where test frames start in their buffer: more headroom than
// any encapsulation needs.
const defaultStart = 128

// testFlowConfig is a flow table big enough for every test's flows without
// evictions, and small enough to build many.
func testFlowConfig() flows.Config {
	c := flows.DefaultConfig()
	c.Capacity = 1 << 16
	return c
}

// oneShotConfig is for forwarders that see a packet or two.
func oneShotConfig() flows.Config {
	c := flows.DefaultConfig()
	c.Capacity = 64
	return c
}

func newForwarder(tb testing.TB, s *Snapshot, c flows.Config) *Forwarder {
	tb.Helper()
	f, err := NewForwarder(c, 1024)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(f.Close)
	f.Begin(s, int64(time.Hour))
	return f
}

func buildSnapshot(tb testing.TB, m Model, reg *Registry, gen uint64) *Snapshot {
	tb.Helper()
	s, err := BuildSnapshot(m, reg, gen)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

func newRegistry(tb testing.TB) *Registry {
	tb.Helper()
	reg, err := NewRegistry(1024)
	if err != nil {
		tb.Fatal(err)
	}
	return reg
}

// canary fills b with a pattern that no forwarder write is likely to repeat.
func canary(b []byte) {
	for i := range b {
		b[i] = byte(i*7+0x5b) ^ 0xa5
	}
}

// forwardChecked forwards a copy of in placed at buf[start:], in a buffer
// with a canary-filled headroom and tail, and checks the memory contract of
// Forward: nothing after the frame is written; the headroom is written only
// for an encapsulated or reply frame, and only inside [outStart, start); the
// output lies inside the buffer, ends at or before the end of the input,
// and a DSR output is the input frame itself. It returns a copy of the
// output frame (nil when dropped).
func forwardChecked(f *Forwarder, in []byte, start int) (Verdict, []byte, error) {
	buf := make([]byte, start+len(in)+64)
	canary(buf)
	ref := bytes.Clone(buf)
	copy(buf[start:], in)
	copy(ref[start:], in)
	v, os, ol := f.Forward(buf, start, len(in))
	end := start + len(in)
	if !bytes.Equal(buf[end:], ref[end:]) {
		return v, nil, fmt.Errorf("verdict %v: bytes after the frame were written", v)
	}
	switch v {
	case VerdictDrop:
		if !bytes.Equal(buf[:start], ref[:start]) {
			return v, nil, fmt.Errorf("dropped, but the headroom was written")
		}
		return v, nil, nil
	case VerdictTX, VerdictReply:
	default:
		return v, nil, fmt.Errorf("unknown verdict %v", v)
	}
	if os < 0 || ol <= 0 || os+ol > end {
		return v, nil, fmt.Errorf("verdict %v: output [%d, %d) not inside [0, %d)", v, os, os+ol, end)
	}
	if !bytes.Equal(buf[:min(os, start)], ref[:min(os, start)]) {
		return v, nil, fmt.Errorf("verdict %v: headroom before the output start %d was written", v, os)
	}
	if os == start && ol != len(in) {
		return v, nil, fmt.Errorf("verdict %v: in-place output of %d bytes, input %d", v, ol, len(in))
	}
	return v, bytes.Clone(buf[os : os+ol]), nil
}

// golden is one case of the golden packet table.
type golden struct {
	name  string
	in    []byte
	start int // 0 means defaultStart
	want  Verdict
	out   []byte     // exact output frame, for VerdictTX and VerdictReply
	drop  DropReason // for VerdictDrop
}

func goldenCases() []golden {
	var cs []golden
	add := func(g golden) { cs = append(cs, g) }
	tx := func(name string, in, out []byte) { add(golden{name: name, in: in, want: VerdictTX, out: out}) }
	drop := func(name string, in []byte, r DropReason) {
		add(golden{name: name, in: in, want: VerdictDrop, drop: r})
	}

	// gueOut and ipipOut are the encapsulations of the single-backend VIPs.
	outer := func(m Mode, backend string, gport uint16, h uint64) encap {
		e := encap{mode: m, dst: addr(backend), gport: gport, hash: h, src: local4}
		if e.dst.Is6() {
			e.src = local6
		}
		return e
	}
	tcpHash := func(src, dst netip.Addr, sport, dport uint16) uint64 {
		return flowHash(src, dst, sport, dport, ipProtoTCP)
	}

	// DSR: only the MACs change, whatever the VLAN tags or padding.
	{
		vip := addr("192.0.2.10")
		in := frameOf(tcpPacket(client4, vip, 40000, 80, flagSYN, 5))
		tx("dsr/v4/syn", in, dsrFrame(in, beMAC(10)))
		in = frameOf(tcpPacket(client4, vip, 40000, 80, flagACK, 0), 100)
		tx("dsr/v4/one-vlan", in, dsrFrame(in, beMAC(10)))
		in = frameOf(tcpPacket(client4, vip, 40000, 80, flagACK|flagPSH, 300), 100, 200)
		tx("dsr/v4/two-vlans", in, dsrFrame(in, beMAC(10)))
		in = cat(frameOf(tcpPacket(client4, vip, 40000, 80, flagACK, 0)), make([]byte, 6)) // 54 bytes padded to 60
		tx("dsr/v4/ethernet-padding", in, dsrFrame(in, beMAC(10)))
		vip6 := addr("2001:db8::10")
		in = frameOf(tcpPacket(client6, vip6, 40000, 80, flagSYN, 10))
		tx("dsr/v6/syn", in, dsrFrame(in, beMAC(110)))
		in = frameOf(tcpPacket(client6, vip6, 40000, 80, flagACK, 10), 7, 8)
		tx("dsr/v6/two-vlans", in, dsrFrame(in, beMAC(110)))
	}

	// IPIP.
	{
		vip := addr("192.0.2.11")
		ip := tcpPacket(client4, vip, 40001, 80, flagSYN, 20)
		e := outer(ModeIPIP, "10.1.0.11", 0, tcpHash(client4, vip, 40001, 80))
		tx("ipip/4in4/syn", frameOf(ip), e.encapFrame(beMAC(11), nil, ip))
		tx("ipip/4in4/one-vlan", frameOf(ip, 42), e.encapFrame(beMAC(11), []uint16{42}, ip))
		tx("ipip/4in4/two-vlans", frameOf(ip, 42, 43), e.encapFrame(beMAC(11), []uint16{42, 43}, ip))

		// Without DF, the outer header has no DF and numbers its
		// packets (from 1 on a new forwarder); TOS and ECN are copied.
		nodf := v4{tos: 0x2b, id: 777, proto: ipProtoTCP, src: client4, dst: vip}.build(tcpSeg(client4, vip, 40002, 80, flagACK, payloadOf(3)))
		e = outer(ModeIPIP, "10.1.0.11", 0, tcpHash(client4, vip, 40002, 80))
		e.id = 1
		tx("ipip/4in4/no-df-tos", frameOf(nodf), e.encapFrame(beMAC(11), nil, nodf))
		// Ethernet padding after a short IPv4 packet is not carried.
		short := tcpPacket(client4, vip, 40003, 80, flagACK, 0) // 40 bytes: frame of 54, padded to 60
		e = outer(ModeIPIP, "10.1.0.11", 0, tcpHash(client4, vip, 40003, 80))
		tx("ipip/4in4/padding", cat(frameOf(short), []byte{0, 0, 0, 0, 0, 0}), e.encapFrame(beMAC(11), nil, short))

		vip = addr("192.0.2.12")
		ip = tcpPacket(client4, vip, 40001, 80, flagSYN, 20)
		e = outer(ModeIPIP, "fd00:1::12", 0, tcpHash(client4, vip, 40001, 80))
		tx("ipip/4in6", frameOf(ip), e.encapFrame(beMAC(12), nil, ip))
		tx("ipip/4in6/two-vlans", frameOf(ip, 5, 6), e.encapFrame(beMAC(12), []uint16{5, 6}, ip))

		vip6 := addr("2001:db8::11")
		ip = v6{tc: 0xb8, flow: 0x12345, next: ipProtoTCP, src: client6, dst: vip6}.build(tcpSeg(client6, vip6, 50000, 80, flagSYN, payloadOf(9)))
		e = outer(ModeIPIP, "fd00:1::11", 0, tcpHash(client6, vip6, 50000, 80))
		tx("ipip/6in6/traffic-class", frameOf(ip), e.encapFrame(beMAC(111), nil, ip))

		vip6 = addr("2001:db8::12")
		ip = udpPacket(client6, vip6, 50000, 443, 100)
		e = outer(ModeIPIP, "10.1.0.112", 0, flowHash(client6, vip6, 50000, 443, ipProtoUDP))
		tx("ipip/6in4", frameOf(ip), e.encapFrame(beMAC(112), nil, ip))
		tx("ipip/6in4/one-vlan", frameOf(ip, 9), e.encapFrame(beMAC(112), []uint16{9}, ip))
	}

	// GUE.
	{
		vip := addr("192.0.2.13")
		ip := udpPacket(client4, vip, 53000, 53, 33)
		e := outer(ModeGUE, "10.1.0.13", DefaultGUEPort, flowHash(client4, vip, 53000, 53, ipProtoUDP))
		tx("gue/4in4", frameOf(ip), e.encapFrame(beMAC(13), nil, ip))
		tx("gue/4in4/two-vlans", frameOf(ip, 1, 4094), e.encapFrame(beMAC(13), []uint16{1, 4094}, ip))

		vip = addr("192.0.2.14")
		ip = tcpPacket(client4, vip, 40010, 443, flagSYN, 0)
		e = outer(ModeGUE, "fd00:1::14", 6080, tcpHash(client4, vip, 40010, 443))
		tx("gue/4in6/udp-checksum", frameOf(ip), e.encapFrame(beMAC(14), nil, ip))
		ip = tcpPacket(client4, vip, 40011, 443, flagACK, 1001) // odd length: checksum pads
		e = outer(ModeGUE, "fd00:1::14", 6080, tcpHash(client4, vip, 40011, 443))
		tx("gue/4in6/odd-length/two-vlans", frameOf(ip, 10, 20), e.encapFrame(beMAC(14), []uint16{10, 20}, ip))

		vip6 := addr("2001:db8::13")
		ip = tcpPacket(client6, vip6, 50001, 80, flagSYN, 64)
		e = outer(ModeGUE, "fd00:1::13", DefaultGUEPort, tcpHash(client6, vip6, 50001, 80))
		tx("gue/6in6", frameOf(ip), e.encapFrame(beMAC(113), nil, ip))
		tx("gue/6in6/one-vlan", frameOf(ip, 3), e.encapFrame(beMAC(113), []uint16{3}, ip))

		vip6 = addr("2001:db8::14")
		ip = udpPacket(client6, vip6, 50002, 4500, 200)
		e = outer(ModeGUE, "10.1.0.114", DefaultGUEPort, flowHash(client6, vip6, 50002, 4500, ipProtoUDP))
		tx("gue/6in4", frameOf(ip), e.encapFrame(beMAC(114), nil, ip))
	}

	// Port matching: an exact port beats the all-ports VIP of the address.
	{
		vip := addr("192.0.2.30")
		ip := tcpPacket(client4, vip, 40000, 8443, flagSYN, 0)
		e := outer(ModeIPIP, "10.1.0.30", 0, tcpHash(client4, vip, 40000, 8443))
		tx("ports/all-ports-vip", frameOf(ip), e.encapFrame(beMAC(30), nil, ip))
		in := frameOf(tcpPacket(client4, vip, 40000, 22, flagSYN, 0))
		tx("ports/exact-port-wins", in, dsrFrame(in, beMAC(31)))
	}

	// Fragments carry no ports beyond the first, so every fragment of a
	// datagram, the first included, is keyed and placed without ports, on
	// the VIP that owns the address's fragments.
	{
		vip := addr("192.0.2.40")
		first := v4{id: 0x4242, flags: ipMF, proto: ipProtoUDP, src: client4, dst: vip}.build(udpDgram(client4, vip, 5000, 123, payloadOf(1100))[:1000])
		rest := v4{id: 0x4242, flags: 1000 / 8, proto: ipProtoUDP, src: client4, dst: vip}.build(payloadOf(108))
		e := outer(ModeIPIP, "10.1.0.40", 0, flowHash(client4, vip, 0, 0, ipProtoUDP))
		e.id = 1 // fragments have no DF
		tx("fragments/v4/first/lowest-port-vip", frameOf(first), e.encapFrame(beMAC(40), nil, first))
		tx("fragments/v4/non-first/lowest-port-vip", frameOf(rest), e.encapFrame(beMAC(40), nil, rest))

		vip = addr("192.0.2.41")
		first = v4{id: 7, flags: ipMF, proto: ipProtoUDP, src: client4, dst: vip}.build(udpDgram(client4, vip, 5000, 53, payloadOf(1000))[:1000])
		e = outer(ModeIPIP, "10.1.0.43", 0, flowHash(client4, vip, 0, 0, ipProtoUDP))
		e.id = 1
		tx("fragments/v4/first/all-ports-vip", frameOf(first), e.encapFrame(beMAC(43), nil, first))

		vip6 := addr("2001:db8::40")
		dg := udpDgram(client6, vip6, 5000, 5353, payloadOf(2000))
		first = v6{next: ipProtoFrag, src: client6, dst: vip6}.build(cat(fragHdr6(ipProtoUDP, 0, true, 99), dg[:1232]))
		rest = v6{next: ipProtoFrag, src: client6, dst: vip6}.build(cat(fragHdr6(ipProtoUDP, 1232/8, false, 99), dg[1232:]))
		e = outer(ModeGUE, "fd00:1::40", DefaultGUEPort, flowHash(client6, vip6, 0, 0, ipProtoUDP))
		tx("fragments/v6/first/lowest-port-vip", frameOf(first), e.encapFrame(beMAC(140), nil, first))
		tx("fragments/v6/non-first/lowest-port-vip", frameOf(rest), e.encapFrame(beMAC(140), nil, rest))

		// TCP fragments to an address with only UDP VIPs.
		tcpFrag := v4{id: 1, flags: 100, proto: ipProtoTCP, src: client4, dst: addr("192.0.2.40")}.build(payloadOf(64))
		drop("fragments/v4/no-vip-for-protocol", frameOf(tcpFrag), DropUnsupported)
	}

	// ICMP errors about a VIP-to-client packet go to the flow's backend,
	// carried like any packet of the flow.
	{
		vip := addr("192.0.2.11")
		ip := icmpTooBigFrom(router4, reversed(client4, vip, 40001, 80, ipProtoTCP), 1400)
		e := outer(ModeIPIP, "10.1.0.11", 0, tcpHash(client4, vip, 40001, 80))
		e.id = 1 // the router did not set DF
		tx("icmp-error/v4/frag-needed/ipip", frameOf(ip), e.encapFrame(beMAC(11), nil, ip))
		vip = addr("192.0.2.10")
		in := frameOf(icmpTooBigFrom(router4, reversed(client4, vip, 40000, 80, ipProtoTCP), 1400), 100)
		tx("icmp-error/v4/frag-needed/dsr/one-vlan", in, dsrFrame(in, beMAC(10)))
		vip6 := addr("2001:db8::13")
		ip = icmpTooBigFrom(router6, reversed(client6, vip6, 50001, 80, ipProtoTCP), 1280)
		e = outer(ModeGUE, "fd00:1::13", DefaultGUEPort, tcpHash(client6, vip6, 50001, 80))
		tx("icmp-error/v6/packet-too-big/gue", frameOf(ip), e.encapFrame(beMAC(113), nil, ip))
		vip6 = addr("2001:db8::12")
		ip = icmpTooBigFrom(router6, reversed(client6, vip6, 50000, 443, ipProtoUDP), 1280)
		e = outer(ModeIPIP, "10.1.0.112", 0, flowHash(client6, vip6, 50000, 443, ipProtoUDP))
		tx("icmp-error/v6/packet-too-big/6in4", frameOf(ip), e.encapFrame(beMAC(112), nil, ip))

		// The quoted packet must come from the VIP the error is sent to.
		q := reversed(client4, addr("192.0.2.99"), 40001, 80, ipProtoTCP)
		bad := v4{proto: ipProtoICMP, src: router4, dst: addr("192.0.2.11")}.build(icmp4(3, 4, 1400, q[:28]))
		drop("icmp-error/v4/quote-not-from-vip", frameOf(bad), DropBadICMP)
		// An ICMP echo to a VIP is not forwarded.
		echo := v4{proto: ipProtoICMP, src: client4, dst: addr("192.0.2.11")}.build(icmp4(8, 0, 0x00010001, payloadOf(56)))
		drop("icmp/v4/echo-to-vip", frameOf(echo), DropUnsupported)
	}

	// Too big once encapsulated.
	{
		vip := addr("192.0.2.20") // IPIP, MTU 576, drop policy
		fits := tcpPacket(client4, vip, 40000, 80, flagACK, 576-20-40)
		e := outer(ModeIPIP, "10.1.0.20", 0, tcpHash(client4, vip, 40000, 80))
		tx("too-big/drop-policy/fits-exactly", frameOf(fits), e.encapFrame(beMAC(20), nil, fits))
		drop("too-big/drop-policy/one-byte-over", frameOf(tcpPacket(client4, vip, 40000, 80, flagACK, 576-20-40+1)), DropTooBig)

		vip = addr("192.0.2.21") // GUE over IPv4, MTU 1000, ICMP policy
		fits = tcpPacket(client4, vip, 40000, 80, flagACK, 1000-28-40)
		e = outer(ModeGUE, "10.1.0.21", DefaultGUEPort, tcpHash(client4, vip, 40000, 80))
		tx("too-big/icmp-policy/v4/fits-exactly", frameOf(fits), e.encapFrame(beMAC(21), nil, fits))
		big := tcpPacket(client4, vip, 40000, 80, flagACK, 1000-28-40+1)
		add(golden{name: "too-big/icmp-policy/v4/frag-needed", in: frameOf(big), want: VerdictReply, out: tooBigReply(nil, big, 1000-28)})
		add(golden{name: "too-big/icmp-policy/v4/frag-needed/two-vlans", in: frameOf(big, 11, 12), want: VerdictReply, out: tooBigReply([]uint16{11, 12}, big, 1000-28)})
		add(golden{name: "too-big/icmp-policy/v4/minimum-headroom", in: frameOf(big), start: 48, want: VerdictReply, out: tooBigReply(nil, big, 1000-28)})
		// Without DF the client cannot be told; an ICMP error is never
		// answered with another.
		nodf := v4{proto: ipProtoTCP, src: client4, dst: vip}.build(tcpSeg(client4, vip, 40000, 80, flagACK, payloadOf(1000)))
		drop("too-big/icmp-policy/v4/no-df", frameOf(nodf), DropTooBig)
		icmpBig := v4{proto: ipProtoICMP, flags: ipDF, src: router4, dst: vip}.build(icmp4(3, 4, 1300, reversed(client4, vip, 40000, 80, ipProtoTCP)[:1000]))
		drop("too-big/icmp-policy/v4/icmp-error-not-answered", frameOf(icmpBig), DropTooBig)

		vip = addr("192.0.2.22") // IPv4 in IPv6, MTU 1000, ICMP policy
		big = tcpPacket(client4, vip, 40000, 80, flagACK, 1000-40-40+1)
		add(golden{name: "too-big/icmp-policy/4in6/frag-needed", in: frameOf(big), want: VerdictReply, out: tooBigReply(nil, big, 1000-40)})

		vip6 := addr("2001:db8::21") // GUE over IPv6, MTU 1400, ICMP policy
		fits = tcpPacket(client6, vip6, 50000, 80, flagACK, 1400-48-60)
		e = outer(ModeGUE, "fd00:1::21", DefaultGUEPort, tcpHash(client6, vip6, 50000, 80))
		tx("too-big/icmp-policy/v6/fits-exactly", frameOf(fits), e.encapFrame(beMAC(121), nil, fits))
		big = tcpPacket(client6, vip6, 50000, 80, flagACK, 1400-48-60+1)
		add(golden{name: "too-big/icmp-policy/v6/packet-too-big", in: frameOf(big), want: VerdictReply, out: tooBigReply(nil, big, 1400-48)})
		add(golden{name: "too-big/icmp-policy/v6/packet-too-big/one-vlan", in: frameOf(big, 77), want: VerdictReply, out: tooBigReply([]uint16{77}, big, 1400-48)})
		add(golden{name: "too-big/icmp-policy/v6/no-headroom", in: frameOf(big), start: 47, want: VerdictDrop, drop: DropNoHeadroom})
	}

	// Headroom for the outer headers.
	{
		vip := addr("192.0.2.11")
		ip := tcpPacket(client4, vip, 40001, 80, flagSYN, 20)
		e := outer(ModeIPIP, "10.1.0.11", 0, tcpHash(client4, vip, 40001, 80))
		add(golden{name: "headroom/ipip4/exact", in: frameOf(ip), start: 20, want: VerdictTX, out: e.encapFrame(beMAC(11), nil, ip)})
		add(golden{name: "headroom/ipip4/short", in: frameOf(ip), start: 19, want: VerdictDrop, drop: DropNoHeadroom})
		vip = addr("192.0.2.14")
		ip = tcpPacket(client4, vip, 40010, 443, flagSYN, 0)
		e = outer(ModeGUE, "fd00:1::14", 6080, tcpHash(client4, vip, 40010, 443))
		add(golden{name: "headroom/gue6/exact", in: frameOf(ip, 1, 2), start: 48, want: VerdictTX, out: e.encapFrame(beMAC(14), []uint16{1, 2}, ip)})
		add(golden{name: "headroom/gue6/short", in: frameOf(ip, 1, 2), start: 47, want: VerdictDrop, drop: DropNoHeadroom})
		in := frameOf(tcpPacket(client4, addr("192.0.2.10"), 40000, 80, flagSYN, 5))
		add(golden{name: "headroom/dsr-needs-none", in: in, start: 1, want: VerdictTX, out: dsrFrame(in, beMAC(10))})
	}

	// Frames the parser refuses, one per reason.
	{
		good := tcpPacket(client4, addr("192.0.2.10"), 40000, 80, flagSYN, 5)
		fix := func(ip []byte) []byte { // recompute the IPv4 header checksum after an edit
			binary.BigEndian.PutUint16(ip[10:], 0)
			binary.BigEndian.PutUint16(ip[10:], ^slowSum(ip[:int(ip[0]&0xf)*4]))
			return ip
		}
		drop("parse/truncated/runt", make([]byte, 13), DropTruncated)
		drop("parse/truncated/ip-length", frameOf(good)[:14+len(good)-1], DropTruncated)
		drop("parse/truncated/tcp-header", frameOf(fix(v4{flags: ipDF, proto: ipProtoTCP, src: client4, dst: addr("192.0.2.10")}.build(make([]byte, 19)))), DropTruncated)
		drop("parse/truncated/vlan-tag", ethHdr(localMAC, routerMAC, nil, etVLAN), DropTruncated)
		drop("parse/not-ip/arp", cat(ethHdr(packet.MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, routerMAC, nil, etARP), make([]byte, 46)), DropNotIP)
		drop("parse/too-many-vlans", frameOf(good, 1, 2, 3), DropTooManyVLANs)
		drop("parse/bad-version", cat(ethHdr(localMAC, routerMAC, nil, etIPv4), tcpPacket(client6, addr("2001:db8::10"), 1, 80, flagSYN, 0)), DropBadVersion)
		ip := bytes.Clone(good)
		ip[0] = 0x44
		drop("parse/bad-ihl", frameOf(fix(ip)), DropBadIHL)
		ip = bytes.Clone(good)
		binary.BigEndian.PutUint16(ip[2:], 19)
		drop("parse/bad-length/total-below-header", frameOf(fix(ip)), DropBadLength)
		ip = bytes.Clone(good)
		ip[20+12] = 4 << 4 // TCP data offset of 16 bytes
		drop("parse/bad-length/tcp-offset", frameOf(ip), DropBadLength)
		drop("parse/ttl-expired/v4", frameOf(v4{ttl0: true, proto: ipProtoTCP, src: client4, dst: addr("192.0.2.10")}.build(tcpSeg(client4, addr("192.0.2.10"), 1, 80, flagSYN, nil))), DropTTLExpired)
		drop("parse/ttl-expired/v6", frameOf(v6{hop0: true, next: ipProtoTCP, src: client6, dst: addr("2001:db8::10")}.build(tcpSeg(client6, addr("2001:db8::10"), 1, 80, flagSYN, nil))), DropTTLExpired)
		var chain []byte
		for i := 0; i < 9; i++ { // one more destination-options header than weir walks
			chain = append(chain, ipProtoDstOpt, 0, 1, 4, 0, 0, 0, 0)
		}
		chain[len(chain)-8] = ipProtoTCP
		chain = append(chain, tcpSeg(client6, addr("2001:db8::10"), 1, 80, flagSYN, nil)...)
		drop("parse/bad-ext-header/chain-too-long", frameOf(v6{next: ipProtoDstOpt, src: client6, dst: addr("2001:db8::10")}.build(chain)), DropBadExtHeader)
	}

	// Forwarding decisions that drop.
	{
		drop("vip/unknown-address", frameOf(tcpPacket(client4, addr("198.18.0.1"), 40000, 80, flagSYN, 0)), DropUnknownVIP)
		drop("vip/unknown-address/v6", frameOf(tcpPacket(client6, addr("2001:db8::99"), 40000, 80, flagSYN, 0)), DropUnknownVIP)
		drop("vip/other-port", frameOf(tcpPacket(client4, addr("192.0.2.10"), 40000, 81, flagSYN, 0)), DropUnsupported)
		drop("vip/other-protocol", frameOf(udpPacket(client4, addr("192.0.2.10"), 40000, 80, 10)), DropUnsupported)
		drop("vip/no-backend", frameOf(tcpPacket(client4, addr("192.0.2.50"), 40000, 80, flagSYN, 0)), DropNoBackend)
		drop("icmp/policy-drop", frameOf(icmpTooBigFrom(router4, reversed(client4, addr("192.0.2.23"), 40000, 80, ipProtoTCP), 1400)), DropICMPError)
	}
	return cs
}

func TestForwardGolden(t *testing.T) {
	s := buildSnapshot(t, goldenModel(), newRegistry(t), 1)
	seen := make(map[DropReason]bool)
	for _, g := range goldenCases() {
		t.Run(g.name, func(t *testing.T) {
			f := newForwarder(t, s, oneShotConfig())
			start := g.start
			if start == 0 {
				start = defaultStart
			}
			v, out, err := forwardChecked(f, g.in, start)
			if err != nil {
				t.Fatal(err)
			}
			c := f.Counters()
			if v != g.want {
				t.Fatalf("verdict %v, want %v (drops %v)", v, g.want, c.Drops)
			}
			if c.RXPackets != 1 || c.RXBytes != uint64(len(g.in)) {
				t.Errorf("rx %d packets %d bytes, want 1 and %d", c.RXPackets, c.RXBytes, len(g.in))
			}
			switch v {
			case VerdictDrop:
				seen[g.drop] = true
				if c.Drops[g.drop] != 1 || c.Dropped() != 1 {
					t.Errorf("drop counters %v, want one %v", c.Drops, g.drop)
				}
				return
			case VerdictTX:
				if c.TXPackets != 1 || c.TXBytes != uint64(len(out)) || c.Dropped() != 0 || c.Replies != 0 {
					t.Errorf("counters %+v, want one packet of %d bytes sent", *c, len(out))
				}
			case VerdictReply:
				if c.Replies != 1 || c.TXPackets != 0 || c.Dropped() != 0 {
					t.Errorf("counters %+v, want one reply", *c)
				}
			}
			if !bytes.Equal(out, g.out) {
				t.Fatalf("output differs\n got %x\nwant %x\n%s", out, g.out, firstDiff(out, g.out))
			}
			if _, err := checkOutput(g.in, out, v); err != nil {
				t.Fatal(err)
			}
		})
	}
	for _, r := range DropReasons() {
		if !seen[r] {
			t.Errorf("no golden case produces drop reason %v", r)
		}
	}
}

func firstDiff(a, b []byte) string {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return fmt.Sprintf("first difference at byte %d: %#02x, want %#02x (lengths %d, %d)", i, a[i], b[i], len(a), len(b))
		}
	}
	return fmt.Sprintf("lengths %d, want %d", len(a), len(b))
}

// TestForwardCountersPerReal checks the per-real counters and that each real
// is counted at its slot.
func TestForwardCountersPerReal(t *testing.T) {
	s := buildSnapshot(t, goldenModel(), newRegistry(t), 1)
	f := newForwarder(t, s, testFlowConfig())
	in := frameOf(tcpPacket(client4, addr("192.0.2.11"), 40001, 80, flagSYN, 20))
	var outLen int
	for range 3 {
		_, out, err := forwardChecked(f, in, defaultStart)
		if err != nil {
			t.Fatal(err)
		}
		outLen = len(out)
	}
	var total RealCounters
	for slot, rc := range f.RealCounters() {
		if rc.Packets == 0 {
			continue
		}
		total.Packets += rc.Packets
		total.Bytes += rc.Bytes
		if r := s.reals[slot]; r.name != "10.1.0.11" {
			t.Errorf("packets counted for real %q at slot %d", r.name, slot)
		}
	}
	if total.Packets != 3 || total.Bytes != uint64(3*outLen) {
		t.Errorf("per-real totals %+v, want 3 packets of %d bytes", total, outLen)
	}
	c := f.Counters()
	if c.NewFlows != 1 || c.FlowHits != 2 {
		t.Errorf("new flows %d, hits %d; want 1 and 2", c.NewFlows, c.FlowHits)
	}
}

// TestSourcePrefix checks that a VIP with a source prefix sends each flow
// from an address of the prefix that depends on the flow, the same for
// every packet of it.
func TestSourcePrefix(t *testing.T) {
	for _, tc := range []struct {
		name    string
		vip     string
		backend string
		prefix  string
		client  netip.Addr
		mode    Mode
	}{
		{"ipip4", "192.0.2.60", "10.1.0.60", "100.64.0.0/20", client4, ModeIPIP},
		{"gue6", "2001:db8::60", "fd00:1::60", "fd00:ff::/64", client6, ModeGUE},
		{"gue4in6", "192.0.2.61", "fd00:1::61", "fd00:fe::/96", client4, ModeGUE},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vp := vip(tc.vip, ipProtoTCP, 80, tc.mode, be(tc.backend, 1))
			vp.SourcePrefix = netip.MustParsePrefix(tc.prefix)
			m := Model{LocalMAC: localMAC, VIPs: []VIP{vp}} // no local addresses: the prefix is enough
			s := buildSnapshot(t, m, newRegistry(t), 1)
			f := newForwarder(t, s, testFlowConfig())
			srcs := make(map[netip.Addr]bool)
			for port := uint16(1000); port < 1200; port++ {
				in := frameOf(tcpPacket(tc.client, addr(tc.vip), port, 80, flagSYN, 0))
				var first netip.Addr
				for range 2 {
					v, out, err := forwardChecked(f, in, defaultStart)
					if err != nil || v != VerdictTX {
						t.Fatalf("verdict %v, %v", v, err)
					}
					d, err := checkOutput(in, out, v)
					if err != nil {
						t.Fatal(err)
					}
					src := outerSource(out)
					if !vp.SourcePrefix.Contains(src) {
						t.Fatalf("outer source %s outside %s", src, vp.SourcePrefix)
					}
					if d.outer != addr(tc.backend) {
						t.Fatalf("outer destination %s, want %s", d.outer, tc.backend)
					}
					if first.IsValid() && src != first {
						t.Fatalf("flow's outer source changed from %s to %s", first, src)
					}
					first = src
				}
				srcs[first] = true
			}
			if len(srcs) < 100 {
				t.Errorf("200 flows used only %d outer sources", len(srcs))
			}
		})
	}
}

// outerSource returns the source address of the outer IP header of an
// untagged frame.
func outerSource(frame []byte) netip.Addr {
	if binary.BigEndian.Uint16(frame[12:]) == etIPv4 {
		return netip.AddrFrom4([4]byte(frame[14+12 : 14+16]))
	}
	return netip.AddrFrom16([16]byte(frame[14+8 : 14+24]))
}

// TestForwardRateLimitedFlowsStillForwarded checks that a new flow the flow
// table refuses to remember (new-flow rate limit) is forwarded anyway, to
// the Maglev choice, and counted.
func TestForwardRateLimitedFlowsStillForwarded(t *testing.T) {
	m := Model{LocalMAC: localMAC, VIPs: []VIP{multiVIP("192.0.2.100", ModeDSR, 8)}}
	s := buildSnapshot(t, m, newRegistry(t), 1)
	c := testFlowConfig()
	c.NewFlowsPerSecond, c.NewFlowBurst = 1, 1
	f := newForwarder(t, s, c)
	for port := uint16(1); port <= 10; port++ {
		in := frameOf(tcpPacket(client4, addr("192.0.2.100"), port, 80, flagSYN, 0))
		v, out, err := forwardChecked(f, in, defaultStart)
		if err != nil || v != VerdictTX {
			t.Fatalf("verdict %v, %v", v, err)
		}
		if want := maglevChoice(t, s, in); packet.MAC(out[0:6]) != want {
			t.Fatalf("flow %d sent to %v, want the Maglev choice %v", port, packet.MAC(out[0:6]), want)
		}
	}
	if got := f.Counters(); got.NewFlows != 10 || got.NotRemembered != 9 || got.TXPackets != 10 {
		t.Errorf("counters %+v, want 10 new flows, 9 not remembered, 10 sent", *got)
	}
}

// multiVIP is a TCP port-80 VIP with n active backends 10.2.0.1..n (or
// fd00:2::1..n for an IPv6 VIP) whose MACs are beMAC(1..n).
func multiVIP(a string, mode Mode, n int) VIP { return multiVIPOn(a, ipProtoTCP, 80, mode, n) }

// multiVIPOn is multiVIP for any protocol and port.
func multiVIPOn(a string, proto uint8, port uint16, mode Mode, n int) VIP {
	v := vip(a, proto, port, mode)
	for i := 1; i <= n; i++ {
		ba := fmt.Sprintf("10.2.0.%d", i)
		if v.Addr.Is6() {
			ba = fmt.Sprintf("fd00:2::%d", i)
		}
		v.Backends = append(v.Backends, be(ba, i))
	}
	return v
}

// maglevChoice is the backend MAC a forwarder with an empty flow table picks
// for in under s.
func maglevChoice(tb testing.TB, s *Snapshot, in []byte) packet.MAC {
	tb.Helper()
	f := newForwarder(tb, s, oneShotConfig())
	v, out, err := forwardChecked(f, in, defaultStart)
	if err != nil || v != VerdictTX {
		tb.Fatalf("fresh forwarder: verdict %v, %v", v, err)
	}
	return packet.MAC(out[0:6])
}

// shuffled returns 0..n-1 in a fixed pseudo-random order.
func shuffled(n int, seed uint64) []int {
	p := make([]int, n)
	for i := range p {
		p[i] = i
	}
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	r.Shuffle(n, func(i, j int) { p[i], p[j] = p[j], p[i] })
	return p
}
