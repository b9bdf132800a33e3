package firmware

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Defaults for RedirectConfig's zero fields.
const (
	DefaultMaxQueues = 64
	DefaultMaxVIPs   = 4096
)

// ErrClosed reports use of a Redirect or Decap after Close.
var ErrClosed = errors.New("firmware object closed")

// RedirectConfig sizes the redirect program's maps. Zero fields take the
// defaults.
type RedirectConfig struct {
	// MaxQueues is the size of the socket map: queues 0..MaxQueues-1 can
	// get an AF_XDP socket. Frames on a higher queue are dropped as
	// having no socket. Default DefaultMaxQueues.
	MaxQueues int
	// MaxVIPs bounds the VIP set. During SetVIPs the old and new sets are
	// both present for a moment, so their union must fit. Default
	// DefaultMaxVIPs.
	MaxVIPs int
}

// RedirectCounters are the redirect program's counters summed over CPUs.
// Every frame is counted in exactly one of Redirected, Passed,
// DroppedNoSocket and DroppedMalformed; the other fields count subsets.
type RedirectCounters struct {
	Redirected       uint64 // VIP frames handed to an AF_XDP socket
	Passed           uint64 // frames given to the host stack
	DroppedNoSocket  uint64 // VIP frames on a queue without a socket
	DroppedMalformed uint64 // malformed frames addressed to a VIP address
	Malformed        uint64 // frames with truncated or invalid headers, passed or dropped
	ICMPErrors       uint64 // ICMP errors quoting a VIP flow (redirected or dropped without socket)
	Fragments        uint64 // IP fragments of VIP traffic (redirected or dropped without socket)
}

// Redirect is the loaded VIP redirect program and its maps. Its methods are
// safe for concurrent use. Close detaches every attachment made through it
// and frees the program and maps.
type Redirect struct {
	mu          sync.Mutex
	objs        redirectObjects
	maxQueues   int
	maxVIPs     int
	vips        map[VIP]struct{}
	addrRefs    map[redirectVipKey]uint32 // mirror of the vip_addrs map
	attachments []*Attachment
	closed      bool
}

// LoadRedirect loads the redirect program with the default map sizes.
func LoadRedirect() (*Redirect, error) {
	return LoadRedirectConfig(RedirectConfig{})
}

// LoadRedirectConfig loads the redirect program with cfg's map sizes. The
// program is verified and ready, with an empty VIP set and no sockets; it
// sees no traffic until attached.
func LoadRedirectConfig(cfg RedirectConfig) (*Redirect, error) {
	if cfg.MaxQueues == 0 {
		cfg.MaxQueues = DefaultMaxQueues
	}
	if cfg.MaxVIPs == 0 {
		cfg.MaxVIPs = DefaultMaxVIPs
	}
	if cfg.MaxQueues < 1 || cfg.MaxQueues > 1<<16 {
		return nil, fmt.Errorf("load redirect program: max queues %d out of range 1..65536", cfg.MaxQueues)
	}
	if cfg.MaxVIPs < 1 || cfg.MaxVIPs > 1<<20 {
		return nil, fmt.Errorf("load redirect program: max vips %d out of range 1..1048576", cfg.MaxVIPs)
	}
	spec, err := loadRedirect()
	if err != nil {
		return nil, fmt.Errorf("load redirect program: %w", err)
	}
	spec.Maps[redirectMapXsks].MaxEntries = uint32(cfg.MaxQueues)
	spec.Maps[redirectMapVips].MaxEntries = uint32(cfg.MaxVIPs)
	// Each VIP needs at most two vip_addrs entries: its protocol and the
	// address as a whole.
	spec.Maps[redirectMapVipAddrs].MaxEntries = uint32(2 * cfg.MaxVIPs)

	r := &Redirect{
		maxQueues: cfg.MaxQueues,
		maxVIPs:   cfg.MaxVIPs,
		vips:      make(map[VIP]struct{}),
		addrRefs:  make(map[redirectVipKey]uint32),
	}
	if err := spec.LoadAndAssign(&r.objs, nil); err != nil {
		return nil, fmt.Errorf("load redirect program: %w", explainLoadError(err))
	}
	return r, nil
}

// Program returns the XDP program, for BPF_PROG_TEST_RUN and benchmarks. It
// is owned by r and invalid after r.Close.
func (r *Redirect) Program() *ebpf.Program { return r.objs.WeirRedirect }

// MaxQueues reports the size of the socket map.
func (r *Redirect) MaxQueues() int { return r.maxQueues }

// AddVIP adds v to the VIP set; adding a present VIP does nothing.
func (r *Redirect) AddVIP(v VIP) error {
	v, err := v.normalize()
	if err != nil {
		return fmt.Errorf("add vip: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return fmt.Errorf("add vip %v: %w", v, ErrClosed)
	}
	if _, ok := r.vips[v]; ok {
		return nil
	}
	if len(r.vips) >= r.maxVIPs {
		return fmt.Errorf("add vip %v: vip table full (%d entries): raise MaxVIPs", v, r.maxVIPs)
	}
	return r.addLocked(v)
}

// RemoveVIP removes v from the VIP set; removing an absent VIP does nothing.
// Frames of v's flows go to the host stack from then on.
func (r *Redirect) RemoveVIP(v VIP) error {
	v, err := v.normalize()
	if err != nil {
		return fmt.Errorf("remove vip: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return fmt.Errorf("remove vip %v: %w", v, ErrClosed)
	}
	if _, ok := r.vips[v]; !ok {
		return nil
	}
	return r.removeLocked(v)
}

// SetVIPs makes vips the VIP set. It adds the new VIPs before it removes the
// old ones, so a VIP present in both sets never stops matching and no frame
// of a kept service leaks to the host stack during a reload. If it fails
// half-way, the set holds what was applied (VIPs reports it) and a retry
// finishes the job.
func (r *Redirect) SetVIPs(vips []VIP) error {
	want := make(map[VIP]struct{}, len(vips))
	for _, v := range vips {
		n, err := v.normalize()
		if err != nil {
			return fmt.Errorf("set vips: %w", err)
		}
		want[n] = struct{}{}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return fmt.Errorf("set vips: %w", ErrClosed)
	}

	var add, del []VIP
	for v := range want {
		if _, ok := r.vips[v]; !ok {
			add = append(add, v)
		}
	}
	for v := range r.vips {
		if _, ok := want[v]; !ok {
			del = append(del, v)
		}
	}
	if peak := len(r.vips) + len(add); peak > r.maxVIPs {
		return fmt.Errorf("set vips: old and new sets together need %d entries, the table holds %d: raise MaxVIPs", peak, r.maxVIPs)
	}
	// Sorted so that a failure leaves a predictable state.
	slices.SortFunc(add, compareVIP)
	slices.SortFunc(del, compareVIP)
	for _, v := range add {
		if err := r.addLocked(v); err != nil {
			return fmt.Errorf("set vips: %w", err)
		}
	}
	for _, v := range del {
		if err := r.removeLocked(v); err != nil {
			return fmt.Errorf("set vips: %w", err)
		}
	}
	return nil
}

// VIPs returns the VIP set, sorted.
func (r *Redirect) VIPs() []VIP {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.SortedFunc(maps.Keys(r.vips), compareVIP)
}

// addLocked installs v: its vip_addrs references first, so that fragments
// and the vips entry never disagree about an address, then the vips entry.
// On failure it undoes what it did.
func (r *Redirect) addLocked(v VIP) error {
	keys := [2]redirectVipKey{addrKey(v.Addr, v.Proto), addrKey(v.Addr, 0)}
	for i, k := range keys {
		if err := r.objs.VipAddrs.Update(k, r.addrRefs[k]+1, ebpf.UpdateAny); err != nil {
			for _, done := range keys[:i] {
				r.addrRefs[done]--
				_ = r.syncAddrLocked(done) // best effort; the error below says what failed
			}
			return fmt.Errorf("add vip %v: update vip_addrs: %w", v, err)
		}
		r.addrRefs[k]++
	}
	if err := r.objs.Vips.Update(vipKey(v), uint8(1), ebpf.UpdateAny); err != nil {
		_ = r.releaseAddrsLocked(v) // best effort, as above
		return fmt.Errorf("add vip %v: update vips: %w", v, err)
	}
	r.vips[v] = struct{}{}
	return nil
}

// removeLocked removes v's vips entry, then drops its vip_addrs references.
func (r *Redirect) removeLocked(v VIP) error {
	if err := r.objs.Vips.Delete(vipKey(v)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("remove vip %v: delete from vips: %w", v, err)
	}
	delete(r.vips, v)
	if err := r.releaseAddrsLocked(v); err != nil {
		return fmt.Errorf("remove vip %v: %w", v, err)
	}
	return nil
}

// releaseAddrsLocked drops one reference of v on each of its vip_addrs keys.
func (r *Redirect) releaseAddrsLocked(v VIP) error {
	var errs []error
	for _, k := range [2]redirectVipKey{addrKey(v.Addr, v.Proto), addrKey(v.Addr, 0)} {
		if r.addrRefs[k] == 0 {
			continue
		}
		r.addrRefs[k]--
		if err := r.syncAddrLocked(k); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// syncAddrLocked writes the Go mirror's reference count of k to vip_addrs.
func (r *Redirect) syncAddrLocked(k redirectVipKey) error {
	n := r.addrRefs[k]
	if n == 0 {
		delete(r.addrRefs, k)
		if err := r.objs.VipAddrs.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete from vip_addrs: %w", err)
		}
		return nil
	}
	if err := r.objs.VipAddrs.Update(k, n, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("update vip_addrs: %w", err)
	}
	return nil
}

// SetSocket makes fd, a bound AF_XDP socket, the receiver of VIP frames
// arriving on RX queue queue. The socket must be bound to the same interface
// and queue, or the kernel drops the frames it is given.
func (r *Redirect) SetSocket(queue int, fd int) error {
	if queue < 0 || queue >= r.maxQueues {
		return fmt.Errorf("set socket for queue %d: queue out of range 0..%d (raise MaxQueues)", queue, r.maxQueues-1)
	}
	if fd < 0 {
		return fmt.Errorf("set socket for queue %d: invalid fd %d", queue, fd)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return fmt.Errorf("set socket for queue %d: %w", queue, ErrClosed)
	}
	if err := r.objs.Xsks.Update(uint32(queue), uint32(fd), ebpf.UpdateAny); err != nil {
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOTSOCK) {
			return fmt.Errorf("set socket for queue %d: fd %d is not a bound AF_XDP socket: %w", queue, fd, err)
		}
		return fmt.Errorf("set socket for queue %d: %w", queue, err)
	}
	return nil
}

// ClearSocket removes queue's socket: VIP frames on queue are dropped from
// then on. Clearing an empty queue does nothing.
func (r *Redirect) ClearSocket(queue int) error {
	if queue < 0 || queue >= r.maxQueues {
		return fmt.Errorf("clear socket for queue %d: queue out of range 0..%d", queue, r.maxQueues-1)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return fmt.Errorf("clear socket for queue %d: %w", queue, ErrClosed)
	}
	if err := r.objs.Xsks.Delete(uint32(queue)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("clear socket for queue %d: %w", queue, err)
	}
	return nil
}

// Attach attaches the program to the interface ifindex through a bpf_link.
// The attachment lives until it is closed, r is closed, or the process
// exits.
func (r *Redirect) Attach(ifindex int, mode AttachMode) (*Attachment, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, fmt.Errorf("attach redirect program: %w", ErrClosed)
	}
	a, err := attachXDP(r.objs.WeirRedirect, ifindex, mode)
	if err != nil {
		return nil, fmt.Errorf("redirect program: %w", err)
	}
	r.attachments = append(r.attachments, a)
	return a, nil
}

// Counters reads the program's counters, summed over CPUs.
func (r *Redirect) Counters() (RedirectCounters, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return RedirectCounters{}, fmt.Errorf("read redirect counters: %w", ErrClosed)
	}
	var per []redirectRedirectCounters
	if err := r.objs.Counters.Lookup(uint32(0), &per); err != nil {
		return RedirectCounters{}, fmt.Errorf("read redirect counters: %w", err)
	}
	var c RedirectCounters
	for _, p := range per {
		c.Redirected += p.Redirected
		c.Passed += p.Passed
		c.DroppedNoSocket += p.DroppedNoSocket
		c.DroppedMalformed += p.DroppedMalformed
		c.Malformed += p.Malformed
		c.ICMPErrors += p.IcmpErrors
		c.Fragments += p.Fragments
	}
	return c, nil
}

// Close detaches every attachment made through r and frees the program and
// its maps. Sockets stay open: they belong to the caller.
func (r *Redirect) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	var errs []error
	for _, a := range r.attachments {
		errs = append(errs, a.Close())
	}
	r.attachments = nil
	errs = append(errs, r.objs.Close())
	return errors.Join(errs...)
}

// explainLoadError adds the last lines of the verifier log to a load error:
// the rejected instruction and the verifier's reason are at the end.
func explainLoadError(err error) error {
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		return fmt.Errorf("%w\nverifier log tail: %-20v", err, ve)
	}
	return err
}
