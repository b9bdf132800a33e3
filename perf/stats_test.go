package perf

import (
	"math"
	"testing"
)

func TestSpreadOf(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want Spread
	}{
		{nil, Spread{}},
		{[]float64{3}, Spread{3, 3, 3, 1}},
		{[]float64{5, 1, 3}, Spread{1, 3, 5, 3}},
		{[]float64{4, 1, 3, 2}, Spread{1, 2.5, 4, 4}},
		{[]float64{math.NaN(), 2, 1}, Spread{1, 1.5, 2, 2}},
	} {
		if got := SpreadOf(c.in); got != c.want {
			t.Errorf("SpreadOf(%v) = %+v, want %+v", c.in, got, c.want)
		}
	}
}

func TestCaseName(t *testing.T) {
	for share, want := range map[float64]string{0: "established", 1: "new", 0.1: "new-10%", 0.005: "new-0.5%"} {
		if got := caseName(share); got != want {
			t.Errorf("caseName(%v) = %q, want %q", share, got, want)
		}
	}
}

func TestAutoLoads(t *testing.T) {
	if autoLoads(0) != nil {
		t.Error("loads without a ceiling")
	}
	l := autoLoads(6)
	if len(l) != 5 || l[0] != 0.188 || l[len(l)-1] > 6 {
		t.Errorf("autoLoads(6) = %v", l)
	}
}

func TestSearch(t *testing.T) {
	s := newSearch(1)
	if first := s.next(); math.Abs(first-0.945) > 1e-9 {
		t.Fatalf("first probe %v, want just below the full-rate throughput", first)
	}
	// A system that loses above 0.6 Mpps.
	for range 8 {
		target := s.next()
		loss := 0.0
		if target > 0.6 {
			loss = 0.05
		}
		s.record(E2ERun{TargetMpps: target, OfferedMpps: target * 0.99, Loss: loss}, 0.001)
	}
	if s.best == nil || s.best.TargetMpps > 0.6 || s.best.TargetMpps < 0.59 {
		t.Fatalf("search settled on %+v", s.best)
	}

	// A system that carries more than its full-rate throughput: the
	// ceiling grows until a probe fails.
	s = newSearch(1)
	for range 10 {
		target := s.next()
		loss := 0.0
		if target > 2.5 {
			loss = 0.01
		}
		s.record(E2ERun{TargetMpps: target, OfferedMpps: target, Loss: loss}, 0.001)
	}
	if s.best == nil || s.best.TargetMpps > 2.5 || s.best.TargetMpps < 2.4 {
		t.Fatalf("search above the full-rate throughput settled on %+v", s.best)
	}

	// A system the generator cannot overload (it offers at most 4 Mpps):
	// the ceiling stops growing, and the answer is marked as bound.
	s = newSearch(4)
	for range 6 {
		target := s.next()
		s.record(E2ERun{TargetMpps: target, OfferedMpps: min(target, 4)}, 0.001)
		if s.hi > 10 {
			t.Fatalf("ceiling grew to %v past what the generator offers", s.hi)
		}
	}
	if s.best == nil || s.best.OfferedMpps != 4 || !generatorBound(s.best) {
		t.Fatalf("generator-bound search settled on %+v", s.best)
	}
}
