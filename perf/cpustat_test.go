package perf

import (
	"math"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const procStatBefore = `cpu  100 0 100 1000 0 0 0 0 0 0
cpu0 50 0 50 500 0 0 0 0 0 0
cpu1 50 0 50 500 0 0 0 0 0 0
intr 12345
ctxt 999
`

const procStatAfter = `cpu  200 0 200 1100 0 0 0 0 0 0
cpu0 60 0 60 580 0 0 0 0 0 0
cpu1 100 10 70 510 5 1 3 1 0 0
intr 12345
`

func TestCPUUse(t *testing.T) {
	a, err := parseProcStat(strings.NewReader(procStatBefore))
	if err != nil {
		t.Fatal(err)
	}
	b, err := parseProcStat(strings.NewReader(procStatAfter))
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != 2 || a[1].Idle != 500 {
		t.Fatalf("parsed %+v", a)
	}
	// cpu1 over 100 ticks: user+nice 60, system 20, idle+iowait 15, irq 1, softirq 3, steal 1.
	u := cpuUse(1, a, b)
	want := CPUUse{CPU: 1, User: 60, System: 20, SoftIRQ: 3, IRQ: 1, Idle: 15, Steal: 1}
	for _, f := range []struct {
		name      string
		got, want float64
	}{{"user", u.User, want.User}, {"system", u.System, want.System}, {"softirq", u.SoftIRQ, want.SoftIRQ},
		{"irq", u.IRQ, want.IRQ}, {"idle", u.Idle, want.Idle}, {"steal", u.Steal, want.Steal}} {
		if math.Abs(f.got-f.want) > 1e-9 {
			t.Errorf("%s %.2f, want %.2f", f.name, f.got, f.want)
		}
	}
	// No time passed, or an unknown CPU: all zero.
	if u := cpuUse(0, a, a); u != (CPUUse{CPU: 0}) {
		t.Errorf("no interval: %+v", u)
	}
	if u := cpuUse(7, a, b); u != (CPUUse{CPU: 7}) {
		t.Errorf("unknown cpu: %+v", u)
	}
	if _, err := parseProcStat(strings.NewReader("cpu0 1 2 x 4 5 6 7 8\n")); err == nil {
		t.Error("a bad line parsed")
	}
	if _, err := parseProcStat(strings.NewReader("intr 1\n")); err == nil {
		t.Error("no CPU lines parsed")
	}
	if _, err := readProcStat(); err != nil {
		t.Errorf("this machine's /proc/stat: %v", err)
	}
}

func TestThreadStat(t *testing.T) {
	// The command name may hold spaces and parentheses.
	line := "4242 (weir (worker) 1) R 1 2 3 4 5 6 7 8 9 10 311 57 0 0 20 0 1 0 99 0 0"
	u, s, err := parseThreadStat(line)
	if err != nil || u != 311 || s != 57 {
		t.Fatalf("parseThreadStat = %d, %d, %v", u, s, err)
	}
	if _, _, err := parseThreadStat("4242 weir R 1 2"); err == nil {
		t.Error("a line without a command name parsed")
	}
	run, wait, err := parseSchedstat("230337502 146791609 626\n")
	if err != nil || run != 230337502 || wait != 146791609 {
		t.Fatalf("parseSchedstat = %d, %d, %v", run, wait, err)
	}
	before := threadSample{1: {UserTicks: 10, SystemTicks: 10, RunNs: 1e9, WaitNs: 0}}
	after := threadSample{1: {UserTicks: 20, SystemTicks: 60, RunNs: 1.6e9, WaitNs: 0.1e9}, 2: {RunNs: 5e9}}
	tu := threadUse(before, after, time.Second)
	if tu.Threads != 1 || math.Abs(tu.Running-60) > 1e-9 || math.Abs(tu.Waiting-10) > 1e-9 ||
		math.Abs(tu.User-10) > 1e-9 || math.Abs(tu.System-50) > 1e-9 {
		t.Errorf("threadUse = %+v", tu)
	}
	// This goroutine's own thread is readable.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if _, err := readThread(unix.Gettid()); err != nil {
		t.Errorf("reading this thread: %v", err)
	}
}
