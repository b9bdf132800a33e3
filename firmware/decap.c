//go:build ignore

/* weir_decap: the backend-side XDP program. It strips the outer headers of
 * weir's encapsulations (IPIP, IPv6-in-IPv6, IPv4-in-IPv6, IPv6-in-IPv4 and
 * GUE variant 1) from packets whose inner destination is a VIP, puts the
 * frame's own Ethernet header (and VLAN tags) back in front of the inner
 * packet and passes it to the stack, which then sees the client's packet as
 * if it had arrived directly. Everything else passes untouched. When user
 * space has set an allow-list of outer source prefixes, tunnel packets from
 * any other source pass untouched too (the stack, with no tunnel, drops them).
 *
 * See doc.go for the rules; this file implements them.
 */

#include "parse.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* GUE's UDP destination port, network byte order, set at load time; 0
 * disables GUE decapsulation. */
const volatile __be16 gue_port = 0;

struct decap_key {
	__u8 addr[16];  /* IPv4: the first 4 bytes, the rest zero */
	__u32 family;   /* FAMILY_V4 or FAMILY_V6 */
};

/* One slot per CPU; user space sums them. Every frame is counted in exactly
 * one of the five decapsulation counters, passed, dropped_ecn or failed;
 * not_vip, malformed and foreign_src are subsets of passed, ce_marked of
 * the decapsulated. */
struct decap_counters {
	__u64 ipip;        /* IPv4 in IPv4 (protocol 4) */
	__u64 ip6in4;      /* IPv6 in IPv4 (protocol 41) */
	__u64 ip4in6;      /* IPv4 in IPv6 (next header 4) */
	__u64 ip6ip6;      /* IPv6 in IPv6 (next header 41) */
	__u64 gue;         /* GUE variant 1, either outer family */
	__u64 passed;      /* frames passed to the stack untouched */
	__u64 not_vip;     /* well-formed tunnel packets to a non-VIP inner address */
	__u64 malformed;   /* broken outer or inner headers */
	__u64 ce_marked;   /* outer CE copied into the inner header (RFC 6040) */
	__u64 dropped_ecn; /* outer CE over a not-ECT inner packet (RFC 6040: drop) */
	__u64 failed;      /* could not rewrite: passed untouched (adjust_head refused) */
	__u64 foreign_src; /* tunnel packets to a VIP from an outer source not allowed */
};

/* LPM trie keys of the outer source allow-list: prefix length in bits, then
 * the address in network byte order. */
struct src4_key {
	__u32 prefixlen;
	__u8 addr[4];
};

struct src6_key {
	__u32 prefixlen;
	__u8 addr[16];
};

/* decap_config slot 0: allow_src is 1 when the allow-list is in force (user
 * space sets it after filling the tries and clears it before emptying them);
 * 0 accepts every outer source. */
struct decap_config {
	__u32 allow_src;
};

/* decap_vips: the VIP addresses, written by user space. Key (address,
 * family); the value is unused (1). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct decap_key);
	__type(value, __u8);
} decap_vips SEC(".maps");

/* decap_src4, decap_src6: the outer source prefixes allowed to tunnel to
 * the VIPs, written by user space; the value is unused (1). With the
 * allow-list in force, an address in neither is foreign, so a list of IPv4
 * prefixes only refuses every IPv6 outer source. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct src4_key);
	__type(value, __u8);
} decap_src4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct src6_key);
	__type(value, __u8);
} decap_src6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct decap_config);
} decap_config SEC(".maps");

/* decap_stats: per-CPU decap_counters in slot 0. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct decap_counters);
} decap_stats SEC(".maps");

enum kind {
	K_IPIP,
	K_6IN4,
	K_4IN6,
	K_6IN6,
	K_GUE,
};

#define ECN_MASK 3
#define ECN_NOT_ECT 0
#define ECN_CE 3

/* ipv4_csum_ok verifies an IPv4 header checksum of ihl bytes. */
static __always_inline int ipv4_csum_ok(void *ip, __u32 ihl, void *data_end)
{
	__u32 sum = 0;
	__u16 *w = ip;

	for (int i = 0; i < 30; i++) { /* 60 bytes: the largest IHL */
		if (i * 2 >= ihl)
			break;
		__u16 *p = w + i;
		/* Keep clang from folding the bounds check into arithmetic
		 * on data_end, which the verifier refuses. */
		asm volatile("" : "+r"(p));
		if ((void *)(p + 1) > data_end)
			return 0;
		sum += *p;
	}
	sum = (sum & 0xFFFF) + (sum >> 16);
	sum = (sum & 0xFFFF) + (sum >> 16);
	return sum == 0xFFFF;
}

/* struct frame_l2 keeps a frame's Ethernet header and VLAN tags across
 * bpf_xdp_adjust_head. */
struct frame_l2 {
	__u8 bytes[ETH_HLEN + 4 * MAX_VLAN_TAGS];
};

static __always_inline int save_l2(void *data, void *data_end, __u8 ntags, struct frame_l2 *s)
{
	if (ntags == 0) {
		if (data + ETH_HLEN > data_end)
			return -1;
		__builtin_memcpy(s->bytes, data, ETH_HLEN);
	} else if (ntags == 1) {
		if (data + ETH_HLEN + 4 > data_end)
			return -1;
		__builtin_memcpy(s->bytes, data, ETH_HLEN + 4);
	} else {
		if (data + ETH_HLEN + 8 > data_end)
			return -1;
		__builtin_memcpy(s->bytes, data, ETH_HLEN + 8);
	}
	return 0;
}

/* restore_l2 writes the saved header with its innermost ethertype set to
 * proto (network byte order). */
static __always_inline int restore_l2(void *data, void *data_end, __u8 ntags,
				      const struct frame_l2 *s, __be16 proto)
{
	if (ntags == 0) {
		if (data + ETH_HLEN > data_end)
			return -1;
		__builtin_memcpy(data, s->bytes, ETH_HLEN - 2);
		*(__be16 *)(data + ETH_HLEN - 2) = proto;
	} else if (ntags == 1) {
		if (data + ETH_HLEN + 4 > data_end)
			return -1;
		__builtin_memcpy(data, s->bytes, ETH_HLEN + 2);
		*(__be16 *)(data + ETH_HLEN + 2) = proto;
	} else {
		if (data + ETH_HLEN + 8 > data_end)
			return -1;
		__builtin_memcpy(data, s->bytes, ETH_HLEN + 6);
		*(__be16 *)(data + ETH_HLEN + 6) = proto;
	}
	return 0;
}

/* Where the inner packet is, once the outer headers are understood. */
struct tunnel {
	__u32 inner_off; /* offset of the inner IP header */
	__u32 inner_len; /* its length according to the outer headers */
	__u8 inner_ver;  /* 4 or 6 */
	__u8 outer_ecn;
	__u8 kind;
	__u8 outer_v4;   /* 1: the outer header is IPv4 */
	__u8 src[16];    /* outer source address; IPv4: the first 4 bytes */
};

enum parse_result {
	P_TUNNEL,    /* t describes a tunnel packet */
	P_PLAIN,     /* not one of ours: pass untouched */
	P_MALFORMED, /* looked like ours but is broken: pass untouched */
};

static __always_inline enum parse_result parse_outer(void *data, void *data_end,
						     struct l2_info *l2, struct tunnel *t)
{
	__u32 off = l2->l3_off;
	__u32 payload_off, payload_len;
	__u8 proto;
	int outer_v4;

	if (off > MAX_FRAME_OFF)
		return P_MALFORMED;
	if (l2->proto == ETH_P_IP) {
		struct ipv4_hdr *ip = data + off;
		if ((void *)(ip + 1) > data_end)
			return P_MALFORMED;
		__u32 ihl = (ip->ver_ihl & 0xF) * 4;
		__u32 tot = bpf_ntohs(ip->tot_len);
		if ((ip->ver_ihl >> 4) != 4 || ihl < sizeof(*ip) || tot < ihl ||
		    data + off + tot > data_end)
			return P_MALFORMED;
		proto = ip->protocol;
		if (proto != IPPROTO_IPIP && proto != IPPROTO_IPV6 && proto != IPPROTO_UDP)
			return P_PLAIN;
		/* A fragmented tunnel packet cannot be decapsulated here:
		 * the stack reassembles it (and, with no tunnel driver,
		 * drops it). */
		if (bpf_ntohs(ip->frag_off) & (IPV4_MF | IPV4_OFFSET_MASK))
			return P_PLAIN;
		if (!ipv4_csum_ok(ip, ihl, data_end))
			return P_MALFORMED;
		t->outer_ecn = ip->tos & ECN_MASK;
		__builtin_memcpy(t->src, &ip->saddr, 4);
		payload_off = off + ihl;
		payload_len = tot - ihl;
		outer_v4 = 1;
	} else if (l2->proto == ETH_P_IPV6) {
		struct ipv6_hdr *ip6 = data + off;
		if ((void *)(ip6 + 1) > data_end)
			return P_MALFORMED;
		__u32 vtf = bpf_ntohl(ip6->ver_tc_flow);
		__u32 plen = bpf_ntohs(ip6->payload_len);
		if ((vtf >> 28) != 6 || data + off + sizeof(*ip6) + plen > data_end)
			return P_MALFORMED;
		/* Extension headers are not walked: weir's encapsulation
		 * never adds any. */
		proto = ip6->nexthdr;
		if (proto != IPPROTO_IPIP && proto != IPPROTO_IPV6 && proto != IPPROTO_UDP)
			return P_PLAIN;
		t->outer_ecn = (vtf >> 20) & ECN_MASK;
		__builtin_memcpy(t->src, ip6->saddr, 16);
		payload_off = off + sizeof(*ip6);
		payload_len = plen;
		outer_v4 = 0;
	} else {
		return P_PLAIN;
	}
	t->outer_v4 = outer_v4;

	if (proto == IPPROTO_UDP) {
		if (!gue_port)
			return P_PLAIN;
		struct udp_hdr *udp = data + payload_off;
		if ((void *)(udp + 1) > data_end || payload_len < sizeof(*udp))
			return P_PLAIN; /* a broken UDP header is not ours to judge */
		if (udp->dest != gue_port)
			return P_PLAIN;
		if (bpf_ntohs(udp->len) != payload_len)
			return P_MALFORMED;
		t->inner_off = payload_off + sizeof(*udp);
		t->inner_len = payload_len - sizeof(*udp);
		__u8 *first = data + t->inner_off;
		if ((void *)(first + 1) > data_end || t->inner_len < 1)
			return P_MALFORMED;
		/* GUE variant 1: the version nibble of the inner IP header
		 * takes the place of GUE's variant bits. */
		t->inner_ver = *first >> 4;
		if (t->inner_ver != 4 && t->inner_ver != 6)
			return P_MALFORMED;
		t->kind = K_GUE;
		return P_TUNNEL;
	}

	t->inner_off = payload_off;
	t->inner_len = payload_len;
	if (proto == IPPROTO_IPIP) {
		t->inner_ver = 4;
		t->kind = outer_v4 ? K_IPIP : K_4IN6;
	} else {
		t->inner_ver = 6;
		t->kind = outer_v4 ? K_6IN4 : K_6IN6;
	}
	return P_TUNNEL;
}

/* inner_dst validates the inner header against the tunnel and fills k with
 * its destination. It returns -1 if the inner packet is broken. */
static __always_inline int inner_dst(void *data, void *data_end, struct tunnel *t,
				     struct decap_key *k, __u8 *ecn)
{
	__u32 off = t->inner_off;

	if (off > MAX_FRAME_OFF)
		return -1;
	if (t->inner_ver == 4) {
		struct ipv4_hdr *ip = data + off;
		if ((void *)(ip + 1) > data_end)
			return -1;
		__u32 ihl = (ip->ver_ihl & 0xF) * 4;
		if ((ip->ver_ihl >> 4) != 4 || ihl < sizeof(*ip) ||
		    bpf_ntohs(ip->tot_len) != t->inner_len)
			return -1;
		k->family = FAMILY_V4;
		__builtin_memcpy(k->addr, &ip->daddr, 4);
		*ecn = ip->tos & ECN_MASK;
		return 0;
	}
	struct ipv6_hdr *ip6 = data + off;
	if ((void *)(ip6 + 1) > data_end)
		return -1;
	__u32 vtf = bpf_ntohl(ip6->ver_tc_flow);
	if ((vtf >> 28) != 6 || sizeof(*ip6) + bpf_ntohs(ip6->payload_len) != t->inner_len)
		return -1;
	k->family = FAMILY_V6;
	__builtin_memcpy(k->addr, ip6->daddr, 16);
	*ecn = (vtf >> 20) & ECN_MASK;
	return 0;
}

/* source_allowed reports whether the tunnel's outer source may send to the
 * VIPs: always when the allow-list is not in force, else when one of its
 * prefixes covers the address. */
static __always_inline int source_allowed(const struct tunnel *t)
{
	__u32 zero = 0;
	struct decap_config *cfg = bpf_map_lookup_elem(&decap_config, &zero);

	if (!cfg || !cfg->allow_src)
		return 1;
	if (t->outer_v4) {
		struct src4_key k = {.prefixlen = 32};
		__builtin_memcpy(k.addr, t->src, 4);
		return bpf_map_lookup_elem(&decap_src4, &k) != 0;
	}
	struct src6_key k = {.prefixlen = 128};
	__builtin_memcpy(k.addr, t->src, 16);
	return bpf_map_lookup_elem(&decap_src6, &k) != 0;
}

/* mark_ce sets the ECN field of the IP header at the frame's L3 offset to CE,
 * updating the IPv4 checksum incrementally (RFC 1624). */
static __always_inline void mark_ce(void *data, void *data_end, __u32 off, __u8 ver)
{
	if (off > MAX_FRAME_OFF)
		return;
	if (ver == 4) {
		struct ipv4_hdr *ip = data + off;
		if ((void *)(ip + 1) > data_end)
			return;
		__u16 *word = (__u16 *)ip; /* version, IHL and TOS */
		__u16 old = *word;
		ip->tos |= ECN_CE;
		__u32 sum = (__u16)~ip->check;
		sum += (__u16)~old;
		sum += *word;
		sum = (sum & 0xFFFF) + (sum >> 16);
		sum = (sum & 0xFFFF) + (sum >> 16);
		ip->check = ~sum;
		return;
	}
	struct ipv6_hdr *ip6 = data + off;
	if ((void *)(ip6 + 1) > data_end)
		return;
	ip6->ver_tc_flow |= bpf_htonl(ECN_CE << 20);
}

SEC("xdp")
int weir_decap(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 zero = 0;

	struct decap_counters *c = bpf_map_lookup_elem(&decap_stats, &zero);
	if (!c) /* cannot happen: slot 0 of an array always exists */
		return XDP_PASS;

	struct l2_info l2;
	struct tunnel t = {};
	if (parse_l2(data, data_end, &l2) < 0) {
		c->malformed++;
		c->passed++;
		return XDP_PASS;
	}
	switch (parse_outer(data, data_end, &l2, &t)) {
	case P_PLAIN:
		c->passed++;
		return XDP_PASS;
	case P_MALFORMED:
		c->malformed++;
		c->passed++;
		return XDP_PASS;
	case P_TUNNEL:
		break;
	}

	struct decap_key k = {};
	__u8 inner_ecn = 0;
	if (inner_dst(data, data_end, &t, &k, &inner_ecn) < 0) {
		c->malformed++;
		c->passed++;
		return XDP_PASS;
	}
	if (!bpf_map_lookup_elem(&decap_vips, &k)) {
		c->not_vip++;
		c->passed++;
		return XDP_PASS;
	}
	/* Only the load balancers may speak for clients: a tunnel packet
	 * from anywhere else reaches the stack as it came, which has no
	 * tunnel for it and drops it. */
	if (!source_allowed(&t)) {
		c->foreign_src++;
		c->passed++;
		return XDP_PASS;
	}

	/* RFC 6040: congestion experienced on the outer header must reach
	 * the inner one; a not-ECT inner packet cannot carry it and is
	 * dropped. */
	int set_ce = 0;
	if (t.outer_ecn == ECN_CE) {
		if (inner_ecn == ECN_NOT_ECT) {
			c->dropped_ecn++;
			return XDP_DROP;
		}
		set_ce = inner_ecn != ECN_CE;
	}

	struct frame_l2 saved;
	if (save_l2(data, data_end, l2.ntags, &saved) < 0) {
		c->malformed++;
		c->passed++;
		return XDP_PASS;
	}
	/* Remove everything between the L2 header and the inner packet. The
	 * frame keeps its head: the saved L2 header is written back just in
	 * front of the inner packet. */
	int shrink = t.inner_off - l2.l3_off;
	if (bpf_xdp_adjust_head(ctx, shrink)) {
		c->failed++;
		return XDP_PASS;
	}
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	__be16 proto = bpf_htons(t.inner_ver == 4 ? ETH_P_IP : ETH_P_IPV6);
	if (restore_l2(data, data_end, l2.ntags, &saved, proto) < 0) {
		/* Unreachable (the inner packet, at least 20 bytes,
		 * follows), but the outer headers are gone: drop. */
		c->failed++;
		return XDP_DROP;
	}
	if (set_ce) {
		mark_ce(data, data_end, l2.l3_off, t.inner_ver);
		c->ce_marked++;
	}

	switch (t.kind) {
	case K_IPIP:
		c->ipip++;
		break;
	case K_6IN4:
		c->ip6in4++;
		break;
	case K_4IN6:
		c->ip4in6++;
		break;
	case K_6IN6:
		c->ip6ip6++;
		break;
	default:
		c->gue++;
		break;
	}
	return XDP_PASS;
}
