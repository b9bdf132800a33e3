// Package packet reads and writes network headers in place over byte slices:
// Ethernet, 802.1Q/802.1ad VLAN tags, IPv4, IPv6 (with its extension-header
// chain), TCP, UDP, ICMPv4 and ICMPv6, plus RFC 1071 checksums, RFC 1624
// incremental checksum updates and the outer headers of weir's encapsulations.
//
// Nothing in this package allocates. Accessor types (Ethernet, IPv4, ...) are
// views over a caller's buffer and do not bounds-check: callers validate a
// header (IsValid, or Parse) before using its accessors. Parse fills a
// caller-owned Parsed struct and never returns a per-packet error; a malformed
// frame is reported by a DropReason instead.
package packet
