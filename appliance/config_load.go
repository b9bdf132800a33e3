package appliance

import (
	"fmt"
	"math"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/BurntSushi/toml"
	"golang.org/x/sys/unix"

	"github.com/weirlb/weir/flows"
	"github.com/weirlb/weir/hashing"
	"github.com/weirlb/weir/internal/tomlpos"
	"github.com/weirlb/weir/packet"
	"github.com/weirlb/weir/umem"
)

// loader decodes a document into a Config, collecting problems instead of
// stopping at the first. It walks the generic decoded tree itself rather
// than letting the TOML decoder fill structs, because the decoder stops at
// its first type error and cannot say where a value it accepted sits.
type loader struct {
	file   string
	pos    tomlpos.Positions
	cpus   []int // CPUs this process may run on
	probs  []Problem
	schema map[string]bool // every key the schema asked for, without indexes (for tests)
	// vipKeyOK[i] says vip[i]'s address, protocol and port decoded fine.
	vipKeyOK []bool
}

// table is one decoded TOML table and the keys the schema knows in it.
type table struct {
	path  string
	m     map[string]any
	known []string
	// broken: the key holds something other than a table, which is
	// reported; its required keys are not reported missing as well.
	broken bool
}

func (l *loader) load(data []byte) *Config {
	c := DefaultConfig()
	var doc map[string]any
	if _, err := toml.Decode(string(data), &doc); err != nil {
		l.syntax(data, err)
		return &c
	}
	l.pos = tomlpos.Scan(data)
	root := &table{m: doc}
	l.appliance(l.sub(root, "appliance"), &c.Appliance)
	l.flows(l.sub(root, "flows"), &c.Flows)
	l.metrics(l.sub(root, "metrics"), &c.Metrics)
	l.log(l.sub(root, "log"), &c.Log)
	for _, t := range l.tables(root, "vip") {
		c.VIPs = append(c.VIPs, l.vip(t, &c.Appliance))
	}
	l.crossVIPs(&c)
	l.done(root)
	return &c
}

// syntax turns a decoder error into a problem.
func (l *loader) syntax(data []byte, err error) {
	msg, at, ok := tomlpos.ParseError(data, err)
	if !ok {
		l.probs = append(l.probs, Problem{File: l.file, Msg: err.Error()})
		return
	}
	l.probs = append(l.probs, Problem{File: l.file, Line: at.Line, Col: at.Col, Msg: msg})
}

func (l *loader) add(path string, at tomlpos.Pos, format string, args ...any) {
	l.probs = append(l.probs, Problem{File: l.file, Line: at.Line, Col: at.Col, Key: path, Msg: fmt.Sprintf(format, args...)})
}

// bad reports a problem with the value at path.
func (l *loader) bad(path string, format string, args ...any) {
	l.add(path, l.pos.Value(path), format, args...)
}

// badKey reports a problem with the key at path (unknown, misplaced).
func (l *loader) badKey(path string, format string, args ...any) {
	l.add(path, l.pos.Key(path), format, args...)
}

// missing reports a required key absent from t, at t's header if it has one.
func (l *loader) missing(t *table, key, format string, args ...any) {
	if t.broken {
		return
	}
	l.add(tomlpos.Join(t.path, key), l.pos.Key(t.path), format, args...)
}

// get looks key up in t and records it as known.
func (l *loader) get(t *table, key string) (v any, path string, ok bool) {
	t.known = append(t.known, key)
	path = tomlpos.Join(t.path, key)
	l.schema[tomlpos.Generic(path)] = true
	v, ok = t.m[key]
	return v, path, ok
}

func (t *table) has(key string) bool {
	_, ok := t.m[key]
	return ok
}

// sub returns the table at key of t, empty if absent or not a table.
func (l *loader) sub(t *table, key string) *table {
	v, path, ok := l.get(t, key)
	sub := &table{path: path}
	if !ok {
		return sub
	}
	m, isMap := v.(map[string]any)
	if !isMap {
		l.bad(path, "must be a table, not %s", tomlpos.TypeName(v))
		sub.broken = true
		return sub
	}
	sub.m = m
	return sub
}

// tables returns the array of tables at key of t ([[key]] or key = [{...}]).
func (l *loader) tables(t *table, key string) []*table {
	v, path, ok := l.get(t, key)
	if !ok {
		return nil
	}
	var out []*table
	switch v := v.(type) {
	case []map[string]any:
		for i, m := range v {
			out = append(out, &table{path: tomlpos.Index(path, i), m: m})
		}
	case []any:
		for i, e := range v {
			m, isMap := e.(map[string]any)
			if !isMap {
				l.bad(tomlpos.Index(path, i), "must be a table, not %s", tomlpos.TypeName(e))
				continue
			}
			out = append(out, &table{path: tomlpos.Index(path, i), m: m})
		}
	default:
		l.bad(path, "must be an array of tables ([[%s]]), not %s", tomlpos.Generic(path), tomlpos.TypeName(v))
	}
	return out
}

// done reports the keys of t the schema did not ask for, and does the same
// for nothing below them: an unknown table is one problem, not one per key.
func (l *loader) done(t *table) {
	keys := make([]string, 0, len(t.m))
	for k := range t.m {
		if !slices.Contains(t.known, k) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		what := "key"
		switch t.m[k].(type) {
		case map[string]any:
			what = "table"
		case []map[string]any:
			what = "array of tables"
		}
		path := tomlpos.Join(t.path, k)
		if s := suggest(k, t.known); s != "" {
			l.badKey(path, "unknown %s (did you mean %q?)", what, s)
		} else {
			l.badKey(path, "unknown %s (known here: %s)", what, strings.Join(t.known, ", "))
		}
	}
}

func (l *loader) str(t *table, key string, dst *string) bool {
	v, path, ok := l.get(t, key)
	if !ok {
		return false
	}
	s, isStr := v.(string)
	if !isStr {
		l.bad(path, "must be a string, not %s", tomlpos.TypeName(v))
		return false
	}
	*dst = s
	return true
}

func (l *loader) boolean(t *table, key string, dst *bool) bool {
	v, path, ok := l.get(t, key)
	if !ok {
		return false
	}
	b, isBool := v.(bool)
	if !isBool {
		l.bad(path, "must be true or false, not %s", tomlpos.TypeName(v))
		return false
	}
	*dst = b
	return true
}

// integer reads an integer in lo..hi into dst.
func integer[T ~int | ~int64 | ~uint16 | ~uint32 | ~uint64](l *loader, t *table, key string, lo, hi int64, dst *T) bool {
	v, path, ok := l.get(t, key)
	if !ok {
		return false
	}
	n, isInt := v.(int64)
	if !isInt {
		l.bad(path, "must be an integer, not %s", tomlpos.TypeName(v))
		return false
	}
	if n < lo || n > hi {
		l.bad(path, "%d is out of range %d..%d", n, lo, hi)
		return false
	}
	*dst = T(n)
	return true
}

// duration reads a Go duration string ("15m", "1h30m") in lo..hi into dst.
func (l *loader) duration(t *table, key string, lo, hi time.Duration, dst *time.Duration) bool {
	var s string
	if !l.str(t, key, &s) {
		return false
	}
	path := tomlpos.Join(t.path, key)
	d, err := time.ParseDuration(s)
	if err != nil {
		l.bad(path, "%q is not a duration: write it like \"30s\", \"15m\" or \"1h30m\"", s)
		return false
	}
	if d < lo || d > hi {
		l.bad(path, "%s is out of range %s..%s", fmtDuration(d), fmtDuration(lo), fmtDuration(hi))
		return false
	}
	*dst = d
	return true
}

// enum reads one of names into dst.
func (l *loader) enum(t *table, key string, dst *string, names ...string) bool {
	var s string
	if !l.str(t, key, &s) {
		return false
	}
	if !slices.Contains(names, s) {
		l.bad(tomlpos.Join(t.path, key), "%q is not one of %s", s, orList(names))
		return false
	}
	*dst = s
	return true
}

// addr reads an IP address into dst. Zones and IPv4-mapped IPv6 addresses
// are refused: weir matches and writes plain 4- or 16-byte addresses.
func (l *loader) addr(t *table, key string, dst *netip.Addr) bool {
	var s string
	if !l.str(t, key, &s) {
		return false
	}
	path := tomlpos.Join(t.path, key)
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		l.bad(path, "%q is not an IP address", s)
		return false
	case a.Zone() != "":
		l.bad(path, "%q: an address with a zone cannot be used here", s)
		return false
	case a.Is4In6():
		l.bad(path, "%q is an IPv4-mapped IPv6 address: write it as %s", s, a.Unmap())
		return false
	}
	*dst = a
	return true
}

func (l *loader) appliance(t *table, a *ApplianceConfig) {
	if !t.has("interface") {
		l.missing(t, "interface", `required: the interface weir serves, like interface = "eth1"`)
	}
	if l.str(t, "interface", &a.Interface) {
		if err := checkIfName(a.Interface); err != nil {
			l.bad(tomlpos.Join(t.path, "interface"), "%v", err)
		}
	}
	integer(l, t, "queues", 0, cfgMaxQueues, &a.Queues)
	l.cpuList(t, a)
	var s string
	if l.enum(t, "xdp_mode", &s, string(XDPAuto), string(XDPNative), string(XDPGeneric)) {
		a.XDPMode = XDPMode(s)
	}
	if l.enum(t, "zero_copy", &s, string(ZeroCopyAuto), string(ZeroCopyRequire), string(ZeroCopyNever)) {
		a.ZeroCopy = ZeroCopy(s)
		if a.ZeroCopy == ZeroCopyRequire && a.XDPMode == XDPGeneric {
			l.bad(tomlpos.Join(t.path, "zero_copy"), `"require" cannot be met with xdp_mode = "generic": zero-copy needs the driver (native) mode`)
		}
	}
	// frameOK and ringOK say whether checks against these sizes mean
	// anything (a bad value is reported once, not again by every check
	// that uses it).
	frameOK := !t.has("frame_size")
	var frame int64
	if integer(l, t, "frame_size", math.MinInt64, math.MaxInt64, &frame) {
		frameOK = frame == 2048 || frame == 4096
		if frameOK {
			a.FrameSize = uint32(frame)
		} else {
			l.bad(tomlpos.Join(t.path, "frame_size"), "%d: must be 2048 or 4096", frame)
		}
	}
	ringOK := !t.has("ring_size")
	if integer(l, t, "ring_size", cfgMinRingSize, cfgMaxRingSize, &a.RingSize) {
		ringOK = isPow2(uint64(a.RingSize))
		if !ringOK {
			l.bad(tomlpos.Join(t.path, "ring_size"), "%d is not a power of two", a.RingSize)
		}
	}
	if integer(l, t, "frames_per_queue", cfgMinFramesPerQueue, cfgMaxFramesPerQueue, &a.FramesPerQueue) {
		switch {
		case !isPow2(uint64(a.FramesPerQueue)):
			l.bad(tomlpos.Join(t.path, "frames_per_queue"), "%d is not a power of two", a.FramesPerQueue)
		case ringOK && a.FramesPerQueue < 2*a.RingSize:
			l.bad(tomlpos.Join(t.path, "frames_per_queue"), "%d is less than twice ring_size (%d): the fill and RX rings alone can hold %d frames, so use at least %d",
				a.FramesPerQueue, a.RingSize, 2*a.RingSize, 2*a.RingSize)
		}
	}
	if integer(l, t, "headroom", cfgMinHeadroom, 4096/2-1, &a.Headroom) && frameOK {
		room := int64(a.FrameSize) - int64(a.Headroom) - umem.KernelHeadroom
		switch {
		case a.Headroom >= a.FrameSize/2:
			l.bad(tomlpos.Join(t.path, "headroom"), "%d must be less than half of frame_size (%d)", a.Headroom, a.FrameSize)
		case room < umem.MinPacketRoom:
			l.bad(tomlpos.Join(t.path, "headroom"), "%d leaves %d bytes of a %d-byte frame for the packet (the kernel keeps %d), need %d: lower headroom or use frame_size = 4096",
				a.Headroom, room, a.FrameSize, umem.KernelHeadroom, umem.MinPacketRoom)
		}
	}
	if integer(l, t, "batch_size", 1, cfgMaxBatchSize, &a.BatchSize) {
		if ringOK && uint32(a.BatchSize) > a.RingSize {
			l.bad(tomlpos.Join(t.path, "batch_size"), "%d is larger than ring_size (%d)", a.BatchSize, a.RingSize)
		}
	} else if !t.has("batch_size") && ringOK && uint32(a.BatchSize) > a.RingSize {
		// The default follows a ring smaller than itself.
		a.BatchSize = int(a.RingSize)
	}
	l.duration(t, "idle_spin", 0, MaxIdleSpin, &a.IdleSpin)
	if l.addr(t, "local_ipv4", &a.LocalIPv4) {
		if err := checkUnicast(a.LocalIPv4, 4); err != nil {
			l.bad(tomlpos.Join(t.path, "local_ipv4"), "%v", err)
			a.LocalIPv4 = netip.Addr{}
		}
	}
	if l.addr(t, "local_ipv6", &a.LocalIPv6) {
		if err := checkUnicast(a.LocalIPv6, 6); err != nil {
			l.bad(tomlpos.Join(t.path, "local_ipv6"), "%v", err)
			a.LocalIPv6 = netip.Addr{}
		}
	}
	l.flowSeed(t, a)
	integer(l, t, "max_reals", 1, MaxRealsLimit, &a.MaxReals)
	l.done(t)
}

// cpuList reads appliance.cpus: CPUs this process may run on, no
// duplicates, one per queue when queues is set.
func (l *loader) cpuList(t *table, a *ApplianceConfig) {
	v, path, ok := l.get(t, "cpus")
	if !ok {
		return
	}
	list, isList := v.([]any)
	if !isList {
		l.bad(path, "must be an array of CPU numbers, not %s", tomlpos.TypeName(v))
		return
	}
	seen := make(map[int64]int)
	good := true
	for i, e := range list {
		ep := tomlpos.Index(path, i)
		n, isInt := e.(int64)
		switch {
		case !isInt:
			l.bad(ep, "must be a CPU number, not %s", tomlpos.TypeName(e))
		case !slices.Contains(l.cpus, int(n)):
			l.bad(ep, "CPU %d is not available to weir (it may use %s)", n, cpuRanges(l.cpus))
		case seen[n] > 0:
			l.bad(ep, "CPU %d is already queue %d's: every queue needs a CPU of its own", n, seen[n]-1)
		default:
			seen[n] = i + 1
			a.CPUs = append(a.CPUs, int(n))
			continue
		}
		good = false
	}
	if !good {
		a.CPUs = nil
		return
	}
	if t.has("queues") && a.Queues > 0 && len(list) > 0 && len(list) != a.Queues {
		l.bad(path, "lists %d CPU(s) but queues = %d: list one CPU per queue", len(list), a.Queues)
	}
}

// flowSeed reads a 64-bit seed, written as a hex string ("0x1234abcd...")
// or a positive integer. Zero is refused: it reads as "not configured".
func (l *loader) flowSeed(t *table, a *ApplianceConfig) {
	v, path, ok := l.get(t, "flow_seed")
	if !ok {
		return
	}
	var seed uint64
	switch v := v.(type) {
	case string:
		h, isHex := strings.CutPrefix(strings.ToLower(v), "0x")
		n, err := strconv.ParseUint(h, 16, 64)
		if !isHex || err != nil {
			l.bad(path, "%q is not a 64-bit hex number like \"0x5eed1234abcd0001\"", v)
			return
		}
		seed = n
	case int64:
		if v < 0 {
			l.bad(path, "%d: must be positive (write large seeds in hex, as a string)", v)
			return
		}
		seed = uint64(v)
	default:
		l.bad(path, "must be a hex string like \"0x5eed1234abcd0001\", not %s", tomlpos.TypeName(v))
		return
	}
	if seed == 0 {
		l.bad(path, "must not be zero: leave flow_seed out for the default seed")
		return
	}
	a.FlowSeed = seed
}

func (l *loader) flows(t *table, f *flows.Config) {
	integer(l, t, "capacity", 1, flows.MaxCapacity, &f.Capacity)
	l.duration(t, "tcp_timeout", flows.MinTimeout, flows.MaxTimeout, &f.TCPTimeout)
	l.duration(t, "udp_timeout", flows.MinTimeout, flows.MaxTimeout, &f.UDPTimeout)
	l.duration(t, "other_timeout", flows.MinTimeout, flows.MaxTimeout, &f.OtherTimeout)
	rateOK := integer(l, t, "new_flows_per_second", 0, math.MaxUint32, &f.NewFlowsPerSecond) || !t.has("new_flows_per_second")
	burstOK := integer(l, t, "new_flow_burst", 0, math.MaxUint32, &f.NewFlowBurst) || !t.has("new_flow_burst")
	if rateOK && burstOK {
		switch {
		case f.NewFlowsPerSecond > 0 && f.NewFlowBurst == 0:
			l.bad(tomlpos.Join(t.path, "new_flow_burst"), "must be at least 1 when new_flows_per_second is set (one second's worth, %d, is a good start)", f.NewFlowsPerSecond)
		case f.NewFlowsPerSecond == 0 && f.NewFlowBurst > 0:
			l.bad(tomlpos.Join(t.path, "new_flow_burst"), "%d with new_flows_per_second = 0 (unlimited): set a rate or leave the burst out", f.NewFlowBurst)
		}
	}
	l.done(t)
}

func (l *loader) metrics(t *table, m *MetricsConfig) {
	if l.str(t, "listen", &m.Listen) && m.Listen != "" {
		if err := checkListen(m.Listen); err != nil {
			l.bad(tomlpos.Join(t.path, "listen"), "%v", err)
		}
	}
	l.done(t)
}

func (l *loader) log(t *table, lc *LogConfig) {
	var s string
	if l.enum(t, "format", &s, string(LogText), string(LogJSON)) {
		lc.Format = LogFormat(s)
	}
	if l.enum(t, "level", &s, "debug", "info", "warn", "error") {
		_ = lc.Level.UnmarshalText([]byte(s)) // one of slog's own names
	}
	l.done(t)
}

func (l *loader) vip(t *table, a *ApplianceConfig) VIPConfig {
	v := defaultVIP()
	at := func(key string) string { return tomlpos.Join(t.path, key) }

	if !t.has("name") {
		l.missing(t, "name", `required: a short name for logs and metrics, like name = "web"`)
	}
	if l.str(t, "name", &v.Name) {
		if err := checkVIPName(v.Name); err != nil {
			l.bad(at("name"), "%v", err)
		}
	}
	if !t.has("address") {
		l.missing(t, "address", "required: the VIP's IPv4 or IPv6 address")
	}
	if l.addr(t, "address", &v.Addr) {
		if err := checkUnicast(v.Addr, 0); err != nil {
			l.bad(at("address"), "%v", err)
			v.Addr = netip.Addr{}
		}
	}
	var s string
	if l.enum(t, "protocol", &s, "tcp", "udp") && s == "udp" {
		v.Proto = packet.ProtoUDP
	}
	var allPorts bool
	portOK := integer(l, t, "port", 1, math.MaxUint16, &v.Port)
	l.boolean(t, "all_ports", &allPorts)
	switch {
	case t.has("port") && allPorts:
		l.bad(at("all_ports"), "cannot be true together with port = %d: choose one", v.Port)
		portOK = false
	case !t.has("port") && !allPorts:
		l.missing(t, "port", "required: set port = 1..65535, or all_ports = true for every port")
	case allPorts:
		portOK = true
	}
	// A VIP whose key is not known for sure stays out of the duplicate check.
	l.vipKeyOK = append(l.vipKeyOK, portOK && v.Addr.IsValid())
	modeOK := !t.has("mode")
	if l.enum(t, "mode", &s, "dsr", "ipip", "gue") {
		v.Mode, _ = ParseMode(s)
		modeOK = true
	}
	if integer(l, t, "table_size", 1, math.MaxUint32, &v.TableSize) {
		if err := hashing.ValidateTableSize(v.TableSize); err != nil {
			l.bad(at("table_size"), "%d is not a usable Maglev table size: it must be a prime up to %d, such as %d or %d",
				v.TableSize, hashing.MaxTableSize, hashing.DefaultTableSize, hashing.LargeTableSize)
		}
	}
	integer(l, t, "mtu", cfgMinMTU, cfgMaxMTU, &v.MTU)
	if l.enum(t, "too_big", &s, "drop", "icmp") {
		v.TooBig = map[string]TooBigPolicy{"drop": TooBigDrop, "icmp": TooBigICMP}[s]
	}
	integer(l, t, "gue_port", 1, math.MaxUint16, &v.GUEPort)
	if l.enum(t, "icmp_errors", &s, "forward", "drop") {
		v.ICMPErrors, _ = ParseICMPPolicy(s)
	}
	var prefix string
	if l.str(t, "source_prefix", &prefix) {
		p, err := netip.ParsePrefix(prefix)
		switch {
		case err != nil:
			l.bad(at("source_prefix"), "%q is not a prefix like \"10.99.0.0/16\" or \"fd00:99::/64\"", prefix)
		case p.Addr().Zone() != "" || p.Addr().Is4In6():
			l.bad(at("source_prefix"), "%q must be a plain IPv4 or IPv6 prefix", prefix)
		case p != p.Masked():
			l.bad(at("source_prefix"), "%q has bits set past its length: did you mean %q?", prefix, p.Masked().String())
		default:
			v.SourcePrefix = p
		}
	}
	// Keys that mean nothing in the VIP's mode are refused rather than
	// ignored: whoever wrote them expected an effect.
	if v.Mode == ModeDSR && modeOK {
		for _, k := range []string{"mtu", "too_big", "source_prefix"} {
			if t.has(k) {
				l.badKey(at(k), "applies only to ipip and gue VIPs (a dsr VIP forwards packets unchanged)")
			}
		}
		v.SourcePrefix = netip.Prefix{}
	}
	if v.Mode != ModeGUE && modeOK && t.has("gue_port") {
		l.badKey(at("gue_port"), "applies only to gue VIPs")
	}
	if v.Proto == packet.ProtoUDP {
		v.Health.Type = HealthNone
	} else {
		v.Health.Type = HealthTCP
	}
	l.health(l.sub(t, "health"), &v, allPorts && !t.has("port"))
	backends := l.tables(t, "backend")
	const needBackend = "a VIP needs at least one [[vip.backend]] (take backends out of service with weight = 0 or state = \"draining\")"
	if b, ok := t.m["backend"].([]any); ok && len(b) == 0 {
		l.bad(at("backend"), needBackend)
	} else if !t.has("backend") {
		l.missing(t, "backend", needBackend)
	}
	for _, bt := range backends {
		v.Backends = append(v.Backends, l.backend(bt))
	}
	l.crossBackends(t, &v, a, modeOK)
	l.done(t)
	return v
}

func (l *loader) health(t *table, v *VIPConfig, allPorts bool) {
	h := &v.Health
	var s string
	if l.enum(t, "type", &s, string(HealthNone), string(HealthTCP), string(HealthHTTP), string(HealthHTTPS)) {
		h.Type = HealthType(s)
	}
	integer(l, t, "port", 0, math.MaxUint16, &h.Port)
	if l.str(t, "path", &h.Path) {
		if !strings.HasPrefix(h.Path, "/") || strings.IndexFunc(h.Path, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0 {
			l.bad(tomlpos.Join(t.path, "path"), "%q must start with / and hold no spaces", h.Path)
		}
	}
	integer(l, t, "expect_status", 100, 599, &h.ExpectStatus)
	intervalOK := l.duration(t, "interval", cfgMinHealthPeriod, cfgMaxHealthPeriod, &h.Interval) || !t.has("interval")
	timeoutOK := l.duration(t, "timeout", cfgMinHealthWait, cfgMaxHealthPeriod, &h.Timeout)
	if !t.has("timeout") {
		// The default timeout shrinks to fit a short interval.
		h.Timeout = min(h.Timeout, h.Interval)
		timeoutOK = true
	}
	if intervalOK && timeoutOK && h.Timeout > h.Interval {
		l.bad(tomlpos.Join(t.path, "timeout"), "%s is longer than interval (%s): a probe must end before the next starts",
			fmtDuration(h.Timeout), fmtDuration(h.Interval))
	}
	integer(l, t, "rise", 1, cfgMaxRiseFall, &h.Rise)
	integer(l, t, "fall", 1, cfgMaxRiseFall, &h.Fall)

	var notFor []string
	switch h.Type {
	case HealthNone:
		notFor = []string{"port", "path", "expect_status", "interval", "timeout", "rise", "fall"}
	case HealthTCP:
		notFor = []string{"path", "expect_status"}
	}
	for _, k := range notFor {
		if t.has(k) {
			l.badKey(tomlpos.Join(t.path, k), "does not apply to a %q health check", h.Type)
		}
	}
	if h.Type != HealthNone && allPorts && h.Port == 0 && !t.has("port") {
		l.missing(t, "port", "required for a VIP with all_ports: the port to probe (or type = \"none\")")
	}
	l.done(t)
}

func (l *loader) backend(t *table) Backend {
	b := Backend{Weight: DefaultWeight, State: StateActive}
	if !t.has("address") {
		l.missing(t, "address", "required: the backend's IPv4 or IPv6 address")
	}
	if l.addr(t, "address", &b.Addr) {
		if err := checkUnicast(b.Addr, 0); err != nil {
			l.bad(tomlpos.Join(t.path, "address"), "%v", err)
			b.Addr = netip.Addr{}
		}
	}
	if l.str(t, "name", &b.Name) {
		if b.Name == "" || len(b.Name) > 253 || strings.IndexFunc(b.Name, unicode.IsControl) >= 0 {
			l.bad(tomlpos.Join(t.path, "name"), "must be 1 to 253 printable characters")
		}
	} else if b.Addr.IsValid() {
		b.Name = b.Addr.String()
	}
	integer(l, t, "weight", 0, cfgMaxWeight, &b.Weight)
	var s string
	if l.enum(t, "state", &s, "active", "draining", "failed") {
		b.State, _ = ParseBackendState(s)
	}
	if l.str(t, "mac", &s) {
		m, err := parseUnicastMAC(s)
		if err != nil {
			l.bad(tomlpos.Join(t.path, "mac"), "%v", err)
		}
		b.MAC = m
	}
	l.done(t)
	return b
}

// crossBackends checks what involves more than one key of a VIP: duplicate
// backends, address families against the mode, the MTU, the table size.
// Checks that depend on the mode are skipped when the mode itself is wrong.
func (l *loader) crossBackends(t *table, v *VIPConfig, a *ApplianceConfig, modeOK bool) {
	at := func(key string) string { return tomlpos.Join(t.path, key) }
	bpath := func(i int, key string) string { return tomlpos.Join(tomlpos.Index(at("backend"), i), key) }
	addrs := make(map[netip.Addr]int)
	names := make(map[string]int)
	var need4, need6 []int // backends that lack a local address of their family
	var has6 bool
	prefixReported := false
	for i, b := range v.Backends {
		if !b.Addr.IsValid() {
			continue
		}
		if b.Addr.Is6() {
			has6 = true
		}
		if j, dup := addrs[b.Addr]; dup {
			l.bad(bpath(i, "address"), "%s is already backend[%d] of this VIP", b.Addr, j)
			continue
		}
		addrs[b.Addr] = i
		if j, dup := names[b.Name]; dup && b.Name != "" {
			l.bad(bpath(i, "name"), "%q is already the name of backend[%d] of this VIP", b.Name, j)
		}
		names[b.Name] = i
		if b.Addr == v.Addr {
			l.bad(bpath(i, "address"), "%s is the VIP's own address", b.Addr)
			continue
		}
		if !v.Addr.IsValid() || !modeOK {
			continue
		}
		switch {
		case v.Mode == ModeDSR:
			if b.Addr.Is4() != v.Addr.Is4() {
				l.bad(bpath(i, "address"), "%s is %s but the VIP is %s: dsr only reaches backends of the VIP's family (use ipip or gue)",
					b.Addr, familyName(b.Addr), familyName(v.Addr))
			}
		case v.SourcePrefix.IsValid():
			if v.SourcePrefix.Addr().Is4() != b.Addr.Is4() && !prefixReported {
				l.bad(at("source_prefix"), "%s is %s but backend[%d] (%s) is %s: all backends of a VIP with a source_prefix must be of its family",
					v.SourcePrefix, familyName(v.SourcePrefix.Addr()), i, b.Addr, familyName(b.Addr))
				prefixReported = true
			}
		case b.Addr.Is4() && !a.LocalIPv4.IsValid():
			need4 = append(need4, i)
		case b.Addr.Is6() && !a.LocalIPv6.IsValid():
			need6 = append(need6, i)
		}
	}
	for _, n := range []struct {
		list      []int
		family    string
		key, hint string
	}{{need4, "IPv4", "local_ipv4", "10.0.0.1"}, {need6, "IPv6", "local_ipv6", "fd00::1"}} {
		if len(n.list) > 0 {
			l.bad(bpath(n.list[0], "address"), "%s to %s backends needs an outer source address: set appliance.%s (like %q) or an %s source_prefix on the VIP",
				v.Mode, n.family, n.key, n.hint, n.family)
		}
	}
	if modeOK && v.Mode != ModeDSR && (has6 || v.SourcePrefix.Addr().Is6()) && v.MTU < cfgMinIPv6MTU && t.has("mtu") {
		l.bad(at("mtu"), "%d is below IPv6's minimum link MTU (%d), and this VIP sends IPv6 to its backends", v.MTU, cfgMinIPv6MTU)
	}
	if len(v.Backends) > int(v.TableSize) && hashing.ValidateTableSize(v.TableSize) == nil {
		l.bad(at("table_size"), "%d is smaller than the number of backends (%d): use a prime at least 100 times larger", v.TableSize, len(v.Backends))
	}
}

// crossVIPs checks what involves several VIPs, or VIPs and the appliance.
func (l *loader) crossVIPs(c *Config) {
	keys := make(map[VIPKey]int)
	names := make(map[string]int)
	for i, v := range c.VIPs {
		path := tomlpos.Index("vip", i)
		if v.Name != "" {
			if j, dup := names[v.Name]; dup {
				l.bad(tomlpos.Join(path, "name"), "%q is already the name of vip[%d]", v.Name, j)
			}
			names[v.Name] = i
		}
		if !l.vipKeyOK[i] {
			continue
		}
		if j, dup := keys[v.VIPKey]; dup {
			l.bad(tomlpos.Join(path, "address"), "vip %s is already defined by vip[%d] (%q): each address, protocol and port may appear once",
				v.VIPKey, j, c.VIPs[j].Name)
			continue
		}
		keys[v.VIPKey] = i
	}
	if n := c.Backends(); n > c.Appliance.MaxReals {
		l.bad("appliance.max_reals", "%d (VIP, backend) pairs do not fit max_reals = %d: raise it", n, c.Appliance.MaxReals)
	}
}

func checkIfName(s string) error {
	if s == "" || len(s) > unix.IFNAMSIZ-1 || s == "." || s == ".." ||
		strings.IndexFunc(s, func(r rune) bool { return r == '/' || r == ':' || unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0 {
		return fmt.Errorf("%q is not a valid interface name (1 to %d characters, no '/', ':' or spaces)", s, unix.IFNAMSIZ-1)
	}
	return nil
}

func checkVIPName(s string) error {
	ok := len(s) > 0 && len(s) <= cfgMaxNameLen
	for i := 0; ok && i < len(s); i++ {
		c := s[i]
		ok = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || i > 0 && (c == '-' || c == '_' || c == '.')
	}
	if !ok {
		return fmt.Errorf("%q: a name is 1 to %d letters, digits, '-', '_' or '.', starting with a letter or digit", s, cfgMaxNameLen)
	}
	return nil
}

// checkUnicast refuses addresses no packet can be forwarded to or from,
// and, with family 4 or 6, addresses of the other family.
func checkUnicast(a netip.Addr, family int) error {
	switch {
	case family == 4 && !a.Is4():
		return fmt.Errorf("%s is not an IPv4 address", a)
	case family == 6 && !a.Is6():
		return fmt.Errorf("%s is not an IPv6 address", a)
	case a.IsUnspecified():
		return fmt.Errorf("%s is the unspecified address", a)
	case a.IsMulticast():
		return fmt.Errorf("%s is a multicast address", a)
	case a.IsLoopback():
		return fmt.Errorf("%s is a loopback address", a)
	case a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return fmt.Errorf("%s is the broadcast address", a)
	}
	return nil
}

// parseUnicastMAC parses a 48-bit unicast MAC ("02:00:00:00:00:0b",
// "02-00-...", "0200.0000.000b"). The zero MAC is refused: in the model it
// means "resolve at run time", which leaving mac out already says.
func parseUnicastMAC(s string) (packet.MAC, error) {
	var m packet.MAC
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != len(m) {
		return m, fmt.Errorf("%q is not a 48-bit MAC address like \"02:00:00:00:00:0b\"", s)
	}
	copy(m[:], hw)
	switch {
	case m == packet.MAC{}:
		return packet.MAC{}, fmt.Errorf("%q is the zero MAC: leave mac out to resolve it at run time", s)
	case m[0]&1 != 0:
		return packet.MAC{}, fmt.Errorf("%q is a multicast or broadcast MAC", s)
	}
	return m, nil
}

func checkListen(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not host:port (like \"127.0.0.1:9181\" or \"[::1]:9181\")", s)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > math.MaxUint16 {
		return fmt.Errorf("%q: port %q is not a number in 1..65535", s, port)
	}
	if _, err := netip.ParseAddr(host); host == "" || err == nil {
		return nil
	}
	for _, r := range host {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.') {
			return fmt.Errorf("%q: %q is neither an IP address nor a host name", s, host)
		}
	}
	return nil
}

func familyName(a netip.Addr) string {
	if a.Is4() {
		return "IPv4"
	}
	return "IPv6"
}

func isPow2(n uint64) bool { return n != 0 && n&(n-1) == 0 }

// orList formats names as "a, b or c", quoted.
func orList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = strconv.Quote(n)
	}
	if len(q) == 1 {
		return q[0]
	}
	return strings.Join(q[:len(q)-1], ", ") + " or " + q[len(q)-1]
}

// cpuRanges formats sorted CPU numbers as "0-3,6".
func cpuRanges(cpus []int) string {
	var parts []string
	for i := 0; i < len(cpus); {
		j := i
		for j+1 < len(cpus) && cpus[j+1] == cpus[j]+1 {
			j++
		}
		if j == i {
			parts = append(parts, strconv.Itoa(cpus[i]))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", cpus[i], cpus[j]))
		}
		i = j + 1
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ",")
}

// fmtDuration drops the zero tails time.Duration.String leaves ("1m0s").
func fmtDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// suggest returns the known key closest to an unknown one, if it is close
// enough to be a typo.
func suggest(key string, known []string) string {
	best, bestDist := "", 3
	for _, k := range known {
		if d := editDistance(key, k); d < bestDist && d <= len(k)/2 {
			best, bestDist = k, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
