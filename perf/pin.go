package perf

import (
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

// runPinned runs fn on a new goroutine locked to its OS thread, which is
// pinned to cpu (not pinned when cpu < 0), and waits for it. The thread is
// never unlocked: it exits with the goroutine, so its affinity cannot leak to
// other goroutines.
func runPinned(cpu int, fn func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if cpu >= 0 {
			var set unix.CPUSet
			set.Set(cpu)
			if err := unix.SchedSetaffinity(0, &set); err != nil {
				done <- fmt.Errorf("pin to cpu %d: %w", cpu, err)
				return
			}
		}
		done <- fn()
	}()
	return <-done
}

// AllowedCPUs lists the CPUs the process may run on, in increasing order.
func AllowedCPUs() ([]int, error) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return nil, fmt.Errorf("cpu affinity: %w", err)
	}
	var cpus []int
	for c := 0; c < len(set)*64; c++ {
		if set.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	return cpus, nil
}

// checkCPU reports an error unless cpu is one the process may use (or
// negative: not pinned).
func checkCPU(what string, cpu int) error {
	if cpu < 0 {
		return nil
	}
	cpus, err := AllowedCPUs()
	if err != nil {
		return err
	}
	for _, c := range cpus {
		if c == cpu {
			return nil
		}
	}
	return fmt.Errorf("%s cpu %d: not one this process may use %v", what, cpu, cpus)
}
