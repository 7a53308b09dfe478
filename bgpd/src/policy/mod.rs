//! Route policy: ordered rules of matches and actions, used on import (before a route enters the
//! Loc-RIB candidates) and on export (before it enters a peer's Adj-RIB-Out).
//!
//! A [`Policy`] runs its [`Rule`]s in order. A rule whose matches all hold applies its actions and
//! then ends the evaluation with `Accept`/`Reject`, or goes on to the next rule with `Continue`.
//! When no rule ends it, `default` decides; a `Continue` default rejects (fail closed).
//!
//! RFC 8212: an eBGP session with no configured policy must neither accept nor advertise routes.
//! This module does not know whether a policy was configured, so it picks no default: the caller
//! (configuration) builds the `Policy` for each direction, e.g. [`Policy::reject_all`] for an eBGP
//! peer without configured policy, [`Policy::originated_only`] for what a Kubernetes node exports,
//! and [`Policy::accept_all`] for an iBGP peer or an explicit "accept everything".

use std::borrow::Cow;

use ipnet::IpNet;

use crate::wire::{
    Afi, AsPath, AsSegment, AsSegmentType, Community, LargeCommunity, PathAttrs, Safi,
};

mod compile;
#[cfg(test)]
mod tests;

pub use compile::{chain, compile};

/// How a rule ends (or the policy's default).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    Accept,
    Reject,
    /// Go on with the next rule (as a policy default: reject).
    Continue,
}

/// One entry of a prefix list: `prefix` covers the route and the route's length is within
/// `ge..=le`. Without `ge`/`le` the length must equal `prefix`'s; with only `ge`, up to the
/// family's maximum; with only `le`, from `prefix`'s length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PrefixEntry {
    pub prefix: IpNet,
    pub ge: Option<u8>,
    pub le: Option<u8>,
}

impl PrefixEntry {
    /// Exactly `prefix`.
    pub fn exact(prefix: IpNet) -> Self {
        PrefixEntry {
            prefix,
            ge: None,
            le: None,
        }
    }

    /// `prefix` and everything more specific, up to length `le`.
    pub fn orlonger(prefix: IpNet, le: u8) -> Self {
        PrefixEntry {
            prefix,
            ge: None,
            le: Some(le),
        }
    }

    pub fn matches(&self, route: &IpNet) -> bool {
        let plen = self.prefix.prefix_len();
        let lo = self.ge.unwrap_or(plen);
        let hi = match (self.ge, self.le) {
            (_, Some(le)) => le,
            (Some(_), None) => self.prefix.max_prefix_len(),
            (None, None) => plen,
        };
        let len = route.prefix_len();
        (lo..=hi).contains(&len) && self.prefix.contains(route)
    }
}

/// A condition on a route. All matches of a rule must hold.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Match {
    /// Any entry of this prefix list matches.
    Prefix(Vec<PrefixEntry>),
    Community(Community),
    LargeCommunity(LargeCommunity),
    /// The AS path contains this ASN anywhere.
    AsPathContains(u32),
    /// The leftmost AS of the path (the neighbor AS, RFC 4271 §9.1.2.2 c).
    NeighborAs(u32),
    /// The rightmost AS of the path (the originating AS).
    OriginAs(u32),
    /// The route is locally originated (ours).
    Originated,
    /// The route's address family (unicast only today).
    Family(Afi, Safi),
    /// The inner match does not hold.
    Not(Box<Match>),
}

/// An action on a route's attributes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Set {
    AddCommunity(Community),
    RemoveCommunity(Community),
    AddLargeCommunity(LargeCommunity),
    RemoveLargeCommunity(LargeCommunity),
    LocalPref(u32),
    Med(u32),
    /// Prepend our own ASN this many times.
    Prepend(u8),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Rule {
    pub matches: Vec<Match>,
    pub actions: Vec<Set>,
    pub verdict: Verdict,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Policy {
    pub rules: Vec<Rule>,
    pub default: Verdict,
    /// The next policy of a chain: a route this one accepts goes on through it (with the
    /// attributes as changed so far); a reject anywhere ends the chain.
    pub then: Option<Box<Policy>>,
}

/// What a policy sees of a route.
#[derive(Clone, Copy, Debug)]
pub struct Route<'a> {
    pub prefix: IpNet,
    pub attrs: &'a PathAttrs,
    /// Locally originated.
    pub originated: bool,
    /// Our ASN (for [`Set::Prepend`]).
    pub local_asn: u32,
}

/// The result of running a policy.
// Returned by value and consumed at once, never stored: the size difference does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome<'a> {
    Reject,
    /// Accepted; `attrs` is borrowed when no action ran. `med_set` says a rule set the MED
    /// (export keeps a MED set by policy towards eBGP peers).
    Accept {
        attrs: Cow<'a, PathAttrs>,
        med_set: bool,
    },
}

impl Outcome<'_> {
    pub fn is_accept(&self) -> bool {
        matches!(self, Outcome::Accept { .. })
    }
}

impl Default for Policy {
    /// Reject everything: the RFC 8212 posture.
    fn default() -> Self {
        Policy::reject_all()
    }
}

impl Policy {
    pub fn accept_all() -> Self {
        Policy {
            rules: Vec::new(),
            default: Verdict::Accept,
            then: None,
        }
    }

    pub fn reject_all() -> Self {
        Policy {
            rules: Vec::new(),
            default: Verdict::Reject,
            then: None,
        }
    }

    /// Only locally originated routes (a node's own PodCIDRs and VIPs), never transit.
    pub fn originated_only() -> Self {
        Policy {
            rules: vec![Rule {
                matches: vec![Match::Originated],
                actions: Vec::new(),
                verdict: Verdict::Accept,
            }],
            default: Verdict::Reject,
            then: None,
        }
    }

    /// Policies applied in order: each accepted route goes on to the next; `None` if empty.
    pub fn chain(policies: Vec<Policy>) -> Option<Policy> {
        policies.into_iter().rev().fold(None, |next, mut p| {
            let mut last = &mut p;
            while let Some(ref mut t) = last.then {
                last = t;
            }
            last.then = next.map(Box::new);
            Some(p)
        })
    }

    /// Whether the outcome can depend on the prefix itself (prefix lists). When it cannot, the
    /// RIB runs the policy once per attribute set instead of once per prefix.
    pub fn depends_on_prefix(&self) -> bool {
        fn m(x: &Match) -> bool {
            match x {
                Match::Prefix(_) => true,
                Match::Not(inner) => m(inner),
                _ => false,
            }
        }
        self.rules.iter().any(|r| r.matches.iter().any(m))
            || self.then.as_ref().is_some_and(|t| t.depends_on_prefix())
    }

    /// Runs the rules over `route` (and on through the chain while accepted).
    pub fn apply<'a>(&self, route: &Route<'a>) -> Outcome<'a> {
        let mut attrs = Cow::Borrowed(route.attrs);
        let mut med_set = false;
        let mut policy = Some(self);
        while let Some(p) = policy {
            if !p.run(route, &mut attrs, &mut med_set) {
                return Outcome::Reject;
            }
            policy = p.then.as_deref();
        }
        Outcome::Accept { attrs, med_set }
    }

    /// One policy of a chain: true if it accepts.
    fn run(&self, route: &Route<'_>, attrs: &mut Cow<'_, PathAttrs>, med_set: &mut bool) -> bool {
        for rule in &self.rules {
            if !rule.matches.iter().all(|m| m.matches(route, attrs)) {
                continue;
            }
            for action in &rule.actions {
                *med_set |= matches!(action, Set::Med(_));
                action.apply(attrs.to_mut(), route.local_asn);
            }
            match rule.verdict {
                Verdict::Accept => return true,
                Verdict::Reject => return false,
                Verdict::Continue => {}
            }
        }
        self.default == Verdict::Accept
    }
}

/// The policies bgpd defines itself (configs::BUILTIN_POLICIES).
pub fn builtin(name: &str) -> Option<Policy> {
    match name {
        "accept-all" => Some(Policy::accept_all()),
        "reject-all" => Some(Policy::reject_all()),
        "originated-only" => Some(Policy::originated_only()),
        _ => None,
    }
}

/// Leftmost AS of the path if the path starts with an AS_SEQUENCE (confederation segments
/// skipped), the neighbor AS of RFC 4271 §9.1.2.2 c.
pub fn neighbor_as(path: Option<&AsPath>) -> Option<u32> {
    let seg = path?.segments.iter().find(|s| !s.kind.is_confed())?;
    match seg.kind {
        AsSegmentType::Sequence => seg.asns.first().copied(),
        _ => None,
    }
}

/// Rightmost AS of the path if it ends with an AS_SEQUENCE.
pub fn origin_as(path: Option<&AsPath>) -> Option<u32> {
    let seg = path?.segments.iter().rev().find(|s| !s.kind.is_confed())?;
    match seg.kind {
        AsSegmentType::Sequence => seg.asns.last().copied(),
        _ => None,
    }
}

/// Prepends `asn` `n` times to the leading AS_SEQUENCE (a new one if the path starts otherwise;
/// the codec splits segments longer than 255 on encode).
pub fn prepend(path: &mut Option<AsPath>, asn: u32, n: usize) {
    if n == 0 {
        return;
    }
    let path = path.get_or_insert_with(AsPath::default);
    match path.segments.first_mut() {
        Some(seg) if seg.kind == AsSegmentType::Sequence => {
            seg.asns.splice(0..0, std::iter::repeat_n(asn, n));
        }
        _ => path.segments.insert(
            0,
            AsSegment {
                kind: AsSegmentType::Sequence,
                asns: vec![asn; n],
            },
        ),
    }
}

impl Match {
    fn matches(&self, route: &Route<'_>, attrs: &PathAttrs) -> bool {
        match self {
            Match::Prefix(list) => list.iter().any(|e| e.matches(&route.prefix)),
            Match::Community(c) => attrs.communities.contains(c),
            Match::LargeCommunity(c) => attrs.large_communities.contains(c),
            Match::AsPathContains(asn) => attrs
                .as_path
                .iter()
                .flat_map(|p| &p.segments)
                .any(|s| s.asns.contains(asn)),
            Match::NeighborAs(asn) => neighbor_as(attrs.as_path.as_ref()) == Some(*asn),
            Match::OriginAs(asn) => origin_as(attrs.as_path.as_ref()) == Some(*asn),
            Match::Originated => route.originated,
            Match::Family(afi, safi) => {
                let fam = match route.prefix {
                    IpNet::V4(_) => Afi::IPV4,
                    IpNet::V6(_) => Afi::IPV6,
                };
                *safi == Safi::UNICAST && *afi == fam
            }
            Match::Not(inner) => !inner.matches(route, attrs),
        }
    }
}

impl Set {
    fn apply(&self, a: &mut PathAttrs, local_asn: u32) {
        match self {
            Set::AddCommunity(c) => {
                if !a.communities.contains(c) {
                    a.communities.push(*c);
                }
            }
            Set::RemoveCommunity(c) => a.communities.retain(|x| x != c),
            Set::AddLargeCommunity(c) => {
                if !a.large_communities.contains(c) {
                    a.large_communities.push(*c);
                }
            }
            Set::RemoveLargeCommunity(c) => a.large_communities.retain(|x| x != c),
            Set::LocalPref(v) => a.local_pref = Some(*v),
            Set::Med(v) => a.med = Some(*v),
            Set::Prepend(n) => prepend(&mut a.as_path, local_asn, *n as usize),
        }
    }
}
