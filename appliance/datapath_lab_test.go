package appliance

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/weirlb/weir/internal/testutil"
	"github.com/weirlb/weir/lab"
	"github.com/weirlb/weir/packet"
	"github.com/weirlb/weir/umem"
)

// dsrLab is a DSR lab with HTTP backends and a running appliance.
type dsrLab struct {
	*lab.DSR
	app     *Appliance
	stopped bool
	weights map[string]uint32 // backend name -> weight
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func dsrModel(d *lab.DSR, weights []uint32) (Model, map[string]uint32) {
	var m Model
	byName := map[string]uint32{}
	for _, vip := range d.VIPs {
		v := VIP{VIPKey: VIPKey{Addr: vip, Proto: packet.ProtoTCP, Port: d.Port}, Name: "web", Mode: ModeDSR}
		for i, b := range d.Backends {
			w := weights[i%len(weights)]
			v.Backends = append(v.Backends, Backend{Addr: b.Addr(vip), Name: b.Name, Weight: w})
			byName[b.Name] = w
		}
		m.VIPs = append(m.VIPs, v)
	}
	return m, byName
}

func newDSRLab(t *testing.T, weights []uint32) *dsrLab {
	testutil.RequirePrivileged(t)
	d, err := lab.NewDSR(lab.DSRConfig{Backends: 3, Queues: 2})
	if err != nil {
		t.Fatalf("build lab: %v", err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("close lab: %v", err)
		}
	})
	if err := d.StartHTTP(); err != nil {
		t.Fatalf("start backends: %v", err)
	}
	m, byName := dsrModel(d, weights)
	l := &dsrLab{DSR: d, weights: byName}
	err = d.Appliance.NS.Do(func() error {
		var err error
		l.app, err = Start(Options{Interface: d.Appliance.NIC.Name, Logger: testLogger(t)}, m)
		return err
	})
	if err != nil {
		t.Fatalf("start appliance: %v", err)
	}
	t.Cleanup(func() {
		if !l.stopped {
			l.stop(t)
		}
	})
	return l
}

func (l *dsrLab) stop(t *testing.T) Stats {
	t.Helper()
	l.stopped = true
	st, err := l.app.Stop()
	if err != nil {
		t.Errorf("stop appliance: %v", err)
	}
	checkFrames(t, st.Frames)
	return st
}

// checkFrames checks the UMEM ledger Stop reports, taken after the workers
// exited and before the sockets were closed: no frame left in a worker's
// hands, every frame either free or lent to the kernel, and the kernel still
// holding the fill ring's frames (a ledger taken after close would show
// every frame free whatever happened before).
func checkFrames(t *testing.T, f umem.Accounting) {
	t.Helper()
	if f.Total == 0 || f.InHand != 0 || f.Free < 0 || f.KernelRX <= 0 || f.KernelTX < 0 ||
		f.Free+f.KernelRX+f.KernelTX != f.Total {
		t.Errorf("after stop, frames do not add up: %v", f)
	}
}

// get fetches / from the VIP over a fresh TCP connection and returns the
// name of the backend that answered.
func get(t *testing.T, d *lab.DSR, vip netip.Addr) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := httpNewRequest(ctx, lab.URL(vip, d.Port, "/"))
	resp, err := d.HTTPClient().Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(body)), nil
}

func TestDSRLabRealTCP(t *testing.T) {
	l := newDSRLab(t, []uint32{1, 1, 2})
	for _, vip := range l.VIPs {
		counts := map[string]int{}
		const n = 200
		for i := 0; i < n; i++ {
			name, err := get(t, l.DSR, vip)
			if err != nil {
				t.Fatalf("request %d to %s: %v", i, vip, err)
			}
			counts[name]++
		}
		t.Logf("%s: %v", vip, counts)
		for name := range l.weights {
			if counts[name] == 0 {
				t.Errorf("%s: backend %s served nothing: %v", vip, name, counts)
			}
		}
	}
	snmp, err := l.Appliance.NS.SNMP()
	if err != nil {
		t.Fatal(err)
	}
	if snmp.TCP.OutRsts != 0 {
		t.Errorf("appliance stack sent %d TCP resets", snmp.TCP.OutRsts)
	}
	st, _ := l.app.Stats()
	t.Logf("afxdp %v xdp %v total %+v xdp %+v", l.app.AFXDPMode(), l.app.XDPMode(), st.Total, st.XDP)
}

// reply is what one request through the VIP learned: which backend answered
// and the client address and port that backend saw.
type reply struct {
	backend string
	remote  netip.AddrPort
}

// getReply fetches path from the VIP over a fresh TCP connection from the
// client namespace.
func getReply(ctx context.Context, d *lab.DSR, vip netip.Addr, path string) (reply, error) {
	req, err := httpNewRequest(ctx, lab.URL(vip, d.Port, path))
	if err != nil {
		return reply{}, err
	}
	resp, err := d.HTTPClient().Do(req)
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

func parseReply(resp *http.Response, body []byte) (reply, error) {
	if resp.StatusCode != http.StatusOK {
		return reply{}, fmt.Errorf("status %s: %s", resp.Status, body)
	}
	r := reply{backend: strings.TrimSpace(string(body))}
	if h := resp.Header.Get("X-Weir-Backend"); h != r.backend {
		return reply{}, fmt.Errorf("body names %q, X-Weir-Backend %q", r.backend, h)
	}
	var err error
	if r.remote, err = netip.ParseAddrPort(resp.Header.Get("X-Weir-Remote")); err != nil {
		return reply{}, fmt.Errorf("X-Weir-Remote: %w", err)
	}
	r.remote = netip.AddrPortFrom(r.remote.Addr().Unmap(), r.remote.Port())
	return r, nil
}

// settle waits until the appliance's published counters stop moving (they
// are at most StatsMaxAge old), so that Stop's final counters see no packet
// in flight.
func (l *dsrLab) settle(t *testing.T) Stats {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	prev, err := l.app.Stats()
	if err != nil {
		t.Fatalf("stats: %v", err)
	}
	for stable := 0; stable < 3; {
		if time.Now().After(deadline) {
			t.Fatalf("counters still moving after 5s: %+v", prev.Total)
		}
		time.Sleep(StatsMaxAge)
		st, err := l.app.Stats()
		if err != nil {
			t.Fatalf("stats: %v", err)
		}
		if st.Total == prev.Total && st.XDP == prev.XDP {
			stable++
		} else {
			stable = 0
		}
		prev = st
	}
	return prev
}

// checkCounters checks that the final counters of a stopped appliance add
// up: every frame the redirect program handed to a socket was received by a
// worker or counted as dropped by the kernel at the socket; every received
// frame was transmitted, answered or dropped for a reason; every
// transmitted frame went to a real.
func checkCounters(t *testing.T, st Stats, reals []RealStat) {
	t.Helper()
	var ringDrops, rx uint64
	for _, w := range st.Workers {
		c := &w.Counters
		rx += c.RXPackets
		ringDrops += w.Ring.RXDropped + w.Ring.RXRingFull
		if c.RXPackets != c.TXPackets+c.Replies+c.Dropped() {
			t.Errorf("queue %d: received %d, sent %d + answered %d + dropped %d", w.Queue, c.RXPackets, c.TXPackets, c.Replies, c.Dropped())
		}
		if w.Ring.RXInvalidDescs != 0 || w.Ring.TXInvalidDescs != 0 {
			t.Errorf("queue %d: invalid descriptors: %+v", w.Queue, w.Ring)
		}
	}
	if rx != st.Total.RXPackets {
		t.Errorf("workers received %d, total says %d", rx, st.Total.RXPackets)
	}
	if st.XDP.Redirected != st.Total.RXPackets+ringDrops {
		t.Errorf("xdp redirected %d frames, workers received %d and sockets dropped %d", st.XDP.Redirected, st.Total.RXPackets, ringDrops)
	}
	if st.XDP.DroppedNoSocket != 0 || st.XDP.DroppedMalformed != 0 {
		t.Errorf("xdp dropped VIP frames: %+v", st.XDP)
	}
	var realPkts, realBytes uint64
	for _, r := range reals {
		realPkts += r.Packets
		realBytes += r.Bytes
	}
	if realPkts != st.Total.TXPackets || realBytes != st.Total.TXBytes {
		t.Errorf("reals were sent %d packets (%d bytes), workers sent %d (%d bytes)", realPkts, realBytes, st.Total.TXPackets, st.Total.TXBytes)
	}
}

// tcpSNMP reads the namespace's TCP counters.
func tcpSNMP(t *testing.T, ns *lab.NS) lab.TCPStats {
	t.Helper()
	s, err := ns.SNMP()
	if err != nil {
		t.Fatal(err)
	}
	return s.TCP
}

// backendsTCP reads every backend's TCP counters, by backend name.
func backendsTCP(t *testing.T, d *lab.DSR) map[string]lab.TCPStats {
	t.Helper()
	out := make(map[string]lab.TCPStats, len(d.Backends))
	for _, b := range d.Backends {
		out[b.Name] = tcpSNMP(t, b.NS)
	}
	return out
}
