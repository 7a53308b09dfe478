/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Traffic entering a pod: tc *egress* on the host side of the pod's veth.
 * Replies of known flows pass (service replies get reverse NAT: backend ->
 * VIP:port as the source), and so do ICMP errors about them; everything else
 * meets the destination
 * endpoint's ingress policy. The source identity comes from the overlay
 * (skb->mark set by overlay_ingress from the VNI) or else the IP cache.
 */
#include "policy.h"

static __always_inline __u32 source_identity(struct __sk_buff *skb, const struct tuple *t)
{
	if ((skb->mark & MARK_MAGIC_MASK) == MARK_MAGIC_IDENTITY)
		return skb->mark & MARK_IDENTITY_MASK;
	return identity_of(t->saddr, t->family);
}

SEC("classifier")
int pod_ingress(struct __sk_buff *skb)
{
	struct dp_config *cfg = dp_config();
	struct endpoint_info *ep;
	struct ct_value *ct;
	struct flow_ids f = { .dir = POLICY_DIR_INGRESS };
	struct tuple t;
	int rc, known;

	if (parse_tuple(skb, &t) == PARSE_SKIP)
		return TC_ACT_OK;
	ct = ct_reply_of(&t);
	if (ct)
		return lb_reverse(skb, &t, ct);

	ep = endpoint_of(t.daddr, t.family);
	if (!ep || is_neighbour_discovery(skb, &t) || !policy_applies(cfg, ep))
		return TC_ACT_OK;
	f.src_id = source_identity(skb, &t);
	f.dst_id = ep->identity;
	/*
	 * An external flow's reply entry exists before its first packet gets
	 * here (host_ingress wrote it): pending until that packet passes, so it
	 * still counts as new (verdict event).
	 */
	known = ct_flow_state(&t, 0);
	f.new_flow = known != CT_KNOWN;
	if (known == CT_UNKNOWN && icmp_error_of_known_flow(skb, &t, 1))
		return TC_ACT_OK;
	rc = policy_enforce(skb, cfg, ep, &t, &f);
	if (rc != TC_ACT_OK)
		return rc;
	if (known == CT_PENDING)
		ct_flow_state(&t, 1);
	else if (known == CT_UNKNOWN && ct_note_flow(&t) < 0)
		return drop_with_event(skb, &t, DROP_CT_FULL, 0);
	return TC_ACT_OK;
}
