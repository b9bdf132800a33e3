package ring

import (
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

const benchBatch = 64

// forwardBatch is a worker's cycle: take a batch off the RX ring, transmit
// every frame from the same address, kick, recycle completions into the fill
// ring. It returns how many packets it forwarded.
func forwardBatch(s *Socket) uint32 {
	rx, tx := s.RX(), s.TX()
	n, idx := rx.Peek(benchBatch)
	if n > 0 {
		// Back-pressure: forward only what the TX ring takes; the rest
		// stays on the RX ring for the next batch.
		got, tidx := tx.Reserve(n)
		for i := range got {
			tx.Set(tidx+i, rx.Get(idx+i))
		}
		rx.Release(got)
		tx.Submit(got)
		s.FlushTX(1)
		n = got
	}
	s.RecycleCompletions()
	return n
}

// The user-space ring cost per packet, with the in-memory kernel run in the
// same goroutine: no cache-line transfer between cores, so this is the
// instruction cost of the rings. "user-ns/pkt" times only the worker's side.
func BenchmarkForward(b *testing.B) {
	s, k := newMem(b, 4096, 1024)
	s.Refill()
	var user time.Duration
	pkts := 0
	b.ReportAllocs()
	for b.Loop() {
		k.DeliverLen(benchBatch, 64)
		t0 := time.Now()
		pkts += int(forwardBatch(s))
		user += time.Since(t0)
		k.Transmit(benchBatch, nil)
	}
	if pkts != b.N*benchBatch {
		b.Fatalf("forwarded %d of %d", pkts, b.N*benchBatch)
	}
	if err := s.Umem().Check(); err != nil {
		b.Fatal(err)
	}
	reportPkts(b, pkts)
	b.ReportMetric(float64(user.Nanoseconds())/float64(pkts), "user-ns/pkt")
}

// The same with the kernel side on another goroutine, as in production: the
// rings' cache lines move between two cores, and both sides spin.
func BenchmarkForwardConcurrent(b *testing.B) {
	if runtime.GOMAXPROCS(0) < 2 {
		b.Skip("needs two CPUs")
	}
	s, k := newMem(b, 4096, 1024)
	s.Refill()
	var stop atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		for !stop.Load() {
			d := k.DeliverLen(benchBatch, 64)
			t := k.Transmit(4*benchBatch, nil)
			if d == 0 && t == 0 {
				runtime.Gosched()
			}
		}
	}()
	want := b.N * benchBatch
	pkts := 0
	b.ResetTimer()
	for pkts < want {
		n := forwardBatch(s)
		if n == 0 {
			runtime.Gosched()
		}
		pkts += int(n)
	}
	b.StopTimer()
	stop.Store(true)
	<-done
	reportPkts(b, pkts)
}

// Receive and recycle only, as the appliance does for dropped packets.
func BenchmarkReceiveRecycle(b *testing.B) {
	s, k := newMem(b, 4096, 1024)
	s.Refill()
	fill := s.Fill()
	pkts := 0
	for b.Loop() {
		k.DeliverLen(benchBatch, 64)
		rx := s.RX()
		n, idx := rx.Peek(benchBatch)
		got, fidx := fill.Reserve(n)
		for i := range got {
			fill.Set(fidx+i, rx.Get(idx+i).Addr)
		}
		rx.Release(n)
		fill.Submit(got)
		pkts += int(n)
	}
	reportPkts(b, pkts)
}

func reportPkts(b *testing.B, pkts int) {
	ns := float64(b.Elapsed().Nanoseconds()) / float64(pkts)
	b.ReportMetric(ns, "ns/pkt")
	b.ReportMetric(1e3/ns, "Mpps")
	b.ReportMetric(0, "ns/op")
}
