package appliance

// The per-VIP ICMP error policy: ICMPForward sends an ICMP error to the
// backend of the flow it quotes, ICMPDrop drops and counts it; neither
// changes anything for the VIP's own traffic.

import (
	"strings"
	"testing"

	"github.com/weirlb/weir/packet"
)

// TestICMPErrorPolicy: on one address, port 80 forwards ICMP errors and port
// 81 drops them. Client packets of both reach their backends; errors about
// port-80 flows reach the flow's backend and count as ICMPErrors, errors
// about port-81 flows are dropped as icmp_error_dropped and reach nobody.
// A new snapshot that flips the policies applies to established flows at
// once, and the flows keep their backends.
func TestICMPErrorPolicy(t *testing.T) {
	for _, c := range semCases() {
		t.Run(c.name, func(t *testing.T) {
			fwd := multiVIPOn(c.vip, ipProtoTCP, 80, c.mode, 4)
			drop := multiVIPOn(c.vip, ipProtoTCP, 81, c.mode, 4)
			drop.ICMPErrors = ICMPDrop
			reg := newRegistry(t)
			s1 := buildSnapshot(t, semModel(fwd, drop), reg, 1)
			router := router4
			if addr(c.vip).Is6() {
				router = router6
			}
			flow := func(i int, port uint16) []byte {
				return frameOf(tcpPacket(c.client(i), addr(c.vip), uint16(30000+i), port, flagSYN, 100))
			}
			icmp := func(i int, port uint16) []byte {
				return frameOf(icmpTooBigFrom(router, reversed(c.client(i), addr(c.vip), uint16(30000+i), port, ipProtoTCP), 1400))
			}

			const n = 200
			f := newForwarder(t, s1, testFlowConfig())
			backend := map[uint16][]packet.MAC{80: make([]packet.MAC, n), 81: make([]packet.MAC, n)}
			for _, port := range []uint16{80, 81} {
				for i := range n {
					backend[port][i] = send(t, f, flow(i, port))
				}
			}
			base := *f.Counters()
			for i := range n {
				if got := send(t, f, icmp(i, 80)); got != backend[80][i] {
					t.Fatalf("flow %d: ICMP error went to %v, the flow to %v", i, got, backend[80][i])
				}
				if v, _, _ := f.Forward(bufWith(icmp(i, 81)), defaultStart, len(icmp(i, 81))); v != VerdictDrop {
					t.Fatalf("flow %d: ICMP error to a dropping VIP: verdict %v", i, v)
				}
			}
			c1 := *f.Counters()
			if got := c1.ICMPErrors - base.ICMPErrors; got != n {
				t.Errorf("ICMPErrors rose by %d, want %d (forwarded ones only)", got, n)
			}
			if got := c1.Drops[DropICMPError] - base.Drops[DropICMPError]; got != n || c1.Dropped()-base.Dropped() != n {
				t.Errorf("icmp_error_dropped rose by %d (all drops by %d), want %d", got, c1.Dropped()-base.Dropped(), n)
			}
			if got := c1.TXPackets - base.TXPackets; got != n {
				t.Errorf("TXPackets rose by %d, want %d", got, n)
			}

			// Flip the policies; the flows stay where they are.
			fwd.ICMPErrors, drop.ICMPErrors = ICMPDrop, ICMPForward
			s2 := buildSnapshot(t, semModel(fwd, drop), reg, 2)
			f.Begin(s2, 2)
			for i := range n {
				if got := send(t, f, icmp(i, 81)); got != backend[81][i] {
					t.Fatalf("flow %d after the flip: ICMP error went to %v, the flow to %v", i, got, backend[81][i])
				}
				if v, _, _ := f.Forward(bufWith(icmp(i, 80)), defaultStart, len(icmp(i, 80))); v != VerdictDrop {
					t.Fatalf("flow %d after the flip: verdict %v, want drop", i, v)
				}
				if got := send(t, f, flow(i, 80)); got != backend[80][i] {
					t.Fatalf("flow %d after the flip moved from %v to %v", i, backend[80][i], got)
				}
			}
			c2 := *f.Counters()
			if c2.ICMPErrors-c1.ICMPErrors != n || c2.Drops[DropICMPError]-c1.Drops[DropICMPError] != n {
				t.Errorf("after the flip: %d forwarded, %d dropped; want %d each",
					c2.ICMPErrors-c1.ICMPErrors, c2.Drops[DropICMPError]-c1.Drops[DropICMPError], n)
			}
		})
	}
}

// bufWith puts frame at defaultStart of a fresh buffer.
func bufWith(frame []byte) []byte {
	buf := make([]byte, defaultStart+len(frame)+64)
	copy(buf[defaultStart:], frame)
	return buf
}

// TestICMPErrorPolicyDropAllocs: dropping by policy allocates nothing, like
// every other path of Forward.
func TestICMPErrorPolicyDropAllocs(t *testing.T) {
	v := multiVIPOn("192.0.2.100", ipProtoTCP, 80, ModeGUE, 4)
	v.ICMPErrors = ICMPDrop
	s := buildSnapshot(t, semModel(v), newRegistry(t), 1)
	f := newForwarder(t, s, testFlowConfig())
	in := frameOf(icmpTooBigFrom(router4, reversed(client4, addr("192.0.2.100"), 40000, 80, ipProtoTCP), 1400))
	buf := bufWith(in)
	allocs := testing.AllocsPerRun(1000, func() {
		copy(buf[defaultStart:], in)
		if v, _, _ := f.Forward(buf, defaultStart, len(in)); v != VerdictDrop {
			t.Fatalf("verdict %v", v)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per dropped ICMP error", allocs)
	}
}

func TestICMPPolicyNames(t *testing.T) {
	for _, p := range []ICMPPolicy{ICMPForward, ICMPDrop} {
		got, err := ParseICMPPolicy(p.String())
		if err != nil || got != p {
			t.Errorf("ParseICMPPolicy(%q) = %v, %v", p.String(), got, err)
		}
	}
	if _, err := ParseICMPPolicy("ignore"); err == nil {
		t.Error(`ParseICMPPolicy("ignore") succeeded`)
	}
	if DropICMPError.String() != "icmp_error_dropped" {
		t.Errorf("drop reason label %q", DropICMPError.String())
	}
	v := multiVIPOn("192.0.2.100", ipProtoTCP, 80, ModeIPIP, 1)
	v.ICMPErrors = ICMPPolicy(7)
	if err := semModel(v).Validate(); err == nil {
		t.Error("a model with ICMP error policy 7 validates")
	} else if !strings.Contains(err.Error(), "unknown ICMP error policy 7") {
		t.Errorf("error %q does not name the policy", err)
	}
}
