/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Code shared by the tc programs: packet parsing, service selection,
 * connection tracking, NAT with checksum fix-ups, events.
 *
 * The common TCP/UDP headers are read in place (parse_tuple_direct); the rest
 * with bpf_skb_load_bytes, so non-linear skbs need no pull. Writes go through
 * bpf_skb_store_bytes and the checksum helpers, which know the skb's checksum
 * state (CHECKSUM_PARTIAL from local pods), so no packet pointer needs
 * revalidation after a helper call.
 */
#ifndef IRONMESH_LIB_H
#define IRONMESH_LIB_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "ironmesh.h"

/* A BPF-to-BPF call: its stack frame is not added to its caller's. */
#define NOINLINE __attribute__((noinline, unused))

char LICENSE[] SEC("license") = "GPL"; /* bpf_skb_*, ktime and ringbuf helpers */

#define IP_CSUM_OFF   (ETH_HLEN + __builtin_offsetof(struct iphdr, check))
#define IP_DADDR_OFF  (ETH_HLEN + __builtin_offsetof(struct iphdr, daddr))
#define IP_SADDR_OFF  (ETH_HLEN + __builtin_offsetof(struct iphdr, saddr))
#define IP6_DADDR_OFF (ETH_HLEN + __builtin_offsetof(struct ipv6hdr, daddr))
#define IP6_SADDR_OFF (ETH_HLEN + __builtin_offsetof(struct ipv6hdr, saddr))
#define IP_MF         0x2000
#define IP_OFFSET     0x1fff

/* A parsed packet: addresses as 32-bit words in network order. */
struct tuple {
	__u32 saddr[4];
	__u32 daddr[4];
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 family;
	__u16 l4_off; /* offset of the L4 header from the Ethernet header */
};

enum parse_result {
	PARSE_OK = 0,    /* TCP or UDP with ports */
	PARSE_NO_PORTS,  /* ICMP, other L4, or a non-first fragment: never translated */
	PARSE_SKIP,      /* not IP, or malformed: passed untouched */
};

/*
 * The common case read in place: TCP or UDP over IPv4 (no options) or IPv6
 * (no extension headers) with the headers in the linear area. Anything else
 * (-1) takes the bpf_skb_load_bytes path below.
 */
static __always_inline int parse_tuple_direct(struct __sk_buff *skb, struct tuple *t)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return -1;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		__be16 *ports = (void *)(ip + 1);

		if ((void *)(ports + 2) > data_end || ip->version != 4 || ip->ihl != 5 ||
		    (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP) ||
		    (ip->frag_off & bpf_htons(IP_OFFSET)))
			return -1;
		t->family = IRONMESH_FAMILY_IPV4;
		t->saddr[0] = ip->saddr;
		t->daddr[0] = ip->daddr;
		t->proto = ip->protocol;
		t->l4_off = ETH_HLEN + sizeof(*ip);
		t->sport = ports[0];
		t->dport = ports[1];
		return PARSE_OK;
	}
	if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		__be16 *ports = (void *)(ip6 + 1);

		if ((void *)(ports + 2) > data_end || ip6->version != 6 ||
		    (ip6->nexthdr != IPPROTO_TCP && ip6->nexthdr != IPPROTO_UDP))
			return -1;
		t->family = IRONMESH_FAMILY_IPV6;
		__builtin_memcpy(t->saddr, &ip6->saddr, 16);
		__builtin_memcpy(t->daddr, &ip6->daddr, 16);
		t->proto = ip6->nexthdr;
		t->l4_off = ETH_HLEN + sizeof(*ip6);
		t->sport = ports[0];
		t->dport = ports[1];
		return PARSE_OK;
	}
	return -1;
}

static __always_inline int parse_tuple(struct __sk_buff *skb, struct tuple *t)
{
	__be16 eth_proto;

	__builtin_memset(t, 0, sizeof(*t));
	if (parse_tuple_direct(skb, t) == PARSE_OK)
		return PARSE_OK;
	__builtin_memset(t, 0, sizeof(*t));
	if (bpf_skb_load_bytes(skb, offsetof(struct ethhdr, h_proto), &eth_proto, 2) < 0)
		return PARSE_SKIP;

	if (eth_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) < 0)
			return PARSE_SKIP;
		if (ip.version != 4 || ip.ihl < 5)
			return PARSE_SKIP;
		t->family = IRONMESH_FAMILY_IPV4;
		t->saddr[0] = ip.saddr;
		t->daddr[0] = ip.daddr;
		t->proto = ip.protocol;
		t->l4_off = ETH_HLEN + ip.ihl * 4;
		if (ip.frag_off & bpf_htons(IP_OFFSET))
			return PARSE_NO_PORTS;
	} else if (eth_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6)) < 0)
			return PARSE_SKIP;
		if (ip6.version != 6)
			return PARSE_SKIP;
		t->family = IRONMESH_FAMILY_IPV6;
		__builtin_memcpy(t->saddr, &ip6.saddr, 16);
		__builtin_memcpy(t->daddr, &ip6.daddr, 16);
		/* Extension headers are not walked yet: such packets carry no ports here. */
		t->proto = ip6.nexthdr;
		t->l4_off = ETH_HLEN + sizeof(ip6);
	} else {
		return PARSE_SKIP;
	}

	if (t->proto != IPPROTO_TCP && t->proto != IPPROTO_UDP)
		return PARSE_NO_PORTS;
	/* sport and dport are the first 4 bytes of both TCP and UDP. */
	if (bpf_skb_load_bytes(skb, t->l4_off, &t->sport, 4) < 0)
		return PARSE_SKIP;
	return PARSE_OK;
}

static __always_inline __u32 rol32(__u32 x, int r)
{
	return (x << r) | (x >> (32 - r));
}

/* MurmurHash3 (x86_32) block step and finaliser. */
static __always_inline __u32 murmur_mix(__u32 h, __u32 k)
{
	k *= 0xcc9e2d51;
	k = rol32(k, 15);
	k *= 0x1b873593;
	h ^= k;
	h = rol32(h, 13);
	return h * 5 + 0xe6546b64;
}

static __always_inline __u32 murmur_fmix(__u32 h)
{
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

/* The flow hash that indexes a Maglev table: the 5-tuple as the client sent it. */
static __always_inline __u32 flow_hash(const struct tuple *t)
{
	__u32 h = 0x1badf00d;

	h = murmur_mix(h, t->saddr[0]);
	h = murmur_mix(h, t->saddr[1]);
	h = murmur_mix(h, t->saddr[2]);
	h = murmur_mix(h, t->saddr[3]);
	h = murmur_mix(h, t->daddr[0]);
	h = murmur_mix(h, t->daddr[1]);
	h = murmur_mix(h, t->daddr[2]);
	h = murmur_mix(h, t->daddr[3]);
	h = murmur_mix(h, ((__u32)t->sport << 16) | t->dport);
	h = murmur_mix(h, t->proto);
	return murmur_fmix(h ^ 40);
}

static __always_inline __u32 identity_of(const __u32 addr[4], __u8 family)
{
	struct ipcache_key key;
	struct ipcache_value *v;

	__builtin_memset(&key, 0, sizeof(key));
	key.family = family;
	__builtin_memcpy(key.addr, addr, 16);
	key.prefixlen = IPCACHE_STATIC_PREFIX_BITS + (family == IRONMESH_FAMILY_IPV4 ? 32 : 128);
	v = bpf_map_lookup_elem(&ipcache, &key);
	return v ? v->identity : IDENTITY_WORLD;
}

/*
 * Reserves an event with the packet's addresses and ports filled in; the
 * caller sets the rest and submits it. NULL when the ring buffer is full
 * (the event is lost, the packet is not affected).
 */
static __always_inline struct event *event_reserve(struct __sk_buff *skb, const struct tuple *t,
						   __u8 type, __u8 reason, __u32 src_identity,
						   __u32 dst_identity)
{
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);

	if (!e)
		return NULL;
	__builtin_memset(e, 0, sizeof(*e));
	e->ts_ns = bpf_ktime_get_ns();
	e->src_identity = src_identity;
	e->dst_identity = dst_identity;
	__builtin_memcpy(e->saddr, t->saddr, 16);
	__builtin_memcpy(e->daddr, t->daddr, 16);
	e->sport = t->sport;
	e->dport = t->dport;
	e->type = type;
	e->reason = reason;
	e->proto = t->proto;
	e->family = t->family;
	e->ifindex = skb->ifindex;
	e->dir = EVENT_DIR_NONE;
	return e;
}

/* Drops the packet with an event naming both ends by their IP cache identities. */
static __always_inline int drop_with_event(struct __sk_buff *skb, const struct tuple *t,
					   __u8 reason, __u32 svc_id)
{
	struct event *e = event_reserve(skb, t, EVENT_DROP, reason,
					identity_of(t->saddr, t->family),
					identity_of(t->daddr, t->family));

	if (e) {
		e->svc_id = svc_id;
		bpf_ringbuf_submit(e, 0);
	}
	return TC_ACT_SHOT;
}

static __always_inline __u32 l4_csum_off(const struct tuple *t)
{
	return t->l4_off + (t->proto == IPPROTO_TCP ? 16 /* tcphdr.check */ : 6 /* udphdr.check */);
}

static __always_inline __u64 l4_csum_flags(const struct tuple *t)
{
	/* A UDP/IPv4 checksum of 0 means "none" and must stay 0. */
	return t->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
}

/*
 * Stores in place when the bytes are in the linear area (cheaper than
 * bpf_skb_store_bytes), else through the helper. Checksums are the caller's.
 */
static __always_inline int store_be32(struct __sk_buff *skb, __u32 off, __be32 v)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__be32 *p;

	if (off > 128)
		return bpf_skb_store_bytes(skb, off, &v, sizeof(v), 0);
	p = data + off;
	if ((void *)(p + 1) > data_end)
		return bpf_skb_store_bytes(skb, off, &v, sizeof(v), 0);
	*p = v;
	return 0;
}

static __always_inline int store_be16(struct __sk_buff *skb, __u32 off, __be16 v)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__be16 *p;

	if (off > 128)
		return bpf_skb_store_bytes(skb, off, &v, sizeof(v), 0);
	p = data + off;
	if ((void *)(p + 1) > data_end)
		return bpf_skb_store_bytes(skb, off, &v, sizeof(v), 0);
	*p = v;
	return 0;
}

/*
 * Rewrites one address (source or destination) and one port, fixing the
 * IPv4 header checksum and the L4 checksum (whose pseudo-header covers the
 * addresses). `new_addr` is 16 bytes in network order (IPv4 in the first 4).
 */
static __always_inline int nat_rewrite(struct __sk_buff *skb, const struct tuple *t, int source,
				       const __u8 new_addr[16], __be16 new_port)
{
	__u32 csum_off = l4_csum_off(t);
	__u64 mangled = l4_csum_flags(t);
	__be16 old_port = source ? t->sport : t->dport;
	__u32 port_off = t->l4_off + (source ? 0 : 2);

	if (t->family == IRONMESH_FAMILY_IPV4) {
		__be32 old_ip = source ? t->saddr[0] : t->daddr[0];
		__be32 new_ip;

		__builtin_memcpy(&new_ip, new_addr, 4);
		if (bpf_l4_csum_replace(skb, csum_off, old_ip, new_ip,
					BPF_F_PSEUDO_HDR | mangled | sizeof(new_ip)) < 0)
			return -1;
		if (bpf_l3_csum_replace(skb, IP_CSUM_OFF, old_ip, new_ip, sizeof(new_ip)) < 0)
			return -1;
		if (store_be32(skb, source ? IP_SADDR_OFF : IP_DADDR_OFF, new_ip) < 0)
			return -1;
	} else {
		__u32 old_ip[4], new_ip[4];
		__s64 diff;

		__builtin_memcpy(old_ip, source ? t->saddr : t->daddr, 16);
		__builtin_memcpy(new_ip, new_addr, 16);
		diff = bpf_csum_diff(old_ip, 16, new_ip, 16, 0);
		if (diff < 0)
			return -1;
		if (bpf_l4_csum_replace(skb, csum_off, 0, diff, BPF_F_PSEUDO_HDR | mangled) < 0)
			return -1;
		if (bpf_skb_store_bytes(skb, source ? IP6_SADDR_OFF : IP6_DADDR_OFF, new_ip, 16, 0) < 0)
			return -1;
	}
	if (new_port != old_port) {
		if (bpf_l4_csum_replace(skb, csum_off, old_port, new_port, mangled | sizeof(new_port)) < 0)
			return -1;
		if (store_be16(skb, port_off, new_port) < 0)
			return -1;
	}
	return 0;
}

/* A conntrack key: these ends and ports, `t`'s protocol and family, direction `dir`. */
static __always_inline void ct_key_fill(struct ct_key *k, const struct tuple *t, const __u32 *saddr,
					const __u32 *daddr, __be16 sport, __be16 dport, __u8 dir)
{
	__builtin_memset(k, 0, sizeof(*k));
	__builtin_memcpy(k->saddr, saddr, 16);
	__builtin_memcpy(k->daddr, daddr, 16);
	k->sport = sport;
	k->dport = dport;
	k->proto = t->proto;
	k->family = t->family;
	k->dir = dir;
}

static __always_inline void ct_key_of(struct ct_key *k, const struct tuple *t, __u8 dir)
{
	ct_key_fill(k, t, t->saddr, t->daddr, t->sport, t->dport, dir);
}

/*
 * The key of the reply entry of flow `t`: `t` reversed, CT_DIR_REPLY. (The
 * reply of a translated flow comes from the backend instead: lb_egress.)
 */
static __always_inline void ct_reverse_key_of(struct ct_key *k, const struct tuple *t)
{
	ct_key_fill(k, t, t->daddr, t->saddr, t->dport, t->sport, CT_DIR_REPLY);
}

/* A backend for a new flow of `svc`, or NULL. */
static __always_inline struct backend *select_backend(const struct tuple *t,
						      const struct svc_value *svc, __u32 *backend_id)
{
	__u32 id;

	if (svc->backend_count == 0)
		return NULL;
	if (svc->flags & SVC_F_MAGLEV) {
		__u32 svc_id = svc->id;
		struct maglev_table *table = bpf_map_lookup_elem(&maglev, &svc_id);
		__u32 slot = flow_hash(t) % MAGLEV_TABLE_SIZE;

		if (!table)
			return NULL;
		/* The verifier does not bound a modulo: hide it and check. */
		asm volatile("" : "+r"(slot));
		if (slot >= MAGLEV_TABLE_SIZE)
			return NULL;
		id = table->backend_ids[slot];
	} else {
		struct backend_slot_key sk = {
			.svc_id = svc->id,
			.slot = bpf_get_prandom_u32() % svc->backend_count,
		};
		__u32 *idp = bpf_map_lookup_elem(&backend_slots, &sk);

		if (!idp)
			return NULL;
		id = *idp;
	}
	*backend_id = id;
	return bpf_map_lookup_elem(&backends, &id);
}

#define LB_NONE        0 /* not for a service */
#define LB_ESTABLISHED 1 /* translated for an established service flow */
#define LB_NEW         2 /* a new service flow: backend chosen, conntrack written */

/* After a DNAT: the tuple as the packet now is. */
static __always_inline void tuple_set_dst(struct tuple *t, const __u8 addr[16], __be16 port)
{
	__builtin_memcpy(t->daddr, addr, 16);
	t->dport = port;
}

/*
 * Client -> service: DNAT to a backend chosen by conntrack (established) or
 * by the service's selection (new). Non-service traffic is left untouched.
 * `scope` picks the service entry: SVC_SCOPE_INTERNAL from pods (pod_egress),
 * SVC_SCOPE_EXTERNAL from the uplink (host_ingress; local backends only, and
 * the conntrack entries are marked CT_F_EXTERNAL so the backend's pod_egress
 * reverse-translates the reply).
 * Returns TC_ACT_OK (continue with `*tp`, updated to the translated packet)
 * or TC_ACT_SHOT. `*state` says what the packet was (LB_*).
 */
static NOINLINE int lb_egress(struct __sk_buff *skb, struct tuple *tp, int *state, __u8 scope)
{
	const struct tuple *t = tp;
	struct svc_key sk;
	struct svc_value *svc;
	/* One key and one value, reused: the stack is shared with the caller. */
	struct ct_key key;
	struct ct_value *ct, v;
	struct backend *be = NULL;
	__u32 backend_id = 0, svc_id;
	__u64 now;

	if (t->proto != IPPROTO_TCP && t->proto != IPPROTO_UDP)
		return TC_ACT_OK;
	__builtin_memset(&sk, 0, sizeof(sk));
	__builtin_memcpy(sk.addr, t->daddr, 16);
	sk.dport = t->dport;
	sk.proto = t->proto;
	sk.family = t->family;
	sk.scope = scope;
	svc = bpf_map_lookup_elem(&services, &sk);
	if (!svc)
		return TC_ACT_OK;
	svc_id = svc->id;

	ct_key_of(&key, t, CT_DIR_FORWARD);
	ct = bpf_map_lookup_elem(&conntrack, &key);
	if (ct && ct->svc_id == svc_id) {
		/* Established: keep the backend unless it is gone or quarantined. */
		backend_id = ct->backend_id;
		be = bpf_map_lookup_elem(&backends, &backend_id);
		if (be && be->state != BACKEND_QUARANTINED) {
			ct->last_seen_ns = bpf_ktime_get_coarse_ns();
			if (nat_rewrite(skb, t, 0, ct->nat_addr, ct->nat_port) < 0)
				return TC_ACT_SHOT;
			tuple_set_dst(tp, ct->nat_addr, ct->nat_port);
			*state = LB_ESTABLISHED;
			return TC_ACT_OK;
		}
	}

	now = bpf_ktime_get_coarse_ns();
	be = select_backend(t, svc, &backend_id);
	if (!be)
		return drop_with_event(skb, t, DROP_NO_BACKEND, svc_id);
	if (be->family != t->family)
		return drop_with_event(skb, t, DROP_FAMILY_MISMATCH, svc_id);

	/*
	 * The reply comes from the backend to the client; restore VIP:port as
	 * its source. Reply entry first: a forward entry must never exist
	 * without its reverse.
	 */
	__builtin_memset(&key, 0, sizeof(key));
	__builtin_memcpy(key.saddr, be->addr, 16);
	__builtin_memcpy(key.daddr, t->saddr, 16);
	key.sport = be->port;
	key.dport = t->sport;
	key.proto = t->proto;
	key.family = t->family;
	key.dir = CT_DIR_REPLY;
	__builtin_memset(&v, 0, sizeof(v));
	__builtin_memcpy(v.nat_addr, t->daddr, 16);
	v.nat_port = t->dport;
	v.flags = scope == SVC_SCOPE_EXTERNAL
			  ? CT_F_SERVICE | CT_F_EXTERNAL | CT_F_VERDICT_PENDING
			  : CT_F_SERVICE;
	v.backend_id = backend_id;
	v.svc_id = svc_id;
	v.last_seen_ns = now;
	if (bpf_map_update_elem(&conntrack, &key, &v, BPF_ANY) < 0)
		return drop_with_event(skb, t, DROP_CT_FULL, svc_id);

	ct_key_of(&key, t, CT_DIR_FORWARD);
	__builtin_memcpy(v.nat_addr, be->addr, 16);
	v.nat_port = be->port;
	v.flags &= ~CT_F_VERDICT_PENDING;
	if (bpf_map_update_elem(&conntrack, &key, &v, BPF_ANY) < 0)
		return drop_with_event(skb, t, DROP_CT_FULL, svc_id);
	if (nat_rewrite(skb, t, 0, v.nat_addr, v.nat_port) < 0)
		return TC_ACT_SHOT;
	tuple_set_dst(tp, v.nat_addr, v.nat_port);
	*state = LB_NEW;
	return TC_ACT_OK;
}

/* The reply entry `t` matches, if `t` is the reply of a flow we saw leave or arrive. */
static __always_inline struct ct_value *ct_reply_of(const struct tuple *t)
{
	struct ct_key key;

	ct_key_of(&key, t, CT_DIR_REPLY);
	return bpf_map_lookup_elem(&conntrack, &key);
}

/*
 * Backend -> client reply of a translated east-west flow, in the client's
 * pod_ingress: restore VIP:port as the source. External flows' replies are
 * translated by the backend's pod_egress (lb_reverse_external), never here.
 */
static __always_inline int lb_reverse(struct __sk_buff *skb, const struct tuple *t,
				      struct ct_value *ct)
{
	if ((ct->flags & (CT_F_SERVICE | CT_F_EXTERNAL)) != CT_F_SERVICE)
		return TC_ACT_OK;
	if (t->proto != IPPROTO_TCP && t->proto != IPPROTO_UDP)
		return TC_ACT_OK;
	ct->last_seen_ns = bpf_ktime_get_coarse_ns();
	if (nat_rewrite(skb, t, 1, ct->nat_addr, ct->nat_port) < 0)
		return TC_ACT_SHOT;
	return TC_ACT_OK;
}

/*
 * Backend -> external client reply, in the backend's pod_egress: restore
 * VIP:port as the source and update `*tp` to the translated packet.
 * Returns TC_ACT_OK or TC_ACT_SHOT.
 */
static __always_inline int lb_reverse_external(struct __sk_buff *skb, struct tuple *tp,
					       struct ct_value *ct)
{
	__u8 vip[16];
	__be16 port = ct->nat_port;

	__builtin_memcpy(vip, ct->nat_addr, 16);
	ct->last_seen_ns = bpf_ktime_get_coarse_ns();
	if (nat_rewrite(skb, tp, 1, vip, port) < 0)
		return TC_ACT_SHOT;
	__builtin_memcpy(tp->saddr, vip, 16);
	tp->sport = port;
	return TC_ACT_OK;
}

/*
 * Remembers an allowed flow so its replies pass the policies of both ends
 * (NetworkPolicy is stateful): the reply entry of `t`, unless one exists.
 */
static NOINLINE int ct_note_flow(const struct tuple *t)
{
	struct ct_key key;
	struct ct_value v;

	ct_reverse_key_of(&key, t);
	__builtin_memset(&v, 0, sizeof(v));
	v.last_seen_ns = bpf_ktime_get_coarse_ns();
	if (bpf_map_update_elem(&conntrack, &key, &v, BPF_NOEXIST) < 0 &&
	    !bpf_map_lookup_elem(&conntrack, &key))
		return -1;
	return 0;
}

#define CT_UNKNOWN 0 /* no reply entry: a new flow */
#define CT_KNOWN   1
#define CT_PENDING 2 /* known, but its first packet has not met the policy (external flow) */

/*
 * Whether the reply entry of `t` exists (the flow is known): CT_*. With
 * `done`, a pending entry is marked as having met the policy.
 */
static NOINLINE int ct_flow_state(const struct tuple *t, int done)
{
	struct ct_key key;
	struct ct_value *v;

	ct_reverse_key_of(&key, t);
	v = bpf_map_lookup_elem(&conntrack, &key);
	if (!v)
		return CT_UNKNOWN;
	if (!(v->flags & CT_F_VERDICT_PENDING))
		return CT_KNOWN;
	if (done)
		v->flags &= ~CT_F_VERDICT_PENDING;
	return CT_PENDING;
}

/* Whether the reply entry of `t` exists (the flow is known). */
static NOINLINE int ct_flow_known(const struct tuple *t)
{
	struct ct_key key;

	ct_reverse_key_of(&key, t);
	return bpf_map_lookup_elem(&conntrack, &key) != NULL;
}

#endif /* IRONMESH_LIB_H */
