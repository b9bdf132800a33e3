package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/weirlb/weir/appliance"
)

// The pid file holds the process ID of `weir run`, as daemons write it. The
// status file next to it holds the same ID with the process's start time
// (which, unlike the ID, is never reused), the snapshot generation and the
// latest reload's result. `weir reload` checks the pair before it signals
// anything, so a stale pid file can never make it signal some other process,
// and reads the result of the reload it asked for from the status file.

// runStatus is the status file's content.
type runStatus struct {
	PID int `json:"pid"`
	// StartTime is field 22 of /proc/PID/stat: clock ticks after boot at
	// which the process started. With PID it names the process uniquely.
	StartTime  uint64            `json:"start_time"`
	Config     string            `json:"config"`
	Started    time.Time         `json:"started"`
	Generation uint64            `json:"generation"`
	Reloads    map[string]uint64 `json:"reloads"` // by outcome
	LastReload *reloadStatus     `json:"last_reload,omitempty"`
}

// reloadStatus is one reload's result as the status file records it.
type reloadStatus struct {
	Seq         uint64    `json:"seq"`
	Outcome     string    `json:"outcome"`
	Time        time.Time `json:"time"`
	Generation  uint64    `json:"generation"`
	Problems    []string  `json:"problems,omitempty"`
	RestartKeys []string  `json:"restart_keys,omitempty"`
	Changes     string    `json:"changes,omitempty"`
	Error       string    `json:"error,omitempty"`
}

// statusPathFor returns the status file's path: explicit if given, else
// derived from the pid file's (weir.pid gives weir.status.json), else none.
func statusPathFor(pidFile, explicit string) string {
	if explicit != "" || pidFile == "" {
		return explicit
	}
	return strings.TrimSuffix(pidFile, ".pid") + ".status.json"
}

// statusWriter rewrites the status file after start-up and each reload.
type statusWriter struct {
	path string
	st   runStatus
}

func newStatusWriter(path, config string) (*statusWriter, error) {
	start, err := processStartTime(os.Getpid())
	if err != nil {
		return nil, fmt.Errorf("status file: %w", err)
	}
	return &statusWriter{path: path, st: runStatus{
		PID: os.Getpid(), StartTime: start, Config: config, Started: time.Now().UTC(),
	}}, nil
}

// write replaces the file atomically (write a temporary file, rename), so a
// reader never sees half of it.
func (w *statusWriter) write(generation uint64, r *appliance.Reloader) error {
	w.st.Generation = generation
	counts := r.Counts()
	w.st.Reloads = make(map[string]uint64)
	for _, o := range appliance.ReloadOutcomes() {
		w.st.Reloads[o.String()] = counts.Of(o)
	}
	if last := r.Last(); last.Seq > 0 {
		w.st.LastReload = toReloadStatus(last)
	}
	b, err := json.MarshalIndent(&w.st, "", "  ")
	if err != nil {
		return fmt.Errorf("status file: %w", err)
	}
	return writeFileAtomic(w.path, append(b, '\n'))
}

func toReloadStatus(r appliance.ReloadResult) *reloadStatus {
	s := &reloadStatus{Seq: r.Seq, Outcome: r.Outcome.String(), Time: r.Time.UTC(), Generation: r.Generation, RestartKeys: r.RestartKeys}
	for _, p := range r.Problems {
		s.Problems = append(s.Problems, p.String())
	}
	if r.Err != nil {
		s.Error = r.Err.Error()
	}
	if r.Outcome == appliance.ReloadApplied {
		s.Changes = describeChanges(r.Changes)
	}
	return s
}

func describeChanges(c appliance.ModelChanges) string {
	var parts []string
	add := func(n int, what string) {
		if n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, what))
		}
	}
	add(c.VIPsAdded, "VIP(s) added")
	add(c.VIPsRemoved, "VIP(s) removed")
	add(c.VIPsChanged, "VIP(s) changed")
	add(c.BackendsAdded, "backend(s) added")
	add(c.BackendsRemoved, "backend(s) removed")
	add(c.BackendsChanged, "backend(s) changed")
	return strings.Join(parts, ", ")
}

// remove deletes the status file if it is still this process's.
func (w *statusWriter) remove() {
	if w == nil {
		return
	}
	if st, err := readStatus(w.path); err == nil && st.PID == w.st.PID && st.StartTime == w.st.StartTime {
		os.Remove(w.path)
	}
}

func readStatus(path string) (*runStatus, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var st runStatus
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("status file %s: %w", path, err)
	}
	return &st, nil
}

func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(0o644)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// writePIDFile writes this process's ID. It refuses to overwrite the pid
// file of another weir that is still running.
func writePIDFile(path string) error {
	if pid, err := readPIDFile(path); err == nil && pid != os.Getpid() && processExists(pid) {
		return fmt.Errorf("pid file %s names process %d, which is running: another weir? stop it, or remove the file if it is stale", path, pid)
	}
	if err := writeFileAtomic(path, []byte(strconv.Itoa(os.Getpid())+"\n")); err != nil {
		return fmt.Errorf("pid file: %w", err)
	}
	return nil
}

// removePIDFile deletes the pid file if it still holds this process's ID.
func removePIDFile(path string) {
	if pid, err := readPIDFile(path); err == nil && pid == os.Getpid() {
		os.Remove(path)
	}
}

func readPIDFile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("pid file %s: %q is not a process ID", path, bytes.TrimSpace(b))
	}
	return pid, nil
}

func processExists(pid int) bool {
	_, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
	return err == nil
}

// processStartTime reads field 22 (starttime) of /proc/PID/stat. The
// command name (field 2) may hold spaces and parentheses, so fields are
// counted from the last ')'.
func processStartTime(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc stat")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state), so field 22 is f[19].
	if len(f) < 20 {
		return 0, errors.New("malformed /proc stat")
	}
	return strconv.ParseUint(f[19], 10, 64)
}
