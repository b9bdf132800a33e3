package ring

import (
	"errors"
	"fmt"
	"net"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The ring layout and flag values are the kernel's ABI.
var (
	_ [unsafe.Sizeof(Desc{}) - unsafe.Sizeof(unix.XDPDesc{})]struct{}
	_ [unsafe.Sizeof(unix.XDPDesc{}) - unsafe.Sizeof(Desc{})]struct{}
	_ [needWakeupFlag - unix.XDP_RING_NEED_WAKEUP]struct{}
	_ [unix.XDP_RING_NEED_WAKEUP - needWakeupFlag]struct{}
)

// Open creates an AF_XDP socket, registers cfg.Umem with it, creates and maps
// the four rings, and binds it to cfg.Queue of cfg.Ifindex according to the
// zero-copy policy, with need_wakeup unless disabled. The socket is created
// in the network namespace of the calling thread. Whatever Open set up is
// undone if a later step fails.
//
// The kernel frees a queue a moment after its previous socket is closed (an
// RCU grace period, 15-25 ms), so Open retries a busy queue for up to a
// second before it reports EBUSY.
//
// The caller then puts FD() into the XSKMAP slot of the queue, fills the
// fill ring (Refill) and starts the worker.
func Open(cfg Config) (s *Socket, err error) {
	cfg, err = cfg.normalize()
	if err != nil {
		return nil, fmt.Errorf("ring: open ifindex %d queue %d: %w", cfg.Ifindex, cfg.Queue, err)
	}
	s = &Socket{
		fd:         -1,
		ifindex:    cfg.Ifindex,
		ifname:     ifaceName(cfg.Ifindex),
		queue:      cfg.Queue,
		needWakeup: !cfg.NoNeedWakeup,
		u:          cfg.Umem,
		scratch:    make([]uint64, max(cfg.FillSize, cfg.CompletionSize)),
	}
	where := fmt.Sprintf("%s queue %d", s.ifname, s.queue)

	// One cleanup chain: each step that succeeds pushes its undo.
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()

	fd, err := unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		hint := ""
		switch {
		case errors.Is(err, unix.EAFNOSUPPORT):
			hint = ": the kernel lacks AF_XDP (CONFIG_XDP_SOCKETS)"
		case errors.Is(err, unix.EPERM):
			hint = ": run as root or grant CAP_NET_RAW"
		}
		return nil, fmt.Errorf("ring: open %s: create AF_XDP socket: %w%s", where, err, hint)
	}
	registered := false
	undo = append(undo, func() {
		unix.Close(fd)
		if registered {
			cfg.Umem.Reclaim()
		}
	})

	if err := cfg.Umem.Register(fd); err != nil {
		return nil, fmt.Errorf("ring: open %s: %w", where, err)
	}
	registered = true

	for _, r := range []struct {
		name string
		opt  int
		size uint32
	}{
		{"fill", unix.XDP_UMEM_FILL_RING, cfg.FillSize},
		{"completion", unix.XDP_UMEM_COMPLETION_RING, cfg.CompletionSize},
		{"rx", unix.XDP_RX_RING, cfg.RXSize},
		{"tx", unix.XDP_TX_RING, cfg.TXSize},
	} {
		if err := unix.SetsockoptInt(fd, unix.SOL_XDP, r.opt, int(r.size)); err != nil {
			return nil, fmt.Errorf("ring: open %s: create %s ring of %d: %w", where, r.name, r.size, err)
		}
	}

	off, err := mmapOffsets(fd)
	if err != nil {
		return nil, fmt.Errorf("ring: open %s: %w", where, err)
	}
	mapRing := func(name string, pgoff int64, o unix.XDPRingOffset, n uint32, elem uintptr) ([]byte, error) {
		size := o.Desc + uint64(n)*uint64(elem)
		b, err := unix.Mmap(fd, pgoff, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
		if err != nil {
			return nil, fmt.Errorf("ring: open %s: map %s ring: %w", where, name, err)
		}
		undo = append(undo, func() { unix.Munmap(b) })
		s.maps = append(s.maps, b)
		return b, nil
	}
	fr, err := mapRing("fill", unix.XDP_UMEM_PGOFF_FILL_RING, off.Fr, cfg.FillSize, 8)
	if err != nil {
		return nil, err
	}
	cr, err := mapRing("completion", unix.XDP_UMEM_PGOFF_COMPLETION_RING, off.Cr, cfg.CompletionSize, 8)
	if err != nil {
		return nil, err
	}
	rx, err := mapRing("rx", unix.XDP_PGOFF_RX_RING, off.Rx, cfg.RXSize, unsafe.Sizeof(Desc{}))
	if err != nil {
		return nil, err
	}
	tx, err := mapRing("tx", unix.XDP_PGOFF_TX_RING, off.Tx, cfg.TXSize, unsafe.Sizeof(Desc{}))
	if err != nil {
		return nil, err
	}

	if err := s.bind(fd, cfg.ZeroCopy); err != nil {
		return nil, err
	}

	opts, err := unix.GetsockoptInt(fd, unix.SOL_XDP, unix.XDP_OPTIONS)
	if err != nil {
		return nil, fmt.Errorf("ring: open %s: read XDP_OPTIONS: %w", where, err)
	}
	s.mode = ModeCopy
	if opts&unix.XDP_OPTIONS_ZEROCOPY != 0 {
		s.mode = ModeZeroCopy
	}
	if cfg.ZeroCopy == ZeroCopyRequire && s.mode != ModeZeroCopy {
		return nil, fmt.Errorf("ring: bind %s: the kernel granted copy mode although zero-copy was required: use zero-copy policy auto or never", where)
	}

	if cfg.TXBudget != 0 && s.mode == ModeCopy {
		switch err := unix.SetsockoptInt(fd, unix.SOL_XDP, unix.XDP_MAX_TX_SKB_BUDGET, int(cfg.TXBudget)); {
		case err == nil:
			s.txBudget = cfg.TXBudget
		case errors.Is(err, unix.ENOPROTOOPT):
			// Before Linux 6.17: the kernel keeps its budget of 32.
		default:
			return nil, fmt.Errorf("ring: open %s: set tx budget %d: %w", where, cfg.TXBudget, err)
		}
	}

	s.fill = FillQueue{r: newProducer(ringSlice[uint64](fr, off.Fr.Desc, cfg.FillSize), ringWords(fr, off.Fr)), u: cfg.Umem}
	s.comp = CompletionQueue{r: newConsumer(ringSlice[uint64](cr, off.Cr.Desc, cfg.CompletionSize), ringWords(cr, off.Cr)), u: cfg.Umem}
	s.rx = RXQueue{r: newConsumer(ringSlice[Desc](rx, off.Rx.Desc, cfg.RXSize), ringWords(rx, off.Rx)), u: cfg.Umem}
	s.tx = TXQueue{r: newProducer(ringSlice[Desc](tx, off.Tx.Desc, cfg.TXSize), ringWords(tx, off.Tx)), u: cfg.Umem}
	s.fd = fd
	return s, nil
}

// bind binds fd according to the zero-copy policy. With ZeroCopyAuto a
// refused zero-copy bind is retried in copy mode and the refusal kept in
// s.zcErr; a busy queue or a missing device fails at once. If copy mode
// fails too, its error is the one returned: it names the real problem.
func (s *Socket) bind(fd int, policy ZeroCopy) error {
	var flags uint16
	if s.needWakeup {
		flags |= unix.XDP_USE_NEED_WAKEUP
	}
	if policy == ZeroCopyNever {
		return s.bindOnce(fd, flags|unix.XDP_COPY)
	}
	err := s.bindOnce(fd, flags|unix.XDP_ZEROCOPY)
	if err == nil || policy == ZeroCopyRequire ||
		errors.Is(err, unix.EBUSY) || errors.Is(err, unix.ENODEV) {
		return err
	}
	s.zcErr = err
	return s.bindOnce(fd, flags|unix.XDP_COPY)
}

// rebindWait bounds how long bind retries EBUSY: the kernel releases a closed
// socket's claim on its queue after an RCU grace period, from a work queue
// (measured: 15-25 ms after close on Linux 6.18).
const rebindWait = time.Second

func (s *Socket) bindOnce(fd int, flags uint16) error {
	sa := &unix.SockaddrXDP{Flags: flags, Ifindex: uint32(s.ifindex), QueueID: s.queue}
	deadline := time.Now().Add(rebindWait)
	var err error
	for {
		if err = unix.Bind(fd, sa); err == nil {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	mode := "copy"
	if flags&unix.XDP_ZEROCOPY != 0 {
		mode = "zero-copy"
	}
	var hint string
	switch {
	case errors.Is(err, unix.EBUSY):
		hint = "another AF_XDP socket is bound to this queue (another weir instance, or a socket not yet closed)"
	case errors.Is(err, unix.EOPNOTSUPP) && flags&unix.XDP_ZEROCOPY != 0:
		hint = "the driver has no zero-copy AF_XDP support (veth never has): use zero-copy policy auto or never"
	case errors.Is(err, unix.ENODEV):
		hint = fmt.Sprintf("no interface with index %d in this network namespace", s.ifindex)
	case errors.Is(err, unix.EINVAL):
		hint = "the queue does not exist on this interface: use a queue below its channel count (ethtool -l)"
	case errors.Is(err, unix.ENETDOWN):
		hint = "the interface is down: bring it up first"
	}
	if hint != "" {
		return fmt.Errorf("ring: bind %s queue %d in %s mode: %w: %s", s.ifname, s.queue, mode, err, hint)
	}
	return fmt.Errorf("ring: bind %s queue %d in %s mode: %w", s.ifname, s.queue, mode, err)
}

func mmapOffsets(fd int) (unix.XDPMmapOffsets, error) {
	var off unix.XDPMmapOffsets
	n := uint32(unsafe.Sizeof(off))
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_XDP, unix.XDP_MMAP_OFFSETS,
		uintptr(unsafe.Pointer(&off)), uintptr(unsafe.Pointer(&n)), 0)
	if errno != 0 {
		return off, fmt.Errorf("read XDP_MMAP_OFFSETS: %w", errno)
	}
	if n != uint32(unsafe.Sizeof(off)) {
		return off, errors.New("read XDP_MMAP_OFFSETS: the kernel has no ring flags (need_wakeup needs Linux 5.4 or later)")
	}
	return off, nil
}

// ringWords returns the shared producer, consumer and flags words of a
// mapped ring.
func ringWords(b []byte, o unix.XDPRingOffset) shared {
	return shared{
		prod:  (*uint32)(unsafe.Pointer(&b[o.Producer])),
		cons:  (*uint32)(unsafe.Pointer(&b[o.Consumer])),
		flags: (*uint32)(unsafe.Pointer(&b[o.Flags])),
	}
}

// ringSlice views the n slots at byte offset off of a mapped ring as a []T.
func ringSlice[T any](b []byte, off uint64, n uint32) []T {
	var zero T
	if off+uint64(n)*uint64(unsafe.Sizeof(zero)) > uint64(len(b)) {
		panic("ring: mapped ring smaller than its slots")
	}
	return unsafe.Slice((*T)(unsafe.Pointer(&b[off])), n)
}

func ifaceName(ifindex int) string {
	if ifi, err := net.InterfaceByIndex(ifindex); err == nil {
		return ifi.Name
	}
	return fmt.Sprintf("ifindex %d", ifindex)
}

// release unmaps the rings and closes the socket. The kernel keeps the socket
// alive while any ring is mapped, so both are needed before the queue can be
// bound again.
func (s *Socket) release() error {
	var errs []error
	for _, b := range s.maps {
		if err := unix.Munmap(b); err != nil {
			errs = append(errs, fmt.Errorf("unmap ring: %w", err))
		}
	}
	s.maps = nil
	if s.fd >= 0 {
		if err := unix.Close(s.fd); err != nil {
			errs = append(errs, fmt.Errorf("close socket: %w", err))
		}
	}
	return errors.Join(errs...)
}

// KickTX asks the kernel to transmit from the TX ring (sendto with
// MSG_DONTWAIT). EAGAIN, EBUSY, ENOBUFS and ENETDOWN mean "not now": they are
// counted in Stats.KickRetryable and return nil. Other errors (the socket is
// not bound, or closed) are returned.
func (s *Socket) KickTX() error {
	if s.closed.Load() {
		return ErrClosed
	}
	s.kicks.Add(1)
	if s.sim != nil {
		return nil // in-memory rings: the SimKernel polls
	}
	_, _, errno := unix.Syscall6(unix.SYS_SENDTO, uintptr(s.fd), 0, 0, unix.MSG_DONTWAIT, 0, 0)
	switch errno {
	case 0:
		return nil
	case unix.EAGAIN, unix.EBUSY, unix.ENOBUFS, unix.ENETDOWN:
		s.kickRetryable.Add(1)
		return nil
	}
	return fmt.Errorf("ring: kick tx on %s queue %d: %w", s.ifname, s.queue, errno)
}

// WakeupRX wakes a driver that sleeps on the fill ring (recvfrom with
// MSG_DONTWAIT), and does nothing unless NeedWakeupFill. Call it after
// refilling.
func (s *Socket) WakeupRX() error {
	if s.closed.Load() {
		return ErrClosed
	}
	if s.sim != nil || !s.NeedWakeupFill() {
		return nil
	}
	s.rxWakeups.Add(1)
	_, _, errno := unix.Syscall6(unix.SYS_RECVFROM, uintptr(s.fd), 0, 0, unix.MSG_DONTWAIT, 0, 0)
	switch errno {
	case 0, unix.EAGAIN, unix.EBUSY, unix.ENOBUFS, unix.ENETDOWN:
		return nil
	}
	return fmt.Errorf("ring: wake up rx on %s queue %d: %w", s.ifname, s.queue, errno)
}

// Wait blocks until the RX ring holds descriptors or timeout passes (a
// timeout of zero or less only checks), for a worker with nothing to do. It
// reports whether the RX ring is readable. In copy mode poll also transmits
// pending TX descriptors.
func (s *Socket) Wait(timeout time.Duration) (bool, error) {
	if s.closed.Load() {
		return false, ErrClosed
	}
	timeout = max(timeout, 0)
	if s.sim != nil {
		return s.sim.wait(s, timeout), nil
	}
	fds := [1]unix.PollFd{{Fd: int32(s.fd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds[:], int(timeout/time.Millisecond))
	if err != nil && !errors.Is(err, unix.EINTR) {
		return false, fmt.Errorf("ring: poll %s queue %d: %w", s.ifname, s.queue, err)
	}
	return n > 0 && fds[0].Revents&unix.POLLIN != 0, nil
}

// Stats returns the kernel's counters for the socket (XDP_STATISTICS) and
// the user-space ones. Any goroutine may call it.
func (s *Socket) Stats() (Stats, error) {
	st := Stats{
		Kicks:         s.kicks.Load(),
		KickRetryable: s.kickRetryable.Load(),
		RXWakeups:     s.rxWakeups.Load(),
	}
	if s.sim != nil {
		s.sim.stats(&st)
		return st, nil
	}
	// Close may run on the worker meanwhile: hold the fd open while using it.
	s.life.RLock()
	defer s.life.RUnlock()
	if s.closed.Load() {
		return st, ErrClosed
	}
	var ks unix.XDPStatistics
	n := uint32(unsafe.Sizeof(ks))
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(s.fd), unix.SOL_XDP, unix.XDP_STATISTICS,
		uintptr(unsafe.Pointer(&ks)), uintptr(unsafe.Pointer(&n)), 0)
	if errno != 0 {
		return st, fmt.Errorf("ring: read statistics of %s queue %d: %w", s.ifname, s.queue, errno)
	}
	st.RXDropped = ks.Rx_dropped
	st.RXInvalidDescs = ks.Rx_invalid_descs
	st.TXInvalidDescs = ks.Tx_invalid_descs
	st.RXRingFull = ks.Rx_ring_full
	st.RXFillRingEmptyDescs = ks.Rx_fill_ring_empty_descs
	st.TXRingEmptyDescs = ks.Tx_ring_empty_descs
	return st, nil
}
