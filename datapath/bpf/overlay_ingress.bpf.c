/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Packets decapsulated by the node's `external` (collect_md) VXLAN device:
 * tc *ingress* on that device. The VNI is the sender's source identity; it
 * is handed to pod_ingress in skb->mark. The inner Ethernet destination is
 * the sending node's veth MAC, so the packet is marked for this host before
 * the stack (which would otherwise drop it as PACKET_OTHERHOST) routes it.
 */
#include "route.h"

#define PACKET_HOST 0

SEC("classifier")
int overlay_ingress(struct __sk_buff *skb)
{
	struct dp_config *cfg = dp_config();
	struct bpf_tunnel_key key;
	struct tuple t;
	__u32 identity;

	if (parse_tuple(skb, &t) == PARSE_SKIP)
		return TC_ACT_OK;
	__builtin_memset(&key, 0, sizeof(key));
	if (bpf_skb_get_tunnel_key(skb, &key, sizeof(key), 0) < 0)
		return drop_with_event(skb, &t, DROP_NO_TUNNEL_KEY, 0);
	identity = key.tunnel_id & MARK_IDENTITY_MASK;
	if (!identity)
		identity = IDENTITY_WORLD;
	skb->mark = MARK_MAGIC_IDENTITY | identity;
	if (skb->pkt_type != PACKET_HOST && bpf_skb_change_type(skb, PACKET_HOST) < 0)
		return TC_ACT_SHOT;
	trace(skb, cfg, &t, TRACE_FROM_OVERLAY, identity, identity_of(t.daddr, t.family),
	      bpf_htonl(key.remote_ipv4), key.tunnel_id);
	return TC_ACT_OK;
}
