/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Identity policy: per-endpoint rules (peer identity, protocol, port,
 * direction) -> allow/deny with Kubernetes NetworkPolicy semantics, the
 * enforcement modes, and the verdict/drop events.
 */
#ifndef IRONMESH_POLICY_H
#define IRONMESH_POLICY_H

#include "lib.h"

#define ICMPV6_ND_FIRST 133 /* router solicitation */
#define ICMPV6_ND_LAST  137 /* redirect */

enum policy_result {
	POL_UNENFORCED = 0, /* no policy applies: allowed, no verdict event */
	POL_ALLOW,
	POL_DENY,
	POL_DEFAULT_DENY,
};

static __always_inline struct dp_config *dp_config(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&config, &zero);
}

static __always_inline struct endpoint_info *endpoint_of(const __u32 addr[4], __u8 family)
{
	struct endpoint_key key;

	__builtin_memset(&key, 0, sizeof(key));
	__builtin_memcpy(key.addr, addr, 16);
	key.family = family;
	return bpf_map_lookup_elem(&endpoints, &key);
}

/*
 * A source that is not the sending pod's own: no endpoint has it, or the
 * endpoint that has it sits behind another veth. IPv6 link-local and the
 * unspecified address (neighbour discovery, DAD) are every pod's own.
 */
static __always_inline int spoofed(struct __sk_buff *skb, const struct tuple *t,
				   const struct endpoint_info *ep)
{
	if (ep)
		return ep->ifindex && ep->ifindex != skb->ifindex;
	if (t->family == IRONMESH_FAMILY_IPV6) {
		__u32 w0 = bpf_ntohl(t->saddr[0]);

		if ((w0 & 0xffc00000) == 0xfe800000)
			return 0;
		if (!(t->saddr[0] | t->saddr[1] | t->saddr[2] | t->saddr[3]))
			return 0;
	}
	return 1;
}

/* IPv6 neighbour discovery is never policed (like ARP for IPv4). */
static __always_inline int is_neighbour_discovery(struct __sk_buff *skb, const struct tuple *t)
{
	__u8 type;

	if (t->family != IRONMESH_FAMILY_IPV6 || t->proto != IPPROTO_ICMPV6)
		return 0;
	if (bpf_skb_load_bytes(skb, t->l4_off, &type, 1) < 0)
		return 0;
	return type >= ICMPV6_ND_FIRST && type <= ICMPV6_ND_LAST;
}

/*
 * Whether any policy can apply to `ep`: mode always, or a policy map for it.
 * Endpoints without one skip identity lookups and flow tracking (their
 * replies need no state), which keeps the common unpoliced path short. A
 * flow opened before an endpoint's first policy is therefore unknown to it:
 * its replies meet the new policy (NetworkPolicy leaves existing
 * connections to the implementation).
 */
static __always_inline int policy_applies(const struct dp_config *cfg,
					  const struct endpoint_info *ep)
{
	__u32 ep_id = ep->id;

	if (cfg && cfg->policy_mode == POLICY_MODE_NEVER)
		return 0;
	if (cfg && cfg->policy_mode == POLICY_MODE_ALWAYS)
		return 1;
	return bpf_map_lookup_elem(&policy, &ep_id) != NULL;
}

/* Looks one key up; records an allow, returns 1 on a deny. */
static __always_inline int rule_denies(void *rules, __u32 identity, __u8 proto, __be16 dport,
				       __u8 dir, int *allowed)
{
	struct policy_key key = {
		.identity = identity,
		.dport = dport,
		.proto = proto,
		.dir = dir,
	};
	struct policy_value *v = bpf_map_lookup_elem(rules, &key);

	if (!v)
		return 0;
	if (v->action == POLICY_DENY)
		return 1;
	if (v->action == POLICY_ALLOW)
		*allowed = 1;
	return 0;
}

/*
 * The verdict for traffic between endpoint `ep` and a peer of identity
 * `peer` in direction `dir` (the port is the destination port of `t`).
 */
static __always_inline int policy_verdict(const struct dp_config *cfg,
					  const struct endpoint_info *ep, __u32 peer,
					  const struct tuple *t, __u8 dir)
{
	__u8 mode = cfg ? cfg->policy_mode : POLICY_MODE_DEFAULT;
	struct policy_key marker = {
		.identity = POLICY_SELECTED_IDENTITY,
		.dir = dir,
	};
	struct policy_value *selected;
	__u32 ep_id = ep->id;
	int enforced = mode == POLICY_MODE_ALWAYS;
	int allowed = 0;
	void *rules;

	if (mode == POLICY_MODE_NEVER)
		return POL_UNENFORCED;
	rules = bpf_map_lookup_elem(&policy, &ep_id);
	if (!rules)
		return enforced ? POL_DEFAULT_DENY : POL_UNENFORCED;
	selected = bpf_map_lookup_elem(rules, &marker);
	if (selected && selected->action == POLICY_SELECTED)
		enforced = 1;

	if (rule_denies(rules, peer, t->proto, t->dport, dir, &allowed) ||
	    rule_denies(rules, peer, t->proto, 0, dir, &allowed) ||
	    rule_denies(rules, peer, 0, 0, dir, &allowed) ||
	    rule_denies(rules, POLICY_ANY_IDENTITY, t->proto, t->dport, dir, &allowed) ||
	    rule_denies(rules, POLICY_ANY_IDENTITY, t->proto, 0, dir, &allowed) ||
	    rule_denies(rules, POLICY_ANY_IDENTITY, 0, 0, dir, &allowed))
		return POL_DENY;
	if (allowed)
		return POL_ALLOW;
	return enforced ? POL_DEFAULT_DENY : POL_UNENFORCED;
}

static __always_inline int addr_eq(const __u32 a[4], const __u32 b[4])
{
	return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3];
}

/*
 * An ICMP error about a flow the endpoint is part of passes its policy, as
 * the flow's replies do (else path MTU discovery breaks under default-deny).
 * Errors are RFC 792 destination unreachable, time exceeded and parameter
 * problem, and RFC 4443 §3 types 1-4; their body starts with the offending
 * packet, which the endpoint sent (`ours_is_src`: the error comes to it) or
 * received (it sends the error). The flow is known when that packet's reply
 * entry exists (ct_note_flow wrote it when the flow was allowed).
 */
static NOINLINE int icmp_error_of_known_flow(struct __sk_buff *skb, const struct tuple *t,
					     int ours_is_src)
{
	struct tuple inner;
	__u32 off = t->l4_off + 8;
	__u8 type;

	if (t->proto != IPPROTO_ICMP && t->proto != IPPROTO_ICMPV6)
		return 0;
	if (bpf_skb_load_bytes(skb, t->l4_off, &type, 1) < 0)
		return 0;
	__builtin_memset(&inner, 0, sizeof(inner));
	if (t->family == IRONMESH_FAMILY_IPV4) {
		struct iphdr ip;

		if (t->proto != IPPROTO_ICMP || (type != 3 && type != 11 && type != 12))
			return 0;
		if (bpf_skb_load_bytes(skb, off, &ip, sizeof(ip)) < 0 || ip.version != 4)
			return 0;
		inner.family = IRONMESH_FAMILY_IPV4;
		inner.saddr[0] = ip.saddr;
		inner.daddr[0] = ip.daddr;
		inner.proto = ip.protocol;
		off += (ip.ihl & 0xf) * 4;
	} else {
		struct ipv6hdr ip6;

		if (t->proto != IPPROTO_ICMPV6 || type < 1 || type > 4)
			return 0;
		if (bpf_skb_load_bytes(skb, off, &ip6, sizeof(ip6)) < 0 || ip6.version != 6)
			return 0;
		inner.family = IRONMESH_FAMILY_IPV6;
		__builtin_memcpy(inner.saddr, &ip6.saddr, 16);
		__builtin_memcpy(inner.daddr, &ip6.daddr, 16);
		inner.proto = ip6.nexthdr;
		off += sizeof(ip6);
	}
	/* The error concerns the endpoint's own packet, not a stranger's. */
	if (ours_is_src ? !addr_eq(inner.saddr, t->daddr) : !addr_eq(inner.daddr, t->saddr))
		return 0;
	if ((inner.proto == IPPROTO_TCP || inner.proto == IPPROTO_UDP) &&
	    bpf_skb_load_bytes(skb, off, &inner.sport, 4) < 0)
		return 0;
	return ct_flow_known(&inner);
}

/* The packet's ends and what is known of its flow, for policy_enforce. */
struct flow_ids {
	__u32 src_id;   /* identity of the packet's source */
	__u32 dst_id;   /* identity of the packet's destination */
	__u8 dir;       /* POLICY_DIR_*, seen from the endpoint */
	__u8 new_flow;  /* first packet we see of this flow */
	__u8 pad[2];
};

/*
 * Applies the policy of `ep` to a packet: verdict event for a new flow under
 * an enforced policy, drop event for every denied packet.
 * Returns TC_ACT_OK or TC_ACT_SHOT.
 */
static NOINLINE int policy_enforce(struct __sk_buff *skb, const struct dp_config *cfg,
				   const struct endpoint_info *ep, const struct tuple *t,
				   const struct flow_ids *f)
{
	__u32 peer = f->dir == POLICY_DIR_EGRESS ? f->dst_id : f->src_id;
	int r = policy_verdict(cfg, ep, peer, t, f->dir);
	struct event *e;
	__u8 reason;

	if (r == POL_UNENFORCED)
		return TC_ACT_OK;
	if (f->new_flow) {
		reason = r == POL_ALLOW ? VERDICT_ALLOWED
			 : r == POL_DENY ? VERDICT_DENIED : VERDICT_DEFAULT_DENY;
		e = event_reserve(skb, t, EVENT_POLICY_VERDICT, reason, f->src_id, f->dst_id);
		if (e) {
			e->endpoint_id = ep->id;
			e->dir = f->dir;
			bpf_ringbuf_submit(e, 0);
		}
	}
	if (r == POL_ALLOW)
		return TC_ACT_OK;
	e = event_reserve(skb, t, EVENT_DROP,
			  r == POL_DENY ? DROP_POLICY_DENIED : DROP_POLICY_DEFAULT, f->src_id,
			  f->dst_id);
	if (e) {
		e->endpoint_id = ep->id;
		e->dir = f->dir;
		bpf_ringbuf_submit(e, 0);
	}
	return TC_ACT_SHOT;
}

#endif /* IRONMESH_POLICY_H */
