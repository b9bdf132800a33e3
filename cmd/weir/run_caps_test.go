package main

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weirlb/weir/lab"
)

// The unit's capability set is proven here by running the real binary the
// way systemd would: as an unprivileged user (nobody) whose only privileges
// are the unit's AmbientCapabilities= and LimitMEMLOCK=, read from
// deploy/weir.service itself. It must start, forward, reload and stop; and
// without each of those capabilities the kernel must refuse it (run with
// -no-cap-check), which is what makes each one necessary.

const nobody = 65534

// unitFile is deploy/weir.service, relative to this package.
const unitFile = "../../deploy/weir.service"

var capNames = map[string]uintptr{
	"CAP_NET_ADMIN":    unix.CAP_NET_ADMIN,
	"CAP_NET_RAW":      unix.CAP_NET_RAW,
	"CAP_IPC_LOCK":     unix.CAP_IPC_LOCK,
	"CAP_SYS_ADMIN":    unix.CAP_SYS_ADMIN,
	"CAP_SYS_NICE":     unix.CAP_SYS_NICE,
	"CAP_SYS_RESOURCE": unix.CAP_SYS_RESOURCE,
	"CAP_PERFMON":      unix.CAP_PERFMON,
	"CAP_BPF":          unix.CAP_BPF,
}

// unitSettings reads the capability and memlock settings of the unit.
type unitSettings struct {
	ambient, bounding []string
	memlock           uint64 // RLIM_INFINITY for "infinity"
}

func readUnit(t *testing.T) unitSettings {
	t.Helper()
	f, err := os.Open(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var u unitSettings
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		if !ok || strings.HasPrefix(k, "#") {
			continue
		}
		seen[k] = true
		switch k {
		case "AmbientCapabilities":
			u.ambient = strings.Fields(v)
		case "CapabilityBoundingSet":
			u.bounding = strings.Fields(v)
		case "LimitMEMLOCK":
			if v != "infinity" {
				t.Fatalf("%s: LimitMEMLOCK=%s: this test only knows infinity", unitFile, v)
			}
			u.memlock = unix.RLIM_INFINITY
		}
	}
	for _, k := range []string{"AmbientCapabilities", "CapabilityBoundingSet", "LimitMEMLOCK", "User"} {
		if !seen[k] {
			t.Fatalf("%s has no %s=", unitFile, k)
		}
	}
	if !slices.Equal(u.ambient, u.bounding) {
		t.Fatalf("%s: AmbientCapabilities %v differ from CapabilityBoundingSet %v", unitFile, u.ambient, u.bounding)
	}
	return u
}

func capBits(t *testing.T, names []string) []uintptr {
	t.Helper()
	var bits []uintptr
	for _, n := range names {
		b, ok := capNames[n]
		if !ok {
			t.Fatalf("unknown capability %s", n)
		}
		bits = append(bits, b)
	}
	return bits
}

func without(names []string, drop string) []string {
	return slices.DeleteFunc(slices.Clone(names), func(n string) bool { return n == drop })
}

// buildWeir builds this command into a directory nobody can read.
func buildWeir(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(tempDirFor(t, nobody, false), "weir")
	start := time.Now()
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	t.Logf("built %s in %s", bin, time.Since(start).Round(time.Millisecond))
	return bin
}

// canSetMemlock reports whether this process may set RLIMIT_MEMLOCK to v
// (raising the hard limit needs CAP_SYS_RESOURCE).
func canSetMemlock(v uint64) bool {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &lim); err != nil {
		return false
	}
	if v <= lim.Max {
		return true
	}
	have, err := effectiveCaps()
	return err == nil && have.has(unix.CAP_SYS_RESOURCE)
}

// weirProc is a weir child process.
type weirProc struct {
	cmd  *exec.Cmd
	out  *logBuffer // stdout and stderr
	done chan struct{}
	err  error // Wait's, once done is closed
}

// startWeir starts bin with args as nobody, with exactly the ambient
// capabilities caps and RLIMIT_MEMLOCK set to memlock (soft and hard), in
// the network namespace ns: the way systemd starts the unit's ExecStart.
// memlock must be one that setMemlockWorks accepts.
func startWeir(t *testing.T, ns *lab.NS, bin string, caps []string, memlock uint64, args ...string) *weirProc {
	t.Helper()
	p := &weirProc{out: &logBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Dir = "/"
	p.cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential:  &syscall.Credential{Uid: nobody, Gid: nobody},
		AmbientCaps: capBits(t, caps),
	}
	// The child inherits the namespace of the thread that forks it, and
	// the rlimits of this process, set around the fork as systemd sets
	// LimitMEMLOCK= before exec.
	err := ns.Do(func() error {
		var old unix.Rlimit
		if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &old); err != nil {
			return err
		}
		if err := unix.Setrlimit(unix.RLIMIT_MEMLOCK, &unix.Rlimit{Cur: memlock, Max: memlock}); err != nil {
			return err
		}
		defer unix.Setrlimit(unix.RLIMIT_MEMLOCK, &old)
		return p.cmd.Start()
	})
	if err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// waitRunning waits for weir's "running" log line, failing if it exits.
func (p *weirProc) waitRunning(t *testing.T) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for len(p.out.lines("msg=running")) == 0 {
		select {
		case <-p.done:
			t.Fatalf("weir exited (%v) before running:\n%s", p.err, p.out)
		case <-deadline:
			t.Fatalf("weir not running after 20s:\n%s", p.out)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// exit waits for the process to end and returns its exit status.
func (p *weirProc) exit(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(within):
		t.Fatalf("weir still running after %s:\n%s", within, p.out)
	}
	var ee *exec.ExitError
	switch {
	case p.err == nil:
		return 0
	case errors.As(p.err, &ee) && ee.Exited():
		return ee.ExitCode()
	}
	t.Fatalf("weir: %v\n%s", p.err, p.out)
	return -1
}

// runFailing runs weir, expects it to exit 1 without starting, and returns
// its output.
func runFailing(t *testing.T, d *lab.DSR, bin string, caps []string, memlock uint64, args ...string) string {
	t.Helper()
	p := startWeir(t, d.Appliance.NS, bin, caps, memlock, args...)
	if code := p.exit(t, 20*time.Second); code != 1 {
		t.Fatalf("exit status %d, want 1:\n%s", code, p.out)
	}
	if xdpProgram(t, d) != 0 {
		t.Errorf("a failed start left an XDP program attached")
	}
	return p.out.String()
}

// runAndServe starts weir, checks that it forwards HTTP through the VIP,
// and returns it running.
func runAndServe(t *testing.T, d *lab.DSR, bin string, caps []string, memlock uint64, args ...string) *weirProc {
	t.Helper()
	p := startWeir(t, d.Appliance.NS, bin, caps, memlock, args...)
	p.waitRunning(t)
	if xdpProgram(t, d) == 0 {
		t.Fatalf("weir runs but no XDP program is attached:\n%s", p.out)
	}
	served := map[string]int{}
	for i := range 12 {
		name, err := getVIP(d)
		if err != nil {
			t.Fatalf("request %d through the VIP: %v\n%s", i, err, p.out)
		}
		served[name]++
	}
	t.Logf("12 requests through the VIP, served by %v", served)
	return p
}

// stopWeir sends SIGTERM and checks a clean stop: exit 0, final counters
// logged, XDP detached.
func stopWeir(t *testing.T, d *lab.DSR, p *weirProc) {
	t.Helper()
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.exit(t, 15*time.Second); code != 0 {
		t.Fatalf("exit status %d after SIGTERM:\n%s", code, p.out)
	}
	t.Logf("stopped in %s", time.Since(start).Round(time.Millisecond))
	if len(p.out.lines("msg=\"final counters\"", "forwarded=")) != 1 || len(p.out.lines("msg=\"stopped cleanly\"")) != 1 {
		t.Errorf("no final counters or clean stop in the log:\n%s", p.out)
	}
	if id := xdpProgram(t, d); id != 0 {
		t.Errorf("XDP program %d still attached after weir stopped", id)
	}
}

func TestRunUnderUnitCapabilities(t *testing.T) {
	u := readUnit(t)
	d := newRunLab(t, 2)
	bin := buildWeir(t)
	cfgDir := tempDirFor(t, nobody, false)
	cfgPath := filepath.Join(cfgDir, "appliance.toml")
	writeFile(t, cfgPath, runConfig(t, d, []uint32{1, 1}))
	runDir := tempDirFor(t, nobody, true)
	pidFile := filepath.Join(runDir, "weir.pid")

	// systemd sets LimitMEMLOCK= as root before it drops privileges; here
	// this process sets it before the fork, which needs CAP_SYS_RESOURCE
	// to raise the hard limit. Some sandboxes withhold that: the unit then
	// runs with the sandbox's hard limit and relies on CAP_IPC_LOCK.
	var hard unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &hard); err != nil {
		t.Fatal(err)
	}
	unitMemlock := u.memlock
	if !canSetMemlock(u.memlock) {
		t.Logf("cannot raise RLIMIT_MEMLOCK to the unit's LimitMEMLOCK (no CAP_SYS_RESOURCE here): the unit runs with the hard limit, %s", byteSize(hard.Max))
		unitMemlock = hard.Max
	}
	smallMemlock := min(uint64(8<<20), hard.Max) // the kernel's default RLIMIT_MEMLOCK, or less

	t.Run("unit", func(t *testing.T) {
		p := runAndServe(t, d, bin, u.ambient, unitMemlock, "run", "-c", cfgPath, "-pid-file", pidFile)
		if pid, err := readPIDFile(pidFile); err != nil || pid != p.cmd.Process.Pid {
			t.Fatalf("pid file: %d, %v; want %d", pid, err, p.cmd.Process.Pid)
		}
		// ExecReload: `weir reload` as the unit's user, with no capability.
		reload := func() (int, string) {
			cmd := exec.Command(bin, "reload", "-pid-file", pidFile)
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if err != nil && !errors.As(err, &ee) {
				t.Fatalf("weir reload: %v", err)
			}
			return cmd.ProcessState.ExitCode(), string(out)
		}
		writeFile(t, cfgPath, append(runConfig(t, d, []uint32{1, 1}), "\n[[vip]]\nname = \"bad\"\naddress = \"192.0.2.300\"\nport = 0\n"...))
		code, out := reload()
		t.Logf("weir reload of a bad file: exit %d\n%s", code, out)
		if code != 1 || !strings.Contains(out, "reload refused: the configuration is invalid") ||
			!strings.Contains(out, cfgPath+":") {
			t.Errorf("bad reload: exit %d, want 1 and every problem with its position:\n%s", code, out)
		}
		writeFile(t, cfgPath, runConfig(t, d, []uint32{1, 3}))
		code, out = reload()
		t.Logf("weir reload of a good file: exit %d\n%s", code, out)
		if code != 0 || !strings.Contains(out, "reload applied: generation") || !strings.Contains(out, "1 backend(s) changed") {
			t.Errorf("good reload: exit %d, want 0 and the change:\n%s", code, out)
		}
		if _, err := getVIP(d); err != nil {
			t.Errorf("request after reloads: %v", err)
		}
		stopWeir(t, d, p)
		if _, err := os.Stat(pidFile); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("pid file left behind: %v", err)
		}
		if t.Failed() {
			t.Logf("weir's log:\n%s", p.out)
		}
	})
	writeFile(t, cfgPath, runConfig(t, d, []uint32{1, 1}))

	// CAP_IPC_LOCK and LimitMEMLOCK=infinity each let the UMEM be locked;
	// with neither, weir cannot start.
	noLock := without(u.ambient, "CAP_IPC_LOCK")
	t.Run("LimitMEMLOCK=infinity instead of CAP_IPC_LOCK", func(t *testing.T) {
		if !canSetMemlock(unix.RLIM_INFINITY) {
			t.Skip("this process cannot raise RLIMIT_MEMLOCK to infinity (no CAP_SYS_RESOURCE in this sandbox), so it cannot emulate LimitMEMLOCK=infinity")
		}
		p := runAndServe(t, d, bin, noLock, unix.RLIM_INFINITY, "run", "-c", cfgPath)
		stopWeir(t, d, p)
	})
	t.Run("neither CAP_IPC_LOCK nor LimitMEMLOCK", func(t *testing.T) {
		out := runFailing(t, d, bin, noLock, smallMemlock, "run", "-c", cfgPath)
		t.Logf("weir run says:\n%s", out)
		if !strings.Contains(out, "RLIMIT_MEMLOCK is limited to "+byteSize(smallMemlock)) ||
			!strings.Contains(out, "LimitMEMLOCK=infinity") || !strings.Contains(out, "CAP_IPC_LOCK") {
			t.Errorf("the message does not say what to change:\n%s", out)
		}
		out = runFailing(t, d, bin, noLock, smallMemlock, "run", "-no-cap-check", "-c", cfgPath)
		t.Logf("without weir's check (-no-cap-check):\n%s", out)
		if !strings.Contains(out, "LimitMEMLOCK=infinity") || !strings.Contains(out, "CAP_IPC_LOCK") {
			t.Errorf("the refusal is not explained:\n%s", out)
		}
	})

	for _, c := range noLock {
		t.Run("without "+c, func(t *testing.T) {
			caps := without(u.ambient, c)
			out := runFailing(t, d, bin, caps, unitMemlock, "run", "-c", cfgPath)
			t.Logf("weir run says:\n%s", out)
			if !strings.Contains(out, "missing capability "+c) || !strings.Contains(out, "AmbientCapabilities=") {
				t.Errorf("the message does not name %s and how to grant it:\n%s", c, out)
			}
			// The kernel itself refuses: the capability is necessary,
			// not just demanded by weir's check.
			out = runFailing(t, d, bin, caps, unitMemlock, "run", "-no-cap-check", "-c", cfgPath)
			t.Logf("the kernel says (-no-cap-check):\n%s", out)
			refused := strings.Contains(out, "operation not permitted") || strings.Contains(out, "permission denied")
			if !refused || !strings.Contains(out, "is needed to") || !strings.Contains(out, c) {
				t.Errorf("the kernel's refusal does not name %s:\n%s", c, out)
			}
		})
	}
}
