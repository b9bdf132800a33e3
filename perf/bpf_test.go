package perf

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/weirlb/weir/internal/testutil"
	"github.com/weirlb/weir/packet"
)

// XDP verdicts.
const (
	xdpAborted = 0
	xdpDrop    = 1
	xdpPass    = 2
	xdpTX      = 3
)

// testRun runs prog once over frame (not in live mode) and returns the
// verdict and the frame as the program left it.
func testRun(t *testing.T, prog *ebpf.Program, frame []byte) (uint32, []byte) {
	t.Helper()
	out := make([]byte, len(frame)+256)
	ret, err := prog.Run(&ebpf.RunOptions{Data: frame, DataOut: out})
	if err != nil {
		t.Fatal(err)
	}
	return ret, out
}

// genTemplate builds the generator's template for a family and its config.
func genTemplate(t *testing.T, family, size int) ([]byte, FrameSpec, generatorGenConfig) {
	t.Helper()
	spec := FrameSpec{Size: size, Proto: packet.ProtoUDP, SrcMAC: packet.MAC{2, 0, 0, 0, 0, 1}, DstMAC: packet.MAC{2, 0, 0, 0, 0, 2},
		Src: benchClient4, Dst: benchVIP4, DstPort: benchPort}
	if family == 6 {
		spec.Src, spec.Dst = benchClient6, benchVIP6
	}
	f, err := BuildFrame(spec)
	if err != nil {
		t.Fatal(err)
	}
	cfg := generatorGenConfig{Flows: 7, Ports: 3, PortBase: 5000, Family: uint8(family)}
	copy(cfg.Eth[:], f[:ethLen])
	if family == 4 {
		copy(cfg.IpCsum[:], f[ethLen+10:ethLen+12])
	} else {
		copy(cfg.UdpCsum[:], f[spec.portOffset()+6:spec.portOffset()+8])
	}
	return f, spec, cfg
}

// The generator cycles through the flows, stamps the payload and keeps the
// checksums right; pacing and the deadline hold frames back.
func TestGeneratorFrames(t *testing.T) {
	testutil.RequirePrivileged(t)
	g, err := newGenerator()
	if err != nil {
		t.Fatal(err)
	}
	defer g.close()
	for _, family := range []int{4, 6} {
		tmpl, spec, cfg := genTemplate(t, family, 128)
		if err := g.configure(cfg); err != nil {
			t.Fatal(err)
		}
		// The kernel may hand the program a frame someone else changed:
		// it must rewrite the Ethernet header itself.
		frame := append([]byte(nil), tmpl...)
		copy(frame, []byte{9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9})
		var lastSent uint64
		for i := range 10 {
			ret, out := testRun(t, g.objs.WeirPerfGen, frame)
			if ret != xdpTX {
				t.Fatalf("ipv%d run %d: verdict %d, want XDP_TX", family, i, ret)
			}
			out = out[:len(tmpl)]
			flow := i % 7
			if !bytesEqual(out[:ethLen], tmpl[:ethLen]) {
				t.Errorf("ipv%d run %d: Ethernet header %x, want %x", family, i, out[:ethLen], tmpl[:ethLen])
			}
			if port := binary.BigEndian.Uint16(out[spec.portOffset():]); int(port) != 5000+flow%3 {
				t.Errorf("ipv%d run %d: source port %d, want %d", family, i, port, 5000+flow%3)
			}
			srcEnd := spec.srcOffset() + 4
			if family == 6 {
				srcEnd = spec.srcOffset() + 16
			}
			if host := binary.BigEndian.Uint16(out[srcEnd-2:]); int(host) != flow/3 {
				t.Errorf("ipv%d run %d: source host %d, want %d", family, i, host, flow/3)
			}
			p := out[spec.payloadOffset():]
			sent := binary.LittleEndian.Uint64(p[8:])
			if binary.BigEndian.Uint32(p) != payloadMagic || binary.LittleEndian.Uint32(p[4:]) != uint32(flow) || sent < lastSent || sent == 0 {
				t.Errorf("ipv%d run %d: payload %x", family, i, p[:payloadLen])
			}
			lastSent = sent
			// Checksums over what was sent.
			s := spec
			if family == 4 {
				s.Src = netip.AddrFrom4([4]byte(out[spec.srcOffset():]))
				if !packet.IPv4(out[ethLen:]).ChecksumValid() {
					t.Errorf("ipv4 run %d: bad header checksum", i)
				}
				if ck := binary.BigEndian.Uint16(out[spec.portOffset()+6:]); ck != 0 {
					t.Errorf("ipv4 run %d: UDP checksum %#x, want 0 (none)", i, ck)
				}
			} else {
				s.Src = netip.AddrFrom16([16]byte(out[spec.srcOffset():]))
				if !l4ChecksumOK(t, s, out) {
					t.Errorf("ipv6 run %d: bad UDP checksum", i)
				}
			}
		}
		c, err := g.counters()
		if err != nil {
			t.Fatal(err)
		}
		if c.Sent != 10 || c.Held != 0 || c.window() <= 0 {
			t.Errorf("ipv%d: counters %+v", family, c)
		}
	}

	// Paced to one frame a minute: the first goes, the next is held.
	_, _, cfg := genTemplate(t, 4, 64)
	cfg.IntervalNs = uint64(time.Minute)
	if err := g.configure(cfg); err != nil {
		t.Fatal(err)
	}
	tmpl, _, _ := genTemplate(t, 4, 64)
	if ret, _ := testRun(t, g.objs.WeirPerfGen, tmpl); ret != xdpTX {
		t.Errorf("paced: first verdict %d", ret)
	}
	if ret, _ := testRun(t, g.objs.WeirPerfGen, tmpl); ret != xdpDrop {
		t.Errorf("paced: second verdict %d, want XDP_DROP", ret)
	}
	// Past the deadline nothing goes.
	cfg.IntervalNs, cfg.StopNs = 0, 1
	if err := g.configure(cfg); err != nil {
		t.Fatal(err)
	}
	if ret, _ := testRun(t, g.objs.WeirPerfGen, tmpl); ret != xdpDrop {
		t.Errorf("after the deadline: verdict %d, want XDP_DROP", ret)
	}
	if c, _ := g.counters(); c.Sent != 0 {
		t.Errorf("after the deadline: %d sent", c.Sent)
	}
	// A frame too short for the payload is refused.
	cfg.StopNs = 0
	g.configure(cfg)
	if ret, _ := testRun(t, g.objs.WeirPerfGen, tmpl[:40]); ret != xdpAborted {
		t.Errorf("short frame: verdict %d, want XDP_ABORTED", ret)
	}
}

func bytesEqual(a, b []byte) bool { return string(a) == string(b) }

// The sink counts benchmark frames with the backend's MAC, records their
// latency in the bucket Go's bucketOf names, and passes everything else.
func TestSink(t *testing.T) {
	testutil.RequirePrivileged(t)
	want := packet.MAC{2, 0, 0, 0, 0, 1}
	s, err := newSink(want)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	if err := s.reset(); err != nil {
		t.Fatal(err)
	}
	frame, spec, _ := genTemplate(t, 4, 64)
	packet.Ethernet(frame).SetDst(want)
	p := frame[spec.payloadOffset():]
	binary.BigEndian.PutUint32(p, payloadMagic)
	const age = 3 * time.Millisecond
	now, err := monotonicNs()
	if err != nil {
		t.Fatal(err)
	}
	binary.LittleEndian.PutUint64(p[8:], now-uint64(age))
	if ret, _ := testRun(t, s.objs.WeirPerfSink, frame); ret != xdpDrop {
		t.Fatalf("benchmark frame: verdict %d, want XDP_DROP", ret)
	}
	after, _ := monotonicNs()

	wrong := append([]byte(nil), frame...)
	packet.Ethernet(wrong).SetDst(packet.MAC{2, 0, 0, 0, 0, 9})
	if ret, _ := testRun(t, s.objs.WeirPerfSink, wrong); ret != xdpDrop {
		t.Errorf("wrong MAC: verdict %d", ret)
	}
	future := append([]byte(nil), frame...)
	binary.LittleEndian.PutUint64(future[spec.payloadOffset()+8:], after+uint64(time.Hour))
	testRun(t, s.objs.WeirPerfSink, future)
	other := append([]byte(nil), frame...)
	binary.BigEndian.PutUint32(other[spec.payloadOffset():], 0xdeadbeef)
	if ret, _ := testRun(t, s.objs.WeirPerfSink, other); ret != xdpPass {
		t.Errorf("other frame: verdict %d, want XDP_PASS", ret)
	}
	arp := make([]byte, 60)
	binary.BigEndian.PutUint16(arp[12:], 0x0806)
	if ret, _ := testRun(t, s.objs.WeirPerfSink, arp); ret != xdpPass {
		t.Errorf("ARP: verdict %d, want XDP_PASS", ret)
	}

	r, err := s.read()
	if err != nil {
		t.Fatal(err)
	}
	// The frame from the future is received, but has no latency.
	if r.Received != 2 || r.Bytes != 2*uint64(len(frame)) || r.WrongMAC != 1 || r.ClockSkew != 1 || r.Other != 2 {
		t.Errorf("sink counters %+v", r)
	}
	h := r.Latency
	if h.Count != 1 || h.MaxNs < uint64(age) || h.MaxNs > after-(now-uint64(age)) {
		t.Fatalf("latency count %d max %v, want one sample of about %v", h.Count, time.Duration(h.MaxNs), age)
	}
	// The kernel's bucket is the one Go computes for the recorded value.
	if b := bucketOf(h.MaxNs); h.Buckets[b] != 1 {
		t.Errorf("sample %d ns: bucket %d empty in the kernel's histogram", h.MaxNs, b)
	}
	if err := s.reset(); err != nil {
		t.Fatal(err)
	}
	if r, _ := s.read(); r.Received != 0 || r.Latency.Count != 0 {
		t.Errorf("after reset: %+v", r)
	}
}

func TestReference(t *testing.T) {
	testutil.RequirePrivileged(t)
	backend, local := packet.MAC{2, 0, 0, 0, 0, 0xbe}, packet.MAC{2, 0, 0, 0, 0, 0x10}
	r, err := newReference(backend, local)
	if err != nil {
		t.Fatal(err)
	}
	defer r.close()
	for _, family := range []int{4, 6} {
		frame, _, _ := genTemplate(t, family, 64)
		ret, out := testRun(t, r.objs.WeirPerfReference, frame)
		eth := packet.Ethernet(out)
		if ret != xdpTX || eth.Dst() != backend || eth.Src() != local || !bytesEqual(out[ethLen:len(frame)], frame[ethLen:]) {
			t.Errorf("ipv%d: verdict %d, frame %x", family, ret, out[:len(frame)])
		}
	}
	arp := make([]byte, 60)
	binary.BigEndian.PutUint16(arp[12:], 0x0806)
	if ret, out := testRun(t, r.objs.WeirPerfReference, arp); ret != xdpPass || !bytesEqual(out[:60], arp) {
		t.Errorf("ARP: verdict %d", ret)
	}
	if n, err := r.forwarded(); err != nil || n != 2 {
		t.Errorf("forwarded %d, %v; want 2", n, err)
	}
}
