package appliance

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

// allocModel is the golden model plus one 8-backend VIP per mode and family,
// so that new flows go through a real Maglev choice.
func allocModel() Model {
	m := goldenModel()
	m.VIPs = append(m.VIPs,
		multiVIP("192.0.2.100", ModeDSR, 8), multiVIP("192.0.2.101", ModeIPIP, 8), multiVIP("192.0.2.102", ModeGUE, 8),
		multiVIP("2001:db8::100", ModeDSR, 8), multiVIP("2001:db8::101", ModeIPIP, 8), multiVIP("2001:db8::102", ModeGUE, 8),
	)
	prefixed := vip("192.0.2.60", ipProtoTCP, 80, ModeIPIP, be("10.1.0.60", 60))
	prefixed.SourcePrefix = netip.MustParsePrefix("100.64.0.0/16")
	m.VIPs = append(m.VIPs, prefixed)
	return m
}

// TestNoAllocs proves that Forward allocates nothing on any path: every mode
// and family, new flows (the source port changes on every run) and hot ones,
// a full flow table that evicts, ICMP errors, fragments, too-big replies and
// each kind of drop.
func TestNoAllocs(t *testing.T) {
	s := buildSnapshot(t, allocModel(), newRegistry(t), 1)
	const l4v4, l4v6 = 14 + 20, 14 + 40 // offset of the TCP/UDP source port in an untagged frame
	type allocCase struct {
		name     string
		in       []byte
		start    int
		portOff  int // if non-zero, the source port at this offset changes every run: a new flow each time
		want     Verdict
		smallTab bool // a flow table of 64 entries: full after a few runs, then every insert evicts
	}
	tcp4 := func(dst string, port uint16) []byte {
		return frameOf(tcpPacket(client4, addr(dst), 1, port, flagSYN, 20))
	}
	tcp6 := func(dst string, port uint16) []byte {
		return frameOf(tcpPacket(client6, addr(dst), 1, port, flagSYN, 20))
	}
	cases := []allocCase{
		{name: "dsr/v4/new", in: tcp4("192.0.2.100", 80), portOff: l4v4, want: VerdictTX},
		{name: "dsr/v4/hot", in: tcp4("192.0.2.100", 80), want: VerdictTX},
		{name: "dsr/v6/new", in: tcp6("2001:db8::100", 80), portOff: l4v6, want: VerdictTX},
		{name: "dsr/v6/hot", in: tcp6("2001:db8::100", 80), want: VerdictTX},
		{name: "dsr/v4/new/evicting", in: tcp4("192.0.2.100", 80), portOff: l4v4, want: VerdictTX, smallTab: true},
		{name: "ipip/4in4/new", in: tcp4("192.0.2.101", 80), portOff: l4v4, want: VerdictTX},
		{name: "ipip/4in4/hot", in: tcp4("192.0.2.101", 80), want: VerdictTX},
		{name: "ipip/4in4/hot/two-vlans", in: frameOf(tcpPacket(client4, addr("192.0.2.101"), 1, 80, flagSYN, 20), 1, 2), want: VerdictTX},
		{name: "ipip/4in4/no-df", in: frameOf(v4{proto: ipProtoTCP, src: client4, dst: addr("192.0.2.101")}.build(tcpSeg(client4, addr("192.0.2.101"), 1, 80, flagACK, nil))), want: VerdictTX},
		{name: "ipip/6in6/new", in: tcp6("2001:db8::101", 80), portOff: l4v6, want: VerdictTX},
		{name: "ipip/6in6/hot", in: tcp6("2001:db8::101", 80), want: VerdictTX},
		{name: "ipip/4in6/hot", in: tcp4("192.0.2.12", 80), want: VerdictTX},
		{name: "ipip/6in4/hot", in: frameOf(udpPacket(client6, addr("2001:db8::12"), 1, 443, 20)), want: VerdictTX},
		{name: "gue/4in4/new", in: tcp4("192.0.2.102", 80), portOff: l4v4, want: VerdictTX},
		{name: "gue/4in4/hot", in: tcp4("192.0.2.102", 80), want: VerdictTX},
		{name: "gue/6in6/new", in: tcp6("2001:db8::102", 80), portOff: l4v6, want: VerdictTX},
		{name: "gue/6in6/hot", in: tcp6("2001:db8::102", 80), want: VerdictTX},
		{name: "gue/4in6/hot", in: tcp4("192.0.2.14", 443), want: VerdictTX},
		{name: "source-prefix/hot", in: tcp4("192.0.2.60", 80), want: VerdictTX},
		{name: "icmp-error/v4", in: frameOf(icmpTooBigFrom(router4, reversed(client4, addr("192.0.2.101"), 1, 80, ipProtoTCP), 1400)), want: VerdictTX},
		{name: "icmp-error/v6", in: frameOf(icmpTooBigFrom(router6, reversed(client6, addr("2001:db8::102"), 1, 80, ipProtoTCP), 1280)), want: VerdictTX},
		{name: "fragment/v4", in: frameOf(v4{flags: 100, proto: ipProtoUDP, src: client4, dst: addr("192.0.2.40")}.build(payloadOf(64))), want: VerdictTX},
		{name: "reply/v4", in: frameOf(tcpPacket(client4, addr("192.0.2.21"), 1, 80, flagACK, 1400)), want: VerdictReply},
		{name: "reply/v6", in: frameOf(tcpPacket(client6, addr("2001:db8::21"), 1, 80, flagACK, 1400)), want: VerdictReply},
		{name: "drop/truncated", in: make([]byte, 20), want: VerdictDrop},
		{name: "drop/unknown-vip", in: tcp4("198.18.0.1", 80), want: VerdictDrop},
		{name: "drop/unsupported", in: tcp4("192.0.2.100", 81), want: VerdictDrop},
		{name: "drop/no-backend", in: tcp4("192.0.2.50", 80), want: VerdictDrop},
		{name: "drop/too-big", in: frameOf(tcpPacket(client4, addr("192.0.2.20"), 1, 80, flagACK, 1000)), want: VerdictDrop},
		{name: "drop/no-headroom", in: tcp4("192.0.2.101", 80), start: 10, want: VerdictDrop},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := testFlowConfig()
			if c.smallTab {
				cfg = oneShotConfig()
			}
			f := newForwarder(t, s, cfg)
			start := c.start
			if start == 0 {
				start = defaultStart
			}
			buf := make([]byte, start+len(c.in))
			port := uint16(1)
			run := func() Verdict {
				copy(buf[start:], c.in)
				if c.portOff != 0 {
					port++
					binary.BigEndian.PutUint16(buf[start+c.portOff:], port)
				}
				v, _, _ := f.Forward(buf, start, len(c.in))
				return v
			}
			if v := run(); v != c.want {
				t.Fatalf("verdict %v, want %v (drops %v)", v, c.want, f.Counters().Drops)
			}
			newFlows := f.Counters().NewFlows
			if n := testing.AllocsPerRun(500, func() { run() }); n != 0 {
				t.Errorf("%v allocations per packet", n)
			}
			if got := f.Counters().NewFlows - newFlows; c.portOff != 0 && got < 500 {
				t.Errorf("only %d new flows in 500+ runs", got)
			}
			if c.smallTab && f.Flows().Stats().Evictions == 0 {
				t.Error("the small flow table never evicted")
			}
		})
	}
}
