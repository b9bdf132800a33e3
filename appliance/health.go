package appliance

// Health checks.
//
// The appliance probes every backend of each VIP whose model has a health
// check (VIP.Health.Type tcp, http or https), from its own network namespace
// (Options.Dial), and forwards to a backend that fails its check as if its
// State were StateFailed: it leaves the Maglev table and its established
// flows move to the Maglev choice. The desired model is never modified; the
// effective model the snapshot is built from is desired + health overrides +
// resolved MACs, recomputed whenever a backend's health flips.
//
// A backend starts in HealthUnknown and is forwarded to as if it were up:
// it leaves only after Fall consecutive failed probes. The alternative,
// withholding traffic until Rise successes, would turn every start (and
// every restart of a crashed or upgraded appliance) into a total outage of
// Rise × Interval for every VIP, while a backend that really is dead costs
// at most Fall × Interval of failed new connections to its share of the
// flows, the same as a backend dying while up. A backend added by a reload
// is handled the same way, so a reload never black-holes what the operator
// just asked for. The first success confirms an unknown backend as up (it
// was already serving: there is nothing to rise to).
//
// One checker goroutine runs per checked backend; it probes inline (no
// goroutine per probe), under a semaphore that bounds how many probes run at
// once, with the probe's context bounded by Timeout. The first probe of each
// backend is delayed by a random fraction of Interval so that hundreds of
// backends do not probe in lockstep.

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"sync"
	"time"
)

// DefaultHealthConcurrency bounds the probes in flight when
// Options.HealthConcurrency is zero.
const DefaultHealthConcurrency = 64

// maxHealthBody is how much of an HTTP health answer is read before the
// connection is closed: enough for any status page, little enough that a
// backend streaming by mistake costs nothing.
const maxHealthBody = 64 << 10

// DialFunc opens a connection to addr ("ip:port"), like
// (*net.Dialer).DialContext.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// HealthStatus is what a backend's health check last concluded.
type HealthStatus uint8

// Health statuses.
const (
	// HealthUnknown: not probed enough to say. The backend is forwarded to
	// (see the package's health notes for why).
	HealthUnknown HealthStatus = iota
	// HealthUp: the last probe succeeded, or Rise probes in a row since it
	// was down.
	HealthUp
	// HealthDown: Fall probes in a row failed. The backend is forwarded to
	// as StateFailed until Rise probes in a row succeed.
	HealthDown
)

var healthStatusNames = [...]string{HealthUnknown: "unknown", HealthUp: "up", HealthDown: "down"}

func (s HealthStatus) String() string {
	if int(s) < len(healthStatusNames) {
		return healthStatusNames[s]
	}
	return fmt.Sprintf("health(%d)", s)
}

// BackendHealth is the health-check state of one backend of one VIP, as
// returned by (*Appliance).Health. The counters start when the check starts
// (the backend appears in a VIP with a health check) and are kept while the
// backend stays, across Publish.
type BackendHealth struct {
	VIP     VIPKey
	VIPName string
	Backend string     // the backend's name (its address if unnamed)
	Addr    netip.Addr // the backend's address
	Check   HealthType
	Target  netip.AddrPort // address and port probed
	Status  HealthStatus
	// Since is when Status last changed (or the check started).
	Since time.Time
	// Successes and Failures are the current run of consecutive results
	// (one of them is 0).
	Successes, Failures int
	// Probes and ProbeFailures count every probe and every failed probe.
	Probes, ProbeFailures uint64
	// Ups and Downs count transitions into HealthUp and HealthDown.
	Ups, Downs uint64
	// LastProbe is when the last probe ended and LastRTT how long it took;
	// LastError is why it failed (empty if it succeeded).
	LastProbe time.Time
	LastRTT   time.Duration
	LastError string
}

// Serving reports whether health lets the backend carry traffic (its
// administrative State may still forbid new flows).
func (h *BackendHealth) Serving() bool { return h.Status != HealthDown }

// withDefaults fills the zero fields of a health check from the Default*
// values, as the configuration loader does for a file.
func (h HealthConfig) withDefaults() HealthConfig {
	if h.Type == "" {
		h.Type = HealthNone
	}
	h.Interval = cmp.Or(h.Interval, DefaultHealthInterval)
	if h.Timeout == 0 {
		h.Timeout = min(DefaultHealthTimeout, h.Interval)
	}
	h.Rise = cmp.Or(h.Rise, DefaultHealthRise)
	h.Fall = cmp.Or(h.Fall, DefaultHealthFall)
	h.Path = cmp.Or(h.Path, DefaultHealthPath)
	h.ExpectStatus = cmp.Or(h.ExpectStatus, DefaultHealthStatus)
	return h
}

// checked reports whether the VIP's backends are probed.
func (h *HealthConfig) checked() bool { return h.Type != "" && h.Type != HealthNone }

// checkHealth validates a VIP's health check as a model (the configuration
// loader applies tighter, operator-facing bounds).
func checkHealth(v *VIP) error {
	h := v.Health
	switch h.Type {
	case "", HealthNone:
		return nil
	case HealthTCP, HealthHTTP, HealthHTTPS:
	default:
		return fmt.Errorf("unknown health check type %q (want none, tcp, http or https)", h.Type)
	}
	if h.Interval < 0 || h.Timeout < 0 || h.Rise < 0 || h.Fall < 0 {
		return fmt.Errorf("health check: negative interval, timeout, rise or fall: %+v", h)
	}
	d := h.withDefaults()
	if d.Timeout > d.Interval {
		return fmt.Errorf("health check: timeout %s is longer than interval %s", d.Timeout, d.Interval)
	}
	if d.ExpectStatus < 100 || d.ExpectStatus > 599 {
		return fmt.Errorf("health check: expected status %d is not an HTTP status", d.ExpectStatus)
	}
	if d.Path[0] != '/' {
		return fmt.Errorf("health check: path %q must start with /", d.Path)
	}
	if v.Port == 0 && h.Port == 0 {
		return errors.New("health check of an all-ports VIP needs a port")
	}
	return nil
}

// validateModel checks m for everything BuildSnapshot would refuse and for
// health checks the checker cannot run.
func validateModel(m Model) error {
	if err := m.Validate(); err != nil {
		return err
	}
	for i := range m.VIPs {
		if err := checkHealth(&m.VIPs[i]); err != nil {
			return fmt.Errorf("vip %s: %w", m.VIPs[i].VIPKey, err)
		}
	}
	return nil
}

// healthMachine counts consecutive probe results and decides the status.
type healthMachine struct {
	status         HealthStatus
	okRun, failRun int
}

// observe records one probe result and returns the status before and after.
// An unknown or up backend goes down after fall failures in a row; a down
// backend comes up after rise successes in a row; an unknown backend is up
// after its first success.
func (m *healthMachine) observe(ok bool, rise, fall int) (from, to HealthStatus) {
	from = m.status
	if ok {
		m.okRun++
		m.failRun = 0
		if m.status == HealthUnknown || (m.status == HealthDown && m.okRun >= rise) {
			m.status = HealthUp
		}
	} else {
		m.failRun++
		m.okRun = 0
		if m.status != HealthDown && m.failRun >= fall {
			m.status = HealthDown
		}
	}
	return from, m.status
}

// healthChecker runs the health checks of a model. Create it with
// newHealthChecker, give it models with update, read it with apply and
// snapshot, and end it with stop; its methods are safe for concurrent use.
type healthChecker struct {
	log    *slog.Logger
	dial   DialFunc
	client *http.Client
	sem    chan struct{} // one token per probe in flight
	// changed is signalled (without blocking) when a backend starts or stops
	// being excluded by its health: the effective model must be rebuilt.
	changed chan struct{}
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup // one per runner goroutine

	mu      sync.Mutex
	checks  map[realKey]*backendCheck
	stopped bool
}

// backendCheck is the state of one backend's check. Its fields are guarded
// by healthChecker.mu; cfg and target are also passed by value to the runner
// so that it reads them without the lock.
type backendCheck struct {
	key     realKey
	vipName string
	name    string
	cfg     HealthConfig // defaults applied
	target  netip.AddrPort
	runner  uint64 // which runner's results count; bumped when one is replaced
	cancel  context.CancelFunc

	m                healthMachine
	since, lastProbe time.Time
	lastRTT          time.Duration
	lastErr          string
	probes, failures uint64
	ups, downs       uint64
}

func newHealthChecker(log *slog.Logger, dial DialFunc, concurrency int) *healthChecker {
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	if concurrency <= 0 {
		concurrency = DefaultHealthConcurrency
	}
	c := &healthChecker{
		log:     log,
		dial:    dial,
		sem:     make(chan struct{}, concurrency),
		changed: make(chan struct{}, 1),
		checks:  make(map[realKey]*backendCheck),
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.client = &http.Client{
		Transport: &http.Transport{
			DialContext: dial,
			// A fresh connection per probe: the check tests that the
			// backend accepts connections, and no idle connection outlives
			// its probe.
			DisableKeepAlives:  true,
			DisableCompression: true,
			Proxy:              nil, // never a proxy from the environment
			// Backends are probed by address: their certificates name the
			// service, not the address, so they cannot be verified. The
			// check asks whether the backend answers, not who it is, and
			// sends nothing secret.
			TLSClientConfig:        &tls.Config{InsecureSkipVerify: true},
			MaxResponseHeaderBytes: maxHealthBody,
		},
		// The answer to the probe is the status of the path asked for: a
		// redirect is not followed (it would leave the backend).
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return c
}

// update makes the checks follow m: checks start for backends of checked
// VIPs that have none, stop for backends no longer checked, and a backend
// checked in both keeps its status and counters (a changed check
// configuration restarts its probing with the new one).
func (c *healthChecker) update(m Model) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return
	}
	now := time.Now()
	want := make(map[realKey]bool)
	for i := range m.VIPs {
		v := &m.VIPs[i]
		if !v.Health.checked() {
			continue
		}
		cfg := v.Health.withDefaults()
		port := cmp.Or(cfg.Port, v.Port)
		for j := range v.Backends {
			b := &v.Backends[j]
			k := realKey{v.VIPKey, b.Addr}
			want[k] = true
			target := netip.AddrPortFrom(b.Addr, port)
			bc := c.checks[k]
			switch {
			case bc == nil:
				bc = &backendCheck{key: k, since: now}
				c.checks[k] = bc
			case bc.cfg != cfg || bc.target != target:
				bc.cancel()
			default:
				bc.vipName, bc.name = v.Name, cmp.Or(b.Name, b.Addr.String())
				continue
			}
			bc.vipName, bc.name = v.Name, cmp.Or(b.Name, b.Addr.String())
			bc.cfg, bc.target = cfg, target
			c.startLocked(bc)
		}
	}
	for k, bc := range c.checks {
		if !want[k] {
			bc.cancel()
			delete(c.checks, k)
			c.log.Debug("health check stopped", "vip", k.vip, "backend", bc.name, "status", bc.m.status)
		}
	}
}

// startLocked starts a runner for bc; results of any earlier runner no
// longer count.
func (c *healthChecker) startLocked(bc *backendCheck) {
	bc.runner++
	ctx, cancel := context.WithCancel(c.ctx)
	bc.cancel = cancel
	first := time.Duration(rand.Int64N(int64(max(bc.cfg.Interval, 1))))
	c.wg.Add(1)
	go func(runner uint64, cfg HealthConfig, target netip.AddrPort) {
		defer c.wg.Done()
		c.run(ctx, bc, runner, cfg, target, first)
	}(bc.runner, bc.cfg, bc.target)
	c.log.Debug("health check started", "vip", bc.key.vip, "backend", bc.name, "check", bc.cfg.Type,
		"target", bc.target, "interval", bc.cfg.Interval, "first_probe_in", first)
}

// run probes one backend every interval until ctx ends. Probes start one
// interval apart (a slow probe does not push the schedule back by its own
// length) and never overlap.
func (c *healthChecker) run(ctx context.Context, bc *backendCheck, runner uint64, cfg HealthConfig, target netip.AddrPort, first time.Duration) {
	t := time.NewTimer(first)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		select {
		case c.sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		start := time.Now()
		err := c.probe(ctx, cfg, target)
		end := time.Now()
		<-c.sem
		if ctx.Err() != nil {
			return // cancelled mid-probe: the result says nothing about the backend
		}
		c.record(bc, runner, err, end, end.Sub(start))
		t.Reset(max(start.Add(cfg.Interval).Sub(end), 0))
	}
}

// record applies one probe result to bc, logs a transition and signals a
// change of whether the backend is excluded.
func (c *healthChecker) record(bc *backendCheck, runner uint64, perr error, now time.Time, rtt time.Duration) {
	c.mu.Lock()
	if bc.runner != runner || c.checks[bc.key] != bc {
		c.mu.Unlock() // replaced or removed while probing
		return
	}
	bc.probes++
	bc.lastProbe, bc.lastRTT, bc.lastErr = now, rtt, ""
	if perr != nil {
		bc.failures++
		bc.lastErr = perr.Error()
	}
	from, to := bc.m.observe(perr == nil, bc.cfg.Rise, bc.cfg.Fall)
	if from == to {
		c.mu.Unlock()
		return
	}
	bc.since = now
	switch to {
	case HealthUp:
		bc.ups++
	case HealthDown:
		bc.downs++
	}
	attrs := []any{"vip", bc.key.vip, "vip_name", bc.vipName, "backend", bc.name, "check", bc.cfg.Type,
		"target", bc.target, "from", from, "to", to, "successes", bc.m.okRun, "failures", bc.m.failRun}
	if perr != nil {
		attrs = append(attrs, "err", bc.lastErr)
	}
	c.mu.Unlock()

	switch to {
	case HealthDown:
		c.log.Warn("backend health: down, it gets no flows and its flows move", attrs...)
	default:
		c.log.Info("backend health: "+to.String(), attrs...)
	}
	if (from == HealthDown) != (to == HealthDown) {
		select {
		case c.changed <- struct{}{}:
		default: // a rebuild is already pending and will see this change
		}
	}
}

// probe runs one check against target, bounded by cfg.Timeout.
func (c *healthChecker) probe(ctx context.Context, cfg HealthConfig, target netip.AddrPort) (err error) {
	pctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	defer func() {
		if err != nil && errors.Is(pctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil {
			err = fmt.Errorf("no answer within %s", cfg.Timeout)
		}
	}()
	switch cfg.Type {
	case HealthTCP:
		conn, err := c.dial(pctx, "tcp", target.String())
		if err != nil {
			return err
		}
		conn.Close() // accepted: that is all a TCP check asks
		return nil
	case HealthHTTP, HealthHTTPS:
		scheme := "http"
		if cfg.Type == HealthHTTPS {
			scheme = "https"
		}
		req, err := http.NewRequestWithContext(pctx, http.MethodGet, scheme+"://"+target.String()+cfg.Path, nil)
		if err != nil {
			return err
		}
		req.Header.Set("User-Agent", "weir-health-check")
		resp, err := c.client.Do(req)
		if err != nil {
			if ue, ok := errors.AsType[*url.Error](err); ok {
				err = ue.Err // the URL is in the log line already (target)
			}
			return err
		}
		_, rerr := io.Copy(io.Discard, io.LimitReader(resp.Body, maxHealthBody))
		resp.Body.Close()
		if resp.StatusCode != cfg.ExpectStatus {
			return fmt.Errorf("GET %s answered %d, want %d", cfg.Path, resp.StatusCode, cfg.ExpectStatus)
		}
		if rerr != nil {
			return fmt.Errorf("GET %s: read body: %w", cfg.Path, rerr)
		}
		return nil
	}
	return fmt.Errorf("unknown health check type %q", cfg.Type)
}

// apply marks as StateFailed every backend of m that its VIP's check (in
// m) says is down, and reports whether it changed anything. Backends
// without a check, or not probed yet, keep their state.
func (c *healthChecker) apply(m *Model) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	changed := false
	for i := range m.VIPs {
		v := &m.VIPs[i]
		if !v.Health.checked() {
			continue
		}
		for j := range v.Backends {
			b := &v.Backends[j]
			bc := c.checks[realKey{v.VIPKey, b.Addr}]
			if bc != nil && bc.m.status == HealthDown && b.State != StateFailed {
				b.State = StateFailed
				changed = true
			}
		}
	}
	return changed
}

// snapshot returns every check's state, ordered by VIP and backend address.
func (c *healthChecker) snapshot() []BackendHealth {
	c.mu.Lock()
	out := make([]BackendHealth, 0, len(c.checks))
	for _, bc := range c.checks {
		out = append(out, BackendHealth{
			VIP: bc.key.vip, VIPName: bc.vipName, Backend: bc.name, Addr: bc.key.backend,
			Check: bc.cfg.Type, Target: bc.target, Status: bc.m.status, Since: bc.since,
			Successes: bc.m.okRun, Failures: bc.m.failRun,
			Probes: bc.probes, ProbeFailures: bc.failures, Ups: bc.ups, Downs: bc.downs,
			LastProbe: bc.lastProbe, LastRTT: bc.lastRTT, LastError: bc.lastErr,
		})
	}
	c.mu.Unlock()
	slices.SortFunc(out, func(x, y BackendHealth) int {
		return cmp.Or(x.VIP.Addr.Compare(y.VIP.Addr), cmp.Compare(x.VIP.Proto, y.VIP.Proto),
			cmp.Compare(x.VIP.Port, y.VIP.Port), x.Addr.Compare(y.Addr))
	})
	return out
}

// stop ends every check and waits for the runners to exit (a probe in
// flight is cancelled, not waited for).
func (c *healthChecker) stop() {
	c.mu.Lock()
	c.stopped = true
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
	c.client.CloseIdleConnections()
}
