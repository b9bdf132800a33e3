package flows

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/weirlb/weir/packet"
)

// reportPkt reports the per-packet cost (one table operation per packet).
func reportPkt(b *testing.B, ops int) {
	if ops == 0 {
		return
	}
	ns := float64(b.Elapsed().Nanoseconds()) / float64(ops)
	b.ReportMetric(ns, "ns/pkt")
	b.ReportMetric(1e3/ns, "Mpps")
}

// flowSet returns n keys (mixed TCP and UDP, IPv4 and IPv6) and hashes,
// starting at index from.
func flowSet(from, n int) ([]packet.FlowKey, []uint64) {
	keys := make([]packet.FlowKey, n)
	hashes := make([]uint64, n)
	for i := range keys {
		proto := uint8(packet.ProtoTCP)
		if i%4 == 3 {
			proto = packet.ProtoUDP
		}
		keys[i] = testKey(from+i, proto)
		if i%2 == 1 {
			keys[i].Family = 6
		}
		hashes[i] = hashOf(from + i)
	}
	return keys, hashes
}

// shuffled returns the keys and hashes in a random order, as separate
// arrays so the benchmark streams them instead of chasing a permutation.
func shuffled(keys []packet.FlowKey, hashes []uint64) ([]packet.FlowKey, []uint64) {
	perm := rand.New(rand.NewPCG(1, 2)).Perm(len(keys))
	k2 := make([]packet.FlowKey, len(keys))
	h2 := make([]uint64, len(keys))
	for i, p := range perm {
		k2[i], h2[i] = keys[p], hashes[p]
	}
	return k2, h2
}

func BenchmarkLookupHot(b *testing.B) {
	tb := newTable(b, DefaultConfig())
	k, h := testKey(1, packet.ProtoTCP), hashOf(1)
	tb.Insert(&k, h, 1, t0)
	n := 0
	for b.Loop() {
		if _, ok := tb.Lookup(&k, h, t0); !ok {
			b.Fatal("miss")
		}
		n++
	}
	reportPkt(b, n)
}

// batch is the worker's batch size in the prefetching benchmarks.
const batch = 32

// benchLookup looks up every one of flows flows in shuffled order, either
// one by one or as a worker does: PrefetchAll for a batch, then the lookups.
func benchLookup(b *testing.B, capacity, flows int) {
	cfg := DefaultConfig()
	cfg.Capacity = capacity
	tb := newTable(b, cfg)
	keys, hashes := flowSet(0, flows)
	for i := range keys {
		tb.Insert(&keys[i], hashes[i], uint32(i), t0)
	}
	keys, hashes = shuffled(keys, hashes)
	b.Run("one-by-one", func(b *testing.B) {
		hits, n := 0, 0
		for b.Loop() {
			i := n % len(keys)
			if _, ok := tb.Lookup(&keys[i], hashes[i], t0); ok {
				hits++
			}
			n++
		}
		reportPkt(b, n)
		b.ReportMetric(100*float64(hits)/float64(n), "hit-%")
	})
	b.Run("batch32-prefetch", func(b *testing.B) {
		hits, n := 0, 0
		for b.Loop() {
			base := n % len(keys) // len(keys) is a multiple of batch
			ks, hs := keys[base:base+batch], hashes[base:base+batch]
			tb.PrefetchAll(hs)
			for j := range ks {
				if _, ok := tb.Lookup(&ks[j], hs[j], t0); ok {
					hits++
				}
			}
			n += batch
		}
		reportPkt(b, n)
		b.ReportMetric(100*float64(hits)/float64(n), "hit-%")
	})
}

// 64k flows in the default 1M-entry table, looked up in shuffled order.
func BenchmarkLookup64k(b *testing.B) { benchLookup(b, DefaultCapacity, 1<<16) }

// 1M flows in a table with room for 2M, so almost every lookup hits (a
// few hundredths of the buckets overflow: the hit-% metric shows them).
func BenchmarkLookup1M(b *testing.B) { benchLookup(b, 2<<20, 1<<20) }

// 1M flows in the default 1M-entry table: buckets overflow, so the
// evicted flows miss.
func BenchmarkLookup1MFull(b *testing.B) { benchLookup(b, DefaultCapacity, 1<<20) }

func BenchmarkLookupMiss64k(b *testing.B) {
	tb := newTable(b, DefaultConfig())
	keys, hashes := flowSet(0, 1<<16)
	for i := range keys {
		tb.Insert(&keys[i], hashes[i], uint32(i), t0)
	}
	absent, ah := flowSet(1<<20, 1<<16)
	n := 0
	for b.Loop() {
		i := n % len(absent)
		if _, ok := tb.Lookup(&absent[i], ah[i], t0); ok {
			b.Fatal("hit on absent key")
		}
		n++
	}
	reportPkt(b, n)
}

// benchInsertEvict fills every slot of the table with live entries, then
// inserts new flows: each insert lands in a full bucket and evicts.
func benchInsertEvict(b *testing.B, capacity int) {
	cfg := DefaultConfig()
	cfg.Capacity = capacity
	tb := newTable(b, cfg)
	next := 0
	for tb.Len() < tb.Capacity() {
		k := testKey(next, packet.ProtoTCP)
		tb.Insert(&k, hashOf(next), 1, t0)
		next++
	}
	// Four times the capacity of fresh keys: by the time one comes round
	// again it has almost surely been evicted (the evict-% metric shows it).
	keys, hashes := flowSet(next, 4*tb.Capacity()/batch*batch)
	now := t0
	// 1 µs per packet: a flood of new flows at 1 Mpps, deadlines advancing.
	const step = int64(time.Microsecond)
	// pos persists across b.Loop's runs so no run re-inserts earlier keys.
	pos := 0
	for _, prefetch := range []bool{false, true} {
		name := "one-by-one"
		if prefetch {
			name = "batch32-prefetch"
		}
		b.Run(name, func(b *testing.B) {
			evicted, n := 0, 0
			for b.Loop() {
				base := pos % len(keys)
				pos += batch
				ks, hs := keys[base:base+batch], hashes[base:base+batch]
				if prefetch {
					tb.PrefetchAll(hs)
				}
				for j := range ks {
					if tb.Insert(&ks[j], hs[j], uint32(n), now) == Evicted {
						evicted++
					}
					now += step
				}
				n += batch
			}
			reportPkt(b, n)
			b.ReportMetric(100*float64(evicted)/float64(n), "evict-%")
		})
	}
}

func BenchmarkInsertEvict64k(b *testing.B) { benchInsertEvict(b, 1<<16) }
func BenchmarkInsertEvict1M(b *testing.B)  { benchInsertEvict(b, 1<<20) }

func BenchmarkSweep(b *testing.B) {
	tb := newTable(b, DefaultConfig())
	keys, hashes := flowSet(0, 1<<19)
	for i := range keys {
		tb.Insert(&keys[i], hashes[i], 1, t0)
	}
	n := 0
	for b.Loop() {
		tb.Sweep(t0, 256)
		n += 256
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/bucket")
}
