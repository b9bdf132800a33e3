// Package flows owns the per-worker flow table: it remembers which backend
// each flow (packet.FlowKey) was sent to, so established connections keep
// their backend when the Maglev table changes (backend added, removed,
// reweighted) or when a second appliance takes over the traffic.
//
// # Ownership and lifetime
//
// A Table belongs to exactly one worker goroutine (one per NIC queue). It
// takes no locks and uses no atomics: nothing in it may be touched by another
// goroutine while the worker runs, including Stats, Len and Sweep. The worker
// copies Stats out once per batch into whatever it publishes for scraping.
// New allocates all memory up front; no method allocates afterwards. The
// memory lives until the Table is dropped; Reset empties the table in place.
//
// # Time
//
// The table never reads the clock. Every call that needs time takes now, a
// monotonic clock reading in nanoseconds taken once per batch by the caller.
// The origin does not matter (time since process start or CLOCK_MONOTONIC),
// but it must not go backwards. Entries keep a 32-bit idle deadline in ticks
// of 2^24 ns (about 16.8 ms), so timeouts are honoured to within one tick.
// Deadlines are compared modulo 2^32 ticks (about 2.3 years): an expired
// entry must be reclaimed within about a year of expiring or it would look
// alive again, which Sweep guarantees as long as the worker calls it at all.
//
// # Hashing
//
// The caller passes the 64-bit flow hash it already computed for Maglev; the
// table never hashes keys itself. The low 32 bits choose the bucket and the
// top 8 bits are the slot tag, so the hash must be well mixed in both.
//
// # Layout
//
// The table is set-associative: a flow lives in one of the SlotsPerBucket
// (7) slots of the bucket its hash selects. A bucket is six cache lines: the
// first holds all the metadata (7 one-byte tags, 7 deadlines, 7 backend
// IDs), the other five the 40-byte keys. A miss reads one cache line; a hit
// reads that line and the key on the same page, usually the next line.
// Seven slots rather than eight is what fits the metadata in one line with
// 32-bit deadlines. Capacity is rounded up to a multiple of seven, and the
// bucket count need not be a power of two (the bucket index is a
// multiply-shift of the hash), so the table costs 384/7 ≈ 54.9 bytes per
// entry: 57.5 MB for 1<<20 entries.
//
// Memory latency, not instructions, bounds a lookup in a large table. A
// worker that calls PrefetchAll with the hashes of a whole batch before
// looking any of them up lets the batch's cache misses overlap.
package flows
