//go:build ignore

/* weir_perf_reference: the in-kernel reference forwarder the benchmark
 * compares weir with. It does the part of weir's DSR forwarding that the
 * kernel can do with no state at all: for an IPv4 or IPv6 frame, set the
 * destination MAC to the backend's and the source MAC to the interface's,
 * and send it back out with XDP_TX. No parsing past the ethertype, no
 * lookups: the ceiling for any forwarder on this path.
 */

#include "perf.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* Set before loading: the backend's MAC and this interface's MAC. */
volatile const __u8 backend_mac[ETH_ALEN];
volatile const __u8 local_mac[ETH_ALEN];

/* ref_counters: per-CPU counters; user space sums them. */
struct ref_counters {
	__u64 forwarded; /* frames rewritten and sent with XDP_TX */
	__u64 passed;    /* frames that are not IP, passed to the stack */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ref_counters);
} ref_counters SEC(".maps");

SEC("xdp")
int weir_perf_reference(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u8 *eth = data;
	__u32 zero = 0;

	struct ref_counters *c = bpf_map_lookup_elem(&ref_counters, &zero);
	if (!c)
		return XDP_ABORTED;
	if ((void *)(eth + ETH_HLEN) > data_end)
		return XDP_PASS;
	__be16 proto = *(__be16 *)(eth + 12);
	if (proto != bpf_htons(ETH_P_IP) && proto != bpf_htons(ETH_P_IPV6)) {
		c->passed++;
		return XDP_PASS;
	}
#pragma unroll
	for (int i = 0; i < ETH_ALEN; i++) {
		eth[i] = backend_mac[i];
		eth[ETH_ALEN + i] = local_mac[i];
	}
	c->forwarded++;
	return XDP_TX;
}
