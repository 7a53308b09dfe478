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

/* Reserved identities the datapath itself uses (common::ReservedIdentity). */
#define IDENTITY_WORLD 2

/* ------------------------------------------------------------------ *
 * Services (load balancing). 32-bit service and backend IDs.
 * ------------------------------------------------------------------ */

/* svc_value.flags */
#define SVC_F_MAGLEV (1 << 0) /* pick with the Maglev table, else random slot */

/*
 * svc_key.scope: who uses the entry. A VIP:port can have both entries, each
 * with its own service id (so its own Maglev table / slots).
 */
#define SVC_SCOPE_INTERNAL 0 /* pods (pod_egress): every backend of the service */
#define SVC_SCOPE_EXTERNAL 1 /* the uplink (host_ingress): this node's backends only
			      * (externalTrafficPolicy=Local: no SNAT, replies from the VIP) */

/* Maglev lookup table size per service: a prime (Maglev paper §3.4, M >> N). */
#define MAGLEV_TABLE_SIZE 16381

/* services: VIP:port/proto/scope -> service. */
struct svc_key {
	__u8 addr[16];   /* VIP, network order; IPv4 in addr[0..4], rest zero */
	__be16 dport;    /* network order */
	__u8 proto;      /* IPPROTO_TCP / IPPROTO_UDP */
	__u8 family;     /* IRONMESH_FAMILY_* */
	__u8 scope;      /* SVC_SCOPE_* */
	__u8 pad[3];     /* zero */
};

struct svc_value {
	__u32 id;            /* service id, never 0 */
	__u16 backend_count; /* active backends = slots 0..count-1 in backend_slots */
	__u16 flags;         /* SVC_F_* */
};

/* backend_slots: (service id, slot) -> backend id, for random selection. */
struct backend_slot_key {
	__u32 svc_id;
	__u32 slot;
};

/* backend.state */
#define BACKEND_ACTIVE      0 /* takes new flows */
#define BACKEND_TERMINATING 1 /* keeps established flows, no new ones */
#define BACKEND_QUARANTINED 2 /* unreachable: established flows are re-balanced */

/* backends: backend id -> address. */
struct backend {
	__u8 addr[16];  /* network order; IPv4 in addr[0..4] */
	__be16 port;    /* network order */
	__u8 family;    /* IRONMESH_FAMILY_* */
	__u8 state;     /* BACKEND_* */
};

/* maglev: service id -> the whole lookup table (backend ids), written at once. */
struct maglev_table {
	__u32 backend_ids[MAGLEV_TABLE_SIZE];
};

/* ------------------------------------------------------------------ *
 * Connection tracking.
 * A translated flow has two entries: CT_DIR_FORWARD keyed by the packet
 * as the client sent it (client -> VIP) and CT_DIR_REPLY keyed by the
 * reply as the backend sends it (backend -> client).
 * ------------------------------------------------------------------ */
#define CT_DIR_FORWARD 0
#define CT_DIR_REPLY   1

struct ct_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 family;
	__u8 dir;     /* CT_DIR_* */
	__u8 pad;     /* zero */
};

/* ct_value.flags */
#define CT_F_SERVICE  (1 << 0) /* entry of a service translation */
#define CT_F_EXTERNAL (1 << 1) /* of an external (uplink -> local backend) flow: the
				* reply is reverse-translated by the backend's pod_egress */
#define CT_F_VERDICT_PENDING (1 << 2) /* reply entry of a new external flow whose first
				       * packet has not met the backend's ingress policy */

struct ct_value {
	__u8 nat_addr[16]; /* forward: backend (new daddr); reply: VIP (new saddr) */
	__be16 nat_port;   /* forward: backend port; reply: service port */
	__u8 flags;        /* CT_F_* */
	__u8 pad;
	__u32 backend_id;
	__u32 svc_id;
	__u32 pad2;
	__u64 last_seen_ns; /* bpf_ktime_get_coarse_ns(): CLOCK_MONOTONIC, tick resolution */
};

/* ------------------------------------------------------------------ *
 * Endpoints (local pods) and identity policy.
 * ------------------------------------------------------------------ */

/* endpoints: a local pod's address -> the endpoint it belongs to. */
struct endpoint_key {
	__u8 addr[16];  /* network order; IPv4 in addr[0..4], rest zero */
	__u8 family;    /* IRONMESH_FAMILY_* */
	__u8 pad[3];    /* zero */
};

struct endpoint_info {
	__u32 id;       /* endpoint id: the key of its policy in `policy` */
	__u32 identity; /* the pod's security identity */
	__u32 ifindex;  /* host side of its veth (0 = unknown) */
	__u32 flags;    /* zero (reserved) */
};

#define POLICY_DIR_INGRESS 0 /* traffic to the endpoint */
#define POLICY_DIR_EGRESS  1 /* traffic from the endpoint */

/* policy_key.identity: any peer. */
#define POLICY_ANY_IDENTITY 0
/*
 * policy_key.identity of the marker entry {SELECTED, 0, 0, dir} whose
 * presence says "a policy selects this endpoint in direction dir", which
 * makes it default-deny in that direction (Kubernetes NetworkPolicy).
 * Identities are 24-bit, so no peer has this one.
 */
#define POLICY_SELECTED_IDENTITY 0xffffffff

/*
 * One rule of an endpoint's policy. dport 0 = any port, proto 0 = any
 * protocol (then dport is 0 too). A packet matches up to six keys:
 * {peer, ANY} x {(proto, port), (proto, any), (any, any)}; a DENY among
 * them wins over an ALLOW.
 */
struct policy_key {
	__u32 identity; /* peer identity, POLICY_ANY_IDENTITY, or POLICY_SELECTED_IDENTITY */
	__be16 dport;   /* network order; 0 = any */
	__u8 proto;     /* IPPROTO_*; 0 = any */
	__u8 dir;       /* POLICY_DIR_* */
};

#define POLICY_ALLOW    1
#define POLICY_DENY     2
#define POLICY_SELECTED 3 /* value of the marker entry */

struct policy_value {
	__u8 action;  /* POLICY_ALLOW / POLICY_DENY / POLICY_SELECTED */
	__u8 pad[3];  /* zero */
};

/* ------------------------------------------------------------------ *
 * Node-wide configuration: one element of the `config` array.
 * ------------------------------------------------------------------ */
#define POLICY_MODE_DEFAULT 0 /* enforce where a policy selects the endpoint */
#define POLICY_MODE_ALWAYS  1 /* every endpoint is default-deny both ways */
#define POLICY_MODE_NEVER   2 /* no enforcement at all */

#define ROUTING_STACK  0 /* hand packets to the kernel stack (no redirect) */
#define ROUTING_NATIVE 1 /* bpf_fib_lookup + bpf_redirect_neigh */
#define ROUTING_VXLAN  2 /* remote pods via the `external` VXLAN device */

/* dp_config.flags */
#define CONFIG_F_TRACE      (1 << 0) /* trace events (to/from overlay, FIB redirect) */
#define CONFIG_F_ANTI_SPOOF (1 << 1) /* pods may send only from their own addresses */

struct dp_config {
	__u8 policy_mode;     /* POLICY_MODE_* */
	__u8 routing_mode;    /* ROUTING_* */
	__u16 flags;          /* CONFIG_F_* */
	__u32 tunnel_ifindex; /* the VXLAN `external` device (ROUTING_VXLAN) */
};

/*
 * skb->mark set by the overlay program for the programs behind it:
 * MARK_MAGIC_IDENTITY in the top byte, the source identity (from the VNI)
 * in the low 24 bits.
 */
#define MARK_MAGIC_MASK     0xff000000
#define MARK_MAGIC_IDENTITY 0x4e000000
#define MARK_IDENTITY_MASK  0x00ffffff

/* ------------------------------------------------------------------ *
 * Events (ring buffer), read by the agent (`ironctl monitor`).
 * ------------------------------------------------------------------ */
#define EVENT_DROP           1
#define EVENT_POLICY_VERDICT 2 /* a new flow met an enforced policy */
#define EVENT_TRACE          3 /* routing decisions, when CONFIG_F_TRACE is set */

/* event.reason of EVENT_DROP */
#define DROP_NO_BACKEND      1 /* service without a usable backend */
#define DROP_FAMILY_MISMATCH 2 /* backend of the other address family */
#define DROP_POLICY_DENIED   3 /* a deny rule matched */
#define DROP_POLICY_DEFAULT  4 /* enforced, and no rule allows it */
#define DROP_NO_TUNNEL_KEY   5 /* overlay packet without tunnel metadata */
#define DROP_TUNNEL_KEY      6 /* bpf_skb_set_tunnel_key failed */
#define DROP_CT_FULL         7 /* conntrack update failed */
#define DROP_SPOOFED         8 /* a pod sent from an address that is not its own */

/* event.reason of EVENT_POLICY_VERDICT */
#define VERDICT_ALLOWED      1
#define VERDICT_DENIED       2
#define VERDICT_DEFAULT_DENY 3

/* event.reason of EVENT_TRACE */
#define TRACE_TO_OVERLAY   1 /* tunnel key set, redirected to the VXLAN device */
#define TRACE_FROM_OVERLAY 2 /* decapsulated; identity from the VNI */
#define TRACE_FIB_REDIRECT 3 /* bpf_fib_lookup + bpf_redirect_neigh */

/* event.dir */
#define EVENT_DIR_INGRESS POLICY_DIR_INGRESS
#define EVENT_DIR_EGRESS  POLICY_DIR_EGRESS
#define EVENT_DIR_NONE    0xff

struct event {
	__u64 ts_ns;
	__u32 src_identity;
	__u32 dst_identity;
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport;
	__be16 dport;
	__u8 type;     /* EVENT_* */
	__u8 reason;   /* DROP_* / VERDICT_* / TRACE_* */
	__u8 proto;
	__u8 family;
	__u32 svc_id;
	__u32 ifindex;
	__u32 endpoint_id;     /* local endpoint concerned, 0 if none */
	__u8 dir;              /* EVENT_DIR_* */
	__u8 pad[3];
	__be32 tunnel_endpoint; /* TRACE_TO_OVERLAY: remote node, as the kernel holds it */
	__u32 tunnel_id;        /* TRACE_*_OVERLAY: the VNI as the kernel holds it */
};

/* ------------------------------------------------------------------ *
 * Map definitions (BTF-defined, pinned by name under the pin root, so
 * every program object shares them and they survive agent restarts).
 * The Rust loader checks a reused pin has these exact layouts.
 * ------------------------------------------------------------------ */
#ifdef __bpf__
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define IPCACHE_MAX_ENTRIES       262144
#define SERVICES_MAX_ENTRIES      131072
#define BACKEND_SLOTS_MAX_ENTRIES 262144
#define BACKENDS_MAX_ENTRIES      262144
#define MAGLEV_MAX_ENTRIES        4096
#define CONNTRACK_MAX_ENTRIES     262144
#define EVENTS_BYTES              (256 * 1024)

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct ipcache_key);
	__type(value, struct ipcache_value);
	__uint(max_entries, IPCACHE_MAX_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ipcache SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct svc_key);
	__type(value, struct svc_value);
	__uint(max_entries, SERVICES_MAX_ENTRIES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct backend_slot_key);
	__type(value, __u32);
	__uint(max_entries, BACKEND_SLOTS_MAX_ENTRIES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} backend_slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct backend);
	__uint(max_entries, BACKENDS_MAX_ENTRIES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} backends SEC(".maps");

/*
 * One element per Maglev service holding its whole table. Not preallocated:
 * memory is used only by services that have a table, and an update swaps the
 * element under RCU, so a packet sees the old table or the new one, never a
 * mix (a preallocated hash map may recycle the old element under a reader).
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct maglev_table);
	__uint(max_entries, MAGLEV_MAX_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} maglev SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct_key);
	__type(value, struct ct_value);
	__uint(max_entries, CONNTRACK_MAX_ENTRIES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} conntrack SEC(".maps");

#define ENDPOINTS_MAX_ENTRIES     65536
#define POLICY_MAX_ENTRIES        65536 /* endpoints with a policy */
#define POLICY_RULES_MAX          16384 /* rules of one endpoint's policy */
#define CONFIG_MAX_ENTRIES        1

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct endpoint_key);
	__type(value, struct endpoint_info);
	__uint(max_entries, ENDPOINTS_MAX_ENTRIES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} endpoints SEC(".maps");

/*
 * policy: endpoint id -> that endpoint's whole policy, an inner hash map.
 * The agent builds a new inner map completely, then swaps it in with one
 * update of the outer map: a packet sees the old policy or the new one,
 * never a half-applied mix. No entry = no policy selects the endpoint.
 */
/* Sizes, not __type: clang emits the key/value structs behind the
 * __array pointer only as forward declarations. */
struct policy_rules {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(key_size, sizeof(struct policy_key));
	__uint(value_size, sizeof(struct policy_value));
	__uint(max_entries, POLICY_RULES_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__type(key, __u32);
	__uint(max_entries, POLICY_MAX_ENTRIES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct policy_rules);
} policy SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct dp_config);
	__uint(max_entries, CONFIG_MAX_ENTRIES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, EVENTS_BYTES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} events SEC(".maps");
#endif /* __bpf__ */

#endif /* IRONMESH_H */
