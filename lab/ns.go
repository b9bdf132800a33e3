package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// NetnsDir is where named network namespaces are bind-mounted, as iproute2
// does, so `ip netns list` and `ip netns exec` see the lab's namespaces.
const NetnsDir = "/run/netns"

// ErrClosed is returned by the methods of an NS after Close.
var ErrClosed = errors.New("lab: namespace closed")

// NS is a named network namespace owned by this process. It is safe for
// concurrent use. Its name stays reserved under NetnsDir until Close.
type NS struct {
	name string

	// mu guards fd and nl against Close: readers hold it while they switch a
	// thread into the namespace, so a closed descriptor number can never be
	// reused under their feet for some other namespace.
	mu sync.RWMutex
	fd int // -1 once closed
	nl *netlink.Handle
}

// NewNS creates a network namespace named prefix + "-" + eight random hex
// digits, with its loopback interface up. The prefix may hold letters,
// digits, '.', '_' and '-'. The caller must Close it.
func NewNS(prefix string) (*NS, error) {
	if err := checkName(prefix); err != nil {
		return nil, fmt.Errorf("lab: new namespace: %w", err)
	}
	return createNS(prefix + "-" + randomHex(4))
}

// checkName accepts names that are safe as a file name under NetnsDir and
// readable in `ip netns list`.
func checkName(name string) error {
	if name == "" {
		return errors.New("empty name")
	}
	if len(name) > 200 {
		return fmt.Errorf("name %q longer than 200 bytes", name)
	}
	for i, c := range name {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '_' || c == '-' || c == '.' && i > 0
		if !ok {
			return fmt.Errorf("name %q: character %q not allowed (letters, digits, '.', '_', '-')", name, c)
		}
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never fails (crypto/rand panics rather than return an error)
	return hex.EncodeToString(b)
}

// createNS creates the namespace with exactly this name; it fails if the
// name is taken, so two labs can never share a namespace.
func createNS(name string) (_ *NS, err error) {
	if err := checkName(name); err != nil {
		return nil, fmt.Errorf("lab: new namespace: %w", err)
	}
	if err := os.MkdirAll(NetnsDir, 0o755); err != nil {
		return nil, fmt.Errorf("lab: new namespace %s: %w", name, err)
	}
	p := filepath.Join(NetnsDir, name)
	f, err := os.OpenFile(p, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return nil, fmt.Errorf("lab: new namespace %s: %w", name, err)
	}
	f.Close()

	// Unshare on a locked thread and bind-mount its new namespace; onThread
	// switches the thread back to where it was afterwards.
	err = onThread(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare: %w", err)
		}
		return nil
	}, func() error {
		if err := unix.Mount("/proc/thread-self/ns/net", p, "none", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind-mount %s: %w", p, err)
		}
		return nil
	})
	if err != nil {
		os.Remove(p)
		return nil, fmt.Errorf("lab: new namespace %s: %w", name, err)
	}

	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		unmountNS(p)
		return nil, fmt.Errorf("lab: new namespace %s: open: %w", name, err)
	}
	n := &NS{name: name, fd: fd}
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	// The netlink sockets are opened from a thread inside the namespace
	// (rather than with netlink.NewHandleAt, which ignores a failed switch
	// back) so they are bound to it for their whole life.
	err = n.Do(func() error {
		h, err := netlink.NewHandle()
		if err != nil {
			return err
		}
		n.nl = h
		lo, err := h.LinkByName("lo")
		if err != nil {
			return err
		}
		return h.LinkSetUp(lo)
	})
	if err != nil {
		return nil, fmt.Errorf("lab: new namespace %s: %w", name, err)
	}
	return n, nil
}

func unmountNS(p string) error {
	var errs []error
	if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		errs = append(errs, fmt.Errorf("unmount %s: %w", p, err))
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Name is the namespace's name under NetnsDir (what `ip netns list` shows).
func (n *NS) Name() string { return n.name }

// Path is the namespace's bind mount, usable with `ip netns exec` or setns.
func (n *NS) Path() string { return filepath.Join(NetnsDir, n.name) }

func (n *NS) String() string { return n.name }

// Netlink returns the namespace's netlink handle, or nil after Close. The
// handle belongs to n: do not Close it and do not keep it past n.Close,
// because a closed netlink.Handle silently falls back to the namespace of
// whichever thread uses it.
func (n *NS) Netlink() *netlink.Handle {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.nl
}

// Close releases the namespace: the netlink handle, the descriptor and the
// bind mount. The kernel destroys the namespace, and every interface in it,
// once nothing else (a socket, a process, another descriptor) refers to it.
// Close is idempotent.
func (n *NS) Close() error {
	n.mu.Lock()
	if n.fd < 0 {
		n.mu.Unlock()
		return nil
	}
	if n.nl != nil {
		n.nl.Close()
		n.nl = nil
	}
	unix.Close(n.fd)
	n.fd = -1
	n.mu.Unlock()
	if err := unmountNS(n.Path()); err != nil {
		return fmt.Errorf("lab: close namespace %s: %w", n.name, err)
	}
	return nil
}

// Do runs fn on an OS thread switched into the namespace and waits for it.
// fn runs on its own goroutine, locked to that thread; goroutines that fn
// starts do not inherit the namespace. Sockets keep the namespace they were
// created in, so fn may create them and return them. Afterwards the thread
// is switched back; if that fails it is left locked so that it dies with the
// goroutine instead of carrying the namespace into unrelated code. A panic in
// fn is re-raised in the caller, and runtime.Goexit (t.FailNow) is passed on.
func (n *NS) Do(fn func() error) error {
	return onThread(func() error {
		n.mu.RLock()
		defer n.mu.RUnlock()
		if n.fd < 0 {
			return fmt.Errorf("lab: %s: %w", n.name, ErrClosed)
		}
		if err := unix.Setns(n.fd, unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("lab: enter namespace %s: %w", n.name, err)
		}
		return nil
	}, fn)
}

// onThread runs enter and then fn on a fresh goroutine locked to its OS
// thread, and afterwards switches the thread back to the network namespace
// it started in. enter must leave the thread where it was if it fails.
//
// The switch back is what makes the thread reusable: a goroutine that ends
// while locked usually takes its thread with it, but not when it runs on the
// process's main thread, which the runtime keeps (in whatever namespace it
// was left). So the thread is only abandoned when restoring fails.
func onThread(enter, fn func() error) error {
	type result struct {
		err      error
		panicked bool
		value    any
		goexit   bool
	}
	done := make(chan result, 1)
	go func() {
		res := result{goexit: true}
		defer func() { done <- res }()

		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			res = result{err: fmt.Errorf("lab: open current namespace: %w", err)}
			return
		}
		defer unix.Close(orig)
		if err := enter(); err != nil {
			runtime.UnlockOSThread()
			res = result{err: err}
			return
		}
		// Deferred, so it also runs when fn panics or calls runtime.Goexit.
		defer func() {
			if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
				// Leave the thread locked: it is discarded with this goroutine.
				res.err = errors.Join(res.err, fmt.Errorf("lab: leave namespace: %w", err))
				return
			}
			runtime.UnlockOSThread()
		}()
		defer func() {
			if v := recover(); v != nil {
				res.panicked, res.value, res.goexit = true, v, false
			}
		}()
		res.err = fn()
		res.goexit = false
	}()
	res := <-done
	switch {
	case res.panicked:
		panic(res.value)
	case res.goexit:
		runtime.Goexit()
	}
	return res.err
}

// Sysctl writes value to the namespace's /proc/sys/<key>, for example
// Sysctl("net/ipv4/conf/all/arp_ignore", "1"). Only keys under net/ are
// accepted: they are the only ones that belong to a network namespace, and a
// write anywhere else would change the whole machine.
func (n *NS) Sysctl(key, value string) error {
	p, err := sysctlPath(key)
	if err != nil {
		return fmt.Errorf("lab: %s: sysctl: %w", n.name, err)
	}
	err = n.Do(func() error {
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
		if err != nil {
			return err
		}
		_, err = f.WriteString(value)
		return errors.Join(err, f.Close())
	})
	if err != nil {
		return fmt.Errorf("lab: %s: sysctl %s=%s: %w", n.name, key, value, err)
	}
	return nil
}

// ReadSysctl reads the namespace's /proc/sys/<key>, without the trailing
// newline. Keys follow the rules of Sysctl.
func (n *NS) ReadSysctl(key string) (string, error) {
	p, err := sysctlPath(key)
	if err != nil {
		return "", fmt.Errorf("lab: %s: sysctl: %w", n.name, err)
	}
	var b []byte
	err = n.Do(func() error {
		var err error
		b, err = os.ReadFile(p)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("lab: %s: read sysctl %s: %w", n.name, key, err)
	}
	return strings.TrimRight(string(b), "\n"), nil
}

func sysctlPath(key string) (string, error) {
	if !strings.HasPrefix(key, "net/") || path.Clean(key) != key || strings.Contains(key, "..") {
		return "", fmt.Errorf("key %q: want a clean path under net/, like net/ipv4/ip_forward", key)
	}
	return "/proc/sys/" + key, nil
}

// Iface is a network interface as seen from inside its namespace.
type Iface struct {
	Name  string
	Index int // only meaningful inside the interface's namespace
	MAC   MAC
	MTU   int
}

// Iface looks up the interface called name in the namespace.
func (n *NS) Iface(name string) (Iface, error) {
	h := n.Netlink()
	if h == nil {
		return Iface{}, fmt.Errorf("lab: %s: interface %s: %w", n.name, name, ErrClosed)
	}
	l, err := h.LinkByName(name)
	if err != nil {
		return Iface{}, fmt.Errorf("lab: %s: interface %s: %w", n.name, name, err)
	}
	return ifaceOf(l), nil
}

func ifaceOf(l netlink.Link) Iface {
	a := l.Attrs()
	var m MAC
	copy(m[:], a.HardwareAddr)
	return Iface{Name: a.Name, Index: a.Index, MAC: m, MTU: a.MTU}
}

// MAC is an Ethernet address; a comparable value, unlike net.HardwareAddr.
type MAC [6]byte

func (m MAC) String() string {
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5])
}

// HardwareAddr returns a copy of m for APIs that take net.HardwareAddr.
func (m MAC) HardwareAddr() net.HardwareAddr { return net.HardwareAddr(m[:]) }

// Listen is net.Listen with the socket created inside the namespace; the
// listener and its accepted connections stay there.
func (n *NS) Listen(network, address string) (net.Listener, error) {
	var ln net.Listener
	err := n.Do(func() error {
		var err error
		ln, err = net.Listen(network, address)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("lab: %s: %w", n.name, err)
	}
	return ln, nil
}

// ListenPacket is net.ListenPacket with the socket created inside the
// namespace.
func (n *NS) ListenPacket(network, address string) (net.PacketConn, error) {
	var pc net.PacketConn
	err := n.Do(func() error {
		var err error
		pc, err = net.ListenPacket(network, address)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("lab: %s: %w", n.name, err)
	}
	return pc, nil
}

// DialTimeout bounds DialContext when ctx has no earlier deadline: a lab
// connection that is not up after this long is black-holed, and a test
// should say so rather than wait for the kernel's SYN retries.
const DialTimeout = 5 * time.Second

// DialContext is net.Dialer.DialContext with the socket created inside the
// namespace, so it can serve as http.Transport.DialContext. The host part
// of address must be an IP literal: a name could resolve to several
// addresses, and Go dials those from goroutines that are not in the
// namespace.
func (n *NS) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	switch network {
	case "tcp", "tcp4", "tcp6", "udp", "udp4", "udp6":
		host, _, err := net.SplitHostPort(address)
		if err != nil {
			return nil, fmt.Errorf("lab: %s: dial %s %s: %w", n.name, network, address, err)
		}
		if _, err := netip.ParseAddr(host); err != nil {
			return nil, fmt.Errorf("lab: %s: dial %s %s: host must be an IP address (names would be dialled outside the namespace)", n.name, network, address)
		}
	}
	var c net.Conn
	err := n.Do(func() error {
		var err error
		d := net.Dialer{Timeout: DialTimeout}
		c, err = d.DialContext(ctx, network, address)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("lab: %s: %w", n.name, err)
	}
	return c, nil
}

// HTTPClient returns an HTTP client whose connections originate in the
// namespace. Every request opens a fresh TCP connection (no keep-alive), so
// each one is a new flow for the load balancer; proxies from the
// environment are ignored. URLs must use IP addresses (see DialContext).
func (n *NS) HTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext:           n.DialContext,
		DisableKeepAlives:     true,
		ResponseHeaderTimeout: 10 * time.Second,
	}}
}

// ListNS returns the names under NetnsDir that start with prefix, sorted.
// With the ID of a lab (or the prefix of its configuration) it finds what a
// crashed process left behind.
func ListNS(prefix string) ([]string, error) {
	ents, err := os.ReadDir(NetnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("lab: list namespaces: %w", err)
	}
	var names []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names, nil
}

// RemoveNS removes the named namespace's bind mount, like `ip netns delete`:
// the namespace dies once no process or socket refers to it any more. It is
// meant for namespaces a crashed lab left behind; live labs use Close.
func RemoveNS(name string) error {
	if err := checkName(name); err != nil {
		return fmt.Errorf("lab: remove namespace: %w", err)
	}
	p := filepath.Join(NetnsDir, name)
	if _, err := os.Lstat(p); err != nil {
		return fmt.Errorf("lab: remove namespace %s: %w", name, err)
	}
	if err := unmountNS(p); err != nil {
		return fmt.Errorf("lab: remove namespace %s: %w", name, err)
	}
	return nil
}
