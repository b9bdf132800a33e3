package appliance

import (
	"bytes"
	"testing"
)

// TestForwardBatchGolden runs the golden table through ForwardBatch in
// batches of several sizes and checks that it makes exactly the decisions
// Forward makes over the same frames, byte for byte, with the same counters.
func TestForwardBatchGolden(t *testing.T) {
	s := buildSnapshot(t, goldenModel(), newRegistry(t), 1)
	cases := goldenCases()
	frame := func(g golden) ([]byte, int) {
		start := cmpStart(g.start)
		buf := make([]byte, start+len(g.in))
		copy(buf[start:], g.in)
		return buf, start
	}
	for _, size := range []int{1, 7, 32, MaxBatch} {
		for first := 0; first < len(cases); first += size {
			group := cases[first:min(first+size, len(cases))]
			// Reference: Forward over the same frames, in order, on a
			// fresh forwarder (so outer IPv4 IDs and flow-table state
			// evolve the same way).
			ref := newForwarder(t, s, oneShotConfig())
			bat := newForwarder(t, s, oneShotConfig())
			pkts := make([]Packet, len(group))
			type result struct {
				v   Verdict
				out []byte
			}
			want := make([]result, len(group))
			for i, g := range group {
				buf, start := frame(g)
				v, os, ol := ref.Forward(buf, start, len(g.in))
				want[i] = result{v, bytes.Clone(buf[os : os+ol])}
				buf, start = frame(g)
				pkts[i] = Packet{Buf: buf, Start: start, Len: len(g.in)}
			}
			bat.ForwardBatch(pkts)
			for i, pk := range pkts {
				got := result{pk.Verdict, bytes.Clone(pk.Buf[pk.OutStart : pk.OutStart+pk.OutLen])}
				if got.v != want[i].v || (got.v != VerdictDrop && !bytes.Equal(got.out, want[i].out)) {
					t.Errorf("batch size %d, %s: ForwardBatch gave %v %x, Forward %v %x", size, group[i].name, got.v, got.out, want[i].v, want[i].out)
				}
			}
			if *ref.Counters() != *bat.Counters() {
				t.Errorf("batch size %d from %s: counters differ\nForwardBatch %+v\nForward      %+v", size, group[0].name, *bat.Counters(), *ref.Counters())
			}
		}
	}
}

func cmpStart(start int) int {
	if start == 0 {
		return defaultStart
	}
	return start
}

func TestForwardBatchNoAllocs(t *testing.T) {
	s := buildSnapshot(t, goldenModel(), newRegistry(t), 1)
	f := newForwarder(t, s, testFlowConfig())
	cases := goldenCases()
	pkts := make([]Packet, min(len(cases), 64))
	orig := make([][]byte, len(pkts))
	for i := range pkts {
		g := cases[i]
		start := cmpStart(g.start)
		orig[i] = make([]byte, start+len(g.in))
		copy(orig[i][start:], g.in)
		pkts[i] = Packet{Buf: bytes.Clone(orig[i]), Start: start, Len: len(g.in)}
	}
	allocs := testing.AllocsPerRun(100, func() {
		for i := range pkts {
			copy(pkts[i].Buf, orig[i])
		}
		f.ForwardBatch(pkts)
	})
	if allocs != 0 {
		t.Errorf("ForwardBatch allocated %.1f times per batch", allocs)
	}
}

func TestForwardBatchTooLarge(t *testing.T) {
	s := buildSnapshot(t, goldenModel(), newRegistry(t), 1)
	f := newForwarder(t, s, testFlowConfig())
	defer func() {
		if recover() == nil {
			t.Error("a batch larger than MaxBatch did not panic")
		}
	}()
	f.ForwardBatch(make([]Packet, MaxBatch+1))
}
