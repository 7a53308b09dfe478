/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Routing: native (bpf_fib_lookup + bpf_redirect_neigh, so the kernel FIB
 * with its BGP-learned or static routes decides) and VXLAN (tunnel key with
 * the source identity as VNI, remote node from the IP cache).
 */
#ifndef IRONMESH_ROUTE_H
#define IRONMESH_ROUTE_H

#include "policy.h"

#define AF_INET  2
#define AF_INET6 10
#define IP_TTL_OFF  (ETH_HLEN + __builtin_offsetof(struct iphdr, ttl))
#define IP6_HOP_OFF (ETH_HLEN + __builtin_offsetof(struct ipv6hdr, hop_limit))

static __always_inline struct ipcache_value *ipcache_of(const __u32 addr[4], __u8 family)
{
	struct ipcache_key key;

	__builtin_memset(&key, 0, sizeof(key));
	key.family = family;
	__builtin_memcpy(key.addr, addr, 16);
	key.prefixlen = IPCACHE_STATIC_PREFIX_BITS + (family == IRONMESH_FAMILY_IPV4 ? 32 : 128);
	return bpf_map_lookup_elem(&ipcache, &key);
}

/* An identity the caller may not have looked up yet (0): from the IP cache. */
static __always_inline __u32 known_identity(__u32 id, const __u32 addr[4], __u8 family)
{
	return id ? id : identity_of(addr, family);
}

/* Identities of 0 are looked up only when tracing is on. */
static __always_inline void trace(struct __sk_buff *skb, const struct dp_config *cfg,
				  const struct tuple *t, __u8 reason, __u32 src_id, __u32 dst_id,
				  __be32 tunnel_endpoint, __u32 tunnel_id)
{
	struct event *e;

	if (!cfg || !(cfg->flags & CONFIG_F_TRACE))
		return;
	src_id = known_identity(src_id, t->saddr, t->family);
	dst_id = known_identity(dst_id, t->daddr, t->family);
	e = event_reserve(skb, t, EVENT_TRACE, reason, src_id, dst_id);
	if (e) {
		e->tunnel_endpoint = tunnel_endpoint;
		e->tunnel_id = tunnel_id;
		bpf_ringbuf_submit(e, 0);
	}
}

/* Forwarding without the stack: decrement TTL / hop limit. -1: expired. */
static __always_inline int ttl_decrement(struct __sk_buff *skb, const struct tuple *t)
{
	__u8 ttl;

	if (t->family == IRONMESH_FAMILY_IPV4) {
		__be16 old_word, new_word;
		__u8 word[2];

		if (bpf_skb_load_bytes(skb, IP_TTL_OFF, word, 2) < 0 || word[0] <= 1)
			return -1;
		__builtin_memcpy(&old_word, word, 2);
		word[0]--;
		__builtin_memcpy(&new_word, word, 2);
		if (bpf_l3_csum_replace(skb, IP_CSUM_OFF, old_word, new_word, 2) < 0)
			return -1;
		return bpf_skb_store_bytes(skb, IP_TTL_OFF, word, 1, 0) < 0 ? -1 : 0;
	}
	if (bpf_skb_load_bytes(skb, IP6_HOP_OFF, &ttl, 1) < 0 || ttl <= 1)
		return -1;
	ttl--;
	return bpf_skb_store_bytes(skb, IP6_HOP_OFF, &ttl, 1, 0) < 0 ? -1 : 0;
}

/*
 * Native routing: asks the kernel FIB where `t` goes and redirects there
 * through the neighbour subsystem. Anything the FIB does not forward
 * (local delivery, unreachable, expired TTL, ...) goes to the stack.
 */
static __always_inline int fib_redirect(struct __sk_buff *skb, const struct dp_config *cfg,
					const struct tuple *t, __u32 src_id, __u32 dst_id)
{
	struct bpf_fib_lookup p;
	struct bpf_redir_neigh nh;
	long rc;

	__builtin_memset(&p, 0, sizeof(p));
	__builtin_memset(&nh, 0, sizeof(nh));
	p.l4_protocol = t->proto;
	p.sport = t->sport;
	p.dport = t->dport;
	/* tot_len 0: no MTU check here, GSO packets are segmented by the device. */
	p.ifindex = skb->ingress_ifindex ? skb->ingress_ifindex : skb->ifindex;
	if (t->family == IRONMESH_FAMILY_IPV4) {
		p.family = AF_INET;
		p.ipv4_src = t->saddr[0];
		p.ipv4_dst = t->daddr[0];
	} else {
		p.family = AF_INET6;
		__builtin_memcpy(p.ipv6_src, t->saddr, 16);
		__builtin_memcpy(p.ipv6_dst, t->daddr, 16);
	}
	rc = bpf_fib_lookup(skb, &p, sizeof(p), 0);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return TC_ACT_OK;
	if (ttl_decrement(skb, t) < 0)
		return TC_ACT_OK; /* the stack sends the ICMP time exceeded */
	if (t->family == IRONMESH_FAMILY_IPV4) {
		nh.nh_family = AF_INET;
		nh.ipv4_nh = p.ipv4_dst;
	} else {
		nh.nh_family = AF_INET6;
		__builtin_memcpy(nh.ipv6_nh, p.ipv6_dst, 16);
	}
	trace(skb, cfg, t, TRACE_FIB_REDIRECT, src_id, dst_id, 0, p.ifindex);
	return bpf_redirect_neigh(p.ifindex, &nh, sizeof(nh), 0);
}

/*
 * VXLAN: the remote node from the IP cache, the source identity as the VNI.
 * The trace event carries the VNI read back from the kernel (what the VXLAN
 * device will put on the wire) and the node we set (bpf_skb_get_tunnel_key
 * reports a key's *source* address, which a transmit key does not have).
 */
static __always_inline int overlay_redirect(struct __sk_buff *skb, const struct dp_config *cfg,
					    const struct tuple *t, const struct ipcache_value *dst,
					    __u32 src_id, __u32 dst_id)
{
	struct bpf_tunnel_key key;

	src_id = known_identity(src_id, t->saddr, t->family);
	dst_id = dst->identity;
	__builtin_memset(&key, 0, sizeof(key));
	key.tunnel_id = src_id & MARK_IDENTITY_MASK;
	key.remote_ipv4 = bpf_ntohl(dst->tunnel_endpoint_v4);
	key.tunnel_ttl = 64;
	if (bpf_skb_set_tunnel_key(skb, &key, sizeof(key), BPF_F_ZERO_CSUM_TX) < 0)
		return drop_with_event(skb, t, DROP_TUNNEL_KEY, 0);
	if (cfg->flags & CONFIG_F_TRACE) {
		struct bpf_tunnel_key back;

		__builtin_memset(&back, 0, sizeof(back));
		if (bpf_skb_get_tunnel_key(skb, &back, sizeof(back), 0) == 0)
			trace(skb, cfg, t, TRACE_TO_OVERLAY, src_id, dst_id,
			      dst->tunnel_endpoint_v4, back.tunnel_id);
	}
	return bpf_redirect(cfg->tunnel_ifindex, 0);
}

/*
 * Where a packet from a local pod goes after policy. Identities of 0 are
 * looked up only if needed (VNI, trace events): an LPM lookup is not free.
 */
static NOINLINE int route_from_pod(struct __sk_buff *skb, const struct dp_config *cfg,
					  const struct tuple *t, __u32 src_id, __u32 dst_id)
{
	struct ipcache_value *dst;

	if (!cfg)
		return TC_ACT_OK;
	if (cfg->routing_mode == ROUTING_VXLAN && t->family == IRONMESH_FAMILY_IPV4) {
		dst = ipcache_of(t->daddr, t->family);
		if (dst && (dst->flags & IPCACHE_F_TUNNEL_EP) &&
		    !(dst->flags & IPCACHE_F_SKIP_TUNNEL) && dst->tunnel_endpoint_v4)
			return overlay_redirect(skb, cfg, t, dst, src_id, dst_id);
		return TC_ACT_OK;
	}
	if (cfg->routing_mode == ROUTING_NATIVE)
		return fib_redirect(skb, cfg, t, src_id, dst_id);
	return TC_ACT_OK;
}

/*
 * A local backend's reply to an external client (CT_F_EXTERNAL): source back
 * to VIP:port, then out through the FIB in every routing mode. The stack
 * would see a packet from the VIP arrive on a pod's veth and could refuse it
 * (strict rp_filter, or a martian if the VIP is a local address).
 * Without a config (no routing set up) the stack gets it.
 */
static NOINLINE int reply_external(struct __sk_buff *skb, const struct dp_config *cfg,
				   struct tuple *t, struct ct_value *ct, __u32 src_id)
{
	if (lb_reverse_external(skb, t, ct) != TC_ACT_OK)
		return TC_ACT_SHOT;
	if (!cfg)
		return TC_ACT_OK;
	return fib_redirect(skb, cfg, t, src_id, 0);
}

#endif /* IRONMESH_ROUTE_H */
