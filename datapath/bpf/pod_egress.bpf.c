/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Traffic leaving a pod: tc *ingress* on the host side of the pod's veth
 * (what the pod sends arrives there). Service translation (DNAT to a
 * backend, conntrack); replies of known flows pass (a local backend's
 * replies to an external client get VIP:port back as their source and leave
 * through the FIB); everything else meets
 * the source endpoint's egress policy towards the (translated) destination;
 * then routing (native FIB redirect or VXLAN). With anti-spoofing on, a pod
 * may only send from its own addresses (else its egress policy could be
 * dodged by picking another source).
 */
#include "route.h"

SEC("classifier")
int pod_egress(struct __sk_buff *skb)
{
	struct dp_config *cfg = dp_config();
	struct endpoint_info *ep;
	struct flow_ids f = { .dir = POLICY_DIR_EGRESS };
	struct tuple t;
	__u32 src_id, dst_id;
	int parsed = parse_tuple(skb, &t);
	int lb = LB_NONE, rc;

	if (parsed == PARSE_SKIP)
		return TC_ACT_OK;
	ep = endpoint_of(t.saddr, t.family);
	if (cfg && (cfg->flags & CONFIG_F_ANTI_SPOOF) && spoofed(skb, &t, ep))
		return drop_with_event(skb, &t, DROP_SPOOFED, 0);
	src_id = ep ? ep->identity : 0; /* 0: looked up when needed */

	if (parsed == PARSE_OK) {
		rc = lb_egress(skb, &t, &lb, SVC_SCOPE_INTERNAL);
		if (rc != TC_ACT_OK)
			return rc;
	}
	/* The reply of a flow an end allowed: no policy. (Never for a VIP.) */
	if (lb == LB_NONE) {
		struct ct_value *ct = ct_reply_of(&t);

		if (ct) {
			/* A local backend answering an external client: VIP:port back. */
			if (ct->flags & CT_F_EXTERNAL)
				return reply_external(skb, cfg, &t, ct, src_id);
			return route_from_pod(skb, cfg, &t, src_id, 0);
		}
	}
	dst_id = 0;
	if (ep && !is_neighbour_discovery(skb, &t) && policy_applies(cfg, ep)) {
		dst_id = identity_of(t.daddr, t.family);
		f.src_id = src_id;
		f.dst_id = dst_id;
		f.new_flow = lb == LB_NEW || (lb == LB_NONE && !ct_flow_known(&t));
		if (lb == LB_NONE && f.new_flow && icmp_error_of_known_flow(skb, &t, 0))
			return route_from_pod(skb, cfg, &t, src_id, dst_id);
		rc = policy_enforce(skb, cfg, ep, &t, &f);
		if (rc != TC_ACT_OK)
			return rc;
		if (f.new_flow && lb == LB_NONE && ct_note_flow(&t) < 0)
			return drop_with_event(skb, &t, DROP_CT_FULL, 0);
	}
	return route_from_pod(skb, cfg, &t, src_id, dst_id);
}
