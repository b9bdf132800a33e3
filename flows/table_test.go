package flows

import (
	"errors"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/weirlb/weir/packet"
)

// splitmix64 stands in for the flow hash the worker computes: the table
// only needs well-mixed bits, not any particular function.
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// testKey returns a distinct IPv4 key for each i.
func testKey(i int, proto uint8) packet.FlowKey {
	k := packet.FlowKey{Proto: proto, Family: 4, SrcPort: uint16(i), DstPort: 443}
	k.Src = [16]byte{10, byte(i >> 24), byte(i >> 16), byte(i >> 8)}
	k.Dst = [16]byte{192, 0, 2, 1}
	return k
}

func hashOf(i int) uint64 { return splitmix64(uint64(i)) }

func newTable(t testing.TB, cfg Config) *Table {
	t.Helper()
	tb, err := New(cfg)
	if err != nil {
		t.Fatalf("New(%+v): %v", cfg, err)
	}
	t.Cleanup(tb.Close)
	return tb
}

func smallConfig() Config {
	c := DefaultConfig()
	c.Capacity = 1 << 12
	return c
}

const sec = int64(time.Second)

// t0 is deliberately not a multiple of Tick, and large, like a real
// monotonic clock.
const t0 = int64(1234567*time.Hour) + 987654321

func TestInsertLookupUpdateDelete(t *testing.T) {
	tb := newTable(t, smallConfig())
	k, h := testKey(1, packet.ProtoTCP), hashOf(1)
	if _, ok := tb.Lookup(&k, h, t0); ok {
		t.Fatal("Lookup on empty table hit")
	}
	if r := tb.Insert(&k, h, 7, t0); r != Inserted {
		t.Fatalf("Insert new = %v, want inserted", r)
	}
	if be, ok := tb.Lookup(&k, h, t0); !ok || be != 7 {
		t.Fatalf("Lookup = %d,%v, want 7,true", be, ok)
	}
	// The same key with another hash is a different flow to the table
	// (the caller guarantees one hash per key); a different key with the
	// same hash must not match.
	other := testKey(2, packet.ProtoTCP)
	if _, ok := tb.Lookup(&other, h, t0); ok {
		t.Fatal("Lookup of a different key with the same hash hit")
	}
	if r := tb.Insert(&k, h, 9, t0+sec); r != Updated {
		t.Fatalf("Insert existing = %v, want updated", r)
	}
	if be, ok := tb.Lookup(&k, h, t0+sec); !ok || be != 9 {
		t.Fatalf("Lookup after update = %d,%v, want 9,true", be, ok)
	}
	if tb.Len() != 1 {
		t.Fatalf("Len = %d, want 1", tb.Len())
	}
	if !tb.Delete(&k, h, t0+sec) {
		t.Fatal("Delete of live key = false")
	}
	if tb.Delete(&k, h, t0+sec) {
		t.Fatal("second Delete = true")
	}
	if _, ok := tb.Lookup(&k, h, t0+sec); ok {
		t.Fatal("Lookup after Delete hit")
	}
	if tb.Len() != 0 {
		t.Fatalf("Len = %d, want 0", tb.Len())
	}
	want := Stats{Hits: 2, Misses: 3, Inserts: 1, Updates: 1, Deletes: 1}
	if got := tb.Stats(); got != want {
		t.Fatalf("Stats = %+v, want %+v", got, want)
	}
}

func TestKeysDifferingInOneField(t *testing.T) {
	tb := newTable(t, smallConfig())
	base := testKey(5, packet.ProtoUDP)
	variants := []func(k *packet.FlowKey){
		func(k *packet.FlowKey) {},
		func(k *packet.FlowKey) { k.Src[15] = 1 },
		func(k *packet.FlowKey) { k.Dst[8] = 1 },
		func(k *packet.FlowKey) { k.SrcPort++ },
		func(k *packet.FlowKey) { k.DstPort++ },
		func(k *packet.FlowKey) { k.Proto = packet.ProtoTCP },
		func(k *packet.FlowKey) { k.Family = 6 },
	}
	// One hash for all: same bucket, same tag, so only the key compare
	// tells them apart. Seven variants fill the bucket exactly.
	const h = 0xabcdef0012345678
	for i, f := range variants {
		k := base
		f(&k)
		if r := tb.Insert(&k, h, uint32(i), t0); r != Inserted {
			t.Fatalf("variant %d: Insert = %v, want inserted", i, r)
		}
	}
	for i, f := range variants {
		k := base
		f(&k)
		if be, ok := tb.Lookup(&k, h, t0); !ok || be != uint32(i) {
			t.Fatalf("variant %d: Lookup = %d,%v, want %d,true", i, be, ok, i)
		}
	}
}

func TestTimeoutsPerProtocol(t *testing.T) {
	tb := newTable(t, smallConfig())
	tcp, udp, icmp := testKey(1, packet.ProtoTCP), testKey(2, packet.ProtoUDP), testKey(3, packet.ProtoICMP)
	for i, k := range []*packet.FlowKey{&tcp, &udp, &icmp} {
		tb.Insert(k, hashOf(i+1), uint32(i+1), t0)
	}
	if _, ok := tb.Lookup(&udp, hashOf(2), t0+29*sec); !ok {
		t.Fatal("UDP entry expired after 29 s, timeout is 30 s")
	}
	// The UDP lookup at 29 s refreshed it; ICMP was last seen at t0.
	if _, ok := tb.Lookup(&icmp, hashOf(3), t0+31*sec); ok {
		t.Fatal("ICMP entry alive after 31 s, timeout is 30 s")
	}
	if _, ok := tb.Lookup(&udp, hashOf(2), t0+29*sec+31*sec); ok {
		t.Fatal("UDP entry alive 31 s after its last lookup")
	}
	if be, ok := tb.Lookup(&tcp, hashOf(1), t0+20*sec); !ok || be != 1 {
		t.Fatalf("TCP entry after 20 s = %d,%v, want 1,true", be, ok)
	}
	if _, ok := tb.Lookup(&tcp, hashOf(1), t0+20*sec+14*60*sec); !ok {
		t.Fatal("TCP entry expired after 14 min idle, timeout is 15 min")
	}
	if _, ok := tb.Lookup(&tcp, hashOf(1), t0+20*sec+14*60*sec+16*60*sec); ok {
		t.Fatal("TCP entry alive after 16 min idle")
	}
	// Expired entries found by Lookup are reclaimed at once.
	if tb.Len() != 0 {
		t.Fatalf("Len = %d after all expired, want 0", tb.Len())
	}
	if s := tb.Stats(); s.Expired != 3 {
		t.Fatalf("Expired = %d, want 3", s.Expired)
	}
}

func TestTimeoutConfigured(t *testing.T) {
	cfg := smallConfig()
	cfg.TCPTimeout, cfg.UDPTimeout, cfg.OtherTimeout = 2*time.Minute, 5*time.Second, 10*time.Second
	tb := newTable(t, cfg)
	for _, c := range []struct {
		proto uint8
		to    time.Duration
	}{{packet.ProtoTCP, cfg.TCPTimeout}, {packet.ProtoUDP, cfg.UDPTimeout}, {packet.ProtoICMPv6, cfg.OtherTimeout}, {47, cfg.OtherTimeout}} {
		for start := t0; start < t0+3*int64(Tick); start += int64(Tick) / 3 {
			k, h := testKey(int(c.proto), c.proto), hashOf(int(c.proto))
			tb.Insert(&k, h, 1, start)
			// Deadlines have one tick of resolution: alive up to timeout-Tick,
			// gone from timeout+Tick, whatever the phase of now.
			if _, ok := tb.Lookup(&k, h, start+int64(c.to-Tick)-1); !ok {
				t.Fatalf("proto %d: expired before %v", c.proto, c.to-Tick)
			}
			tb.Insert(&k, h, 1, start)
			if _, ok := tb.Lookup(&k, h, start+int64(c.to+Tick)); ok {
				t.Fatalf("proto %d: alive after %v", c.proto, c.to+Tick)
			}
		}
	}
}

// collidingHash returns hashes that all select the same bucket but carry
// different tags.
func collidingHash(j int) uint64 { return 0x00000000_9e3779b9 | uint64(j+1)<<56 }

func TestEvictStalest(t *testing.T) {
	tb := newTable(t, smallConfig())
	keys := make([]packet.FlowKey, SlotsPerBucket+1)
	for j := range keys {
		keys[j] = testKey(100+j, packet.ProtoTCP)
	}
	// Fill the bucket, one second apart: slot j last seen at t0+j s.
	for j := range SlotsPerBucket {
		if r := tb.Insert(&keys[j], collidingHash(j), uint32(j), t0+int64(j)*sec); r != Inserted {
			t.Fatalf("fill %d: %v, want inserted", j, r)
		}
	}
	// Refresh key 0: key 1 becomes the stalest.
	if _, ok := tb.Lookup(&keys[0], collidingHash(0), t0+10*sec); !ok {
		t.Fatal("key 0 missing")
	}
	n := SlotsPerBucket
	if r := tb.Insert(&keys[n], collidingHash(n), 99, t0+11*sec); r != Evicted {
		t.Fatalf("insert into full bucket = %v, want evicted", r)
	}
	if _, ok := tb.Lookup(&keys[1], collidingHash(1), t0+11*sec); ok {
		t.Fatal("stalest key 1 still present")
	}
	for _, j := range []int{0, 2, 3, 4, 5, 6} {
		if be, ok := tb.Lookup(&keys[j], collidingHash(j), t0+11*sec); !ok || be != uint32(j) {
			t.Fatalf("key %d = %d,%v, want %d,true", j, be, ok, j)
		}
	}
	if be, ok := tb.Lookup(&keys[n], collidingHash(n), t0+11*sec); !ok || be != 99 {
		t.Fatalf("new key = %d,%v, want 99,true", be, ok)
	}
	if s := tb.Stats(); s.Evictions != 1 || tb.Len() != SlotsPerBucket {
		t.Fatalf("Evictions = %d, Len = %d; want 1, %d", s.Evictions, tb.Len(), SlotsPerBucket)
	}
}

func TestEvictSameHash(t *testing.T) {
	// Identical hashes (same bucket and tag): the key compare decides.
	tb := newTable(t, smallConfig())
	const h = 0x5555_0000_dead_beef
	for j := range SlotsPerBucket {
		k := testKey(j, packet.ProtoUDP)
		tb.Insert(&k, h, uint32(j), t0+int64(j)*sec)
	}
	k := testKey(50, packet.ProtoUDP)
	if r := tb.Insert(&k, h, 50, t0+10*sec); r != Evicted {
		t.Fatalf("Insert = %v, want evicted", r)
	}
	k0 := testKey(0, packet.ProtoUDP)
	if _, ok := tb.Lookup(&k0, h, t0+10*sec); ok {
		t.Fatal("oldest entry survived eviction")
	}
}

func TestFullBucketReusesExpiredSlot(t *testing.T) {
	tb := newTable(t, smallConfig())
	// Slot 3 is UDP (30 s), the rest TCP (15 min).
	for j := range SlotsPerBucket {
		proto := uint8(packet.ProtoTCP)
		if j == 3 {
			proto = packet.ProtoUDP
		}
		k := testKey(j, proto)
		tb.Insert(&k, collidingHash(j), uint32(j), t0)
	}
	k := testKey(77, packet.ProtoTCP)
	if r := tb.Insert(&k, collidingHash(77), 77, t0+40*sec); r != Inserted {
		t.Fatalf("Insert = %v, want inserted (expired slot reused, nothing evicted)", r)
	}
	s := tb.Stats()
	if s.Evictions != 0 || s.Expired != 1 || tb.Len() != SlotsPerBucket {
		t.Fatalf("Evictions %d Expired %d Len %d, want 0 1 %d", s.Evictions, s.Expired, tb.Len(), SlotsPerBucket)
	}
	for j := range SlotsPerBucket {
		if j == 3 {
			continue
		}
		k := testKey(j, packet.ProtoTCP)
		if _, ok := tb.Lookup(&k, collidingHash(j), t0+40*sec); !ok {
			t.Fatalf("live TCP key %d lost", j)
		}
	}
}

func TestFullBucketReinsertExpiredKey(t *testing.T) {
	// The key being inserted is itself the expired entry of a full bucket:
	// its slot is reclaimed once and reused, with nothing evicted.
	tb := newTable(t, smallConfig())
	for j := range SlotsPerBucket {
		proto := uint8(packet.ProtoTCP)
		if j == 3 {
			proto = packet.ProtoUDP
		}
		k := testKey(j, proto)
		tb.Insert(&k, collidingHash(j), uint32(j), t0)
	}
	k3 := testKey(3, packet.ProtoUDP)
	if r := tb.Insert(&k3, collidingHash(3), 33, t0+40*sec); r != Inserted {
		t.Fatalf("Insert = %v, want inserted", r)
	}
	s := tb.Stats()
	if s.Evictions != 0 || s.Expired != 1 || tb.Len() != SlotsPerBucket {
		t.Fatalf("Evictions %d Expired %d Len %d, want 0 1 %d", s.Evictions, s.Expired, tb.Len(), SlotsPerBucket)
	}
	if be, ok := tb.Lookup(&k3, collidingHash(3), t0+40*sec); !ok || be != 33 {
		t.Fatalf("Lookup = %d,%v, want 33,true", be, ok)
	}
	if got := tb.Sweep(t0+40*sec, tb.Buckets()); got != 0 || tb.Len() != SlotsPerBucket {
		t.Fatalf("Sweep reclaimed %d, Len %d", got, tb.Len())
	}
}

func TestInsertExpiredKeyIsNew(t *testing.T) {
	cfg := smallConfig()
	cfg.NewFlowsPerSecond, cfg.NewFlowBurst = 1, 1
	tb := newTable(t, cfg)
	k, h := testKey(1, packet.ProtoUDP), hashOf(1)
	if r := tb.Insert(&k, h, 1, t0); r != Inserted {
		t.Fatalf("first Insert = %v", r)
	}
	// 31 s later the entry has expired: inserting the key again is a new
	// flow (it needs a token; the bucket refilled long ago).
	if r := tb.Insert(&k, h, 2, t0+31*sec); r != Inserted {
		t.Fatalf("Insert after expiry = %v, want inserted", r)
	}
	if s := tb.Stats(); s.Updates != 0 || s.Expired != 1 || s.Inserts != 2 || tb.Len() != 1 {
		t.Fatalf("Stats %+v Len %d", s, tb.Len())
	}
}

func TestRateLimit(t *testing.T) {
	cfg := smallConfig()
	cfg.NewFlowsPerSecond, cfg.NewFlowBurst = 10, 5
	tb := newTable(t, cfg)
	next := 0
	insert := func(now int64) InsertResult {
		k := testKey(next, packet.ProtoTCP)
		r := tb.Insert(&k, hashOf(next), 1, now)
		next++
		return r
	}
	// The bucket starts full: burst of 5, then nothing.
	for i := range 5 {
		if r := insert(t0); r != Inserted {
			t.Fatalf("burst insert %d = %v", i, r)
		}
	}
	if r := insert(t0); r != RateLimited {
		t.Fatalf("insert over burst = %v, want rate-limited", r)
	}
	// Updates are free.
	k0 := testKey(0, packet.ProtoTCP)
	for range 20 {
		if r := tb.Insert(&k0, hashOf(0), 2, t0); r != Updated {
			t.Fatalf("update while out of tokens = %v, want updated", r)
		}
	}
	// 10/s: 99 ms is not a token, 100 ms is exactly one.
	if r := insert(t0 + 99*int64(time.Millisecond)); r != RateLimited {
		t.Fatalf("after 99 ms = %v, want rate-limited", r)
	}
	if r := insert(t0 + 100*int64(time.Millisecond)); r != Inserted {
		t.Fatalf("after 100 ms = %v, want inserted", r)
	}
	if r := insert(t0 + 100*int64(time.Millisecond)); r != RateLimited {
		t.Fatalf("second at 100 ms = %v, want rate-limited", r)
	}
	// Over simulated time the rate holds: 10 s in 1 ms steps admit 100.
	admitted := 0
	start := t0 + 100*int64(time.Millisecond)
	for now := start + int64(time.Millisecond); now <= start+10*sec; now += int64(time.Millisecond) {
		if insert(now) == Inserted {
			admitted++
		}
	}
	if admitted != 100 {
		t.Fatalf("admitted %d over 10 s at 10/s, want 100", admitted)
	}
	// A long idle refills only up to the burst.
	later := start + 10*sec + 3600*sec
	for i := range 5 {
		if r := insert(later); r != Inserted {
			t.Fatalf("after idle, insert %d = %v", i, r)
		}
	}
	if r := insert(later); r != RateLimited {
		t.Fatalf("after idle, 6th = %v, want rate-limited (burst 5)", r)
	}
	s := tb.Stats()
	if s.Inserts != 5+1+100+5 || s.RateLimited == 0 || s.Updates != 20 {
		t.Fatalf("Stats = %+v", s)
	}
	if uint64(tb.Len()) != s.Inserts {
		t.Fatalf("Len %d, Inserts %d: rate-limited inserts must store nothing", tb.Len(), s.Inserts)
	}
	// Reset refills the bucket.
	tb.Reset()
	for i := range 5 {
		if r := insert(later); r != Inserted {
			t.Fatalf("after Reset, insert %d = %v", i, r)
		}
	}
}

func TestRateLimitExtremes(t *testing.T) {
	cfg := smallConfig()
	cfg.NewFlowsPerSecond, cfg.NewFlowBurst = ^uint32(0), ^uint32(0)
	tb := newTable(t, cfg)
	// A huge rate and burst with long gaps must not overflow the credit.
	for i := range 100 {
		k := testKey(i, packet.ProtoTCP)
		if r := tb.Insert(&k, hashOf(i), 1, t0+int64(i)*3600*sec); r != Inserted {
			t.Fatalf("insert %d = %v", i, r)
		}
	}
	cfg.NewFlowsPerSecond, cfg.NewFlowBurst = 1, 1
	tb = newTable(t, cfg)
	k := testKey(1, packet.ProtoTCP)
	tb.Insert(&k, hashOf(1), 1, t0)
	k = testKey(2, packet.ProtoTCP)
	// The clock must not go backwards; if it does, no credit is invented.
	if r := tb.Insert(&k, hashOf(2), 1, t0-10*sec); r != RateLimited {
		t.Fatalf("insert with earlier now = %v, want rate-limited", r)
	}
	if r := tb.Insert(&k, hashOf(2), 1, t0+sec); r != Inserted {
		t.Fatalf("insert 1 s later = %v, want inserted", r)
	}
}

func TestSweep(t *testing.T) {
	cfg := smallConfig()
	cfg.Capacity = 1 << 16 // no bucket overflows with 1500 entries
	tb := newTable(t, cfg)
	const nUDP, nTCP = 1000, 500
	for i := range nUDP + nTCP {
		proto := uint8(packet.ProtoUDP)
		if i >= nUDP {
			proto = packet.ProtoTCP
		}
		k := testKey(i, proto)
		tb.Insert(&k, hashOf(i), 1, t0)
	}
	if tb.Len() != nUDP+nTCP {
		t.Fatalf("Len = %d before sweep", tb.Len())
	}
	if got := tb.Sweep(t0+10*sec, tb.Buckets()); got != 0 {
		t.Fatalf("Sweep before any timeout reclaimed %d", got)
	}
	now := t0 + 31*sec
	// Small steps that do not divide the bucket count: the cursor resumes
	// and wraps, and a full pass reclaims every expired entry exactly once.
	const step = 37
	total := 0
	for visited := 0; visited < tb.Buckets(); visited += step {
		total += tb.Sweep(now, step)
	}
	if total != nUDP || tb.Len() != nTCP {
		t.Fatalf("swept %d, Len %d; want %d, %d", total, tb.Len(), nUDP, nTCP)
	}
	if got := tb.Sweep(now, tb.Buckets()*3); got != 0 {
		t.Fatalf("second pass reclaimed %d", got)
	}
	if got := tb.Sweep(now, 0); got != 0 {
		t.Fatalf("Sweep(0) = %d", got)
	}
	for i := nUDP; i < nUDP+nTCP; i++ {
		k := testKey(i, packet.ProtoTCP)
		if _, ok := tb.Lookup(&k, hashOf(i), now); !ok {
			t.Fatalf("TCP key %d lost by sweep", i)
		}
	}
	if s := tb.Stats(); s.Expired != nUDP || s.Entries != nTCP {
		t.Fatalf("Stats = %+v", s)
	}
	if got := tb.Sweep(now+16*60*sec, tb.Buckets()); got != nTCP || tb.Len() != 0 {
		t.Fatalf("sweep after TCP timeout = %d, Len %d", got, tb.Len())
	}
}

func TestSweepResumes(t *testing.T) {
	cfg := smallConfig()
	cfg.Capacity = 70 // 10 buckets
	tb := newTable(t, cfg)
	if tb.Buckets() != 10 || tb.Capacity() != 70 {
		t.Fatalf("Buckets %d Capacity %d", tb.Buckets(), tb.Capacity())
	}
	// One expired entry in each bucket; bucket b is chosen by the hash.
	for b := range 10 {
		k := testKey(b, packet.ProtoUDP)
		h := uint64((uint64(b)<<32)/10 + 1) // index = h*10>>32 = b
		tb.Insert(&k, h, 1, t0)
		if got := tb.index(h); got != uint64(b) {
			t.Fatalf("hash %#x indexes bucket %d, want %d", h, got, b)
		}
	}
	now := t0 + 60*sec
	for i := range 10 {
		if got := tb.Sweep(now, 1); got != 1 {
			t.Fatalf("Sweep step %d reclaimed %d, want 1 (cursor did not resume)", i, got)
		}
	}
	if tb.Len() != 0 {
		t.Fatalf("Len = %d", tb.Len())
	}
}

func TestReset(t *testing.T) {
	tb := newTable(t, smallConfig())
	for i := range 100 {
		k := testKey(i, packet.ProtoTCP)
		tb.Insert(&k, hashOf(i), 1, t0)
	}
	before := tb.Stats()
	tb.Reset()
	if tb.Len() != 0 {
		t.Fatalf("Len after Reset = %d", tb.Len())
	}
	k := testKey(3, packet.ProtoTCP)
	if _, ok := tb.Lookup(&k, hashOf(3), t0); ok {
		t.Fatal("entry survived Reset")
	}
	if got := tb.Stats(); got.Inserts != before.Inserts {
		t.Fatalf("Reset changed counters: %+v", got)
	}
}

func TestCapacityRounding(t *testing.T) {
	for _, c := range []struct{ in, want int }{{1, 7}, {7, 7}, {8, 14}, {1 << 20, 1048579}} {
		cfg := DefaultConfig()
		cfg.Capacity = c.in
		tb := newTable(t, cfg)
		if tb.Capacity() != c.want || tb.Config().Capacity != c.want {
			t.Errorf("Capacity(%d) = %d, want %d", c.in, tb.Capacity(), c.want)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	for _, c := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"zero capacity", func(c *Config) { c.Capacity = 0 }, "Capacity 0"},
		{"huge capacity", func(c *Config) { c.Capacity = MaxCapacity + 1 }, "Capacity"},
		{"zero tcp", func(c *Config) { c.TCPTimeout = 0 }, "TCPTimeout 0s"},
		{"short udp", func(c *Config) { c.UDPTimeout = 500 * time.Millisecond }, "UDPTimeout 500ms"},
		{"long other", func(c *Config) { c.OtherTimeout = MaxTimeout + 1 }, "OtherTimeout"},
		{"rate without burst", func(c *Config) { c.NewFlowsPerSecond = 1000 }, "NewFlowBurst 0"},
		{"burst without rate", func(c *Config) { c.NewFlowBurst = 10 }, "NewFlowsPerSecond 0"},
	} {
		cfg := DefaultConfig()
		c.mod(&cfg)
		_, err := New(cfg)
		if err == nil {
			t.Errorf("%s: New succeeded", c.name)
			continue
		}
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "set") {
			t.Errorf("%s: error %q: want ErrInvalidConfig naming %q and what to set", c.name, err, c.want)
		}
	}
	cfg := DefaultConfig()
	cfg.NewFlowsPerSecond, cfg.NewFlowBurst = 1000, 1000
	if _, err := New(cfg); err != nil {
		t.Errorf("valid rate limit: %v", err)
	}
}

func TestLayout(t *testing.T) {
	bt := reflect.TypeFor[bucket]()
	if s := bt.Size(); s != bucketBytes || s%128 != 0 {
		t.Fatalf("bucket is %d bytes, want bucketBytes (%d), a multiple of 128", s, bucketBytes)
	}
	keys, _ := bt.FieldByName("keys")
	backend, _ := bt.FieldByName("backend")
	if keys.Offset != 64 || backend.Offset+backend.Type.Size() > 64 {
		t.Fatalf("metadata ends at %d and keys start at %d, want both 64 (one metadata line)",
			backend.Offset+backend.Type.Size(), keys.Offset)
	}
	if s := reflect.TypeFor[packet.FlowKey]().Size(); 64+s > 128 {
		t.Fatalf("FlowKey is %d bytes: slot 0's key no longer shares the metadata's 128-byte pair", s)
	}
}

// TestMemory1M checks the cost of a table for 1<<20 flows, both as computed
// and as allocated: Go heap growth plus the buckets' own mapping.
func TestMemory1M(t *testing.T) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	tb := newTable(t, DefaultConfig())
	runtime.ReadMemStats(&after)
	heap := int64(after.HeapAlloc) - int64(before.HeapAlloc) + int64(len(tb.mem))
	perEntry := float64(tb.MemoryBytes()) / float64(tb.Capacity())
	t.Logf("capacity %d entries, %d buckets: %.1f MB computed, %.1f MB allocated (%.1f MB mapped), %.2f bytes/entry",
		tb.Capacity(), tb.Buckets(), float64(tb.MemoryBytes())/1e6, float64(heap)/1e6, float64(len(tb.mem))/1e6, perEntry)
	if tb.Capacity() < 1<<20 {
		t.Fatalf("capacity %d < 1<<20", tb.Capacity())
	}
	if perEntry > 56 {
		t.Fatalf("%.2f bytes per entry, want <= 56", perEntry)
	}
	if tb.MemoryBytes() > 60<<20 || heap > 60<<20 {
		t.Fatalf("1M-entry table takes %d bytes (allocated %d), want < 60 MiB", tb.MemoryBytes(), heap)
	}
	if heap < int64(tb.MemoryBytes()) {
		t.Fatalf("%d bytes allocated, less than the computed %d: MemoryBytes is wrong", heap, tb.MemoryBytes())
	}
	runtime.KeepAlive(tb)
}

func TestNoAllocs(t *testing.T) {
	cfg := smallConfig()
	cfg.NewFlowsPerSecond, cfg.NewFlowBurst = 1, 1
	tb := newTable(t, cfg)
	k, h := testKey(1, packet.ProtoTCP), hashOf(1)
	tb.Insert(&k, h, 1, t0)
	miss := testKey(2, packet.ProtoTCP)
	full := newTable(t, smallConfig())
	var fk [SlotsPerBucket + 64]packet.FlowKey
	for j := range fk {
		fk[j] = testKey(1000+j, packet.ProtoTCP)
	}
	for j := range SlotsPerBucket {
		full.Insert(&fk[j], collidingHash(j), 1, t0)
	}
	now, j := t0, SlotsPerBucket
	for _, c := range []struct {
		name string
		f    func()
	}{
		{"Lookup hit", func() { tb.Lookup(&k, h, t0) }},
		{"Lookup miss", func() { tb.Lookup(&miss, hashOf(2), t0) }},
		{"Insert update", func() { tb.Insert(&k, h, 2, t0) }},
		{"Insert rate-limited", func() { tb.Insert(&miss, hashOf(2), 2, t0) }},
		{"Insert evicting", func() {
			now += sec
			if r := full.Insert(&fk[j%len(fk)], collidingHash(j%len(fk)), 3, now); r != Evicted {
				t.Fatalf("Insert = %v, want evicted", r)
			}
			j++
		}},
		{"Insert new and Delete", func() {
			full.Insert(&miss, 12345, 1, now)
			full.Delete(&miss, 12345, now)
		}},
		{"Sweep", func() { tb.Sweep(t0+3600*sec, 16) }},
		{"PrefetchAll", func() { tb.PrefetchAll([]uint64{h, h + 1}) }},
		{"Stats", func() { _ = tb.Stats() }},
	} {
		if a := testing.AllocsPerRun(1000, c.f); a != 0 {
			t.Errorf("%s: %v allocs per run, want 0", c.name, a)
		}
	}
}
