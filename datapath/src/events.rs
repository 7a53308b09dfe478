//! `struct event` of the `events` ring buffer (bpf/ironmesh.h): drops,
//! policy verdicts and routing traces with the identities of both ends,
//! decoded into [`Event`] (whose `Display` reads like `hubble observe`), and
//! [`EventReader`], which follows the pinned ring buffer (`ironctl monitor`).

use std::fmt;
use std::mem::{offset_of, size_of};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

use aya::maps::{Map, MapData, MapError, RingBuf};

use crate::lb::addr_from;
use crate::pin::{PinError, PinRoot};
use crate::policy::Direction;

pub const EVENT_DROP: u8 = 1;
pub const EVENT_POLICY_VERDICT: u8 = 2;
pub const EVENT_TRACE: u8 = 3;

pub const DROP_NO_BACKEND: u8 = 1;
pub const DROP_FAMILY_MISMATCH: u8 = 2;
pub const DROP_POLICY_DENIED: u8 = 3;
pub const DROP_POLICY_DEFAULT: u8 = 4;
pub const DROP_NO_TUNNEL_KEY: u8 = 5;
pub const DROP_TUNNEL_KEY: u8 = 6;
pub const DROP_CT_FULL: u8 = 7;
pub const DROP_SPOOFED: u8 = 8;

pub const VERDICT_ALLOWED: u8 = 1;
pub const VERDICT_DENIED: u8 = 2;
pub const VERDICT_DEFAULT_DENY: u8 = 3;

pub const TRACE_TO_OVERLAY: u8 = 1;
pub const TRACE_FROM_OVERLAY: u8 = 2;
pub const TRACE_FIB_REDIRECT: u8 = 3;

pub const EVENT_DIR_NONE: u8 = 0xff;

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
    pub endpoint_id: u32,
    pub dir: u8,
    pub pad: [u8; 3],
    /// Network order.
    pub tunnel_endpoint: [u8; 4],
    pub tunnel_id: u32,
}

const _: () = assert!(size_of::<RawEvent>() == 80);
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
const _: () = assert!(offset_of!(RawEvent, endpoint_id) == 64);
const _: () = assert!(offset_of!(RawEvent, dir) == 68);
const _: () = assert!(offset_of!(RawEvent, tunnel_endpoint) == 72);
const _: () = assert!(offset_of!(RawEvent, tunnel_id) == 76);

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
            endpoint_id: u32_at(64),
            dir: b[68],
            pad: [b[69], b[70], b[71]],
            tunnel_endpoint: [b[72], b[73], b[74], b[75]],
            tunnel_id: u32_at(76),
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
    /// The local endpoint a policy event concerns (0 if none).
    pub endpoint_id: u32,
    /// Direction of a policy event, seen from the endpoint.
    pub direction: Option<Direction>,
    pub ts_ns: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Drop(DropReason),
    /// A new flow met an enforced policy.
    PolicyVerdict(Verdict),
    Trace(Trace),
    /// A kind or reason this version does not know (raw kind, reason).
    Unknown(u8, u8),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The service has no usable backend.
    NoBackend,
    /// The chosen backend is of the other address family.
    FamilyMismatch,
    /// A deny rule matched.
    PolicyDenied,
    /// The endpoint is default-deny and no rule allows the flow.
    PolicyDefaultDeny,
    /// A packet on the overlay device without tunnel metadata.
    NoTunnelKey,
    /// The kernel refused the tunnel key.
    TunnelKey,
    /// The conntrack map refused an entry.
    ConntrackFull,
    /// A pod sent from an address that is not its own (anti-spoofing).
    Spoofed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Denied,
    DefaultDeny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trace {
    /// Encapsulated towards `node` with VNI `vni` (read back from the kernel's key).
    ToOverlay { node: Ipv4Addr, vni: u32 },
    /// Decapsulated from `node`; `vni` is the sender's identity.
    FromOverlay { node: Ipv4Addr, vni: u32 },
    /// Forwarded by bpf_fib_lookup + bpf_redirect_neigh to this interface.
    FibRedirect { ifindex: u32 },
}

impl TryFrom<RawEvent> for Event {
    type Error = RawEvent;

    fn try_from(r: RawEvent) -> Result<Self, RawEvent> {
        let node = Ipv4Addr::from(r.tunnel_endpoint);
        let kind = match (r.kind, r.reason) {
            (EVENT_DROP, DROP_NO_BACKEND) => EventKind::Drop(DropReason::NoBackend),
            (EVENT_DROP, DROP_FAMILY_MISMATCH) => EventKind::Drop(DropReason::FamilyMismatch),
            (EVENT_DROP, DROP_POLICY_DENIED) => EventKind::Drop(DropReason::PolicyDenied),
            (EVENT_DROP, DROP_POLICY_DEFAULT) => EventKind::Drop(DropReason::PolicyDefaultDeny),
            (EVENT_DROP, DROP_NO_TUNNEL_KEY) => EventKind::Drop(DropReason::NoTunnelKey),
            (EVENT_DROP, DROP_TUNNEL_KEY) => EventKind::Drop(DropReason::TunnelKey),
            (EVENT_DROP, DROP_CT_FULL) => EventKind::Drop(DropReason::ConntrackFull),
            (EVENT_DROP, DROP_SPOOFED) => EventKind::Drop(DropReason::Spoofed),
            (EVENT_POLICY_VERDICT, VERDICT_ALLOWED) => EventKind::PolicyVerdict(Verdict::Allowed),
            (EVENT_POLICY_VERDICT, VERDICT_DENIED) => EventKind::PolicyVerdict(Verdict::Denied),
            (EVENT_POLICY_VERDICT, VERDICT_DEFAULT_DENY) => {
                EventKind::PolicyVerdict(Verdict::DefaultDeny)
            }
            (EVENT_TRACE, TRACE_TO_OVERLAY) => EventKind::Trace(Trace::ToOverlay {
                node,
                vni: r.tunnel_id,
            }),
            (EVENT_TRACE, TRACE_FROM_OVERLAY) => EventKind::Trace(Trace::FromOverlay {
                node,
                vni: r.tunnel_id,
            }),
            (EVENT_TRACE, TRACE_FIB_REDIRECT) => EventKind::Trace(Trace::FibRedirect {
                ifindex: r.tunnel_id,
            }),
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
            endpoint_id: r.endpoint_id,
            direction: Direction::from_raw(r.dir),
            ts_ns: r.ts_ns,
        })
    }
}

fn proto_name(p: u8) -> Option<&'static str> {
    Some(match p {
        1 => "ICMP",
        6 => "TCP",
        17 => "UDP",
        58 => "ICMPv6",
        132 => "SCTP",
        _ => return None,
    })
}

impl Event {
    /// Like `Display`, with `labels` naming identities (e.g. "app=web"):
    /// `10.0.1.5 (id 4242 app=web) -> ...`.
    pub fn describe(&self, labels: &dyn Fn(u32) -> Option<String>) -> String {
        let end = |ip: IpAddr, id: u32| match labels(id) {
            Some(l) if !l.is_empty() => format!("{ip} (id {id} {l})"),
            _ => format!("{ip} (id {id})"),
        };
        let mut s = format!(
            "{} -> {} ",
            end(self.src.0, self.src_identity),
            end(self.dst.0, self.dst_identity)
        );
        match proto_name(self.proto) {
            Some(p @ ("TCP" | "UDP" | "SCTP")) => s.push_str(&format!("{p} {}", self.dst.1)),
            Some(p) => s.push_str(p),
            None => s.push_str(&format!("proto {}", self.proto)),
        }
        let dir = match self.direction {
            Some(Direction::Ingress) => " (ingress)",
            Some(Direction::Egress) => " (egress)",
            None => "",
        };
        let what = match self.kind {
            EventKind::Drop(r) => format!(
                "dropped: {}{dir}",
                match r {
                    DropReason::NoBackend => format!("no backend for service {}", self.svc_id),
                    DropReason::FamilyMismatch => format!(
                        "backend of another address family (service {})",
                        self.svc_id
                    ),
                    DropReason::PolicyDenied => "policy denied".into(),
                    DropReason::PolicyDefaultDeny => "policy denied (default deny)".into(),
                    DropReason::NoTunnelKey => "no tunnel key".into(),
                    DropReason::TunnelKey => "tunnel key refused".into(),
                    DropReason::ConntrackFull => "conntrack full".into(),
                    DropReason::Spoofed => "source address spoofed".into(),
                }
            ),
            EventKind::PolicyVerdict(v) => format!(
                "policy-verdict: {}{dir}",
                match v {
                    Verdict::Allowed => "allowed",
                    Verdict::Denied => "denied",
                    Verdict::DefaultDeny => "denied (default deny)",
                }
            ),
            EventKind::Trace(Trace::ToOverlay { node, vni }) => {
                format!("to-overlay: node {node} vni {vni}")
            }
            EventKind::Trace(Trace::FromOverlay { node, vni }) => {
                format!("from-overlay: node {node} vni {vni}")
            }
            EventKind::Trace(Trace::FibRedirect { ifindex }) => {
                format!("fib-redirect: ifindex {ifindex}")
            }
            EventKind::Unknown(k, r) => format!("unknown event {k} reason {r}"),
        };
        s.push(' ');
        s.push_str(&what);
        s
    }
}

impl EventKind {
    /// The kind's stable name: `drop`, `verdict`, `trace` or `unknown`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            EventKind::Drop(_) => "drop",
            EventKind::PolicyVerdict(_) => "verdict",
            EventKind::Trace(_) => "trace",
            EventKind::Unknown(..) => "unknown",
        }
    }

    /// The reason's stable name. Drop: `no-backend`, `family-mismatch`, `policy-denied`,
    /// `policy-default-deny`, `no-tunnel-key`, `tunnel-key`, `conntrack-full`, `spoofed`.
    /// Verdict: `allowed`, `denied`, `default-deny`. Trace: `to-overlay`, `from-overlay`,
    /// `fib-redirect`. Unknown: `kind K reason R`.
    pub fn reason_name(&self) -> String {
        match self {
            EventKind::Drop(r) => match r {
                DropReason::NoBackend => "no-backend",
                DropReason::FamilyMismatch => "family-mismatch",
                DropReason::PolicyDenied => "policy-denied",
                DropReason::PolicyDefaultDeny => "policy-default-deny",
                DropReason::NoTunnelKey => "no-tunnel-key",
                DropReason::TunnelKey => "tunnel-key",
                DropReason::ConntrackFull => "conntrack-full",
                DropReason::Spoofed => "spoofed",
            }
            .to_string(),
            EventKind::PolicyVerdict(v) => match v {
                Verdict::Allowed => "allowed",
                Verdict::Denied => "denied",
                Verdict::DefaultDeny => "default-deny",
            }
            .to_string(),
            EventKind::Trace(t) => match t {
                Trace::ToOverlay { .. } => "to-overlay",
                Trace::FromOverlay { .. } => "from-overlay",
                Trace::FibRedirect { .. } => "fib-redirect",
            }
            .to_string(),
            EventKind::Unknown(k, r) => format!("kind {k} reason {r}"),
        }
    }

    /// What became of the packet: a drop or a denying verdict is DROPPED, an allowing one
    /// FORWARDED, a trace TRACED (an unknown kind too: it is information, not a verdict).
    pub fn verdict(&self) -> common::flows::FlowVerdict {
        use common::flows::FlowVerdict as V;
        match self {
            EventKind::Drop(_)
            | EventKind::PolicyVerdict(Verdict::Denied | Verdict::DefaultDeny) => V::Dropped,
            EventKind::PolicyVerdict(Verdict::Allowed) => V::Forwarded,
            EventKind::Trace(_) | EventKind::Unknown(..) => V::Traced,
        }
    }
}

/// The protocol's name (`TCP`, `UDP`, `ICMP`, `ICMPv6`, `SCTP`) or its number.
pub fn protocol_name(p: u8) -> String {
    proto_name(p).map_or_else(|| p.to_string(), String::from)
}

impl Event {
    /// The flow record of this event, observed on `node` of `cluster` at `time_ms` (Unix
    /// milliseconds); `end(ip, port, identity)` names each end (labels, pod, cluster, node),
    /// `labels(identity)` names identities in the summary.
    pub fn flow(
        &self,
        (cluster, node): (&str, &str),
        time_ms: u64,
        end: &dyn Fn(IpAddr, u16, u32) -> common::flows::FlowEnd,
        labels: &dyn Fn(u32) -> Option<String>,
    ) -> common::flows::Flow {
        common::flows::Flow {
            time_ms,
            cluster: cluster.to_string(),
            node: node.to_string(),
            verdict: self.kind.verdict(),
            kind: self.kind.kind_name().to_string(),
            reason: self.kind.reason_name(),
            direction: self.direction.map(|d| {
                match d {
                    Direction::Ingress => "ingress",
                    Direction::Egress => "egress",
                }
                .to_string()
            }),
            protocol: protocol_name(self.proto),
            source: end(self.src.0, self.src.1, self.src_identity),
            destination: end(self.dst.0, self.dst.1, self.dst_identity),
            service_id: self.svc_id,
            summary: self.describe(labels),
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe(&|_| None))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error(transparent)]
    Pin(#[from] PinError),
    #[error(
        "events ring buffer {path}: {source}; is the datapath loaded with this pin root \
         (Datapath::load pins it)?"
    )]
    Open { path: String, source: MapError },
    #[error("waiting on the events ring buffer: {0}")]
    Poll(std::io::Error),
    #[error(
        "an event record of {len} bytes is not a `struct event` ({} bytes)",
        RawEvent::SIZE
    )]
    Short { len: usize },
    #[error("an event with an unknown address family {}", .0.family)]
    Family(RawEvent),
}

/// Follows the pinned `events` ring buffer, as `ironctl monitor` does.
pub struct EventReader {
    ring: RingBuf<MapData>,
}

impl fmt::Debug for EventReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventReader").finish_non_exhaustive()
    }
}

impl EventReader {
    /// Opens `<pin root>/events`.
    pub fn open(root: &PinRoot) -> Result<Self, EventError> {
        let path = root.pin_path("events")?;
        let open = |source| EventError::Open {
            path: path.display().to_string(),
            source,
        };
        let data = MapData::from_pin(&path).map_err(open)?;
        let ring = RingBuf::try_from(Map::RingBuf(data)).map_err(open)?;
        Ok(Self { ring })
    }

    /// The next event already in the buffer, without waiting.
    pub fn try_next(&mut self) -> Option<Result<Event, EventError>> {
        let item = self.ring.next()?;
        Some(match RawEvent::from_bytes(&item) {
            None => Err(EventError::Short { len: item.len() }),
            Some(raw) => Event::try_from(raw).map_err(EventError::Family),
        })
    }

    /// Waits up to `timeout` for the next event; `Ok(None)` on timeout.
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<Event>, EventError> {
        if let Some(e) = self.try_next() {
            return e.map(Some);
        }
        if !wait_readable(self.ring.as_fd().as_raw_fd(), timeout)? {
            return Ok(None);
        }
        self.try_next().transpose()
    }

    /// Everything in the buffer now.
    pub fn drain(&mut self) -> Vec<Result<Event, EventError>> {
        std::iter::from_fn(|| self.try_next()).collect()
    }
}

/// poll(2) for readability; the ring buffer's fd is readable when the
/// producer has submitted records.
#[allow(unsafe_code)] // poll(2) on a borrowed, open fd; see SAFETY.
fn wait_readable(fd: i32, timeout: Duration) -> Result<bool, EventError> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: `pfd` is one valid pollfd on our stack and nfds is 1; `fd`
    // stays open for the call (the ring buffer owns it and outlives it).
    let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
    match rc {
        -1 => {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(EventError::Poll(e))
            }
        }
        0 => Ok(false),
        _ => Ok(true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(kind: u8, reason: u8) -> RawEvent {
        let mut r = RawEvent {
            src_identity: 4242,
            dst_identity: 4243,
            sport: 40000u16.to_be(),
            dport: 80u16.to_be(),
            kind,
            reason,
            proto: 6,
            family: crate::ipcache::FAMILY_IPV4,
            dir: crate::policy::POLICY_DIR_EGRESS,
            ..Default::default()
        };
        r.saddr[..4].copy_from_slice(&[10, 0, 1, 5]);
        r.daddr[..4].copy_from_slice(&[10, 0, 2, 7]);
        r
    }

    #[test]
    fn an_event_becomes_a_flow_with_its_verdict_and_named_ends() {
        use common::flows::{FlowEnd, FlowVerdict};
        let end = |ip: IpAddr, port: u16, identity: u32| FlowEnd {
            ip,
            port,
            identity,
            labels: Default::default(),
            pod: (identity == 4242).then(|| "shop/client".to_string()),
            cluster: None,
            node: None,
        };
        let e = Event::try_from(raw(EVENT_DROP, DROP_POLICY_DENIED)).unwrap();
        let f = e.flow(("red", "n1"), 7, &end, &|_| None);
        assert_eq!(f.verdict, FlowVerdict::Dropped);
        assert_eq!(
            (f.kind.as_str(), f.reason.as_str()),
            ("drop", "policy-denied")
        );
        assert_eq!(f.direction.as_deref(), Some("egress"));
        assert_eq!(f.protocol, "TCP");
        assert_eq!(f.source.pod.as_deref(), Some("shop/client"));
        assert_eq!((f.source.port, f.destination.port), (40000, 80));
        assert_eq!(
            (f.cluster.as_str(), f.node.as_str(), f.time_ms),
            ("red", "n1", 7)
        );
        assert_eq!(f.summary, e.to_string());
        let verdict = |kind, reason| {
            Event::try_from(raw(kind, reason))
                .unwrap()
                .flow(("red", "n1"), 0, &end, &|_| None)
        };
        let v = verdict(EVENT_POLICY_VERDICT, VERDICT_ALLOWED);
        assert_eq!(
            (v.verdict, v.reason.as_str()),
            (FlowVerdict::Forwarded, "allowed")
        );
        let v = verdict(EVENT_POLICY_VERDICT, VERDICT_DEFAULT_DENY);
        assert_eq!(
            (v.verdict, v.reason.as_str()),
            (FlowVerdict::Dropped, "default-deny")
        );
        let v = verdict(EVENT_TRACE, TRACE_FIB_REDIRECT);
        assert_eq!((v.verdict, v.kind.as_str()), (FlowVerdict::Traced, "trace"));
    }

    #[test]
    fn displays_like_hubble() {
        let e = Event::try_from(raw(EVENT_DROP, DROP_POLICY_DENIED)).unwrap();
        assert_eq!(
            e.to_string(),
            "10.0.1.5 (id 4242) -> 10.0.2.7 (id 4243) TCP 80 dropped: policy denied (egress)"
        );
        let v = Event::try_from(raw(EVENT_POLICY_VERDICT, VERDICT_ALLOWED)).unwrap();
        let labels = |id| (id == 4243).then(|| "app=db".to_string());
        assert_eq!(
            v.describe(&labels),
            "10.0.1.5 (id 4242) -> 10.0.2.7 (id 4243 app=db) TCP 80 policy-verdict: allowed (egress)"
        );
        let mut t = raw(EVENT_TRACE, TRACE_TO_OVERLAY);
        t.dir = EVENT_DIR_NONE;
        t.proto = 1;
        t.tunnel_endpoint = [192, 0, 2, 2];
        t.tunnel_id = 4242;
        assert_eq!(
            Event::try_from(t).unwrap().to_string(),
            "10.0.1.5 (id 4242) -> 10.0.2.7 (id 4243) ICMP to-overlay: node 192.0.2.2 vni 4242"
        );
        let u = Event::try_from(raw(9, 9)).unwrap();
        assert_eq!(u.kind, EventKind::Unknown(9, 9));
    }

    #[test]
    fn bytes_round_trip() {
        let mut r = raw(EVENT_DROP, DROP_NO_BACKEND);
        r.tunnel_id = 0x0102_0304;
        r.endpoint_id = 77;
        // Field by field, as the kernel lays the struct out.
        let mut b = vec![0u8; RawEvent::SIZE];
        b[8..12].copy_from_slice(&r.src_identity.to_ne_bytes());
        b[12..16].copy_from_slice(&r.dst_identity.to_ne_bytes());
        b[16..32].copy_from_slice(&r.saddr);
        b[32..48].copy_from_slice(&r.daddr);
        b[48..50].copy_from_slice(&r.sport.to_ne_bytes());
        b[50..52].copy_from_slice(&r.dport.to_ne_bytes());
        b[52..56].copy_from_slice(&[r.kind, r.reason, r.proto, r.family]);
        b[64..68].copy_from_slice(&r.endpoint_id.to_ne_bytes());
        b[68] = r.dir;
        b[76..80].copy_from_slice(&r.tunnel_id.to_ne_bytes());
        assert_eq!(RawEvent::from_bytes(&b), Some(r));
        assert_eq!(RawEvent::from_bytes(&b[..79]), None);
        let mut bad = r;
        bad.family = 9;
        assert_eq!(Event::try_from(bad), Err(bad));
    }
}
