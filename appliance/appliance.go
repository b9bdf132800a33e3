package appliance

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/weirlb/weir/firmware"
	"github.com/weirlb/weir/flows"
	"github.com/weirlb/weir/packet"
	"github.com/weirlb/weir/ring"
	"github.com/weirlb/weir/umem"
)

// Options are the settings of a running appliance that are fixed for its
// life (changing them means a restart); VIPs and backends come in a Model
// and can change at any time through Publish.
type Options struct {
	Interface string
	// Queues is how many RX queues to serve, from queue 0; zero means every
	// queue the interface has. Every queue the NIC spreads VIP traffic over
	// needs a worker: VIP packets on a queue without one are dropped.
	Queues int
	// CPUs[i] is the CPU worker i is pinned to; empty pins worker i to CPU
	// i % NumCPU; a negative entry leaves that worker unpinned.
	CPUs       []int
	XDPMode    firmware.AttachMode
	ZeroCopy   ring.ZeroCopy
	FrameSize  uint32 // UMEM frame size (2048 or 4096); 0 = umem default
	FrameCount uint32 // frames per queue; 0 = 2 × (fill + TX ring sizes)
	Headroom   uint32 // bytes in front of each packet for outer headers; 0 = umem default
	RingSize   uint32 // entries of each of the four rings; 0 = ring default
	BatchSize  int
	IdleSpin   time.Duration // polling before an idle worker sleeps; 0 sleeps at once
	Flows      flows.Config
	MaxReals   int
	Logger     *slog.Logger
	// Dial opens health-check connections; nil means a net.Dialer. Probes
	// run on goroutines of their own, which are in the process's network
	// namespace, not necessarily the one Start was called in: an appliance
	// started inside another namespace (a lab) passes a Dial that dials
	// from there.
	Dial DialFunc
	// HealthConcurrency bounds the health probes in flight at once; 0
	// means DefaultHealthConcurrency.
	HealthConcurrency int
}

// Options returns the start-up options of the configuration; the caller
// adds a logger.
func (c *Config) Options() Options {
	a := &c.Appliance
	o := Options{
		Interface:  a.Interface,
		Queues:     a.Queues,
		CPUs:       a.CPUs,
		FrameSize:  a.FrameSize,
		FrameCount: a.FramesPerQueue,
		Headroom:   a.Headroom,
		RingSize:   a.RingSize,
		BatchSize:  a.BatchSize,
		IdleSpin:   a.IdleSpin,
		Flows:      c.Flows,
		MaxReals:   a.MaxReals,
	}
	switch a.XDPMode {
	case XDPNative:
		o.XDPMode = firmware.AttachNative
	case XDPGeneric:
		o.XDPMode = firmware.AttachGeneric
	default:
		o.XDPMode = firmware.AttachAuto
	}
	switch a.ZeroCopy {
	case ZeroCopyRequire:
		o.ZeroCopy = ring.ZeroCopyRequire
	case ZeroCopyNever:
		o.ZeroCopy = ring.ZeroCopyNever
	default:
		o.ZeroCopy = ring.ZeroCopyAuto
	}
	return o
}

// Appliance is a running load balancer on one interface: the redirect
// program attached to it, one AF_XDP socket and worker per queue, and the
// current snapshot. Its methods are safe for concurrent use.
type Appliance struct {
	opts     Options
	log      *slog.Logger
	ifindex  int
	ifname   string
	mac      packet.MAC
	queues   int
	reg      *Registry
	redirect *firmware.Redirect
	attach   *firmware.Attachment
	snap     atomic.Pointer[Snapshot]
	workers  []*Worker
	sockets  []*ring.Socket
	umems    []*umem.Umem

	nl     *netlink.Handle // bound to the interface's network namespace
	hops   *nextHops
	health *healthChecker

	mu         sync.Mutex // serialises Publish, next-hop refreshes and Stop
	generation uint64
	vips       map[firmware.VIP]bool // VIPs in the redirect program's map
	desired    Model                 // the last model given to Start or Publish
	effective  Model                 // desired with health overrides and resolved MACs: what the snapshot was built from
	unresolved map[string]resolution // backends without a MAC, as last reported

	cancel context.CancelFunc
	wg     sync.WaitGroup
	errMu  sync.Mutex
	errs   []error // worker failures
	closed bool
}

// Start brings the appliance up on opts.Interface with the forwarding state
// in m, in the network namespace of the calling thread: it loads the
// redirect program, binds a socket per queue, starts the workers, attaches
// the program and starts the health checks of m's VIPs (backends count as
// up until their checks say otherwise). On failure everything set up so far
// is undone.
func Start(opts Options, m Model) (_ *Appliance, err error) {
	// The result is unnamed: `return nil, err` must not clear a before the
	// deferred teardown uses it.
	a := &Appliance{opts: opts, log: cmp.Or(opts.Logger, slog.Default()), vips: make(map[firmware.VIP]bool)}
	defer func() {
		if err != nil {
			if a.cancel != nil {
				a.cancel()
			}
			a.teardown()
		}
	}()
	if err := umem.RaiseMemlock(); err != nil {
		return nil, fmt.Errorf("raise memlock: %w", err)
	}
	ifc, err := net.InterfaceByName(opts.Interface)
	if err != nil {
		return nil, fmt.Errorf("interface %q: %w", opts.Interface, err)
	}
	if ifc.Flags&net.FlagUp == 0 {
		return nil, fmt.Errorf("interface %s is down: bring it up first", ifc.Name)
	}
	a.ifindex, a.ifname = ifc.Index, ifc.Name
	if len(ifc.HardwareAddr) != 6 {
		return nil, fmt.Errorf("interface %s has no Ethernet address", ifc.Name)
	}
	a.mac = packet.MAC(ifc.HardwareAddr)
	if a.queues, err = queueCount(ifc.Name, opts.Queues); err != nil {
		return nil, err
	}
	a.reg, err = NewRegistry(cmp.Or(opts.MaxReals, DefaultMaxReals))
	if err != nil {
		return nil, err
	}
	// The handle is bound to the calling thread's namespace, so the
	// control plane can use it later from any goroutine.
	if a.nl, err = netlink.NewHandle(); err != nil {
		return nil, fmt.Errorf("netlink: %w", err)
	}
	a.hops = &nextHops{nl: a.nl, ifindex: a.ifindex, ifname: a.ifname}
	if err := validateModel(m); err != nil { // refuse a bad model before probing anything
		return nil, err
	}
	a.desired = m.clone()
	a.effective, a.unresolved = a.hops.waitResolved(a.desired, startResolveWait)
	a.reportUnresolved()
	s, err := a.build(a.effective)
	if err != nil {
		return nil, err
	}
	a.redirect, err = firmware.LoadRedirectConfig(firmware.RedirectConfig{MaxQueues: max(a.queues, 1)})
	if err != nil {
		return nil, fmt.Errorf("load redirect program: %w", err)
	}
	if err := a.addVIPs(s); err != nil {
		return nil, err
	}
	a.snap.Store(s)

	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	epoch := time.Now()
	fc := opts.Flows
	if fc == (flows.Config{}) {
		fc = flows.DefaultConfig()
	}
	for q := 0; q < a.queues; q++ {
		if err := a.openQueue(q, fc, epoch); err != nil {
			return nil, err
		}
	}
	a.attach, err = a.redirect.Attach(a.ifindex, opts.XDPMode)
	if err != nil {
		return nil, fmt.Errorf("attach redirect program to %s: %w", a.ifname, err)
	}
	a.health = newHealthChecker(a.log, opts.Dial, opts.HealthConcurrency)
	a.health.update(a.desired)
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		a.refreshLoop(ctx)
	}()
	for _, w := range a.workers {
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			if err := w.Run(ctx); err != nil {
				a.log.Error("worker stopped", "queue", w.queue, "err", err)
				a.errMu.Lock()
				a.errs = append(a.errs, err)
				a.errMu.Unlock()
			}
		}()
	}
	a.log.Info("appliance started", "interface", a.ifname, "queues", a.queues,
		"xdp_mode", a.attach.Mode(), "afxdp_mode", a.AFXDPMode(), "vips", len(m.VIPs))
	return a, nil
}

// queueCount resolves the configured queue count against the interface.
func queueCount(ifname string, want int) (int, error) {
	have, err := ring.RXQueues(ifname)
	if err != nil {
		// Drivers without ethtool channels: fall back to what netlink says
		// was allocated.
		l, lerr := netlink.LinkByName(ifname)
		if lerr != nil {
			return 0, fmt.Errorf("interface %s: %w", ifname, errors.Join(err, lerr))
		}
		have = max(l.Attrs().NumRxQueues, 1)
	}
	switch {
	case want == 0:
		return have, nil
	case want > have:
		return 0, fmt.Errorf("interface %s has %d RX queues, config asks for %d: lower queues or raise the NIC's channels (ethtool -L)", ifname, have, want)
	case want < have:
		// Legitimate when RSS is steered to the first queues only; VIP
		// traffic on the others is dropped by the redirect program.
		slog.Warn("serving fewer queues than the interface has: VIP packets on the others are dropped",
			"interface", ifname, "queues", want, "interface_queues", have)
	}
	return want, nil
}

func (a *Appliance) cpuFor(q int) int {
	if q < len(a.opts.CPUs) {
		return a.opts.CPUs[q]
	}
	if len(a.opts.CPUs) > 0 {
		return -1
	}
	return q % runtime.NumCPU()
}

func (a *Appliance) openQueue(q int, fc flows.Config, epoch time.Time) error {
	ringSize := cmp.Or(a.opts.RingSize, ring.DefaultRingSize)
	u, err := umem.New(umem.Config{
		FrameSize:  a.opts.FrameSize,
		FrameCount: cmp.Or(a.opts.FrameCount, 4*ringSize),
		Headroom:   a.opts.Headroom,
	})
	if err != nil {
		return fmt.Errorf("queue %d: %w", q, err)
	}
	a.umems = append(a.umems, u)
	sock, err := ring.Open(ring.Config{
		Ifindex: a.ifindex, Queue: uint32(q), Umem: u,
		FillSize: ringSize, CompletionSize: ringSize, RXSize: ringSize, TXSize: ringSize,
		ZeroCopy: a.opts.ZeroCopy,
	})
	if err != nil {
		return fmt.Errorf("queue %d: %w", q, err)
	}
	a.sockets = append(a.sockets, sock)
	if err := a.redirect.SetSocket(q, sock.FD()); err != nil {
		return fmt.Errorf("queue %d: %w", q, err)
	}
	fwd, err := NewForwarder(fc, a.reg.MaxReals())
	if err != nil {
		return fmt.Errorf("queue %d: %w", q, err)
	}
	w, err := NewWorker(WorkerConfig{
		Queue: q, CPU: a.cpuFor(q), Socket: sock, Forwarder: fwd, Snapshot: &a.snap,
		Batch: a.opts.BatchSize, IdleSpin: a.opts.IdleSpin, Epoch: epoch,
	})
	if err != nil {
		fwd.Close()
		return err
	}
	a.workers = append(a.workers, w)
	return nil
}

// build turns a model into the next snapshot, filling in the interface's MAC.
func (a *Appliance) build(m Model) (*Snapshot, error) {
	if m.LocalMAC == (packet.MAC{}) {
		m.LocalMAC = a.mac
	}
	s, err := BuildSnapshot(m, a.reg, a.generation+1)
	if err != nil {
		return nil, err
	}
	a.generation++
	return s, nil
}

func firmwareVIP(k VIPKey) firmware.VIP {
	return firmware.VIP{Addr: k.Addr, Proto: k.Proto, Port: k.Port}
}

// addVIPs adds the snapshot's VIPs that the redirect program does not match
// yet.
func (a *Appliance) addVIPs(s *Snapshot) error {
	for i := range s.vips {
		v := firmwareVIP(s.vips[i].VIPKey)
		if a.vips[v] {
			continue
		}
		if err := a.redirect.AddVIP(v); err != nil {
			return fmt.Errorf("vip %s: %w", s.vips[i].VIPKey, err)
		}
		a.vips[v] = true
	}
	return nil
}

// Publish makes m the forwarding state. The snapshot is built first (a bad
// model changes nothing); VIPs it adds are matched by the redirect program
// before the snapshot that serves them is published, and VIPs it removes stop
// being matched only after. Established flows keep their backends.
//
// Health checks follow m: backends that were checked before keep their
// health (a down backend stays out), new ones start as up until proven
// otherwise, and removed ones stop being probed.
func (a *Appliance) Publish(m Model) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return errors.New("appliance stopped")
	}
	if err := validateModel(m); err != nil { // a bad model changes nothing
		return err
	}
	if m.FlowSeed != a.desired.FlowSeed {
		// Flow tables find entries by the seeded hash: a new seed would
		// orphan every established flow.
		return errors.New("the flow seed cannot change while weir runs: restart to change it")
	}
	effective := m.clone()
	a.health.apply(&effective)
	unresolved := a.hops.fillMACs(&effective)
	if err := a.publishLocked(effective); err != nil {
		return err
	}
	a.desired, a.unresolved = m.clone(), unresolved
	a.health.update(a.desired)
	a.reportUnresolved()
	return nil
}

// Health returns the health-check state of every checked backend (backends
// of VIPs whose health check type is none are not listed), ordered by VIP
// and backend address. It is safe to call at any time, also after Stop.
func (a *Appliance) Health() []BackendHealth {
	if a.health == nil {
		return nil
	}
	return a.health.snapshot()
}

// publishLocked builds a snapshot from an effective model (MACs resolved)
// and publishes it, keeping the redirect program's VIP map in step.
func (a *Appliance) publishLocked(effective Model) error {
	s, err := a.build(effective)
	if err != nil {
		return err
	}
	if err := a.addVIPs(s); err != nil {
		return err
	}
	a.snap.Store(s)
	a.effective = effective
	keep := make(map[firmware.VIP]bool, len(s.vips))
	for i := range s.vips {
		keep[firmwareVIP(s.vips[i].VIPKey)] = true
	}
	for v := range a.vips {
		if !keep[v] {
			if err := a.redirect.RemoveVIP(v); err != nil {
				return fmt.Errorf("vip %s: %w", v, err)
			}
			delete(a.vips, v)
		}
	}
	a.log.Info("published snapshot", "generation", s.Generation, "vips", len(s.vips))
	return nil
}

// Snapshot returns the snapshot the workers are using.
func (a *Appliance) Snapshot() *Snapshot { return a.snap.Load() }

// Interface returns the served interface's name, index and MAC.
func (a *Appliance) Interface() (name string, index int, mac packet.MAC) {
	return a.ifname, a.ifindex, a.mac
}

// AFXDPMode is the AF_XDP mode the kernel granted (the same for every queue
// of one interface).
func (a *Appliance) AFXDPMode() ring.Mode {
	if len(a.sockets) == 0 {
		return 0
	}
	return a.sockets[0].Mode()
}

// XDPMode is the XDP attach mode obtained.
func (a *Appliance) XDPMode() firmware.AttachMode { return a.attach.Mode() }

// Stats is what the appliance has done so far.
type Stats struct {
	Workers []WorkerStats
	Total   Counters // summed over workers
	XDP     firmware.RedirectCounters
	// Frames accounts every UMEM frame, summed over queues, as Stop found
	// them once the workers had exited and before it closed the sockets
	// (zero while running: the ledger belongs to the workers). InHand is
	// then 0; frames in the fill, RX, TX or completion rings count as
	// KernelRX or KernelTX, and closing the sockets gave them back.
	Frames umem.Accounting
}

// Stats gathers the workers' last published counters and the redirect
// program's.
func (a *Appliance) Stats() (Stats, error) {
	var st Stats
	for _, w := range a.workers {
		ws := w.Stats()
		st.Total.Add(&ws.Counters)
		st.Workers = append(st.Workers, ws)
	}
	var err error
	st.XDP, err = a.redirect.Counters()
	return st, err
}

// RealStats returns, for each real of the current snapshot, its name, VIP and
// the packets and bytes all workers sent it.
func (a *Appliance) RealStats() []RealStat {
	s := a.snap.Load()
	var out []RealStat
	sums := make([]RealCounters, len(s.reals))
	for _, w := range a.workers {
		ws := w.Stats()
		for i := range min(len(ws.Reals), len(sums)) {
			sums[i].Packets += ws.Reals[i].Packets
			sums[i].Bytes += ws.Reals[i].Bytes
			sums[i].NewFlows += ws.Reals[i].NewFlows
		}
	}
	for i := range s.reals {
		r := &s.reals[i]
		if r.id == 0 {
			continue
		}
		out = append(out, RealStat{VIP: r.vs.VIPKey, Backend: r.name, Packets: sums[i].Packets, Bytes: sums[i].Bytes, NewFlows: sums[i].NewFlows})
	}
	return out
}

// RealStat is the traffic one backend of one VIP received.
type RealStat struct {
	VIP            VIPKey
	Backend        string
	Packets, Bytes uint64
	NewFlows       uint64
}

// Stop stops the workers, detaches the redirect program, closes every socket
// and checks that every UMEM frame is accounted for. It returns the final
// counters.
func (a *Appliance) Stop() (Stats, error) {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return Stats{}, errors.New("appliance already stopped")
	}
	a.closed = true
	a.mu.Unlock()
	// The refresh loop takes mu: wait for it (and the workers) unlocked.
	a.cancel()
	a.health.stop()
	a.wg.Wait()
	a.mu.Lock()
	defer a.mu.Unlock()
	st, statErr := a.Stats()
	var errs []error
	a.errMu.Lock()
	errs = append(errs, a.errs...)
	a.errMu.Unlock()
	if statErr != nil {
		errs = append(errs, statErr)
	}
	// The workers have exited, so their UMEMs are ours to read. The ledger
	// is checked before the sockets close: closing hands every frame back,
	// after which a frame a worker leaked could no longer be seen.
	for q, u := range a.umems {
		acc := u.Accounting()
		if err := u.Check(); err != nil {
			errs = append(errs, fmt.Errorf("queue %d: frame accounting: %w", q, err))
		} else if acc.InHand != 0 {
			errs = append(errs, fmt.Errorf("queue %d: frame accounting: worker stopped holding %d frames: %v", q, acc.InHand, acc))
		}
		st.Frames.Total += acc.Total
		st.Frames.Free += acc.Free
		st.Frames.InHand += acc.InHand
		st.Frames.KernelRX += acc.KernelRX
		st.Frames.KernelTX += acc.KernelTX
	}
	errs = append(errs, a.teardown()...)
	a.log.Info("appliance stopped", "interface", a.ifname)
	return st, errors.Join(errs...)
}

// teardown undoes whatever Start set up, in reverse order: the program is
// detached first so no VIP packet is redirected to a socket being closed
// (once detached, VIP traffic reaches the host stack; Stop is for shutting
// down, where that is expected).
func (a *Appliance) teardown() []error {
	var errs []error
	if a.attach != nil {
		if err := a.attach.Close(); err != nil {
			errs = append(errs, fmt.Errorf("detach: %w", err))
		}
		a.attach = nil
	}
	for q, s := range a.sockets {
		if a.redirect != nil {
			a.redirect.ClearSocket(q)
		}
		if err := s.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	a.sockets = nil
	// The workers have returned (or never ran): nothing uses the flow
	// tables any more.
	for _, w := range a.workers {
		w.fwd.Close()
	}
	for _, u := range a.umems {
		if err := u.Check(); err != nil {
			errs = append(errs, fmt.Errorf("frame accounting: %w", err))
		}
		if err := u.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if a.redirect != nil {
		if err := a.redirect.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if a.nl != nil {
		a.nl.Close()
		a.nl = nil
	}
	return errs
}

// Next-hop refresh timing.
const (
	// startResolveWait bounds how long Start waits for backends' MACs
	// before it starts with what it has (unresolved backends get no
	// traffic until they resolve).
	startResolveWait = 3 * time.Second
	// refreshInterval is how often next hops are looked up again, so a
	// backend whose neighbour answers late, or whose MAC changes, is picked
	// up.
	refreshInterval = time.Second
)

// refreshLoop rebuilds the effective model (desired + health overrides +
// resolved MACs) every refreshInterval and whenever a backend's health
// flips, and publishes a new snapshot when the forwarding state changed.
func (a *Appliance) refreshLoop(ctx context.Context) {
	t := time.NewTicker(refreshInterval)
	defer t.Stop()
	for {
		why := "next hops"
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-a.health.changed:
			why = "health"
		}
		a.mu.Lock()
		if a.closed {
			a.mu.Unlock()
			return
		}
		effective := a.desired.clone()
		a.health.apply(&effective)
		unresolved := a.hops.fillMACs(&effective)
		if !sameForwarding(effective, a.effective) {
			a.log.Info("forwarding state changed: publishing", "cause", why)
			if err := a.publishLocked(effective); err != nil {
				a.log.Error("refresh: publish", "cause", why, "err", err)
			}
		}
		if len(unresolved) != len(a.unresolved) {
			a.unresolved = unresolved
			a.reportUnresolved()
		}
		a.unresolved = unresolved
		a.mu.Unlock()
	}
}

// sameForwarding reports whether two effective models of the same desired
// model forward alike: the same MACs and states (health overrides).
func sameForwarding(x, y Model) bool {
	if len(x.VIPs) != len(y.VIPs) {
		return false
	}
	for i := range x.VIPs {
		bx, by := x.VIPs[i].Backends, y.VIPs[i].Backends
		if len(bx) != len(by) {
			return false
		}
		for j := range bx {
			if bx[j].MAC != by[j].MAC || bx[j].State != by[j].State || bx[j].Addr != by[j].Addr {
				return false
			}
		}
	}
	return true
}

// reportUnresolved logs the backends that get no traffic for want of a MAC.
func (a *Appliance) reportUnresolved() {
	if len(a.unresolved) == 0 {
		return
	}
	for k, r := range a.unresolved {
		msg := "no MAC yet (probing)"
		if r.err != nil {
			msg = r.err.Error()
		}
		a.log.Warn("backend next hop unresolved: it gets no traffic", "backend", k, "next_hop", r.nextHop, "reason", msg)
	}
}

// Unresolved lists the backends ("vip backend") whose next hop has no MAC
// yet, with the reason.
func (a *Appliance) Unresolved() map[string]string {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[string]string, len(a.unresolved))
	for k, r := range a.unresolved {
		out[k] = "probing"
		if r.err != nil {
			out[k] = r.err.Error()
		}
	}
	return out
}
