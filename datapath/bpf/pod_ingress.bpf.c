/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Traffic entering a pod: tc *egress* on the host side of the pod's veth.
 * Reverse NAT of service replies (backend -> VIP:port as the source).
 * Policy is the next step.
 */
#include "lib.h"

SEC("classifier")
int pod_ingress(struct __sk_buff *skb)
{
	return lb_reverse(skb);
}
