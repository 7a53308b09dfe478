//! The C header and the Rust mirrors must agree: generate a C file of
//! `_Static_assert`s from the Rust layout and compile it with clang for BPF.

use std::mem::{offset_of, size_of};
use std::path::Path;
use std::process::Command;

use ironmesh_datapath::HEADER;
use ironmesh_datapath::events::*;
use ironmesh_datapath::ipcache::*;
use ironmesh_datapath::lb::*;
use ironmesh_datapath::loader::MAPS;
use ironmesh_datapath::policy::*;

fn asserts() -> String {
    let mut c = String::from("#include \"ironmesh.h\"\n");
    let mut check = |expr: &str, value: usize| {
        c.push_str(&format!(
            "_Static_assert({expr} == {value}, \"{expr} differs from Rust ({value})\");\n"
        ))
    };
    check("sizeof(struct ipcache_key)", size_of::<IpcacheKey>());
    check(
        "__builtin_offsetof(struct ipcache_key, prefixlen)",
        offset_of!(IpcacheKey, prefixlen),
    );
    check(
        "__builtin_offsetof(struct ipcache_key, family)",
        offset_of!(IpcacheKey, family),
    );
    check(
        "__builtin_offsetof(struct ipcache_key, pad)",
        offset_of!(IpcacheKey, pad),
    );
    check(
        "__builtin_offsetof(struct ipcache_key, addr)",
        offset_of!(IpcacheKey, addr),
    );
    check("sizeof(struct ipcache_value)", size_of::<IpcacheValue>());
    check(
        "__builtin_offsetof(struct ipcache_value, identity)",
        offset_of!(IpcacheValue, identity),
    );
    check(
        "__builtin_offsetof(struct ipcache_value, tunnel_endpoint_v4)",
        offset_of!(IpcacheValue, tunnel_endpoint_v4),
    );
    check(
        "__builtin_offsetof(struct ipcache_value, flags)",
        offset_of!(IpcacheValue, flags),
    );
    check(
        "__builtin_offsetof(struct ipcache_value, key_index)",
        offset_of!(IpcacheValue, key_index),
    );
    check(
        "__builtin_offsetof(struct ipcache_value, pad)",
        offset_of!(IpcacheValue, pad),
    );
    check(
        "_Alignof(struct ipcache_key)",
        std::mem::align_of::<IpcacheKey>(),
    );
    check(
        "_Alignof(struct ipcache_value)",
        std::mem::align_of::<IpcacheValue>(),
    );
    check("IRONMESH_FAMILY_IPV4", FAMILY_IPV4.into());
    check("IRONMESH_FAMILY_IPV6", FAMILY_IPV6.into());
    check("IPCACHE_STATIC_PREFIX_BITS", STATIC_PREFIX_BITS as usize);
    check("IPCACHE_F_TUNNEL_EP", F_TUNNEL_EP.into());
    check("IPCACHE_F_REMOTE_CLUSTER", F_REMOTE_CLUSTER.into());
    check("IPCACHE_F_SKIP_TUNNEL", F_SKIP_TUNNEL.into());

    // Every field of the service, conntrack and event layouts.
    macro_rules! layout {
        ($c:literal, $rust:ty, [$($f:ident $(=> $cf:ident)?),+]) => {
            check(concat!("sizeof(struct ", $c, ")"), size_of::<$rust>());
            check(concat!("_Alignof(struct ", $c, ")"), std::mem::align_of::<$rust>());
            $(layout!(@field $c, $rust, $f $(=> $cf)?);)+
        };
        (@field $c:literal, $rust:ty, $f:ident => $cf:ident) => {
            check(concat!("__builtin_offsetof(struct ", $c, ", ", stringify!($cf), ")"), offset_of!($rust, $f));
        };
        (@field $c:literal, $rust:ty, $f:ident) => {
            check(concat!("__builtin_offsetof(struct ", $c, ", ", stringify!($f), ")"), offset_of!($rust, $f));
        };
    }
    layout!("svc_key", SvcKey, [addr, dport, proto, family, scope, pad]);
    layout!("svc_value", SvcValue, [id, backend_count, flags]);
    layout!("backend_slot_key", BackendSlotKey, [svc_id, slot]);
    layout!("backend", BackendValue, [addr, port, family, state]);
    layout!(
        "ct_key",
        CtKey,
        [saddr, daddr, sport, dport, proto, family, dir, pad]
    );
    layout!(
        "ct_value",
        CtValue,
        [
            nat_addr,
            nat_port,
            flags,
            pad,
            backend_id,
            svc_id,
            pad2,
            last_seen_ns
        ]
    );
    layout!("event", RawEvent, [ts_ns, src_identity, dst_identity, saddr, daddr, sport, dport,
        kind => type, reason, proto, family, svc_id, ifindex, endpoint_id, dir, pad,
        tunnel_endpoint, tunnel_id]);
    layout!("endpoint_key", EndpointKey, [addr, family, pad]);
    layout!(
        "endpoint_info",
        EndpointInfo,
        [id, identity, ifindex, flags]
    );
    layout!("policy_key", PolicyKey, [identity, dport, proto, dir]);
    layout!("policy_value", PolicyValue, [action, pad]);
    layout!(
        "dp_config",
        DpConfig,
        [policy_mode, routing_mode, flags, tunnel_ifindex]
    );
    for (name, value) in [
        ("POLICY_DIR_INGRESS", u64::from(POLICY_DIR_INGRESS)),
        ("POLICY_DIR_EGRESS", POLICY_DIR_EGRESS.into()),
        ("POLICY_ANY_IDENTITY", POLICY_ANY_IDENTITY.into()),
        ("POLICY_SELECTED_IDENTITY", POLICY_SELECTED_IDENTITY.into()),
        ("POLICY_ALLOW", POLICY_ALLOW.into()),
        ("POLICY_DENY", POLICY_DENY.into()),
        ("POLICY_SELECTED", POLICY_SELECTED.into()),
        ("POLICY_RULES_MAX", POLICY_RULES_MAX.into()),
        ("POLICY_MODE_DEFAULT", POLICY_MODE_DEFAULT.into()),
        ("POLICY_MODE_ALWAYS", POLICY_MODE_ALWAYS.into()),
        ("POLICY_MODE_NEVER", POLICY_MODE_NEVER.into()),
        ("ROUTING_STACK", ROUTING_STACK.into()),
        ("ROUTING_NATIVE", ROUTING_NATIVE.into()),
        ("ROUTING_VXLAN", ROUTING_VXLAN.into()),
        ("CONFIG_F_TRACE", CONFIG_F_TRACE.into()),
        ("MARK_MAGIC_IDENTITY", MARK_MAGIC_IDENTITY.into()),
        ("MARK_IDENTITY_MASK", MARK_IDENTITY_MASK.into()),
        ("EVENT_TRACE", EVENT_TRACE.into()),
        ("EVENT_DIR_NONE", EVENT_DIR_NONE.into()),
        ("DROP_POLICY_DENIED", DROP_POLICY_DENIED.into()),
        ("DROP_POLICY_DEFAULT", DROP_POLICY_DEFAULT.into()),
        ("DROP_NO_TUNNEL_KEY", DROP_NO_TUNNEL_KEY.into()),
        ("DROP_TUNNEL_KEY", DROP_TUNNEL_KEY.into()),
        ("DROP_CT_FULL", DROP_CT_FULL.into()),
        ("VERDICT_ALLOWED", VERDICT_ALLOWED.into()),
        ("VERDICT_DENIED", VERDICT_DENIED.into()),
        ("VERDICT_DEFAULT_DENY", VERDICT_DEFAULT_DENY.into()),
        ("TRACE_TO_OVERLAY", TRACE_TO_OVERLAY.into()),
        ("TRACE_FROM_OVERLAY", TRACE_FROM_OVERLAY.into()),
        ("TRACE_FIB_REDIRECT", TRACE_FIB_REDIRECT.into()),
    ] {
        check(name, value as usize);
    }
    check("sizeof(struct maglev_table)", size_of::<MaglevTable>());
    check("MAGLEV_TABLE_SIZE", MAGLEV_TABLE_SIZE);
    check("SVC_F_MAGLEV", SVC_F_MAGLEV.into());
    check("BACKEND_ACTIVE", BACKEND_ACTIVE.into());
    check("BACKEND_TERMINATING", BACKEND_TERMINATING.into());
    check("BACKEND_QUARANTINED", BACKEND_QUARANTINED.into());
    check("CT_DIR_FORWARD", CT_DIR_FORWARD.into());
    check("CT_DIR_REPLY", CT_DIR_REPLY.into());
    check("CT_F_SERVICE", CT_F_SERVICE.into());
    check("CT_F_EXTERNAL", CT_F_EXTERNAL.into());
    check("CT_F_VERDICT_PENDING", CT_F_VERDICT_PENDING.into());
    check("SVC_SCOPE_INTERNAL", SVC_SCOPE_INTERNAL.into());
    check("SVC_SCOPE_EXTERNAL", SVC_SCOPE_EXTERNAL.into());
    check("EVENT_DROP", EVENT_DROP.into());
    check("EVENT_POLICY_VERDICT", EVENT_POLICY_VERDICT.into());
    check("DROP_NO_BACKEND", DROP_NO_BACKEND.into());
    check("DROP_FAMILY_MISMATCH", DROP_FAMILY_MISMATCH.into());
    check(
        "IDENTITY_WORLD",
        common::ReservedIdentity::World.id() as usize,
    );

    // The loader's expectations of each pinned map match the C definitions.
    for m in MAPS {
        let upper = m.name.to_uppercase();
        let entries = if m.name == "events" {
            "EVENTS_BYTES".to_owned()
        } else {
            format!("{upper}_MAX_ENTRIES")
        };
        check(&entries, m.max_entries as usize);
    }
    c
}

/// Compiles `source` with `clang -target bpf`; Err holds clang's stderr.
fn compile(source: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("abi.c");
    std::fs::write(&file, source).unwrap();
    let bpf_dir = Path::new(HEADER).parent().unwrap();
    // <linux/types.h> needs the host's <asm/types.h> from the multiarch dir.
    let multiarch = format!("/usr/include/{}-linux-gnu", std::env::consts::ARCH);
    let out = Command::new("clang")
        .args(["-target", "bpf", "-O2", "-Wall", "-Werror", "-c"])
        .arg("-I")
        .arg(bpf_dir)
        .arg("-I")
        .arg(&multiarch)
        .arg(&file)
        .arg("-o")
        .arg(dir.path().join("abi.o"))
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run clang ({e}); install it with scripts/setup (Debian package clang)")
        });
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn header_matches_rust_layout() {
    if let Err(stderr) = compile(&asserts()) {
        panic!("bpf/ironmesh.h and src/ipcache.rs disagree:\n{stderr}");
    }
}

#[test]
fn a_mismatch_is_caught() {
    let wrong = format!(
        "{}_Static_assert(sizeof(struct ipcache_key) == 23, \"deliberately wrong\");\n",
        asserts()
    );
    let stderr = compile(&wrong).expect_err("clang accepted a wrong size assertion");
    assert!(stderr.contains("deliberately wrong"), "{stderr}");
}
