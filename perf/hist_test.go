package perf

import (
	"math"
	"math/rand/v2"
	"testing"
)

// Every value lies in the bounds of its bucket, buckets grow with the value
// and are at most 1/16 of their lower bound wide.
func TestBucketLayout(t *testing.T) {
	check := func(v uint64) {
		b := bucketOf(v)
		if b < 0 || b >= histBuckets {
			t.Fatalf("bucketOf(%d) = %d, out of range", v, b)
		}
		lo, hi := bucketBounds(b)
		clamped := min(v, 1<<histMaxLog2-1)
		if clamped < lo || clamped >= hi {
			t.Fatalf("bucketOf(%d) = %d with bounds [%d, %d)", v, b, lo, hi)
		}
		if lo >= histSub && float64(hi-lo) > float64(lo)/histSub {
			t.Fatalf("bucket %d [%d, %d) wider than 1/%d of its bound", b, lo, hi, histSub)
		}
	}
	for v := range uint64(5000) {
		check(v)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 100000 {
		check(r.Uint64() >> r.IntN(64))
	}
	check(math.MaxUint64)
	for b := 1; b < histBuckets; b++ {
		plo, phi := bucketBounds(b - 1)
		lo, _ := bucketBounds(b)
		if phi != lo || plo >= lo {
			t.Fatalf("buckets %d and %d are not adjacent: [%d, %d) then %d", b-1, b, plo, phi, lo)
		}
	}
	if _, hi := bucketBounds(histBuckets - 1); hi != 1<<histMaxLog2 {
		t.Fatalf("last bucket ends at %d, want 2^%d", hi, histMaxLog2)
	}
}

func TestQuantile(t *testing.T) {
	var h Histogram
	if h.Quantile(0.5) != 0 || h.Latency() != (LatencyUS{}) || h.CDF() != nil {
		t.Fatal("an empty histogram has figures")
	}
	// 1..100000 ns, uniform: every quantile within a bucket's width.
	for v := uint64(1); v <= 100000; v++ {
		h.Record(v)
	}
	for _, q := range []float64{0.01, 0.1, 0.5, 0.9, 0.99, 0.999, 1} {
		want := q * 100000
		got := h.Quantile(q)
		if math.Abs(got-want) > want/histSub+1 {
			t.Errorf("quantile %v = %.0f, want %.0f ± 6.25%%", q, got, want)
		}
	}
	if h.Quantile(1) > 100000 {
		t.Errorf("p100 %.0f above the largest sample", h.Quantile(1))
	}
	if m := h.Mean(); math.Abs(m-50000.5) > 0.01 {
		t.Errorf("mean %v", m)
	}

	// One value: every quantile is within its bucket and not above it.
	var one Histogram
	one.Record(1234567)
	for _, q := range []float64{0, 0.5, 0.999} {
		if got := one.Quantile(q); got > 1234567 || got < 1234567*(1-1.0/histSub) {
			t.Errorf("single sample: quantile %v = %.0f", q, got)
		}
	}

	// A bimodal distribution: 99% fast, 1% slow; p99.9 must be slow.
	var bi Histogram
	for range 9900 {
		bi.Record(5000)
	}
	for range 100 {
		bi.Record(2_000_000)
	}
	l := bi.Latency()
	if l.P50 > 5.4 || l.P50 < 4.6 || l.P999 < 1800 || l.Max != 2000 || l.Count != 10000 {
		t.Errorf("bimodal: %+v", l)
	}
}

func TestCDFAndMerge(t *testing.T) {
	var a, b Histogram
	for v := uint64(100); v < 200; v++ {
		a.Record(v)
		b.Record(v * 10)
	}
	a.Merge(&b)
	if a.Count != 200 || a.MaxNs != 1990 {
		t.Fatalf("merged count %d max %d", a.Count, a.MaxNs)
	}
	cdf := a.CDF()
	if len(cdf) == 0 || cdf[len(cdf)-1].Fraction != 1 {
		t.Fatalf("CDF %v does not end at 1", cdf)
	}
	for i := 1; i < len(cdf); i++ {
		if cdf[i].ValueNs <= cdf[i-1].ValueNs || cdf[i].Fraction < cdf[i-1].Fraction {
			t.Fatalf("CDF not increasing at %d: %v", i, cdf[i-1:i+1])
		}
	}
	if p := a.Quantile(0.5); p < 190 || p > 1000 {
		t.Errorf("median of the merge %.0f", p)
	}
}
