/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The node's uplink (underlay device): tc *ingress*. In native routing,
 * packets for local pods are forwarded with bpf_fib_lookup +
 * bpf_redirect_neigh straight to the pod's veth (its pod_ingress still
 * runs there); everything else goes to the stack.
 */
#include "route.h"

SEC("classifier")
int host_ingress(struct __sk_buff *skb)
{
	struct dp_config *cfg = dp_config();
	struct endpoint_info *ep;
	struct tuple t;

	if (!cfg || cfg->routing_mode != ROUTING_NATIVE)
		return TC_ACT_OK;
	if (parse_tuple(skb, &t) == PARSE_SKIP)
		return TC_ACT_OK;
	ep = endpoint_of(t.daddr, t.family);
	if (!ep)
		return TC_ACT_OK;
	return fib_redirect(skb, cfg, &t, identity_of(t.saddr, t.family), ep->identity);
}
