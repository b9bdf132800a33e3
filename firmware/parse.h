/* Shared definitions for weir's XDP programs: minimal header layouts, a
 * bounds-checked Ethernet/VLAN parser and IPv6 extension-header walking.
 *
 * Header structs are declared here (not taken from linux/ip.h and friends)
 * so that no field is a C bitfield whose layout depends on the target's
 * byte order: version and IHL are read from one byte with shifts.
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
#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88A8

/* weir parses at most two VLAN tags (802.1ad outer + 802.1Q inner). */
#define MAX_VLAN_TAGS 2

#define IPPROTO_HOPOPTS 0
#define IPPROTO_ICMP 1
#define IPPROTO_IPIP 4
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define IPPROTO_IPV6 41
#define IPPROTO_ROUTING 43
#define IPPROTO_FRAGMENT 44
#define IPPROTO_ICMPV6 58
#define IPPROTO_NONE 59
#define IPPROTO_DSTOPTS 60
#define IPPROTO_SCTP 132

/* Address families as stored in map keys: the IP version number. */
#define FAMILY_V4 4
#define FAMILY_V6 6

#define IPV4_MF 0x2000
#define IPV4_OFFSET_MASK 0x1FFF
#define IPV6_FRAG_OFFSET_MASK 0xFFF8

/* The IPv6 extension-header walk gives up after this many headers; real
 * traffic carries zero to two. */
#define MAX_IPV6_EXT_HDRS 8

/* A frame's linear part is at most a page for XDP programs without frags
 * support; offsets above this are impossible and rejected early so that the
 * verifier sees bounded packet offsets. */
#define MAX_FRAME_OFF 0x3FFF

struct eth_hdr {
	__u8 dst[ETH_ALEN];
	__u8 src[ETH_ALEN];
	__be16 proto;
};

struct vlan_tag {
	__be16 tci;
	__be16 proto;
};

struct ipv4_hdr {
	__u8 ver_ihl;
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__be16 check;
	__be32 saddr;
	__be32 daddr;
};

struct ipv6_hdr {
	__be32 ver_tc_flow;
	__be16 payload_len;
	__u8 nexthdr;
	__u8 hop_limit;
	__u8 saddr[16];
	__u8 daddr[16];
};

struct ipv6_frag_hdr {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off;
	__be32 id;
};

struct udp_hdr {
	__be16 source;
	__be16 dest;
	__be16 len;
	__be16 check;
};

/* The part of an ICMP / ICMPv6 header common to every message type. */
struct icmp_hdr {
	__u8 type;
	__u8 code;
	__be16 check;
	__be32 rest;
};

/* Result of parse_l2: where the L3 header starts and what it is. */
struct l2_info {
	__u32 l3_off;   /* offset of the L3 header from the frame start */
	__u16 proto;    /* ethertype of the L3 header, host byte order */
	__u8 ntags;     /* number of VLAN tags (0..MAX_VLAN_TAGS) */
};

/* parse_l2 reads the Ethernet header and up to MAX_VLAN_TAGS 802.1Q/802.1ad
 * tags. It returns 0 on success and -1 if the frame ends inside them. A third
 * tag is not parsed: its ethertype is reported and the frame is not IP to us. */
static __always_inline int parse_l2(void *data, void *data_end, struct l2_info *l2)
{
	struct eth_hdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return -1;
	l2->l3_off = ETH_HLEN;
	l2->proto = bpf_ntohs(eth->proto);
	l2->ntags = 0;

#pragma unroll
	for (int i = 0; i < MAX_VLAN_TAGS; i++) {
		if (l2->proto != ETH_P_8021Q && l2->proto != ETH_P_8021AD)
			break;
		struct vlan_tag *tag = data + l2->l3_off;
		if ((void *)(tag + 1) > data_end)
			return -1;
		l2->proto = bpf_ntohs(tag->proto);
		l2->l3_off += sizeof(*tag);
		l2->ntags++;
	}
	return 0;
}

static __always_inline int ipv6_is_ext_hdr(__u8 nh)
{
	return nh == IPPROTO_HOPOPTS || nh == IPPROTO_ROUTING ||
	       nh == IPPROTO_DSTOPTS || nh == IPPROTO_FRAGMENT;
}

/* Outcome of walk_ipv6_ext. */
enum ext_walk {
	EXT_UPPER = 0,      /* reached the upper-layer header */
	EXT_NON_FIRST_FRAG, /* a fragment with a non-zero offset: no L4 header */
	EXT_MALFORMED,      /* truncated, overlong or too many headers */
};

/* walk_ipv6_ext follows hop-by-hop, routing, destination-options and fragment
 * headers. On entry *nh is the IPv6 header's next header and *off the offset
 * (from data) just past the fixed header; limit is the offset where the IPv6
 * packet ends. On EXT_UPPER, *nh is the upper-layer protocol at *off. On
 * EXT_NON_FIRST_FRAG, *nh is the fragment header's next header. *frag is set
 * when a fragment header was seen. */
static __always_inline enum ext_walk walk_ipv6_ext(void *data, void *data_end, __u32 *off,
						   __u8 *nh, __u32 limit, int *frag)
{
	for (int i = 0; i < MAX_IPV6_EXT_HDRS; i++) {
		__u32 o = *off;

		if (o > MAX_FRAME_OFF)
			return EXT_MALFORMED;
		if (*nh == IPPROTO_FRAGMENT) {
			struct ipv6_frag_hdr *fh = data + o;

			if ((void *)(fh + 1) > data_end || o + sizeof(*fh) > limit)
				return EXT_MALFORMED;
			*frag = 1;
			*nh = fh->nexthdr;
			*off = o + sizeof(*fh);
			if (bpf_ntohs(fh->frag_off) & IPV6_FRAG_OFFSET_MASK)
				return EXT_NON_FIRST_FRAG;
		} else if (ipv6_is_ext_hdr(*nh)) {
			__u8 *h = data + o;

			if ((void *)(h + 2) > data_end)
				return EXT_MALFORMED;
			__u32 len = ((__u32)h[1] + 1) * 8;
			if (o + len > limit)
				return EXT_MALFORMED;
			*nh = h[0];
			*off = o + len;
		} else {
			return EXT_UPPER;
		}
	}
	return ipv6_is_ext_hdr(*nh) ? EXT_MALFORMED : EXT_UPPER;
}
