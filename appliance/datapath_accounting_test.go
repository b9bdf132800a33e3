package appliance

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"
)

// TestDatapathFrameAccounting follows every packet of a mixed workload
// (short connections, a download and an upload per VIP) from the client's
// TCP stack to the backends' and every UMEM frame of the appliance:
//
//   - each segment the client sent (TCP OutSegs + RetransSegs) was
//     redirected by XDP, and nothing else was;
//   - each redirected frame was received by a worker (or counted as dropped
//     at the socket), and each received frame was sent, answered or dropped
//     for a counted reason; per-real counters sum to what was sent;
//   - each frame sent arrived at a backend's TCP stack (InSegs), with a
//     correct checksum;
//   - after Stop no frame is left in a worker's hands, none is still being
//     transmitted, and the rest are free or in the fill ring.
func TestDatapathFrameAccounting(t *testing.T) {
	l := newDSRLab(t, []uint32{1, 2, 3})
	clientBefore := tcpSNMP(t, l.Client.NS)
	backendsBefore := backendsTCP(t, l.DSR)

	seed := rand.Uint64()
	for _, vip := range l.VIPs {
		for i := range 100 {
			if _, err := get(t, l.DSR, vip); err != nil {
				t.Fatalf("request %d to %s: %v", i, vip, err)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		if _, err := download(ctx, l.DSR, vip, 8<<20, seed); err != nil {
			t.Fatalf("download via %s: %v", vip, err)
		}
		if _, err := upload(ctx, l.DSR, vip, 8<<20, seed); err != nil {
			t.Fatalf("upload via %s: %v", vip, err)
		}
		cancel()
	}
	running := l.settle(t)
	if running.Frames != (Stats{}).Frames {
		t.Errorf("frame ledger published while the workers own it: %v", running.Frames)
	}
	clientAfter := tcpSNMP(t, l.Client.NS)
	backendsAfter := backendsTCP(t, l.DSR)

	st := l.stop(t) // checks the frame ledger
	checkCounters(t, st, l.app.RealStats())
	if st.Frames.KernelTX != 0 {
		t.Errorf("%d frames still in transmission after the traffic stopped: %v", st.Frames.KernelTX, st.Frames)
	}

	sent := (clientAfter.OutSegs - clientBefore.OutSegs) + (clientAfter.RetransSegs - clientBefore.RetransSegs)
	if st.XDP.Redirected != sent {
		t.Errorf("client sent %d TCP segments to the VIPs, XDP redirected %d", sent, st.XDP.Redirected)
	}
	var delivered uint64
	for _, b := range l.Backends {
		before, after := backendsBefore[b.Name], backendsAfter[b.Name]
		delivered += after.InSegs - before.InSegs
		if e := after.InCsumErrors - before.InCsumErrors; e != 0 {
			t.Errorf("%s dropped %d segments with bad checksums", b.Name, e)
		}
	}
	if delivered != st.Total.TXPackets {
		t.Errorf("workers sent %d frames, backends' TCP received %d segments", st.Total.TXPackets, delivered)
	}
	t.Logf("client sent %d segments (%d retransmitted); xdp %+v; workers rx %d tx %d; backends received %d; frames %v",
		sent, clientAfter.RetransSegs-clientBefore.RetransSegs, st.XDP, st.Total.RXPackets, st.Total.TXPackets, delivered, st.Frames)
}
