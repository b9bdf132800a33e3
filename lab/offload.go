package lab

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// SetTxChecksum switches TX checksum offload ("ethtool -K link tx on|off")
// on the namespace's interface link. With it off the stack writes full
// checksums; with it on a veth hands partial checksums to its peer, which
// XDP and AF_XDP lose (the receiver then drops the segment as corrupt).
// The kernel also drops TSO and scatter-gather, which depend on it.
func (n *NS) SetTxChecksum(link string, on bool) error {
	return n.ethtoolSet(link, "tx-checksumming", unix.ETHTOOL_STXCSUM, on)
}

// TxChecksum reports whether TX checksum offload is on for link.
func (n *NS) TxChecksum(link string) (bool, error) {
	return n.ethtoolGet(link, "tx-checksumming", unix.ETHTOOL_GTXCSUM)
}

// SetGRO switches generic receive offload ("ethtool -K link gro on|off")
// on link. A veth peer with GRO on can swallow XDP_TX frames.
func (n *NS) SetGRO(link string, on bool) error {
	return n.ethtoolSet(link, "gro", unix.ETHTOOL_SGRO, on)
}

// GRO reports whether generic receive offload is on for link.
func (n *NS) GRO(link string) (bool, error) {
	return n.ethtoolGet(link, "gro", unix.ETHTOOL_GGRO)
}

func (n *NS) ethtoolSet(link, feature string, cmd uint32, on bool) error {
	var v uint32
	if on {
		v = 1
	}
	err := n.Do(func() error {
		_, err := ethtoolCmd(link, cmd, v)
		return err
	})
	if err != nil {
		return fmt.Errorf("lab: %s: set %s %s %s: %w", n.name, link, feature, onOff(on), err)
	}
	return nil
}

func (n *NS) ethtoolGet(link, feature string, cmd uint32) (bool, error) {
	var v uint32
	err := n.Do(func() error {
		var err error
		v, err = ethtoolCmd(link, cmd, 0)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("lab: %s: get %s %s: %w", n.name, link, feature, err)
	}
	return v != 0, nil
}

func onOff(on bool) string {
	if on {
		return "on"
	}
	return "off"
}
