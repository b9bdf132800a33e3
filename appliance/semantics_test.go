package appliance

// Flow semantics: which backend a flow reaches as snapshots change, across
// TCP flags, ICMP errors and fragments, and across appliances.

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/weirlb/weir/packet"
)

// A semantics case is a VIP of one mode and family; backends are told apart by
// the destination MAC of the forwarded frame (beMAC(i) for backend i).
type semCase struct {
	name   string
	vip    string
	mode   Mode
	client func(i int) netip.Addr
}

func semCases() []semCase {
	c4 := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{100, 64, byte(i >> 8), byte(i)}) }
	c6 := func(i int) netip.Addr {
		return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0xc, 14: byte(i >> 8), 15: byte(i)})
	}
	return []semCase{
		{"dsr4", "192.0.2.100", ModeDSR, c4},
		{"ipip4", "192.0.2.100", ModeIPIP, c4},
		{"gue4", "192.0.2.100", ModeGUE, c4},
		{"dsr6", "2001:db8::100", ModeDSR, c6},
		{"ipip6", "2001:db8::100", ModeIPIP, c6},
		{"gue6", "2001:db8::100", ModeGUE, c6},
	}
}

func semModel(vips ...VIP) Model {
	return Model{LocalMAC: localMAC, LocalAddr4: local4, LocalAddr6: local6, VIPs: vips}
}

// flowFrame is packet i of the test's flows: client c.client(i/64), source
// port 20000+i, TCP flags as given.
func (c semCase) flowFrame(i int, flags uint8) []byte {
	return frameOf(tcpPacket(c.client(i/64), addr(c.vip), uint16(20000+i), 80, flags, 10))
}

// send forwards in and returns the backend's MAC; it fails the test unless
// the frame is sent, obeys the memory contract and decodes.
func send(tb testing.TB, f *Forwarder, in []byte) packet.MAC {
	tb.Helper()
	v, out, err := forwardChecked(f, in, defaultStart)
	if err != nil {
		tb.Fatal(err)
	}
	if v != VerdictTX {
		tb.Fatalf("verdict %v, want tx (drops %v)", v, f.Counters().Drops)
	}
	if _, err := checkOutput(in, out, v); err != nil {
		tb.Fatal(err)
	}
	return packet.MAC(out[0:6])
}

func sendFlows(tb testing.TB, f *Forwarder, c semCase, n int, flags uint8) []packet.MAC {
	tb.Helper()
	got := make([]packet.MAC, n)
	for i := range got {
		got[i] = send(tb, f, c.flowFrame(i, flags))
	}
	return got
}

// withBackends returns v with its backends edited by fn (on a copy).
func withBackends(v VIP, fn func([]Backend) []Backend) VIP {
	v.Backends = fn(slices.Clone(v.Backends))
	return v
}

const semFlows = 2000

// TestFlowsStickAcrossSnapshots: a flow in the table keeps its backend when a
// new snapshot (same registry) reweights the backends and adds new ones,
// although Maglev alone would now send many flows elsewhere.
func TestFlowsStickAcrossSnapshots(t *testing.T) {
	for _, c := range semCases() {
		t.Run(c.name, func(t *testing.T) {
			reg := newRegistry(t)
			v1 := multiVIP(c.vip, c.mode, 4)
			s1 := buildSnapshot(t, semModel(v1), reg, 1)
			f := newForwarder(t, s1, testFlowConfig())
			before := sendFlows(t, f, c, semFlows, flagSYN)

			v2 := multiVIP(c.vip, c.mode, 8)
			v2.Backends[0].Weight, v2.Backends[3].Weight = 3, 2
			s2 := buildSnapshot(t, semModel(v2), reg, 2)
			f.Begin(s2, int64(time.Hour+time.Second))
			hits, newFlows := f.Counters().FlowHits, f.Counters().NewFlows
			after := sendFlows(t, f, c, semFlows, flagACK)
			for i := range after {
				if after[i] != before[i] {
					t.Fatalf("flow %d moved from %v to %v", i, before[i], after[i])
				}
			}
			if got := f.Counters().FlowHits - hits; got != semFlows {
				t.Errorf("%d flow hits, want %d", got, semFlows)
			}
			if got := f.Counters().NewFlows - newFlows; got != 0 {
				t.Errorf("%d new flows, want 0", got)
			}

			// The table is what kept them: Maglev alone moves many.
			fresh := sendFlows(t, newForwarder(t, s2, testFlowConfig()), c, semFlows, flagACK)
			moved := 0
			for i := range fresh {
				if fresh[i] != before[i] {
					moved++
				}
			}
			if moved < semFlows/4 {
				t.Errorf("the new Maglev table moves only %d of %d flows; the test proves little", moved, semFlows)
			}
			// New flows use the new backends.
			count := make(map[packet.MAC]int)
			for i := semFlows; i < 2*semFlows; i++ {
				count[send(t, f, c.flowFrame(i, flagSYN))]++
			}
			for i := 1; i <= 8; i++ {
				if count[beMAC(i)] == 0 {
					t.Errorf("backend %d got none of %d new flows: %v", i, semFlows, count)
				}
			}
		})
	}
}

// TestFlowsDraining: a draining backend (state draining, or weight 0) keeps
// its established flows and gets no new ones.
func TestFlowsDraining(t *testing.T) {
	drains := map[string]func(*Backend){
		"state":    func(b *Backend) { b.State = StateDraining },
		"weight-0": func(b *Backend) { b.Weight = 0 },
	}
	for _, c := range semCases() {
		for name, drain := range drains {
			t.Run(c.name+"/"+name, func(t *testing.T) {
				reg := newRegistry(t)
				v1 := multiVIP(c.vip, c.mode, 4)
				f := newForwarder(t, buildSnapshot(t, semModel(v1), reg, 1), testFlowConfig())
				before := sendFlows(t, f, c, semFlows, flagSYN)
				drained := beMAC(2)
				if n := countOf(before, drained); n < semFlows/8 {
					t.Fatalf("backend 2 has only %d of %d flows", n, semFlows)
				}

				v2 := withBackends(v1, func(bs []Backend) []Backend { drain(&bs[1]); return bs })
				f.Begin(buildSnapshot(t, semModel(v2), reg, 2), int64(time.Hour+time.Second))
				moved := f.Counters().FlowsMoved
				after := sendFlows(t, f, c, semFlows, flagACK)
				for i := range after {
					if after[i] != before[i] {
						t.Fatalf("flow %d moved from %v to %v", i, before[i], after[i])
					}
				}
				if f.Counters().FlowsMoved != moved {
					t.Errorf("flows moved while only draining")
				}
				for i := semFlows; i < 3*semFlows; i++ {
					if got := send(t, f, c.flowFrame(i, flagSYN)); got == drained {
						t.Fatalf("new flow %d sent to the draining backend", i)
					}
				}
			})
		}
	}
}

func countOf(ms []packet.MAC, m packet.MAC) int {
	n := 0
	for _, x := range ms {
		if x == m {
			n++
		}
	}
	return n
}

// TestFlowsMoveOffFailedBackends: the flows of a backend that failed, was
// removed, or lost its next hop move to the new Maglev choice (counted as
// moved); every other flow stays.
func TestFlowsMoveOffFailedBackends(t *testing.T) {
	changes := map[string]func([]Backend) []Backend{
		"failed":     func(bs []Backend) []Backend { bs[1].State = StateFailed; return bs },
		"removed":    func(bs []Backend) []Backend { return slices.Delete(bs, 1, 2) },
		"unresolved": func(bs []Backend) []Backend { bs[1].MAC = packet.MAC{}; return bs },
	}
	for _, c := range semCases() {
		for name, change := range changes {
			t.Run(c.name+"/"+name, func(t *testing.T) {
				reg := newRegistry(t)
				v1 := multiVIP(c.vip, c.mode, 4)
				f := newForwarder(t, buildSnapshot(t, semModel(v1), reg, 1), testFlowConfig())
				before := sendFlows(t, f, c, semFlows, flagSYN)
				gone := beMAC(2)
				lost := countOf(before, gone)
				if lost < semFlows/8 {
					t.Fatalf("backend 2 has only %d of %d flows", lost, semFlows)
				}

				s2 := buildSnapshot(t, semModel(withBackends(v1, change)), reg, 2)
				f.Begin(s2, int64(time.Hour+time.Second))
				fresh := sendFlows(t, newForwarder(t, s2, testFlowConfig()), c, semFlows, flagACK)
				moved0, hits0 := f.Counters().FlowsMoved, f.Counters().FlowHits
				after := sendFlows(t, f, c, semFlows, flagACK)
				for i := range after {
					switch {
					case before[i] == gone && after[i] != fresh[i]:
						t.Fatalf("flow %d of the lost backend went to %v, want the Maglev choice %v", i, after[i], fresh[i])
					case before[i] != gone && after[i] != before[i]:
						t.Fatalf("flow %d moved from %v to %v", i, before[i], after[i])
					}
				}
				if got := f.Counters().FlowsMoved - moved0; got != uint64(lost) {
					t.Errorf("%d flows counted as moved, want %d", got, lost)
				}
				if got := f.Counters().FlowHits - hits0; got != uint64(semFlows-lost) {
					t.Errorf("%d flow hits, want %d", got, semFlows-lost)
				}
				// The moved flows are remembered on their new backend.
				moved1 := f.Counters().FlowsMoved
				again := sendFlows(t, f, c, semFlows, flagACK|flagPSH)
				if !slices.Equal(again, after) || f.Counters().FlowsMoved != moved1 {
					t.Errorf("moved flows did not stay on their new backend")
				}
			})
		}
	}
}

// TestFlowsTCPFlagsDontMatter: SYN, mid-flow ACK, FIN and RST of one 5-tuple
// reach the same backend, whether the flow is in the table (one forwarder
// sees the whole flow) or not (a forwarder that sees only that kind of
// packet, as after a restart or on a second appliance).
func TestFlowsTCPFlagsDontMatter(t *testing.T) {
	flagSets := []uint8{flagSYN, flagACK, flagACK | flagPSH, flagFIN | flagACK, flagRST, flagRST | flagACK, 0}
	for _, c := range semCases() {
		t.Run(c.name, func(t *testing.T) {
			s := buildSnapshot(t, semModel(multiVIP(c.vip, c.mode, 8)), newRegistry(t), 1)
			const n = 500
			whole := newForwarder(t, s, testFlowConfig())
			ackFirst := newForwarder(t, s, testFlowConfig())
			only := make([]*Forwarder, len(flagSets))
			for i := range only {
				only[i] = newForwarder(t, s, testFlowConfig())
			}
			for i := range n {
				want := send(t, whole, c.flowFrame(i, flagSYN))
				for k, fl := range flagSets {
					if got := send(t, whole, c.flowFrame(i, fl)); got != want {
						t.Fatalf("flow %d: flags %#02x went to %v, SYN to %v", i, fl, got, want)
					}
					if got := send(t, only[k], c.flowFrame(i, fl)); got != want {
						t.Fatalf("flow %d: flags %#02x on a fresh forwarder went to %v, SYN to %v", i, fl, got, want)
					}
				}
				// Mid-flow first, then the rest.
				for _, fl := range []uint8{flagACK, flagSYN, flagFIN | flagACK} {
					if got := send(t, ackFirst, c.flowFrame(i, fl)); got != want {
						t.Fatalf("flow %d: flags %#02x after a mid-flow ACK went to %v, want %v", i, fl, got, want)
					}
				}
			}
		})
	}
}

// TestDeterminismAcrossAppliances: two appliances with the same model make
// the same choices, byte for byte, although their registries gave the reals
// different IDs and their configurations list VIPs and backends in other
// orders. A different flow seed makes different choices.
func TestDeterminismAcrossAppliances(t *testing.T) {
	model := func(reverse bool, seed uint64) Model {
		m := semModel(
			multiVIP("192.0.2.100", ModeDSR, 8),
			multiVIP("2001:db8::100", ModeIPIP, 8),
			multiVIPOn("192.0.2.101", ipProtoUDP, 53, ModeGUE, 8),
		)
		m.VIPs[1].Backends = append(m.VIPs[1].Backends, be("10.2.0.100", 100))
		m.VIPs[2].Backends[3].Weight = 5
		m.FlowSeed = seed
		if reverse {
			slices.Reverse(m.VIPs)
			for i := range m.VIPs {
				slices.Reverse(m.VIPs[i].Backends)
			}
		}
		return m
	}
	regA := newRegistry(t)
	sa := buildSnapshot(t, model(false, 0), regA, 1)
	regB := newRegistry(t)
	// Appliance B has a history: other reals took the first slots.
	buildSnapshot(t, semModel(multiVIP("192.0.2.200", ModeDSR, 20)), regB, 1)
	sb := buildSnapshot(t, model(true, 0), regB, 2)
	sc := buildSnapshot(t, model(false, 42), newRegistry(t), 1)

	fa := newForwarder(t, sa, testFlowConfig())
	fb := newForwarder(t, sb, testFlowConfig())
	fc := newForwarder(t, sc, testFlowConfig())
	differ := 0
	for i := range 3000 {
		var in []byte
		switch i % 3 {
		case 0:
			in = frameOf(tcpPacket(netip.AddrFrom4([4]byte{100, 64, byte(i >> 8), byte(i)}), addr("192.0.2.100"), uint16(i), 80, flagSYN, 0))
		case 1:
			in = frameOf(tcpPacket(client6, addr("2001:db8::100"), uint16(i), 80, flagSYN, 0))
		case 2:
			in = frameOf(udpPacket(client4, addr("192.0.2.101"), uint16(i), 53, 20))
		}
		va, outA, errA := forwardChecked(fa, in, defaultStart)
		vb, outB, errB := forwardChecked(fb, in, defaultStart)
		if errA != nil || errB != nil || va != VerdictTX || vb != VerdictTX {
			t.Fatalf("packet %d: %v %v, %v %v", i, va, errA, vb, errB)
		}
		if !slices.Equal(outA, outB) {
			t.Fatalf("packet %d: appliances disagree\n%x\n%x", i, outA, outB)
		}
		_, outC, err := forwardChecked(fc, in, defaultStart)
		if err != nil {
			t.Fatal(err)
		}
		if packet.MAC(outC[0:6]) != packet.MAC(outA[0:6]) {
			differ++
		}
	}
	if differ < 1000 {
		t.Errorf("another flow seed changed only %d of 3000 choices", differ)
	}
	// The agreement above is not an accident of equal IDs.
	idsA, idsB := realIDs(sa), realIDs(sb)
	same := 0
	for name, id := range idsA {
		if idsB[name] == id {
			same++
		}
	}
	if same != 0 {
		t.Errorf("%d reals have the same ID on both appliances; the test needs them to differ", same)
	}
}

func realIDs(s *Snapshot) map[string]uint32 {
	ids := make(map[string]uint32)
	for _, r := range s.reals {
		if r.id != 0 {
			ids[fmt.Sprintf("%s/%s", r.vs.VIPKey, r.name)] = r.id
		}
	}
	return ids
}

// TestFlowsNotCapturedByReusedSlot: when a backend is removed and another is
// added in the same snapshot, the new pair reuses the old pair's real slot.
// A flow the table remembers for the old pair must not follow the slot to
// the new backend: it moves to the Maglev choice like any flow of a removed
// backend.
func TestFlowsNotCapturedByReusedSlot(t *testing.T) {
	c := semCases()[1] // ipip4
	reg := newRegistry(t)
	a, b, newer := be("10.2.0.1", 1), be("10.2.0.2", 2), be("10.2.0.3", 3)
	v1 := vip(c.vip, ipProtoTCP, 80, c.mode, a, b)
	s1 := buildSnapshot(t, semModel(v1), reg, 1)
	v2 := vip(c.vip, ipProtoTCP, 80, c.mode, b, newer)
	s2 := buildSnapshot(t, semModel(v2), reg, 2)
	ra, rc := realOf(t, s1, "10.2.0.1"), realOf(t, s2, "10.2.0.3")
	if ra.id&realSlotMask != rc.id&realSlotMask || ra.id == rc.id {
		t.Fatalf("new backend has real %#x, old one %#x: want the same slot, another tag", rc.id, ra.id)
	}

	// Flows that went to A and that Maglev now sends to B: without tags they
	// would land on the backend that took A's slot.
	tested := 0
	for i := 0; i < semFlows && tested < 50; i++ {
		in := c.flowFrame(i, flagSYN)
		if maglevChoice(t, s1, in) != beMAC(1) || maglevChoice(t, s2, in) != beMAC(2) {
			continue
		}
		f := newForwarder(t, s1, oneShotConfig())
		send(t, f, in)
		f.Begin(s2, int64(time.Hour+time.Second))
		if got := send(t, f, c.flowFrame(i, flagACK)); got != beMAC(2) {
			t.Fatalf("flow %d remembered for the removed backend went to %v, want the Maglev choice %v", i, got, beMAC(2))
		}
		if f.Counters().FlowsMoved != 1 {
			t.Fatalf("flow %d: %d flows counted as moved, want 1", i, f.Counters().FlowsMoved)
		}
		tested++
	}
	if tested < 10 {
		t.Fatalf("only %d flows went A-then-B; the test proves little", tested)
	}
}

func realOf(tb testing.TB, s *Snapshot, name string) *realState {
	tb.Helper()
	for i := range s.reals {
		if s.reals[i].id != 0 && s.reals[i].name == name {
			return &s.reals[i]
		}
	}
	tb.Fatalf("no real %s in snapshot %d", name, s.Generation)
	return nil
}

// TestICMPErrorsFollowTheirFlow: an ICMPv4 fragmentation-needed or ICMPv6
// packet-too-big about a VIP-to-client packet reaches the backend of the
// flow it quotes: from the flow table (here after a snapshot change that
// would send the flow elsewhere) or, on a forwarder that never saw the flow,
// from Maglev, like the flow's own packets. An ICMP error does not create a
// flow.
func TestICMPErrorsFollowTheirFlow(t *testing.T) {
	for _, c := range semCases() {
		for _, proto := range []uint8{ipProtoTCP, ipProtoUDP} {
			t.Run(fmt.Sprintf("%s/%d", c.name, proto), func(t *testing.T) {
				reg := newRegistry(t)
				v1 := multiVIPOn(c.vip, proto, 80, c.mode, 4)
				s1 := buildSnapshot(t, semModel(v1), reg, 1)
				s2 := buildSnapshot(t, semModel(multiVIPOn(c.vip, proto, 80, c.mode, 8)), reg, 2)
				router := router4
				if addr(c.vip).Is6() {
					router = router6
				}
				flow := func(i int) []byte {
					if proto == ipProtoTCP {
						return c.flowFrame(i, flagSYN)
					}
					return frameOf(udpPacket(c.client(i/64), addr(c.vip), uint16(20000+i), 80, 10))
				}
				icmp := func(i int) []byte {
					return frameOf(icmpTooBigFrom(router, reversed(c.client(i/64), addr(c.vip), uint16(20000+i), 80, proto), 1280))
				}
				const n = 500
				f := newForwarder(t, s1, testFlowConfig())
				want := make([]packet.MAC, n)
				for i := range n {
					want[i] = send(t, f, flow(i))
				}
				cold := newForwarder(t, s1, testFlowConfig())
				for i := range n {
					if got := send(t, cold, icmp(i)); got != want[i] {
						t.Fatalf("flow %d: ICMP error on a fresh forwarder went to %v, the flow to %v", i, got, want[i])
					}
				}
				if cc := cold.Counters(); cc.ICMPErrors != n || cc.NewFlows != 0 || cold.Flows().Len() != 0 {
					t.Errorf("fresh forwarder: %d ICMP errors, %d new flows, %d in the table; want %d, 0, 0", cc.ICMPErrors, cc.NewFlows, cold.Flows().Len(), n)
				}

				f.Begin(s2, int64(time.Hour+time.Second))
				elsewhere := 0
				for i := range n {
					if got := send(t, f, icmp(i)); got != want[i] {
						t.Fatalf("flow %d: ICMP error after a new snapshot went to %v, the flow to %v", i, got, want[i])
					}
					if maglevChoice(t, s2, flow(i)) != want[i] {
						elsewhere++
					}
				}
				if elsewhere < n/4 {
					t.Errorf("the new snapshot moves only %d of %d flows; the test proves little", elsewhere, n)
				}
			})
		}
	}
}

// TestFragmentsFollowTheirDatagram: the first and the later fragments of a
// datagram reach the same backend, with or without the flow table, and
// datagrams from different clients spread over the backends.
func TestFragmentsFollowTheirDatagram(t *testing.T) {
	for _, c := range semCases() {
		t.Run(c.name, func(t *testing.T) {
			s := buildSnapshot(t, semModel(multiVIPOn(c.vip, ipProtoUDP, 53, c.mode, 8)), newRegistry(t), 1)
			dst := addr(c.vip)
			frags := func(i int) (first, later []byte) {
				src := c.client(i)
				dg := udpDgram(src, dst, uint16(1000+i), 53, payloadOf(1200))
				if dst.Is4() {
					first = v4{id: uint16(i), flags: ipMF, proto: ipProtoUDP, src: src, dst: dst}.build(dg[:800])
					later = v4{id: uint16(i), flags: 100, proto: ipProtoUDP, src: src, dst: dst}.build(dg[800:])
				} else {
					first = v6{next: ipProtoFrag, src: src, dst: dst}.build(cat(fragHdr6(ipProtoUDP, 0, true, uint32(i)), dg[:800]))
					later = v6{next: ipProtoFrag, src: src, dst: dst}.build(cat(fragHdr6(ipProtoUDP, 100, false, uint32(i)), dg[800:]))
				}
				return frameOf(first), frameOf(later)
			}
			f := newForwarder(t, s, testFlowConfig())
			used := make(map[packet.MAC]bool)
			const n = 400
			for i := range n {
				first, later := frags(i)
				want := send(t, f, first)
				used[want] = true
				if got := send(t, f, later); got != want {
					t.Fatalf("datagram %d: later fragment went to %v, first to %v", i, got, want)
				}
				if got := send(t, newForwarder(t, s, oneShotConfig()), later); got != want {
					t.Fatalf("datagram %d: later fragment alone went to %v, first to %v", i, got, want)
				}
			}
			if len(used) != 8 {
				t.Errorf("%d datagrams reached %d of 8 backends", n, len(used))
			}
			if got := f.Counters().Fragments; got != 2*n {
				t.Errorf("%d fragments counted, want %d", got, 2*n)
			}
		})
	}
}
