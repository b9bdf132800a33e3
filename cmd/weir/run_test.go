package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestRunUsage(t *testing.T) {
	code, out, _ := runCLI(t, "run", "-h")
	if code != 0 || !strings.Contains(out, "usage: weir run") || !strings.Contains(out, "SIGHUP") {
		t.Errorf("run -h: exit %d\n%s", code, out)
	}
	code, _, errOut := runCLI(t, "run", "extra.toml")
	if code != 2 || !strings.Contains(errOut, `unexpected argument "extra.toml"`) {
		t.Errorf("run extra.toml: exit %d\n%s", code, errOut)
	}
}

// A bad file is refused before anything else is looked at (capabilities,
// the interface): every problem is printed, with its position.
func TestRunRefusesBadConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.toml")
	text := "[appliance]\ninterface = \"eth0\"\nqueues = -1\n\n[[vip]]\nname = \"web\"\naddress = \"192.0.2.1\"\nport = 99999\n  [[vip.backend]]\n  address = \"10.0.0.1\"\n"
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := runCLI(t, "run", "-c", path)
	if code != 1 || !strings.Contains(errOut, path+":3:") || !strings.Contains(errOut, path+":8:") ||
		!strings.Contains(errOut, "2 problem(s); not starting") {
		t.Errorf("exit %d, want 1 and both problems:\n%s", code, errOut)
	}
	code, _, errOut = runCLI(t, "run", "-c", filepath.Join(t.TempDir(), "missing.toml"))
	if code != 1 || !strings.Contains(errOut, "no such file") {
		t.Errorf("missing file: exit %d\n%s", code, errOut)
	}
}

func TestStatusPathFor(t *testing.T) {
	for _, tt := range []struct{ pid, explicit, want string }{
		{"/run/weir/weir.pid", "", "/run/weir/weir.status.json"},
		{"/run/weir/weir.pid", "/tmp/s.json", "/tmp/s.json"},
		{"/run/weir/pid", "", "/run/weir/pid.status.json"},
		{"", "", ""},
	} {
		if got := statusPathFor(tt.pid, tt.explicit); got != tt.want {
			t.Errorf("statusPathFor(%q, %q) = %q, want %q", tt.pid, tt.explicit, got, tt.want)
		}
	}
}

func TestProcessStartTime(t *testing.T) {
	self, err := processStartTime(os.Getpid())
	if err != nil || self == 0 {
		t.Fatalf("own start time: %d, %v", self, err)
	}
	cmd := exec.Command("sleep", "5")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	child, err := processStartTime(cmd.Process.Pid)
	if err != nil || child < self {
		t.Errorf("child's start time %d (%v) before this process's %d", child, err, self)
	}
	if _, err := processStartTime(1 << 30); !os.IsNotExist(err) {
		t.Errorf("no such process: %v", err)
	}
}

func TestPIDFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "weir.pid")
	// A live process's pid file is not overwritten.
	cmd := exec.Command("sleep", "5")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	os.WriteFile(path, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644)
	if err := writePIDFile(path); err == nil || !strings.Contains(err.Error(), "which is running") {
		t.Errorf("overwrote a running process's pid file: %v", err)
	}
	// A stale one is.
	os.WriteFile(path, []byte("1073741824\n"), 0o644)
	if err := writePIDFile(path); err != nil {
		t.Fatal(err)
	}
	if pid, err := readPIDFile(path); err != nil || pid != os.Getpid() {
		t.Errorf("pid file holds %d, %v", pid, err)
	}
	removePIDFile(path)
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("pid file not removed: %v", err)
	}
	// Someone else's is left alone.
	os.WriteFile(path, []byte("12345\n"), 0o644)
	removePIDFile(path)
	if _, err := os.Stat(path); err != nil {
		t.Errorf("removed another process's pid file: %v", err)
	}
	os.WriteFile(path, []byte("weir\n"), 0o644)
	if _, err := readPIDFile(path); err == nil {
		t.Errorf("read a pid from %q", "weir")
	}
}

func TestNotifier(t *testing.T) {
	if n := newNotifier(""); n != nil {
		t.Fatal("a notifier without NOTIFY_SOCKET")
	}
	var nilNotifier *notifier
	nilNotifier.send("READY=1") // must not panic

	path := filepath.Join(t.TempDir(), "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	newNotifier(path).send("READY=1\nSTATUS=forwarding")
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 256)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "READY=1\nSTATUS=forwarding" {
		t.Errorf("got %q, %v", buf[:n], err)
	}
}

func TestByteSize(t *testing.T) {
	for v, want := range map[uint64]string{8 << 20: "8 MiB", 64 << 10: "64 KiB", 1 << 30: "1 GiB", 1000: "1000 bytes"} {
		if got := byteSize(v); got != want {
			t.Errorf("byteSize(%d) = %q, want %q", v, got, want)
		}
	}
}
