package appliance

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/weirlb/weir/lab"
)

// Helpers for the datapath tests that craft TCP segments by hand, send them
// from the client namespace through a raw socket, and watch where they land
// with packet sockets in the backend namespaces.

// TCP flags.
const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpPSH = 0x08
	tcpACK = 0x10
)

// tcpSegment builds an IPv4 or IPv6 packet (the family of src) carrying one
// TCP segment, with correct IP and TCP checksums.
func tcpSegment(src, dst netip.AddrPort, seq, ack uint32, flags uint8, payload []byte) []byte {
	tcpLen := 20 + len(payload)
	var ipHdr []byte
	if src.Addr().Is4() {
		ipHdr = make([]byte, 20)
		ipHdr[0] = 0x45
		binary.BigEndian.PutUint16(ipHdr[2:], uint16(20+tcpLen))
		binary.BigEndian.PutUint16(ipHdr[4:], uint16(seq)|1) // identification
		binary.BigEndian.PutUint16(ipHdr[6:], 0x4000)        // don't fragment
		ipHdr[8] = 64
		ipHdr[9] = unix.IPPROTO_TCP
		s, d := src.Addr().As4(), dst.Addr().As4()
		copy(ipHdr[12:], s[:])
		copy(ipHdr[16:], d[:])
		binary.BigEndian.PutUint16(ipHdr[10:], ^fold(sum16(0, ipHdr)))
	} else {
		ipHdr = make([]byte, 40)
		ipHdr[0] = 0x60
		binary.BigEndian.PutUint16(ipHdr[4:], uint16(tcpLen))
		ipHdr[6] = unix.IPPROTO_TCP
		ipHdr[7] = 64
		s, d := src.Addr().As16(), dst.Addr().As16()
		copy(ipHdr[8:], s[:])
		copy(ipHdr[24:], d[:])
	}
	pkt := append(ipHdr, make([]byte, tcpLen)...)
	tcp := pkt[len(ipHdr):]
	binary.BigEndian.PutUint16(tcp[0:], src.Port())
	binary.BigEndian.PutUint16(tcp[2:], dst.Port())
	binary.BigEndian.PutUint32(tcp[4:], seq)
	binary.BigEndian.PutUint32(tcp[8:], ack)
	tcp[12] = 5 << 4
	tcp[13] = flags
	binary.BigEndian.PutUint16(tcp[14:], 64240)
	copy(tcp[20:], payload)
	// Pseudo-header: addresses, protocol and TCP length (RFC 793, RFC 8200).
	var sum uint32
	if src.Addr().Is4() {
		sum = sum16(sum, ipHdr[12:20])
	} else {
		sum = sum16(sum, ipHdr[8:40])
	}
	sum += unix.IPPROTO_TCP + uint32(tcpLen)
	binary.BigEndian.PutUint16(tcp[16:], ^fold(sum16(sum, tcp)))
	return pkt
}

// sum16 adds b to a one's complement sum as big-endian 16-bit words.
func sum16(sum uint32, b []byte) uint32 {
	for len(b) >= 2 {
		sum += uint32(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	return sum
}

func fold(sum uint32) uint16 {
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return uint16(sum)
}

// TestDatapathSegmentBuilder checks tcpSegment against gopacket, so that a
// segment the backends ignore cannot be blamed on a bad checksum.
func TestDatapathSegmentBuilder(t *testing.T) {
	for _, c := range []struct{ src, dst string }{
		{"10.90.0.1:23456", "192.0.2.1:80"},
		{"[fd00:90::1]:23456", "[2001:db8::1]:80"},
	} {
		src, dst := netip.MustParseAddrPort(c.src), netip.MustParseAddrPort(c.dst)
		for _, payload := range [][]byte{nil, []byte("odd"), []byte("even")} {
			got := tcpSegment(src, dst, 0x01020304, 0x0a0b0c0d, tcpPSH|tcpACK, payload)
			first := layers.LayerTypeIPv4
			if src.Addr().Is6() {
				first = layers.LayerTypeIPv6
			}
			p := gopacket.NewPacket(got, first, gopacket.Default)
			if el := p.ErrorLayer(); el != nil {
				t.Fatalf("%s: decode: %v", c.src, el.Error())
			}
			tcp, _ := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
			if tcp == nil || tcp.SrcPort != layers.TCPPort(src.Port()) || tcp.DstPort != layers.TCPPort(dst.Port()) ||
				tcp.Seq != 0x01020304 || tcp.Ack != 0x0a0b0c0d || !tcp.PSH || !tcp.ACK || tcp.SYN || string(tcp.Payload) != string(payload) {
				t.Fatalf("%s: decoded %+v", c.src, tcp)
			}
			// Re-serialise with gopacket computing lengths and checksums: the
			// bytes must not change.
			var nl gopacket.NetworkLayer
			var ipl gopacket.SerializableLayer
			if ip4, ok := p.NetworkLayer().(*layers.IPv4); ok {
				nl, ipl = ip4, ip4
			} else {
				ip6 := p.NetworkLayer().(*layers.IPv6)
				nl, ipl = ip6, ip6
			}
			tcp.SetNetworkLayerForChecksum(nl)
			buf := gopacket.NewSerializeBuffer()
			opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
			if err := gopacket.SerializeLayers(buf, opts, ipl, tcp, gopacket.Payload(payload)); err != nil {
				t.Fatal(err)
			}
			if want := buf.Bytes(); string(got) != string(want) {
				t.Errorf("%s payload %q:\ngot  %x\nwant %x", c.src, payload, got, want)
			}
		}
	}
}

// rawSender sends hand-built IP packets from a namespace (IPPROTO_RAW: the
// packet includes its IP header; the route to its destination picks the
// interface and next hop).
type rawSender struct{ fd4, fd6 int }

func newRawSender(t *testing.T, ns *lab.NS) *rawSender {
	t.Helper()
	r := &rawSender{fd4: -1, fd6: -1}
	t.Cleanup(func() {
		for _, fd := range []int{r.fd4, r.fd6} {
			if fd >= 0 {
				unix.Close(fd)
			}
		}
	})
	err := ns.Do(func() error {
		var err error
		if r.fd4, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW); err != nil {
			return fmt.Errorf("raw ipv4 socket: %w", err)
		}
		if r.fd6, err = unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW); err != nil {
			return fmt.Errorf("raw ipv6 socket: %w", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *rawSender) send(pkt []byte, dst netip.Addr) error {
	if dst.Is4() {
		return unix.Sendto(r.fd4, pkt, 0, &unix.SockaddrInet4{Addr: dst.As4()})
	}
	return unix.Sendto(r.fd6, pkt, 0, &unix.SockaddrInet6{Addr: dst.As16()})
}

// sniffed is one TCP segment to a VIP seen arriving at a backend.
type sniffed struct {
	backend string
	src     netip.AddrPort
	flags   uint8
	seq     uint32
}

// sniffer records every TCP segment to a VIP's port that arrives on any
// backend's NIC, through one packet socket per backend namespace.
type sniffer struct {
	vips []netip.Addr
	port uint16

	mu   sync.Mutex
	segs []sniffed

	stop chan struct{}
	wg   sync.WaitGroup
}

func sniffBackends(t *testing.T, d *lab.DSR) *sniffer {
	t.Helper()
	s := &sniffer{vips: d.VIPs, port: d.Port, stop: make(chan struct{})}
	var fds []int
	t.Cleanup(func() {
		close(s.stop)
		s.wg.Wait()
		for _, fd := range fds {
			unix.Close(fd)
		}
	})
	for _, b := range d.Backends {
		var fd int
		err := b.NS.Do(func() error {
			var err error
			proto := int(htons(unix.ETH_P_ALL))
			if fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, proto); err != nil {
				return err
			}
			fds = append(fds, fd)
			tv := unix.NsecToTimeval(int64(20 * time.Millisecond))
			if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
				return err
			}
			return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: b.NIC.Index})
		})
		if err != nil {
			t.Fatalf("%s: packet socket: %v", b.Name, err)
		}
		s.wg.Add(1)
		go s.read(t, b.Name, fd)
	}
	return s
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (s *sniffer) read(t *testing.T, backend string, fd int) {
	defer s.wg.Done()
	buf := make([]byte, 65536)
	for {
		select {
		case <-s.stop:
			return
		default:
		}
		n, from, err := unix.Recvfrom(fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			t.Errorf("%s: packet socket: %v", backend, err)
			return
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		if seg, ok := s.parse(backend, buf[:n]); ok {
			s.mu.Lock()
			s.segs = append(s.segs, seg)
			s.mu.Unlock()
		}
	}
}

// parse recognises an IPv4 or IPv6 packet (no extension headers) carrying a
// TCP segment to a VIP's port.
func (s *sniffer) parse(backend string, b []byte) (sniffed, bool) {
	var src, dst netip.Addr
	var l4 []byte
	switch {
	case len(b) >= 20 && b[0]>>4 == 4 && b[9] == unix.IPPROTO_TCP:
		ihl := int(b[0]&0xf) * 4
		if ihl < 20 || len(b) < ihl+20 {
			return sniffed{}, false
		}
		src, dst = netip.AddrFrom4([4]byte(b[12:16])), netip.AddrFrom4([4]byte(b[16:20]))
		l4 = b[ihl:]
	case len(b) >= 60 && b[0]>>4 == 6 && b[6] == unix.IPPROTO_TCP:
		src, dst = netip.AddrFrom16([16]byte(b[8:24])), netip.AddrFrom16([16]byte(b[24:40]))
		l4 = b[40:]
	default:
		return sniffed{}, false
	}
	if !slices.Contains(s.vips, dst) || binary.BigEndian.Uint16(l4[2:]) != s.port {
		return sniffed{}, false
	}
	return sniffed{
		backend: backend,
		src:     netip.AddrPortFrom(src, binary.BigEndian.Uint16(l4[0:])),
		flags:   l4[13],
		seq:     binary.BigEndian.Uint32(l4[4:]),
	}, true
}

// snapshot returns the segments seen so far.
func (s *sniffer) snapshot() []sniffed {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.segs)
}

// waitFor polls until done reports true for the segments seen, or fails the
// test after timeout with what was seen.
func (s *sniffer) waitFor(t *testing.T, what string, timeout time.Duration, done func([]sniffed) bool) []sniffed {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		segs := s.snapshot()
		if done(segs) {
			return segs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not seen after %v; backends saw %d segments: %v", what, timeout, len(segs), segs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// getFrom fetches / from vip over a TCP connection from the client's source
// address and port src, and returns the backend's reply.
func getFrom(ctx context.Context, d *lab.DSR, src netip.AddrPort, vip netip.Addr) (reply, error) {
	var c net.Conn
	err := d.Client.NS.Do(func() error {
		dl := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(src), Timeout: lab.DialTimeout}
		var err error
		c, err = dl.DialContext(ctx, "tcp", netip.AddrPortFrom(vip, d.Port).String())
		return err
	})
	if err != nil {
		return reply{}, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, lab.URL(vip, d.Port, "/"), nil)
	if err != nil {
		return reply{}, err
	}
	req.Close = true
	if err := req.Write(c); err != nil {
		return reply{}, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return reply{}, err
	}
	return parseReply(resp, body)
}
