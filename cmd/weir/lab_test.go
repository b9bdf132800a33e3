package main

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/weirlb/weir/appliance"
	"github.com/weirlb/weir/internal/testutil"
)

// TestLab runs `weir lab --json` in-process for every mode and family: real
// HTTP over fresh TCP connections through the appliance to three backends
// (DSR on one L2 segment; IPIP and GUE behind a router, decapsulated by the
// project's XDP program on each backend).
func TestLab(t *testing.T) {
	testutil.RequirePrivileged(t)
	for _, mode := range []string{"dsr", "ipip", "gue"} {
		for _, family := range []int{4, 6} {
			t.Run(fmt.Sprintf("%s/ipv%d", mode, family), func(t *testing.T) {
				const n = 200
				code, out, errOut := runCLI(t, "lab", "-mode", mode, "-family", fmt.Sprint(family), "-n", fmt.Sprint(n), "-json")
				if code != 0 {
					t.Errorf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
				}
				var rep map[string]any
				if err := json.Unmarshal([]byte(out), &rep); err != nil {
					t.Fatalf("report is not JSON: %v\n%s", err, out)
				}
				for _, k := range []string{"requests", "succeeded", "resets_sent", "mode", "afxdp_mode", "per_backend", "weights", "counters"} {
					if _, ok := rep[k]; !ok {
						t.Errorf("report lacks key %q", k)
					}
				}
				var r labReport
				json.Unmarshal([]byte(out), &r)
				if r.Requests != n || r.Succeeded != n || r.ResetsSent != 0 || !r.Pass {
					t.Errorf("requests %d succeeded %d resets %d pass %v; errors %v", r.Requests, r.Succeeded, r.ResetsSent, r.Pass, r.Errors)
				}
				if r.Mode != mode || r.AFXDPMode != "copy" {
					t.Errorf("mode %q afxdp %q, want %q and copy (veth)", r.Mode, r.AFXDPMode, mode)
				}
				checkShares(t, &r)
				if r.Counters.Forwarded == 0 || r.Counters.Received < uint64(n) {
					t.Errorf("counters: %+v", r.Counters)
				}
				for q, rx := range r.Counters.PerQueueReceived {
					if rx == 0 {
						t.Errorf("queue %d received nothing: %v", q, r.Counters.PerQueueReceived)
					}
				}
				if mode != "dsr" && r.Counters.Decapsulated < r.Counters.Forwarded {
					t.Errorf("backends decapsulated %d of %d forwarded packets", r.Counters.Decapsulated, r.Counters.Forwarded)
				}
			})
		}
	}
}

// checkShares checks each backend's share of requests against its weight's
// share: with 200 requests the binomial standard deviation of a 25% share is
// about 3 points; allow 4 of them.
func checkShares(t *testing.T, r *labReport) {
	t.Helper()
	var wsum uint32
	for _, w := range r.Weights {
		wsum += w
	}
	for name, w := range r.Weights {
		want := float64(w) / float64(wsum)
		got := float64(r.PerBackend[name]) / float64(r.Succeeded)
		sd := math.Sqrt(want * (1 - want) / float64(r.Succeeded))
		if math.Abs(got-want) > 4*sd {
			t.Errorf("backend %s: share %.3f, weight share %.3f (±%.3f)", name, got, want, 4*sd)
		}
	}
}

func TestLabFlags(t *testing.T) {
	for _, args := range [][]string{
		{"lab", "-mode", "nat"},
		{"lab", "-family", "5"},
		{"lab", "-n", "0"},
		{"lab", "extra"},
	} {
		if code, _, errOut := runCLI(t, args...); code != 2 || errOut == "" {
			t.Errorf("%v: exit %d, stderr %q; want 2 and a message", args, code, errOut)
		}
	}
	code, _, errOut := runCLI(t, "lab", "-h")
	if code != 0 || !strings.Contains(errOut, "-mode") {
		t.Errorf("-h: exit %d, stderr %q", code, errOut)
	}
}

// TestLabConfigIsValid checks that the embedded configuration, filled in for
// every mode and family, is one the appliance accepts.
func TestLabConfigIsValid(t *testing.T) {
	for _, mode := range []string{"dsr", "ipip", "gue"} {
		for _, family := range []int{4, 6} {
			f := labFlags{mode: mode, family: family, requests: 1, concurrency: 1}
			code, out, errOut := runCLI(t, "lab", "-mode", mode, "-family", fmt.Sprint(family), "-print-config")
			if code != 0 {
				t.Fatalf("%s/%d: exit %d: %s", mode, family, code, errOut)
			}
			cfg, err := appliance.ParseConfig("lab.toml", []byte(out))
			if err != nil {
				t.Fatalf("%s/%d: embedded config refused:\n%v\n%s", mode, family, err, out)
			}
			if got := cfg.VIPs[0].Mode.String(); got != mode {
				t.Errorf("%s/%d: config mode %s", mode, family, got)
			}
			if len(cfg.VIPs[0].Backends) != len(labWeights) || cfg.VIPs[0].Addr != exampleLabTopology(f).VIP {
				t.Errorf("%s/%d: config VIP %+v", mode, family, cfg.VIPs[0].VIPKey)
			}
		}
	}
}
