package perf

import (
	"math"
	"slices"
)

// Spread summarises repeated measurements of one figure.
type Spread struct {
	Min    float64 `json:"min"`
	Median float64 `json:"median"`
	Max    float64 `json:"max"`
	N      int     `json:"n"`
}

// SpreadOf returns the minimum, median and maximum of xs (the mean of the
// two middle values for an even count). NaNs are ignored; no value gives
// a zero Spread.
func SpreadOf(xs []float64) Spread {
	v := make([]float64, 0, len(xs))
	for _, x := range xs {
		if !math.IsNaN(x) {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return Spread{}
	}
	slices.Sort(v)
	n := len(v)
	med := v[n/2]
	if n%2 == 0 {
		med = (v[n/2-1] + v[n/2]) / 2
	}
	return Spread{Min: v[0], Median: med, Max: v[n-1], N: n}
}
