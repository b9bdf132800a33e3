package appliance

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weirlb/weir/internal/testutil"
	"github.com/weirlb/weir/lab"
)

// Privileged tests of health checks and draining in the DSR lab: real HTTP
// clients and servers, the appliance probing from its own namespace.
//
// On veth a flow's RX queue follows the sending socket's hash, which the
// kernel may change on a retransmission timeout, and each queue's worker has
// its own flow table: a flow that moves queues is placed by Maglev afresh.
// These tests therefore hold their long-lived connections to backends whose
// Maglev share does not change (the other backends, when one fails), or keep
// the backend set for new flows such that a re-placed flow would show up as
// an error rather than pass unnoticed.

// teeLog sends every record to several handlers.
type teeLog []slog.Handler

func (h teeLog) Enabled(ctx context.Context, l slog.Level) bool {
	return slices.ContainsFunc(h, func(x slog.Handler) bool { return x.Enabled(ctx, l) })
}

func (h teeLog) Handle(ctx context.Context, r slog.Record) error {
	for _, x := range h {
		if x.Enabled(ctx, r.Level) {
			if err := x.Handle(ctx, r.Clone()); err != nil {
				return err
			}
		}
	}
	return nil
}

func (h teeLog) WithAttrs(as []slog.Attr) slog.Handler {
	out := make(teeLog, len(h))
	for i, x := range h {
		out[i] = x.WithAttrs(as)
	}
	return out
}

func (h teeLog) WithGroup(name string) slog.Handler {
	out := make(teeLog, len(h))
	for i, x := range h {
		out[i] = x.WithGroup(name)
	}
	return out
}

// newHealthLab is newDSRLab with a health check on every VIP, probes dialled
// from the appliance's namespace, and the log kept for inspection.
func newHealthLab(t *testing.T, hc HealthConfig) (*dsrLab, *recordLog) {
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
	m, byName := dsrModel(d, []uint32{1})
	for i := range m.VIPs {
		m.VIPs[i].Health = hc
	}
	l := &dsrLab{DSR: d, weights: byName}
	rec := &recordLog{}
	log := slog.New(teeLog{rec, slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})})
	err = d.Appliance.NS.Do(func() error {
		var err error
		l.app, err = Start(Options{Interface: d.Appliance.NIC.Name, Logger: log, Dial: d.Appliance.NS.DialContext}, m)
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
	return l, rec
}

// keepConn is one keep-alive HTTP/1.1 connection from the client through
// the VIP: every request on it is the same flow.
type keepConn struct {
	c       net.Conn
	br      *bufio.Reader
	host    string
	backend string // who answered the first request
}

func dialKeep(d *lab.DSR, vip netip.Addr) (*keepConn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	host := netip.AddrPortFrom(vip, d.Port).String()
	c, err := d.Client.NS.DialContext(ctx, "tcp", host)
	if err != nil {
		return nil, err
	}
	k := &keepConn{c: c, br: bufio.NewReader(c), host: host}
	if k.backend, err = k.get("/", nil); err != nil {
		c.Close()
		return nil, err
	}
	return k, nil
}

// get sends a GET for path and reads the answer, passing the body to read
// (nil: discard it). It returns the backend that answered.
func (k *keepConn) get(path string, read func(io.Reader) error) (string, error) {
	k.c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := fmt.Fprintf(k.c, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, k.host); err != nil {
		return "", fmt.Errorf("send request: %w", err)
	}
	resp, err := http.ReadResponse(k.br, nil)
	if err != nil {
		return "", fmt.Errorf("read answer: %w", err)
	}
	defer resp.Body.Close()
	backend := resp.Header.Get("X-Weir-Backend")
	if resp.StatusCode != http.StatusOK {
		return backend, fmt.Errorf("status %s", resp.Status)
	}
	if read == nil {
		_, err = io.Copy(io.Discard, resp.Body)
	} else {
		err = read(resp.Body)
	}
	if err == nil && resp.Close {
		err = fmt.Errorf("%s closes the connection", backend)
	}
	return backend, err
}

// exchange sends a small request and a patterned download over k and checks
// that the same backend answers both, with every byte right.
func (k *keepConn) exchange(n int64, seed uint64) error {
	for _, path := range []string{"/", fmt.Sprintf("/bytes?n=%d&seed=%d", n, seed)} {
		got, err := k.get(path, func(r io.Reader) error {
			if strings.HasPrefix(path, "/bytes") {
				_, err := lab.CheckPattern(r, seed, n)
				return err
			}
			_, err := io.Copy(io.Discard, r)
			return err
		})
		if err != nil {
			return fmt.Errorf("connection to %s, GET %s: %w", k.backend, path, err)
		}
		if got != k.backend {
			return fmt.Errorf("connection to %s answered by %s on GET %s", k.backend, got, path)
		}
	}
	return nil
}

// holdConns opens keep-alive connections through vip until each backend
// named in want holds n of them; connections to other backends are closed.
func holdConns(t *testing.T, d *lab.DSR, vip netip.Addr, n int, want ...string) []*keepConn {
	t.Helper()
	var held []*keepConn
	per := map[string]int{}
	t.Cleanup(func() {
		for _, k := range held {
			k.c.Close()
		}
	})
	for tries := 0; ; tries++ {
		done := true
		for _, w := range want {
			done = done && per[w] >= n
		}
		if done {
			return held
		}
		if tries > 200 {
			t.Fatalf("after %d connections, held %v; want %d each to %v", tries, per, n, want)
		}
		k, err := dialKeep(d, vip)
		if err != nil {
			t.Fatalf("connection %d: %v", tries, err)
		}
		if !slices.Contains(want, k.backend) || per[k.backend] >= n {
			k.c.Close()
			continue
		}
		per[k.backend]++
		held = append(held, k)
	}
}

func exchangeAll(t *testing.T, held []*keepConn, when string) {
	t.Helper()
	for i, k := range held {
		if err := k.exchange(256<<10, uint64(i)); err != nil {
			t.Errorf("%s: held connection %d: %v", when, i, err)
		}
	}
}

func closeAll(held []*keepConn) {
	for _, k := range held {
		k.c.Close()
	}
}

// waitUntil polls cond every 20ms for at most within and returns how long
// it took, failing the test if it never held.
func waitUntil(t *testing.T, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > within {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

// backendState returns the state of the named backend of every VIP in the
// published snapshot's (effective) model.
func backendState(a *Appliance, name string) []BackendState {
	var out []BackendState
	for _, v := range a.Snapshot().Model.VIPs {
		for _, b := range v.Backends {
			if b.Name == name {
				out = append(out, b.State)
			}
		}
	}
	return out
}

func allStates(s []BackendState, want BackendState) bool {
	return len(s) > 0 && !slices.ContainsFunc(s, func(x BackendState) bool { return x != want })
}

// newConns opens n fresh connections through vip and counts who answered;
// every one must succeed.
func newConns(t *testing.T, d *lab.DSR, vip netip.Addr, n int) map[string]int {
	t.Helper()
	counts := map[string]int{}
	for i := 0; i < n; i++ {
		name, err := get(t, d, vip)
		if err != nil {
			t.Fatalf("new connection %d: %v", i, err)
		}
		counts[name]++
	}
	return counts
}

// Stopping one backend's HTTP server takes it out within fall probes (new
// connections stop reaching it), leaves the other backends' established
// connections alone, and starting the server again brings it back within
// rise probes.
func TestHealthLab(t *testing.T) {
	const (
		interval = 200 * time.Millisecond
		timeout  = 150 * time.Millisecond
		rise     = 2
		fall     = 2
		// slack covers the probe schedule's phase (up to an interval),
		// the timeout of the failing probe, and a loaded 2-CPU machine.
		slack = interval + timeout + time.Second
	)
	hc := HealthConfig{Type: HealthHTTP, Path: "/", Interval: interval, Timeout: timeout, Rise: rise, Fall: fall}
	l, rec := newHealthLab(t, hc)
	desired, _ := dsrModel(l.DSR, []uint32{1})
	for i := range desired.VIPs {
		desired.VIPs[i].Health = hc
	}
	victim := l.Backends[0]
	vip := l.VIP4
	nChecks := len(l.Backends) * len(l.VIPs)
	waitUntil(t, 5*time.Second, "every backend up", func() bool {
		hs := l.app.Health()
		return len(hs) == nChecks && !slices.ContainsFunc(hs, func(h BackendHealth) bool { return h.Status != HealthUp })
	})

	var others []string
	for _, b := range l.Backends[1:] {
		others = append(others, b.Name)
	}
	held := holdConns(t, l.DSR, vip, 2, others...)
	exchangeAll(t, held, "before the failure")

	if err := victim.Stop(); err != nil {
		t.Fatal(err)
	}
	took := waitUntil(t, fall*interval+slack, "failed backend out of every VIP", func() bool {
		return allStates(backendState(l.app, victim.Name), StateFailed)
	})
	t.Logf("%s out %s after its server stopped (fall %d × interval %s)", victim.Name, took.Round(time.Millisecond), fall, interval)
	// A reload of the same configuration keeps the backend's health: it
	// stays out, and is not probed afresh as unknown.
	if err := l.app.Publish(desired); err != nil {
		t.Fatal(err)
	}
	if s := backendState(l.app, victim.Name); !allStates(s, StateFailed) {
		t.Errorf("after a Publish of the same model, the failed backend is %v", s)
	}
	if counts := newConns(t, l.DSR, vip, 40); counts[victim.Name] != 0 {
		t.Errorf("new connections reached the failed backend: %v", counts)
	}
	exchangeAll(t, held, "with one backend failed")
	for _, h := range l.app.Health() {
		if h.Backend == victim.Name && (h.Status != HealthDown || h.Downs != 1 || h.Ups != 1 || !strings.Contains(h.LastError, "refused")) {
			t.Errorf("failed backend's health: %+v", h)
		}
	}

	if err := victim.Serve(nil); err != nil {
		t.Fatal(err)
	}
	took = waitUntil(t, rise*interval+slack, "recovered backend back in every VIP", func() bool {
		return allStates(backendState(l.app, victim.Name), StateActive)
	})
	t.Logf("%s back %s after its server started (rise %d × interval %s)", victim.Name, took.Round(time.Millisecond), rise, interval)
	if counts := newConns(t, l.DSR, vip, 60); counts[victim.Name] == 0 {
		t.Errorf("new connections do not reach the recovered backend: %v", counts)
	}
	exchangeAll(t, held, "after the recovery")

	for _, h := range l.app.Health() {
		if h.Backend == victim.Name && (h.Status != HealthUp || h.Downs != 1 || h.Ups != 2) {
			t.Errorf("recovered backend's health: %+v", h)
		}
		if h.Backend != victim.Name && (h.Status != HealthUp || h.Downs != 0 || h.Ups != 1) {
			t.Errorf("healthy backend's health: %+v", h)
		}
	}
	var logged []string
	for _, s := range rec.transitions() {
		if strings.HasPrefix(s, victim.Name+" ") {
			logged = append(logged, s)
		}
	}
	perVIP := []string{victim.Name + " unknown->up", victim.Name + " up->down", victim.Name + " down->up"}
	if len(logged) != len(perVIP)*len(l.VIPs) {
		t.Errorf("logged transitions of %s: %q, want %q for each VIP", victim.Name, logged, perVIP)
	}

	closeAll(held)
	// Probe answers pass through the redirect program and move its
	// counters: turn the checks off so that settle sees them stop.
	quiet, _ := dsrModel(l.DSR, []uint32{1})
	if err := l.app.Publish(quiet); err != nil {
		t.Fatal(err)
	}
	if hs := l.app.Health(); len(hs) != 0 {
		t.Errorf("checks still running after they were turned off: %+v", hs)
	}
	l.settle(t)
	if rsts := tcpSNMP(t, l.Appliance.NS).OutRsts; rsts != 0 {
		t.Errorf("appliance stack sent %d TCP resets", rsts)
	}
	checkCounters(t, l.stop(t), l.app.RealStats())
}

// Draining a backend (state = draining, or weight 0) keeps its open
// connections, a slow download among them, to the end; new connections
// never reach it.
func TestDrainLab(t *testing.T) {
	l, _ := newHealthLab(t, HealthConfig{}) // no health check: draining alone
	victim := l.Backends[0].Name
	vip := l.VIP4
	active, _ := dsrModel(l.DSR, []uint32{1})
	for _, tc := range []struct {
		name  string
		drain func(*Backend)
	}{
		{"state", func(b *Backend) { b.State = StateDraining }},
		{"weight0", func(b *Backend) { b.Weight = 0 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := l.app.Publish(active); err != nil {
				t.Fatal(err)
			}
			held := holdConns(t, l.DSR, vip, 3, victim, l.Backends[1].Name)
			defer closeAll(held)
			exchangeAll(t, held, "before the drain")

			// A slow download from the victim spans the drain: the client
			// reads 32 KiB every 10 ms, so the backend keeps waiting for
			// window updates that travel through the appliance.
			const size = 8 << 20
			slow := held[slices.IndexFunc(held, func(k *keepConn) bool { return k.backend == victim })]
			started := make(chan struct{})
			done := make(chan error, 1)
			go func() {
				got, err := slow.get(fmt.Sprintf("/bytes?n=%d&seed=99", size), func(r io.Reader) error {
					close(started)
					_, err := lab.CheckPattern(&slowReader{r: r, chunk: 32 << 10, pause: 10 * time.Millisecond}, 99, size)
					return err
				})
				if err == nil && got != victim {
					err = fmt.Errorf("download answered by %s", got)
				}
				done <- err
			}()
			select {
			case <-started:
			case err := <-done:
				t.Fatalf("slow download: %v", err)
			}
			time.Sleep(200 * time.Millisecond)

			drained, _ := dsrModel(l.DSR, []uint32{1})
			for i := range drained.VIPs {
				for j := range drained.VIPs[i].Backends {
					if b := &drained.VIPs[i].Backends[j]; b.Name == victim {
						tc.drain(b)
					}
				}
			}
			if err := l.app.Publish(drained); err != nil {
				t.Fatal(err)
			}
			if counts := newConns(t, l.DSR, vip, 60); counts[victim] != 0 {
				t.Errorf("new connections reached the draining backend: %v", counts)
			}
			select {
			case err := <-done:
				t.Errorf("the slow download ended before the new connections did (err %v): it did not span the drain", err)
			default:
			}
			if err := <-done; err != nil {
				t.Errorf("slow download from the draining backend: %v", err)
			}
			exchangeAll(t, held, "after the drain")
			if counts := newConns(t, l.DSR, vip, 20); counts[victim] != 0 {
				t.Errorf("new connections reached the draining backend: %v", counts)
			}
		})
	}
	l.settle(t)
	if rsts := tcpSNMP(t, l.Appliance.NS).OutRsts; rsts != 0 {
		t.Errorf("appliance stack sent %d TCP resets", rsts)
	}
	for name, s := range backendsTCP(t, l.DSR) {
		if s.OutRsts != 0 {
			t.Errorf("%s sent %d TCP resets: a flow reached a backend that did not own it", name, s.OutRsts)
		}
	}
	checkCounters(t, l.stop(t), l.app.RealStats())
}

// slowReader reads at most chunk bytes per pause.
type slowReader struct {
	r     io.Reader
	chunk int
	pause time.Duration
	left  int
}

func (s *slowReader) Read(b []byte) (int, error) {
	if s.left == 0 {
		time.Sleep(s.pause)
		s.left = s.chunk
	}
	n, err := s.r.Read(b[:min(len(b), s.left)])
	s.left -= n
	return n, err
}
