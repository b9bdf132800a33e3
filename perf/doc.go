// Package perf is weir's benchmark mode: it measures what weir forwards and
// how that compares with the best the kernel can do on the same path, in
// the same run, so that anyone can reproduce the figures on their own box.
//
// # Benchmarks
//
// RunPipeline times the forwarding decision alone (appliance.Forwarder's
// ForwardBatch, in batches of the worker's default size) in memory, on one
// pinned core: synthetic TCP frames for every mode (dsr, ipip, gue) and
// family, of a given size, spread over a number of established flows, with
// a share of packets that open new flows. Runs are interleaved over the
// cases (round after round, each case set up afresh and timed once), and
// each case reports the median with the spread. Nothing but the frames'
// Ethernet header and client address is rewritten between batches.
//
// RunRings runs weir's worker loop (the one in appliance/worker.go:
// recycle completions, refill, take a batch off the RX ring, ForwardBatch,
// fill the TX ring, kick) over the real ring and umem code, against
// ring.SimKernel on another core, which copies packets into fill-ring frames
// and completes TX descriptors as fast as it can: what user space sustains
// when the kernel is not the limit (a zero-copy NIC).
//
// RunE2E builds a lab.Pair (a generator namespace and an appliance
// namespace on one veth, GRO and checksum offload off) and measures, run
// after run interleaved, weir (appliance.Start: its real workers, AF_XDP
// sockets and redirect program, a DSR VIP whose backends carry the
// generator's MAC) and the reference: an XDP program on the same interface
// that rewrites the MACs the same way and sends the frame back with
// XDP_TX, the ceiling of this path. Traffic comes from a BPF generator
// under BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES, on its own
// pinned thread, which XDP_TXes its frames out of the generator's veth end,
// cycles through many flows (source address and port) and can pace itself
// to a fixed rate; a sink on the same veth end counts what comes back,
// checks the rewrite and records the one-way latency from a timestamp the
// generator wrote into the payload (both read bpf_ktime_get_ns) into a
// log-linear histogram. Full-rate runs give the throughputs and the loss;
// a bisection per system finds the highest rate with a loss below the
// target, where the latency is taken; a sweep of offered loads draws the
// throughput curve.
//
// A Report gathers any of these with the machine's description; it writes
// tables (WriteText), JSON (WriteJSON) and an SVG plot (WriteSVG).
//
// # BPF programs
//
// generator.c, sink.c and reference.c (with the shared perf.h) are compiled
// by bpf2go into the committed *_bpfel.go and *_bpfel.o (see gen.go); the
// histogram layout and the payload layout are mirrored in hist.go and
// frames.go. The programs attach through bpf_links, so they go away with
// the process.
//
// # Lifetime and privileges
//
// The functions own everything they create: RunE2E removes its namespaces,
// links and programs before it returns, also on error or cancellation, and
// RunRings closes its UMEM. Pinned threads are locked and never unlocked,
// so they end with their goroutine and their affinity (or namespace) never
// reaches other goroutines. RunPipeline and RunRings need no privileges;
// RunE2E needs root (namespaces, BPF, AF_XDP) and two CPUs.
package perf
