package flows

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/weirlb/weir/packet"
)

// model is the obviously-correct flow table: a map with a last-seen time.
type model struct {
	m       map[packet.FlowKey]modelEntry
	timeout map[uint8]int64
	other   int64
}

type modelEntry struct {
	backend  uint32
	lastSeen int64
}

func (m *model) alive(k packet.FlowKey, now int64) (modelEntry, bool) {
	e, ok := m.m[k]
	if !ok {
		return e, false
	}
	to, ok2 := m.timeout[k.Proto]
	if !ok2 {
		to = m.other
	}
	if now-e.lastSeen >= to {
		delete(m.m, k)
		return e, false
	}
	return e, true
}

func (m *model) live(now int64) int {
	n := 0
	for k := range m.m {
		if _, ok := m.alive(k, now); ok {
			n++
		}
	}
	return n
}

// TestAgainstModel runs random operations on the table and a map-based
// model with timeouts. The capacity is large enough that no bucket ever
// overflows, so the two must agree exactly. Time advances in multiples of
// Tick from a Tick-aligned start and timeouts are multiples of Tick, which
// makes the table's tick-resolution deadlines exact.
func TestAgainstModel(t *testing.T) {
	for seed := range uint64(4) {
		rng := rand.New(rand.NewPCG(seed, 0x5eed))
		cfg := DefaultConfig()
		cfg.Capacity = 1 << 16
		tick := int64(Tick)
		cfg.TCPTimeout = time.Duration(200 * tick)
		cfg.UDPTimeout = time.Duration(60 * tick)
		cfg.OtherTimeout = time.Duration(90 * tick)
		tb := newTable(t, cfg)
		m := &model{
			m:       map[packet.FlowKey]modelEntry{},
			timeout: map[uint8]int64{packet.ProtoTCP: 200 * tick, packet.ProtoUDP: 60 * tick},
			other:   90 * tick,
		}

		// A pool of keys with random hashes; some pairs share a hash so the
		// key compare, not the tag, has to tell them apart.
		const nKeys = 3000
		protos := []uint8{packet.ProtoTCP, packet.ProtoUDP, packet.ProtoICMP, packet.ProtoICMPv6, 47}
		keys := make([]packet.FlowKey, nKeys)
		hashes := make([]uint64, nKeys)
		for i := range keys {
			keys[i] = testKey(i, protos[rng.IntN(len(protos))])
			if i%2 == 0 {
				keys[i].Family = 6
				keys[i].Src[15] = byte(rng.Uint32())
			}
			hashes[i] = rng.Uint64()
			if i > 0 && rng.IntN(10) == 0 {
				hashes[i] = hashes[i-1]
			}
		}

		now := int64(1<<30) * tick
		for op := range 200_000 {
			i := rng.IntN(nKeys)
			k, h := &keys[i], hashes[i]
			switch r := rng.IntN(100); {
			case r < 45:
				be, ok := tb.Lookup(k, h, now)
				e, mok := m.alive(*k, now)
				if ok != mok || (ok && be != e.backend) {
					t.Fatalf("seed %d op %d: Lookup(%d) = %d,%v, model %d,%v", seed, op, i, be, ok, e.backend, mok)
				}
				if mok {
					m.m[*k] = modelEntry{e.backend, now}
				}
			case r < 80:
				be := rng.Uint32()
				res := tb.Insert(k, h, be, now)
				_, mok := m.alive(*k, now)
				want := Inserted
				if mok {
					want = Updated
				}
				if res != want {
					t.Fatalf("seed %d op %d: Insert(%d) = %v, model says %v", seed, op, i, res, want)
				}
				m.m[*k] = modelEntry{be, now}
			case r < 90:
				ok := tb.Delete(k, h, now)
				_, mok := m.alive(*k, now)
				if ok != mok {
					t.Fatalf("seed %d op %d: Delete(%d) = %v, model %v", seed, op, i, ok, mok)
				}
				delete(m.m, *k)
			case r < 92:
				tb.Sweep(now, rng.IntN(200))
			case r == 92 && rng.IntN(100) == 0:
				tb.Reset()
				clear(m.m)
			default:
				// ~0.04 ticks per op: a key comes back every ~3000 ops,
				// ~120 ticks, so some of its entries live and some expire.
				now += int64(rng.IntN(2)) * tick
			}
			if op%10_000 == 0 {
				tb.Sweep(now, tb.Buckets())
				if got, want := tb.Len(), m.live(now); got != want {
					t.Fatalf("seed %d op %d: Len after full sweep = %d, model %d", seed, op, got, want)
				}
			}
		}
		s := tb.Stats()
		if s.Evictions != 0 || s.RateLimited != 0 {
			t.Fatalf("seed %d: %d evictions, %d rate-limited: the model cannot follow", seed, s.Evictions, s.RateLimited)
		}
		if s.Hits == 0 || s.Misses == 0 || s.Updates == 0 || s.Expired == 0 || s.Deletes == 0 {
			t.Fatalf("seed %d: some paths never ran: %+v", seed, s)
		}
		t.Logf("seed %d: %+v", seed, s)
	}
}

// TestEvictionKeepsInvariants hammers a tiny table far beyond its capacity
// and checks what must hold under eviction: Len never exceeds Capacity,
// counters add up, and a key just inserted is always found.
func TestEvictionKeepsInvariants(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	cfg := DefaultConfig()
	cfg.Capacity = 64
	tb := newTable(t, cfg)
	now := t0
	for i := range 100_000 {
		k := testKey(rng.IntN(5000), packet.ProtoTCP)
		h := splitmix64(uint64(k.SrcPort) | uint64(k.Src[3])<<16)
		be := uint32(i)
		tb.Insert(&k, h, be, now)
		if got, ok := tb.Lookup(&k, h, now); !ok || got != be {
			t.Fatalf("op %d: just-inserted key = %d,%v", i, got, ok)
		}
		if tb.Len() > tb.Capacity() {
			t.Fatalf("Len %d > Capacity %d", tb.Len(), tb.Capacity())
		}
		now += int64(time.Millisecond)
	}
	s := tb.Stats()
	if s.Evictions == 0 {
		t.Fatal("no evictions in an overfull table")
	}
	if uint64(tb.Len()) != s.Inserts-s.Evictions-s.Expired-s.Deletes {
		t.Fatalf("Len %d != inserts %d - evictions %d - expired %d - deletes %d", tb.Len(), s.Inserts, s.Evictions, s.Expired, s.Deletes)
	}
}
