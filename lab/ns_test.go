package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weirlb/weir/internal/testutil"
)

// hostNetns is the network namespace the test binary started in; every
// thread must be back in it whenever no Do call is running.
var hostNetns, _ = os.Readlink("/proc/thread-self/ns/net")

// checkThreadsHome fails if any thread of the process sits in a network
// namespace other than the one it started in: proof that Do restored (or
// discarded) every thread it switched.
func checkThreadsHome(t *testing.T) {
	t.Helper()
	if hostNetns == "" {
		t.Fatal("could not read the starting network namespace")
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		ns, err := os.Readlink(filepath.Join("/proc/self/task", task.Name(), "ns/net"))
		if err != nil {
			continue // the thread exited meanwhile
		}
		if ns != hostNetns {
			t.Errorf("thread %s (pid %d) is in %s, want %s", task.Name(), os.Getpid(), ns, hostNetns)
		}
	}
}

// checkGone fails if a namespace whose name starts with prefix is still
// mounted, or a link in the test's own namespace mentions it.
func checkGone(t *testing.T, prefix string) {
	t.Helper()
	left, err := ListNS(prefix)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) > 0 {
		t.Errorf("namespaces left behind: %v", left)
	}
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if strings.Contains(l.Attrs().Name, prefix) {
			t.Errorf("link %s left in the host namespace", l.Attrs().Name)
		}
	}
	checkThreadsHome(t)
}

// testPrefix returns a prefix no other test (or engineer) uses, and checks
// at the end of the test that nothing with it is left.
func testPrefix(t *testing.T) string {
	p := "wlt" + randomHex(3)
	t.Cleanup(func() { checkGone(t, p) })
	return p
}

// soNetnsCookie is SO_NETNS_COOKIE (Linux 5.14), not in x/sys yet: a
// number that identifies a socket's network namespace.
const soNetnsCookie = 71

func netnsCookie(t *testing.T, c syscall.Conn) uint64 {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v uint64
	var serr error
	if err := rc.Control(func(fd uintptr) {
		v, serr = unix.GetsockoptUint64(int(fd), unix.SOL_SOCKET, soNetnsCookie)
	}); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatalf("SO_NETNS_COOKIE: %v", serr)
	}
	return v
}

func TestNSLifecycle(t *testing.T) {
	testutil.RequirePrivileged(t)
	prefix := testPrefix(t)

	n, err := NewNS(prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })

	if !strings.HasPrefix(n.Name(), prefix+"-") || len(n.Name()) != len(prefix)+9 {
		t.Errorf("name %q: want %s-<8 hex digits>", n.Name(), prefix)
	}
	if names, _ := ListNS(prefix); len(names) != 1 || names[0] != n.Name() {
		t.Errorf("ListNS(%q) = %v, want [%s]", prefix, names, n.Name())
	}

	// Do runs in the namespace and comes back.
	var inside string
	if err := n.Do(func() error {
		var err error
		inside, err = os.Readlink("/proc/thread-self/ns/net")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if inside == hostNetns {
		t.Errorf("Do ran in the host namespace %s", inside)
	}
	st, err := os.Stat(n.Path())
	if err != nil {
		t.Fatal(err)
	}
	if want := "net:[" + itoa(st.Sys().(*syscall.Stat_t).Ino) + "]"; inside != want {
		t.Errorf("Do ran in %s, want the namespace mounted at %s (%s)", inside, n.Path(), want)
	}
	wantErr := errors.New("from fn")
	if err := n.Do(func() error { return wantErr }); err != wantErr {
		t.Errorf("Do returned %v, want fn's error", err)
	}
	checkThreadsHome(t)

	// Loopback is up, so the namespace is usable at once.
	lo, err := n.Netlink().LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if lo.Attrs().Flags&net.FlagUp == 0 {
		t.Error("lo is down")
	}

	// Sysctls land in the namespace, not on the host.
	hostFwd, err := os.ReadFile("/proc/sys/net/ipv4/conf/all/arp_ignore")
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Sysctl("net/ipv4/conf/all/arp_ignore", "2"); err != nil {
		t.Fatal(err)
	}
	if v, err := n.ReadSysctl("net/ipv4/conf/all/arp_ignore"); err != nil || v != "2" {
		t.Errorf("ReadSysctl = %q, %v; want 2", v, err)
	}
	if after, _ := os.ReadFile("/proc/sys/net/ipv4/conf/all/arp_ignore"); string(after) != string(hostFwd) {
		t.Errorf("host arp_ignore changed from %q to %q", hostFwd, after)
	}
	for _, key := range []string{"kernel/hostname", "net/../kernel/hostname", "/net/ipv4/ip_forward", "net/ipv4//ip_forward"} {
		if err := n.Sysctl(key, "x"); err == nil {
			t.Errorf("Sysctl(%q) accepted", key)
		}
	}

	// Sockets from Listen and DialContext live in the namespace.
	ln, err := n.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := n.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	defer sc.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(sc, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("read %q, %v", buf, err)
	}
	hostConn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hostConn.Close()
	nsConn, err := n.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer nsConn.Close()
	nsCookie := netnsCookie(t, nsConn.(*net.UDPConn))
	if h := netnsCookie(t, hostConn.(*net.UDPConn)); h == nsCookie {
		t.Error("ListenPacket socket is in the host namespace")
	}
	if got := netnsCookie(t, ln.(*net.TCPListener)); got != nsCookie {
		t.Error("Listen socket is not in the namespace")
	}
	if got := netnsCookie(t, c.(*net.TCPConn)); got != nsCookie {
		t.Error("DialContext socket is not in the namespace")
	}
	if _, err := n.DialContext(ctx, "tcp", "localhost:80"); err == nil || !strings.Contains(err.Error(), "IP address") {
		t.Errorf("DialContext with a host name: %v, want a refusal", err)
	}

	// Counters come from the namespace: the connection above is its only one.
	s, err := n.SNMP()
	if err != nil {
		t.Fatal(err)
	}
	if s.TCP.ActiveOpens != 1 || s.TCP.PassiveOpens != 1 || s.TCP.CurrEstab != 2 {
		t.Errorf("TCP ActiveOpens=%d PassiveOpens=%d CurrEstab=%d, want 1, 1, 2",
			s.TCP.ActiveOpens, s.TCP.PassiveOpens, s.TCP.CurrEstab)
	}
	if s.TCP.InSegs == 0 || s.TCP.OutSegs == 0 || s.TCP.RtoMin != 200 || s.TCP.MaxConn != -1 {
		t.Errorf("TCP counters look wrong: %+v", s.TCP)
	}

	ln.Close()
	c.Close()
	sc.Close()
	nsConn.Close()
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := n.Do(func() error { return nil }); !errors.Is(err, ErrClosed) {
		t.Errorf("Do after Close: %v, want ErrClosed", err)
	}
	if n.Netlink() != nil {
		t.Error("Netlink after Close is not nil")
	}
	if _, err := os.Stat(n.Path()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s still exists: %v", n.Path(), err)
	}
}

func itoa(v uint64) string {
	if v == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for v > 0 {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
	}
	return string(b[i:])
}

func TestNSDoPanicAndGoexit(t *testing.T) {
	testutil.RequirePrivileged(t)
	n, err := NewNS(testPrefix(t))
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()

	func() {
		defer func() {
			if v := recover(); v != "boom" {
				t.Errorf("recovered %v, want the panic from fn", v)
			}
		}()
		n.Do(func() error { panic("boom") })
		t.Error("Do returned after fn panicked")
	}()

	// Goexit inside fn (t.FailNow in a helper) ends the calling goroutine too.
	returned := make(chan bool, 1)
	go func() {
		defer func() { returned <- false }()
		n.Do(func() error { runtimeGoexit(); return nil })
		returned <- true
	}()
	if <-returned {
		t.Error("Do returned after fn called runtime.Goexit")
	}
	time.Sleep(50 * time.Millisecond) // let the discarded thread exit
	checkThreadsHome(t)
}

func TestNewNSRejectsBadPrefix(t *testing.T) {
	for _, p := range []string{"", "a/b", "../x", ".hidden", "sp ace", strings.Repeat("x", 201)} {
		if _, err := NewNS(p); err == nil {
			t.Errorf("NewNS(%q) accepted", p)
		}
	}
}

func TestOffloads(t *testing.T) {
	testutil.RequirePrivileged(t)
	n, err := NewNS(testPrefix(t))
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	la := netlink.NewLinkAttrs()
	la.Name = "v0"
	if err := n.Netlink().LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "v1", PeerTxQLen: -1}); err != nil {
		t.Fatal(err)
	}
	for _, on := range []bool{false, true, false} {
		if err := n.SetTxChecksum("v0", on); err != nil {
			t.Fatal(err)
		}
		if got, err := n.TxChecksum("v0"); err != nil || got != on {
			t.Errorf("TxChecksum after SetTxChecksum(%v) = %v, %v", on, got, err)
		}
		if err := n.SetGRO("v0", on); err != nil {
			t.Fatal(err)
		}
		if got, err := n.GRO("v0"); err != nil || got != on {
			t.Errorf("GRO after SetGRO(%v) = %v, %v", on, got, err)
		}
	}
	// The peer was not touched.
	if on, err := n.TxChecksum("v1"); err != nil || !on {
		t.Errorf("peer TxChecksum = %v, %v; want on (untouched)", on, err)
	}
	if _, err := n.TxChecksum("nosuchlink"); !errors.Is(err, unix.ENODEV) {
		t.Errorf("TxChecksum on a missing link: %v, want ENODEV", err)
	}
}

// TestNSDoConcurrent runs Do from many goroutines at once, against two
// namespaces, and checks each call ran where it should and every thread
// came home.
func TestNSDoConcurrent(t *testing.T) {
	testutil.RequirePrivileged(t)
	prefix := testPrefix(t)
	var nss [2]*NS
	want := map[*NS]string{}
	for i := range nss {
		n, err := NewNS(prefix)
		if err != nil {
			t.Fatal(err)
		}
		defer n.Close()
		st, err := os.Stat(n.Path())
		if err != nil {
			t.Fatal(err)
		}
		nss[i] = n
		want[n] = "net:[" + itoa(st.Sys().(*syscall.Stat_t).Ino) + "]"
	}
	errs := make(chan error, 64)
	for i := range cap(errs) {
		go func() {
			n := nss[i%2]
			errs <- n.Do(func() error {
				got, err := os.Readlink("/proc/thread-self/ns/net")
				if err == nil && got != want[n] {
					err = fmt.Errorf("ran in %s, want %s", got, want[n])
				}
				return err
			})
		}()
	}
	for range cap(errs) {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	checkThreadsHome(t)
}
