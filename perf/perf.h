/* Shared definitions of weir's benchmark programs: the traffic generator,
 * the sink that counts what comes back and measures latency, and the
 * in-kernel reference forwarder. The Go side of package perf mirrors the
 * constants here (payload layout, histogram buckets); keep both in step.
 */
#pragma once

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define ETH_ALEN 6
#define ETH_HLEN 14
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IPPROTO_UDP 17

#define IPV4_HLEN 20
#define IPV6_HLEN 40
#define UDP_HLEN 8

/* The generator's payload, right after the UDP header. The sink recognises
 * benchmark frames by the magic and takes the latency from sent_ns; both
 * read bpf_ktime_get_ns (CLOCK_MONOTONIC), so the difference is meaningful
 * across CPUs. 16 bytes, so an IPv4 frame still fits 60 bytes (a 64-byte
 * packet on the wire). */
struct payload {
	__u32 magic;   /* PAYLOAD_MAGIC, network byte order */
	__u32 flow;    /* flow index the generator chose */
	__u64 sent_ns; /* bpf_ktime_get_ns when the generator wrote the frame */
};

#define PAYLOAD_MAGIC 0x77656972 /* "weir" */

/* Latency histogram: log-linear buckets. Values below HIST_SUB are exact;
 * above, each power of two is split into HIST_SUB buckets, so a bucket is at
 * most 1/16 (6.25%) of its value wide. Values are clamped below 2^HIST_MAX_LOG2
 * ns (about 18 minutes). */
#define HIST_SUB_BITS 4
#define HIST_SUB (1 << HIST_SUB_BITS)
#define HIST_MAX_LOG2 40
#define HIST_BUCKETS ((HIST_MAX_LOG2 - HIST_SUB_BITS + 1) * HIST_SUB)

/* log2_u64 is floor(log2(v)) for v > 0, without loops (the verifier and
 * clang 14's BPF backend handle this better than __builtin_clzll). */
static __always_inline __u32 log2_u64(__u64 v)
{
	__u32 r = 0, s;

	s = (v > 0xFFFFFFFFULL) << 5;
	v >>= s;
	r |= s;
	s = (v > 0xFFFF) << 4;
	v >>= s;
	r |= s;
	s = (v > 0xFF) << 3;
	v >>= s;
	r |= s;
	s = (v > 0xF) << 2;
	v >>= s;
	r |= s;
	s = (v > 0x3) << 1;
	v >>= s;
	r |= s;
	r |= (__u32)(v >> 1);
	return r;
}

/* hist_bucket maps a value to its bucket; see Histogram in hist.go. */
static __always_inline __u32 hist_bucket(__u64 v)
{
	if (v >= (1ULL << HIST_MAX_LOG2))
		v = (1ULL << HIST_MAX_LOG2) - 1;
	if (v < HIST_SUB)
		return (__u32)v;
	__u32 msb = log2_u64(v);
	__u32 sub = (__u32)(v >> (msb - HIST_SUB_BITS)) & (HIST_SUB - 1);
	return (msb - HIST_SUB_BITS + 1) * HIST_SUB + sub;
}

/* fold16 folds a 32-bit one's complement sum to 16 bits. */
static __always_inline __u16 fold16(__u32 sum)
{
	sum = (sum & 0xFFFF) + (sum >> 16);
	sum = (sum & 0xFFFF) + (sum >> 16);
	return (__u16)sum;
}
