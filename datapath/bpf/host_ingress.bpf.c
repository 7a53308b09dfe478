/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The node's uplink (underlay device): tc *ingress*.
 *
 * North-south load balancing: TCP/UDP to a VIP:port with an *external*
 * service entry (SVC_SCOPE_EXTERNAL: this node's backends only, i.e.
 * externalTrafficPolicy=Local) is DNATed to a local backend (conntrack keeps
 * established flows on their backend; new ones by Maglev), with conntrack
 * entries marked CT_F_EXTERNAL: the backend's pod_egress restores VIP:port
 * on the reply, so no SNAT is needed and the client sees the VIP. The
 * backend's pod_ingress applies its ingress policy to the client (world or
 * its CIDR identity). An external entry without an active backend drops new
 * flows with a `no_backend` event; a VIP without an external entry here is
 * not translated (the node does not serve it and does not announce it).
 *
 * Then, in native routing, packets for local pods are forwarded with
 * bpf_fib_lookup + bpf_redirect_neigh straight to the pod's veth (its
 * pod_ingress still runs there); everything else goes to the stack.
 */
#include "route.h"

SEC("classifier")
int host_ingress(struct __sk_buff *skb)
{
	struct dp_config *cfg = dp_config();
	struct endpoint_info *ep;
	struct tuple t;
	int parsed = parse_tuple(skb, &t);
	int lb = LB_NONE, rc;

	if (parsed == PARSE_SKIP)
		return TC_ACT_OK;
	if (parsed == PARSE_OK) {
		rc = lb_egress(skb, &t, &lb, SVC_SCOPE_EXTERNAL);
		if (rc != TC_ACT_OK)
			return rc;
	}
	if (!cfg || cfg->routing_mode != ROUTING_NATIVE)
		return TC_ACT_OK;
	ep = endpoint_of(t.daddr, t.family);
	if (!ep)
		return TC_ACT_OK;
	return fib_redirect(skb, cfg, &t, identity_of(t.saddr, t.family), ep->identity);
}
