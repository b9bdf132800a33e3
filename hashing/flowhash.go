package hashing

import (
	"encoding/binary"
	"math/bits"

	"github.com/weirlb/weir/packet"
)

// DefaultFlowSeed is the seed every appliance uses unless its configuration
// says otherwise. Appliances that must agree on flow placement (ECMP
// siblings, a restarted process) must use the same seed.
//
// It and the mixing constants below are the first outputs of SplitMix64
// started at 0x77656972 ("weir"); TestFlowHashConstants re-derives them.
const DefaultFlowSeed uint64 = 0x2e650536bd898102

// Mixing constants: one per 64-bit input word, plus one for the final fold.
// Their only job is to make every multiplier operand a dense, seed-dependent
// value, so no input word meets a multiplication by a small or zero number.
const (
	flowK0 = 0x082405fad1ae346a
	flowK1 = 0xf96d67211e2afa49
	flowK2 = 0x6d737acbcdb9bc02
	flowK3 = 0xc70801a26c18385f
	flowK4 = 0xbfc1e7b0dc7127b5
	flowK5 = 0xd6911c563ca7a039
	flowK6 = 0xc8cf330f71f999bb
)

// FlowHash returns a 64-bit hash of the flow key k under seed.
//
// The result is a pure function of the key's fields and the seed: the same
// on every process, architecture and Go version (fixed constants, explicit
// little-endian loads, no unsafe, no runtime-randomised hashing). It does
// not allocate and runs in a few nanoseconds.
//
// Construction: the key is read as five 64-bit words (Src low/high,
// Dst low/high, and ports|proto|family). Each pair of words, XORed with the
// seed and distinct constants, is multiplied into a 128-bit product that is
// folded to 64 bits (high XOR low); the three partial results are folded the
// same way once more. Multiplication spreads every input bit over the high
// half of the product and the fold brings it back, so a single flipped input
// bit flips each output bit with probability close to 1/2 (see the
// avalanche test). The operands are also XORed into each fold so that an
// operand that happens to be zero cannot erase its partner word.
//
// The padding bytes of FlowKey are not part of the hash. High bits are as
// well mixed as low ones, so both Table.Lookup (which uses the high bits)
// and a power-of-two flow table (which may use the low bits) can consume
// the same value.
//
// FlowHash is not a cryptographic MAC: with a known seed an attacker can
// search for colliding keys. Its purpose is even, reproducible spreading.
func FlowHash(k *packet.FlowKey, seed uint64) uint64 {
	s0 := binary.LittleEndian.Uint64(k.Src[0:8])
	s1 := binary.LittleEndian.Uint64(k.Src[8:16])
	d0 := binary.LittleEndian.Uint64(k.Dst[0:8])
	d1 := binary.LittleEndian.Uint64(k.Dst[8:16])
	t := k.Tail() // SrcPort | DstPort<<16 | Proto<<32 | Family<<40

	a := fold(s0^seed^flowK0, s1^flowK1)
	b := fold(d0^seed^flowK2, d1^flowK3)
	c := fold(t^seed^flowK4, seed^flowK5)
	return fold(a^c^flowK6, b^seed)
}

// fold multiplies x and y into 128 bits and XORs the halves together, plus
// both operands so that neither can be cancelled by the other being zero.
func fold(x, y uint64) uint64 {
	hi, lo := bits.Mul64(x, y)
	return hi ^ lo ^ x ^ y
}
