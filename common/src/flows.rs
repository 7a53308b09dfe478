//! The flow record (issue 17): one datapath event (a drop, a policy verdict, a routing
//! trace) as meshd keeps it in its node's bounded ring and serves it (`ironctl observe`), with
//! both ends named: identity, labels, pod (`namespace/name`), cluster and node where known.
//! The JSON field names are stable (`ironctl observe -o json`); the filter is `hubble
//! observe`'s. Sans-IO: the ring and the filter take the records and the time they are given.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// What became of the packet, as `hubble observe --verdict` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FlowVerdict {
    /// Passed (a policy allowed it).
    Forwarded,
    /// Dropped by the datapath (policy, no backend, tunnel key, conntrack full, spoofed).
    Dropped,
    /// A routing trace (to/from the overlay, FIB redirect), when the datapath traces.
    Traced,
}

impl FlowVerdict {
    pub fn name(self) -> &'static str {
        match self {
            FlowVerdict::Forwarded => "FORWARDED",
            FlowVerdict::Dropped => "DROPPED",
            FlowVerdict::Traced => "TRACED",
        }
    }

    /// Parses a `--verdict` value (any case).
    pub fn parse(s: &str) -> Result<FlowVerdict, String> {
        match s.to_ascii_uppercase().as_str() {
            "FORWARDED" => Ok(FlowVerdict::Forwarded),
            "DROPPED" => Ok(FlowVerdict::Dropped),
            "TRACED" => Ok(FlowVerdict::Traced),
            _ => Err(format!("verdict {s:?}: use FORWARDED, DROPPED or TRACED")),
        }
    }
}

/// One end of a flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowEnd {
    pub ip: IpAddr,
    pub port: u16,
    pub identity: u32,
    /// The identity's labels (`reserved:world` and the like for reserved identities).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `namespace/name` of the pod at this address, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// The cluster and node of the endpoint at this address, when it is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

impl FlowEnd {
    /// The end as one short word: the pod, else the address, with the port.
    pub fn short(&self, with_port: bool) -> String {
        let who = match &self.pod {
            Some(p) => p.clone(),
            None => self.ip.to_string(),
        };
        if with_port && self.port != 0 {
            format!("{who}:{}", self.port)
        } else {
            who
        }
    }
}

/// One flow record; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    /// When the observing node read it (Unix time, milliseconds).
    pub time_ms: u64,
    /// Where it was observed.
    pub cluster: String,
    pub node: String,
    pub verdict: FlowVerdict,
    /// `drop`, `verdict`, `trace` or `unknown` (the datapath event's kind).
    #[serde(rename = "type")]
    pub kind: String,
    /// The drop reason (`policy-denied`, `policy-default-deny`, `no-backend`, ...), the
    /// verdict (`allowed`, `denied`, `default-deny`) or the trace (`to-overlay`, ...).
    pub reason: String,
    /// `ingress` or `egress` (policy events, seen from the local endpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
    /// `TCP`, `UDP`, `ICMP`, `ICMPv6`, `SCTP` or the number.
    pub protocol: String,
    pub source: FlowEnd,
    pub destination: FlowEnd,
    /// The datapath's id of the service a load-balancing drop concerns (0: none).
    #[serde(default)]
    pub service_id: u32,
    /// The one-line description, identities named by their labels.
    pub summary: String,
}

impl Flow {
    /// `hubble observe`'s compact line: time, node, ends, verdict and reason.
    pub fn compact(&self) -> String {
        let l4 = matches!(self.protocol.as_str(), "TCP" | "UDP" | "SCTP");
        let dir = self
            .direction
            .as_deref()
            .map(|d| format!(" ({d})"))
            .unwrap_or_default();
        format!(
            "{} {}/{}: {} -> {} {} {} {}{dir}",
            self.time_ms,
            self.cluster,
            self.node,
            self.source.short(l4),
            self.destination.short(l4),
            self.protocol,
            self.verdict.name(),
            self.reason
        )
    }
}

/// `--from-pod` / `--to-pod`: `[namespace/]name-prefix` (namespace `default` when absent),
/// or `namespace/` for every pod of a namespace.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FlowFilter {
    #[serde(default)]
    pub verdicts: Vec<FlowVerdict>,
    #[serde(default)]
    pub from_pod: Option<String>,
    #[serde(default)]
    pub to_pod: Option<String>,
    /// `key=value` (or `key` for presence), all of them on the source.
    #[serde(default)]
    pub from_labels: Vec<String>,
    #[serde(default)]
    pub to_labels: Vec<String>,
    /// Either end's pod matches (`--pod`).
    #[serde(default)]
    pub pod: Option<String>,
    #[serde(default)]
    pub protocol: Option<String>,
    /// Either end's port.
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub since_ms: Option<u64>,
    /// Where the flow was observed.
    #[serde(default)]
    pub cluster: Option<String>,
    #[serde(default)]
    pub node: Option<String>,
}

fn pod_matches(want: &str, end: &FlowEnd) -> bool {
    let Some(pod) = &end.pod else {
        return false;
    };
    let want = if want.contains('/') {
        want.to_string()
    } else {
        format!("default/{want}")
    };
    pod.starts_with(&want)
}

fn labels_match(want: &[String], end: &FlowEnd) -> bool {
    want.iter().all(|w| match w.split_once('=') {
        Some((k, v)) => end.labels.get(k).is_some_and(|have| have == v),
        None => end.labels.contains_key(w.as_str()),
    })
}

impl FlowFilter {
    /// Whether the filter says anything (an empty one passes every flow).
    pub fn is_empty(&self) -> bool {
        self == &FlowFilter::default()
    }

    /// Checks the values a user typed: the message names the flag and the fix.
    pub fn validate(&self) -> Result<(), String> {
        for (flag, l) in [
            ("--from-label", &self.from_labels),
            ("--to-label", &self.to_labels),
        ] {
            if let Some(bad) = l.iter().find(|s| s.is_empty() || s.starts_with('=')) {
                return Err(format!("{flag} {bad:?}: use key=value or key"));
            }
        }
        if let Some(p) = &self.protocol
            && !["TCP", "UDP", "ICMP", "ICMPV6", "SCTP"].contains(&p.to_ascii_uppercase().as_str())
            && p.parse::<u8>().is_err()
        {
            return Err(format!(
                "--protocol {p:?}: use tcp, udp, icmp, icmpv6, sctp or a protocol number"
            ));
        }
        Ok(())
    }

    pub fn matches(&self, f: &Flow) -> bool {
        (self.verdicts.is_empty() || self.verdicts.contains(&f.verdict))
            && self
                .from_pod
                .as_deref()
                .is_none_or(|p| pod_matches(p, &f.source))
            && self
                .to_pod
                .as_deref()
                .is_none_or(|p| pod_matches(p, &f.destination))
            && self
                .pod
                .as_deref()
                .is_none_or(|p| pod_matches(p, &f.source) || pod_matches(p, &f.destination))
            && labels_match(&self.from_labels, &f.source)
            && labels_match(&self.to_labels, &f.destination)
            && self
                .protocol
                .as_deref()
                .is_none_or(|p| p.eq_ignore_ascii_case(&f.protocol))
            && self
                .port
                .is_none_or(|p| f.source.port == p || f.destination.port == p)
            && self.since_ms.is_none_or(|t| f.time_ms >= t)
            && self.cluster.as_deref().is_none_or(|c| c == f.cluster)
            && self.node.as_deref().is_none_or(|n| n == f.node)
    }
}

/// The node's last `capacity` flows, each with a sequence number (a follower asks for what
/// came after the last one it saw; numbers never repeat, so a follower that fell behind the
/// ring learns how many it lost).
#[derive(Debug)]
pub struct FlowRing {
    capacity: usize,
    flows: VecDeque<(u64, Flow)>,
    next: u64,
}

impl FlowRing {
    pub fn new(capacity: usize) -> FlowRing {
        FlowRing {
            capacity: capacity.max(1),
            flows: VecDeque::new(),
            next: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// Adds a flow (the oldest goes when full); its sequence number.
    pub fn push(&mut self, f: Flow) -> u64 {
        if self.flows.len() == self.capacity {
            self.flows.pop_front();
        }
        let seq = self.next;
        self.next += 1;
        self.flows.push_back((seq, f));
        seq
    }

    /// The sequence number the next flow gets.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// The last `n` flows `filter` passes, oldest first.
    pub fn last(&self, n: usize, filter: &FlowFilter) -> Vec<(u64, Flow)> {
        let mut out: Vec<(u64, Flow)> = self
            .flows
            .iter()
            .rev()
            .filter(|(_, f)| filter.matches(f))
            .take(n)
            .cloned()
            .collect();
        out.reverse();
        out
    }

    /// The flows from sequence number `seq` on that `filter` passes, oldest first, and how
    /// many of those after `seq` the ring no longer holds (overwritten before they were read).
    pub fn since(&self, seq: u64, filter: &FlowFilter) -> (Vec<(u64, Flow)>, u64) {
        let oldest = self.flows.front().map(|(s, _)| *s).unwrap_or(self.next);
        let lost = oldest.saturating_sub(seq);
        let out = self
            .flows
            .iter()
            .filter(|(s, f)| *s >= seq && filter.matches(f))
            .cloned()
            .collect();
        (out, lost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(ip: &str, port: u16, pod: Option<&str>, labels: &[(&str, &str)]) -> FlowEnd {
        FlowEnd {
            ip: ip.parse().unwrap(),
            port,
            identity: 1000,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            pod: pod.map(String::from),
            cluster: Some("red".into()),
            node: Some("n1".into()),
        }
    }

    fn flow(t: u64, verdict: FlowVerdict, from: &str, to: &str, port: u16) -> Flow {
        Flow {
            time_ms: t,
            cluster: "red".into(),
            node: "n1".into(),
            verdict,
            kind: "drop".into(),
            reason: "policy-denied".into(),
            direction: Some("ingress".into()),
            protocol: "TCP".into(),
            source: end("10.0.0.1", 40000, Some(from), &[("app", "client")]),
            destination: end("10.0.0.2", port, Some(to), &[("app", "web")]),
            service_id: 0,
            summary: String::new(),
        }
    }

    #[test]
    fn the_filter_matches_as_hubble_observe_does() {
        let f = flow(
            10,
            FlowVerdict::Dropped,
            "shop/client-1",
            "default/web-7",
            80,
        );
        let pass = |filter: FlowFilter| filter.matches(&f);
        assert!(pass(FlowFilter::default()));
        assert!(pass(FlowFilter {
            verdicts: vec![FlowVerdict::Dropped],
            ..Default::default()
        }));
        assert!(!pass(FlowFilter {
            verdicts: vec![FlowVerdict::Forwarded],
            ..Default::default()
        }));
        // Pod names are prefixes; no namespace means `default`.
        assert!(pass(FlowFilter {
            from_pod: Some("shop/client".into()),
            to_pod: Some("web".into()),
            ..Default::default()
        }));
        assert!(!pass(FlowFilter {
            from_pod: Some("client".into()),
            ..Default::default()
        }));
        assert!(pass(FlowFilter {
            pod: Some("shop/".into()),
            ..Default::default()
        }));
        assert!(pass(FlowFilter {
            from_labels: vec!["app=client".into()],
            to_labels: vec!["app".into()],
            ..Default::default()
        }));
        assert!(!pass(FlowFilter {
            from_labels: vec!["app=web".into()],
            ..Default::default()
        }));
        assert!(pass(FlowFilter {
            protocol: Some("tcp".into()),
            port: Some(80),
            since_ms: Some(10),
            cluster: Some("red".into()),
            node: Some("n1".into()),
            ..Default::default()
        }));
        assert!(!pass(FlowFilter {
            port: Some(443),
            ..Default::default()
        }));
        assert!(!pass(FlowFilter {
            since_ms: Some(11),
            ..Default::default()
        }));
        assert!(!pass(FlowFilter {
            node: Some("n2".into()),
            ..Default::default()
        }));
    }

    #[test]
    fn bad_filter_values_name_the_flag() {
        let e = FlowFilter {
            from_labels: vec!["=x".into()],
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.starts_with("--from-label"), "{e}");
        let e = FlowFilter {
            protocol: Some("tcpp".into()),
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.starts_with("--protocol"), "{e}");
        assert!(FlowVerdict::parse("dropped").is_ok());
        assert!(
            FlowVerdict::parse("LOST")
                .unwrap_err()
                .contains("FORWARDED")
        );
    }

    #[test]
    fn the_ring_keeps_the_last_flows_and_tells_a_slow_follower_what_it_lost() {
        let mut r = FlowRing::new(3);
        for t in 0..5 {
            let v = if t % 2 == 0 {
                FlowVerdict::Dropped
            } else {
                FlowVerdict::Forwarded
            };
            assert_eq!(r.push(flow(t, v, "a", "b", 80)), t);
        }
        assert_eq!(r.len(), 3);
        let times = |l: &[(u64, Flow)]| l.iter().map(|(_, f)| f.time_ms).collect::<Vec<_>>();
        assert_eq!(times(&r.last(10, &FlowFilter::default())), [2, 3, 4]);
        assert_eq!(times(&r.last(2, &FlowFilter::default())), [3, 4]);
        let dropped = FlowFilter {
            verdicts: vec![FlowVerdict::Dropped],
            ..Default::default()
        };
        assert_eq!(times(&r.last(10, &dropped)), [2, 4]);
        // A follower asking from seq 1 (seqs 0 and 1 are overwritten) lost one of its own.
        let (got, lost) = r.since(1, &FlowFilter::default());
        assert_eq!((times(&got), lost), (vec![2, 3, 4], 1));
        let (got, lost) = r.since(4, &FlowFilter::default());
        assert_eq!((times(&got), lost), (vec![4], 0));
        let (got, lost) = r.since(r.next_seq(), &FlowFilter::default());
        assert!(got.is_empty() && lost == 0);
    }

    #[test]
    fn a_flow_round_trips_through_json_with_stable_names() {
        let f = flow(7, FlowVerdict::Dropped, "shop/c", "shop/w", 80);
        let j = serde_json::to_value(&f).unwrap();
        assert_eq!(j["verdict"], "DROPPED");
        assert_eq!(j["type"], "drop");
        assert_eq!(j["source"]["pod"], "shop/c");
        let back: Flow = serde_json::from_value(j).unwrap();
        assert_eq!(back, f);
        assert_eq!(
            f.compact(),
            "7 red/n1: shop/c:40000 -> shop/w:80 TCP DROPPED policy-denied (ingress)"
        );
    }
}
