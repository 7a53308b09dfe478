/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Traffic leaving a pod: tc *ingress* on the host side of the pod's veth
 * (what the pod sends arrives there). Service translation (DNAT to a
 * backend, conntrack). Policy is the next step.
 */
#include "lib.h"

SEC("classifier")
int pod_egress(struct __sk_buff *skb)
{
	return lb_egress(skb);
}
