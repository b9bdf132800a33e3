package umem

import (
	"errors"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/weirlb/weir/internal/testutil"
)

func xdpSocket(t *testing.T) int {
	t.Helper()
	fd, err := unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("create AF_XDP socket: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func TestRegister(t *testing.T) {
	testutil.RequirePrivileged(t)
	u := newTest(t, Config{FrameSize: 2048, FrameCount: 64})
	if err := u.Register(xdpSocket(t)); err != nil {
		t.Fatal(err)
	}
	if err := u.Register(xdpSocket(t)); err == nil || !strings.Contains(err.Error(), "already used") {
		t.Fatalf("second Register = %v, want already-used error", err)
	}
	u.Reclaim()
	// A reclaimed umem registers with a new socket.
	if err := u.Register(xdpSocket(t)); err != nil {
		t.Fatal(err)
	}
	u.Reclaim()
}

// Without CAP_IPC_LOCK the kernel charges the UMEM to RLIMIT_MEMLOCK and
// refuses it with ENOBUFS; the error must say what to change.
func TestRegisterMemlockError(t *testing.T) {
	testutil.RequirePrivileged(t)
	u := newTest(t, Config{FrameSize: 4096, FrameCount: 1024}) // 4 MiB
	fd := xdpSocket(t)

	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &old); err != nil {
		t.Fatal(err)
	}
	low := unix.Rlimit{Cur: 64 << 10, Max: old.Max}
	if err := unix.Setrlimit(unix.RLIMIT_MEMLOCK, &low); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := unix.Setrlimit(unix.RLIMIT_MEMLOCK, &old); err != nil {
			t.Errorf("restore RLIMIT_MEMLOCK: %v", err)
		}
	}()

	var err error
	withoutCap(t, unix.CAP_IPC_LOCK, func() { err = u.Register(fd) })
	if err == nil {
		u.Reclaim()
		t.Fatal("registration of 4 MiB under a 64 KiB RLIMIT_MEMLOCK without CAP_IPC_LOCK succeeded")
	}
	if !errors.Is(err, unix.ENOBUFS) {
		t.Fatalf("Register = %v, want ENOBUFS", err)
	}
	for _, want := range []string{"RLIMIT_MEMLOCK", "CAP_IPC_LOCK", "register 1024 frames of 4096 bytes"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	// A refused registration leaves the umem unclaimed.
	if err := u.Claim(); err != nil {
		t.Fatalf("Claim after refused Register = %v", err)
	}
	u.Reclaim()
}

// withoutCap runs f on a locked thread whose effective set lacks capability
// c. Capabilities are per thread, so nothing else in the process is touched.
func withoutCap(t *testing.T, c int, f func()) {
	t.Helper()
	runtime.LockOSThread()
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var caps [2]unix.CapUserData
	if err := unix.Capget(&hdr, &caps[0]); err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	saved := caps
	caps[c/32].Effective &^= 1 << (c % 32)
	if err := unix.Capset(&hdr, &caps[0]); err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	f()
	if err := unix.Capset(&hdr, &saved[0]); err != nil {
		// Leave the thread locked: it dies with this goroutine instead of
		// running other tests without the capability.
		t.Fatalf("restore capabilities: %v", err)
	}
	runtime.UnlockOSThread()
}

func hasCap(c int) bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var caps [2]unix.CapUserData
	return unix.Capget(&hdr, &caps[0]) == nil && caps[c/32].Effective&(1<<(c%32)) != 0
}

func TestRaiseMemlock(t *testing.T) {
	testutil.RequirePrivileged(t)
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &old); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Setrlimit(unix.RLIMIT_MEMLOCK, &old) })
	// Lower only the soft limit: without CAP_SYS_RESOURCE a lowered hard
	// limit could not be restored.
	low := unix.Rlimit{Cur: 64 << 10, Max: old.Max}
	if err := unix.Setrlimit(unix.RLIMIT_MEMLOCK, &low); err != nil {
		t.Fatal(err)
	}
	if err := RaiseMemlock(); err != nil {
		t.Fatal(err)
	}
	var now unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &now); err != nil {
		t.Fatal(err)
	}
	if hasCap(unix.CAP_SYS_RESOURCE) {
		if now.Cur != unix.RLIM_INFINITY || now.Max != unix.RLIM_INFINITY {
			t.Fatalf("RLIMIT_MEMLOCK after RaiseMemlock = %+v, want unlimited", now)
		}
		return
	}
	// No CAP_SYS_RESOURCE (a container): the soft limit reaches the hard
	// one, and CAP_IPC_LOCK makes registration free of any charge...
	if now.Cur != old.Max {
		t.Fatalf("RLIMIT_MEMLOCK after RaiseMemlock = %+v, want the soft limit raised to %d", now, old.Max)
	}
	// ...but without CAP_IPC_LOCK as well, nothing helps and the error says
	// what to grant.
	withoutCap(t, unix.CAP_IPC_LOCK, func() {
		err := RaiseMemlock()
		if err == nil || !strings.Contains(err.Error(), "CAP_IPC_LOCK") || !strings.Contains(err.Error(), "LimitMEMLOCK=infinity") {
			t.Errorf("RaiseMemlock without CAP_SYS_RESOURCE and CAP_IPC_LOCK = %v", err)
		}
	})
}
