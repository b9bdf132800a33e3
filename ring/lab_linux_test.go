package ring

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/weirlb/weir/internal/testutil"
	"github.com/weirlb/weir/umem"
)

// testEtherType (IEEE local experimental) marks the test's own frames; the
// lab's XDP program redirects it and IPv4 into the AF_XDP sockets and passes
// everything else (IPv6 neighbour discovery) to the stack.
const testEtherType = 0x88b5

// lab is a fresh network namespace holding a veth pair: frames sent into the
// peer ("wp…") arrive on the XDP side ("wx…"), whose XDP program redirects
// them by RX queue into the sockets of an XSKMAP. An AF_PACKET socket on the
// peer sends test frames and sees what the AF_XDP sockets transmit.
type lab struct {
	t        testing.TB
	ns       netns.NsHandle
	nl       *netlink.Handle
	xdpIf    int
	peerIf   int
	xdpName  string
	xdpMAC   [6]byte
	peerMAC  [6]byte
	xsks     *ebpf.Map
	pkt      int // AF_PACKET socket bound to the peer
	queues   int
	xdpAttch link.Link
}

func newLab(t testing.TB, queues int) *lab {
	testutil.RequirePrivileged(t)
	var suffix [4]byte
	rand.Read(suffix[:])
	tag := hex.EncodeToString(suffix[:])
	l := &lab{t: t, queues: queues, xdpName: "wx" + tag}

	// Create the namespace on a locked thread and put the thread back at
	// once; everything that needs the namespace runs through l.do.
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("get current netns: %v", err)
	}
	ns, nerr := netns.New()
	if err := netns.Set(orig); err != nil {
		// The thread is stuck in the new namespace: keep it locked so it
		// dies with this goroutine instead of running other code there.
		t.Fatalf("restore netns: %v", err)
	}
	runtime.UnlockOSThread()
	orig.Close()
	if nerr != nil {
		t.Fatalf("create netns: %v", nerr)
	}
	l.ns = ns
	t.Cleanup(func() { ns.Close() })

	// No IPv6 noise (router solicitations) on the test interfaces.
	l.do(func() error {
		for _, k := range []string{"all", "default"} {
			if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+k+"/disable_ipv6", []byte("1"), 0); err != nil {
				return err
			}
		}
		return nil
	})

	l.nl, err = netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatalf("netlink handle in test netns: %v", err)
	}
	t.Cleanup(l.nl.Close)
	veth := &netlink.Veth{
		LinkAttrs:       netlink.LinkAttrs{Name: l.xdpName, MTU: 1500, NumTxQueues: queues, NumRxQueues: queues},
		PeerName:        "wp" + tag,
		PeerNumTxQueues: uint32(queues),
		PeerNumRxQueues: uint32(queues),
	}
	if err := l.nl.LinkAdd(veth); err != nil {
		t.Fatalf("add veth %s: %v", l.xdpName, err)
	}
	t.Cleanup(func() { l.nl.LinkDel(veth) })
	for _, name := range []string{veth.Name, veth.PeerName} {
		ln, err := l.nl.LinkByName(name)
		if err != nil {
			t.Fatalf("find %s: %v", name, err)
		}
		if err := l.nl.LinkSetUp(ln); err != nil {
			t.Fatalf("set %s up: %v", name, err)
		}
		a := ln.Attrs()
		if name == veth.Name {
			l.xdpIf = a.Index
			copy(l.xdpMAC[:], a.HardwareAddr)
		} else {
			l.peerIf = a.Index
			copy(l.peerMAC[:], a.HardwareAddr)
		}
	}

	l.xsks, err = ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.XSKMap, KeySize: 4, ValueSize: 4, MaxEntries: uint32(queues)})
	if err != nil {
		t.Fatalf("create XSKMAP: %v", err)
	}
	t.Cleanup(func() { l.xsks.Close() })
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "weir_test_xsk",
		Type:         ebpf.XDP,
		License:      "GPL",
		Instructions: redirectProgram(l.xsks),
	})
	if err != nil {
		t.Fatalf("load XDP program: %v", err)
	}
	t.Cleanup(func() { prog.Close() })
	l.do(func() error {
		var err error
		l.xdpAttch, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: l.xdpIf, Flags: link.XDPDriverMode})
		return err
	})
	t.Cleanup(func() { l.xdpAttch.Close() })

	l.do(func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		l.pkt = fd
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: l.peerIf})
	})
	t.Cleanup(func() { unix.Close(l.pkt) })
	tv := unix.NsecToTimeval(int64(50 * time.Millisecond))
	if err := unix.SetsockoptTimeval(l.pkt, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	return l
}

// redirectProgram: frames of testEtherType or IPv4 go to the XSKMAP slot of
// their RX queue (dropped when the slot is empty); others pass.
func redirectProgram(xsks *ebpf.Map) asm.Instructions {
	// Ethertypes as a little-endian 16-bit load of the wire bytes sees them.
	le := func(v uint16) int32 { return int32(v>>8 | v<<8&0xff00) }
	return asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R2, asm.R6, 0, asm.Word), // data
		asm.LoadMem(asm.R3, asm.R6, 4, asm.Word), // data_end
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, 14),
		asm.JGT.Reg(asm.R4, asm.R3, "pass"),
		asm.LoadMem(asm.R5, asm.R2, 12, asm.Half),
		asm.JEq.Imm(asm.R5, le(testEtherType), "redirect"),
		asm.JEq.Imm(asm.R5, le(unix.ETH_P_IP), "redirect"),
		asm.Mov.Imm(asm.R0, 2).WithSymbol("pass"), // XDP_PASS
		asm.Return(),
		asm.LoadMem(asm.R2, asm.R6, 16, asm.Word).WithSymbol("redirect"), // rx_queue_index
		asm.LoadMapPtr(asm.R1, xsks.FD()),
		asm.Mov.Imm(asm.R3, 1), // XDP_DROP if no socket
		asm.FnRedirectMap.Call(),
		asm.Return(),
	}
}

// do runs f on a thread inside the lab's namespace.
func (l *lab) do(f func() error) {
	l.t.Helper()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		l.t.Fatalf("get current netns: %v", err)
	}
	defer orig.Close()
	if err := netns.Set(l.ns); err != nil {
		runtime.UnlockOSThread()
		l.t.Fatalf("enter test netns: %v", err)
	}
	ferr := f()
	if err := netns.Set(orig); err != nil {
		l.t.Fatalf("leave test netns: %v", err) // the thread stays locked and dies
	}
	runtime.UnlockOSThread()
	if ferr != nil {
		l.t.Fatal(ferr)
	}
}

func newUmem(t testing.TB, cfg umem.Config) *umem.Umem {
	t.Helper()
	u, err := umem.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := u.Close(); err != nil {
			t.Error(err)
		}
	})
	return u
}

// tryOpen opens a socket on the lab's XDP side inside its namespace.
func (l *lab) tryOpen(cfg Config) (*Socket, error) {
	cfg.Ifindex = l.xdpIf
	var s *Socket
	var err error
	l.do(func() error {
		s, err = Open(cfg)
		return nil
	})
	if err == nil {
		l.t.Cleanup(func() {
			if err := s.Close(); err != nil && !errors.Is(err, ErrClosed) {
				l.t.Error(err)
			}
		})
	}
	return s, err
}

// open opens a socket, fills its fill ring and enters it in the XSKMAP.
func (l *lab) open(cfg Config) *Socket {
	l.t.Helper()
	s, err := l.tryOpen(cfg)
	if err != nil {
		l.t.Fatal(err)
	}
	s.Refill()
	if err := l.xsks.Put(cfg.Queue, uint32(s.FD())); err != nil {
		l.t.Fatalf("put socket in XSKMAP: %v", err)
	}
	return s
}

// frame builds an Ethernet frame of testEtherType from the peer to the XDP
// side: a sequence number and a pattern, n bytes in all.
func (l *lab) frame(seq uint32, n int) []byte {
	f := make([]byte, n)
	copy(f[0:6], l.xdpMAC[:])
	copy(f[6:12], l.peerMAC[:])
	binary.BigEndian.PutUint16(f[12:14], testEtherType)
	binary.BigEndian.PutUint32(f[14:18], seq)
	for i := 18; i < n; i++ {
		f[i] = byte(seq) + byte(i)
	}
	return f
}

// udpFrame builds an IPv4/UDP frame from the peer with the given source port,
// so that the peer's TX queue choice (a flow hash) spreads flows over queues.
func (l *lab) udpFrame(sport uint16, payload []byte) []byte {
	f := make([]byte, 14+20+8+len(payload))
	copy(f[0:6], l.xdpMAC[:])
	copy(f[6:12], l.peerMAC[:])
	binary.BigEndian.PutUint16(f[12:14], unix.ETH_P_IP)
	ip := f[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:4], uint16(20+8+len(payload)))
	ip[8] = 64
	ip[9] = unix.IPPROTO_UDP
	copy(ip[12:16], []byte{192, 0, 2, 1})
	copy(ip[16:20], []byte{192, 0, 2, 2})
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(ip[10:12], ^uint16(sum))
	udp := f[34:42]
	binary.BigEndian.PutUint16(udp[0:2], sport)
	binary.BigEndian.PutUint16(udp[2:4], 9)
	binary.BigEndian.PutUint16(udp[4:6], uint16(8+len(payload)))
	copy(f[42:], payload)
	return f
}

// send transmits f out of the peer, towards the XDP side.
func (l *lab) send(f []byte) {
	l.t.Helper()
	proto := binary.BigEndian.Uint16(f[12:14])
	sa := &unix.SockaddrLinklayer{Ifindex: l.peerIf, Protocol: htons(proto), Halen: 6}
	copy(sa.Addr[:], f[0:6])
	if err := unix.Sendto(l.pkt, f, 0, sa); err != nil {
		l.t.Fatalf("send on peer: %v", err)
	}
}

// recvPeer returns the next frame of testEtherType the peer received, or nil
// after timeout.
func (l *lab) recvPeer(timeout time.Duration) []byte {
	l.t.Helper()
	buf := make([]byte, 4096)
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		n, from, err := unix.Recvfrom(l.pkt, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			l.t.Fatalf("receive on peer: %v", err)
		}
		if sll, ok := from.(*unix.SockaddrLinklayer); ok && sll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		if n >= 14 && binary.BigEndian.Uint16(buf[12:14]) == testEtherType {
			return bytes.Clone(buf[:n])
		}
	}
	return nil
}

// receive polls s until want descriptors arrived or timeout passes, copies
// each packet out, and frees the frames. It returns the packets.
func receive(t *testing.T, s *Socket, want int, timeout time.Duration) [][]byte {
	t.Helper()
	var got [][]byte
	u := s.Umem()
	deadline := time.Now().Add(timeout)
	for len(got) < want && time.Now().Before(deadline) {
		n, idx := s.RX().Peek(64)
		if n == 0 {
			if _, err := s.Wait(10 * time.Millisecond); err != nil {
				t.Fatal(err)
			}
			continue
		}
		addrs := make([]uint64, n)
		for i := range n {
			d := s.RX().Get(idx + i)
			if r := u.Room(d.Addr); r != u.DataOffset() {
				t.Errorf("packet at %#x has %d bytes of room in front, want Headroom+KernelHeadroom = %d", d.Addr, r, u.DataOffset())
			}
			got = append(got, bytes.Clone(u.Frame(d.Addr, d.Len)))
			addrs[i] = d.Addr
		}
		s.RX().Release(n)
		u.Free(addrs)
		s.Refill()
	}
	return got
}

func htons(v uint16) uint16 { return v>>8 | v<<8 }
