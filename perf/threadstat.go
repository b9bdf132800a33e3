package perf

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// threadTimes are one thread's CPU times: user and system from
// /proc/self/task/<tid>/stat (clock ticks of userHZ) and, from schedstat,
// the nanoseconds it ran and the nanoseconds it waited on a run queue
// while runnable (time another task had its CPU).
type threadTimes struct {
	UserTicks, SystemTicks uint64
	RunNs, WaitNs          uint64
}

// userHZ is the unit of the times in /proc/<pid>/stat: USER_HZ, 100 on
// every architecture weir runs on.
const userHZ = 100

// ThreadUse is how a thread of weir spent an interval, in percent of it.
type ThreadUse struct {
	Threads int     `json:"threads"` // threads found (summed)
	Running float64 `json:"running"` // on a CPU (user + system, softirq work done in its context included)
	User    float64 `json:"user"`
	System  float64 `json:"system"`
	// Waiting is the time it was runnable but another task had the CPU:
	// on a shared machine, the share other work took from it.
	Waiting float64 `json:"waiting"`
}

// parseThreadStat reads utime and stime from a /proc/<pid>/task/<tid>/stat
// line. The command name may hold spaces and parentheses, so the fields are
// counted after its last ')'.
func parseThreadStat(line string) (utime, stime uint64, err error) {
	i := strings.LastIndexByte(line, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("thread stat %q: no command name", line)
	}
	// After the name: state (field 3) ... utime is field 14, stime 15.
	f := strings.Fields(line[i+1:])
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("thread stat %q: too few fields", line)
	}
	if utime, err = strconv.ParseUint(f[11], 10, 64); err != nil {
		return 0, 0, fmt.Errorf("thread stat utime: %w", err)
	}
	if stime, err = strconv.ParseUint(f[12], 10, 64); err != nil {
		return 0, 0, fmt.Errorf("thread stat stime: %w", err)
	}
	return utime, stime, nil
}

// parseSchedstat reads the run and wait times of a schedstat line.
func parseSchedstat(line string) (run, wait uint64, err error) {
	f := strings.Fields(line)
	if len(f) < 2 {
		return 0, 0, fmt.Errorf("schedstat %q: too few fields", line)
	}
	if run, err = strconv.ParseUint(f[0], 10, 64); err != nil {
		return 0, 0, fmt.Errorf("schedstat: %w", err)
	}
	if wait, err = strconv.ParseUint(f[1], 10, 64); err != nil {
		return 0, 0, fmt.Errorf("schedstat: %w", err)
	}
	return run, wait, nil
}

func readThread(tid int) (threadTimes, error) {
	var t threadTimes
	dir := filepath.Join("/proc/self/task", strconv.Itoa(tid))
	stat, err := os.ReadFile(filepath.Join(dir, "stat"))
	if err != nil {
		return t, err
	}
	if t.UserTicks, t.SystemTicks, err = parseThreadStat(string(stat)); err != nil {
		return t, err
	}
	ss, err := os.ReadFile(filepath.Join(dir, "schedstat"))
	if err != nil {
		return t, err
	}
	t.RunNs, t.WaitNs, err = parseSchedstat(string(ss))
	return t, err
}

// pinnedThreads lists the threads of this process whose affinity is
// exactly cpu: a worker that pinned itself there.
func pinnedThreads(cpu int) ([]int, error) {
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return nil, err
	}
	want := strconv.Itoa(cpu)
	var tids []int
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := os.ReadFile(filepath.Join("/proc/self/task", e.Name(), "status"))
		if err != nil {
			continue // the thread exited
		}
		for _, l := range strings.Split(string(st), "\n") {
			if v, ok := strings.CutPrefix(l, "Cpus_allowed_list:"); ok && strings.TrimSpace(v) == want {
				tids = append(tids, tid)
			}
		}
	}
	return tids, nil
}

// waitPinnedThreads waits up to timeout for a thread pinned to cpu to
// appear (a worker pins itself as it starts).
func waitPinnedThreads(cpu int, timeout time.Duration) ([]int, error) {
	deadline := time.Now().Add(timeout)
	for {
		tids, err := pinnedThreads(cpu)
		if err != nil || len(tids) > 0 {
			return tids, err
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no thread pinned to cpu %d after %v", cpu, timeout)
		}
		time.Sleep(time.Millisecond)
	}
}

// threadSample holds readings of a set of threads.
type threadSample map[int]threadTimes

func sampleThreads(tids []int) (threadSample, error) {
	s := make(threadSample, len(tids))
	var errs []error
	for _, tid := range tids {
		t, err := readThread(tid)
		if err != nil {
			errs = append(errs, fmt.Errorf("thread %d: %w", tid, err))
			continue
		}
		s[tid] = t
	}
	return s, errors.Join(errs...)
}

// threadUse sums what the threads in both samples did over an interval of
// d.
func threadUse(before, after threadSample, d time.Duration) ThreadUse {
	var u ThreadUse
	if d <= 0 {
		return u
	}
	var run, wait, user, sys uint64
	for tid, a := range after {
		b, ok := before[tid]
		if !ok {
			continue
		}
		u.Threads++
		run += a.RunNs - b.RunNs
		wait += a.WaitNs - b.WaitNs
		user += a.UserTicks - b.UserTicks
		sys += a.SystemTicks - b.SystemTicks
	}
	ns := float64(d.Nanoseconds())
	u.Running = 100 * float64(run) / ns
	u.Waiting = 100 * float64(wait) / ns
	tickNs := float64(time.Second / userHZ)
	u.User = 100 * float64(user) * tickNs / ns
	u.System = 100 * float64(sys) * tickNs / ns
	return u
}
