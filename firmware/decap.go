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
}

// DecapCounters are the decap program's counters summed over CPUs. Every
// frame is counted in exactly one of IPIP, IP6in4, IP4in6, IP6IP6, GUE,
// Passed, DroppedECN and Failed; NotVIP and Malformed count subsets of
// Passed, CEMarked a subset of the decapsulated frames.
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
	spec, err := loadDecap()
	if err != nil {
		return nil, fmt.Errorf("load decap program: %w", err)
	}
	spec.Maps[decapMapDecapVips].MaxEntries = uint32(cfg.MaxVIPs)
	if err := spec.Variables[decapVarGuePort].Set(htons(cfg.GUEPort)); err != nil {
		return nil, fmt.Errorf("load decap program: set gue port: %w", err)
	}
	d := &Decap{guePort: cfg.GUEPort, maxVIPs: cfg.MaxVIPs, vips: make(map[netip.Addr]struct{})}
	if err := spec.LoadAndAssign(&d.objs, nil); err != nil {
		return nil, fmt.Errorf("load decap program: %w", explainLoadError(err))
	}
	if err := d.SetVIPs(cfg.VIPs); err != nil {
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
