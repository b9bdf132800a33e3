package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weirlb/weir/internal/testutil"
	"github.com/weirlb/weir/lab"
)

func TestPerfUsage(t *testing.T) {
	code, _, errOut := runCLI(t, "perf")
	if code != 2 || !strings.Contains(errOut, "usage: weir perf <benchmark>") {
		t.Fatalf("no benchmark: exit %d, stderr %q", code, errOut)
	}
	code, out, _ := runCLI(t, "perf", "-h")
	if code != 0 {
		t.Fatalf("-h: exit %d", code)
	}
	for _, m := range perfModes {
		if !strings.Contains(out, m.name) {
			t.Errorf("usage does not list %q:\n%s", m.name, out)
		}
	}
	code, _, errOut = runCLI(t, "perf", "frobnicate")
	if code != 2 || !strings.Contains(errOut, `unknown benchmark "frobnicate"`) {
		t.Fatalf("unknown benchmark: exit %d, stderr %q", code, errOut)
	}
	for _, m := range perfModes {
		code, out, _ := runCLI(t, "perf", m.name, "-h")
		if code != 0 || !strings.Contains(out, "usage: weir perf "+m.name) || !strings.Contains(out, "-json") {
			t.Errorf("perf %s -h: exit %d\n%s", m.name, code, out)
		}
	}
}

func TestPerfBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"perf", "pipeline", "--modes", "nat"},
		{"perf", "pipeline", "--flows", "ten"},
		{"perf", "pipeline", "--new-share", "x"},
		{"perf", "pipeline", "extra"},
		{"perf", "rings", "--mode", "nat"},
		{"perf", "e2e", "--loads", "fast"},
		{"perf", "e2e", "--nonsense"},
	} {
		code, _, errOut := runCLI(t, args...)
		if code != 2 || !strings.Contains(errOut, "usage: weir perf") {
			t.Errorf("%v: exit %d, stderr %q", args, code, errOut)
		}
	}
	// Values the flags accept but the benchmark refuses: exit 1.
	code, _, errOut := runCLI(t, "perf", "pipeline", "--sizes", "9000")
	if code != 1 || !strings.Contains(errOut, "size 9000") {
		t.Errorf("size 9000: exit %d, stderr %q", code, errOut)
	}
}

func TestPerfListFlags(t *testing.T) {
	var l perfIntList
	if err := l.Set("1, 10k,2M"); err != nil || len(l) != 3 || l[1] != 10000 || l[2] != 2000000 || l.String() != "1,10000,2000000" {
		t.Errorf("perfIntList = %v, %v", l, err)
	}
	var m perfModeList
	if err := m.Set("dsr,gue"); err != nil || m.String() != "dsr,gue" {
		t.Errorf("perfModeList = %v, %v", m, err)
	}
}

// readJSONKeys decodes a report file and checks the keys the issue fixes.
func readReport(t *testing.T, path string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	mach, _ := m["machine"].(map[string]any)
	for _, k := range []string{"cpu_model", "cores", "kernel"} {
		if _, ok := mach[k]; !ok {
			t.Errorf("machine has no %q", k)
		}
	}
	if _, ok := m["config"].(map[string]any); !ok {
		t.Error("no config")
	}
	return m
}

func checkSVG(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := xml.NewDecoder(f)
	for {
		_, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}
}

func TestPerfPipeline(t *testing.T) {
	dir := t.TempDir()
	js, svg := filepath.Join(dir, "p.json"), filepath.Join(dir, "p.svg")
	code, out, errOut := runCLI(t, "perf", "pipeline", "--modes", "dsr,ipip", "--families", "4", "--sizes", "64",
		"--flows", "1,1k", "--runs", "3", "--duration", "2ms", "--cpu", "-1", "--json", js, "--svg", svg)
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, errOut)
	}
	if !strings.Contains(out, "ns/pkt") || !strings.Contains(out, "ipip") || !strings.Contains(errOut, "[12/12]") {
		t.Errorf("stdout:\n%s\nstderr:\n%s", out, errOut)
	}
	m := readReport(t, js)
	list, _ := m["pipeline"].([]any)
	if len(list) != 4 {
		t.Fatalf("%d pipeline results, want 4", len(list))
	}
	for _, e := range list {
		o := e.(map[string]any)
		for _, k := range []string{"mode", "family", "size", "flows", "case", "ns_per_pkt", "mpps"} {
			if _, ok := o[k]; !ok {
				t.Errorf("pipeline entry has no %q", k)
			}
		}
		if mpps, _ := o["mpps"].(float64); mpps <= 0 {
			t.Errorf("mpps %v", o["mpps"])
		}
	}
	if cfg := m["config"].(map[string]any); cfg["flows"] != "1,1000" || cfg["runs"] != "3" {
		t.Errorf("config %v", cfg)
	}
	checkSVG(t, svg)

	// The saved report prints and draws again.
	svg2 := filepath.Join(dir, "again.svg")
	code, again, errOut := runCLI(t, "perf", "show", "--svg", svg2, js)
	if code != 0 || again != out {
		t.Errorf("show: exit %d, stderr %q\n%s\nwant\n%s", code, errOut, again, out)
	}
	checkSVG(t, svg2)
	if code, _, _ := runCLI(t, "perf", "show"); code != 2 {
		t.Errorf("show without a file: exit %d", code)
	}
	if code, _, _ := runCLI(t, "perf", "show", filepath.Join(dir, "missing.json")); code != 1 {
		t.Errorf("show of a missing file: exit %d", code)
	}
}

func TestPerfRingsJSONStdout(t *testing.T) {
	code, out, errOut := runCLI(t, "perf", "rings", "--runs", "2", "--duration", "10ms", "--flows", "100", "--cpu", "-1", "--kernel-cpu", "-1", "--json", "-")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, errOut)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, out)
	}
	r, _ := m["rings"].(map[string]any)
	if _, ok := r["mpps"].(float64); !ok {
		t.Errorf("rings has no mpps: %v", r)
	}
	if p, _ := r["packets"].(float64); p <= 0 {
		t.Errorf("rings forwarded nothing: %v", r)
	}
}

func TestPerfE2E(t *testing.T) {
	testutil.RequirePrivileged(t)
	b := make([]byte, 3)
	rand.Read(b)
	prefix := "wpc" + hex.EncodeToString(b)
	dir := t.TempDir()
	js, svg := filepath.Join(dir, "e.json"), filepath.Join(dir, "e.svg")
	code, out, errOut := runCLI(t, "perf", "e2e", "--runs", "1", "--duration", "50ms", "--search-steps", "1",
		"--loads", "0.05", "--flows", "1000", "--prefix", prefix, "--json", js, "--svg", svg)
	if left, _ := lab.ListNS(prefix); len(left) > 0 {
		t.Errorf("namespaces left behind: %v", left)
		for _, n := range left {
			lab.RemoveNS(n)
		}
	}
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, errOut)
	}
	if !strings.Contains(out, "weir/reference") || !strings.Contains(errOut, "reference") {
		t.Errorf("stdout:\n%s\nstderr:\n%s", out, errOut)
	}
	m := readReport(t, js)
	e, _ := m["e2e"].(map[string]any)
	for _, k := range []string{"weir_mpps", "reference_mpps", "ratio", "loss", "max_lossless_mpps", "afxdp_mode", "latency_us"} {
		if _, ok := e[k]; !ok {
			t.Errorf("e2e has no %q", k)
		}
	}
	lat, _ := e["latency_us"].(map[string]any)
	for _, k := range []string{"p50", "p99", "p999"} {
		if _, ok := lat[k]; !ok {
			t.Errorf("e2e.latency_us has no %q", k)
		}
	}
	if w, _ := e["weir_mpps"].(float64); w <= 0 {
		t.Errorf("weir_mpps %v", e["weir_mpps"])
	}
	if l, _ := e["loss"].(float64); l < 0 || l > 1 {
		t.Errorf("loss %v", l)
	}
	checkSVG(t, svg)
}
