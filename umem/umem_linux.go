package umem

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Register claims the Umem and registers it with the AF_XDP socket fd
// (XDP_UMEM_REG) in aligned mode, with the configured frame size and
// headroom. The kernel pins the area and charges it to RLIMIT_MEMLOCK unless
// the process has CAP_IPC_LOCK: call RaiseMemlock at start-up.
func (u *Umem) Register(fd int) error {
	if err := u.Claim(); err != nil {
		return err
	}
	reg := unix.XDPUmemReg{
		Addr:     uint64(uintptr(unsafe.Pointer(&u.area[0]))),
		Len:      uint64(len(u.area)),
		Size:     u.frameSize,
		Headroom: u.headroom,
	}
	_, _, errno := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.SOL_XDP, unix.XDP_UMEM_REG,
		uintptr(unsafe.Pointer(&reg)), unsafe.Sizeof(reg), 0)
	if errno != 0 {
		u.claimed = false
		err := fmt.Errorf("umem: register %d frames of %d bytes (%d MiB) on socket %d: %w",
			u.frames, u.frameSize, len(u.area)>>20, fd, errno)
		if errors.Is(errno, unix.ENOBUFS) { // the locked-memory charge failed
			err = fmt.Errorf("%w: raise RLIMIT_MEMLOCK (umem.RaiseMemlock at start-up, LimitMEMLOCK=infinity in the systemd unit) or grant CAP_IPC_LOCK", err)
		}
		return err
	}
	return nil
}

// RaiseMemlock makes sure UMEM registration will not be refused for locked
// memory (ENOBUFS). It asks for an unlimited RLIMIT_MEMLOCK; when that is not
// permitted it raises the soft limit to the hard one, and it succeeds anyway
// if the thread has CAP_IPC_LOCK, since the kernel then charges nothing.
// Call it at start-up, before any socket is opened.
func RaiseMemlock() error {
	inf := unix.Rlimit{Cur: unix.RLIM_INFINITY, Max: unix.RLIM_INFINITY}
	err := unix.Setrlimit(unix.RLIMIT_MEMLOCK, &inf)
	if err == nil {
		return nil
	}
	var cur unix.Rlimit
	if gerr := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &cur); gerr == nil && cur.Cur < cur.Max {
		cur.Cur = cur.Max
		_ = unix.Setrlimit(unix.RLIMIT_MEMLOCK, &cur) // best effort; the first error says what to do
	}
	if hasIPCLock() {
		return nil
	}
	return fmt.Errorf("umem: raise RLIMIT_MEMLOCK to unlimited: %w: run as root, set LimitMEMLOCK=infinity in the systemd unit, or grant CAP_IPC_LOCK", err)
}

// hasIPCLock reports whether the calling thread has CAP_IPC_LOCK in its
// effective set.
func hasIPCLock() bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	return data[unix.CAP_IPC_LOCK/32].Effective&(1<<(unix.CAP_IPC_LOCK%32)) != 0
}
