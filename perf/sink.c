//go:build ignore

/* weir_perf_sink: the benchmark's sink, attached to the generator's veth. It
 * counts the benchmark frames that come back from the forwarder under test,
 * checks that they were rewritten for the backend (destination MAC), and
 * records the one-way latency from the generator's timestamp in a per-CPU
 * histogram. Benchmark frames are dropped; anything else (neighbour
 * discovery and the like) passes to the stack untouched.
 *
 * The program also makes the veth able to receive XDP_TX and XDP_REDIRECT
 * frames at all: a veth delivers them only when its peer end runs XDP.
 */

#include "perf.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* The destination MAC a correctly forwarded frame carries (the backend's,
 * which is this veth's own). Set before loading. */
volatile const __u8 want_dst[ETH_ALEN];

struct sink_counters {
	__u64 received;    /* benchmark frames with the expected destination MAC */
	__u64 bytes;       /* their bytes */
	__u64 wrong_mac;   /* benchmark frames with another destination MAC (not counted as received) */
	__u64 other;       /* frames that are not the benchmark's (passed) */
	__u64 clock_skew;  /* frames stamped in the future (never expected; not in the histogram) */
};

struct latency {
	__u64 count;  /* samples in bucket[] */
	__u64 sum_ns; /* their sum */
	__u64 max_ns; /* the largest */
	__u64 bucket[HIST_BUCKETS];
};

/* sink_counters: per-CPU counters; user space sums them. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sink_counters);
} sink_counters SEC(".maps");

/* latency: per-CPU histogram of generator-to-sink latency in ns (see
 * hist_bucket); user space merges the CPUs. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct latency);
} latency SEC(".maps");

struct eth_hdr {
	__u8 dst[ETH_ALEN];
	__u8 src[ETH_ALEN];
	__be16 proto;
};

/* find_payload returns the benchmark payload of an IPv4 or IPv6 UDP frame,
 * or NULL. */
static __always_inline struct payload *find_payload(void *data, void *data_end)
{
	struct eth_hdr *eth = data;
	__u32 off;

	if ((void *)(eth + 1) > data_end)
		return NULL;
	if (eth->proto == bpf_htons(ETH_P_IP)) {
		__u8 *ip = (void *)(eth + 1);
		if ((void *)(ip + IPV4_HLEN) > data_end)
			return NULL;
		if ((ip[0] >> 4) != 4 || ip[9] != IPPROTO_UDP)
			return NULL;
		off = ETH_HLEN + (ip[0] & 0xF) * 4;
	} else if (eth->proto == bpf_htons(ETH_P_IPV6)) {
		__u8 *ip = (void *)(eth + 1);
		if ((void *)(ip + IPV6_HLEN) > data_end)
			return NULL;
		if (ip[6] != IPPROTO_UDP)
			return NULL;
		off = ETH_HLEN + IPV6_HLEN;
	} else {
		return NULL;
	}
	if (off > 128)
		return NULL;
	struct payload *p = data + off + UDP_HLEN;
	if ((void *)(p + 1) > data_end)
		return NULL;
	if (p->magic != bpf_htonl(PAYLOAD_MAGIC))
		return NULL;
	return p;
}

SEC("xdp")
int weir_perf_sink(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 zero = 0;

	struct sink_counters *c = bpf_map_lookup_elem(&sink_counters, &zero);
	if (!c)
		return XDP_ABORTED;
	struct payload *p = find_payload(data, data_end);
	if (!p) {
		c->other++;
		return XDP_PASS;
	}
	struct eth_hdr *eth = data; /* find_payload checked its bounds */
#pragma unroll
	for (int i = 0; i < ETH_ALEN; i++) {
		if (eth->dst[i] != want_dst[i]) {
			c->wrong_mac++;
			return XDP_DROP;
		}
	}
	c->received++;
	c->bytes += data_end - data;

	__u64 now = bpf_ktime_get_ns();
	__u64 sent = p->sent_ns;
	if (sent > now) {
		c->clock_skew++;
		return XDP_DROP;
	}
	struct latency *l = bpf_map_lookup_elem(&latency, &zero);
	if (!l)
		return XDP_DROP;
	__u64 d = now - sent;
	__u32 b = hist_bucket(d);
	if (b < HIST_BUCKETS)
		l->bucket[b]++;
	l->count++;
	l->sum_ns += d;
	if (d > l->max_ns)
		l->max_ns = d;
	return XDP_DROP;
}
