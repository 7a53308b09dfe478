//! Endpoints, identity policy and the node-wide configuration: Rust mirrors
//! of `struct endpoint_key`, `endpoint_info`, `policy_key`, `policy_value`
//! and `dp_config` (bpf/ironmesh.h), and the rules as the control plane
//! states them.
//!
//! Semantics (Kubernetes NetworkPolicy): an endpoint that some policy
//! selects in a direction is default-deny in that direction; rules allow
//! (or deny: a deny wins) traffic by peer identity, protocol and port.
//! Replies of allowed flows always pass (conntrack). World traffic is
//! matched by CIDR: the control plane gives a CIDR an identity in the IP
//! cache (longest prefix wins) and writes rules for that identity.

use std::collections::BTreeMap;
use std::mem::{offset_of, size_of};
use std::net::IpAddr;

use crate::lb::addr_bytes;

pub const POLICY_DIR_INGRESS: u8 = 0;
pub const POLICY_DIR_EGRESS: u8 = 1;
pub const POLICY_ANY_IDENTITY: u32 = 0;
pub const POLICY_SELECTED_IDENTITY: u32 = 0xffff_ffff;
pub const POLICY_ALLOW: u8 = 1;
pub const POLICY_DENY: u8 = 2;
pub const POLICY_SELECTED: u8 = 3;
/// Rules one endpoint's policy can hold (the inner map's size).
pub const POLICY_RULES_MAX: u32 = 16384;
/// Flag of the inner maps (`BPF_F_NO_PREALLOC`), as the C template has it.
pub const POLICY_RULES_FLAGS: u32 = 1;

pub const POLICY_MODE_DEFAULT: u8 = 0;
pub const POLICY_MODE_ALWAYS: u8 = 1;
pub const POLICY_MODE_NEVER: u8 = 2;
pub const ROUTING_STACK: u8 = 0;
pub const ROUTING_NATIVE: u8 = 1;
pub const ROUTING_VXLAN: u8 = 2;
pub const CONFIG_F_TRACE: u16 = 1 << 0;
pub const CONFIG_F_ANTI_SPOOF: u16 = 1 << 1;

pub const MARK_MAGIC_IDENTITY: u32 = 0x4e00_0000;
pub const MARK_IDENTITY_MASK: u32 = 0x00ff_ffff;

/// `struct endpoint_key`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct EndpointKey {
    pub addr: [u8; 16],
    pub family: u8,
    pub pad: [u8; 3],
}

const _: () = assert!(size_of::<EndpointKey>() == 20);
const _: () = assert!(offset_of!(EndpointKey, family) == 16);

impl EndpointKey {
    pub fn new(ip: IpAddr) -> Self {
        let (addr, family) = addr_bytes(ip);
        Self {
            addr,
            family,
            pad: [0; 3],
        }
    }
}

/// `struct endpoint_info`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct EndpointInfo {
    pub id: u32,
    pub identity: u32,
    pub ifindex: u32,
    pub flags: u32,
}

const _: () = assert!(size_of::<EndpointInfo>() == 16);
const _: () = assert!(offset_of!(EndpointInfo, identity) == 4);
const _: () = assert!(offset_of!(EndpointInfo, ifindex) == 8);
const _: () = assert!(offset_of!(EndpointInfo, flags) == 12);

/// `struct policy_key`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct PolicyKey {
    pub identity: u32,
    /// Network order; 0 = any port.
    pub dport: u16,
    /// 0 = any protocol.
    pub proto: u8,
    pub dir: u8,
}

const _: () = assert!(size_of::<PolicyKey>() == 8);
const _: () = assert!(offset_of!(PolicyKey, dport) == 4);
const _: () = assert!(offset_of!(PolicyKey, proto) == 6);
const _: () = assert!(offset_of!(PolicyKey, dir) == 7);

/// `struct policy_value`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PolicyValue {
    pub action: u8,
    pub pad: [u8; 3],
}

const _: () = assert!(size_of::<PolicyValue>() == 4);

/// `struct dp_config`: element 0 of the `config` array.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DpConfig {
    pub policy_mode: u8,
    pub routing_mode: u8,
    pub flags: u16,
    pub tunnel_ifindex: u32,
}

const _: () = assert!(size_of::<DpConfig>() == 8);
const _: () = assert!(offset_of!(DpConfig, routing_mode) == 1);
const _: () = assert!(offset_of!(DpConfig, flags) == 2);
const _: () = assert!(offset_of!(DpConfig, tunnel_ifindex) == 4);

/// Which endpoints are policed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PolicyMode {
    /// An endpoint is default-deny in a direction once a policy selects it there.
    #[default]
    Default,
    /// Every endpoint is default-deny both ways, selected or not.
    Always,
    /// Nothing is enforced.
    Never,
}

/// How packets from pods reach other nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Routing {
    /// The kernel stack forwards (no redirects from the programs).
    #[default]
    Stack,
    /// bpf_fib_lookup + bpf_redirect_neigh: the kernel FIB (BGP or static
    /// routes to remote PodCIDRs) decides.
    Native,
    /// Remote pods through the `external` VXLAN device of this ifindex; the
    /// VNI carries the source identity.
    Vxlan { ifindex: u32 },
}

/// Node-wide datapath settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Config {
    pub policy_mode: PolicyMode,
    pub routing: Routing,
    /// Trace events for routing decisions (to/from overlay, FIB redirects).
    pub trace: bool,
    /// Lets pods send from addresses not their own. Off (checked) by default: a pod that
    /// picks another source would otherwise dodge its egress policy. Until a config is
    /// written at all, nothing is checked.
    pub allow_spoofed_sources: bool,
}

impl Config {
    pub fn raw(&self) -> DpConfig {
        let (routing_mode, tunnel_ifindex) = match self.routing {
            Routing::Stack => (ROUTING_STACK, 0),
            Routing::Native => (ROUTING_NATIVE, 0),
            Routing::Vxlan { ifindex } => (ROUTING_VXLAN, ifindex),
        };
        DpConfig {
            policy_mode: match self.policy_mode {
                PolicyMode::Default => POLICY_MODE_DEFAULT,
                PolicyMode::Always => POLICY_MODE_ALWAYS,
                PolicyMode::Never => POLICY_MODE_NEVER,
            },
            routing_mode,
            flags: if self.trace { CONFIG_F_TRACE } else { 0 }
                | if self.allow_spoofed_sources {
                    0
                } else {
                    CONFIG_F_ANTI_SPOOF
                },
            tunnel_ifindex,
        }
    }
}

/// A local pod as the datapath knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Never 0; the key of its policy.
    pub id: u32,
    pub identity: u32,
    /// Host side of its veth (0 if not known).
    pub ifindex: u32,
    pub addresses: Vec<IpAddr>,
}

/// Traffic direction, seen from the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// To the endpoint.
    Ingress,
    /// From the endpoint.
    Egress,
}

impl Direction {
    pub fn raw(self) -> u8 {
        match self {
            Direction::Ingress => POLICY_DIR_INGRESS,
            Direction::Egress => POLICY_DIR_EGRESS,
        }
    }

    pub fn from_raw(v: u8) -> Option<Self> {
        match v {
            POLICY_DIR_INGRESS => Some(Direction::Ingress),
            POLICY_DIR_EGRESS => Some(Direction::Egress),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Allow,
    Deny,
}

/// The peer a rule names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Peer {
    Any,
    /// A security identity: a pod's, a reserved one, or a CIDR's (the IP
    /// cache maps the CIDR to it).
    Identity(u32),
}

/// Protocol and port a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PortMatch {
    Any,
    /// Every port of one IP protocol (e.g. 1 for ICMP).
    Proto(u8),
    /// One destination port of TCP (6) or UDP (17).
    Port(u8, u16),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rule {
    pub direction: Direction,
    pub peer: Peer,
    pub ports: PortMatch,
    pub action: Action,
}

/// One endpoint's complete policy; it replaces the previous one as a whole.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointPolicy {
    /// Some policy selects the endpoint for ingress: default-deny there.
    pub ingress_selected: bool,
    /// Some policy selects the endpoint for egress: default-deny there.
    pub egress_selected: bool,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error(
        "rule {index}: peer identity {identity} is outside 1..=16777215; \
         use Peer::Any for any peer"
    )]
    Identity { index: usize, identity: u32 },
    #[error("rule {index}: port {port} needs protocol TCP (6) or UDP (17), not {proto}")]
    PortProto { index: usize, proto: u8, port: u16 },
    #[error("rule {index}: port 0 is not a port; use PortMatch::Proto for every port")]
    PortZero { index: usize },
    #[error("rule {index}: protocol 0 is not a protocol; use PortMatch::Any")]
    ProtoZero { index: usize },
    #[error(
        "the policy has {count} entries, more than an endpoint's map holds ({POLICY_RULES_MAX}); \
         merge rules (e.g. by port range owners) or raise POLICY_RULES_MAX"
    )]
    TooMany { count: usize },
    #[error("endpoint id 0 is reserved; use ids from 1")]
    EndpointZero,
}

impl EndpointPolicy {
    /// The inner map's entries: the selection markers and one entry per
    /// (peer, protocol, port, direction); a deny wins over an allow.
    pub fn entries(&self) -> Result<BTreeMap<PolicyKey, PolicyValue>, PolicyError> {
        let mut out = BTreeMap::new();
        let value = |action| PolicyValue {
            action,
            pad: [0; 3],
        };
        for (selected, dir) in [
            (self.ingress_selected, Direction::Ingress),
            (self.egress_selected, Direction::Egress),
        ] {
            if selected {
                let key = PolicyKey {
                    identity: POLICY_SELECTED_IDENTITY,
                    dport: 0,
                    proto: 0,
                    dir: dir.raw(),
                };
                out.insert(key, value(POLICY_SELECTED));
            }
        }
        for (index, r) in self.rules.iter().enumerate() {
            let identity = match r.peer {
                Peer::Any => POLICY_ANY_IDENTITY,
                Peer::Identity(id) if (1..=MARK_IDENTITY_MASK).contains(&id) => id,
                Peer::Identity(identity) => return Err(PolicyError::Identity { index, identity }),
            };
            let (proto, port) = match r.ports {
                PortMatch::Any => (0, 0),
                PortMatch::Proto(0) => return Err(PolicyError::ProtoZero { index }),
                PortMatch::Proto(p) => (p, 0),
                PortMatch::Port(_, 0) => return Err(PolicyError::PortZero { index }),
                PortMatch::Port(p @ (6 | 17), port) => (p, port),
                PortMatch::Port(proto, port) => {
                    return Err(PolicyError::PortProto { index, proto, port });
                }
            };
            let key = PolicyKey {
                identity,
                dport: port.to_be(),
                proto,
                dir: r.direction.raw(),
            };
            let action = match r.action {
                Action::Allow => POLICY_ALLOW,
                Action::Deny => POLICY_DENY,
            };
            let e = out.entry(key).or_insert(value(action));
            if action == POLICY_DENY {
                e.action = POLICY_DENY;
            }
        }
        if out.len() > POLICY_RULES_MAX as usize {
            return Err(PolicyError::TooMany { count: out.len() });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(direction: Direction, peer: Peer, ports: PortMatch, action: Action) -> Rule {
        Rule {
            direction,
            peer,
            ports,
            action,
        }
    }

    #[test]
    fn entries_of_a_policy() {
        let p = EndpointPolicy {
            ingress_selected: true,
            egress_selected: false,
            rules: vec![
                rule(
                    Direction::Ingress,
                    Peer::Identity(4242),
                    PortMatch::Port(6, 80),
                    Action::Allow,
                ),
                rule(
                    Direction::Ingress,
                    Peer::Identity(4242),
                    PortMatch::Port(6, 80),
                    Action::Deny,
                ),
                rule(Direction::Egress, Peer::Any, PortMatch::Any, Action::Allow),
                rule(
                    Direction::Ingress,
                    Peer::Any,
                    PortMatch::Proto(1),
                    Action::Allow,
                ),
            ],
        };
        let e = p.entries().unwrap();
        assert_eq!(e.len(), 4);
        let marker = PolicyKey {
            identity: POLICY_SELECTED_IDENTITY,
            dport: 0,
            proto: 0,
            dir: POLICY_DIR_INGRESS,
        };
        assert_eq!(e[&marker].action, POLICY_SELECTED);
        let web = PolicyKey {
            identity: 4242,
            dport: 80u16.to_be(),
            proto: 6,
            dir: POLICY_DIR_INGRESS,
        };
        assert_eq!(e[&web].action, POLICY_DENY, "a deny wins over an allow");
        assert_eq!(web.dport.to_ne_bytes(), [0, 80]);
    }

    #[test]
    fn bad_rules_name_the_rule_and_the_fix() {
        let bad = |r: Rule| {
            EndpointPolicy {
                rules: vec![r],
                ..Default::default()
            }
            .entries()
            .unwrap_err()
            .to_string()
        };
        let m = bad(rule(
            Direction::Ingress,
            Peer::Identity(1 << 24),
            PortMatch::Any,
            Action::Allow,
        ));
        assert!(m.contains("rule 0: peer identity 16777216") && m.contains("Peer::Any"));
        let m = bad(rule(
            Direction::Egress,
            Peer::Any,
            PortMatch::Port(1, 80),
            Action::Allow,
        ));
        assert!(
            m.contains("needs protocol TCP (6) or UDP (17), not 1"),
            "{m}"
        );
        let m = bad(rule(
            Direction::Egress,
            Peer::Any,
            PortMatch::Port(6, 0),
            Action::Allow,
        ));
        assert!(m.contains("PortMatch::Proto"), "{m}");
    }

    #[test]
    fn config_raw() {
        let c = Config {
            policy_mode: PolicyMode::Always,
            routing: Routing::Vxlan { ifindex: 9 },
            trace: true,
            allow_spoofed_sources: false,
        };
        assert_eq!(
            c.raw(),
            DpConfig {
                policy_mode: POLICY_MODE_ALWAYS,
                routing_mode: ROUTING_VXLAN,
                flags: CONFIG_F_TRACE | CONFIG_F_ANTI_SPOOF,
                tunnel_ifindex: 9
            }
        );
        // Anti-spoofing is on unless allowed explicitly.
        assert_eq!(
            Config::default().raw(),
            DpConfig {
                flags: CONFIG_F_ANTI_SPOOF,
                ..DpConfig::default()
            }
        );
        let open = Config {
            allow_spoofed_sources: true,
            ..Config::default()
        };
        assert_eq!(open.raw(), DpConfig::default());
    }
}
