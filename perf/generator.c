//go:build ignore

/* weir_perf_gen: the benchmark's traffic generator. It runs under
 * BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES on the generator's veth:
 * every run starts from the template frame user space passed in, and XDP_TX
 * sends the frame out of that veth towards the appliance.
 *
 * Per frame it writes the Ethernet header, picks the next flow (source port
 * and the low 16 bits of the source address), stamps the payload with
 * bpf_ktime_get_ns for the sink's latency measurement, and fixes the
 * checksums incrementally. Every field it varies is zero in the template and
 * rewritten on every run, so it does not matter whether the kernel hands it
 * a fresh copy of the template or a recycled page that a forwarder changed.
 *
 * Timing: frames are sent until stop_ns (bpf_ktime_get_ns); runs after it
 * return XDP_DROP at once, so a test run whose repeat count was generous
 * ends without sending more. The state keeps the times of the first and
 * the last frame sent: the rates are taken over that window, which leaves
 * out the test run's own set-up and tear-down.
 *
 * Pacing: with interval_ns set, a run that comes before the frame's slot
 * returns XDP_DROP (nothing is sent; the kernel recycles the page at once)
 * and the next one tries again. A sender that falls behind (the CPU was busy
 * with the receive side, or between two test runs) catches up by at most
 * burst_ns worth of frames.
 */

#include "perf.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

struct gen_config {
	__u64 interval_ns; /* time between frames; 0 sends on every run */
	__u64 burst_ns;    /* how far behind schedule the sender may catch up */
	__u64 stop_ns;     /* send nothing from this time on (0: no limit) */
	__u32 flows;       /* distinct flows, cycled through in order (>= 1) */
	__u32 ports;       /* source ports per source address (1..65536) */
	__u16 port_base;   /* first source port */
	__u8 family;       /* 4 or 6: the template's IP version */
	__u8 pad;
	__u8 ip_csum[2];   /* IPv4 header checksum of the template, as in the frame */
	__u8 udp_csum[2];  /* UDP checksum of the template (IPv6 only), as in the frame */
	__u8 eth[ETH_HLEN]; /* destination MAC, source MAC, ethertype */
	__u8 pad2[2];
};

/* gen_state is per CPU: the generator runs on one pinned CPU. */
struct gen_state {
	__u64 next_ns; /* when the next frame is due (pacing) */
	__u64 sent;    /* frames sent; also the flow counter */
	__u64 held;    /* runs that sent nothing because they were early */
	__u64 first_ns; /* when the first frame was sent */
	__u64 last_ns;  /* when the last frame was sent */
};

/* gen_config: one entry, written by user space before each run. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gen_config);
} gen_config SEC(".maps");

/* gen_state: per-CPU sending state and counters; user space sums them. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gen_state);
} gen_state SEC(".maps");

/* Offsets in the template frame (no VLAN tags, no IP options). */
#define V4_SRC_LO (ETH_HLEN + 14)  /* low 16 bits of the IPv4 source */
#define V4_CSUM (ETH_HLEN + 10)
#define V4_UDP (ETH_HLEN + IPV4_HLEN)
#define V6_SRC_LO (ETH_HLEN + 22)  /* low 16 bits of the IPv6 source */
#define V6_UDP (ETH_HLEN + IPV6_HLEN)

static __always_inline __u32 payload_sum(struct payload *p)
{
	__u16 *w = (__u16 *)p;
	__u32 s = 0;

#pragma unroll
	for (int i = 0; i < (int)(sizeof(*p) / 2); i++)
		s += w[i];
	return s;
}

SEC("xdp")
int weir_perf_gen(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 zero = 0;

	struct gen_config *cfg = bpf_map_lookup_elem(&gen_config, &zero);
	struct gen_state *st = bpf_map_lookup_elem(&gen_state, &zero);
	if (!cfg || !st)
		return XDP_ABORTED;

	__u64 now = bpf_ktime_get_ns();
	if (cfg->stop_ns && now >= cfg->stop_ns)
		return XDP_DROP;
	if (cfg->interval_ns) {
		if (now < st->next_ns) {
			st->held++;
			return XDP_DROP;
		}
		if (st->next_ns + cfg->burst_ns < now)
			st->next_ns = now - cfg->burst_ns;
		st->next_ns += cfg->interval_ns;
	}

	__u32 flows = cfg->flows ? cfg->flows : 1;
	__u32 ports = cfg->ports ? cfg->ports : 1;
	__u32 flow = (__u32)(st->sent % flows);
	__be16 sport = bpf_htons((__u16)(cfg->port_base + flow % ports));
	__be16 host = bpf_htons((__u16)(flow / ports));

	if (cfg->family == 4) {
		if (data + V4_UDP + UDP_HLEN + sizeof(struct payload) > data_end)
			return XDP_ABORTED;
		__builtin_memcpy(data, cfg->eth, ETH_HLEN);
		*(__be16 *)(data + V4_SRC_LO) = host;
		/* RFC 1624: the field was zero in the template. */
		__u16 c0 = *(__u16 *)cfg->ip_csum;
		*(__u16 *)(data + V4_CSUM) = (__u16)~fold16((__u16)~c0 + (__u32)host);
		struct udp_hdr {
			__be16 source, dest, len, check;
		} *udp = data + V4_UDP;
		udp->source = sport;
		udp->check = 0; /* no checksum: allowed over IPv4 (RFC 768) */
		struct payload *p = (void *)(udp + 1);
		p->magic = bpf_htonl(PAYLOAD_MAGIC);
		p->flow = flow;
		p->sent_ns = now;
	} else {
		if (data + V6_UDP + UDP_HLEN + sizeof(struct payload) > data_end)
			return XDP_ABORTED;
		__builtin_memcpy(data, cfg->eth, ETH_HLEN);
		*(__be16 *)(data + V6_SRC_LO) = host;
		struct udp_hdr {
			__be16 source, dest, len, check;
		} *udp = data + V6_UDP;
		udp->source = sport;
		struct payload *p = (void *)(udp + 1);
		p->magic = bpf_htonl(PAYLOAD_MAGIC);
		p->flow = flow;
		p->sent_ns = now;
		/* The UDP checksum is mandatory over IPv6: every field written
		 * above was zero in the template, so their words just add. */
		__u16 c0 = *(__u16 *)cfg->udp_csum;
		__u32 sum = (__u16)~c0;
		sum += host;
		sum += sport;
		sum += payload_sum(p);
		__u16 c = (__u16)~fold16(sum);
		udp->check = c ? c : 0xFFFF;
	}
	if (!st->sent)
		st->first_ns = now;
	st->last_ns = now;
	st->sent++;
	return XDP_TX;
}
