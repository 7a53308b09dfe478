//! Rust mirrors of the service, backend and conntrack map layouts
//! (`bpf/ironmesh.h`). Sizes and offsets are asserted at compile time here
//! and against clang's view of the header in `tests/abi.rs`.
//!
//! Addresses are 16 bytes in network order with IPv4 in the first four
//! (the IP cache's convention); `u16` ports named `*port` hold the value in
//! network order, as `__be16` does in C: use the constructors and accessors.

use std::mem::{offset_of, size_of};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::ipcache::{FAMILY_IPV4, FAMILY_IPV6};

pub const SVC_F_MAGLEV: u16 = 1 << 0;
/// `svc_key.scope` of the entry pods use (pod_egress): every backend.
pub const SVC_SCOPE_INTERNAL: u8 = 0;
/// `svc_key.scope` of the entry the uplink uses (host_ingress): this node's
/// backends only (externalTrafficPolicy=Local).
pub const SVC_SCOPE_EXTERNAL: u8 = 1;
/// Slots in each service's Maglev table: a prime, as the paper requires.
pub const MAGLEV_TABLE_SIZE: usize = 16381;

pub const BACKEND_ACTIVE: u8 = 0;
pub const BACKEND_TERMINATING: u8 = 1;
pub const BACKEND_QUARANTINED: u8 = 2;

pub const CT_DIR_FORWARD: u8 = 0;
pub const CT_DIR_REPLY: u8 = 1;
pub const CT_F_SERVICE: u8 = 1 << 0;
/// Entry of an external flow (uplink -> local backend): its reply is
/// reverse-translated by the backend's pod_egress, never by a pod_ingress.
pub const CT_F_EXTERNAL: u8 = 1 << 1;
/// Reply entry of a new external flow whose first packet has not yet passed
/// the backend's ingress policy (so that packet still gets a verdict event).
pub const CT_F_VERDICT_PENDING: u8 = 1 << 2;

pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// The 16-byte map form of an address and its family.
pub fn addr_bytes(ip: IpAddr) -> ([u8; 16], u8) {
    let mut b = [0u8; 16];
    match ip {
        IpAddr::V4(a) => {
            b[..4].copy_from_slice(&a.octets());
            (b, FAMILY_IPV4)
        }
        IpAddr::V6(a) => (a.octets(), FAMILY_IPV6),
    }
}

/// The address back from its map form; `None` for an unknown family.
pub fn addr_from(b: &[u8; 16], family: u8) -> Option<IpAddr> {
    match family {
        FAMILY_IPV4 => Some(Ipv4Addr::new(b[0], b[1], b[2], b[3]).into()),
        FAMILY_IPV6 => Some(Ipv6Addr::from(*b).into()),
        _ => None,
    }
}

/// L4 protocols a service can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => IPPROTO_TCP,
            Proto::Udp => IPPROTO_UDP,
        }
    }
}

/// Which entry of a VIP:port/proto: the one pods use, or the one external
/// clients arriving on the uplink use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Scope {
    /// pod_egress: every backend of the service (east-west).
    #[default]
    Internal,
    /// host_ingress: only this node's backends (externalTrafficPolicy=Local:
    /// no SNAT, the client sees replies from VIP:port).
    External,
}

impl Scope {
    pub fn raw(self) -> u8 {
        match self {
            Scope::Internal => SVC_SCOPE_INTERNAL,
            Scope::External => SVC_SCOPE_EXTERNAL,
        }
    }
}

/// `struct svc_key`: VIP:port/proto/scope.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SvcKey {
    pub addr: [u8; 16],
    /// Network order.
    pub dport: u16,
    pub proto: u8,
    pub family: u8,
    /// `SVC_SCOPE_*`.
    pub scope: u8,
    pub pad: [u8; 3],
}

const _: () = assert!(size_of::<SvcKey>() == 24);
const _: () = assert!(offset_of!(SvcKey, addr) == 0);
const _: () = assert!(offset_of!(SvcKey, dport) == 16);
const _: () = assert!(offset_of!(SvcKey, proto) == 18);
const _: () = assert!(offset_of!(SvcKey, family) == 19);
const _: () = assert!(offset_of!(SvcKey, scope) == 20);
const _: () = assert!(offset_of!(SvcKey, pad) == 21);

impl SvcKey {
    /// The internal (pod) entry's key.
    pub fn new(vip: IpAddr, port: u16, proto: Proto) -> Self {
        Self::scoped(vip, port, proto, Scope::Internal)
    }

    pub fn scoped(vip: IpAddr, port: u16, proto: Proto, scope: Scope) -> Self {
        let (addr, family) = addr_bytes(vip);
        Self {
            addr,
            dport: port.to_be(),
            proto: proto.number(),
            family,
            scope: scope.raw(),
            pad: [0; 3],
        }
    }

    pub fn vip(&self) -> Option<IpAddr> {
        addr_from(&self.addr, self.family)
    }

    pub fn port(&self) -> u16 {
        u16::from_be(self.dport)
    }
}

/// `struct svc_value`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SvcValue {
    pub id: u32,
    pub backend_count: u16,
    pub flags: u16,
}

const _: () = assert!(size_of::<SvcValue>() == 8);
const _: () = assert!(offset_of!(SvcValue, id) == 0);
const _: () = assert!(offset_of!(SvcValue, backend_count) == 4);
const _: () = assert!(offset_of!(SvcValue, flags) == 6);

/// `struct backend_slot_key`: slot `0..backend_count` of a service.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct BackendSlotKey {
    pub svc_id: u32,
    pub slot: u32,
}

const _: () = assert!(size_of::<BackendSlotKey>() == 8);
const _: () = assert!(offset_of!(BackendSlotKey, svc_id) == 0);
const _: () = assert!(offset_of!(BackendSlotKey, slot) == 4);

/// Whether a backend takes new flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendState {
    /// Takes new flows.
    Active,
    /// Keeps its established flows, takes no new ones.
    Terminating,
    /// Unreachable: no new flows, and established ones are re-balanced.
    Quarantined,
}

impl BackendState {
    pub fn raw(self) -> u8 {
        match self {
            Self::Active => BACKEND_ACTIVE,
            Self::Terminating => BACKEND_TERMINATING,
            Self::Quarantined => BACKEND_QUARANTINED,
        }
    }

    pub fn from_raw(v: u8) -> Option<Self> {
        match v {
            BACKEND_ACTIVE => Some(Self::Active),
            BACKEND_TERMINATING => Some(Self::Terminating),
            BACKEND_QUARANTINED => Some(Self::Quarantined),
            _ => None,
        }
    }
}

/// `struct backend`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct BackendValue {
    pub addr: [u8; 16],
    /// Network order.
    pub port: u16,
    pub family: u8,
    pub state: u8,
}

const _: () = assert!(size_of::<BackendValue>() == 20);
const _: () = assert!(offset_of!(BackendValue, addr) == 0);
const _: () = assert!(offset_of!(BackendValue, port) == 16);
const _: () = assert!(offset_of!(BackendValue, family) == 18);
const _: () = assert!(offset_of!(BackendValue, state) == 19);

impl BackendValue {
    pub fn new(ip: IpAddr, port: u16, state: BackendState) -> Self {
        let (addr, family) = addr_bytes(ip);
        Self {
            addr,
            port: port.to_be(),
            family,
            state: state.raw(),
        }
    }

    pub fn ip(&self) -> Option<IpAddr> {
        addr_from(&self.addr, self.family)
    }

    pub fn port(&self) -> u16 {
        u16::from_be(self.port)
    }
}

/// `struct maglev_table`: one service's whole lookup table of backend ids.
pub type MaglevTable = [u32; MAGLEV_TABLE_SIZE];

/// `struct ct_key`: a flow as seen in one direction.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CtKey {
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// Network order.
    pub sport: u16,
    /// Network order.
    pub dport: u16,
    pub proto: u8,
    pub family: u8,
    pub dir: u8,
    pub pad: u8,
}

const _: () = assert!(size_of::<CtKey>() == 40);
const _: () = assert!(offset_of!(CtKey, saddr) == 0);
const _: () = assert!(offset_of!(CtKey, daddr) == 16);
const _: () = assert!(offset_of!(CtKey, sport) == 32);
const _: () = assert!(offset_of!(CtKey, dport) == 34);
const _: () = assert!(offset_of!(CtKey, proto) == 36);
const _: () = assert!(offset_of!(CtKey, family) == 37);
const _: () = assert!(offset_of!(CtKey, dir) == 38);
const _: () = assert!(offset_of!(CtKey, pad) == 39);

impl CtKey {
    /// The key of a flow; both addresses must be of one family.
    pub fn new(src: (IpAddr, u16), dst: (IpAddr, u16), proto: Proto, dir: u8) -> Self {
        let (saddr, family) = addr_bytes(src.0);
        let (daddr, _) = addr_bytes(dst.0);
        Self {
            saddr,
            daddr,
            sport: src.1.to_be(),
            dport: dst.1.to_be(),
            proto: proto.number(),
            family,
            dir,
            pad: 0,
        }
    }
}

/// `struct ct_value`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CtValue {
    /// Forward: the backend (new destination); reply: the VIP (new source).
    pub nat_addr: [u8; 16],
    /// Network order.
    pub nat_port: u16,
    pub flags: u8,
    pub pad: u8,
    pub backend_id: u32,
    pub svc_id: u32,
    pub pad2: u32,
    pub last_seen_ns: u64,
}

const _: () = assert!(size_of::<CtValue>() == 40);
const _: () = assert!(offset_of!(CtValue, nat_addr) == 0);
const _: () = assert!(offset_of!(CtValue, nat_port) == 16);
const _: () = assert!(offset_of!(CtValue, flags) == 18);
const _: () = assert!(offset_of!(CtValue, pad) == 19);
const _: () = assert!(offset_of!(CtValue, backend_id) == 20);
const _: () = assert!(offset_of!(CtValue, svc_id) == 24);
const _: () = assert!(offset_of!(CtValue, pad2) == 28);
const _: () = assert!(offset_of!(CtValue, last_seen_ns) == 32);

impl CtValue {
    pub fn nat_port(&self) -> u16 {
        u16::from_be(self.nat_port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_order_fields() {
        let k = SvcKey::new("192.0.2.10".parse().unwrap(), 80, Proto::Tcp);
        assert_eq!(&k.addr[..4], &[192, 0, 2, 10]);
        assert_eq!(k.dport.to_ne_bytes(), [0, 80]);
        assert_eq!((k.port(), k.proto, k.family), (80, 6, FAMILY_IPV4));
        assert_eq!(k.vip(), Some("192.0.2.10".parse().unwrap()));

        let b = BackendValue::new(
            "2001:db8::7".parse().unwrap(),
            8443,
            BackendState::Terminating,
        );
        assert_eq!(b.port.to_ne_bytes(), 8443u16.to_be_bytes());
        assert_eq!((b.port(), b.family, b.state), (8443, FAMILY_IPV6, 1));
        assert_eq!(b.ip(), Some("2001:db8::7".parse().unwrap()));
        assert_eq!(
            BackendState::from_raw(b.state),
            Some(BackendState::Terminating)
        );
        assert_eq!(BackendState::from_raw(9), None);
        assert_eq!(addr_from(&[0; 16], 7), None);
    }
}
