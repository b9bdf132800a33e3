package main

import (
	"path/filepath"
	"strings"
	"testing"
)

var configDir = filepath.Join("..", "..", "appliance", "testdata", "config")

func TestCheckValid(t *testing.T) {
	for _, tc := range []struct{ file, summary string }{
		{filepath.Join("..", "..", "appliance.toml"), "ok: 3 VIPs, 6 backends, interface eth1"},
		{filepath.Join(configDir, "good", "minimal.toml"), "ok: 1 VIP, 1 backend, interface eth1"},
	} {
		code, out, errOut := runCLI(t, "check", "-c", tc.file)
		if code != 0 || errOut != "" {
			t.Fatalf("%s: exit %d, stderr:\n%s", tc.file, code, errOut)
		}
		if want := tc.file + ": " + tc.summary + "\n"; out != want {
			t.Errorf("stdout %q, want %q", out, want)
		}
	}
}

func TestCheckInvalid(t *testing.T) {
	file := filepath.Join(configDir, "bad", "many.toml")
	code, out, errOut := runCLI(t, "check", "-c", file)
	if code != 1 || out != "" {
		t.Fatalf("exit %d, stdout %q", code, out)
	}
	lines := strings.Split(strings.TrimSuffix(errOut, "\n"), "\n")
	// Every problem on a line of its own, in file order, then a count.
	want := []string{
		file + ":5:8: appliance.cpus: ",
		file + ":6:13: appliance.ring_size: ",
		file + ":7:1: appliance.colour: unknown key",
		file + ":10:15: flows.tcp_timeout: ",
		file + ":20:11: vip[0].health.timeout: ",
		file + ":23:11: vip[0].backend[0].address: ",
		file + ":24:10: vip[0].backend[0].weight: ",
		file + ":27:11: vip[0].backend[1].address: ",
		file + ":28:7: vip[0].backend[1].mac: ",
		file + ":30:3: vip[1].backend: ",
		"weir check: " + file + ": 10 problems",
	}
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(want), errOut)
	}
	for i := range want {
		if !strings.HasPrefix(lines[i], want[i]) {
			t.Errorf("line %d: %q, want prefix %q", i, lines[i], want[i])
		}
	}
}

func TestCheckOneProblem(t *testing.T) {
	file := filepath.Join(configDir, "bad", "syntax.toml")
	code, _, errOut := runCLI(t, "check", "-c", file)
	if code != 1 || !strings.HasPrefix(errOut, file+":3:12: expected value") || !strings.HasSuffix(errOut, ": 1 problem\n") {
		t.Fatalf("exit %d, stderr:\n%s", code, errOut)
	}
}

func TestCheckMissingFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "absent.toml")
	code, _, errOut := runCLI(t, "check", "-c", file)
	if code != 1 || !strings.Contains(errOut, "no such file") || !strings.Contains(errOut, file) {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
}

func TestCheckHelp(t *testing.T) {
	code, out, errOut := runCLI(t, "check", "-h")
	if code != 0 || errOut != "" {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	for _, want := range []string{"usage: weir check [-c FILE]", "-c FILE", "/etc/weir/appliance.toml", "file:line:col"} {
		if !strings.Contains(out, want) {
			t.Errorf("help lacks %q:\n%s", want, out)
		}
	}
}

func TestCheckUsageErrors(t *testing.T) {
	for _, args := range [][]string{{"check", "-x"}, {"check", "-c"}, {"check", "appliance.toml"}} {
		code, out, errOut := runCLI(t, args...)
		if code != 2 || out != "" || !strings.Contains(errOut, "usage: weir check") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, code, out, errOut)
		}
	}
}
