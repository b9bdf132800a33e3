package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

func init() {
	commands["reload"] = command{summary: "make the running weir re-read its configuration, and report the result", run: runReload}
}

// DefaultPIDFile is where deploy/weir.service has `weir run` write its pid
// file (RuntimeDirectory=weir).
const DefaultPIDFile = "/run/weir/weir.pid"

// reloadPoll is how often `weir reload` looks for the result.
const reloadPoll = 50 * time.Millisecond

func reloadUsage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintln(w, "usage: weir reload [-pid-file FILE | -pid N] [-status-file FILE] [-wait DURATION]")
	fmt.Fprintln(w, "\nSend SIGHUP to the running 'weir run' and wait for the result of the reload it triggers.")
	fmt.Fprintln(w, "The process is found by its pid file (never by name) and must match the status file that")
	fmt.Fprintln(w, "'weir run' writes next to it (same process ID and start time): a stale pid file is refused.")
	fmt.Fprintln(w, "Exit status: 0 if the new configuration was applied (or asked for no change), 1 if it was")
	fmt.Fprintln(w, "refused (the running configuration stays in force) or no result came in time, 2 on usage errors.")
	fmt.Fprintln(w, "\nflags:")
	fs.SetOutput(w)
	fs.PrintDefaults()
}

func runReload(ctx context.Context, e *env, args []string) int {
	fs := flag.NewFlagSet("reload", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	pidFile := fs.String("pid-file", DefaultPIDFile, "pid `FILE` of the running weir")
	pid := fs.Int("pid", 0, "process ID of the running weir (instead of -pid-file), such as systemd's $MAINPID")
	statusFile := fs.String("status-file", "", "status `FILE` of the running weir (default: the pid file's name with .status.json)")
	wait := fs.Duration("wait", 10*time.Second, "how long to wait for the result; 0 sends the signal and returns")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			reloadUsage(e.stdout, fs)
			return 0
		}
		fmt.Fprintf(e.stderr, "weir reload: %v\n\n", err)
		reloadUsage(e.stderr, fs)
		return 2
	}
	if fs.NArg() > 0 || *pid < 0 || *wait < 0 {
		fmt.Fprintf(e.stderr, "weir reload: unexpected arguments\n\n")
		reloadUsage(e.stderr, fs)
		return 2
	}
	status := statusPathFor(*pidFile, *statusFile)
	target := *pid
	if target == 0 {
		p, err := readPIDFile(*pidFile)
		if err != nil {
			fmt.Fprintf(e.stderr, "weir reload: %v (is weir running with -pid-file %s?)\n", err, *pidFile)
			return 1
		}
		target = p
	}

	before, err := verifyTarget(target, status)
	if err != nil {
		fmt.Fprintf(e.stderr, "weir reload: %v; not signalling\n", err)
		return 1
	}
	var seq uint64
	if before.LastReload != nil {
		seq = before.LastReload.Seq
	}
	if err := unix.Kill(target, unix.SIGHUP); err != nil {
		if errors.Is(err, unix.EPERM) {
			fmt.Fprintf(e.stderr, "weir reload: signal process %d: %v: run as the user weir runs as, or as root\n", target, err)
		} else {
			fmt.Fprintf(e.stderr, "weir reload: signal process %d: %v\n", target, err)
		}
		return 1
	}
	if *wait == 0 {
		fmt.Fprintf(e.stdout, "sent SIGHUP to weir (pid %d); the result will be in its log and in %s\n", target, status)
		return 0
	}

	deadline := time.Now().Add(*wait)
	t := time.NewTicker(reloadPoll)
	defer t.Stop()
	for {
		st, err := readStatus(status)
		if err == nil && st.PID == target && st.LastReload != nil && st.LastReload.Seq > seq {
			return printReloadResult(e, st.LastReload)
		}
		if !processExists(target) {
			fmt.Fprintf(e.stderr, "weir reload: process %d exited before reporting a result\n", target)
			return 1
		}
		if time.Now().After(deadline) {
			fmt.Fprintf(e.stderr, "weir reload: sent SIGHUP to pid %d but no result in %s; see its log\n", target, *wait)
			return 1
		}
		select {
		case <-ctx.Done():
			fmt.Fprintf(e.stderr, "weir reload: interrupted; SIGHUP was sent to pid %d\n", target)
			return 1
		case <-t.C:
		}
	}
}

// verifyTarget checks that pid is the `weir run` that wrote the status file,
// by process ID and start time, and returns the file's content.
func verifyTarget(pid int, statusFile string) (*runStatus, error) {
	if statusFile == "" {
		return nil, fmt.Errorf("no status file to confirm that process %d is weir: name it with -status-file", pid)
	}
	st, err := readStatus(statusFile)
	if err != nil {
		return nil, fmt.Errorf("cannot confirm that process %d is weir: %w", pid, err)
	}
	start, err := processStartTime(pid)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("process %d is not running (stale pid file?)", pid)
	}
	if err != nil {
		return nil, fmt.Errorf("process %d: %w", pid, err)
	}
	if st.PID != pid || st.StartTime != start {
		return nil, fmt.Errorf("process %d is not the weir that wrote %s (that was pid %d): stale pid or status file?", pid, statusFile, st.PID)
	}
	return st, nil
}

// printReloadResult prints a reload's result and returns the exit status.
func printReloadResult(e *env, r *reloadStatus) int {
	switch r.Outcome {
	case "applied":
		fmt.Fprintf(e.stdout, "reload applied: generation %d", r.Generation)
		if r.Changes != "" {
			fmt.Fprintf(e.stdout, " (%s)", r.Changes)
		}
		fmt.Fprintln(e.stdout)
		return 0
	case "unchanged":
		fmt.Fprintf(e.stdout, "reload accepted: the forwarding state is unchanged (generation %d)\n", r.Generation)
		return 0
	case "invalid":
		fmt.Fprintf(e.stderr, "reload refused: the configuration is invalid; generation %d stays in force\n", r.Generation)
		for _, p := range r.Problems {
			fmt.Fprintf(e.stderr, "  %s\n", p)
		}
		if r.Error != "" {
			fmt.Fprintf(e.stderr, "  %s\n", r.Error)
		}
	case "restart_required":
		fmt.Fprintf(e.stderr, "reload refused: these settings changed and only a restart applies them; generation %d stays in force\n", r.Generation)
		for _, k := range r.RestartKeys {
			fmt.Fprintf(e.stderr, "  %s\n", k)
		}
	default:
		fmt.Fprintf(e.stderr, "reload %s: generation %d stays in force", r.Outcome, r.Generation)
		if r.Error != "" {
			fmt.Fprintf(e.stderr, ": %s", r.Error)
		}
		fmt.Fprintln(e.stderr)
	}
	return 1
}
