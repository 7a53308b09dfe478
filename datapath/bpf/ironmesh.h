/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Map key/value layouts shared by the eBPF programs and the Rust agent.
 * The Rust mirrors live in datapath/src/ipcache.rs; tests/abi.rs compiles a
 * file with `clang -target bpf` that asserts both sides agree.
 */
#ifndef IRONMESH_H
#define IRONMESH_H

#include <linux/types.h>

#define IRONMESH_FAMILY_IPV4 1
#define IRONMESH_FAMILY_IPV6 2

/*
 * IP cache: longest-prefix match from an address to its identity.
 * BPF_MAP_TYPE_LPM_TRIE key: `prefixlen` counts bits from `family` on, so
 * every lookup also matches family and pad exactly (the static 32 bits)
 * and IPv4 and IPv6 entries live in one map.
 */
#define IPCACHE_STATIC_PREFIX_BITS 32

struct ipcache_key {
	__u32 prefixlen; /* IPCACHE_STATIC_PREFIX_BITS + prefix length */
	__u8 family;     /* IRONMESH_FAMILY_* */
	__u8 pad[3];     /* zero */
	__u8 addr[16];   /* network order; IPv4 in addr[0..4], rest zero */
};

/* ipcache_value.flags */
#define IPCACHE_F_TUNNEL_EP      (1 << 0) /* tunnel_endpoint_v4 is set */
#define IPCACHE_F_REMOTE_CLUSTER (1 << 1) /* address belongs to another cluster */
#define IPCACHE_F_SKIP_TUNNEL    (1 << 2) /* routed natively even in vxlan mode */

struct ipcache_value {
	__u32 identity;           /* 24-bit security identity, host order */
	__be32 tunnel_endpoint_v4; /* node to encapsulate to, network order */
	__u8 flags;               /* IPCACHE_F_* */
	__u8 key_index;           /* encryption key index; 0 = send in clear */
	__u8 pad[2];              /* zero */
};

#endif /* IRONMESH_H */
