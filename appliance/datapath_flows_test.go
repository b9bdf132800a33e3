package appliance

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"
)

// TestDatapathBothQueues shows that the NIC spreads connections over both
// RX queues and that both workers serve theirs: 200 connections per VIP,
// each from its own source port, are all answered, and each worker both
// received and transmitted frames and chose backends for new flows.
func TestDatapathBothQueues(t *testing.T) {
	l := newDSRLab(t, []uint32{1, 1, 1})
	if len(l.app.workers) != 2 {
		t.Fatalf("appliance runs %d workers, want one per queue (2)", len(l.app.workers))
	}
	const n = 200
	for _, vip := range l.VIPs {
		ports := map[uint16]bool{}
		for i := range n {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			r, err := getReply(ctx, l.DSR, vip, "/")
			cancel()
			if err != nil {
				t.Fatalf("connection %d to %s: %v", i, vip, err)
			}
			if r.remote.Addr() != l.Client.Addr(vip) {
				t.Fatalf("connection %d to %s: backend %s saw client %v, want %v", i, vip, r.backend, r.remote, l.Client.Addr(vip))
			}
			ports[r.remote.Port()] = true
		}
		if len(ports) != n {
			t.Errorf("%s: %d connections came from only %d source ports", vip, n, len(ports))
		}
	}
	st := l.settle(t)
	for q, w := range st.Workers {
		c := &w.Counters
		t.Logf("queue %d (cpu %d): rx %d tx %d new flows %d hits %d; ring %+v", w.Queue, w.CPU, c.RXPackets, c.TXPackets, c.NewFlows, c.FlowHits, w.Ring)
		if w.Queue != q || c.RXPackets == 0 || c.TXPackets == 0 || c.NewFlows == 0 {
			t.Errorf("queue %d did not serve: %+v", q, w.Counters)
		}
	}
	if want := uint64(2 * n); st.Total.NewFlows < want {
		t.Errorf("%d new flows for %d connections", st.Total.NewFlows, want)
	}
	final := l.stop(t)
	checkCounters(t, final, l.app.RealStats())
}

// midFlowKinds are the segments crafted for a 5-tuple whose SYN the
// appliance has not seen: a bare ACK, data, a FIN and a RST.
var midFlowKinds = []struct {
	name    string
	flags   uint8
	payload []byte
	rst     bool // whether a backend without the connection answers it with a RST
}{
	{"ack", tcpACK, nil, true},
	{"data", tcpPSH | tcpACK, []byte("mid-flow data"), true},
	{"fin", tcpFIN | tcpACK, nil, true},
	{"rst", tcpRST, nil, false},
}

// midFlowSeq marks crafted segment kind k of round r in its sequence number,
// so the sniffer tells it from the kernel's own segments of the same flow.
func midFlowSeq(round, k int) uint32 { return 0x5eed0000 | uint32(round)<<8 | uint32(k) }

// TestDatapathMidFlowSegments shows that the appliance needs neither the
// SYN nor both directions of a flow: TCP segments of any kind (ACK, data,
// FIN, RST) crafted in the client namespace for a 5-tuple the appliance has
// never seen reach one backend, the same one that a real connection from
// that source port then reaches (its SYN is seen there, and it serves the
// request). Crafted again once the flow is in the flow table, they still go
// there. Several source ports per VIP make several backends take part.
func TestDatapathMidFlowSegments(t *testing.T) {
	l := newDSRLab(t, []uint32{1, 1, 1})
	sn := sniffBackends(t, l.DSR)
	raw := newRawSender(t, l.Client.NS)

	st, err := l.app.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Total.RXPackets != 0 || st.Total.NewFlows != 0 {
		t.Fatalf("fresh appliance has seen traffic: %+v", st.Total)
	}

	// Source ports below the client's ephemeral range, so no connection of
	// the kernel's own picks one of them.
	const perVIP = 8
	base := 20000 + rand.IntN(10000)
	type probe struct {
		vip netip.Addr
		src netip.AddrPort
	}
	var probes []probe
	for i, vip := range l.VIPs {
		for j := range perVIP {
			src := netip.AddrPortFrom(l.Client.Addr(vip), uint16(base+i*perVIP+j))
			probes = append(probes, probe{vip, src})
		}
	}
	// craft sends every kind of crafted segment for every probe, marked
	// with round, and waits until each has arrived at some backend.
	craft := func(round int) {
		t.Helper()
		for _, p := range probes {
			dst := netip.AddrPortFrom(p.vip, l.Port)
			for k, kind := range midFlowKinds {
				pkt := tcpSegment(p.src, dst, midFlowSeq(round, k), rand.Uint32(), kind.flags, kind.payload)
				if err := raw.send(pkt, p.vip); err != nil {
					t.Fatalf("send crafted %s from %v: %v", kind.name, p.src, err)
				}
			}
		}
		sn.waitFor(t, fmt.Sprintf("round %d crafted segments", round), 5*time.Second, func(segs []sniffed) bool {
			seen := map[sniffed]bool{}
			for _, s := range segs {
				seen[sniffed{src: s.src, flags: s.flags, seq: s.seq}] = true
			}
			for _, p := range probes {
				for k, kind := range midFlowKinds {
					if !seen[sniffed{src: p.src, flags: kind.flags, seq: midFlowSeq(round, k)}] {
						return false
					}
				}
			}
			return true
		})
	}
	// owners returns, for each source, the backends its segments reached.
	owners := func() map[netip.AddrPort]map[string]int {
		out := map[netip.AddrPort]map[string]int{}
		for _, s := range sn.snapshot() {
			if out[s.src] == nil {
				out[s.src] = map[string]int{}
			}
			out[s.src][s.backend]++
		}
		return out
	}
	owner := func(src netip.AddrPort, by map[netip.AddrPort]map[string]int) string {
		t.Helper()
		if len(by[src]) != 1 {
			t.Fatalf("segments from %v reached %d backends: %v", src, len(by[src]), by[src])
		}
		for b := range by[src] {
			return b
		}
		return ""
	}

	// Round 1: the appliance has never seen these 5-tuples.
	tcpBefore := backendsTCP(t, l.DSR)
	craft(1)
	first := owners()
	want := map[netip.AddrPort]string{}
	perBackend := map[string]int{}
	for _, p := range probes {
		want[p.src] = owner(p.src, first)
		perBackend[want[p.src]]++
	}
	// Every crafted segment but the RST makes a backend without the
	// connection answer with one RST: the backend's TCP accepted it (its
	// checksum was right) exactly once.
	rstPerProbe := 0
	for _, k := range midFlowKinds {
		if k.rst {
			rstPerProbe++
		}
	}
	// The answers are in flight to the client when the segments have been
	// seen; give the counters a moment.
	deadline := time.Now().Add(2 * time.Second)
	for {
		tcpAfter := backendsTCP(t, l.DSR)
		var wrong []string
		for _, b := range l.Backends {
			got := tcpAfter[b.Name].OutRsts - tcpBefore[b.Name].OutRsts
			if want := uint64(rstPerProbe * perBackend[b.Name]); got != want {
				wrong = append(wrong, fmt.Sprintf("%s sent %d resets, want %d", b.Name, got, want))
			}
			if e := tcpAfter[b.Name].InCsumErrors - tcpBefore[b.Name].InCsumErrors; e != 0 {
				t.Fatalf("%s dropped %d crafted segments for bad checksums", b.Name, e)
			}
		}
		if len(wrong) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("backends' answers to crafted segments: %v", wrong)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(perBackend) < 2 {
		t.Fatalf("all %d source ports map to one backend: %v", len(probes), perBackend)
	}
	mid, err := l.app.Stats()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("round 1: %d probes over backends %v; appliance %+v", len(probes), perBackend, mid.Total)

	// A real connection from each source port reaches the backend the
	// crafted segments reached.
	for _, p := range probes {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		r, err := getFrom(ctx, l.DSR, p.src, p.vip)
		cancel()
		if err != nil {
			t.Fatalf("connection from %v to %s: %v", p.src, p.vip, err)
		}
		if r.remote != p.src {
			t.Errorf("connection from %v: backend saw %v", p.src, r.remote)
		}
		if r.backend != want[p.src] {
			t.Errorf("connection from %v answered by %s, crafted segments went to %s", p.src, r.backend, want[p.src])
		}
	}
	// Their SYNs were seen at the same backends.
	sn.waitFor(t, "SYNs of the real connections", 2*time.Second, func(segs []sniffed) bool {
		syn := map[netip.AddrPort]bool{}
		for _, s := range segs {
			if s.flags&tcpSYN != 0 {
				syn[s.src] = true
			}
		}
		for _, p := range probes {
			if !syn[p.src] {
				return false
			}
		}
		return true
	})

	// Round 2: the flows are in the appliance's flow tables now.
	craft(2)
	all := owners()
	for _, p := range probes {
		if got := owner(p.src, all); got != want[p.src] {
			t.Errorf("%v: segments went to %s, want %s", p.src, got, want[p.src])
		}
	}
	l.settle(t)
	final := l.stop(t)
	checkCounters(t, final, l.app.RealStats())
	t.Logf("appliance: new flows %d, flow hits %d, flows moved %d", final.Total.NewFlows, final.Total.FlowHits, final.Total.FlowsMoved)
	if final.Total.FlowsMoved != 0 {
		t.Errorf("%d flow-table hits found their backend gone", final.Total.FlowsMoved)
	}
}
