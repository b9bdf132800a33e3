package appliance

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"

	"github.com/weirlb/weir/flows"
)

// BenchmarkForward measures Forward per packet for each mode (an IPv4 VIP
// with 8 IPv4 backends) and flow mix:
//
//   - hot: one established flow, every packet a flow-table hit;
//   - 64k: 65,536 established flows visited in a shuffled order;
//   - 1m: 1,048,576 established flows in a table sized to hold them, shuffled;
//   - new: every packet a new flow, into a full table, so every insert evicts.
//
// Flows differ by client address. One frame buffer is reused: before each
// Forward the loop writes the flow's client address and restores the
// Ethernet header (which the MAC rewrite or the outer headers overwrite;
// the IP packet itself is never changed), the same 18 bytes in every case.
// The stale IPv4 header checksum is not looked at by Forward.
func BenchmarkForward(b *testing.B) {
	for _, mode := range []Mode{ModeDSR, ModeIPIP, ModeGUE} {
		b.Run(mode.String(), func(b *testing.B) {
			for _, bc := range []struct {
				name     string
				flows    int // established flows; 0 = every packet new
				capacity int
			}{
				{"hot", 1, flows.DefaultCapacity},
				{"64k", 1 << 16, flows.DefaultCapacity},
				{"1m", 1 << 20, 3 << 20},
				{"new", 0, flows.DefaultCapacity},
			} {
				var st *benchState // set up once, kept across the runs of one sub-benchmark
				b.Run(bc.name, func(b *testing.B) {
					if st == nil {
						st = newBenchState(b, mode, bc.flows, bc.capacity)
					}
					st.run(b)
				})
			}
		})
	}
}

// benchState is one sub-benchmark's forwarder, frames and flow sequence.
// Frames go through ForwardBatch in batches of DefaultBatchSize, as a
// worker sends them; each batch's frames are rewritten in place first
// (Ethernet header restored, client address set), which costs the same in
// every case.
type benchState struct {
	f    *Forwarder
	buf  []byte
	pkts []Packet // one batch, each with its own copy of the frame
	// Where each batch frame's Ethernet header and client address are, so
	// that restoring them is two stores without bounds checks.
	heads   []*[14]byte
	clients []*[4]byte
	eth     [14]byte
	n       int      // frame length
	seq     []uint32 // client addresses in visiting order; nil = new flows
	mask    int
	next    uint32 // next new client address
	start   int
}

const (
	benchStart   = 256
	benchSrcOff  = benchStart + 14 + 12 // client (source) address in the frame
	benchNewBase = 0x40000000           // new flows' clients: 64.0.0.0 upwards
)

func newBenchState(b *testing.B, mode Mode, nflows, capacity int) *benchState {
	m := semModel(multiVIP("192.0.2.100", mode, 8))
	s := buildSnapshot(b, m, newRegistry(b), 1)
	cfg := flows.DefaultConfig()
	cfg.Capacity = capacity
	// Not newForwarder: its table would be closed when the first of the
	// runs that share this state ends. The garbage collector unmaps it.
	f, err := NewForwarder(cfg, 1024)
	if err != nil {
		b.Fatal(err)
	}
	f.Begin(s, int64(time.Hour))
	st := &benchState{f: f, start: benchStart, next: benchNewBase}
	frame := frameOf(tcpPacket(client4, addr("192.0.2.100"), 40000, 80, flagACK, 0)) // 54 bytes, a 64-byte packet on the wire
	st.n = len(frame)
	st.buf = make([]byte, benchStart+len(frame))
	copy(st.buf[benchStart:], frame)
	copy(st.eth[:], frame)
	st.pkts = make([]Packet, DefaultBatchSize)
	for i := range st.pkts {
		buf := bytes.Clone(st.buf)
		st.pkts[i] = Packet{Buf: buf, Start: benchStart, Len: len(frame)}
		st.heads = append(st.heads, (*[14]byte)(buf[benchStart:]))
		st.clients = append(st.clients, (*[4]byte)(buf[benchSrcOff:]))
	}

	if nflows == 0 {
		// Fill the table beyond its capacity first, so that new flows
		// always land in full buckets.
		for range 2 * st.f.Flows().Capacity() {
			st.forwardNew()
		}
		if st.f.Flows().Stats().Evictions == 0 {
			b.Fatal("filling the table evicted nothing")
		}
		return st
	}
	clients := make([]uint32, nflows)
	for i := range clients {
		clients[i] = 0x0a000000 + uint32(i) // 10.0.0.0 upwards
		st.forward(clients[i])
	}
	if ev := st.f.Flows().Stats().Evictions; ev > uint64(nflows/500) {
		b.Fatalf("%d of %d flows evicted while establishing them: table too small", ev, nflows)
	}
	order := shuffled(nflows, 1)
	st.seq = make([]uint32, nflows)
	for i, j := range order {
		st.seq[i] = clients[j]
	}
	st.mask = nflows - 1
	return st
}

func (st *benchState) forward(client uint32) Verdict {
	copy(st.buf[st.start:], st.eth[:])
	binary.BigEndian.PutUint32(st.buf[benchSrcOff:], client)
	v, _, _ := st.f.Forward(st.buf, st.start, st.n)
	return v
}

func (st *benchState) forwardNew() Verdict {
	st.next++
	return st.forward(st.next)
}

// batch forwards the next n packets (n <= len(st.pkts)) in one batch: new
// flows, or the next established flows of the visiting order from i.
func (st *benchState) batch(i, n int) {
	// The restore should cost as little as possible next to what it
	// measures: fixed-size stores through pointers set up in advance.
	heads, clients := st.heads[:n], st.clients[:n]
	clients = clients[:len(heads)]
	eth, seq, mask := st.eth, st.seq, st.mask
	for j, h := range heads {
		*h = eth
		var client uint32
		if seq == nil {
			st.next++
			client = st.next
		} else {
			client = seq[(i+j)&mask]
		}
		binary.BigEndian.PutUint32(clients[j][:], client)
	}
	st.f.ForwardBatch(st.pkts[:n])
}

func (st *benchState) run(b *testing.B) {
	c := st.f.Counters()
	tx, hits, newFlows := c.TXPackets, c.FlowHits, c.NewFlows
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += len(st.pkts) {
		st.batch(i, min(len(st.pkts), b.N-i))
	}
	b.StopTimer()
	ns := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	b.ReportMetric(ns, "ns/pkt")
	b.ReportMetric(1e3/ns, "Mpps")
	n := uint64(b.N)
	if c.TXPackets-tx != n {
		b.Fatalf("%d of %d packets sent", c.TXPackets-tx, n)
	}
	if st.seq == nil && c.NewFlows-newFlows != n {
		b.Fatalf("%d new flows in %d packets", c.NewFlows-newFlows, n)
	}
	// Establishing a million flows may evict a few (newBenchState allows
	// 0.2%), and a short run can meet two or three of them: the check is
	// for a benchmark that misses wholesale.
	if st.seq != nil && c.FlowHits-hits+3 < n-n/100 {
		b.Fatalf("only %d flow hits in %d packets", c.FlowHits-hits, n)
	}
}
