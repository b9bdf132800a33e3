package perf

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

// sampleReport has every section filled with plausible figures.
func sampleReport() *Report {
	var h, hr Histogram
	for v := uint64(1000); v < 200000; v += 37 {
		h.Record(v)
		hr.Record(v / 20)
	}
	e := &E2EResult{
		WeirMpps: 0.7, ReferenceMpps: 6, Ratio: 0.7 / 6, Loss: 0.2, MaxLosslessMpps: 0.6,
		ReferenceMaxLosslessMpps: 5.5, AFXDPMode: "copy", XDPMode: "native",
		Latency: h.Latency(), ReferenceLatency: hr.Latency(), LossTarget: 0.001,
		LatencyCDF: h.CDF(), ReferenceLatencyCDF: hr.CDF(), Size: 64, FrameBytes: 60, Family: 4, Flows: 65536,
		Runs: []E2ERun{
			{System: SystemWeir, Phase: PhaseFull, OfferedMpps: 3, ForwardedMpps: 0.7, Loss: 0.77},
			{System: SystemReference, Phase: PhaseFull, OfferedMpps: 6, ForwardedMpps: 6},
			{System: SystemWeir, Phase: PhaseSweep, TargetMpps: 0.5, OfferedMpps: 0.5, ForwardedMpps: 0.5},
			{System: SystemReference, Phase: PhaseSweep, TargetMpps: 0.5, OfferedMpps: 0.5, ForwardedMpps: 0.5},
		},
	}
	return &Report{
		Machine: Machine{CPUModel: "Test CPU <&>", Cores: 2, Kernel: "6.18"},
		Started: time.Unix(0, 0).UTC(), Command: "e2e", Config: map[string]string{"runs": "5"},
		Pipeline: []PipelineResult{{Mode: "dsr", Family: 4, Size: 64, Flows: 10000, Case: "established",
			NsPerPkt: 30, Mpps: 33.3, NsSpread: Spread{29, 30, 31, 5}, MppsSpread: Spread{32, 33.3, 34, 5}}},
		Rings: &RingsResult{Mpps: 20, MppsSpread: Spread{19, 20, 21, 5}, Mode: "dsr", Family: 4, Size: 64, Flows: 10000},
		E2E:   e,
	}
}

// The JSON keys the issue fixes, so results compare across commits.
func TestReportJSONKeys(t *testing.T) {
	var buf bytes.Buffer
	if err := sampleReport().WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	checkJSONKeys(t, m)
}

// checkJSONKeys checks every key the issue names in a decoded report, for
// the sections present.
func checkJSONKeys(t *testing.T, m map[string]any) {
	t.Helper()
	obj := func(v any, path string) map[string]any {
		o, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("%s: not an object: %v", path, v)
		}
		return o
	}
	has := func(o map[string]any, path string, keys ...string) {
		for _, k := range keys {
			if _, ok := o[k]; !ok {
				t.Errorf("%s has no key %q", path, k)
			}
		}
	}
	has(obj(m["machine"], "machine"), "machine", "cpu_model", "cores", "kernel")
	has(m, "report", "config", "command")
	if p, ok := m["pipeline"]; ok {
		list, ok := p.([]any)
		if !ok || len(list) == 0 {
			t.Fatalf("pipeline: not a non-empty list: %v", p)
		}
		for _, e := range list {
			has(obj(e, "pipeline[]"), "pipeline[]", "mode", "family", "size", "flows", "case", "ns_per_pkt", "mpps")
		}
	}
	if r, ok := m["rings"]; ok {
		has(obj(r, "rings"), "rings", "mpps")
	}
	if e, ok := m["e2e"]; ok {
		eo := obj(e, "e2e")
		has(eo, "e2e", "weir_mpps", "reference_mpps", "ratio", "loss", "max_lossless_mpps", "afxdp_mode", "latency_us")
		has(obj(eo["latency_us"], "e2e.latency_us"), "e2e.latency_us", "p50", "p99", "p999")
	}
}

// The SVG is well-formed XML, with and without data, and escapes text.
func TestSVGWellFormed(t *testing.T) {
	full := sampleReport()
	empty := &Report{Command: "e2e", E2E: &E2EResult{}}
	pipelineOnly := &Report{Command: "pipeline", Pipeline: full.Pipeline}
	for name, r := range map[string]*Report{"full": full, "empty": empty, "pipeline": pipelineOnly, "nothing": {}} {
		var buf bytes.Buffer
		if err := r.WriteSVG(&buf); err != nil {
			t.Fatal(err)
		}
		dec := xml.NewDecoder(&buf)
		var root string
		elements := 0
		for {
			tok, err := dec.Token()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: not well-formed XML: %v", name, err)
			}
			if se, ok := tok.(xml.StartElement); ok {
				if root == "" {
					root = se.Name.Local
				}
				elements++
			}
		}
		if root != "svg" || elements < 3 {
			t.Errorf("%s: root %q with %d elements", name, root, elements)
		}
	}
	var buf bytes.Buffer
	full.WriteSVG(&buf)
	if !strings.Contains(buf.String(), "Test CPU &lt;&amp;&gt;") {
		t.Error("text not escaped")
	}
}

func TestWriteText(t *testing.T) {
	var buf bytes.Buffer
	if err := sampleReport().WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"pipeline:", "rings:", "e2e:", "weir/reference", "0.117", "p99.9", "copy mode"} {
		if !strings.Contains(out, want) {
			t.Errorf("text report lacks %q:\n%s", want, out)
		}
	}
}

func TestCountName(t *testing.T) {
	for n, want := range map[int]string{1: "1", 1500: "1500", 10000: "10k", 1000000: "1M", 65536: "65536"} {
		if got := countName(n); got != want {
			t.Errorf("countName(%d) = %q, want %q", n, got, want)
		}
	}
}
