package firmware

import (
	"encoding/binary"
	"fmt"
	"testing"

	"golang.org/x/sys/unix"
)

// newTestXSK opens an AF_XDP socket bound in copy mode to ifindex/queue,
// for the socket map tests. It is the least the kernel accepts in an
// XSKMAP: a UMEM with fill and completion rings and an RX ring. Nothing is
// ever received on it; the umem and ring packages own the real datapath.
// Call it inside the namespace that holds ifindex (the socket binds in the
// namespace it was created in); it does not call tb.Fatal, so it may run on
// a namespace goroutine. Cleanups close the socket and free the UMEM.
func openTestXSK(tb testing.TB, ifindex, queue int) (int, error) {
	const frameSize, frames = 4096, 64
	const size = frameSize * frames
	// The UMEM is anonymous memory the kernel pins; Go never touches it,
	// so the raw mmap keeps the address an integer.
	addr, _, errno := unix.Syscall6(unix.SYS_MMAP, 0, size, unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uintptr(0), 0)
	if errno != 0 {
		return -1, fmt.Errorf("mmap umem: %w", errno)
	}
	tb.Cleanup(func() { unix.Syscall(unix.SYS_MUNMAP, addr, size, 0) })

	fd, err := unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socket(AF_XDP): %w", err)
	}
	tb.Cleanup(func() { unix.Close(fd) })

	// struct xdp_umem_reg {u64 addr; u64 len; u32 chunk_size; u32 headroom;
	// u32 flags; u32 tx_metadata_len}, passed as setsockopt bytes.
	reg := binary.NativeEndian.AppendUint64(nil, uint64(addr))
	reg = binary.NativeEndian.AppendUint64(reg, size)
	reg = binary.NativeEndian.AppendUint32(reg, frameSize)
	reg = binary.NativeEndian.AppendUint32(reg, 0)
	reg = binary.NativeEndian.AppendUint32(reg, 0)
	reg = binary.NativeEndian.AppendUint32(reg, 0)
	if err := unix.SetsockoptString(fd, unix.SOL_XDP, unix.XDP_UMEM_REG, string(reg)); err != nil {
		return -1, fmt.Errorf("XDP_UMEM_REG: %w", err)
	}
	for _, opt := range []int{unix.XDP_UMEM_FILL_RING, unix.XDP_UMEM_COMPLETION_RING, unix.XDP_RX_RING} {
		if err := unix.SetsockoptInt(fd, unix.SOL_XDP, opt, frames); err != nil {
			return -1, fmt.Errorf("setsockopt ring %d: %w", opt, err)
		}
	}
	sa := &unix.SockaddrXDP{Flags: unix.XDP_COPY, Ifindex: uint32(ifindex), QueueID: uint32(queue)}
	if err := unix.Bind(fd, sa); err != nil {
		return -1, fmt.Errorf("bind AF_XDP socket to ifindex %d queue %d: %w", ifindex, queue, err)
	}
	return fd, nil
}
