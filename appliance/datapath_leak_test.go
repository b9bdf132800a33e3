package appliance

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/weirlb/weir/firmware"
	"github.com/weirlb/weir/packet"
)

// addLocalVIPs puts the lab's VIPs on the appliance namespace's lo, so that
// any VIP packet that leaks to the appliance's own stack is answered there
// (with a RST, since nothing listens) instead of being silently dropped.
func addLocalVIPs(t *testing.T, l *dsrLab) {
	t.Helper()
	err := l.Appliance.NS.Do(func() error {
		h, err := netlink.NewHandle()
		if err != nil {
			return err
		}
		defer h.Close()
		lo, err := h.LinkByName("lo")
		if err != nil {
			return err
		}
		for _, v := range l.VIPs {
			p := netip.PrefixFrom(v, v.BitLen())
			a := &netlink.Addr{IPNet: &net.IPNet{IP: v.AsSlice(), Mask: net.CIDRMask(p.Bits(), v.BitLen())}}
			if err := h.AddrAdd(lo, a); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("put VIPs on the appliance's lo: %v", err)
	}
}

// dialVIP opens one TCP connection to vip from the client namespace and
// closes it again, giving up after timeout.
func dialVIP(l *dsrLab, vip netip.Addr, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := l.Client.NS.DialContext(ctx, "tcp", netip.AddrPortFrom(vip, l.Port).String())
	if err != nil {
		return err
	}
	return c.Close()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// TestDatapathNoLeakToHostStack shows that no VIP packet reaches the
// appliance's own TCP stack: with the VIPs on the appliance's lo, a leaked
// segment would be answered with a RST (the control step proves it is), yet
// 200 connections per VIP through the running appliance all succeed and the
// stack sees no TCP at all. With the redirect program attached but no socket
// on any queue, VIP packets are dropped in XDP rather than passed: the
// client's connection attempt times out instead of being refused.
func TestDatapathNoLeakToHostStack(t *testing.T) {
	l := newDSRLab(t, []uint32{1, 1, 1})
	addLocalVIPs(t, l)
	appNS := l.Appliance.NS
	before := tcpSNMP(t, appNS)

	const n = 200
	for _, vip := range l.VIPs {
		for i := range n {
			if _, err := get(t, l.DSR, vip); err != nil {
				t.Fatalf("request %d to %s: %v", i, vip, err)
			}
		}
	}
	after := tcpSNMP(t, appNS)
	if after.OutRsts != before.OutRsts || after.InSegs != before.InSegs {
		t.Errorf("appliance stack saw VIP traffic: TCP InSegs %d -> %d, OutRsts %d -> %d",
			before.InSegs, after.InSegs, before.OutRsts, after.OutRsts)
	}
	l.settle(t)
	st := l.stop(t)
	checkCounters(t, st, l.app.RealStats())
	if want := uint64(2 * n); st.Total.NewFlows < want {
		t.Errorf("appliance saw %d new flows, want at least %d", st.Total.NewFlows, want)
	}

	// Control: with the appliance stopped the program is detached, and a
	// VIP packet reaches the stack, which refuses the connection with a
	// RST. This is what a leak would look like.
	for _, vip := range l.VIPs {
		base := tcpSNMP(t, appNS).OutRsts
		err := dialVIP(l, vip, 2*time.Second)
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("control: dial %s with nothing attached: %v, want connection refused by the appliance's stack", vip, err)
		}
		if got := tcpSNMP(t, appNS).OutRsts; got <= base {
			t.Fatalf("control: dial %s refused but the appliance sent no RST (OutRsts %d -> %d)", vip, base, got)
		}
	}

	// The redirect program with its VIPs but no socket on any queue.
	r, err := firmware.LoadRedirect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	for _, vip := range l.VIPs {
		if err := r.AddVIP(firmware.VIP{Addr: vip, Proto: packet.ProtoTCP, Port: l.Port}); err != nil {
			t.Fatal(err)
		}
	}
	err = appNS.Do(func() error {
		_, err := r.Attach(l.Appliance.NIC.Index, firmware.AttachNative)
		return err
	})
	if err != nil {
		t.Fatalf("attach redirect program without sockets: %v", err)
	}
	for _, vip := range l.VIPs {
		before := tcpSNMP(t, appNS)
		xb, err := r.Counters()
		if err != nil {
			t.Fatal(err)
		}
		// Long enough for the SYN and its first retransmission (1s).
		dialErr := dialVIP(l, vip, 1500*time.Millisecond)
		if !isTimeout(dialErr) {
			t.Errorf("dial %s with no socket on the queues: %v, want a timeout (SYN dropped)", vip, dialErr)
		}
		after := tcpSNMP(t, appNS)
		xa, err := r.Counters()
		if err != nil {
			t.Fatal(err)
		}
		if after.OutRsts != before.OutRsts || after.InSegs != before.InSegs {
			t.Errorf("%s: appliance stack saw VIP traffic without sockets: TCP InSegs %d -> %d, OutRsts %d -> %d",
				vip, before.InSegs, after.InSegs, before.OutRsts, after.OutRsts)
		}
		if xa.DroppedNoSocket < xb.DroppedNoSocket+2 {
			t.Errorf("%s: DroppedNoSocket %d -> %d, want the SYN and its retransmission", vip, xb.DroppedNoSocket, xa.DroppedNoSocket)
		}
		if xa.Redirected != 0 {
			t.Errorf("%s: %d frames redirected with no socket in the map", vip, xa.Redirected)
		}
		t.Logf("%s: no socket: %v; xdp %+v", vip, dialErr, xa)
	}
}
