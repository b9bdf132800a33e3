package firmware

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"runtime"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// testNS is a network namespace owned by one test.
type testNS struct {
	ns     netns.NsHandle
	handle *netlink.Handle
}

// newTestNS creates an anonymous network namespace that lives until the test
// ends; everything created inside it disappears with it.
func newTestNS(tb testing.TB) *testNS {
	tb.Helper()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		tb.Fatalf("get current netns: %v", err)
	}
	defer orig.Close()
	ns, err := netns.New() // unshares this thread into the new namespace
	if err != nil {
		runtime.UnlockOSThread()
		tb.Fatalf("create netns: %v", err)
	}
	if err := netns.Set(orig); err != nil {
		// The thread is stuck in the wrong namespace: keep it locked so
		// the runtime throws it away when the goroutine exits.
		ns.Close()
		tb.Fatalf("return to the original netns: %v", err)
	}
	runtime.UnlockOSThread()

	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		ns.Close()
		tb.Fatalf("netlink handle in test netns: %v", err)
	}
	tb.Cleanup(func() {
		h.Close()
		ns.Close()
	})
	return &testNS{ns: ns, handle: h}
}

// do runs fn on a thread inside the namespace and returns fn's error. fn
// runs on another goroutine: it must not call t.Fatal or t.Run.
func (n *testNS) do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("get current netns: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(n.ns); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter test netns: %w", err)
			return
		}
		err = fn()
		// Unlock only once the thread is back home; otherwise the
		// runtime discards the thread when this goroutine exits.
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// run runs prog under BPF_PROG_TEST_RUN inside the namespace, where the
// context's ingress ifindex is looked up.
func (n *testNS) run(prog *ebpf.Program, opts *ebpf.RunOptions) (uint32, error) {
	var v uint32
	err := n.do(func() error {
		var err error
		v, err = prog.Run(opts)
		return err
	})
	return v, err
}

// vethPair describes a veth pair to create in a test namespace.
type vethPair struct {
	rxA, txA, rxB, txB int // queue counts of the ends
	mtuB               int // peer MTU, 0 for the default
}

// addVeth creates a veth pair with unique names in the namespace, brings
// both ends up and returns their ifindexes (valid inside the namespace).
func (n *testNS) addVeth(tb testing.TB, p vethPair) (a, b netlink.Link) {
	tb.Helper()
	suffix := randSuffix(tb)
	la := netlink.NewLinkAttrs()
	la.Name = "wfa" + suffix
	la.NumRxQueues, la.NumTxQueues = p.rxA, p.txA
	veth := &netlink.Veth{LinkAttrs: la, PeerName: "wfb" + suffix,
		PeerNumRxQueues: uint32(p.rxB), PeerNumTxQueues: uint32(p.txB), PeerTxQLen: -1}
	if p.mtuB != 0 {
		veth.PeerMTU = uint32(p.mtuB)
	}
	if err := n.handle.LinkAdd(veth); err != nil {
		tb.Fatalf("create veth %s: %v", la.Name, err)
	}
	tb.Cleanup(func() {
		// The namespace's end takes the peer with it; a failure here
		// only means the namespace is already gone.
		if l, err := n.handle.LinkByName(la.Name); err == nil {
			_ = n.handle.LinkDel(l)
		}
	})
	var err error
	if a, err = n.handle.LinkByName(la.Name); err != nil {
		tb.Fatal(err)
	}
	if b, err = n.handle.LinkByName(veth.PeerName); err != nil {
		tb.Fatal(err)
	}
	for _, l := range []netlink.Link{a, b} {
		if err := n.handle.LinkSetUp(l); err != nil {
			tb.Fatalf("set %s up: %v", l.Attrs().Name, err)
		}
	}
	return a, b
}

// xdpMode reads the XDP attach mode of ifindex from the kernel:
// 1 driver, 2 generic (skb), 0 nothing attached.
func (n *testNS) xdpMode(tb testing.TB, ifindex int) uint32 {
	tb.Helper()
	l, err := n.handle.LinkByIndex(ifindex)
	if err != nil {
		tb.Fatal(err)
	}
	x := l.Attrs().Xdp
	if x == nil || !x.Attached {
		return 0
	}
	return x.AttachMode
}

func randSuffix(tb testing.TB) string {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		tb.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}
