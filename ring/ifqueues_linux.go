package ring

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ethtoolChannels is struct ethtool_channels (linux/ethtool.h).
type ethtoolChannels struct {
	cmd                                         uint32
	maxRX, maxTX, maxOther, maxCombined         uint32
	rxCount, txCount, otherCount, combinedCount uint32
}

// ifreqData is struct ifreq with the ifr_data member.
type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [24 - unsafe.Sizeof(uintptr(0))]byte
}

// RXQueues returns how many RX queues the interface has in use, the queues an
// AF_XDP socket can bind to, from ETHTOOL_GCHANNELS (combined plus RX-only
// channels). It looks the interface up in the calling thread's network
// namespace. It returns an error if the driver does not report channels; the
// caller may then fall back to the allocated queue count from netlink.
func RXQueues(ifname string) (int, error) {
	if len(ifname) >= unix.IFNAMSIZ {
		return 0, fmt.Errorf("interface name %q too long", ifname)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("query channels of %s: %w", ifname, err)
	}
	defer unix.Close(fd)
	ch := ethtoolChannels{cmd: unix.ETHTOOL_GCHANNELS}
	var req ifreqData
	copy(req.name[:], ifname)
	req.data = unsafe.Pointer(&ch)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&req))); errno != 0 {
		return 0, fmt.Errorf("query channels of %s (ETHTOOL_GCHANNELS): %w", ifname, errno)
	}
	n := int(ch.combinedCount + ch.rxCount)
	if n == 0 {
		return 0, fmt.Errorf("query channels of %s: driver reports no RX channels", ifname)
	}
	return n, nil
}
