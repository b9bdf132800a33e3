package perf

import (
	"fmt"
	"runtime"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weirlb/weir/lab"
)

// genThread is the generator's OS thread: locked, inside the generator's
// network namespace (BPF_PROG_TEST_RUN looks the ingress interface up
// there), pinned to its CPU. It lives for the whole benchmark and is never
// unlocked, so the thread, its namespace and its affinity end with it.
type genThread struct {
	reqs chan genRequest
	res  chan genResult
	tid  int // the thread's id, for its CPU times
}

type genRequest struct {
	cfg generatorGenConfig
	d   time.Duration
}

type genResult struct {
	start, end time.Time // wall time of the test runs
	counters   genCounters
	err        error
}

// Live-frames test runs: each call sets up and tears down a page pool (and
// may wait for an RCU grace period), so a run is one call when possible.
// Its repeat count is sized from the iteration rate of the previous call
// with some slack; the program itself stops sending at the deadline, so the
// slack costs only cheap XDP_DROP iterations. A call that falls short is
// followed by another.
const (
	maxCall       = time.Second // bounds how long a cancelled benchmark waits
	repeatSlack   = 1.25
	minRepeat     = 1 << 12
	maxRepeat     = 1 << 31
	initialPerSec = 5e6
)

func startGenThread(ns *lab.NS, cpu int, g *generator, frame []byte, ifindex int, batch uint32) (*genThread, error) {
	t := &genThread{reqs: make(chan genRequest), res: make(chan genResult)}
	ready := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// Never unlocked: the thread exits with this goroutine.
		if err := enterNS(ns); err != nil {
			ready <- err
			return
		}
		var set unix.CPUSet
		set.Set(cpu)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			ready <- fmt.Errorf("generator: pin to cpu %d: %w", cpu, err)
			return
		}
		t.tid = unix.Gettid()
		ready <- nil
		perSec := float64(initialPerSec)
		for req := range t.reqs {
			t.res <- t.serve(g, req, frame, ifindex, batch, &perSec)
		}
	}()
	if err := <-ready; err != nil {
		return nil, err
	}
	return t, nil
}

// serve configures the generator for one request and sends until its
// deadline.
func (t *genThread) serve(g *generator, req genRequest, frame []byte, ifindex int, batch uint32, perSec *float64) genResult {
	var r genResult
	now, err := monotonicNs()
	if err != nil {
		r.err = err
		return r
	}
	cfg := req.cfg
	cfg.StopNs = now + uint64(req.d)
	if r.err = g.configure(cfg); r.err != nil {
		return r
	}
	r.start = time.Now()
	for {
		now, err := monotonicNs()
		if err != nil {
			r.err = err
			break
		}
		if now >= cfg.StopNs {
			break
		}
		left := time.Duration(cfg.StopNs - now)
		want := *perSec * min(left, maxCall).Seconds() * repeatSlack
		repeat := uint32(min(max(want, minRepeat), maxRepeat))
		took, err := g.run(frame, ifindex, repeat, batch)
		if err != nil {
			r.err = err
			break
		}
		if took > 0 {
			*perSec = float64(repeat) / took.Seconds()
		}
	}
	r.end = time.Now()
	if r.err == nil {
		r.counters, r.err = g.counters()
	}
	return r
}

// generate sends frames as cfg says for about d.
func (t *genThread) generate(cfg generatorGenConfig, d time.Duration) genResult {
	t.reqs <- genRequest{cfg: cfg, d: d}
	return <-t.res
}

// stop ends the thread.
func (t *genThread) stop() { close(t.reqs) }

// monotonicNs reads CLOCK_MONOTONIC, the clock of bpf_ktime_get_ns.
func monotonicNs() (uint64, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, fmt.Errorf("clock_gettime: %w", err)
	}
	return uint64(ts.Nano()), nil
}

// enterNS moves the calling thread into ns's network namespace. The caller
// has locked the thread and never unlocks it.
func enterNS(ns *lab.NS) error {
	fd, err := unix.Open(ns.Path(), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("generator: open namespace %s: %w", ns, err)
	}
	defer unix.Close(fd)
	if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("generator: enter namespace %s: %w", ns, err)
	}
	return nil
}
