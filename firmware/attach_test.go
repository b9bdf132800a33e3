package firmware

import (
	"errors"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// xdpMD is struct xdp_md as BPF_PROG_TEST_RUN takes it: the frame starts at
// offset 0 and ends at DataEnd, and the run pretends to be on
// IngressIfindex's RX queue RxQueueIndex.
type xdpMD struct {
	Data, DataEnd, DataMeta      uint32
	IngressIfindex, RxQueueIndex uint32
	EgressIfindex                uint32
}

const (
	kernelXDPNone    = 0
	kernelXDPDriver  = 1
	kernelXDPGeneric = 2
)

// TestRedirectSocket binds a real AF_XDP socket to queue 0 of a two-queue
// veth and checks that VIP frames on queue 0 are redirected while those on
// queue 1, which has no socket, are dropped.
func TestRedirectSocket(t *testing.T) {
	r := loadTestRedirect(t, testVIPs)
	ns := newTestNS(t)
	a, _ := ns.addVeth(t, vethPair{rxA: 2, txA: 2, rxB: 2, txB: 2})
	ifindex := a.Attrs().Index

	vip := eth4(tcp4(t, "198.51.100.7", 40000, "192.0.2.10", 80))
	other := eth4(tcp4(t, "198.51.100.7", 40000, "192.0.2.99", 80))
	icmp := icmp4Error(t, 3, 4, "203.0.113.1", "192.0.2.10", tcp4(t, "192.0.2.10", 80, "198.51.100.7", 40000))
	check := func(name string, q int, frame []byte, want uint32, wantC RedirectCounters) {
		t.Run(name, func(t *testing.T) {
			opts := &ebpf.RunOptions{Context: xdpMD{DataEnd: uint32(len(frame)), IngressIfindex: uint32(ifindex), RxQueueIndex: uint32(q)}}
			runRedirectWith(t, r, func(o *ebpf.RunOptions) (uint32, error) { return ns.run(r.Program(), o) }, frame, opts, want, wantC)
		})
	}

	var fd int
	mustNoErr(t, ns.do(func() error {
		var err error
		fd, err = openTestXSK(t, ifindex, 0)
		return err
	}))
	mustNoErr(t, r.SetSocket(0, fd))
	check("vip on queue with socket", 0, vip, xdpRedirect, RedirectCounters{Redirected: 1})
	check("icmp error on queue with socket", 0, icmp, xdpRedirect, RedirectCounters{Redirected: 1, ICMPErrors: 1})
	check("non-vip on queue with socket", 0, other, xdpPass, cPass)
	check("vip on queue without socket", 1, vip, xdpDrop, cVIP)
	mustNoErr(t, r.ClearSocket(0))
	mustNoErr(t, r.ClearSocket(0))
	check("vip after ClearSocket", 0, vip, xdpDrop, cVIP)

	udp, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	mustNoErr(t, err)
	defer unix.Close(udp)
	err = r.SetSocket(0, udp)
	if err == nil || !strings.Contains(err.Error(), "not a bound AF_XDP socket") {
		t.Errorf("SetSocket with a UDP socket: %v", err)
	}
}

// attachIn attaches r's program inside the namespace.
func attachIn(ns *testNS, r *Redirect, ifindex int, mode AttachMode) (*Attachment, error) {
	var att *Attachment
	err := ns.do(func() error {
		var err error
		att, err = r.Attach(ifindex, mode)
		return err
	})
	return att, err
}

func TestAttach(t *testing.T) {
	r := loadTestRedirect(t, testVIPs)
	ns := newTestNS(t)

	t.Run("native", func(t *testing.T) {
		a, _ := ns.addVeth(t, vethPair{rxA: 1, txA: 1, rxB: 1, txB: 1})
		idx := a.Attrs().Index
		att, err := attachIn(ns, r, idx, AttachNative)
		mustNoErr(t, err)
		defer att.Close()
		if att.Mode() != AttachNative || att.Ifindex() != idx || att.NativeErr() != nil {
			t.Errorf("attachment mode %v ifindex %d native error %v", att.Mode(), att.Ifindex(), att.NativeErr())
		}
		if got := ns.xdpMode(t, idx); got != kernelXDPDriver {
			t.Errorf("kernel reports xdp mode %d, want %d (driver)", got, kernelXDPDriver)
		}
		// A second program on the same hook is refused, in auto mode
		// too: generic mode could not take the hook either.
		_, err = attachIn(ns, r, idx, AttachNative)
		if !errors.Is(err, unix.EBUSY) || !strings.Contains(err.Error(), "another XDP program") {
			t.Errorf("second attach: %v", err)
		}
		_, err = attachIn(ns, r, idx, AttachAuto)
		if !errors.Is(err, unix.EBUSY) || strings.Contains(err.Error(), "generic") {
			t.Errorf("second attach in auto mode: %v, want EBUSY without generic fallback", err)
		}
		mustNoErr(t, att.Close())
		mustNoErr(t, att.Close())
		if got := ns.xdpMode(t, idx); got != kernelXDPNone {
			t.Errorf("after Close the kernel reports xdp mode %d", got)
		}
	})

	t.Run("generic", func(t *testing.T) {
		a, _ := ns.addVeth(t, vethPair{rxA: 1, txA: 1, rxB: 1, txB: 1})
		idx := a.Attrs().Index
		att, err := attachIn(ns, r, idx, AttachGeneric)
		mustNoErr(t, err)
		defer att.Close()
		if got := ns.xdpMode(t, idx); att.Mode() != AttachGeneric || got != kernelXDPGeneric {
			t.Errorf("mode %v, kernel %d", att.Mode(), got)
		}
	})

	t.Run("auto prefers native", func(t *testing.T) {
		a, _ := ns.addVeth(t, vethPair{rxA: 2, txA: 2, rxB: 2, txB: 2})
		idx := a.Attrs().Index
		att, err := attachIn(ns, r, idx, AttachAuto)
		mustNoErr(t, err)
		defer att.Close()
		if got := ns.xdpMode(t, idx); att.Mode() != AttachNative || got != kernelXDPDriver {
			t.Errorf("mode %v, kernel %d", att.Mode(), got)
		}
	})

	t.Run("fewer rx queues than the peer's tx queues", func(t *testing.T) {
		a, _ := ns.addVeth(t, vethPair{rxA: 1, txA: 1, rxB: 2, txB: 2})
		idx := a.Attrs().Index
		_, err := attachIn(ns, r, idx, AttachNative)
		if !errors.Is(err, unix.ENOSPC) || !strings.Contains(err.Error(), "numrxqueues/numtxqueues") {
			t.Errorf("native attach: %v, want ENOSPC with a hint", err)
		}
		att, err := attachIn(ns, r, idx, AttachAuto)
		mustNoErr(t, err)
		defer att.Close()
		if att.Mode() != AttachGeneric || !errors.Is(att.NativeErr(), unix.ENOSPC) {
			t.Errorf("auto: mode %v, native error %v; want generic after ENOSPC", att.Mode(), att.NativeErr())
		}
		if got := ns.xdpMode(t, idx); got != kernelXDPGeneric {
			t.Errorf("kernel reports mode %d", got)
		}
	})

	t.Run("peer mtu too large", func(t *testing.T) {
		a, _ := ns.addVeth(t, vethPair{rxA: 1, txA: 1, rxB: 1, txB: 1, mtuB: 9000})
		_, err := attachIn(ns, r, a.Attrs().Index, AttachNative)
		if !errors.Is(err, unix.ERANGE) || !strings.Contains(err.Error(), "lower the interface MTU") {
			t.Errorf("native attach: %v, want ERANGE with a hint", err)
		}
	})

	t.Run("no such interface", func(t *testing.T) {
		_, err := attachIn(ns, r, 1<<30, AttachAuto)
		if err == nil {
			t.Fatal("attach to a missing interface succeeded")
		}
		if !strings.Contains(err.Error(), "ifindex 1073741824") {
			t.Errorf("error does not name the interface: %v", err)
		}
	})

	t.Run("closing the program detaches", func(t *testing.T) {
		r2 := loadTestRedirect(t, nil)
		a, _ := ns.addVeth(t, vethPair{rxA: 1, txA: 1, rxB: 1, txB: 1})
		idx := a.Attrs().Index
		_, err := attachIn(ns, r2, idx, AttachNative)
		mustNoErr(t, err)
		mustNoErr(t, r2.Close())
		if got := ns.xdpMode(t, idx); got != kernelXDPNone {
			t.Errorf("after Redirect.Close the kernel reports xdp mode %d", got)
		}
	})
}

func TestParseAttachMode(t *testing.T) {
	for _, m := range []AttachMode{AttachAuto, AttachNative, AttachGeneric} {
		got, err := ParseAttachMode(m.String())
		if err != nil || got != m {
			t.Errorf("ParseAttachMode(%q) = %v, %v", m.String(), got, err)
		}
	}
	if _, err := ParseAttachMode("offload"); err == nil {
		t.Error("ParseAttachMode accepted offload")
	}
}
