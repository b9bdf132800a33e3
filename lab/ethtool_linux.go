package lab

// This file holds the package's only unsafe code: the SIOCETHTOOL ioctl,
// whose ifreq carries a pointer that x/sys/unix has no setter for.

import (
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ifreqData is struct ifreq with ifr_data: the name, then a pointer to the
// command buffer, padded to the size of the kernel's union.
type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [24 - unsafe.Sizeof(uintptr(0))]byte
}

// The kernel copies sizeof(struct ifreq) = 40 bytes on 64-bit machines
// (32 on 32-bit ones); these fail to compile if the layout differs.
var (
	_ [16 + 3*unsafe.Sizeof(uintptr(0)) - unsafe.Sizeof(ifreqData{})]byte
	_ [unsafe.Sizeof(ifreqData{}) - 16 - 3*unsafe.Sizeof(uintptr(0))]byte
)

// ethtoolValue is struct ethtool_value, the buffer of the single-value
// legacy commands (ETHTOOL_[GS]TXCSUM, ETHTOOL_[GS]GRO, ...).
type ethtoolValue struct {
	cmd  uint32
	data uint32
}

// ethtoolCmd runs one single-value ethtool command on the interface called
// link, from a socket created by the calling thread (so in its namespace),
// and returns the value the kernel left in the buffer.
func ethtoolCmd(link string, cmd, data uint32) (uint32, error) {
	if len(link) == 0 || len(link) >= unix.IFNAMSIZ {
		return 0, fmt.Errorf("interface name %q: want 1 to %d bytes", link, unix.IFNAMSIZ-1)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("ethtool socket: %w", err)
	}
	defer unix.Close(fd)

	v := ethtoolValue{cmd: cmd, data: data}
	var ifr ifreqData
	copy(ifr.name[:], link)
	ifr.data = unsafe.Pointer(&v)
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr)))
	runtime.KeepAlive(&v)
	if errno != 0 {
		return 0, errno
	}
	return v.data, nil
}
