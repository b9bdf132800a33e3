package perf

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// cpuTimes are one CPU's cumulative times from /proc/stat, in clock ticks.
type cpuTimes struct {
	User, Nice, System, Idle, IOWait, IRQ, SoftIRQ, Steal uint64
}

func (t cpuTimes) total() uint64 {
	return t.User + t.Nice + t.System + t.Idle + t.IOWait + t.IRQ + t.SoftIRQ + t.Steal
}

// CPUUse is where one CPU's time went over an interval, in percent of the
// interval: the process's threads on it and everything else that ran there
// (the machine is shared, so this is an upper bound for weir's share).
type CPUUse struct {
	CPU     int     `json:"cpu"`
	User    float64 `json:"user"`    // user space (nice included): weir's workers spend their batches here
	System  float64 `json:"system"`  // kernel on behalf of a process: sendto, the copy-mode TX path
	SoftIRQ float64 `json:"softirq"` // NAPI: veth receive, XDP programs, the sink
	IRQ     float64 `json:"irq"`
	Idle    float64 `json:"idle"` // iowait included
	Steal   float64 `json:"steal"`
}

// parseProcStat reads the per-CPU lines of /proc/stat.
func parseProcStat(r io.Reader) (map[int]cpuTimes, error) {
	out := make(map[int]cpuTimes)
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 9 || !strings.HasPrefix(f[0], "cpu") || f[0] == "cpu" {
			continue
		}
		cpu, err := strconv.Atoi(f[0][3:])
		if err != nil {
			return nil, fmt.Errorf("/proc/stat: bad line %q", sc.Text())
		}
		var v [8]uint64
		for i := range v {
			if v[i], err = strconv.ParseUint(f[i+1], 10, 64); err != nil {
				return nil, fmt.Errorf("/proc/stat: bad line %q", sc.Text())
			}
		}
		out[cpu] = cpuTimes{User: v[0], Nice: v[1], System: v[2], Idle: v[3], IOWait: v[4], IRQ: v[5], SoftIRQ: v[6], Steal: v[7]}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("/proc/stat: %w", err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("/proc/stat: no per-CPU lines")
	}
	return out, nil
}

func readProcStat() (map[int]cpuTimes, error) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseProcStat(f)
}

// cpuUse computes CPU cpu's use between two readings.
func cpuUse(cpu int, before, after map[int]cpuTimes) CPUUse {
	a, b := before[cpu], after[cpu]
	d := b.total() - a.total()
	u := CPUUse{CPU: cpu}
	if d == 0 || b.total() < a.total() {
		return u
	}
	pct := func(x, y uint64) float64 { return 100 * float64(y-x) / float64(d) }
	u.User = pct(a.User+a.Nice, b.User+b.Nice)
	u.System = pct(a.System, b.System)
	u.SoftIRQ = pct(a.SoftIRQ, b.SoftIRQ)
	u.IRQ = pct(a.IRQ, b.IRQ)
	u.Idle = pct(a.Idle+a.IOWait, b.Idle+b.IOWait)
	u.Steal = pct(a.Steal, b.Steal)
	return u
}
