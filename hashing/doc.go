// Package hashing owns weir's backend selection for new flows: the weighted
// Maglev lookup table (Table) and the flow hash (FlowHash).
//
// A worker picks a backend for a new flow with
//
//	i := table.Lookup(hashing.FlowHash(&key, seed))
//
// where i indexes the backend slice the table was built from (-1: the VIP
// has no backend with weight). Both calls are allocation-free and lock-free.
//
// # Determinism contract
//
// Two appliances with the same configuration must send every flow to the
// same backend, and so must one appliance before and after a restart or an
// upgrade. Therefore:
//
//   - FlowHash depends only on the key's fields and the seed: fixed
//     constants, explicit little-endian loads, integer arithmetic only. No
//     hash/maphash, no unsafe, no per-process randomness. Golden values in
//     the tests pin the algorithm; changing them is a flag-day change.
//   - A Table depends only on the set of (ID, Weight) pairs and the size:
//     backends are sorted by ID before the fill, permutations come from
//     SipHash-2-4 of the ID under a fixed key, and ties are broken by ID
//     order. The order of the slice given to NewTable does not matter.
//   - Table.Lookup reduces a hash to a slot with Lemire's multiply-shift
//     (the high half of the 128-bit product hash*size), exact on every
//     architecture.
//
// # Algorithm
//
// Maglev (Eisenbud et al., NSDI 2016) gives each backend a pseudo-random
// permutation of the table's slots, defined by an offset and a skip derived
// from its ID; because the size is prime, offset + j*skip (mod size) visits
// every slot. Backends then take turns claiming their next unclaimed
// preferred slot until every slot is owned. Removing a backend mostly
// reassigns only that backend's slots, which is what keeps established
// flows (and ECMP-rehashed ones) on their backends when the set changes.
//
// Weights follow Katran's MaglevHashV2: the turns are grouped into rounds;
// in each round every backend, in ID order, adds its weight to a credit and
// claims a slot whenever the credit reaches the largest weight (which it
// then subtracts). A backend of weight w thus claims its k-th slot in round
// ceil(k*maxWeight/w). With equal weights this is exactly plain Maglev, and
// the tables equal github.com/dgryski/go-maglev's for the sorted IDs (the
// offset/skip derivation is the same), which the tests check slot by slot.
//
// # Weight semantics
//
// Weights are relative. A backend's share of the slots, and so of new
// flows, is Weight/sum(Weights), to within a couple of slots (tests bound
// the deviation). Weight 0 means the backend owns no slot: that is how a
// backend is drained; the table is then identical to one built without it.
// If every weight is 0 (or there are no backends) the table is empty and
// Lookup returns -1 for every hash. Existing flows are kept by the flow
// table, not by this package.
//
// # Table size
//
// The size must be prime (ValidateTableSize), at most MaxTableSize and at
// least the number of backends with weight. DefaultTableSize (65537) suits
// up to a few hundred backends; LargeTableSize (655373) spreads more evenly
// and is needed for thousands. Memory is 4 bytes per slot.
//
// # Lifetimes
//
// A Table is immutable once NewTable returns: share it freely between
// goroutines, and replace it by building a new one (off the packet path:
// tens of milliseconds for the large size) and publishing the pointer with
// the rest of the configuration snapshot. Nothing in this package holds
// references to caller data after NewTable returns.
package hashing
