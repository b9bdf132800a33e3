package appliance

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"reflect"
	"slices"
	"sync"
	"time"
)

// ReloadOutcome is what became of one reload of the configuration file.
type ReloadOutcome uint8

// Reload outcomes. Only ReloadApplied changes the forwarding state; every
// other outcome leaves the running configuration in force, untouched.
const (
	// ReloadApplied: the new file was valid and its VIPs and backends
	// were published as a new snapshot.
	ReloadApplied ReloadOutcome = iota + 1
	// ReloadUnchanged: the new file was valid and asks for the same
	// forwarding state; nothing was published (settings that apply
	// without a snapshot, such as the log level, may still have changed).
	ReloadUnchanged
	// ReloadInvalid: the file could not be read or has problems.
	ReloadInvalid
	// ReloadRestartRequired: the file is valid but changes settings that
	// are fixed while the appliance runs (interface, queues, geometry,
	// flow tables...). It is refused as a whole; a restart applies it.
	ReloadRestartRequired
	// ReloadFailed: the file is valid but the appliance refused its model
	// (for example more reals than the registry holds).
	ReloadFailed
)

var reloadOutcomeNames = [...]string{
	ReloadApplied:         "applied",
	ReloadUnchanged:       "unchanged",
	ReloadInvalid:         "invalid",
	ReloadRestartRequired: "restart_required",
	ReloadFailed:          "failed",
}

// String returns the outcome's name, used in logs, metrics labels and the
// status file.
func (o ReloadOutcome) String() string {
	if int(o) < len(reloadOutcomeNames) && o > 0 {
		return reloadOutcomeNames[o]
	}
	return fmt.Sprintf("reload_outcome(%d)", o)
}

// OK reports whether the file was accepted (applied, or nothing to apply).
func (o ReloadOutcome) OK() bool { return o == ReloadApplied || o == ReloadUnchanged }

// ReloadOutcomes lists every outcome, for metrics.
func ReloadOutcomes() []ReloadOutcome {
	return []ReloadOutcome{ReloadApplied, ReloadUnchanged, ReloadInvalid, ReloadRestartRequired, ReloadFailed}
}

// ReloadResult describes one reload.
type ReloadResult struct {
	Seq     uint64 // 1 for the first reload of this Reloader, then 2, 3, ...
	Outcome ReloadOutcome
	Time    time.Time
	// Generation is the snapshot generation in force after the reload:
	// new for ReloadApplied, the previous one otherwise.
	Generation uint64
	// Problems lists every problem of an invalid file.
	Problems []Problem
	// RestartKeys names the settings that changed but need a restart, like
	// "appliance.queues" (ReloadRestartRequired).
	RestartKeys []string
	// Changes summarises what an applied reload changed.
	Changes ModelChanges
	// Err is the cause of ReloadFailed, or of ReloadInvalid when the file
	// could not be read at all (Problems is then empty).
	Err error
	// Config is the configuration in force after the reload: the new one
	// if it was applied or unchanged, the old one otherwise.
	Config *Config
}

// ModelChanges counts what differs between two models, by VIP key and by
// backend address within a VIP.
type ModelChanges struct {
	VIPsAdded, VIPsRemoved, VIPsChanged             int
	BackendsAdded, BackendsRemoved, BackendsChanged int
}

// IsZero reports whether nothing changed.
func (c ModelChanges) IsZero() bool { return c == ModelChanges{} }

// ReloadCounts counts reloads by outcome since the Reloader was made.
type ReloadCounts [len(reloadOutcomeNames)]uint64

// Of returns the count of one outcome.
func (c *ReloadCounts) Of(o ReloadOutcome) uint64 {
	if int(o) < len(c) {
		return c[o]
	}
	return 0
}

// publisher is what a Reloader needs of a running appliance.
type publisher interface {
	Publish(Model) error
	Snapshot() *Snapshot
}

// Reloader applies new versions of a configuration file to a running
// appliance: it re-reads the file, validates it, refuses it if it changes
// settings fixed at start-up, and otherwise publishes its VIPs and backends.
// A refused or invalid file leaves the running configuration in force. It is
// safe for concurrent use; reloads are applied one at a time. It lives as
// long as the appliance it was made for.
type Reloader struct {
	app publisher
	log *slog.Logger

	mu     sync.Mutex // serialises reloads; guards everything below
	cur    *Config
	seq    uint64
	counts ReloadCounts
	last   ReloadResult
}

// NewReloader returns a Reloader for a, which was started from running.
func NewReloader(a *Appliance, running *Config, log *slog.Logger) *Reloader {
	return newReloader(a, running, log)
}

func newReloader(p publisher, running *Config, log *slog.Logger) *Reloader {
	if log == nil {
		log = slog.Default()
	}
	return &Reloader{app: p, log: log, cur: running}
}

// Config returns the configuration in force.
func (r *Reloader) Config() *Config {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cur
}

// Counts returns how many reloads ended in each outcome.
func (r *Reloader) Counts() ReloadCounts {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.counts
}

// Last returns the result of the latest reload (Seq 0 if there was none).
func (r *Reloader) Last() ReloadResult {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last
}

// Reload re-reads the file the running configuration came from and applies
// it (see Apply). Every outcome is logged: an invalid file with each of its
// problems, a refused one with the keys that need a restart.
func (r *Reloader) Reload() ReloadResult {
	r.mu.Lock()
	defer r.mu.Unlock()
	next, err := LoadConfig(r.cur.Path)
	return r.applyLocked(next, err)
}

// Apply applies an already loaded configuration, as Reload does after
// loading; a nil next with a non-nil err (LoadConfig's) records an invalid
// file.
func (r *Reloader) Apply(next *Config, err error) ReloadResult {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.applyLocked(next, err)
}

func (r *Reloader) applyLocked(next *Config, loadErr error) ReloadResult {
	r.seq++
	res := ReloadResult{Seq: r.seq, Time: time.Now(), Generation: r.generation(), Config: r.cur}
	path := r.cur.Path
	switch {
	case loadErr != nil:
		res.Outcome = ReloadInvalid
		if ce, ok := errors.AsType[*ConfigError](loadErr); ok {
			res.Problems = slices.Clone(ce.Problems)
			for _, p := range ce.Problems {
				r.log.Error("reload: config problem", "problem", p.String())
			}
			r.log.Error("reload refused: the configuration has problems; the running configuration stays in force",
				"file", path, "problems", len(ce.Problems), "generation", res.Generation)
		} else {
			res.Err = loadErr
			r.log.Error("reload refused: cannot load the configuration; the running configuration stays in force",
				"file", path, "err", loadErr, "generation", res.Generation)
		}
	case next == nil:
		res.Outcome, res.Err = ReloadInvalid, errors.New("no configuration")
	default:
		if next.Path == "" {
			next.Path = path
		}
		r.applyValid(next, &res)
	}
	r.counts[res.Outcome]++
	r.last = res
	return res
}

// applyValid handles a configuration that loaded and validated.
func (r *Reloader) applyValid(next *Config, res *ReloadResult) {
	if keys := RestartKeys(r.cur, next); len(keys) > 0 {
		res.Outcome, res.RestartKeys = ReloadRestartRequired, keys
		r.log.Error("reload refused: settings changed that only a restart applies; the running configuration stays in force",
			"file", next.Path, "restart_keys", keys, "generation", res.Generation)
		return
	}
	oldModel, newModel := r.cur.Model(), next.Model()
	res.Changes = DiffModels(oldModel, newModel)
	if reflect.DeepEqual(oldModel, newModel) {
		res.Outcome, res.Config = ReloadUnchanged, next
		r.cur = next
		r.log.Info("reload: configuration valid, forwarding state unchanged", "file", next.Path, "generation", res.Generation)
		return
	}
	if err := r.app.Publish(newModel); err != nil {
		res.Outcome, res.Err = ReloadFailed, err
		res.Generation = r.generation()
		r.log.Error("reload failed: the appliance refused the new model; the running configuration stays in force",
			"file", next.Path, "err", err, "generation", res.Generation)
		return
	}
	res.Outcome, res.Config, res.Generation = ReloadApplied, next, r.generation()
	r.cur = next
	c := res.Changes
	r.log.Info("reload applied", "file", next.Path, "generation", res.Generation,
		"vips_added", c.VIPsAdded, "vips_removed", c.VIPsRemoved, "vips_changed", c.VIPsChanged,
		"backends_added", c.BackendsAdded, "backends_removed", c.BackendsRemoved, "backends_changed", c.BackendsChanged)
}

func (r *Reloader) generation() uint64 {
	if s := r.app.Snapshot(); s != nil {
		return s.Generation
	}
	return 0
}

// RestartKeys lists, as configuration keys, the settings that differ between
// a running configuration and a new one and cannot change while the
// appliance runs. An empty result means next can be applied live: its VIPs
// and backends, the local encapsulation addresses and the log level.
//
// The flow seed is among the restart keys: flow tables find a flow's entry
// by its seeded hash, so a new seed would make every established flow look
// new and move it wherever Maglev now says.
func RestartKeys(running, next *Config) []string {
	var keys []string
	diff := func(key string, changed bool) {
		if changed {
			keys = append(keys, key)
		}
	}
	a, b := &running.Appliance, &next.Appliance
	diff("appliance.interface", a.Interface != b.Interface)
	diff("appliance.queues", a.Queues != b.Queues)
	diff("appliance.cpus", !slices.Equal(a.CPUs, b.CPUs))
	diff("appliance.xdp_mode", a.XDPMode != b.XDPMode)
	diff("appliance.zero_copy", a.ZeroCopy != b.ZeroCopy)
	diff("appliance.frame_size", a.FrameSize != b.FrameSize)
	diff("appliance.frames_per_queue", a.FramesPerQueue != b.FramesPerQueue)
	diff("appliance.headroom", a.Headroom != b.Headroom)
	diff("appliance.ring_size", a.RingSize != b.RingSize)
	diff("appliance.batch_size", a.BatchSize != b.BatchSize)
	diff("appliance.idle_spin", a.IdleSpin != b.IdleSpin)
	diff("appliance.flow_seed", a.FlowSeed != b.FlowSeed)
	diff("appliance.max_reals", a.MaxReals != b.MaxReals)
	// local_ipv4 and local_ipv6 are part of the model: live.

	f, g := &running.Flows, &next.Flows
	diff("flows.capacity", f.Capacity != g.Capacity)
	diff("flows.tcp_timeout", f.TCPTimeout != g.TCPTimeout)
	diff("flows.udp_timeout", f.UDPTimeout != g.UDPTimeout)
	diff("flows.other_timeout", f.OtherTimeout != g.OtherTimeout)
	diff("flows.new_flows_per_second", f.NewFlowsPerSecond != g.NewFlowsPerSecond)
	diff("flows.new_flow_burst", f.NewFlowBurst != g.NewFlowBurst)

	diff("metrics.listen", running.Metrics.Listen != next.Metrics.Listen)
	diff("log.format", running.Log.Format != next.Log.Format)
	// log.level is applied live by whoever owns the logger. VIPs (health
	// checks included) are the model: live.
	return keys
}

// DiffModels counts the VIPs and backends added, removed and changed from
// old to next.
func DiffModels(old, next Model) ModelChanges {
	var c ModelChanges
	before := make(map[VIPKey]*VIP, len(old.VIPs))
	for i := range old.VIPs {
		before[old.VIPs[i].VIPKey] = &old.VIPs[i]
	}
	seen := make(map[VIPKey]bool, len(next.VIPs))
	for i := range next.VIPs {
		n := &next.VIPs[i]
		seen[n.VIPKey] = true
		o, ok := before[n.VIPKey]
		if !ok {
			c.VIPsAdded++
			c.BackendsAdded += len(n.Backends)
			continue
		}
		ob, nb := o.Backends, n.Backends
		ov, nv := *o, *n
		ov.Backends, nv.Backends = nil, nil
		if !reflect.DeepEqual(ov, nv) {
			c.VIPsChanged++
		}
		bs := make(map[netip.Addr]*Backend, len(ob))
		for j := range ob {
			bs[ob[j].Addr] = &ob[j]
		}
		for j := range nb {
			k := nb[j].Addr
			if p, ok := bs[k]; !ok {
				c.BackendsAdded++
			} else {
				if *p != nb[j] {
					c.BackendsChanged++
				}
				delete(bs, k)
			}
		}
		c.BackendsRemoved += len(bs)
	}
	for k, v := range before {
		if !seen[k] {
			c.VIPsRemoved++
			c.BackendsRemoved += len(v.Backends)
		}
	}
	return c
}
