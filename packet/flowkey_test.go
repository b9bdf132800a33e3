package packet

import (
	"math/rand/v2"
	"testing"
)

// TestFlowKeyEqual checks the word-wise Equal against Go's == on the struct,
// which compares the fields and ignores the padding: for equal keys, and for
// keys that differ in one byte of any field, written every way the package
// writes keys (fields, literals, setV4, setV6).
func TestFlowKeyEqual(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 11))
	randKey := func() FlowKey {
		var k FlowKey
		for i := range k.Src {
			k.Src[i], k.Dst[i] = byte(r.Uint32()), byte(r.Uint32())
		}
		k.SrcPort, k.DstPort = uint16(r.Uint32()), uint16(r.Uint32())
		k.Proto, k.Family = byte(r.Uint32()), byte(r.Uint32())
		return k
	}
	// mutations each change one byte of one field.
	mutations := []func(k *FlowKey, b byte){
		func(k *FlowKey, b byte) { k.Src[r.IntN(16)] ^= b },
		func(k *FlowKey, b byte) { k.Dst[r.IntN(16)] ^= b },
		func(k *FlowKey, b byte) { k.SrcPort ^= uint16(b) << (8 * r.IntN(2)) },
		func(k *FlowKey, b byte) { k.DstPort ^= uint16(b) << (8 * r.IntN(2)) },
		func(k *FlowKey, b byte) { k.Proto ^= b },
		func(k *FlowKey, b byte) { k.Family ^= b },
	}
	for range 10000 {
		a := randKey()
		b := a
		if !a.Equal(&b) || !b.Equal(&a) {
			t.Fatalf("%+v: a copy is not Equal", a)
		}
		mutations[r.IntN(len(mutations))](&b, byte(1+r.IntN(255)))
		if a.Equal(&b) != (a == b) || a == b {
			t.Fatalf("%+v and %+v: Equal %v, == %v", a, b, a.Equal(&b), a == b)
		}
	}

	// The word writers against field assignment.
	src, dst := []byte{192, 0, 2, 1}, []byte{198, 51, 100, 7}
	var w FlowKey
	w.setV4(src, dst, 40000, 80, ProtoTCP)
	f := FlowKey{SrcPort: 40000, DstPort: 80, Proto: ProtoTCP, Family: 4}
	copy(f.Src[:], src)
	copy(f.Dst[:], dst)
	if !w.Equal(&f) || w != f {
		t.Fatalf("setV4 %+v, fields %+v: not Equal", w, f)
	}
	src6, dst6 := make([]byte, 16), make([]byte, 16)
	for i := range src6 {
		src6[i], dst6[i] = byte(0x20+i), byte(0x90-i)
	}
	w.setV6(src6, dst6, 5353, 53, ProtoUDP)
	f = FlowKey{SrcPort: 5353, DstPort: 53, Proto: ProtoUDP, Family: 6, Src: [16]byte(src6), Dst: [16]byte(dst6)}
	if !w.Equal(&f) || w != f {
		t.Fatalf("setV6 %+v, fields %+v: not Equal", w, f)
	}
}

// Tail is the formula it documents, for keys written field by field and by
// the word writers.
func TestFlowKeyTail(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 5))
	want := func(k *FlowKey) uint64 {
		return uint64(k.SrcPort) | uint64(k.DstPort)<<16 | uint64(k.Proto)<<32 | uint64(k.Family)<<40
	}
	for range 1000 {
		k := FlowKey{SrcPort: uint16(r.Uint32()), DstPort: uint16(r.Uint32()), Proto: byte(r.Uint32()), Family: byte(r.Uint32())}
		if got := k.Tail(); got != want(&k) {
			t.Fatalf("%+v: Tail %#x, want %#x", k, got, want(&k))
		}
	}
	var k FlowKey
	k.setV4([]byte{192, 0, 2, 1}, []byte{198, 51, 100, 7}, 40000, 80, ProtoTCP)
	if k.Tail() != want(&k) {
		t.Fatalf("setV4: Tail %#x, want %#x", k.Tail(), want(&k))
	}
	k.setV6(make([]byte, 16), make([]byte, 16), 5353, 53, ProtoUDP)
	if k.Tail() != want(&k) {
		t.Fatalf("setV6: Tail %#x, want %#x", k.Tail(), want(&k))
	}
}
