package perf

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
)

// WriteSVG draws the report as one SVG image, written as plain text: for
// the end-to-end benchmark, forwarded against offered load for weir and the
// reference and their latency CDFs at the highest lossless rate; for the
// pipeline and rings benchmarks, Mpps per case with the spread over runs.
func (r *Report) WriteSVG(w io.Writer) error {
	const width = 1000.0
	var body bytes.Buffer
	title := fmt.Sprintf("weir perf %s — %s, %d CPUs, Linux %s", r.Command, orUnknown(r.Machine.CPUModel), r.Machine.Cores, orUnknown(r.Machine.Kernel))
	svgText(&body, 20, 28, 16, "start", "bold", title)
	y := 45.0
	if e := r.E2E; e != nil {
		y = drawE2E(&body, e, y, width)
	}
	if len(r.Pipeline) > 0 {
		bars := make([]bar, 0, len(r.Pipeline))
		for _, p := range r.Pipeline {
			bars = append(bars, bar{
				label: fmt.Sprintf("%s ipv%d %dB %s flows %s", p.Mode, p.Family, p.Size, countName(p.Flows), p.Case),
				v:     p.Mpps, lo: p.MppsSpread.Min, hi: p.MppsSpread.Max,
			})
		}
		y = drawBars(&body, "pipeline: Mpps on one core (median, bar: min to max)", bars, y, width)
	}
	if g := r.Rings; g != nil {
		bars := []bar{{
			label: fmt.Sprintf("%s ipv%d %dB %s flows", g.Mode, g.Family, g.Size, countName(g.Flows)),
			v:     g.Mpps, lo: g.MppsSpread.Min, hi: g.MppsSpread.Max,
		}}
		y = drawBars(&body, "rings: Mpps on one forwarding core, simulated kernel (median, bar: min to max)", bars, y, width)
	}
	height := y + 20
	_, err := fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="sans-serif">
<rect x="0" y="0" width="%.0f" height="%.0f" fill="white"/>
%s</svg>
`, width, height, width, height, width, height, body.String())
	return err
}

// Colours of the two systems.
const (
	colorWeir      = "#1f77b4"
	colorReference = "#d62728"
	colorGrid      = "#dddddd"
)

func drawE2E(b *bytes.Buffer, e *E2EResult, y, width float64) float64 {
	const h = 360.0
	pw := (width - 60) / 2
	// Throughput against offered load, every run.
	var weir, ref [][2]float64
	maxX := 0.0
	for _, run := range e.Runs {
		p := [2]float64{run.OfferedMpps, run.ForwardedMpps}
		maxX = max(maxX, run.OfferedMpps, run.ForwardedMpps)
		if run.System == SystemWeir {
			weir = append(weir, p)
		} else {
			ref = append(ref, p)
		}
	}
	sortPoints(weir)
	sortPoints(ref)
	maxX = niceCeil(maxX)
	diag := [][2]float64{{0, 0}, {maxX, maxX}}
	panel(b, panelSpec{
		x: 50, y: y + 20, w: pw - 10, h: h,
		title: "forwarded vs offered load (every run)",
		xa:    axis{label: "offered Mpps", min: 0, max: maxX},
		ya:    axis{label: "forwarded Mpps", min: 0, max: maxX},
		series: []series{
			{name: "offered = forwarded", color: "#999999", points: diag, dashed: true},
			{name: "weir", color: colorWeir, points: weir, markers: true},
			{name: "reference (XDP_TX)", color: colorReference, points: ref, markers: true},
		},
	})
	// Latency CDFs.
	var lw, lr [][2]float64
	lo, hi := math.Inf(1), 0.0
	for _, c := range e.LatencyCDF {
		lw = append(lw, [2]float64{c.ValueNs / 1e3, c.Fraction})
	}
	for _, c := range e.ReferenceLatencyCDF {
		lr = append(lr, [2]float64{c.ValueNs / 1e3, c.Fraction})
	}
	for _, p := range append(slices.Clone(lw), lr...) {
		lo, hi = min(lo, p[0]), max(hi, p[0])
	}
	if hi == 0 {
		lo, hi = 1, 10
	}
	lo = math.Pow(10, math.Floor(math.Log10(max(lo, 0.01))))
	hi = math.Pow(10, math.Ceil(math.Log10(max(hi, lo*10))))
	panel(b, panelSpec{
		x: 80 + pw, y: y + 20, w: pw - 40, h: h,
		title: fmt.Sprintf("latency CDF at the highest rate with loss < %s", pct(e.LossTarget)),
		xa:    axis{label: "generator to sink, µs (log)", min: lo, max: hi, log: true},
		ya:    axis{label: "share of packets", min: 0, max: 1},
		series: []series{
			{name: fmt.Sprintf("weir at %.3f Mpps", e.MaxLosslessMpps), color: colorWeir, points: stepPoints(lw)},
			{name: fmt.Sprintf("reference at %.3f Mpps", e.ReferenceMaxLosslessMpps), color: colorReference, points: stepPoints(lr)},
		},
	})
	return y + h + 110
}

func sortPoints(ps [][2]float64) {
	slices.SortFunc(ps, func(a, b [2]float64) int {
		if a[0] != b[0] {
			if a[0] < b[0] {
				return -1
			}
			return 1
		}
		return 0
	})
}

// stepPoints turns CDF points into a staircase.
func stepPoints(ps [][2]float64) [][2]float64 {
	var out [][2]float64
	prev := 0.0
	for _, p := range ps {
		out = append(out, [2]float64{p[0], prev}, p)
		prev = p[1]
	}
	return out
}

type axis struct {
	label    string
	min, max float64
	log      bool
}

// pos maps v to [0, 1] along the axis.
func (a axis) pos(v float64) float64 {
	if a.log {
		v = max(v, a.min)
		return (math.Log10(v) - math.Log10(a.min)) / (math.Log10(a.max) - math.Log10(a.min))
	}
	if a.max == a.min {
		return 0
	}
	return (v - a.min) / (a.max - a.min)
}

// ticks returns tick values: powers of ten on a log axis, 1-2-5 steps on a
// linear one.
func (a axis) ticks() []float64 {
	var out []float64
	if a.log {
		for v := a.min; v <= a.max*1.0001; v *= 10 {
			out = append(out, v)
		}
		return out
	}
	step := niceStep((a.max - a.min) / 5)
	for v := math.Ceil(a.min/step) * step; v <= a.max+step/1000; v += step {
		out = append(out, v)
	}
	return out
}

func niceStep(raw float64) float64 {
	if raw <= 0 {
		return 1
	}
	e := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if raw <= m*e {
			return m * e
		}
	}
	return 10 * e
}

// niceCeil rounds v up to a tick-friendly value (at least 0.1).
func niceCeil(v float64) float64 {
	if v <= 0.1 {
		return 0.1
	}
	step := niceStep(v / 5)
	return math.Ceil(v/step) * step
}

type series struct {
	name    string
	color   string
	points  [][2]float64
	markers bool
	dashed  bool
}

type panelSpec struct {
	x, y, w, h float64
	title      string
	xa, ya     axis
	series     []series
}

// panel draws axes, grid, ticks, the series and a legend.
func panel(b *bytes.Buffer, p panelSpec) {
	px := func(v float64) float64 { return p.x + p.xa.pos(v)*p.w }
	py := func(v float64) float64 { return p.y + p.h - p.ya.pos(v)*p.h }
	svgText(b, p.x, p.y-8, 13, "start", "bold", p.title)
	for _, t := range p.xa.ticks() {
		x := px(t)
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s"/>`+"\n", x, p.y, x, p.y+p.h, colorGrid)
		svgText(b, x, p.y+p.h+15, 11, "middle", "", tickLabel(t))
	}
	for _, t := range p.ya.ticks() {
		y := py(t)
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s"/>`+"\n", p.x, y, p.x+p.w, y, colorGrid)
		svgText(b, p.x-4, y+4, 11, "end", "", tickLabel(t))
	}
	fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="black"/>`+"\n", p.x, p.y, p.w, p.h)
	svgText(b, p.x+p.w/2, p.y+p.h+32, 12, "middle", "", p.xa.label)
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" font-size="12" text-anchor="middle" transform="rotate(-90 %.1f %.1f)">%s</text>`+"\n",
		p.x-30, p.y+p.h/2, p.x-30, p.y+p.h/2, escape(p.ya.label))
	for i, s := range p.series {
		if len(s.points) > 0 {
			var pts []string
			for _, pt := range s.points {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(pt[0]), py(pt[1])))
			}
			dash := ""
			if s.dashed {
				dash = ` stroke-dasharray="5,4"`
			}
			fmt.Fprintf(b, `<polyline fill="none" stroke="%s" stroke-width="1.5"%s points="%s"/>`+"\n", s.color, dash, strings.Join(pts, " "))
			if s.markers {
				for _, pt := range s.points {
					fmt.Fprintf(b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`+"\n", px(pt[0]), py(pt[1]), s.color)
				}
			}
		}
		// The legend goes under the axis label, one entry per line, so
		// it never hides a curve.
		ly := p.y + p.h + 50 + float64(i)*15
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2"/>`+"\n", p.x, ly-4, p.x+20, ly-4, s.color)
		svgText(b, p.x+24, ly, 11, "start", "", s.name)
	}
}

type bar struct {
	label     string
	v, lo, hi float64
}

// drawBars draws a horizontal bar chart with min-max whiskers.
func drawBars(b *bytes.Buffer, title string, bars []bar, y, width float64) float64 {
	const rowH, labelW = 18.0, 300.0
	x0, w := 20+labelW, width-labelW-60
	top := y + 20
	svgText(b, 20, y+10, 13, "start", "bold", title)
	maxV := 0.0
	for _, br := range bars {
		maxV = max(maxV, br.v, br.hi)
	}
	xa := axis{min: 0, max: niceCeil(maxV)}
	h := rowH * float64(len(bars))
	for _, t := range xa.ticks() {
		x := x0 + xa.pos(t)*w
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s"/>`+"\n", x, top, x, top+h, colorGrid)
		svgText(b, x, top+h+14, 11, "middle", "", tickLabel(t))
	}
	for i, br := range bars {
		ry := top + float64(i)*rowH
		svgText(b, x0-6, ry+rowH-5, 11, "end", "", br.label)
		fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>`+"\n", x0, ry+3, xa.pos(br.v)*w, rowH-6, colorWeir)
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="black"/>`+"\n", x0+xa.pos(br.lo)*w, ry+rowH/2, x0+xa.pos(br.hi)*w, ry+rowH/2)
		svgText(b, x0+xa.pos(max(br.v, br.hi))*w+4, ry+rowH-5, 10, "start", "", fmt.Sprintf("%.2f", br.v))
	}
	svgText(b, x0+w/2, top+h+30, 12, "middle", "", "Mpps")
	return top + h + 45
}

func tickLabel(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1e9 {
		return fmt.Sprintf("%.0f", v)
	}
	return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.3f", v), "0"), ".")
}

func svgText(b *bytes.Buffer, x, y, size float64, anchor, weight, text string) {
	fw := ""
	if weight != "" {
		fw = fmt.Sprintf(` font-weight="%s"`, weight)
	}
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" font-size="%.0f" text-anchor="%s"%s>%s</text>`+"\n", x, y, size, anchor, fw, escape(text))
}

func escape(s string) string {
	var b strings.Builder
	xml.EscapeText(&b, []byte(s))
	return b.String()
}
