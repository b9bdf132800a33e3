package firmware

import (
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// AttachMode selects how an XDP program is attached to an interface.
type AttachMode int

const (
	// AttachAuto tries native (driver) mode and falls back to generic mode
	// when the driver refuses; Attachment.Mode reports what was obtained
	// and Attachment.NativeErr why native mode was refused.
	AttachAuto AttachMode = iota
	// AttachNative runs the program in the driver, before any skb exists.
	AttachNative
	// AttachGeneric runs the program on the skb path. It works on every
	// interface and is much slower; AF_XDP works only in copy mode.
	AttachGeneric
)

// String returns the mode's name as ParseAttachMode accepts it.
func (m AttachMode) String() string {
	switch m {
	case AttachAuto:
		return "auto"
	case AttachNative:
		return "native"
	case AttachGeneric:
		return "generic"
	}
	return fmt.Sprintf("AttachMode(%d)", int(m))
}

// ParseAttachMode parses "auto", "native" or "generic".
func ParseAttachMode(s string) (AttachMode, error) {
	switch s {
	case "auto":
		return AttachAuto, nil
	case "native":
		return AttachNative, nil
	case "generic":
		return AttachGeneric, nil
	}
	return 0, fmt.Errorf("xdp attach mode %q: want auto, native or generic", s)
}

// Attachment is an XDP program attached to one interface through a bpf_link.
// The kernel detaches the program when the link's last file descriptor is
// closed, so a crashed process never leaves its program behind. Close
// detaches; closing the Redirect or Decap that created the attachment closes
// it too.
type Attachment struct {
	ifindex   int
	ifname    string
	mode      AttachMode
	nativeErr error

	mu   sync.Mutex
	link link.Link
}

// Mode reports the mode obtained: AttachNative or AttachGeneric.
func (a *Attachment) Mode() AttachMode { return a.mode }

// Ifindex reports the interface the program is attached to.
func (a *Attachment) Ifindex() int { return a.ifindex }

// NativeErr reports why native mode was refused when AttachAuto fell back
// to generic mode, and nil otherwise.
func (a *Attachment) NativeErr() error { return a.nativeErr }

// Close detaches the program. It is safe to call more than once.
func (a *Attachment) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.link == nil {
		return nil
	}
	err := a.link.Close()
	a.link = nil
	if err != nil {
		return fmt.Errorf("detach xdp from %s: %w", a.ifname, err)
	}
	return nil
}

// attachXDP attaches prog to ifindex in the requested mode.
func attachXDP(prog *ebpf.Program, ifindex int, mode AttachMode) (*Attachment, error) {
	name := ifaceName(ifindex)
	switch mode {
	case AttachNative, AttachGeneric:
		l, err := attachLink(prog, ifindex, mode)
		if err != nil {
			return nil, explainAttachError(err, name, mode)
		}
		return &Attachment{ifindex: ifindex, ifname: name, mode: mode, link: l}, nil
	case AttachAuto:
		l, err := attachLink(prog, ifindex, AttachNative)
		if err == nil {
			return &Attachment{ifindex: ifindex, ifname: name, mode: AttachNative, link: l}, nil
		}
		nativeErr := explainAttachError(err, name, AttachNative)
		if !fallbackToGeneric(err) {
			return nil, nativeErr
		}
		l, err = attachLink(prog, ifindex, AttachGeneric)
		if err != nil {
			return nil, fmt.Errorf("%w; generic fallback: %w", nativeErr, explainAttachError(err, name, AttachGeneric))
		}
		return &Attachment{ifindex: ifindex, ifname: name, mode: AttachGeneric, nativeErr: nativeErr, link: l}, nil
	}
	return nil, fmt.Errorf("attach xdp to %s: unknown %v", name, mode)
}

func attachLink(prog *ebpf.Program, ifindex int, mode AttachMode) (link.Link, error) {
	flags := link.XDPDriverMode
	if mode == AttachGeneric {
		flags = link.XDPGenericMode
	}
	return link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifindex, Flags: flags})
}

// fallbackToGeneric reports whether a native-mode failure may succeed in
// generic mode. Missing privileges, an occupied hook and a missing interface
// fail the same way in both modes; driver limits (no XDP support, queue
// counts, MTU) do not apply to generic mode.
func fallbackToGeneric(err error) bool {
	return !errors.Is(err, unix.EPERM) && !errors.Is(err, unix.EACCES) &&
		!errors.Is(err, unix.EBUSY) && !errors.Is(err, unix.EEXIST) &&
		!errors.Is(err, unix.ENODEV)
}

// explainAttachError turns the bare errno of a bpf_link attach into a
// message that says what to change.
func explainAttachError(err error, ifname string, mode AttachMode) error {
	var hint string
	switch {
	case errors.Is(err, unix.ENOSPC):
		hint = "not enough RX queues for XDP: on veth the RX queue count is smaller than the peer's TX queue count; create the veth pair with equal numrxqueues/numtxqueues on both ends"
	case errors.Is(err, unix.ERANGE):
		hint = "MTU too large for an XDP program without multi-buffer (frags) support: lower the interface MTU (below ~3500 on veth)"
	case errors.Is(err, unix.EBUSY), errors.Is(err, unix.EEXIST):
		hint = "another XDP program is attached to this interface: detach it first (ip link set dev " + ifname + " xdp off, or close the process holding its bpf_link)"
	case errors.Is(err, unix.EOPNOTSUPP):
		hint = "the driver does not support XDP in this mode: use generic or auto mode"
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		hint = "not permitted: run as root or grant CAP_BPF and CAP_NET_ADMIN"
	case errors.Is(err, unix.ENODEV):
		hint = "no such interface"
	case errors.Is(err, unix.EINVAL):
		hint = "the kernel rejected the attach request (for native mode, check the driver's XDP limits in dmesg)"
	}
	if hint == "" {
		return fmt.Errorf("attach xdp to %s in %s mode: %w", ifname, mode, err)
	}
	return fmt.Errorf("attach xdp to %s in %s mode: %s: %w", ifname, mode, hint, err)
}

// ifaceName names an interface for error messages.
func ifaceName(ifindex int) string {
	if ifi, err := net.InterfaceByIndex(ifindex); err == nil {
		return fmt.Sprintf("%s (ifindex %d)", ifi.Name, ifindex)
	}
	return fmt.Sprintf("ifindex %d", ifindex)
}
