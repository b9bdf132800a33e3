package perf

import (
	"errors"
	"fmt"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/weirlb/weir/packet"
)

// bpfTestXDPLiveFrames is BPF_F_TEST_XDP_LIVE_FRAMES: BPF_PROG_TEST_RUN
// honours the program's verdict and XDP_TX sends the frame out of the
// context's ingress interface.
const bpfTestXDPLiveFrames = 1 << 1

// xdpMD is struct xdp_md as BPF_PROG_TEST_RUN takes it for a context: the
// interface and RX queue the frames appear to arrive on.
type xdpMD struct {
	Data, DataEnd, DataMeta      uint32
	IngressIfindex, RxQueueIndex uint32
	EgressIfindex                uint32
}

// generator is the loaded traffic generator (generator.c).
type generator struct {
	objs generatorObjects
}

func newGenerator() (*generator, error) {
	g := &generator{}
	if err := loadGeneratorObjects(&g.objs, nil); err != nil {
		return nil, fmt.Errorf("load generator program: %w", err)
	}
	return g, nil
}

func (g *generator) close() error { return g.objs.Close() }

// configure sets what the next frames look like and how fast they go, and
// resets the sending state and counters.
func (g *generator) configure(cfg generatorGenConfig) error {
	if err := g.objs.GenConfig.Put(uint32(0), &cfg); err != nil {
		return fmt.Errorf("generator config: %w", err)
	}
	if err := g.objs.GenState.Put(uint32(0), make([]generatorGenState, possibleCPUs())); err != nil {
		return fmt.Errorf("reset generator state: %w", err)
	}
	return nil
}

// genCounters are the generator's counters summed over CPUs, and the
// window in which it sent (bpf_ktime_get_ns, CLOCK_MONOTONIC).
type genCounters struct {
	Sent, Held      uint64
	FirstNs, LastNs uint64
}

// window is the time from the first frame sent to the last.
func (c genCounters) window() time.Duration {
	if c.Sent < 2 || c.LastNs <= c.FirstNs {
		return 0
	}
	return time.Duration(c.LastNs - c.FirstNs)
}

func (g *generator) counters() (genCounters, error) {
	var c genCounters
	var per []generatorGenState
	if err := g.objs.GenState.Lookup(uint32(0), &per); err != nil {
		return c, fmt.Errorf("read generator state: %w", err)
	}
	for _, s := range per {
		if s.Sent == 0 {
			continue
		}
		if c.Sent == 0 || s.FirstNs < c.FirstNs {
			c.FirstNs = s.FirstNs
		}
		c.LastNs = max(c.LastNs, s.LastNs)
		c.Sent += s.Sent
		c.Held += s.Held
	}
	return c, nil
}

// run runs the program repeat times over frame in live-frames mode, as if
// the frames arrived on queue 0 of ifindex, so XDP_TX sends them out of it.
// The calling thread must be in the interface's network namespace. batch is
// how many frames the kernel prepares and flushes at a time.
func (g *generator) run(frame []byte, ifindex int, repeat, batch uint32) (time.Duration, error) {
	t0 := time.Now()
	_, err := g.objs.WeirPerfGen.Run(&ebpf.RunOptions{
		Data:      frame,
		Context:   xdpMD{DataEnd: uint32(len(frame)), IngressIfindex: uint32(ifindex)},
		Repeat:    repeat,
		Flags:     bpfTestXDPLiveFrames,
		BatchSize: batch,
	})
	if err != nil {
		return 0, fmt.Errorf("generator test run: %w", err)
	}
	return time.Since(t0), nil
}

// possibleCPUs is the number of per-CPU slots in the values of per-CPU
// maps.
func possibleCPUs() int {
	n, err := ebpf.PossibleCPU()
	if err != nil || n < 1 {
		return 1
	}
	return n
}

// sinkReading is what the sink saw since its last reset, summed over CPUs.
type sinkReading struct {
	Received, Bytes, WrongMAC, Other, ClockSkew uint64
	Latency                                     Histogram
}

// sink is the loaded sink (sink.c).
type sink struct {
	objs sinkObjects
	link link.Link
}

// newSink loads the sink for frames rewritten to wantDst.
func newSink(wantDst packet.MAC) (*sink, error) {
	spec, err := loadSink()
	if err != nil {
		return nil, fmt.Errorf("load sink program: %w", err)
	}
	if err := spec.Variables[sinkVarWantDst].Set(wantDst); err != nil {
		return nil, fmt.Errorf("load sink program: %w", err)
	}
	s := &sink{}
	if err := spec.LoadAndAssign(&s.objs, nil); err != nil {
		return nil, fmt.Errorf("load sink program: %w", err)
	}
	return s, nil
}

// attach attaches the sink in native mode to ifindex, in the calling
// thread's network namespace.
func (s *sink) attach(ifindex int) error {
	l, err := attachXDP(s.objs.WeirPerfSink, ifindex)
	if err != nil {
		return fmt.Errorf("attach sink: %w", err)
	}
	s.link = l
	return nil
}

func (s *sink) close() error {
	var errs []error
	if s.link != nil {
		errs = append(errs, s.link.Close())
	}
	errs = append(errs, s.objs.Close())
	return errors.Join(errs...)
}

// reset zeroes the counters and the histogram.
func (s *sink) reset() error {
	n := possibleCPUs()
	if err := s.objs.SinkCounters.Put(uint32(0), make([]sinkSinkCounters, n)); err != nil {
		return fmt.Errorf("reset sink counters: %w", err)
	}
	if err := s.objs.Latency.Put(uint32(0), make([]sinkLatency, n)); err != nil {
		return fmt.Errorf("reset sink histogram: %w", err)
	}
	return nil
}

func (s *sink) read() (sinkReading, error) {
	var r sinkReading
	var cs []sinkSinkCounters
	if err := s.objs.SinkCounters.Lookup(uint32(0), &cs); err != nil {
		return r, fmt.Errorf("read sink counters: %w", err)
	}
	for _, c := range cs {
		r.Received += c.Received
		r.Bytes += c.Bytes
		r.WrongMAC += c.WrongMac
		r.Other += c.Other
		r.ClockSkew += c.ClockSkew
	}
	var ls []sinkLatency
	if err := s.objs.Latency.Lookup(uint32(0), &ls); err != nil {
		return r, fmt.Errorf("read sink histogram: %w", err)
	}
	for i := range ls {
		l := &ls[i]
		r.Latency.add(l.Count, l.SumNs, l.MaxNs, l.Bucket[:])
	}
	return r, nil
}

// reference is the loaded in-kernel reference forwarder (reference.c).
type reference struct {
	objs referenceObjects
	link link.Link
}

// newReference loads the reference forwarder for frames to backendMAC
// sent from localMAC.
func newReference(backendMAC, localMAC packet.MAC) (*reference, error) {
	spec, err := loadReference()
	if err != nil {
		return nil, fmt.Errorf("load reference program: %w", err)
	}
	if err := spec.Variables[referenceVarBackendMac].Set(backendMAC); err != nil {
		return nil, fmt.Errorf("load reference program: %w", err)
	}
	if err := spec.Variables[referenceVarLocalMac].Set(localMAC); err != nil {
		return nil, fmt.Errorf("load reference program: %w", err)
	}
	r := &reference{}
	if err := spec.LoadAndAssign(&r.objs, nil); err != nil {
		return nil, fmt.Errorf("load reference program: %w", err)
	}
	return r, nil
}

// attach attaches the reference in native mode to ifindex, in the calling
// thread's network namespace.
func (r *reference) attach(ifindex int) error {
	l, err := attachXDP(r.objs.WeirPerfReference, ifindex)
	if err != nil {
		return fmt.Errorf("attach reference forwarder: %w", err)
	}
	r.link = l
	return nil
}

// detach detaches the program; it is safe to call when not attached.
func (r *reference) detach() error {
	if r.link == nil {
		return nil
	}
	err := r.link.Close()
	r.link = nil
	if err != nil {
		return fmt.Errorf("detach reference forwarder: %w", err)
	}
	return nil
}

func (r *reference) close() error { return errors.Join(r.detach(), r.objs.Close()) }

// forwarded returns the frames the reference sent, summed over CPUs.
func (r *reference) forwarded() (uint64, error) {
	var cs []referenceRefCounters
	if err := r.objs.RefCounters.Lookup(uint32(0), &cs); err != nil {
		return 0, fmt.Errorf("read reference counters: %w", err)
	}
	var n uint64
	for _, c := range cs {
		n += c.Forwarded
	}
	return n, nil
}

// attachXDP attaches prog to ifindex in native (driver) mode through a
// bpf_link, which the kernel removes when the process exits.
func attachXDP(prog *ebpf.Program, ifindex int) (link.Link, error) {
	return link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifindex, Flags: link.XDPDriverMode})
}
