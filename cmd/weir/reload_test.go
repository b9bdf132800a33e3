package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestReloadUsage(t *testing.T) {
	code, out, _ := runCLI(t, "reload", "-h")
	if code != 0 || !strings.Contains(out, "usage: weir reload") {
		t.Errorf("reload -h: exit %d\n%s", code, out)
	}
	code, _, errOut := runCLI(t, "reload", "-pid-file", filepath.Join(t.TempDir(), "none.pid"))
	if code != 1 || !strings.Contains(errOut, "is weir running with -pid-file") {
		t.Errorf("missing pid file: exit %d\n%s", code, errOut)
	}
}

func writeStatus(t *testing.T, path string, st *runStatus) {
	t.Helper()
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeFileAtomic(path, b); err != nil {
		t.Fatal(err)
	}
}

// A pid file that names some other process (the pid was reused after weir
// died) must never lead to a signal: SIGHUP kills most programs.
func TestReloadRefusesStalePIDFile(t *testing.T) {
	dir := t.TempDir()
	pidFile, statusFile := filepath.Join(dir, "weir.pid"), filepath.Join(dir, "weir.status.json")
	victim := exec.Command("sleep", "30")
	if err := victim.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- victim.Wait() }()
	defer func() {
		victim.Process.Kill()
		<-exited
	}()
	pid := victim.Process.Pid
	os.WriteFile(pidFile, []byte(strconv.Itoa(pid)+"\n"), 0o644)

	start, err := processStartTime(pid)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		status *runStatus // nil: no status file
		want   string
	}{
		{"no status file", nil, "cannot confirm that process"},
		{"another start time", &runStatus{PID: pid, StartTime: start + 1}, "is not the weir that wrote"},
		{"another pid", &runStatus{PID: pid + 1, StartTime: start}, "is not the weir that wrote"},
	}
	for _, c := range cases {
		os.Remove(statusFile)
		if c.status != nil {
			writeStatus(t, statusFile, c.status)
		}
		code, _, errOut := runCLI(t, "reload", "-pid-file", pidFile, "-wait", "1s")
		if code != 1 || !strings.Contains(errOut, c.want) || !strings.Contains(errOut, "not signalling") {
			t.Errorf("%s: exit %d, want 1 and %q:\n%s", c.name, code, c.want, errOut)
		}
	}
	select {
	case err := <-exited:
		t.Fatalf("the process named by the stale pid file was signalled: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
}

// TestReloadReportsResult plays the running weir in this process: it
// catches SIGHUP and writes the next result to the status file, as
// daemon.reload does. `weir reload` must wait for it and report it.
func TestReloadReportsResult(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "weir.pid")
	statusFile := statusPathFor(pidFile, "")
	if err := writePIDFile(pidFile); err != nil {
		t.Fatal(err)
	}
	start, err := processStartTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	st := &runStatus{PID: os.Getpid(), StartTime: start, Generation: 4,
		LastReload: &reloadStatus{Seq: 7, Outcome: "applied", Generation: 4}}
	writeStatus(t, statusFile, st)
	results := []reloadStatus{
		{Outcome: "applied", Generation: 5, Changes: "1 backend(s) added"},
		{Outcome: "invalid", Generation: 5, Problems: []string{"appliance.toml:3:9: appliance.queues: -1 is out of range"}},
		{Outcome: "restart_required", Generation: 5, RestartKeys: []string{"appliance.interface"}},
		{Outcome: "unchanged", Generation: 5},
	}
	wants := []struct {
		code int
		text string
	}{
		{0, "reload applied: generation 5 (1 backend(s) added)"},
		{1, "appliance.toml:3:9: appliance.queues"},
		{1, "only a restart applies them; generation 5 stays in force\n  appliance.interface"},
		{0, "forwarding state is unchanged"},
	}
	for i, r := range results {
		go func() {
			select {
			case <-hup:
			case <-time.After(5 * time.Second):
				return
			}
			time.Sleep(120 * time.Millisecond) // more than one poll: weir reload must wait
			r.Seq = st.LastReload.Seq + 1
			st.LastReload = &r
			b, _ := json.Marshal(st)
			if err := writeFileAtomic(statusFile, b); err != nil {
				t.Error(err)
			}
		}()
		code, out, errOut := runCLI(t, "reload", "-pid-file", pidFile, "-wait", "5s")
		if code != wants[i].code || !strings.Contains(out+errOut, wants[i].text) {
			t.Errorf("%s: exit %d, want %d and %q:\n%s%s", r.Outcome, code, wants[i].code, wants[i].text, out, errOut)
		}
	}

	// Nobody answers: a timeout, reported as such.
	code, _, errOut := runCLI(t, "reload", "-pid-file", pidFile, "-wait", "300ms")
	<-hup
	if code != 1 || !strings.Contains(errOut, "no result in 300ms") {
		t.Errorf("no answer: exit %d\n%s", code, errOut)
	}
	// -wait 0 only signals.
	code, out, _ := runCLI(t, "reload", "-pid", strconv.Itoa(os.Getpid()), "-status-file", statusFile, "-wait", "0")
	<-hup
	if code != 0 || !strings.Contains(out, "sent SIGHUP") {
		t.Errorf("-wait 0: exit %d\n%s", code, out)
	}
}
