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

/* Maglev lookup table size per service: a prime (Maglev paper §3.4, M >> N). */
#define MAGLEV_TABLE_SIZE 16381

/* services: VIP:port/proto -> service. */
struct svc_key {
	__u8 addr[16];   /* VIP, network order; IPv4 in addr[0..4], rest zero */
	__be16 dport;    /* network order */
	__u8 proto;      /* IPPROTO_TCP / IPPROTO_UDP */
	__u8 family;     /* IRONMESH_FAMILY_* */
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
#define CT_F_SERVICE (1 << 0) /* entry of a service translation */

struct ct_value {
	__u8 nat_addr[16]; /* forward: backend (new daddr); reply: VIP (new saddr) */
	__be16 nat_port;   /* forward: backend port; reply: service port */
	__u8 flags;        /* CT_F_* */
	__u8 pad;
	__u32 backend_id;
	__u32 svc_id;
	__u32 pad2;
	__u64 last_seen_ns; /* bpf_ktime_get_ns() */
};

/* ------------------------------------------------------------------ *
 * Events (ring buffer), read by the agent (`ironctl monitor`).
 * ------------------------------------------------------------------ */
#define EVENT_DROP           1
#define EVENT_POLICY_VERDICT 2 /* reserved for the policy step */

#define DROP_NO_BACKEND      1 /* service without a usable backend */
#define DROP_FAMILY_MISMATCH 2 /* backend of the other address family */

struct event {
	__u64 ts_ns;
	__u32 src_identity;
	__u32 dst_identity;
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport;
	__be16 dport;
	__u8 type;     /* EVENT_* */
	__u8 reason;   /* DROP_* */
	__u8 proto;
	__u8 family;
	__u32 svc_id;
	__u32 ifindex;
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

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, EVENTS_BYTES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} events SEC(".maps");
#endif /* __bpf__ */

#endif /* IRONMESH_H */
