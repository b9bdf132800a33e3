package firmware

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"

	"github.com/cilium/ebpf"
)

// DecapConfig configures the decap program.
type DecapConfig struct {
	// VIPs are the inner destination addresses to decapsulate for:
	// tunnel packets to any other inner address pass untouched.
	VIPs []netip.Addr
	// GUEPort is the UDP destination port of GUE variant 1
	// encapsulation; 0 disables GUE. Fixed for the program's life (it is
	// compiled into the verified program as a constant).
	GUEPort uint16
	// MaxVIPs bounds the VIP set; the old and new sets of SetVIPs must
	// fit together. Default DefaultMaxVIPs.
	MaxVIPs int
	// AllowSources, if not empty, are the outer source prefixes (the
	// load balancers' addresses) allowed to tunnel to the VIPs: a tunnel
	// packet to a VIP from any other source passes untouched and is
	// counted as ForeignSource. Empty accepts every source. A list of
	// IPv4 prefixes only refuses every IPv6 outer source, and the other
	// way round.
	AllowSources []netip.Prefix
	// MaxAllowSources bounds the allow-list per address family; the old
	// and new lists of SetAllowSources must fit together. Default
	// DefaultMaxAllowSources.
	MaxAllowSources int
}

// DefaultMaxAllowSources is the default size of each family's outer source
// allow-list.
const DefaultMaxAllowSources = 1024

// ErrInvalidAllowSource reports an outer source prefix the decap program
// could not match as written.
var ErrInvalidAllowSource = errors.New("invalid allowed source prefix")

// DecapCounters are the decap program's counters summed over CPUs. Every
// frame is counted in exactly one of IPIP, IP6in4, IP4in6, IP6IP6, GUE,
// Passed, DroppedECN and Failed; NotVIP, Malformed and ForeignSource count
// subsets of Passed, CEMarked a subset of the decapsulated frames.
type DecapCounters struct {
	IPIP       uint64 // IPv4 in IPv4 (protocol 4) decapsulated
	IP6in4     uint64 // IPv6 in IPv4 (protocol 41) decapsulated
	IP4in6     uint64 // IPv4 in IPv6 (next header 4) decapsulated
	IP6IP6     uint64 // IPv6 in IPv6 (next header 41) decapsulated
	GUE        uint64 // GUE variant 1 decapsulated, either outer family
	Passed     uint64 // frames passed to the stack untouched
	NotVIP     uint64 // well-formed tunnel packets whose inner destination is not a VIP
	Malformed  uint64 // frames with broken outer or inner headers
	CEMarked   uint64 // inner packets marked CE from the outer header (RFC 6040)
	DroppedECN uint64 // outer CE over a not-ECT inner packet, dropped (RFC 6040)
	Failed     uint64 // frames the kernel would not let the program shorten, passed untouched
	// ForeignSource counts tunnel packets to a VIP whose outer source is
	// not in the allow-list, passed untouched.
	ForeignSource uint64
}

// Decapsulated sums the decapsulation counters.
func (c DecapCounters) Decapsulated() uint64 {
	return c.IPIP + c.IP6in4 + c.IP4in6 + c.IP6IP6 + c.GUE
}

// Decap is the loaded backend-side decap program and its maps. Its methods
// are safe for concurrent use. Close detaches every attachment made through
// it and frees the program and maps.
type Decap struct {
	mu          sync.Mutex
	objs        decapObjects
	guePort     uint16
	maxVIPs     int
	vips        map[netip.Addr]struct{}
	maxAllow    int
	allow       map[netip.Prefix]struct{} // what the tries hold
	allowOn     bool                      // what decap_config says
	attachments []*Attachment
	closed      bool
}

// LoadDecap loads the decap program configured by cfg. It sees no traffic
// until attached.
func LoadDecap(cfg DecapConfig) (*Decap, error) {
	if cfg.MaxVIPs == 0 {
		cfg.MaxVIPs = DefaultMaxVIPs
	}
	if cfg.MaxVIPs < 1 || cfg.MaxVIPs > 1<<20 {
		return nil, fmt.Errorf("load decap program: max vips %d out of range 1..1048576", cfg.MaxVIPs)
	}
	if cfg.MaxAllowSources == 0 {
		cfg.MaxAllowSources = DefaultMaxAllowSources
	}
	if cfg.MaxAllowSources < 1 || cfg.MaxAllowSources > 1<<20 {
		return nil, fmt.Errorf("load decap program: max allowed sources %d out of range 1..1048576", cfg.MaxAllowSources)
	}
	spec, err := loadDecap()
	if err != nil {
		return nil, fmt.Errorf("load decap program: %w", err)
	}
	spec.Maps[decapMapDecapVips].MaxEntries = uint32(cfg.MaxVIPs)
	spec.Maps[decapMapDecapSrc4].MaxEntries = uint32(cfg.MaxAllowSources)
	spec.Maps[decapMapDecapSrc6].MaxEntries = uint32(cfg.MaxAllowSources)
	if err := spec.Variables[decapVarGuePort].Set(htons(cfg.GUEPort)); err != nil {
		return nil, fmt.Errorf("load decap program: set gue port: %w", err)
	}
	d := &Decap{
		guePort: cfg.GUEPort, maxVIPs: cfg.MaxVIPs, vips: make(map[netip.Addr]struct{}),
		maxAllow: cfg.MaxAllowSources, allow: make(map[netip.Prefix]struct{}),
	}
	if err := spec.LoadAndAssign(&d.objs, nil); err != nil {
		return nil, fmt.Errorf("load decap program: %w", explainLoadError(err))
	}
	if err := d.SetVIPs(cfg.VIPs); err != nil {
		d.Close()
		return nil, fmt.Errorf("load decap program: %w", err)
	}
	if err := d.SetAllowSources(cfg.AllowSources); err != nil {
		d.Close()
		return nil, fmt.Errorf("load decap program: %w", err)
	}
	return d, nil
}

// Program returns the XDP program, for BPF_PROG_TEST_RUN and benchmarks. It
// is owned by d and invalid after d.Close.
func (d *Decap) Program() *ebpf.Program { return d.objs.WeirDecap }

// GUEPort reports the GUE port the program was loaded with (0: none).
func (d *Decap) GUEPort() uint16 { return d.guePort }

// normalizeDecapVIP validates a decap VIP address.
func normalizeDecapVIP(a netip.Addr) (netip.Addr, error) {
	if !a.IsValid() {
		return a, fmt.Errorf("%w: no address", ErrInvalidVIP)
	}
	if a.Zone() != "" {
		return a, fmt.Errorf("%w %v: address has a zone", ErrInvalidVIP, a)
	}
	a = a.Unmap()
	if a.IsUnspecified() {
		return a, fmt.Errorf("%w %v: unspecified address", ErrInvalidVIP, a)
	}
	return a, nil
}

func decapKey(a netip.Addr) decapDecapKey {
	var k decapDecapKey
	if a.Is4() {
		b := a.As4()
		copy(k.Addr[:], b[:])
		k.Family = familyV4
	} else {
		k.Addr = a.As16()
		k.Family = familyV6
	}
	return k
}

// SetVIPs makes vips the set of inner destinations to decapsulate for. New
// addresses are added before old ones are removed, so an address kept
// across the change is never missing. If it fails half-way, the set holds
// what was applied (VIPs reports it) and a retry finishes the job.
func (d *Decap) SetVIPs(vips []netip.Addr) error {
	want := make(map[netip.Addr]struct{}, len(vips))
	for _, a := range vips {
		n, err := normalizeDecapVIP(a)
		if err != nil {
			return fmt.Errorf("set decap vips: %w", err)
		}
		want[n] = struct{}{}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return fmt.Errorf("set decap vips: %w", ErrClosed)
	}
	var add, del []netip.Addr
	for a := range want {
		if _, ok := d.vips[a]; !ok {
			add = append(add, a)
		}
	}
	for a := range d.vips {
		if _, ok := want[a]; !ok {
			del = append(del, a)
		}
	}
	if peak := len(d.vips) + len(add); peak > d.maxVIPs {
		return fmt.Errorf("set decap vips: old and new sets together need %d entries, the table holds %d: raise MaxVIPs", peak, d.maxVIPs)
	}
	slices.SortFunc(add, netip.Addr.Compare)
	slices.SortFunc(del, netip.Addr.Compare)
	for _, a := range add {
		if err := d.objs.DecapVips.Update(decapKey(a), uint8(1), ebpf.UpdateAny); err != nil {
			return fmt.Errorf("set decap vips: add %v: %w", a, err)
		}
		d.vips[a] = struct{}{}
	}
	for _, a := range del {
		if err := d.objs.DecapVips.Delete(decapKey(a)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("set decap vips: remove %v: %w", a, err)
		}
		delete(d.vips, a)
	}
	return nil
}

// VIPs returns the set of inner destinations, sorted.
func (d *Decap) VIPs() []netip.Addr {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.SortedFunc(maps.Keys(d.vips), netip.Addr.Compare)
}

// normalizeAllowSource validates an outer source prefix. It refuses rather
// than guesses: a prefix with host bits set is more likely a typo than a
// request for the wider network it would match.
func normalizeAllowSource(p netip.Prefix) (netip.Prefix, error) {
	switch {
	case !p.IsValid():
		return p, fmt.Errorf("%w: no prefix, or a length out of range", ErrInvalidAllowSource)
	case p.Addr().Is4In6():
		return p, fmt.Errorf("%w %v: an IPv4-mapped IPv6 prefix matches no outer source: write IPv4 prefixes in IPv4", ErrInvalidAllowSource, p)
	case p != p.Masked():
		return p, fmt.Errorf("%w %v: address bits set past the prefix length (the network is %v)", ErrInvalidAllowSource, p, p.Masked())
	}
	return p, nil
}

func allowKey4(p netip.Prefix) decapSrc4Key {
	return decapSrc4Key{Prefixlen: uint32(p.Bits()), Addr: p.Addr().As4()}
}

func allowKey6(p netip.Prefix) decapSrc6Key {
	return decapSrc6Key{Prefixlen: uint32(p.Bits()), Addr: p.Addr().As16()}
}

// SetAllowSources makes prefixes the outer sources allowed to tunnel to the
// VIPs; an empty list accepts every source. New prefixes are added before
// old ones are removed, so a source allowed before and after is never
// refused; the list comes into force only once its prefixes are in, and
// goes out of force before they are removed. If it fails half-way, the
// program enforces the old list, the union of both, or (when the old list
// was empty) nothing, AllowSources reports the prefixes it holds, and a
// retry finishes the job.
func (d *Decap) SetAllowSources(prefixes []netip.Prefix) error {
	want := make(map[netip.Prefix]struct{}, len(prefixes))
	for _, p := range prefixes {
		n, err := normalizeAllowSource(p)
		if err != nil {
			return fmt.Errorf("set decap allowed sources: %w", err)
		}
		want[n] = struct{}{}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return fmt.Errorf("set decap allowed sources: %w", ErrClosed)
	}
	var add, del []netip.Prefix
	for p := range want {
		if _, ok := d.allow[p]; !ok {
			add = append(add, p)
		}
	}
	for p := range d.allow {
		if _, ok := want[p]; !ok {
			del = append(del, p)
		}
	}
	for _, is4 := range []bool{true, false} {
		peak := 0
		for p := range d.allow {
			if p.Addr().Is4() == is4 {
				peak++
			}
		}
		for _, p := range add {
			if p.Addr().Is4() == is4 {
				peak++
			}
		}
		if peak > d.maxAllow {
			fam := "IPv6"
			if is4 {
				fam = "IPv4"
			}
			return fmt.Errorf("set decap allowed sources: old and new %s lists together need %d entries, the table holds %d: raise MaxAllowSources", fam, peak, d.maxAllow)
		}
	}
	slices.SortFunc(add, netip.Prefix.Compare)
	slices.SortFunc(del, netip.Prefix.Compare)
	for _, p := range add {
		var err error
		if p.Addr().Is4() {
			err = d.objs.DecapSrc4.Update(allowKey4(p), uint8(1), ebpf.UpdateAny)
		} else {
			err = d.objs.DecapSrc6.Update(allowKey6(p), uint8(1), ebpf.UpdateAny)
		}
		if err != nil {
			return fmt.Errorf("set decap allowed sources: add %v: %w", p, err)
		}
		d.allow[p] = struct{}{}
	}
	if on := len(want) > 0; on != d.allowOn {
		if err := d.objs.DecapConfig.Update(uint32(0), decapDecapConfig{AllowSrc: boolU32(on)}, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("set decap allowed sources: switch the list %s: %w", onOff(on), err)
		}
		d.allowOn = on
	}
	for _, p := range del {
		var err error
		if p.Addr().Is4() {
			err = d.objs.DecapSrc4.Delete(allowKey4(p))
		} else {
			err = d.objs.DecapSrc6.Delete(allowKey6(p))
		}
		if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("set decap allowed sources: remove %v: %w", p, err)
		}
		delete(d.allow, p)
	}
	return nil
}

func boolU32(b bool) uint32 {
	if b {
		return 1
	}
	return 0
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// AllowSources returns the outer source allow-list, sorted; empty means
// every source is accepted.
func (d *Decap) AllowSources() []netip.Prefix {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.SortedFunc(maps.Keys(d.allow), netip.Prefix.Compare)
}

// Attach attaches the program to the interface ifindex through a bpf_link.
// The attachment lives until it is closed, d is closed, or the process
// exits.
func (d *Decap) Attach(ifindex int, mode AttachMode) (*Attachment, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, fmt.Errorf("attach decap program: %w", ErrClosed)
	}
	a, err := attachXDP(d.objs.WeirDecap, ifindex, mode)
	if err != nil {
		return nil, fmt.Errorf("decap program: %w", err)
	}
	d.attachments = append(d.attachments, a)
	return a, nil
}

// Counters reads the program's counters, summed over CPUs.
func (d *Decap) Counters() (DecapCounters, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return DecapCounters{}, fmt.Errorf("read decap counters: %w", ErrClosed)
	}
	var per []decapDecapCounters
	if err := d.objs.DecapStats.Lookup(uint32(0), &per); err != nil {
		return DecapCounters{}, fmt.Errorf("read decap counters: %w", err)
	}
	var c DecapCounters
	for _, p := range per {
		c.IPIP += p.Ipip
		c.IP6in4 += p.Ip6in4
		c.IP4in6 += p.Ip4in6
		c.IP6IP6 += p.Ip6ip6
		c.GUE += p.Gue
		c.Passed += p.Passed
		c.NotVIP += p.NotVip
		c.Malformed += p.Malformed
		c.CEMarked += p.CeMarked
		c.DroppedECN += p.DroppedEcn
		c.Failed += p.Failed
		c.ForeignSource += p.ForeignSrc
	}
	return c, nil
}

// Close detaches every attachment made through d and frees the program and
// its maps.
func (d *Decap) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	var errs []error
	for _, a := range d.attachments {
		errs = append(errs, a.Close())
	}
	d.attachments = nil
	errs = append(errs, d.objs.Close())
	return errors.Join(errs...)
}
