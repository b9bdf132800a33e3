package appliance

import (
	"testing"
)

// TestRealCountersResetWhenSlotReused removes a backend and adds another in
// the next snapshot, so the new pair takes the freed slot: its counters must
// start from zero, not from the removed backend's totals, while the kept
// backend's counters carry on.
func TestRealCountersResetWhenSlotReused(t *testing.T) {
	reg := newRegistry(t)
	m1 := semModel(vip("192.0.2.50", ipProtoTCP, 80, ModeDSR, be("10.1.0.1", 1), be("10.1.0.2", 2)))
	s1 := buildSnapshot(t, m1, reg, 1)
	f := newForwarder(t, s1, testFlowConfig())
	for port := uint16(1000); port < 1100; port++ {
		buf := make([]byte, defaultStart+200)
		in := frameOf(tcpPacket(client4, addr("192.0.2.50"), port, 80, flagSYN, 0))
		copy(buf[defaultStart:], in)
		if v, _, _ := f.Forward(buf, defaultStart, len(in)); v != VerdictTX {
			t.Fatalf("port %d: %v", port, v)
		}
	}
	before := map[uint32]RealCounters{}
	for i := range s1.reals {
		if id := s1.reals[i].id; id != 0 {
			before[id] = f.RealCounters()[i]
		}
	}
	var total uint64
	for _, c := range before {
		total += c.NewFlows
		if c.Packets == 0 || c.NewFlows != c.Packets {
			t.Fatalf("each packet was a new flow: %+v", c)
		}
	}
	if total != 100 {
		t.Fatalf("new flows per real sum to %d, want 100", total)
	}

	m2 := semModel(vip("192.0.2.50", ipProtoTCP, 80, ModeDSR, be("10.1.0.1", 1), be("10.1.0.3", 3)))
	s2 := buildSnapshot(t, m2, reg, 2)
	f.Begin(s2, 2)
	for i := range s2.reals {
		r := &s2.reals[i]
		if r.id == 0 {
			continue
		}
		got := f.RealCounters()[i]
		if old, kept := before[r.id]; kept {
			if got != old {
				t.Errorf("kept real %s: counters %+v, want %+v", r.name, got, old)
			}
		} else if got != (RealCounters{}) {
			t.Errorf("new real %s in a reused slot starts at %+v, want zero", r.name, got)
		}
	}
}
