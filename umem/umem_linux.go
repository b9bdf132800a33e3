package umem

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// hugePage is the size of a transparent huge page on x86-64 and arm64 (with
// 4 KiB base pages).
const hugePage = 2 << 20

// mapArea maps size bytes of anonymous memory, populated up front so that
// the first packets do not take page faults and registration pins real pages.
//
// An area of a huge page or more starts on a huge-page boundary and asks for
// transparent huge pages (best effort: THP may be off): a batch touches
// frames all over the area, and with 4 KiB pages nearly every frame costs a
// TLB miss (a default queue's 8192 frames of 4 KiB span 8192 pages, far more
// than a TLB holds; with huge pages, 16).
func mapArea(size int) ([]byte, error) {
	const prot, flags = unix.PROT_READ | unix.PROT_WRITE, unix.MAP_PRIVATE | unix.MAP_ANONYMOUS
	if size < hugePage {
		p, err := unix.MmapPtr(-1, 0, nil, uintptr(size), prot, flags|unix.MAP_POPULATE)
		if err != nil {
			return nil, err
		}
		return unsafe.Slice((*byte)(p), size), nil
	}
	// Map a huge page more than needed and unmap what lies outside the
	// aligned area.
	total := uintptr(size) + hugePage
	p, err := unix.MmapPtr(-1, 0, nil, total, prot, flags)
	if err != nil {
		return nil, err
	}
	head := -uintptr(p) & (hugePage - 1)
	tail := total - head - uintptr(size)
	if head > 0 {
		if err := unix.MunmapPtr(p, head); err != nil {
			unix.MunmapPtr(p, total)
			return nil, fmt.Errorf("trim mapping: %w", err)
		}
	}
	area := unsafe.Add(p, head)
	if tail > 0 {
		if err := unix.MunmapPtr(unsafe.Add(area, size), tail); err != nil {
			unix.MunmapPtr(area, uintptr(size)+tail)
			return nil, fmt.Errorf("trim mapping: %w", err)
		}
	}
	b := unsafe.Slice((*byte)(area), size)
	_ = unix.Madvise(b, unix.MADV_HUGEPAGE) // EINVAL without THP: 4 KiB pages then
	if err := unix.Madvise(b, unix.MADV_POPULATE_WRITE); err != nil {
		// Before Linux 5.14: fault every page in by hand.
		for i := 0; i < size; i += unix.Getpagesize() {
			b[i] = 0
		}
	}
	return b, nil
}

func unmapArea(b []byte) error {
	return unix.MunmapPtr(unsafe.Pointer(unsafe.SliceData(b)), uintptr(len(b)))
}

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
