package hashing

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/weirlb/weir/packet"
)

func key(src, dst string, sport, dport uint16, proto uint8) packet.FlowKey {
	s, d := netip.MustParseAddr(src), netip.MustParseAddr(dst)
	k := packet.FlowKey{SrcPort: sport, DstPort: dport, Proto: proto, Family: 6}
	if s.Is4() {
		k.Family = 4
		s4, d4 := s.As4(), d.As4()
		copy(k.Src[:], s4[:])
		copy(k.Dst[:], d4[:])
	} else {
		k.Src, k.Dst = s.As16(), d.As16()
	}
	return k
}

func goldenKeys() []packet.FlowKey {
	return []packet.FlowKey{
		{},
		key("192.0.2.1", "198.51.100.10", 40000, 443, packet.ProtoTCP),
		key("198.51.100.10", "192.0.2.1", 443, 40000, packet.ProtoTCP),
		key("192.0.2.1", "198.51.100.10", 40000, 443, packet.ProtoUDP),
		key("192.0.2.1", "198.51.100.10", 0, 0, packet.ProtoICMP),
		key("2001:db8::1", "2001:db8:ffff::10", 51515, 80, packet.ProtoTCP),
		key("2001:db8::2", "2001:db8:ffff::10", 51515, 80, packet.ProtoTCP),
	}
}

// TestFlowHashGolden pins the hash of a few keys. Appliances must agree on
// these values across versions and architectures: if this test fails, the
// algorithm changed, and an upgrade would move established flows and split
// flows between appliances running old and new versions.
func TestFlowHashGolden(t *testing.T) {
	want := []struct{ def, one uint64 }{
		{0x881b8e241e602381, 0x08bf24f2f994e30a},
		{0xd202aeddb54304ed, 0x3a3af654512b1777},
		{0x8233ac6fcb3f511a, 0x14a558bd4733e020},
		{0xec88f093caaad729, 0xa928aafd7c174e30},
		{0x134a6930d0dcf32c, 0xa2f2e1a5aaa6694b},
		{0xe2ca73607f25c8ae, 0x60cbd6ae9e2a1947},
		{0x6ea655f92988584a, 0xb68c26d429f7caf0},
	}
	for i, k := range goldenKeys() {
		if got := FlowHash(&k, DefaultFlowSeed); got != want[i].def {
			t.Errorf("key %d %+v: FlowHash(DefaultFlowSeed) = %#016x, want %#016x", i, k, got, want[i].def)
		}
		if got := FlowHash(&k, 1); got != want[i].one {
			t.Errorf("key %d %+v: FlowHash(1) = %#016x, want %#016x", i, k, got, want[i].one)
		}
	}
}

// TestFlowHashConstants re-derives the seed and mixing constants from
// SplitMix64 started at "weir", so a typo in one of them cannot hide.
func TestFlowHashConstants(t *testing.T) {
	want := []uint64{DefaultFlowSeed, flowK0, flowK1, flowK2, flowK3, flowK4, flowK5, flowK6}
	x := uint64(0x77656972)
	for i, w := range want {
		x += 0x9e3779b97f4a7c15
		z := x
		z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
		z = (z ^ z>>27) * 0x94d049bb133111eb
		z ^= z >> 31
		if z != w {
			t.Errorf("constant %d = %#016x, SplitMix64 gives %#016x", i, w, z)
		}
	}
}

// keyBits is the number of meaningful bits of a FlowKey (padding excluded).
const keyBits = 128 + 128 + 16 + 16 + 8 + 8

// flipBit flips meaningful bit i of k.
func flipBit(k *packet.FlowKey, i int) {
	switch {
	case i < 128:
		k.Src[i/8] ^= 1 << (i % 8)
	case i < 256:
		k.Dst[(i-128)/8] ^= 1 << (i % 8)
	case i < 272:
		k.SrcPort ^= 1 << (i - 256)
	case i < 288:
		k.DstPort ^= 1 << (i - 272)
	case i < 296:
		k.Proto ^= 1 << (i - 288)
	default:
		k.Family ^= 1 << (i - 296)
	}
}

// sampleKey returns a base key for avalanche sampling: half are fully
// random, half are low-entropy IPv4 keys of the kind real traffic has (one
// VIP, consecutive client addresses and ports, upper address bytes zero).
func sampleKey(rng *rand.Rand, j int) packet.FlowKey {
	if j%2 == 0 {
		var k packet.FlowKey
		for b := range k.Src {
			k.Src[b], k.Dst[b] = byte(rng.Uint32()), byte(rng.Uint32())
		}
		k.SrcPort, k.DstPort = uint16(rng.Uint32()), uint16(rng.Uint32())
		k.Proto, k.Family = byte(rng.Uint32()), byte(rng.Uint32())
		return k
	}
	k := key("10.0.0.0", "203.0.113.7", uint16(32768+j), 443, packet.ProtoTCP)
	binary.BigEndian.PutUint32(k.Src[:4], 0x0a000000+uint32(j/2))
	return k
}

// TestFlowHashAvalanche is the strict avalanche criterion: flipping any one
// input bit (every meaningful key bit, and every seed bit) must flip every
// output bit with probability 1/2. With 4000 samples per input bit the
// standard deviation of a measured probability is 0.008; the tolerance of
// 0.05 is over 6 of them, so a correct hash fails by chance with
// probability far below 1e-4 over all 23,552 cells, while a hash that
// ignores a bit, or spreads it to only a few output bits, fails outright.
func TestFlowHashAvalanche(t *testing.T) {
	const samples = 4000
	const tol = 0.05
	rng := rand.New(rand.NewPCG(42, 43))
	bases := make([]packet.FlowKey, samples)
	seeds := make([]uint64, samples)
	for j := range bases {
		bases[j] = sampleKey(rng, j)
		seeds[j] = DefaultFlowSeed
		if j%4 == 0 {
			seeds[j] = rng.Uint64()
		}
	}
	var worst float64
	check := func(what string, flips *[64]int) {
		for o, n := range flips {
			p := float64(n) / samples
			worst = max(worst, math.Abs(p-0.5))
			if math.Abs(p-0.5) > tol {
				t.Errorf("%s: output bit %d flips with probability %.3f", what, o, p)
			}
		}
	}
	for i := range keyBits {
		var flips [64]int
		for j := range bases {
			k := bases[j]
			h0 := FlowHash(&k, seeds[j])
			flipBit(&k, i)
			countFlips(&flips, h0^FlowHash(&k, seeds[j]))
		}
		check(fmt.Sprintf("key bit %d", i), &flips)
	}
	for i := range 64 {
		var flips [64]int
		for j := range bases {
			countFlips(&flips, FlowHash(&bases[j], seeds[j])^FlowHash(&bases[j], seeds[j]^1<<i))
		}
		check(fmt.Sprintf("seed bit %d", i), &flips)
	}
	t.Logf("worst |P(flip) - 0.5| = %.4f", worst)
}

func countFlips(flips *[64]int, d uint64) {
	for d != 0 {
		flips[bits.TrailingZeros64(d)]++
		d &= d - 1
	}
}

// structuredKeys returns n distinct keys shaped like real traffic to one
// VIP: many clients in one /16, each with many source ports.
func structuredKeys(n int) []packet.FlowKey {
	ks := make([]packet.FlowKey, n)
	for i := range ks {
		ks[i] = key("10.1.0.0", "203.0.113.7", uint16(1024+i%61440), 443, packet.ProtoTCP)
		binary.BigEndian.PutUint32(ks[i].Src[:4], 0x0a010000+uint32(i/61440))
	}
	return ks
}

// chiSquare checks counts against a uniform expectation and returns the
// statistic divided by its degrees of freedom (about 1 when uniform).
func chiSquare(t *testing.T, what string, counts []int, total int) {
	t.Helper()
	e := float64(total) / float64(len(counts))
	var chi float64
	for _, c := range counts {
		d := float64(c) - e
		chi += d * d / e
	}
	df := float64(len(counts) - 1)
	z := (chi - df) / math.Sqrt(2*df)
	t.Logf("%s: chi2/df = %.4f (z = %.2f)", what, chi/df, z)
	if math.Abs(z) > 6 {
		t.Errorf("%s: not uniform: chi2 = %.0f for %v degrees of freedom (z = %.1f)", what, chi, df, z)
	}
}

// TestFlowHashDistribution: structured traffic must spread evenly over the
// slots of a Maglev table (high bits, via Slot), over the low bits (a
// power-of-two flow table), and over the backends of a table; each output
// bit must be unbiased; and no two distinct keys may collide.
func TestFlowHashDistribution(t *testing.T) {
	keys := structuredKeys(16 * int(DefaultTableSize))
	tab := mustTable(t, equalBackends(backendNames(10), 1), DefaultTableSize)

	slots := make([]int, tab.Size())
	low := make([]int, 1<<16)
	perBackend := make([]int, tab.Backends())
	var ones [64]int
	hs := make([]uint64, len(keys))
	for i := range keys {
		h := FlowHash(&keys[i], DefaultFlowSeed)
		hs[i] = h
		slots[tab.Slot(h)]++
		low[h&0xffff]++
		perBackend[tab.Lookup(h)]++
		countFlips(&ones, h)
	}
	chiSquare(t, "maglev slots", slots, len(keys))
	chiSquare(t, "low 16 bits", low, len(keys))

	for i, n := range perBackend {
		want := float64(len(keys)) * float64(tab.Count(i)) / float64(tab.Size())
		if dev := math.Abs(float64(n)-want) / want; dev > 0.015 {
			t.Errorf("backend %d got %d flows, want %.0f (%.2f%% off)", i, n, want, 100*dev)
		}
	}
	sd := math.Sqrt(float64(len(keys))) / 2
	for b, n := range ones {
		if d := math.Abs(float64(n) - float64(len(keys))/2); d > 6*sd {
			t.Errorf("output bit %d is 1 in %d of %d hashes", b, n, len(keys))
		}
	}
	slices.Sort(hs)
	for i := 1; i < len(hs); i++ {
		if hs[i] == hs[i-1] {
			t.Errorf("two of %d distinct keys collide on %#016x", len(hs), hs[i])
		}
	}
}

func TestFlowHashSeedAndDirection(t *testing.T) {
	k := key("192.0.2.1", "198.51.100.10", 40000, 443, packet.ProtoTCP)
	r := key("198.51.100.10", "192.0.2.1", 443, 40000, packet.ProtoTCP)
	if FlowHash(&k, DefaultFlowSeed) == FlowHash(&r, DefaultFlowSeed) {
		t.Error("a flow and its reverse hash alike; the hash must see direction")
	}
	if FlowHash(&k, DefaultFlowSeed) == FlowHash(&k, DefaultFlowSeed+1) {
		t.Error("the seed does not change the hash")
	}
	// Swapping the two ports, or the two addresses, alone must also matter.
	p := k
	p.SrcPort, p.DstPort = p.DstPort, p.SrcPort
	a := k
	a.Src, a.Dst = a.Dst, a.Src
	if FlowHash(&p, 0) == FlowHash(&k, 0) || FlowHash(&a, 0) == FlowHash(&k, 0) {
		t.Error("swapping ports or addresses leaves the hash unchanged")
	}
}

func TestFlowHashNoAllocs(t *testing.T) {
	keys := structuredKeys(64)
	var sink uint64
	i := 0
	if a := testing.AllocsPerRun(1000, func() {
		sink += FlowHash(&keys[i%len(keys)], DefaultFlowSeed)
		i++
	}); a != 0 {
		t.Fatalf("FlowHash allocates %v times per call", a)
	}
	_ = sink
}

func BenchmarkFlowHash(b *testing.B) {
	keys := structuredKeys(1024)
	var sink uint64
	i := 0
	for b.Loop() {
		sink += FlowHash(&keys[i&1023], DefaultFlowSeed)
		i++
	}
	_ = sink
	reportPerPacket(b)
}

// BenchmarkFlowHashLookup is the per-new-flow cost of backend selection:
// hash the key, then look the hash up.
func BenchmarkFlowHashLookup(b *testing.B) {
	keys := structuredKeys(1024)
	tab := mustTable(b, weightedBackends(100), DefaultTableSize)
	sink := 0
	i := 0
	for b.Loop() {
		sink += tab.Lookup(FlowHash(&keys[i&1023], DefaultFlowSeed))
		i++
	}
	_ = sink
	reportPerPacket(b)
}

func reportPerPacket(b *testing.B) {
	ns := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	b.ReportMetric(ns, "ns/pkt")
	b.ReportMetric(1e3/ns, "Mpps")
}
