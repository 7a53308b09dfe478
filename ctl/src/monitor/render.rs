//! The text line and the `-o json` object of an event.

use std::net::IpAddr;

use datapath::Event;
use datapath::events::{EventKind, Trace};
use datapath::policy::Direction;
use serde::Serialize;

use super::labeler::{LabelSet, Labeler};

/// The hubble-like line of an event, identities named by their labels.
pub fn text_line(e: &Event, labels: &Labeler) -> String {
    e.describe(&|id| labels.label_string(id))
}

#[derive(Debug, Serialize, PartialEq)]
pub struct JsonEnd {
    pub ip: IpAddr,
    pub port: u16,
    pub identity: u32,
    pub labels: LabelSet,
}

/// `-o json`: one object per event.
#[derive(Debug, Serialize, PartialEq)]
pub struct JsonEvent {
    /// `drop`, `verdict`, `trace` or `unknown`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Drop: `no-backend`, `family-mismatch`, `policy-denied`, `policy-default-deny`,
    /// `no-tunnel-key`, `tunnel-key`, `conntrack-full`. Verdict: `allowed`, `denied`,
    /// `default-deny`. Trace: `to-overlay`, `from-overlay`, `fib-redirect`.
    /// Unknown: `kind K reason R`.
    pub reason: String,
    /// `ingress` or `egress` (policy events, seen from the endpoint), else null.
    pub direction: Option<&'static str>,
    pub source: JsonEnd,
    pub destination: JsonEnd,
    /// `TCP`, `UDP`, `ICMP`, `ICMPv6`, `SCTP` or the number.
    pub protocol: String,
    /// The IP protocol number.
    pub proto: u8,
    /// The service of a load-balancing drop (0 if none).
    pub service_id: u32,
    /// The local endpoint a policy event concerns (0 if none).
    pub endpoint_id: u32,
    pub ifindex: u32,
    /// Overlay traces: the other node and the VNI.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    /// FIB redirect traces: the interface the packet was redirected to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect_ifindex: Option<u32>,
    /// Kernel CLOCK_MONOTONIC nanoseconds (bpf_ktime_get_ns) when the event was written.
    pub ts_ns: u64,
    /// The text line.
    pub summary: String,
}

pub fn json_event(e: &Event, labels: &Labeler) -> JsonEvent {
    let end = |(ip, port): (IpAddr, u16), identity: u32| JsonEnd {
        ip,
        port,
        identity,
        labels: labels.labels(identity).unwrap_or_default(),
    };
    let (kind, reason) = (e.kind.kind_name(), e.kind.reason_name());
    let (node, vni, redirect_ifindex) = match e.kind {
        EventKind::Trace(Trace::ToOverlay { node, vni } | Trace::FromOverlay { node, vni }) => {
            (Some(IpAddr::V4(node)), Some(vni), None)
        }
        EventKind::Trace(Trace::FibRedirect { ifindex }) => (None, None, Some(ifindex)),
        _ => (None, None, None),
    };
    JsonEvent {
        kind,
        reason,
        direction: e.direction.map(|d| match d {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }),
        source: end(e.src, e.src_identity),
        destination: end(e.dst, e.dst_identity),
        protocol: datapath::events::protocol_name(e.proto),
        proto: e.proto,
        service_id: e.svc_id,
        endpoint_id: e.endpoint_id,
        ifindex: e.ifindex,
        node,
        vni,
        redirect_ifindex,
        ts_ns: e.ts_ns,
        summary: text_line(e, labels),
    }
}
