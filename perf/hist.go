package perf

import "math/bits"

// Histogram bucket layout, as in perf.h: values below histSub have a
// bucket each; above, every power of two is split into histSub buckets, so
// a bucket spans at most 1/histSub of its lower bound. Values are clamped
// below 2^histMaxLog2.
const (
	histSubBits = 4
	histSub     = 1 << histSubBits
	histMaxLog2 = 40
	histBuckets = (histMaxLog2 - histSubBits + 1) * histSub
)

// Histogram is a latency histogram in nanoseconds with the sink's bucket
// layout. The zero value is empty.
type Histogram struct {
	Count   uint64
	SumNs   uint64
	MaxNs   uint64
	Buckets [histBuckets]uint64
}

// bucketOf returns the bucket of value v (the Go twin of hist_bucket).
func bucketOf(v uint64) int {
	if v >= 1<<histMaxLog2 {
		v = 1<<histMaxLog2 - 1
	}
	if v < histSub {
		return int(v)
	}
	msb := 63 - bits.LeadingZeros64(v)
	sub := int(v>>(msb-histSubBits)) & (histSub - 1)
	return (msb-histSubBits+1)*histSub + sub
}

// bucketBounds returns the values [lo, hi) that fall into bucket b.
func bucketBounds(b int) (lo, hi uint64) {
	if b < histSub {
		return uint64(b), uint64(b) + 1
	}
	msb := b/histSub + histSubBits - 1
	sub := uint64(b % histSub)
	width := uint64(1) << (msb - histSubBits)
	lo = (histSub + sub) * width
	return lo, lo + width
}

// Record adds one value.
func (h *Histogram) Record(ns uint64) {
	h.Buckets[bucketOf(ns)]++
	h.Count++
	h.SumNs += ns
	h.MaxNs = max(h.MaxNs, ns)
}

// add merges one CPU's histogram as the sink stores it.
func (h *Histogram) add(count, sum, maxNs uint64, buckets []uint64) {
	h.Count += count
	h.SumNs += sum
	h.MaxNs = max(h.MaxNs, maxNs)
	for i := range min(len(buckets), len(h.Buckets)) {
		h.Buckets[i] += buckets[i]
	}
}

// Merge adds o's samples to h.
func (h *Histogram) Merge(o *Histogram) { h.add(o.Count, o.SumNs, o.MaxNs, o.Buckets[:]) }

// total is the number of samples in the buckets.
func (h *Histogram) total() uint64 {
	var n uint64
	for _, c := range h.Buckets {
		n += c
	}
	return n
}

// Quantile returns the value below which a share q (0..1) of the samples
// lie, interpolating linearly inside the bucket that holds it, so the error
// is at most one bucket's width (6.25% above 16 ns). It is never above the
// largest sample recorded. An empty histogram gives 0.
func (h *Histogram) Quantile(q float64) float64 {
	n := h.total()
	if n == 0 {
		return 0
	}
	q = min(max(q, 0), 1)
	// The rank of the wanted sample, from 1.
	rank := q * float64(n)
	if rank < 1 {
		rank = 1
	}
	var seen float64
	for b, c := range h.Buckets {
		if c == 0 {
			continue
		}
		if seen+float64(c) >= rank {
			lo, hi := bucketBounds(b)
			v := float64(lo) + (rank-seen)/float64(c)*float64(hi-lo)
			if h.MaxNs > 0 {
				v = min(v, float64(h.MaxNs))
			}
			return v
		}
		seen += float64(c)
	}
	return float64(h.MaxNs)
}

// Mean returns the average sample, 0 for an empty histogram.
func (h *Histogram) Mean() float64 {
	if h.Count == 0 {
		return 0
	}
	return float64(h.SumNs) / float64(h.Count)
}

// CDFPoint is one step of a cumulative distribution: the share of samples
// at or below ValueNs.
type CDFPoint struct {
	ValueNs  float64 `json:"ns"`
	Fraction float64 `json:"fraction"`
}

// CDF returns the cumulative distribution at the upper bound of every
// non-empty bucket.
func (h *Histogram) CDF() []CDFPoint {
	n := h.total()
	if n == 0 {
		return nil
	}
	var out []CDFPoint
	var seen uint64
	for b, c := range h.Buckets {
		if c == 0 {
			continue
		}
		seen += c
		_, hi := bucketBounds(b)
		out = append(out, CDFPoint{ValueNs: float64(hi), Fraction: float64(seen) / float64(n)})
	}
	return out
}

// LatencyUS are latency percentiles in microseconds.
type LatencyUS struct {
	P50   float64 `json:"p50"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p999"`
	Mean  float64 `json:"mean"`
	Max   float64 `json:"max"`
	Count uint64  `json:"samples"`
}

// Latency summarises h in microseconds.
func (h *Histogram) Latency() LatencyUS {
	return LatencyUS{
		P50:   h.Quantile(0.50) / 1e3,
		P99:   h.Quantile(0.99) / 1e3,
		P999:  h.Quantile(0.999) / 1e3,
		Mean:  h.Mean() / 1e3,
		Max:   float64(h.MaxNs) / 1e3,
		Count: h.Count,
	}
}
