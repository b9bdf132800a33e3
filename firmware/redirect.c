//go:build ignore

/* weir_redirect: the appliance's XDP program. It hands every frame that
 * belongs to a VIP flow to the AF_XDP socket of the RX queue it arrived on and
 * gives everything else to the host stack untouched. A VIP frame is never
 * passed to the stack: with no socket on its queue it is dropped, because the
 * stack would answer a SYN to a VIP it does not serve with a RST.
 *
 * See doc.go for the matching rules; this file implements them.
 */

#include "parse.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

struct vip_key {
	__u8 addr[16];  /* IPv4: the first 4 bytes, the rest zero */
	__u8 family;    /* FAMILY_V4 or FAMILY_V6 */
	__u8 proto;     /* IP protocol number */
	__be16 port;    /* destination port, network byte order; 0 = every port */
};

/* One slot per CPU; user space sums them. Every frame is counted in exactly
 * one of the first four fields; the others are subsets of them. */
struct redirect_counters {
	__u64 redirected;        /* VIP frames handed to an AF_XDP socket */
	__u64 passed;            /* frames given to the host stack */
	__u64 dropped_no_socket; /* VIP frames on a queue without a socket */
	__u64 dropped_malformed; /* malformed frames addressed to a VIP address */
	__u64 malformed;         /* truncated or invalid headers (passed or dropped) */
	__u64 icmp_errors;       /* ICMP errors quoting a VIP flow (redirected or dropped) */
	__u64 fragments;         /* IP fragments of VIP traffic (redirected or dropped) */
};

/* vips: the VIP set, written by user space. Key (address, family, protocol,
 * destination port); port 0 stands for every port of that address and
 * protocol. The value is unused (1): presence is what matters. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct vip_key);
	__type(value, __u8);
} vips SEC(".maps");

/* vip_addrs: which addresses have VIPs, derived from vips by user space, for
 * packets without ports to look up (non-first fragments, malformed frames).
 * Key: a vip_key with port 0, once per (address, family, protocol) that has
 * a VIP and once with protocol 0 for the address as a whole. Value: the
 * number of VIPs behind the entry (user space's reference count). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, struct vip_key);
	__type(value, __u32);
} vip_addrs SEC(".maps");

/* xsks: the AF_XDP socket of each RX queue, indexed by queue number. An empty
 * slot makes bpf_redirect_map fail, and the frame is dropped. */
struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

/* counters: per-CPU redirect_counters in slot 0. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct redirect_counters);
} counters SEC(".maps");

enum verdict {
	V_PASS,           /* not ours: host stack */
	V_PASS_MALFORMED, /* broken before a destination address could be read */
	V_DROP_MALFORMED, /* broken, and addressed to a VIP address */
	V_VIP,            /* a VIP flow */
	V_VIP_ICMP,       /* an ICMP error about a VIP flow */
	V_VIP_FRAG,       /* a fragment of a VIP flow */
};

/* past_end reports whether offset off lies beyond the frame. Offsets larger
 * than any linear XDP buffer are rejected first so that the verifier sees
 * bounded packet offsets. */
static __always_inline int past_end(void *data, __u32 off, void *data_end)
{
	if (off > MAX_FRAME_OFF)
		return 1;
	return data + off > data_end;
}

/* vip_lookup matches k exactly, then with port 0 (every port). */
static __always_inline int vip_lookup(struct vip_key *k)
{
	if (bpf_map_lookup_elem(&vips, k))
		return 1;
	if (!k->port)
		return 0;
	k->port = 0;
	return bpf_map_lookup_elem(&vips, k) != NULL;
}

/* addr_lookup reports whether k's address has a VIP of protocol proto
 * (proto 0: of any protocol). */
static __always_inline int addr_lookup(struct vip_key *k, __u8 proto)
{
	k->proto = proto;
	k->port = 0;
	return bpf_map_lookup_elem(&vip_addrs, k) != NULL;
}

/* malformed classifies a broken frame whose destination address is in k. */
static __always_inline enum verdict malformed(struct vip_key *k)
{
	return addr_lookup(k, 0) ? V_DROP_MALFORMED : V_PASS_MALFORMED;
}

static __always_inline int has_ports(__u8 proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP;
}

/* read_dport validates the transport header at off (the IP packet ends at
 * limit) and stores its destination port in *dport; protocols without ports
 * yield port 0. It returns -1 if the header is truncated or invalid. */
static __always_inline int read_dport(void *data, void *data_end, __u32 off, __u32 limit,
				      __u8 proto, __be16 *dport)
{
	*dport = 0;
	if (!has_ports(proto))
		return 0;
	if (off > MAX_FRAME_OFF)
		return -1;

	__u8 *l4 = data + off;
	if (proto == IPPROTO_TCP) {
		if ((void *)(l4 + 20) > data_end || off + 20 > limit)
			return -1;
		__u32 doff = (l4[12] >> 4) * 4;
		if (doff < 20 || off + doff > limit)
			return -1;
	} else if (proto == IPPROTO_UDP) {
		if ((void *)(l4 + 8) > data_end || off + 8 > limit)
			return -1;
	} else { /* SCTP common header */
		if ((void *)(l4 + 12) > data_end || off + 12 > limit)
			return -1;
	}
	*dport = *(__be16 *)(l4 + 2);
	return 0;
}

/* quoted_sport reads the source port of the transport header quoted in an
 * ICMP error (only its first 8 bytes are guaranteed to be there). */
static __always_inline int quoted_sport(void *data, void *data_end, __u32 off, __u32 limit,
					__u8 proto, __be16 *sport)
{
	*sport = 0;
	if (!has_ports(proto))
		return 0;
	if (off > MAX_FRAME_OFF)
		return -1;
	__be16 *ports = data + off;
	if ((void *)(ports + 2) > data_end || off + 4 > limit)
		return -1;
	*sport = ports[0];
	return 0;
}

/* quoted_ipv4_is_vip reports whether the IPv4 packet quoted at off by an
 * ICMP error came from a VIP: its source address, protocol and source port
 * (or every port) are a VIP. */
static __always_inline int quoted_ipv4_is_vip(void *data, void *data_end, __u32 off,
					      __u32 limit)
{
	struct vip_key q = {};

	if (off > MAX_FRAME_OFF)
		return 0;
	struct ipv4_hdr *ip = data + off;
	if ((void *)(ip + 1) > data_end || off + sizeof(*ip) > limit)
		return 0;
	__u32 ihl = (ip->ver_ihl & 0xF) * 4;
	if ((ip->ver_ihl >> 4) != 4 || ihl < sizeof(*ip))
		return 0;

	q.family = FAMILY_V4;
	__builtin_memcpy(q.addr, &ip->saddr, 4);
	if (bpf_ntohs(ip->frag_off) & IPV4_OFFSET_MASK)
		return addr_lookup(&q, ip->protocol);
	q.proto = ip->protocol;
	if (quoted_sport(data, data_end, off + ihl, limit, q.proto, &q.port) < 0)
		return 0;
	return vip_lookup(&q);
}

/* quoted_ipv6_is_vip is quoted_ipv4_is_vip for an ICMPv6 error. */
static __always_inline int quoted_ipv6_is_vip(void *data, void *data_end, __u32 off,
					      __u32 limit)
{
	struct vip_key q = {};

	if (off > MAX_FRAME_OFF)
		return 0;
	struct ipv6_hdr *ip6 = data + off;
	if ((void *)(ip6 + 1) > data_end || off + sizeof(*ip6) > limit)
		return 0;
	if ((bpf_ntohl(ip6->ver_tc_flow) >> 28) != 6)
		return 0;

	q.family = FAMILY_V6;
	__builtin_memcpy(q.addr, ip6->saddr, 16);
	__u8 nh = ip6->nexthdr;
	__u32 l4 = off + sizeof(*ip6);
	int frag = 0;
	switch (walk_ipv6_ext(data, data_end, &l4, &nh, limit, &frag)) {
	case EXT_MALFORMED:
		return 0;
	case EXT_NON_FIRST_FRAG:
		return addr_lookup(&q, ipv6_is_ext_hdr(nh) ? 0 : nh);
	case EXT_UPPER:
		break;
	}
	q.proto = nh;
	if (quoted_sport(data, data_end, l4, limit, nh, &q.port) < 0)
		return 0;
	return vip_lookup(&q);
}

static __always_inline enum verdict classify_ipv4(void *data, void *data_end, __u32 off,
						  struct vip_key *k)
{
	if (off > MAX_FRAME_OFF)
		return V_PASS_MALFORMED;
	struct ipv4_hdr *ip = data + off;
	if ((void *)(ip + 1) > data_end)
		return V_PASS_MALFORMED;

	/* From here the destination is known, and a broken header addressed
	 * to a VIP address is dropped rather than shown to the stack. */
	k->family = FAMILY_V4;
	__builtin_memcpy(k->addr, &ip->daddr, 4);

	__u32 ihl = (ip->ver_ihl & 0xF) * 4;
	__u32 tot = bpf_ntohs(ip->tot_len);
	if ((ip->ver_ihl >> 4) != 4 || ihl < sizeof(*ip) || tot < ihl ||
	    past_end(data, off + tot, data_end))
		return malformed(k);

	__u8 proto = ip->protocol;
	__u16 frag = bpf_ntohs(ip->frag_off);
	if (frag & IPV4_OFFSET_MASK) /* non-first fragment: no ports */
		return addr_lookup(k, proto) ? V_VIP_FRAG : V_PASS;
	int first_frag = frag & IPV4_MF;

	__u32 l4 = off + ihl;
	__u32 limit = off + tot;
	if (proto == IPPROTO_ICMP) {
		if (past_end(data, l4 + sizeof(struct icmp_hdr), data_end) ||
		    l4 + sizeof(struct icmp_hdr) > limit)
			return malformed(k);
		struct icmp_hdr *ic = data + l4;
		if ((void *)(ic + 1) > data_end)
			return malformed(k);
		/* 3: destination unreachable (incl. fragmentation needed),
		 * 11: time exceeded. */
		if (!first_frag && (ic->type == 3 || ic->type == 11) &&
		    quoted_ipv4_is_vip(data, data_end, l4 + sizeof(*ic), limit))
			return V_VIP_ICMP;
	}

	k->proto = proto;
	if (read_dport(data, data_end, l4, limit, proto, &k->port) < 0)
		return malformed(k);
	if (!vip_lookup(k))
		return V_PASS;
	return first_frag ? V_VIP_FRAG : V_VIP;
}

static __always_inline enum verdict classify_ipv6(void *data, void *data_end, __u32 off,
						  struct vip_key *k)
{
	if (off > MAX_FRAME_OFF)
		return V_PASS_MALFORMED;
	struct ipv6_hdr *ip6 = data + off;
	if ((void *)(ip6 + 1) > data_end)
		return V_PASS_MALFORMED;

	k->family = FAMILY_V6;
	__builtin_memcpy(k->addr, ip6->daddr, 16);

	__u32 limit = off + sizeof(*ip6) + bpf_ntohs(ip6->payload_len);
	if ((bpf_ntohl(ip6->ver_tc_flow) >> 28) != 6 || past_end(data, limit, data_end))
		return malformed(k);

	__u8 nh = ip6->nexthdr;
	__u32 l4 = off + sizeof(*ip6);
	int frag = 0;
	switch (walk_ipv6_ext(data, data_end, &l4, &nh, limit, &frag)) {
	case EXT_MALFORMED:
		return malformed(k);
	case EXT_NON_FIRST_FRAG:
		/* The fragment header names the first header of the
		 * fragmentable part; if that is another extension header the
		 * protocol is unknown and any VIP on the address claims it. */
		return addr_lookup(k, ipv6_is_ext_hdr(nh) ? 0 : nh) ? V_VIP_FRAG : V_PASS;
	case EXT_UPPER:
		break;
	}

	if (nh == IPPROTO_ICMPV6) {
		if (past_end(data, l4 + sizeof(struct icmp_hdr), data_end) ||
		    l4 + sizeof(struct icmp_hdr) > limit)
			return malformed(k);
		struct icmp_hdr *ic = data + l4;
		if ((void *)(ic + 1) > data_end)
			return malformed(k);
		/* Neighbour discovery (router/neighbour solicitation and
		 * advertisement, redirect) always belongs to the stack. */
		if (ic->type >= 133 && ic->type <= 137)
			return V_PASS;
		/* 1: destination unreachable, 2: packet too big,
		 * 3: time exceeded. */
		if (!frag && ic->type >= 1 && ic->type <= 3 &&
		    quoted_ipv6_is_vip(data, data_end, l4 + sizeof(*ic), limit))
			return V_VIP_ICMP;
	}

	k->proto = nh;
	if (read_dport(data, data_end, l4, limit, nh, &k->port) < 0)
		return malformed(k);
	if (!vip_lookup(k))
		return V_PASS;
	return frag ? V_VIP_FRAG : V_VIP;
}

static __always_inline enum verdict classify(void *data, void *data_end)
{
	struct vip_key k = {};
	struct l2_info l2;

	if (parse_l2(data, data_end, &l2) < 0)
		return V_PASS_MALFORMED;
	if (l2.proto == ETH_P_IP)
		return classify_ipv4(data, data_end, l2.l3_off, &k);
	if (l2.proto == ETH_P_IPV6)
		return classify_ipv6(data, data_end, l2.l3_off, &k);
	return V_PASS;
}

SEC("xdp")
int weir_redirect(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 zero = 0;

	struct redirect_counters *c = bpf_map_lookup_elem(&counters, &zero);
	if (!c) /* cannot happen: slot 0 of an array always exists */
		return XDP_PASS;

	enum verdict v = classify(data, data_end);
	switch (v) {
	case V_PASS:
		c->passed++;
		return XDP_PASS;
	case V_PASS_MALFORMED:
		c->malformed++;
		c->passed++;
		return XDP_PASS;
	case V_DROP_MALFORMED:
		c->malformed++;
		c->dropped_malformed++;
		return XDP_DROP;
	default:
		break;
	}

	if (v == V_VIP_ICMP)
		c->icmp_errors++;
	else if (v == V_VIP_FRAG)
		c->fragments++;

	/* The low bits of the flags are the verdict when the queue has no
	 * socket: XDP_DROP, never XDP_PASS. */
	long ret = bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_DROP);
	if (ret == XDP_REDIRECT)
		c->redirected++;
	else
		c->dropped_no_socket++;
	return ret;
}
