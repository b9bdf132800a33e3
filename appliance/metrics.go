// INTEGRATION: the weirmetrics tag keeps the metrics code out of default
// builds until go.mod requires client_golang's dependencies
// (prometheus/common, client_model, procfs, ...); drop the tag from every
// metrics*.go and stats*.go file then.

package appliance

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/weirlb/weir/firmware"
	"github.com/weirlb/weir/packet"
	"github.com/weirlb/weir/ring"
)

// Metrics exports a running appliance to Prometheus. It is a
// prometheus.Collector that reads, when scraped, the counters the workers
// publish (per queue, per real, per drop reason, the flow tables' and the
// sockets'), the redirect program's per-CPU counters and the current
// snapshot; the per-packet path never calls the metrics library. It also
// exports the outcomes of the reloads a Reloader applied. One Metrics lives
// as long as its appliance (a scrape after Stop still answers, without the
// redirect program's counters); its methods are safe for concurrent use.
type Metrics struct {
	src     metricsSource
	reloads reloadSource // nil: no reload metrics
	started time.Time
}

// reloadSource is what the collector reads of reloads; *Reloader is one.
type reloadSource interface {
	Counts() ReloadCounts
	Last() ReloadResult
}

// metricsSource is what the collector reads at scrape time: the appliance,
// or a fixed sample in tests.
type metricsSource interface {
	metricsSample() metricsSample
}

// metricsSample is one consistent read of everything the collector exports.
type metricsSample struct {
	iface   string
	afxdp   ring.Mode
	xdpMode firmware.AttachMode

	generation uint64
	// vips are the current snapshot's VIPs as published (backends' MACs
	// resolved, zero for the unresolved ones); traffic[i][j] is what
	// vips[i].Backends[j] was sent.
	vips    []VIP
	traffic [][]RealCounters

	workers  []WorkerStats
	capacity []int // flow-table slots of each worker, as workers

	xdp    firmware.RedirectCounters
	xdpErr error

	health []BackendHealth // checked backends only
}

// NewMetrics returns the metrics of a, which must have been started, and of
// the reloads r applies to it (r may be nil when nothing reloads a).
func NewMetrics(a *Appliance, r *Reloader) *Metrics {
	m := newMetrics(newApplianceSource(a))
	if r != nil {
		m.reloads = r
	}
	return m
}

func newMetrics(src metricsSource) *Metrics {
	return &Metrics{src: src, started: time.Now()}
}

// Metric descriptions. Label names: vip is the VIP's key as VIPKey.String
// prints it ("tcp/192.0.2.1:80"), backend the backend's address, queue the
// NIC queue (one worker each).
var (
	descBackendPackets = prometheus.NewDesc("weir_backend_packets_total",
		"Packets forwarded to a backend of a VIP (after any encapsulation).", []string{"vip", "backend"}, nil)
	descBackendBytes = prometheus.NewDesc("weir_backend_bytes_total",
		"Bytes forwarded to a backend of a VIP, counting the frames as transmitted (outer headers included).", []string{"vip", "backend"}, nil)
	descBackendNewFlows = prometheus.NewDesc("weir_backend_new_flows_total",
		"Flows Maglev sent to a backend of a VIP (flow-table misses that started a flow); its rate is the backend's connections per second.", []string{"vip", "backend"}, nil)
	descBackendInfo = prometheus.NewDesc("weir_backend_info",
		"Always 1: the configured name of each backend of each VIP.", []string{"vip", "backend", "name"}, nil)
	descBackendState = prometheus.NewDesc("weir_backend_state",
		"1 for the state a backend has in the published snapshot (active, draining or failed), 0 for the others.", []string{"vip", "backend", "state"}, nil)
	descBackendWeight = prometheus.NewDesc("weir_backend_weight",
		"A backend's weight: its relative share of new flows (0 drains it).", []string{"vip", "backend"}, nil)
	descBackendResolved = prometheus.NewDesc("weir_backend_next_hop_resolved",
		"1 when the MAC address frames to a backend carry is known; an unresolved backend gets no traffic.", []string{"vip", "backend"}, nil)
	descHealth = prometheus.NewDesc("weir_backend_health",
		"1 for the status a backend's health check has concluded (unknown, up or down), 0 for the others; only backends of VIPs with a health check. A down backend is forwarded to as failed.",
		[]string{"vip", "backend", "status"}, nil)
	descHealthTransitions = prometheus.NewDesc("weir_backend_health_transitions_total",
		"Health-check transitions of a backend, by the status entered (up or down).", []string{"vip", "backend", "to"}, nil)
	descHealthProbes = prometheus.NewDesc("weir_backend_health_probes_total",
		"Health probes of a backend.", []string{"vip", "backend"}, nil)
	descHealthProbeFailures = prometheus.NewDesc("weir_backend_health_probe_failures_total",
		"Health probes of a backend that failed.", []string{"vip", "backend"}, nil)
	descHealthRTT = prometheus.NewDesc("weir_backend_health_probe_duration_seconds",
		"How long a backend's last health probe took.", []string{"vip", "backend"}, nil)
	descVIPInfo = prometheus.NewDesc("weir_vip_info",
		"Always 1: each VIP with its configured name and forwarding mode.", []string{"vip", "name", "mode"}, nil)
	descUnresolved = prometheus.NewDesc("weir_next_hops_unresolved",
		"Backends whose next-hop MAC address is not known yet (they get no traffic).", nil, nil)
	descGeneration = prometheus.NewDesc("weir_snapshot_generation",
		"Generation of the forwarding snapshot in use: it grows with every reload, health change and next-hop change that was published.", nil, nil)
	descReloads = prometheus.NewDesc("weir_config_reloads_total",
		"Configuration reloads by outcome: applied, unchanged (valid, same forwarding state), or refused as invalid, restart_required or failed (the running configuration stayed in force).", []string{"outcome"}, nil)
	descReloadOK = prometheus.NewDesc("weir_config_last_reload_successful",
		"1 if the last configuration reload was accepted (applied or unchanged), or none was tried; 0 if it was refused.", nil, nil)
	descReloadTime = prometheus.NewDesc("weir_config_last_reload_timestamp_seconds",
		"Unix time of the last configuration reload, whatever its outcome, or of the start if none was tried.", nil, nil)
	descInfo = prometheus.NewDesc("weir_afxdp_info",
		"Always 1: the served interface, the AF_XDP mode the kernel granted (copy or zero-copy) and the XDP attach mode (native or generic).",
		[]string{"interface", "afxdp_mode", "xdp_mode"}, nil)

	descWorkerCPU = prometheus.NewDesc("weir_worker_cpu",
		"CPU a queue's worker is pinned to, -1 when unpinned.", []string{"queue"}, nil)
	descBatches = prometheus.NewDesc("weir_worker_batches_total",
		"Batches of frames a queue's worker took off its RX ring.", []string{"queue"}, nil)
	descSleeps = prometheus.NewDesc("weir_worker_sleeps_total",
		"Times a queue's worker, idle for idle_spin, slept in poll(2) until traffic or a timeout woke it.", []string{"queue"}, nil)
	descRXPackets = prometheus.NewDesc("weir_rx_packets_total",
		"Frames a queue's worker took off its RX ring.", []string{"queue"}, nil)
	descRXBytes = prometheus.NewDesc("weir_rx_bytes_total",
		"Bytes of the frames a queue's worker took off its RX ring.", []string{"queue"}, nil)
	descTXPackets = prometheus.NewDesc("weir_tx_packets_total",
		"Frames a queue's worker put on its TX ring: forwarded frames and ICMP replies, less those the full TX ring refused.", []string{"queue"}, nil)
	descFwdPackets = prometheus.NewDesc("weir_forwarded_packets_total",
		"Frames a queue's worker forwarded towards a backend (the sum of weir_backend_packets_total).", []string{"queue"}, nil)
	descFwdBytes = prometheus.NewDesc("weir_forwarded_bytes_total",
		"Bytes of the frames a queue's worker forwarded towards a backend.", []string{"queue"}, nil)
	descReplies = prometheus.NewDesc("weir_icmp_replies_total",
		"ICMP fragmentation-needed or packet-too-big messages sent back to clients.", []string{"queue"}, nil)
	descDrops = prometheus.NewDesc("weir_dropped_packets_total",
		"Frames received from the sockets and not transmitted, by reason (every reason is always exported).", []string{"reason"}, nil)
	descNewFlows = prometheus.NewDesc("weir_new_flows_total",
		"Flows that missed the flow table and were given a backend by the Maglev table.", []string{"queue"}, nil)
	descFlowHits = prometheus.NewDesc("weir_flow_hits_total",
		"Packets whose flow was found in the flow table.", []string{"queue"}, nil)
	descFlowsMoved = prometheus.NewDesc("weir_flows_moved_total",
		"Flows found in the flow table whose backend was gone or failed, sent to a new one.", []string{"queue"}, nil)
	descFragments = prometheus.NewDesc("weir_fragments_forwarded_total",
		"IP fragments forwarded.", []string{"queue"}, nil)
	descICMPErrors = prometheus.NewDesc("weir_icmp_errors_forwarded_total",
		"ICMP errors about a VIP's flow forwarded to the backend that owns the flow.", []string{"queue"}, nil)

	descFlowEntries = prometheus.NewDesc("weir_flow_table_entries",
		"Flows a queue's flow table holds.", []string{"queue"}, nil)
	descFlowCapacity = prometheus.NewDesc("weir_flow_table_capacity",
		"Flows a queue's flow table can hold.", []string{"queue"}, nil)
	descFlowEvictions = prometheus.NewDesc("weir_flow_table_evictions_total",
		"Live flows evicted from a full flow-table bucket to make room for a new one.", []string{"queue"}, nil)
	descFlowExpired = prometheus.NewDesc("weir_flow_table_expired_total",
		"Flows removed from the flow table after their idle timeout.", []string{"queue"}, nil)
	descFlowRateLimited = prometheus.NewDesc("weir_flow_table_rate_limited_total",
		"New flows forwarded but not remembered because the new-flow rate limit was reached.", []string{"queue"}, nil)

	descXSKRXDropped = prometheus.NewDesc("weir_xsk_rx_dropped_packets_total",
		"Packets the kernel dropped at a queue's AF_XDP socket (no fill-ring frame, and other reasons).", []string{"queue"}, nil)
	descXSKRXRingFull = prometheus.NewDesc("weir_xsk_rx_ring_full_packets_total",
		"Packets the kernel dropped because a queue's RX ring was full.", []string{"queue"}, nil)
	descXSKFillEmpty = prometheus.NewDesc("weir_xsk_fill_ring_empty_total",
		"Times the kernel found a queue's fill ring empty.", []string{"queue"}, nil)
	descXSKTXEmpty = prometheus.NewDesc("weir_xsk_tx_ring_empty_total",
		"Times the kernel found a queue's TX ring empty when asked to send.", []string{"queue"}, nil)
	descXSKInvalid = prometheus.NewDesc("weir_xsk_invalid_descriptors_total",
		"Invalid descriptors the kernel found in a queue's rings, by direction (rx or tx).", []string{"queue", "ring"}, nil)
	descXSKKicks = prometheus.NewDesc("weir_xsk_tx_kicks_total",
		"sendto calls a queue's worker made to make the kernel transmit.", []string{"queue"}, nil)
	descXSKKickRetries = prometheus.NewDesc("weir_xsk_tx_kick_retries_total",
		"TX kicks the kernel answered with a transient error (EAGAIN, EBUSY, ENOBUFS, ENETDOWN).", []string{"queue"}, nil)
	descXSKRXWakeups = prometheus.NewDesc("weir_xsk_rx_wakeups_total",
		"recvfrom calls a queue's worker made because the fill ring asked for a wakeup.", []string{"queue"}, nil)

	descXDPPackets = prometheus.NewDesc("weir_xdp_packets_total",
		"Frames the XDP redirect program saw, by result: redirected (to an AF_XDP socket), passed (to the host stack), dropped_no_socket (VIP frame on a queue without a socket), dropped_malformed (malformed frame to a VIP address).",
		[]string{"result"}, nil)
	descXDPMalformed = prometheus.NewDesc("weir_xdp_malformed_packets_total",
		"Frames with truncated or invalid headers the XDP program saw, passed or dropped.", nil, nil)
	descXDPICMPErrors = prometheus.NewDesc("weir_xdp_icmp_errors_total",
		"ICMP errors quoting a VIP flow the XDP program saw.", nil, nil)
	descXDPFragments = prometheus.NewDesc("weir_xdp_fragments_total",
		"IP fragments of VIP traffic the XDP program saw.", nil, nil)
)

// dropTXRingFull is the drop reason label of forwarded frames the TX ring
// had no room for; the other reasons are DropReason's.
const dropTXRingFull = "tx_ring_full"

// Describe sends every metric description.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		descBackendPackets, descBackendBytes, descBackendNewFlows, descBackendInfo, descBackendState, descBackendWeight,
		descBackendResolved, descHealth, descHealthTransitions, descHealthProbes, descHealthProbeFailures,
		descHealthRTT, descVIPInfo, descUnresolved, descGeneration, descReloads, descReloadOK,
		descReloadTime, descInfo, descWorkerCPU, descBatches, descSleeps, descRXPackets, descRXBytes, descTXPackets,
		descFwdPackets, descFwdBytes, descReplies, descDrops, descNewFlows, descFlowHits, descFlowsMoved,
		descFragments, descICMPErrors, descFlowEntries, descFlowCapacity, descFlowEvictions,
		descFlowExpired, descFlowRateLimited, descXSKRXDropped, descXSKRXRingFull, descXSKFillEmpty,
		descXSKTXEmpty, descXSKInvalid, descXSKKicks, descXSKKickRetries, descXSKRXWakeups,
		descXDPPackets, descXDPMalformed, descXDPICMPErrors, descXDPFragments,
	} {
		ch <- d
	}
}

// Collect reads the appliance and sends every metric.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	s := m.src.metricsSample()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	one := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}

	gauge(descInfo, 1, s.iface, afxdpModeLabel(s.afxdp), s.xdpMode.String())
	gauge(descGeneration, float64(s.generation))
	if m.reloads != nil {
		counts, last := m.reloads.Counts(), m.reloads.Last()
		for _, o := range ReloadOutcomes() {
			counter(descReloads, counts.Of(o), o.String())
		}
		when := m.started
		if last.Seq != 0 {
			when = last.Time
		}
		gauge(descReloadOK, one(last.Seq == 0 || last.Outcome.OK()))
		gauge(descReloadTime, float64(when.UnixNano())/1e9)
	}

	unresolved := 0
	for i := range s.vips {
		v := &s.vips[i]
		vip := v.VIPKey.String()
		gauge(descVIPInfo, 1, vip, v.Name, v.Mode.String())
		for j := range v.Backends {
			b := &v.Backends[j]
			addr := b.Addr.String()
			var t RealCounters
			if i < len(s.traffic) && j < len(s.traffic[i]) {
				t = s.traffic[i][j]
			}
			counter(descBackendPackets, t.Packets, vip, addr)
			counter(descBackendBytes, t.Bytes, vip, addr)
			counter(descBackendNewFlows, t.NewFlows, vip, addr)
			gauge(descBackendInfo, 1, vip, addr, cmp.Or(b.Name, addr))
			for st := range BackendState(len(stateNames)) {
				gauge(descBackendState, one(b.State == st), vip, addr, st.String())
			}
			gauge(descBackendWeight, float64(b.Weight), vip, addr)
			resolved := b.MAC != (packet.MAC{})
			gauge(descBackendResolved, one(resolved), vip, addr)
			if !resolved {
				unresolved++
			}
		}
	}
	gauge(descUnresolved, float64(unresolved))

	for i := range s.health {
		h := &s.health[i]
		vip, addr := h.VIP.String(), h.Addr.String()
		for st := range HealthStatus(len(healthStatusNames)) {
			gauge(descHealth, one(h.Status == st), vip, addr, st.String())
		}
		counter(descHealthTransitions, h.Ups, vip, addr, HealthUp.String())
		counter(descHealthTransitions, h.Downs, vip, addr, HealthDown.String())
		counter(descHealthProbes, h.Probes, vip, addr)
		counter(descHealthProbeFailures, h.ProbeFailures, vip, addr)
		gauge(descHealthRTT, h.LastRTT.Seconds(), vip, addr)
	}

	var drops [NumDropReasons]uint64
	var txRingFull uint64
	for i := range s.workers {
		w := &s.workers[i]
		q := strconv.Itoa(w.Queue)
		c := &w.Counters
		for r := range drops {
			drops[r] += c.Drops[r]
		}
		txRingFull += w.TXRingFull
		gauge(descWorkerCPU, float64(w.CPU), q)
		counter(descBatches, w.Batches, q)
		counter(descSleeps, w.Sleeps, q)
		counter(descRXPackets, c.RXPackets, q)
		counter(descRXBytes, c.RXBytes, q)
		// Forwarded frames and replies are counted when decided; the ones
		// the TX ring had no room for are among them.
		counter(descTXPackets, c.TXPackets+c.Replies-min(w.TXRingFull, c.TXPackets+c.Replies), q)
		counter(descFwdPackets, c.TXPackets, q)
		counter(descFwdBytes, c.TXBytes, q)
		counter(descReplies, c.Replies, q)
		counter(descNewFlows, c.NewFlows, q)
		counter(descFlowHits, c.FlowHits, q)
		counter(descFlowsMoved, c.FlowsMoved, q)
		counter(descFragments, c.Fragments, q)
		counter(descICMPErrors, c.ICMPErrors, q)

		f := &w.Flows
		gauge(descFlowEntries, float64(f.Entries), q)
		if i < len(s.capacity) {
			gauge(descFlowCapacity, float64(s.capacity[i]), q)
		}
		counter(descFlowEvictions, f.Evictions, q)
		counter(descFlowExpired, f.Expired, q)
		counter(descFlowRateLimited, f.RateLimited, q)

		r := &w.Ring
		counter(descXSKRXDropped, r.RXDropped, q)
		counter(descXSKRXRingFull, r.RXRingFull, q)
		counter(descXSKFillEmpty, r.RXFillRingEmptyDescs, q)
		counter(descXSKTXEmpty, r.TXRingEmptyDescs, q)
		counter(descXSKInvalid, r.RXInvalidDescs, q, "rx")
		counter(descXSKInvalid, r.TXInvalidDescs, q, "tx")
		counter(descXSKKicks, r.Kicks, q)
		counter(descXSKKickRetries, r.KickRetryable, q)
		counter(descXSKRXWakeups, r.RXWakeups, q)
	}
	for _, r := range DropReasons() {
		counter(descDrops, drops[r], r.String())
	}
	counter(descDrops, txRingFull, dropTXRingFull)

	if s.xdpErr != nil {
		// The rest of the scrape stands; the handler logs the error.
		ch <- prometheus.NewInvalidMetric(descXDPPackets, s.xdpErr)
		return
	}
	x := &s.xdp
	counter(descXDPPackets, x.Redirected, "redirected")
	counter(descXDPPackets, x.Passed, "passed")
	counter(descXDPPackets, x.DroppedNoSocket, "dropped_no_socket")
	counter(descXDPPackets, x.DroppedMalformed, "dropped_malformed")
	counter(descXDPMalformed, x.Malformed)
	counter(descXDPICMPErrors, x.ICMPErrors)
	counter(descXDPFragments, x.Fragments)
}

// afxdpModeLabel names the AF_XDP mode as the weir_afxdp_info label.
func afxdpModeLabel(m ring.Mode) string {
	switch m {
	case ring.ModeCopy:
		return "copy"
	case ring.ModeZeroCopy:
		return "zerocopy"
	case ring.ModeInMemory:
		return "in_memory"
	}
	return "none"
}

// applianceSource samples a running appliance. What cannot change while it
// runs is read once, when the Metrics is made: Stop clears some of it, and a
// scrape may come after Stop.
type applianceSource struct {
	a        *Appliance
	iface    string
	afxdp    ring.Mode
	xdpMode  firmware.AttachMode
	capacity []int
}

func newApplianceSource(a *Appliance) *applianceSource {
	src := &applianceSource{a: a, iface: a.ifname, afxdp: a.AFXDPMode()}
	if a.attach != nil { // nil once stopped
		src.xdpMode = a.attach.Mode()
	}
	for _, w := range a.workers {
		src.capacity = append(src.capacity, w.fwd.Flows().Capacity())
	}
	return src
}

// metricsSample reads the snapshot, each worker's last published counters
// and the redirect program's.
func (src *applianceSource) metricsSample() metricsSample {
	a := src.a
	s := metricsSample{iface: src.iface, afxdp: src.afxdp, xdpMode: src.xdpMode, capacity: src.capacity}
	snap := a.snap.Load()
	for _, w := range a.workers {
		ws := w.Stats()
		// Until its first publish a worker's published stats are all zero,
		// queue number included.
		ws.Queue, ws.CPU = w.queue, w.cpu
		s.workers = append(s.workers, ws)
	}
	s.xdp, s.xdpErr = a.redirect.Counters()
	s.health = a.Health()
	if snap == nil {
		return s
	}
	s.generation = snap.Generation
	s.vips = snap.Model.VIPs
	s.traffic = realTraffic(snap, s.workers)
	return s
}

// realTraffic sums the workers' per-real counters and arranges them like the
// snapshot's model: out[i][j] for VIP i's backend j.
func realTraffic(snap *Snapshot, workers []WorkerStats) [][]RealCounters {
	slotOf := make(map[realKey]int, len(snap.reals))
	for slot := range snap.reals {
		r := &snap.reals[slot]
		if r.id == 0 {
			continue
		}
		addr := netip.AddrFrom16(r.addr6)
		if r.family == 4 {
			addr = netip.AddrFrom4(r.addr4)
		}
		slotOf[realKey{r.vs.VIPKey, addr}] = slot
	}
	out := make([][]RealCounters, len(snap.Model.VIPs))
	for i := range snap.Model.VIPs {
		v := &snap.Model.VIPs[i]
		out[i] = make([]RealCounters, len(v.Backends))
		for j := range v.Backends {
			slot, ok := slotOf[realKey{v.VIPKey, v.Backends[j].Addr}]
			if !ok {
				continue
			}
			for k := range workers {
				if rs := workers[k].Reals; slot < len(rs) {
					out[i][j].Packets += rs[slot].Packets
					out[i][j].Bytes += rs[slot].Bytes
					out[i][j].NewFlows += rs[slot].NewFlows
				}
			}
		}
	}
	return out
}

// NewMetricsRegistry returns a registry holding m and the Go runtime and
// process collectors, ready for ServeMetrics.
func NewMetricsRegistry(m *Metrics) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(m,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// ListenMetrics opens the metrics endpoint's socket on addr (host:port; an
// empty addr means DefaultMetricsListen, loopback only). Listening apart from
// serving lets 'weir run' fail at start-up when the port is taken, and lets
// tests listen on port 0 and learn the port.
func ListenMetrics(addr string) (net.Listener, error) {
	addr = cmp.Or(addr, DefaultMetricsListen)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics endpoint: %w", err)
	}
	return ln, nil
}

// Metrics endpoint limits: a scrape reads a few thousand numbers, so
// anything slower is a stuck client.
const (
	metricsReadTimeout  = 10 * time.Second
	metricsWriteTimeout = 30 * time.Second
	metricsShutdownWait = 5 * time.Second
)

// ServeMetrics serves reg on ln at /metrics (and a pointer to it at /) until
// ctx is done, then shuts the server down and closes ln. Scrape errors are
// logged to log; the metrics that could be read are still served.
func ServeMetrics(ctx context.Context, ln net.Listener, reg prometheus.Gatherer, log *slog.Logger) error {
	log = cmp.Or(log, slog.Default())
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(log.Handler(), slog.LevelError),
		ErrorHandling: promhttp.ContinueOnError,
		Timeout:       metricsWriteTimeout / 2,
	}))
	mux.HandleFunc("/{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "weir: metrics are at /metrics")
	})
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: metricsReadTimeout,
		ReadTimeout:       metricsReadTimeout,
		WriteTimeout:      metricsWriteTimeout,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	log.Info("metrics endpoint listening", "addr", ln.Addr().String())
	select {
	case err := <-done:
		return fmt.Errorf("metrics endpoint: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), metricsShutdownWait)
	defer cancel()
	err := srv.Shutdown(sctx)
	if serr := <-done; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	if err != nil {
		return fmt.Errorf("metrics endpoint: shut down: %w", err)
	}
	return nil
}
