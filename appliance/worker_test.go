package appliance

import (
	"context"
	"errors"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weirlb/weir/packet"
	"github.com/weirlb/weir/ring"
	"github.com/weirlb/weir/umem"
)

// workerRig is a worker over an in-memory socket, with the kernel side in
// the test's hands.
type workerRig struct {
	u    *umem.Umem
	sock *ring.Socket
	sim  *ring.SimKernel
	snap atomic.Pointer[Snapshot]
	w    *Worker
}

type rigSizes struct {
	frames, fill, rx, tx, comp uint32
	batch                      int
}

func newWorkerRig(tb testing.TB, sz rigSizes) *workerRig {
	tb.Helper()
	u, err := umem.New(umem.Config{FrameSize: 2048, FrameCount: sz.frames})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { u.Close() })
	sock, sim, err := ring.NewInMemory(ring.Config{Umem: u, FillSize: sz.fill, RXSize: sz.rx, TXSize: sz.tx, CompletionSize: sz.comp})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { sock.Close() })
	r := &workerRig{u: u, sock: sock, sim: sim}
	r.snap.Store(buildSnapshot(tb, allocModel(), newRegistry(tb), 1))
	fwd, err := NewForwarder(testFlowConfig(), 1024)
	if err != nil {
		tb.Fatal(err)
	}
	r.w, err = NewWorker(WorkerConfig{Queue: 3, CPU: -1, Socket: sock, Forwarder: fwd, Snapshot: &r.snap, Batch: sz.batch})
	if err != nil {
		tb.Fatal(err)
	}
	return r
}

// checkLedger fails unless every frame is accounted for and none is in hand.
func (r *workerRig) checkLedger(tb testing.TB) {
	tb.Helper()
	if err := r.u.Check(); err != nil {
		tb.Fatal(err)
	}
	if acc := r.u.Accounting(); acc.InHand != 0 {
		tb.Fatalf("frames in hand after a batch: %v", acc)
	}
}

// dsrFrames are n TCP frames of n flows to the 8-backend DSR VIP.
func dsrFrames(n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = frameOf(tcpPacket(client4, addr("192.0.2.100"), uint16(1024+i), 80, flagACK, 6))
	}
	return out
}

// The real loop over in-memory rings: forwarded frames leave rewritten,
// dropped ones are counted and their frames reused, the published stats say
// so, and when Run returns nothing is left in hand.
func TestWorkerRun(t *testing.T) {
	r := newWorkerRig(t, rigSizes{frames: 256, fill: 64, rx: 64, tx: 64, comp: 64, batch: 16})
	good := dsrFrames(40)
	bad := frameOf(tcpPacket(client4, addr("198.18.0.1"), 1, 80, flagACK, 6)) // no such VIP
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.w.Run(ctx) }()

	const rounds = 20
	var pkts [][]byte
	for range rounds {
		for i, g := range good {
			pkts = append(pkts, g)
			if i%4 == 0 {
				pkts = append(pkts, bad)
			}
		}
	}
	want := uint64(rounds * len(good))
	var sent, wrong uint64
	check := func(d ring.Desc, pkt []byte) {
		// DSR: to one of the VIP's backends, beMAC(1..8), from us.
		if dst := packet.MAC(pkt[0:6]); dst[5] < 1 || dst[5] > 8 || dst != beMAC(int(dst[5])) || packet.MAC(pkt[6:12]) != localMAC {
			wrong++
		}
		sent++
	}
	deadline := time.Now().Add(10 * time.Second)
	// The kernel delivers a prefix of what it is given, as much as the
	// fill and RX rings allow.
	for next := 0; next < len(pkts); {
		next += r.sim.Deliver(pkts[next:min(next+24, len(pkts))])
		r.sim.Transmit(64, check)
		if time.Now().After(deadline) {
			t.Fatal("the worker stopped taking packets")
		}
	}
	for sent < want && time.Now().Before(deadline) {
		r.sim.Transmit(64, check)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if sent != want || wrong != 0 {
		t.Fatalf("sent %d frames, want %d; %d not rewritten", sent, want, wrong)
	}
	st := r.w.Stats()
	c := &st.Counters
	if st.Queue != 3 || st.CPU != -1 || st.Batches == 0 {
		t.Errorf("stats %+v", st)
	}
	if c.RXPackets != uint64(len(pkts)) || c.TXPackets != want || c.Drops[DropUnknownVIP] != uint64(len(pkts))-want {
		t.Errorf("rx %d, tx %d, unknown VIP %d", c.RXPackets, c.TXPackets, c.Drops[DropUnknownVIP])
	}
	if st.Flows.Entries != len(good) || st.Ring.Kicks == 0 {
		t.Errorf("flows %+v, ring %+v", st.Flows, st.Ring)
	}
	r.checkLedger(t)
	if err := r.w.Run(context.Background()); err == nil {
		t.Error("a second Run was accepted")
	}
}

// A batch larger than the room on the TX ring, in slots that wrap around
// its end: what fits is sent in order, what does not is counted and its
// frames go back to the free stack, with the drops.
func TestWorkerTXRingFull(t *testing.T) {
	r := newWorkerRig(t, rigSizes{frames: 128, fill: 64, rx: 64, tx: 16, comp: 16, batch: 32})
	r.sock.Refill()
	good := dsrFrames(40)
	var sent []uint16 // client ports, in the order they left
	transmit := func() int {
		return r.sim.Transmit(64, func(d ring.Desc, pkt []byte) {
			if packet.MAC(pkt[6:12]) != localMAC {
				t.Errorf("frame %#x not rewritten", d.Addr)
			}
			sent = append(sent, uint16(pkt[14+20])<<8|uint16(pkt[14+21]))
		})
	}
	// 10 frames take TX slots 0..9.
	if n := r.sim.Deliver(good[:10]); n != 10 {
		t.Fatalf("delivered %d", n)
	}
	if n, _, err := r.w.poll(); n != 10 || err != nil {
		t.Fatalf("poll: %d, %v", n, err)
	}
	if got := transmit(); got != 10 {
		t.Fatalf("transmitted %d", got)
	}
	// 30 forwardable frames and two drops: 16 fit, in slots 10..15 and
	// 0..9, and 14 do not.
	pkts := append(good[10:40:40], frameOf(tcpPacket(client4, addr("198.18.0.1"), 1, 80, flagACK, 6)), make([]byte, 20))
	if n := r.sim.Deliver(pkts); n != 32 {
		t.Fatalf("delivered %d", n)
	}
	free := r.u.Available()
	if n, _, err := r.w.poll(); n != 32 || err != nil {
		t.Fatalf("poll: %d, %v", n, err)
	}
	if r.w.txRingFull != 14 || r.u.Accounting().KernelTX != 16 {
		t.Errorf("tx ring full %d, %v", r.w.txRingFull, r.u.Accounting())
	}
	// The 10 completions went back to the fill ring, 22 free frames
	// filled the rest of the 32 slots the batch emptied, and the 14 that
	// did not fit plus the 2 drops were freed.
	if got, want := r.u.Available(), free-22+16; got != want {
		t.Errorf("free frames %d, want %d", got, want)
	}
	r.checkLedger(t)
	if got := transmit(); got != 16 {
		t.Errorf("transmitted %d", got)
	}
	for i, port := range sent {
		if want := uint16(1024 + i); port != want {
			t.Fatalf("frame %d left with client port %d, want %d (sent %v)", i, port, want, sent)
		}
	}
	// The next turn takes the 16 completions; the fill ring is full, so
	// their frames go to the free stack.
	if n, _, err := r.w.poll(); n != 0 || err != nil {
		t.Fatalf("idle poll: %d, %v", n, err)
	}
	if acc := r.u.Accounting(); acc.KernelTX != 0 || acc.KernelRX != 64 {
		t.Errorf("after recycling: %v", acc)
	}
	r.checkLedger(t)
}

// One turn of the loop (recycle, refill, RX batch, ForwardBatch, TX, kick)
// allocates nothing.
func TestWorkerNoAllocs(t *testing.T) {
	r := newWorkerRig(t, rigSizes{frames: 512, fill: 128, rx: 128, tx: 128, comp: 128, batch: 64})
	r.sock.Refill()
	frames := dsrFrames(64)
	turn := func() {
		r.sim.Deliver(frames)
		if n, _, err := r.w.poll(); n != 64 || err != nil {
			t.Fatalf("poll: %d, %v", n, err)
		}
		r.sim.Transmit(128, nil)
	}
	turn()
	if n := testing.AllocsPerRun(200, turn); n != 0 {
		t.Errorf("%v allocations per batch", n)
	}
	r.checkLedger(t)
}

func TestNewWorkerRejects(t *testing.T) {
	r := newWorkerRig(t, rigSizes{frames: 64, fill: 16, rx: 16, tx: 16, comp: 16})
	fwd := r.w.fwd
	for name, cfg := range map[string]WorkerConfig{
		"no socket":    {Forwarder: fwd, Snapshot: &r.snap},
		"no forwarder": {Socket: r.sock, Snapshot: &r.snap},
		"no snapshot":  {Socket: r.sock, Forwarder: fwd},
		"batch":        {Socket: r.sock, Forwarder: fwd, Snapshot: &r.snap, Batch: MaxBatch + 1},
		"spin":         {Socket: r.sock, Forwarder: fwd, Snapshot: &r.snap, IdleSpin: MaxIdleSpin + 1},
		"spin < 0":     {Socket: r.sock, Forwarder: fwd, Snapshot: &r.snap, IdleSpin: -time.Microsecond},
	} {
		if _, err := NewWorker(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if r.w.batch != DefaultBatchSize {
		t.Errorf("batch %d, want the default %d", r.w.batch, DefaultBatchSize)
	}
	var empty atomic.Pointer[Snapshot]
	w, err := NewWorker(WorkerConfig{CPU: -1, Socket: r.sock, Forwarder: fwd, Snapshot: &empty})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Run(context.Background()); !errors.Is(err, errNoSnapshot) {
		t.Errorf("Run without a snapshot: %v", err)
	}
}

// BenchmarkWorker runs the worker's loop and the simulated kernel in turn on
// one goroutine: deliver a batch of 64-byte-payload DSR packets of 1024
// flows, one turn of the loop, transmit. Deterministic (no second core, no
// cache-line traffic between cores), so instruction counts under callgrind
// compare changes to the loop, the rings and the UMEM; the kernel side's
// copy is included in the time.
func BenchmarkWorker(b *testing.B) {
	r := newWorkerRig(b, rigSizes{frames: 8192, fill: 2048, rx: 2048, tx: 2048, comp: 2048, batch: DefaultBatchSize})
	r.sock.Refill()
	frames := dsrFrames(1024)
	pos := 0
	turn := func() {
		r.sim.Deliver(frames[pos : pos+DefaultBatchSize])
		if pos += DefaultBatchSize; pos == len(frames) {
			pos = 0
		}
		if n, _, err := r.w.poll(); n != DefaultBatchSize || err != nil {
			b.Fatalf("poll: %d, %v", n, err)
		}
		r.sim.Transmit(2048, nil)
	}
	for range 2 * len(frames) / DefaultBatchSize {
		turn()
	}
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		turn()
	}
	el := time.Since(start)
	pkts := float64(b.N * DefaultBatchSize)
	b.ReportMetric(float64(el.Nanoseconds())/pkts, "ns/pkt")
	b.ReportMetric(pkts/el.Seconds()/1e6, "Mpps")
	r.checkLedger(b)
}

// A worker with an idle spin keeps polling through gaps between packets
// shorter than the spin instead of sleeping in poll(2), and sleeps once the
// spin has run out; without a spin it sleeps in every gap. The idle loop's
// clock is driven by hand, so that the outcome does not depend on how the
// test's goroutines are scheduled on a busy machine.
func TestWorkerIdleSpin(t *testing.T) {
	const gaps = 20
	type run struct {
		w      *Worker
		r      *workerRig
		cancel context.CancelFunc
		done   chan error
		fake   atomic.Int64 // the idle loop's clock, in ns after base
	}
	base := time.Now()
	start := func(spin time.Duration) *run {
		ru := &run{r: newWorkerRig(t, rigSizes{frames: 256, fill: 64, rx: 64, tx: 64, comp: 64, batch: 16})}
		w, err := NewWorker(WorkerConfig{Queue: 1, CPU: -1, Socket: ru.r.sock, Forwarder: ru.r.w.fwd, Snapshot: &ru.r.snap, IdleSpin: spin})
		if err != nil {
			t.Fatal(err)
		}
		w.clock = func() time.Time { return base.Add(time.Duration(ru.fake.Load())) }
		ru.w = w
		var ctx context.Context
		ctx, ru.cancel = context.WithCancel(context.Background())
		ru.done = make(chan error, 1)
		go func() { ru.done <- w.Run(ctx) }()
		return ru
	}
	// forward delivers one packet and waits until the worker has sent it:
	// the worker then finds its RX ring empty, a gap begins.
	forward := func(ru *run) {
		t.Helper()
		pkt := dsrFrames(1)
		deadline := time.Now().Add(10 * time.Second)
		// The fill ring is empty until the worker has started.
		for ru.r.sim.Deliver(pkt) == 0 {
			if time.Now().After(deadline) {
				t.Fatal("the worker never filled its fill ring")
			}
			time.Sleep(time.Millisecond)
		}
		for ru.r.sim.Transmit(1, func(ring.Desc, []byte) {}) == 0 {
			if time.Now().After(deadline) {
				t.Fatal("the worker did not forward")
			}
			runtime.Gosched()
		}
	}
	// stop ends the worker and returns its final count of sleeps.
	stop := func(ru *run) uint64 {
		t.Helper()
		ru.cancel()
		if err := <-ru.done; err != nil {
			t.Fatal(err)
		}
		ru.r.checkLedger(t)
		return ru.w.Stats().Sleeps
	}

	// No spin: a sleep in every gap (the bound allows for gaps in which a
	// busy machine did not run the worker at all).
	ru := start(0)
	for range gaps {
		forward(ru)
		time.Sleep(5 * time.Millisecond)
	}
	if n := stop(ru); n < gaps/2 {
		t.Errorf("without a spin the worker slept %d times in %d gaps, want one in (nearly) every gap", n, gaps)
	}

	// A spin of 1 ms while the idle loop's clock stands still: every gap is
	// shorter than the spin, however long it lasts in real time.
	ru = start(MaxIdleSpin)
	for range gaps {
		forward(ru)
		time.Sleep(5 * time.Millisecond)
	}
	// The spin runs out: the worker sleeps (and, its publishing interval
	// also past, publishes that it did).
	// (The worker's busy turns publish by the real clock, so the idle
	// loop's must be well past it.)
	ru.fake.Store(int64(time.Hour))
	deadline := time.Now().Add(10 * time.Second)
	for ru.w.Stats().Sleeps == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the spin of %v ran out but the worker never slept", MaxIdleSpin)
		}
		time.Sleep(time.Millisecond)
	}
	// Awake again, the worker starts a new spin at the clock's time, which
	// now stands still again: no second sleep.
	time.Sleep(2 * idleWait)
	if n := stop(ru); n != 1 {
		t.Errorf("with a spin of %v the worker slept %d times: want once, after the spin ran out, and never in the %d gaps before", MaxIdleSpin, n, gaps)
	}
}
