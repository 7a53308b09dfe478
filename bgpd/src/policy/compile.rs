//! From `[[bgp.policies]]` (validated config) to the engine's [`Policy`].

use configs::{BgpPolicy, Family, PolicyAction, PolicyRule};

use super::{Match, Policy, PrefixEntry, Rule, Set, Verdict};
use crate::wire::{Afi, LargeCommunity, Safi};

fn verdict(a: PolicyAction) -> Verdict {
    match a {
        PolicyAction::Accept => Verdict::Accept,
        PolicyAction::Reject => Verdict::Reject,
        PolicyAction::Continue => Verdict::Continue,
    }
}

fn large(l: &configs::LargeCommunity) -> LargeCommunity {
    LargeCommunity {
        global_admin: l.global,
        local_data1: l.local1,
        local_data2: l.local2,
    }
}

fn rule(r: &PolicyRule) -> Rule {
    let mut matches = Vec::new();
    if !r.prefixes.is_empty() {
        let list = r
            .prefixes
            .iter()
            .map(|p| PrefixEntry {
                prefix: p.prefix,
                ge: p.ge,
                le: p.le,
            })
            .collect();
        matches.push(Match::Prefix(list));
    }
    matches.extend(r.communities.iter().map(|c| Match::Community(*c)));
    matches.extend(
        r.large_communities
            .iter()
            .map(|l| Match::LargeCommunity(large(l))),
    );
    matches.extend(r.as_path_contains.map(|a| Match::AsPathContains(a.0)));
    matches.extend(r.neighbor_as.map(|a| Match::NeighborAs(a.0)));
    matches.extend(r.origin_as.map(|a| Match::OriginAs(a.0)));
    match r.originated {
        Some(true) => matches.push(Match::Originated),
        Some(false) => matches.push(Match::Not(Box::new(Match::Originated))),
        None => {}
    }
    if let Some(f) = r.family {
        let afi = match f {
            Family::Ipv4Unicast => Afi::IPV4,
            Family::Ipv6Unicast => Afi::IPV6,
        };
        matches.push(Match::Family(afi, Safi::UNICAST));
    }
    let mut actions = Vec::new();
    actions.extend(
        r.remove_communities
            .iter()
            .map(|c| Set::RemoveCommunity(*c)),
    );
    actions.extend(r.add_communities.iter().map(|c| Set::AddCommunity(*c)));
    actions.extend(
        r.remove_large_communities
            .iter()
            .map(|l| Set::RemoveLargeCommunity(large(l))),
    );
    actions.extend(
        r.add_large_communities
            .iter()
            .map(|l| Set::AddLargeCommunity(large(l))),
    );
    actions.extend(r.set_local_pref.map(Set::LocalPref));
    actions.extend(r.set_med.map(Set::Med));
    actions.extend(r.prepend.map(Set::Prepend));
    Rule {
        matches,
        actions,
        verdict: verdict(r.action.unwrap_or(PolicyAction::Continue)),
    }
}

/// One configured policy.
pub fn compile(p: &BgpPolicy) -> Policy {
    Policy {
        rules: p.rules.iter().map(rule).collect(),
        default: verdict(p.default),
        then: None,
    }
}

/// A peer's chain by names: configured definitions first, then the built-ins. `None` for an
/// unknown name (the config validation already refuses those).
pub fn chain(names: &[String], defined: &[BgpPolicy]) -> Option<Option<Policy>> {
    let mut out = Vec::new();
    for n in names {
        match defined.iter().find(|p| &p.name == n) {
            Some(p) => out.push(compile(p)),
            None => out.push(super::builtin(n)?),
        }
    }
    Some(Policy::chain(out))
}
