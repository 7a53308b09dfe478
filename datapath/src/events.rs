//! `struct event` of the `events` ring buffer (bpf/ironmesh.h): drops (and,
//! with the policy step, verdicts) with the identities of both ends.

use std::mem::{offset_of, size_of};
use std::net::IpAddr;

use crate::lb::addr_from;

pub const EVENT_DROP: u8 = 1;
pub const EVENT_POLICY_VERDICT: u8 = 2;

pub const DROP_NO_BACKEND: u8 = 1;
pub const DROP_FAMILY_MISMATCH: u8 = 2;

/// `struct event`, as the program writes it.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RawEvent {
    pub ts_ns: u64,
    pub src_identity: u32,
    pub dst_identity: u32,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// Network order.
    pub sport: u16,
    /// Network order.
    pub dport: u16,
    pub kind: u8,
    pub reason: u8,
    pub proto: u8,
    pub family: u8,
    pub svc_id: u32,
    pub ifindex: u32,
}

const _: () = assert!(size_of::<RawEvent>() == 64);
const _: () = assert!(offset_of!(RawEvent, ts_ns) == 0);
const _: () = assert!(offset_of!(RawEvent, src_identity) == 8);
const _: () = assert!(offset_of!(RawEvent, dst_identity) == 12);
const _: () = assert!(offset_of!(RawEvent, saddr) == 16);
const _: () = assert!(offset_of!(RawEvent, daddr) == 32);
const _: () = assert!(offset_of!(RawEvent, sport) == 48);
const _: () = assert!(offset_of!(RawEvent, dport) == 50);
const _: () = assert!(offset_of!(RawEvent, kind) == 52);
const _: () = assert!(offset_of!(RawEvent, reason) == 53);
const _: () = assert!(offset_of!(RawEvent, proto) == 54);
const _: () = assert!(offset_of!(RawEvent, family) == 55);
const _: () = assert!(offset_of!(RawEvent, svc_id) == 56);
const _: () = assert!(offset_of!(RawEvent, ifindex) == 60);

impl RawEvent {
    pub const SIZE: usize = size_of::<Self>();

    /// Decodes one ring buffer record; `None` if it is too short.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        let b: &[u8; Self::SIZE] = b.get(..Self::SIZE)?.try_into().ok()?;
        let u32_at = |o: usize| u32::from_ne_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let mut saddr = [0u8; 16];
        let mut daddr = [0u8; 16];
        saddr.copy_from_slice(&b[16..32]);
        daddr.copy_from_slice(&b[32..48]);
        Some(Self {
            ts_ns: u64::from_ne_bytes(b[0..8].try_into().ok()?),
            src_identity: u32_at(8),
            dst_identity: u32_at(12),
            saddr,
            daddr,
            sport: u16::from_ne_bytes([b[48], b[49]]),
            dport: u16::from_ne_bytes([b[50], b[51]]),
            kind: b[52],
            reason: b[53],
            proto: b[54],
            family: b[55],
            svc_id: u32_at(56),
            ifindex: u32_at(60),
        })
    }
}

/// A decoded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub src: (IpAddr, u16),
    pub dst: (IpAddr, u16),
    pub proto: u8,
    pub src_identity: u32,
    pub dst_identity: u32,
    pub svc_id: u32,
    pub ifindex: u32,
    pub ts_ns: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Drop(DropReason),
    /// A kind or reason this version does not know (raw kind, reason).
    Unknown(u8, u8),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The service has no usable backend.
    NoBackend,
    /// The chosen backend is of the other address family.
    FamilyMismatch,
}

impl TryFrom<RawEvent> for Event {
    type Error = RawEvent;

    fn try_from(r: RawEvent) -> Result<Self, RawEvent> {
        let kind = match (r.kind, r.reason) {
            (EVENT_DROP, DROP_NO_BACKEND) => EventKind::Drop(DropReason::NoBackend),
            (EVENT_DROP, DROP_FAMILY_MISMATCH) => EventKind::Drop(DropReason::FamilyMismatch),
            (k, reason) => EventKind::Unknown(k, reason),
        };
        let (Some(s), Some(d)) = (addr_from(&r.saddr, r.family), addr_from(&r.daddr, r.family))
        else {
            return Err(r);
        };
        Ok(Self {
            kind,
            src: (s, u16::from_be(r.sport)),
            dst: (d, u16::from_be(r.dport)),
            proto: r.proto,
            src_identity: r.src_identity,
            dst_identity: r.dst_identity,
            svc_id: r.svc_id,
            ifindex: r.ifindex,
            ts_ns: r.ts_ns,
        })
    }
}
