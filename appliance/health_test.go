package appliance

import (
	"context"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weirlb/weir/packet"
)

func TestHealthMachine(t *testing.T) {
	const rise, fall = 2, 3
	U, D, K := HealthUp, HealthDown, HealthUnknown
	for _, tc := range []struct {
		name    string
		results string         // o = success, x = failure
		want    []HealthStatus // status after each result
	}{
		{"unknown is up after one success", "o", []HealthStatus{U}},
		{"unknown goes down after fall failures", "xxx", []HealthStatus{K, K, D}},
		{"a success resets the failure run", "xxoxxx", []HealthStatus{K, K, U, U, U, D}},
		{"down rises after rise successes", "xxxoo", []HealthStatus{K, K, D, D, U}},
		{"a failure resets the success run", "xxxoxoo", []HealthStatus{K, K, D, D, D, D, U}},
		{"up falls after fall failures", "oxxx", []HealthStatus{U, U, U, D}},
		{"down stays down on failures", "xxxxxx", []HealthStatus{K, K, D, D, D, D}},
		{"flapping never moves", "oxoxoxox", []HealthStatus{U, U, U, U, U, U, U, U}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var m healthMachine
			for i, r := range tc.results {
				before := m.status
				from, to := m.observe(r == 'o', rise, fall)
				if from != before || to != tc.want[i] || m.status != to {
					t.Fatalf("result %d (%c): from %v to %v, want from %v to %v", i, r, from, to, before, tc.want[i])
				}
			}
		})
	}
	// rise = fall = 1 flips on every change.
	var m healthMachine
	for i, want := range []HealthStatus{D, U, D, U} {
		if _, to := m.observe(i%2 == 1, 1, 1); to != want {
			t.Fatalf("rise=fall=1, result %d: %v, want %v", i, to, want)
		}
	}
}

func TestCheckHealth(t *testing.T) {
	base := VIP{VIPKey: VIPKey{Addr: addr("192.0.2.1"), Proto: packet.ProtoTCP, Port: 80}}
	for _, tc := range []struct {
		name string
		h    HealthConfig
		port uint16
		want string // substring of the error; "" = valid
	}{
		{"zero value probes nothing", HealthConfig{}, 80, ""},
		{"none", HealthConfig{Type: HealthNone, Interval: -1}, 80, ""},
		{"tcp with defaults", HealthConfig{Type: HealthTCP}, 80, ""},
		{"http with defaults", HealthConfig{Type: HealthHTTP}, 80, ""},
		{"short interval shrinks the default timeout", HealthConfig{Type: HealthTCP, Interval: 50 * time.Millisecond}, 80, ""},
		{"unknown type", HealthConfig{Type: "icmp"}, 80, "unknown health check type"},
		{"timeout over interval", HealthConfig{Type: HealthTCP, Interval: time.Second, Timeout: 2 * time.Second}, 80, "longer than interval"},
		{"negative fall", HealthConfig{Type: HealthTCP, Fall: -1}, 80, "negative"},
		{"bad status", HealthConfig{Type: HealthHTTP, ExpectStatus: 700}, 80, "not an HTTP status"},
		{"bad path", HealthConfig{Type: HealthHTTPS, Path: "healthz"}, 80, "must start with /"},
		{"all ports without a port", HealthConfig{Type: HealthTCP}, 0, "needs a port"},
		{"all ports with a port", HealthConfig{Type: HealthTCP, Port: 8080}, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := base
			v.Port, v.Health = tc.port, tc.h
			err := checkHealth(&v)
			if (err == nil) != (tc.want == "") || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("checkHealth(%+v) = %v, want %q", tc.h, err, tc.want)
			}
		})
	}
	d := HealthConfig{Type: HealthTCP, Interval: 300 * time.Millisecond}.withDefaults()
	if d.Timeout != 300*time.Millisecond || d.Rise != DefaultHealthRise || d.Fall != DefaultHealthFall ||
		d.Path != DefaultHealthPath || d.ExpectStatus != DefaultHealthStatus {
		t.Errorf("defaults: %+v", d)
	}
	m := Model{VIPs: []VIP{base}}
	m.VIPs[0].Health = HealthConfig{Type: HealthTCP, Timeout: time.Hour}
	if err := validateModel(m); err == nil || !strings.Contains(err.Error(), "vip tcp/192.0.2.1:80") {
		t.Errorf("validateModel does not check health or name the VIP: %v", err)
	}
}

// recordLog is a slog handler that keeps every record, for tests that check
// what was logged.
type recordLog struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (h *recordLog) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordLog) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.recs = append(h.recs, r.Clone())
	h.mu.Unlock()
	return nil
}
func (h *recordLog) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordLog) WithGroup(string) slog.Handler      { return h }

// transitions returns "backend from->to" for every transition logged.
func (h *recordLog) transitions() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, r := range h.recs {
		if !strings.HasPrefix(r.Message, "backend health:") {
			continue
		}
		a := map[string]string{}
		r.Attrs(func(at slog.Attr) bool { a[at.Key] = at.Value.String(); return true })
		out = append(out, fmt.Sprintf("%s %s->%s", a["backend"], a["from"], a["to"]))
	}
	return out
}

// healthVIP is a TCP VIP on port whose backends are the given loopback
// addresses, named after their last byte.
func healthVIP(port uint16, h HealthConfig, backends ...string) VIP {
	v := VIP{VIPKey: VIPKey{Addr: addr("192.0.2.99"), Proto: packet.ProtoTCP, Port: port}, Name: "hc", Health: h}
	for _, b := range backends {
		a := addr(b)
		v.Backends = append(v.Backends, Backend{Addr: a, Name: "be" + fmt.Sprint(a.As4()[3]), Weight: 1, MAC: beMAC(int(a.As4()[3]))})
	}
	return v
}

func newTestChecker(t *testing.T, dial DialFunc, concurrency int) (*healthChecker, *recordLog) {
	log := &recordLog{}
	c := newHealthChecker(slog.New(log), dial, concurrency)
	t.Cleanup(c.stop)
	return c, log
}

// healthOf returns the state of backend a, or fails.
func healthOf(t *testing.T, c *healthChecker, a string) BackendHealth {
	t.Helper()
	for _, h := range c.snapshot() {
		if h.Addr == addr(a) {
			return h
		}
	}
	t.Fatalf("no health check for %s", a)
	return BackendHealth{}
}

// waitHealth waits until cond holds for backend a's state.
func waitHealth(t *testing.T, c *healthChecker, a string, within time.Duration, what string, cond func(BackendHealth) bool) BackendHealth {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		h := healthOf(t, c, a)
		if cond(h) {
			return h
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s not reached within %s: %+v", a, what, within, h)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// listenPort listens on addr:port (port 0 picks one) on loopback.
func listenPort(t *testing.T, a string, port uint16) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", netip.AddrPortFrom(addr(a), port).String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// acceptLoop accepts and closes connections on ln, counting them.
func acceptLoop(ln net.Listener) *atomic.Int64 {
	var n atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			c.Close()
		}
	}()
	return &n
}

func portOf(ln net.Listener) uint16 { return uint16(ln.Addr().(*net.TCPAddr).Port) }

// TCP checks against real listeners: a backend with a listener comes up,
// one without goes down after fall refused connections and is excluded, and
// comes back after rise accepted ones once something listens.
func TestHealthTCP(t *testing.T) {
	up := listenPort(t, "127.0.0.2", 0)
	acceptLoop(up)
	port := portOf(up)
	c, log := newTestChecker(t, nil, 0)
	h := HealthConfig{Type: HealthTCP, Interval: 20 * time.Millisecond, Timeout: 20 * time.Millisecond, Rise: 2, Fall: 3}
	m := Model{VIPs: []VIP{healthVIP(port, h, "127.0.0.2", "127.0.0.3")}}
	c.update(m)

	waitHealth(t, c, "127.0.0.2", 2*time.Second, "up", func(h BackendHealth) bool { return h.Status == HealthUp })
	down := waitHealth(t, c, "127.0.0.3", 2*time.Second, "down", func(h BackendHealth) bool { return h.Status == HealthDown })
	if down.Downs != 1 || down.Ups != 0 || down.Failures < 3 || down.ProbeFailures < 3 || !strings.Contains(down.LastError, "refused") ||
		down.Target != netip.MustParseAddrPort(fmt.Sprintf("127.0.0.3:%d", port)) || down.Check != HealthTCP || down.VIPName != "hc" || down.Backend != "be3" {
		t.Errorf("down backend: %+v", down)
	}
	select {
	case <-c.changed:
	default:
		t.Error("going down did not signal a change")
	}
	eff := m.clone()
	if !c.apply(&eff) || eff.VIPs[0].Backends[0].State != StateActive || eff.VIPs[0].Backends[1].State != StateFailed {
		t.Errorf("apply: %+v", eff.VIPs[0].Backends)
	}
	if m.VIPs[0].Backends[1].State != StateActive {
		t.Error("apply changed the desired model")
	}

	// The backend comes back when something listens.
	acceptLoop(listenPort(t, "127.0.0.3", port))
	back := waitHealth(t, c, "127.0.0.3", 2*time.Second, "up again", func(h BackendHealth) bool { return h.Status == HealthUp })
	if back.Ups != 1 || back.Downs != 1 || back.Successes < 2 || back.LastError != "" {
		t.Errorf("recovered backend: %+v", back)
	}
	eff = m.clone()
	if c.apply(&eff) {
		t.Errorf("apply still excludes a recovered backend: %+v", eff.VIPs[0].Backends)
	}
	// Each backend's transitions, in order.
	got := log.transitions()
	be2 := slices.DeleteFunc(slices.Clone(got), func(s string) bool { return !strings.HasPrefix(s, "be2 ") })
	be3 := slices.DeleteFunc(slices.Clone(got), func(s string) bool { return !strings.HasPrefix(s, "be3 ") })
	if !slices.Equal(be2, []string{"be2 unknown->up"}) || !slices.Equal(be3, []string{"be3 unknown->down", "be3 down->up"}) || len(got) != 3 {
		t.Errorf("logged transitions %q", got)
	}
}

// HTTP checks: the status must be the expected one, a slow answer is a
// timeout, and both count as failures.
func TestHealthHTTP(t *testing.T) {
	var status atomic.Int64
	status.Store(http.StatusNoContent)
	var slow atomic.Bool
	var paths sync.Map
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		paths.Store(r.URL.Path, r.Header.Get("User-Agent"))
		if slow.Load() {
			select {
			case <-time.After(time.Second):
			case <-r.Context().Done():
			}
		}
		w.WriteHeader(int(status.Load()))
	}))
	srv.Listener.Close()
	srv.Listener = listenPort(t, "127.0.0.2", 0)
	srv.Start()
	t.Cleanup(srv.Close)
	port := portOf(srv.Listener)

	c, _ := newTestChecker(t, nil, 0)
	h := HealthConfig{Type: HealthHTTP, Path: "/ready", ExpectStatus: 204, Interval: 20 * time.Millisecond, Timeout: 15 * time.Millisecond, Rise: 2, Fall: 2}
	c.update(Model{VIPs: []VIP{healthVIP(port, h, "127.0.0.2")}})
	waitHealth(t, c, "127.0.0.2", 2*time.Second, "up", func(h BackendHealth) bool { return h.Status == HealthUp })
	if ua, ok := paths.Load("/ready"); !ok || ua != "weir-health-check" {
		t.Errorf("probe did not GET /ready as weir-health-check: %v %v", ua, ok)
	}

	status.Store(http.StatusOK) // not the expected 204
	hs := waitHealth(t, c, "127.0.0.2", 2*time.Second, "down on status", func(h BackendHealth) bool { return h.Status == HealthDown })
	if !strings.Contains(hs.LastError, "answered 200, want 204") {
		t.Errorf("status mismatch error: %q", hs.LastError)
	}
	status.Store(http.StatusNoContent)
	waitHealth(t, c, "127.0.0.2", 2*time.Second, "up again", func(h BackendHealth) bool { return h.Status == HealthUp })

	slow.Store(true) // answers after a second: a 15ms timeout fails
	hs = waitHealth(t, c, "127.0.0.2", 2*time.Second, "down on timeout", func(h BackendHealth) bool { return h.Status == HealthDown })
	if !strings.Contains(hs.LastError, "no answer within 15ms") || hs.LastRTT < 15*time.Millisecond || hs.LastRTT > 500*time.Millisecond {
		t.Errorf("timeout: error %q after %s", hs.LastError, hs.LastRTT)
	}
	if hs.Downs != 2 || hs.Ups != 2 {
		t.Errorf("transitions: %d ups, %d downs; want 2 and 2", hs.Ups, hs.Downs)
	}
}

func TestHealthHTTPS(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil {
			w.WriteHeader(http.StatusBadRequest)
		}
	}))
	srv.Listener.Close()
	srv.Listener = listenPort(t, "127.0.0.2", 0)
	srv.Config.ErrorLog = stdlog.New(io.Discard, "", 0) // the plain-HTTP probe below is refused, on purpose
	srv.StartTLS()                                      // a self-signed certificate for another name: not verified
	t.Cleanup(srv.Close)
	c, _ := newTestChecker(t, nil, 0)
	h := HealthConfig{Type: HealthHTTPS, Interval: 20 * time.Millisecond, Rise: 1, Fall: 1}
	c.update(Model{VIPs: []VIP{healthVIP(portOf(srv.Listener), h, "127.0.0.2")}})
	waitHealth(t, c, "127.0.0.2", 2*time.Second, "up", func(h BackendHealth) bool { return h.Status == HealthUp })

	// Plain HTTP against the TLS port fails.
	h.Type = HealthHTTP
	c.update(Model{VIPs: []VIP{healthVIP(portOf(srv.Listener), h, "127.0.0.2")}})
	waitHealth(t, c, "127.0.0.2", 2*time.Second, "down", func(h BackendHealth) bool { return h.Status == HealthDown })
}

// A TCP connect that never completes is cut at the timeout and counts as a
// failure; the schedule keeps one interval between probe starts.
func TestHealthTimeout(t *testing.T) {
	var dials atomic.Int64
	hang := func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		<-ctx.Done()
		return nil, ctx.Err()
	}
	c, _ := newTestChecker(t, hang, 0)
	h := HealthConfig{Type: HealthTCP, Interval: 50 * time.Millisecond, Timeout: 30 * time.Millisecond, Rise: 1, Fall: 2}
	c.update(Model{VIPs: []VIP{healthVIP(80, h, "127.0.0.2")}})
	start := time.Now()
	hs := waitHealth(t, c, "127.0.0.2", 2*time.Second, "down", func(h BackendHealth) bool { return h.Status == HealthDown })
	if hs.LastError != "no answer within 30ms" || hs.LastRTT < 30*time.Millisecond || hs.LastRTT > 300*time.Millisecond {
		t.Errorf("timeout: error %q after %s", hs.LastError, hs.LastRTT)
	}
	// Two failures: first probe within one interval, the second one interval later.
	if el := time.Since(start); el > 50*time.Millisecond+50*time.Millisecond+30*time.Millisecond+300*time.Millisecond {
		t.Errorf("down after %s, want about jitter + interval + timeout", el)
	}
	time.Sleep(500 * time.Millisecond)
	// 500ms at 50ms intervals: about 10 probes, never overlapping, never
	// back to back.
	if n := dials.Load(); n < 5 || n > 16 {
		t.Errorf("%d probes in about 600ms at a 50ms interval", n)
	}
}

// Publish reconfigures the checks: removed backends stop being probed, new
// ones start unknown, and one present in both keeps its state and counters,
// also when the check's settings change.
func TestHealthReconfigure(t *testing.T) {
	lnA := listenPort(t, "127.0.0.2", 0)
	port := portOf(lnA)
	acceptsA := acceptLoop(lnA)
	acceptLoop(listenPort(t, "127.0.0.4", port)) // C is up; B (127.0.0.3) has no listener: down
	c, _ := newTestChecker(t, nil, 0)
	h := HealthConfig{Type: HealthTCP, Interval: 20 * time.Millisecond, Timeout: 20 * time.Millisecond, Rise: 2, Fall: 2}
	c.update(Model{VIPs: []VIP{healthVIP(port, h, "127.0.0.2", "127.0.0.3")}})
	waitHealth(t, c, "127.0.0.2", 2*time.Second, "up", func(h BackendHealth) bool { return h.Status == HealthUp })
	b1 := waitHealth(t, c, "127.0.0.3", 2*time.Second, "down", func(h BackendHealth) bool { return h.Status == HealthDown })

	// A leaves, C arrives, B stays (with a longer interval).
	h2 := h
	h2.Interval, h2.Fall = 40*time.Millisecond, 3
	m2 := Model{VIPs: []VIP{healthVIP(port, h2, "127.0.0.3", "127.0.0.4")}}
	c.update(m2)
	if s := c.snapshot(); len(s) != 2 || s[0].Addr != addr("127.0.0.3") || s[1].Addr != addr("127.0.0.4") {
		t.Fatalf("checks after update: %+v", s)
	}
	b2 := healthOf(t, c, "127.0.0.3")
	if b2.Status != HealthDown || b2.Downs != b1.Downs || b2.Probes < b1.Probes || b2.Since != b1.Since {
		t.Errorf("B lost its state across the update: before %+v after %+v", b1, b2)
	}
	eff := m2.clone()
	c.apply(&eff)
	if eff.VIPs[0].Backends[0].State != StateFailed || eff.VIPs[0].Backends[1].State != StateActive {
		t.Errorf("a new backend must start serving and a down one stay out: %+v", eff.VIPs[0].Backends)
	}
	if hc := healthOf(t, c, "127.0.0.4"); hc.Status != HealthUnknown && hc.Status != HealthUp {
		t.Errorf("new backend: %+v", hc)
	}
	waitHealth(t, c, "127.0.0.4", 2*time.Second, "up", func(h BackendHealth) bool { return h.Status == HealthUp })
	waitHealth(t, c, "127.0.0.3", 2*time.Second, "probed again", func(h BackendHealth) bool { return h.Probes > b2.Probes+2 })

	// A is no longer probed (a probe in flight at the update may still land).
	time.Sleep(30 * time.Millisecond)
	before := acceptsA.Load()
	time.Sleep(200 * time.Millisecond)
	if after := acceptsA.Load(); after != before {
		t.Errorf("removed backend still probed: %d connections after removal", after-before)
	}

	// The health check turned off: no checks, nothing excluded.
	m3 := m2.clone()
	m3.VIPs[0].Health = HealthConfig{Type: HealthNone}
	if c.apply(&m3) {
		t.Error("apply excludes backends of a VIP without a check")
	}
	c.update(m3)
	if s := c.snapshot(); len(s) != 0 {
		t.Errorf("checks of a VIP without health check: %+v", s)
	}
}

// The semaphore bounds probes in flight, first probes are spread over the
// interval, and stop leaves no goroutine behind.
func TestHealthConcurrencyAndJitter(t *testing.T) {
	base := runtime.NumGoroutine()
	var inFlight, most atomic.Int64
	var mu sync.Mutex
	first := map[string]time.Time{}
	dial := func(ctx context.Context, network, a string) (net.Conn, error) {
		mu.Lock()
		if _, ok := first[a]; !ok {
			first[a] = time.Now()
		}
		mu.Unlock()
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for {
			m := most.Load()
			if n <= m || most.CompareAndSwap(m, n) {
				break
			}
		}
		select {
		case <-time.After(10 * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return nil, errors.New("refused")
	}
	c := newHealthChecker(slog.New(&recordLog{}), dial, 3)
	var backends []string
	for i := range 30 {
		backends = append(backends, fmt.Sprintf("127.0.1.%d", i+1))
	}
	h := HealthConfig{Type: HealthTCP, Interval: 400 * time.Millisecond, Timeout: 100 * time.Millisecond}
	start := time.Now()
	c.update(Model{VIPs: []VIP{healthVIP(80, h, backends...)}})
	time.Sleep(500 * time.Millisecond)
	c.stop()
	if m := most.Load(); m < 2 || m > 3 {
		t.Errorf("at most %d probes in flight, want 3 (the limit) or close", m)
	}
	mu.Lock()
	var lo, hi time.Duration = time.Hour, 0
	for _, at := range first {
		lo, hi = min(lo, at.Sub(start)), max(hi, at.Sub(start))
	}
	n := len(first)
	mu.Unlock()
	if n != len(backends) || hi-lo < 150*time.Millisecond {
		t.Errorf("%d backends probed, first probes within %s..%s: want all, spread over the 400ms interval", n, lo, hi)
	}
	// A late update starts nothing.
	c.update(Model{VIPs: []VIP{healthVIP(81, h, backends[:3]...)}})
	if s := c.snapshot(); len(s) != len(backends) || s[0].Target.Port() != 80 {
		t.Errorf("update after stop changed the checks: %d, first %+v", len(s), s[0])
	}
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > base && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if g := runtime.NumGoroutine(); g > base {
		t.Errorf("%d goroutines after stop, %d before start", g, base)
	}
}

// A backend that health takes down leaves the Maglev table of the effective
// model's snapshot; draining or weight-0 backends that are down become
// failed too (their flows move: the backend is gone).
func TestHealthEffectiveModel(t *testing.T) {
	c, _ := newTestChecker(t, nil, 0)
	h := HealthConfig{Type: HealthTCP, Interval: time.Hour}
	v := healthVIP(80, h, "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4")
	v.Backends[2].State = StateDraining
	v.Backends[3].Weight = 0
	m := Model{LocalMAC: localMAC, VIPs: []VIP{v}}
	c.update(m)
	c.mu.Lock()
	for _, a := range []string{"10.0.0.2", "10.0.0.3", "10.0.0.4"} {
		c.checks[realKey{v.VIPKey, addr(a)}].m.status = HealthDown
	}
	c.mu.Unlock()
	eff := m.clone()
	if !c.apply(&eff) {
		t.Fatal("apply changed nothing")
	}
	for i, want := range []BackendState{StateActive, StateFailed, StateFailed, StateFailed} {
		if got := eff.VIPs[0].Backends[i].State; got != want {
			t.Errorf("backend %d: %v, want %v", i, got, want)
		}
	}
	if sameForwarding(eff, m) || !sameForwarding(eff, eff.clone()) {
		t.Error("sameForwarding does not see the health override")
	}
	s := buildSnapshot(t, eff, newRegistry(t), 1)
	if n := s.vips[0].maglev.Backends(); n != 1 {
		t.Errorf("maglev table has %d backends, want only the healthy one", n)
	}
}
