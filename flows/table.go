package flows

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"runtime"
	"time"
	"unsafe"

	"github.com/weirlb/weir/internal/hugemem"
	"github.com/weirlb/weir/packet"
)

// SlotsPerBucket is the associativity of the table: a flow can live in any
// of the 7 slots of the bucket its hash selects.
const SlotsPerBucket = 7

// Tick is the resolution of entry deadlines.
const Tick = time.Duration(1) << tickShift

const tickShift = 24

// bucketBytes is the size of a bucket, for MemoryBytes and prefault. A test
// checks it against the compiler's layout.
const bucketBytes = 384

// SWAR constants over the 8 tag bytes of a bucket (byte i = slot i; byte 7
// is not a slot and is always 0).
const (
	lsb      = 0x0101010101010101
	low7     = 0x7f7f7f7f7f7f7f7f
	slotsMSB = 0x0080808080808080 // high bit of each real slot's byte
)

// bucket is SlotsPerBucket slots in six cache lines. The first line holds
// all the metadata (a miss reads nothing else); the keys follow, so the key
// a hit compares is on the same page as the metadata (no second TLB miss)
// and slot 0's key is in the metadata's 128-byte line pair, which the CPU's
// adjacent-line prefetcher and PrefetchAll bring in together. Inserts fill the
// lowest free slot, so in a table that is not full most flows are in slot 0.
//
// A tag of 0 marks an empty slot; a live slot's tag is the top byte of its
// flow hash (forced non-zero), so a lookup compares a key only when the tag
// matches (a false match costs 7/255 key compares per miss on a full bucket).
// The 40 bytes of padding make a bucket 3×128 bytes, so every bucket starts
// a 128-byte pair (Go allocates large slices page-aligned).
type bucket struct {
	tags     [8]uint8
	deadline [SlotsPerBucket]uint32 // tick at which the entry expires
	backend  [SlotsPerBucket]uint32
	keys     [SlotsPerBucket]packet.FlowKey
	_        [40]byte
}

// InsertResult says what Insert did.
type InsertResult uint8

const (
	// Inserted: the key was new and took a free or expired slot.
	Inserted InsertResult = iota + 1
	// Updated: the key was present; its backend was set and its idle
	// deadline refreshed. Updates never consume a rate-limit token.
	Updated
	// Evicted: the key was new, its bucket was full of live entries, and the
	// entry closest to its idle deadline was replaced.
	Evicted
	// RateLimited: the key was new but the new-flow token bucket was empty;
	// nothing was stored. The caller forwards the packet anyway.
	RateLimited
)

func (r InsertResult) String() string {
	switch r {
	case Inserted:
		return "inserted"
	case Updated:
		return "updated"
	case Evicted:
		return "evicted"
	case RateLimited:
		return "rate-limited"
	}
	return "invalid"
}

// Stats are the table's counters. They are plain fields owned by the worker
// goroutine that owns the Table: other goroutines must never read them (or
// call Stats) directly; the worker copies them out once per batch.
type Stats struct {
	Hits        uint64 // Lookup found a live entry
	Misses      uint64 // Lookup found nothing live
	Inserts     uint64 // new entries stored (Inserted plus Evicted)
	Updates     uint64 // Insert on a live key
	Evictions   uint64 // live entries replaced because their bucket was full
	RateLimited uint64 // new entries not stored for lack of a token
	Expired     uint64 // expired entries reclaimed (Sweep, or found by Lookup/Insert/Delete)
	Deletes     uint64 // Delete removed a live entry
	Entries     int    // gauge: occupied slots, as Len
}

// Table is a fixed-capacity flow table. It is not safe for concurrent use:
// one worker goroutine owns it (see the package documentation).
type Table struct {
	buckets []bucket
	nb      uint64 // len(buckets)

	mem   []byte          // the buckets' mapping, when outside the Go heap
	unmap runtime.Cleanup // unmaps mem if Close is never called

	timeout [256]uint32 // idle timeout in ticks, by IP protocol

	n      int // occupied slots
	cursor int // next bucket for Sweep

	// New-flow token bucket. credit counts billionths of a token, so one
	// nanosecond adds exactly rate units and no rounding accumulates.
	rate      uint64 // tokens per second; 0 = unlimited
	credit    uint64
	maxCredit uint64 // burst * 1e9
	fillNs    uint64 // nanoseconds that refill an empty bucket
	lastFill  int64
	primed    bool // lastFill is valid

	sink  uint64 // keeps PrefetchAll's loads alive
	stats Stats
	cfg   Config
}

const tokenUnits = 1_000_000_000

// New builds a table from cfg, allocating all of its memory.
func New(cfg Config) (*Table, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	nb := (cfg.Capacity + SlotsPerBucket - 1) / SlotsPerBucket
	cfg.Capacity = nb * SlotsPerBucket
	t := &Table{
		nb:  uint64(nb),
		cfg: cfg,
	}
	if err := t.allocate(nb); err != nil {
		return nil, err
	}
	other := ticks(cfg.OtherTimeout)
	for p := range t.timeout {
		t.timeout[p] = other
	}
	t.timeout[packet.ProtoTCP] = ticks(cfg.TCPTimeout)
	t.timeout[packet.ProtoUDP] = ticks(cfg.UDPTimeout)
	if cfg.NewFlowsPerSecond > 0 {
		t.rate = uint64(cfg.NewFlowsPerSecond)
		t.maxCredit = uint64(cfg.NewFlowBurst) * tokenUnits
		t.fillNs = t.maxCredit / t.rate
	}
	return t, nil
}

// allocate gives t its nb buckets. A table of a huge page or more lives
// outside the Go heap, on huge pages where the kernel has them: a lookup
// reads one bucket at random, and with 4 KiB pages the default table of a
// million entries (55 MiB) spans 14,000 pages, so nearly every lookup would
// also miss the TLB; with huge pages it spans 28. The area is unmapped by Close, or
// once the table is unreachable.
func (t *Table) allocate(nb int) error {
	size := nb * int(unsafe.Sizeof(bucket{}))
	if size < hugemem.HugePage {
		t.buckets = make([]bucket, nb)
		t.prefault()
		return nil
	}
	mem, err := hugemem.Map(size)
	if err != nil {
		return fmt.Errorf("flows: map %d buckets (%d bytes): %w", nb, size, err)
	}
	// bucket holds no pointers, so memory the garbage collector does not
	// know may hold it.
	t.buckets = unsafe.Slice((*bucket)(unsafe.Pointer(unsafe.SliceData(mem))), nb)
	t.unmap = runtime.AddCleanup(t, func(mem []byte) { hugemem.Unmap(mem) }, mem)
	t.mem = mem
	return nil
}

// Close releases the table's memory now rather than when the garbage
// collector finds it unreachable. The table must not be used afterwards.
func (t *Table) Close() {
	if t.mem == nil {
		t.buckets = nil
		return
	}
	t.unmap.Stop()
	hugemem.Unmap(t.mem)
	t.mem, t.buckets = nil, nil
}

// prefault writes a byte in every page of a table on the Go heap (hugemem
// populates its mappings itself). A fresh allocation may be untouched
// anonymous memory; without this, the first flow landing on each page would
// pay a page fault (microseconds) on the packet path.
func (t *Table) prefault() {
	const page = 4096
	for i := 0; i < len(t.buckets); i += page / bucketBytes {
		t.buckets[i].tags[7] = 0
	}
}

// ticks converts a timeout to deadline ticks, rounding up so an entry never
// expires before its timeout.
func ticks(d time.Duration) uint32 {
	return uint32((d + Tick - 1) >> tickShift)
}

// tick is now in deadline ticks, modulo 2^32.
func tick(now int64) uint32 {
	return uint32(now >> tickShift)
}

// index maps the low 32 bits of the hash onto [0, nb) by multiply-shift,
// which needs no power-of-two bucket count and leaves the top byte (the tag)
// independent of the bucket.
func (t *Table) index(hash uint64) uint64 {
	return bucketOf(hash, t.nb)
}

func bucketOf(hash, nb uint64) uint64 {
	return (uint64(uint32(hash)) * nb) >> 32
}

// PrefetchAll loads, for each hash of a batch, the cache lines that a Lookup
// or Insert of a key with that hash reads first: the bucket's metadata and
// slot 0's key. A worker calls it for a whole batch before it looks any of
// them up, so that the batch's cache misses overlap instead of being paid one
// after another (on the development VM, lookups over 64k flows in a 1M table
// cost about 42 ns each one by one and 22 ns in batches of 32 after a
// prefetch). Go has no prefetch instruction, so these are ordinary loads in
// one tight loop that keeps the table's fields and the loads' sum in
// registers, kept alive through a field; on cached buckets it costs about a
// nanosecond a hash.
func (t *Table) PrefetchAll(hashes []uint64) {
	buckets, nb := t.buckets, t.nb
	var sum uint64
	for _, h := range hashes {
		b := &buckets[bucketOf(h, nb)]
		sum += uint64(b.tags[0]) + uint64(b.keys[0].Family)
	}
	t.sink += sum
}

func tagOf(hash uint64) uint8 {
	tag := uint8(hash >> 56)
	if tag == 0 {
		tag = 1
	}
	return tag
}

func loadTags(b *bucket) uint64 {
	return binary.LittleEndian.Uint64(b.tags[:])
}

// zeroBytes sets the high bit of every byte of x that is zero (exactly: no
// false positives from borrows).
func zeroBytes(x uint64) uint64 {
	return ^(((x & low7) + low7) | x | low7)
}

// matchTag returns the slots whose tag equals tag, one high bit per slot.
func matchTag(tags uint64, tag uint8) uint64 {
	return zeroBytes(tags^(lsb*uint64(tag))) & slotsMSB
}

func emptySlots(tags uint64) uint64 {
	return zeroBytes(tags) & slotsMSB
}

func usedSlots(tags uint64) uint64 {
	return ^zeroBytes(tags) & slotsMSB
}

// Lookup returns the backend remembered for k. On a hit it refreshes the
// entry's idle deadline. An expired entry is a miss, and its slot is freed.
func (t *Table) Lookup(k *packet.FlowKey, hash uint64, now int64) (backend uint32, ok bool) {
	bi := t.index(hash)
	b := &t.buckets[bi]
	keys := &b.keys
	for m := matchTag(loadTags(b), tagOf(hash)); m != 0; m &= m - 1 {
		i := bits.TrailingZeros64(m) >> 3
		if !keys[i].Equal(k) {
			continue
		}
		nt := tick(now)
		if int32(b.deadline[i]-nt) > 0 {
			b.deadline[i] = nt + t.timeout[k.Proto]
			t.stats.Hits++
			return b.backend[i], true
		}
		b.tags[i] = 0
		t.n--
		t.stats.Expired++
		break
	}
	t.stats.Misses++
	return 0, false
}

// Insert remembers backend for k. A live k is updated (and its deadline
// refreshed) without consuming a rate-limit token. A new k takes a token, or
// is not stored (RateLimited) when none is left; then it takes an empty or
// expired slot, or, when the bucket is full of live entries, replaces the one
// whose idle deadline comes first (Evicted). For entries of one protocol that
// is the least recently seen; across protocols it is the one that would
// expire first anyway (a UDP entry idle 25 s goes before a TCP entry idle a
// minute). Insert never fails otherwise.
func (t *Table) Insert(k *packet.FlowKey, hash uint64, backend uint32, now int64) InsertResult {
	bi := t.index(hash)
	b := &t.buckets[bi]
	keys := &b.keys
	nt := tick(now)
	tags := loadTags(b)
	for m := matchTag(tags, tagOf(hash)); m != 0; m &= m - 1 {
		i := bits.TrailingZeros64(m) >> 3
		if !keys[i].Equal(k) {
			continue
		}
		if int32(b.deadline[i]-nt) > 0 {
			b.backend[i] = backend
			b.deadline[i] = nt + t.timeout[k.Proto]
			t.stats.Updates++
			return Updated
		}
		// Expired: the old entry is gone and this is a new flow.
		b.tags[i] = 0
		tags &^= 0xff << (8 * i)
		t.n--
		t.stats.Expired++
		break
	}
	if t.rate != 0 && !t.takeToken(now) {
		t.stats.RateLimited++
		return RateLimited
	}
	res := Inserted
	var i int
	if e := emptySlots(tags); e != 0 {
		i = bits.TrailingZeros64(e) >> 3
		t.n++
	} else {
		// Full: take the slot whose deadline comes first. If it has passed,
		// this reclaims an expired entry rather than evicting a live one.
		best := int32(b.deadline[0] - nt)
		for j := 1; j < SlotsPerBucket; j++ {
			if r := int32(b.deadline[j] - nt); r < best {
				best, i = r, j
			}
		}
		if best > 0 {
			res = Evicted
			t.stats.Evictions++
		} else {
			t.stats.Expired++
		}
	}
	keys[i] = *k
	b.tags[i] = tagOf(hash)
	b.deadline[i] = nt + t.timeout[k.Proto]
	b.backend[i] = backend
	t.stats.Inserts++
	return res
}

// takeToken refills the new-flow bucket for the time since the last refill
// and takes one token if there is one.
func (t *Table) takeToken(now int64) bool {
	if !t.primed {
		t.primed = true
		t.lastFill = now
		t.credit = t.maxCredit
	} else if el := now - t.lastFill; el > 0 {
		// el > fillNs would overflow el*rate for long idle gaps; the
		// bucket is full by then anyway.
		if uint64(el) >= t.fillNs {
			t.credit = t.maxCredit
		} else {
			t.credit = min(t.maxCredit, t.credit+uint64(el)*t.rate)
		}
		t.lastFill = now
	}
	if t.credit < tokenUnits {
		return false
	}
	t.credit -= tokenUnits
	return true
}

// Delete removes k and reports whether a live entry was removed.
func (t *Table) Delete(k *packet.FlowKey, hash uint64, now int64) bool {
	bi := t.index(hash)
	b := &t.buckets[bi]
	keys := &b.keys
	for m := matchTag(loadTags(b), tagOf(hash)); m != 0; m &= m - 1 {
		i := bits.TrailingZeros64(m) >> 3
		if !keys[i].Equal(k) {
			continue
		}
		b.tags[i] = 0
		t.n--
		if int32(b.deadline[i]-tick(now)) > 0 {
			t.stats.Deletes++
			return true
		}
		t.stats.Expired++
		return false
	}
	return false
}

// Sweep reclaims expired entries in the next maxBuckets buckets, resuming
// where the previous call stopped and wrapping at the end, and returns how
// many it reclaimed. It reads only bucket metadata (one cache line per
// bucket). To visit the whole table every P seconds, call it once per batch
// with maxBuckets = Buckets() / (P * batches per second), rounded up.
// maxBuckets <= 0 does nothing; more than Buckets() visits each bucket once.
func (t *Table) Sweep(now int64, maxBuckets int) (expired int) {
	maxBuckets = min(maxBuckets, len(t.buckets))
	nt := tick(now)
	c := t.cursor
	var ahead uint64
	for range maxBuckets {
		b := &t.buckets[c]
		// Touch a bucket a few ahead so the metadata lines (384 bytes
		// apart, one per bucket) load in parallel instead of one by one.
		if a := c + 8; a < len(t.buckets) {
			ahead += uint64(t.buckets[a].tags[0])
		}
		for m := usedSlots(loadTags(b)); m != 0; m &= m - 1 {
			i := bits.TrailingZeros64(m) >> 3
			if int32(b.deadline[i]-nt) <= 0 {
				b.tags[i] = 0
				expired++
			}
		}
		if c++; c == len(t.buckets) {
			c = 0
		}
	}
	t.sink += ahead
	t.cursor = c
	t.n -= expired
	t.stats.Expired += uint64(expired)
	return expired
}

// Reset empties the table in place and refills the new-flow token bucket.
// Counters keep counting (they feed monotonic metrics).
func (t *Table) Reset() {
	// Only the tags: a slot with tag 0 is empty whatever else it holds.
	for i := range t.buckets {
		t.buckets[i].tags = [8]uint8{}
	}
	t.n = 0
	t.cursor = 0
	t.primed = false
}

// Len returns the number of occupied slots. Expired entries count until
// Sweep (or a Lookup, Insert or Delete of their key) reclaims them.
func (t *Table) Len() int { return t.n }

// Capacity returns the number of slots: Config.Capacity rounded up to a
// multiple of SlotsPerBucket.
func (t *Table) Capacity() int { return int(t.nb) * SlotsPerBucket }

// Buckets returns the number of buckets, the unit of Sweep's budget.
func (t *Table) Buckets() int { return int(t.nb) }

// MemoryBytes returns the memory held by the table's arrays.
func (t *Table) MemoryBytes() int {
	return len(t.buckets) * bucketBytes
}

// Config returns the configuration in force, with Capacity rounded.
func (t *Table) Config() Config { return t.cfg }

// Stats returns a copy of the counters. Call it only from the goroutine
// that owns the table.
func (t *Table) Stats() Stats {
	s := t.stats
	s.Entries = t.n
	return s
}
