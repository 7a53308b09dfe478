//! `[[bgp.policies]]`: named route policies (ordered rules of matches and actions), referenced
//! by peers' `import_policy` / `export_policy` (one name or a chain of names).
//!
//! ```toml
//! [[bgp.policies]]
//! name = "from-tor"
//! default = "reject"                       # when no rule decides
//!
//! [[bgp.policies.rules]]
//! match_prefixes = ["10.0.0.0/8 le 24"]    # any entry: "P", "P le N", "P ge N", "P ge N le M"
//! match_communities = ["65000:100"]        # all present
//! set_local_pref = 200
//! action = "accept"                        # accept | reject | continue
//! ```

use std::collections::HashMap;

use common::Asn;
use ipnet::IpNet;

use crate::bgp::Family;
use crate::error::Errors;
use crate::raw::{RawPolicy, RawRule};
use common::{Community, LargeCommunity};

/// Names bgpd defines itself; a `[[bgp.policies]]` entry may not reuse them.
pub const BUILTIN_POLICIES: [&str; 3] = ["accept-all", "reject-all", "originated-only"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicyAction {
    Accept,
    Reject,
    /// Go on with the next rule.
    Continue,
}

/// One prefix-list entry: `prefix` covers the route, whose length is within `ge..=le`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PrefixMatch {
    pub prefix: IpNet,
    pub ge: Option<u8>,
    pub le: Option<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PolicyRule {
    /// Any of these entries (empty: no prefix condition).
    pub prefixes: Vec<PrefixMatch>,
    /// All of these present.
    pub communities: Vec<Community>,
    pub large_communities: Vec<LargeCommunity>,
    pub as_path_contains: Option<Asn>,
    pub neighbor_as: Option<Asn>,
    pub origin_as: Option<Asn>,
    /// `true`: only our own routes; `false`: only learned ones.
    pub originated: Option<bool>,
    pub family: Option<Family>,
    pub add_communities: Vec<Community>,
    pub remove_communities: Vec<Community>,
    pub add_large_communities: Vec<LargeCommunity>,
    pub remove_large_communities: Vec<LargeCommunity>,
    pub set_local_pref: Option<u32>,
    pub set_med: Option<u32>,
    /// Prepend our ASN this many times.
    pub prepend: Option<u8>,
    pub action: Option<PolicyAction>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgpPolicy {
    pub name: String,
    pub rules: Vec<PolicyRule>,
    /// What happens when no rule accepts or rejects.
    pub default: PolicyAction,
}

fn action(errs: &mut Errors, path: &str, v: &str) -> Option<PolicyAction> {
    match v {
        "accept" => Some(PolicyAction::Accept),
        "reject" => Some(PolicyAction::Reject),
        "continue" => Some(PolicyAction::Continue),
        _ => {
            errs.push(
                path,
                format!("{v:?} is not an action; use \"accept\", \"reject\" or \"continue\""),
            );
            None
        }
    }
}

/// `"P"`, `"P le N"`, `"P ge N"` or `"P ge N le M"`; P must be a network address.
pub(crate) fn prefix_match(errs: &mut Errors, path: &str, v: &str) -> Option<PrefixMatch> {
    let syntax = || {
        format!(
            "{v:?} is not a prefix-list entry; write \"10.0.0.0/8\", \"10.0.0.0/8 le 24\", \"10.0.0.0/8 ge 16\" or \"10.0.0.0/8 ge 16 le 24\""
        )
    };
    let words: Vec<&str> = v.split_whitespace().collect();
    let Some((first, rest)) = words.split_first() else {
        errs.push(path, syntax());
        return None;
    };
    let Ok(prefix) = first.parse::<IpNet>() else {
        errs.push(path, syntax());
        return None;
    };
    if prefix.trunc() != prefix {
        errs.push(
            path,
            format!(
                "{prefix} has host bits set; write the network address {}",
                prefix.trunc()
            ),
        );
        return None;
    }
    let (mut ge, mut le) = (None, None);
    let mut it = rest.chunks(2);
    for pair in &mut it {
        let ([kw, n] | [kw, n, ..]) = pair else {
            errs.push(path, syntax());
            return None;
        };
        let Ok(n) = n.parse::<u8>() else {
            errs.push(path, syntax());
            return None;
        };
        match *kw {
            "ge" if ge.is_none() && le.is_none() => ge = Some(n),
            "le" if le.is_none() => le = Some(n),
            _ => {
                errs.push(path, syntax());
                return None;
            }
        }
    }
    let (plen, max) = (prefix.prefix_len(), prefix.max_prefix_len());
    for (kw, n) in [("ge", ge), ("le", le)] {
        if let Some(n) = n
            && !(plen..=max).contains(&n)
        {
            errs.push(
                path,
                format!("{kw} {n} is outside {plen}..={max} (from the prefix length to the family's maximum)"),
            );
            return None;
        }
    }
    if let (Some(g), Some(l)) = (ge, le)
        && g > l
    {
        errs.push(
            path,
            format!("ge {g} is greater than le {l}; no route could match"),
        );
        return None;
    }
    Some(PrefixMatch { prefix, ge, le })
}

fn list<T: std::str::FromStr<Err = String>>(errs: &mut Errors, path: &str, v: &[String]) -> Vec<T> {
    v.iter()
        .enumerate()
        .filter_map(|(i, s)| {
            s.parse()
                .map_err(|e: String| errs.push(format!("{path}[{i}]"), e))
                .ok()
        })
        .collect()
}

fn asn(errs: &mut Errors, path: &str, v: Option<i64>) -> Option<Option<Asn>> {
    match v {
        None => Some(None),
        Some(n) => errs
            .int(path, n, 1, i64::from(u32::MAX), "an ASN")
            .map(|a: u32| Some(Asn(a))),
    }
}

fn rule(errs: &mut Errors, at: &str, raw: RawRule) -> Option<PolicyRule> {
    let f = |name: &str| format!("{at}.{name}");
    let before = errs.0.len();
    let prefixes = raw
        .match_prefixes
        .iter()
        .enumerate()
        .filter_map(|(i, p)| prefix_match(errs, &format!("{at}.match_prefixes[{i}]"), p))
        .collect();
    let family = raw.match_family.as_deref().and_then(|v| match v {
        "ipv4-unicast" => Some(Family::Ipv4Unicast),
        "ipv6-unicast" => Some(Family::Ipv6Unicast),
        _ => {
            errs.push(
                f("match_family"),
                format!("{v:?} is not a family; use \"ipv4-unicast\" or \"ipv6-unicast\""),
            );
            None
        }
    });
    let action = match raw.action.as_deref() {
        Some(v) => action(errs, &f("action"), v),
        None => {
            errs.push(
                f("action"),
                "missing; every rule ends with action = \"accept\", \"reject\" or \"continue\"",
            );
            None
        }
    };
    let r = PolicyRule {
        prefixes,
        communities: list(errs, &f("match_communities"), &raw.match_communities),
        large_communities: list(
            errs,
            &f("match_large_communities"),
            &raw.match_large_communities,
        ),
        as_path_contains: asn(
            errs,
            &f("match_as_path_contains"),
            raw.match_as_path_contains,
        )?,
        neighbor_as: asn(errs, &f("match_neighbor_as"), raw.match_neighbor_as)?,
        origin_as: asn(errs, &f("match_origin_as"), raw.match_origin_as)?,
        originated: raw.match_originated,
        family,
        add_communities: list(errs, &f("add_communities"), &raw.add_communities),
        remove_communities: list(errs, &f("remove_communities"), &raw.remove_communities),
        add_large_communities: list(
            errs,
            &f("add_large_communities"),
            &raw.add_large_communities,
        ),
        remove_large_communities: list(
            errs,
            &f("remove_large_communities"),
            &raw.remove_large_communities,
        ),
        set_local_pref: match raw.set_local_pref {
            Some(v) => Some(errs.int(
                f("set_local_pref"),
                v,
                0,
                i64::from(u32::MAX),
                "a LOCAL_PREF",
            )?),
            None => None,
        },
        set_med: match raw.set_med {
            Some(v) => Some(errs.int(f("set_med"), v, 0, i64::from(u32::MAX), "a MED")?),
            None => None,
        },
        prepend: match raw.prepend {
            Some(v) => Some(errs.int(f("prepend"), v, 1, 16, "a prepend count (1..=16)")?),
            None => None,
        },
        action,
    };
    (errs.0.len() == before).then_some(r)
}

fn policy(errs: &mut Errors, i: usize, raw: RawPolicy) -> Option<BgpPolicy> {
    let at = format!("bgp.policies[{i}]");
    let name = crate::bgp::policy_name(errs, &format!("{at}.name"), &raw.name, "policy name");
    if BUILTIN_POLICIES.contains(&raw.name.as_str()) {
        errs.push(
            format!("{at}.name"),
            format!("{:?} is built in; choose another name", raw.name),
        );
    }
    let default = match raw.default.as_deref() {
        None => Some(PolicyAction::Reject),
        Some("accept") => Some(PolicyAction::Accept),
        Some("reject") => Some(PolicyAction::Reject),
        Some(v) => {
            errs.push(
                format!("{at}.default"),
                format!("{v:?} is not a default; use \"accept\" or \"reject\""),
            );
            None
        }
    };
    let rules: Vec<_> = raw
        .rules
        .into_iter()
        .enumerate()
        .map(|(j, r)| rule(errs, &format!("{at}.rules[{j}]"), r))
        .collect();
    Some(BgpPolicy {
        name: name?,
        rules: rules.into_iter().collect::<Option<_>>()?,
        default: default?,
    })
}

/// Validates the definitions; names must be unique.
pub(crate) fn policies(errs: &mut Errors, raw: Vec<RawPolicy>) -> Option<Vec<BgpPolicy>> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::new();
    let mut ok = true;
    for (i, r) in raw.into_iter().enumerate() {
        if let Some(&first) = seen.get(&r.name) {
            errs.push(
                format!("bgp.policies[{i}].name"),
                format!(
                    "{:?} is already defined by bgp.policies[{first}]; policy names must be unique",
                    r.name
                ),
            );
            ok = false;
            continue;
        }
        seen.insert(r.name.clone(), i);
        match policy(errs, i, r) {
            Some(p) => out.push(p),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// Every name a peer uses must be defined or built in.
pub(crate) fn check_references(
    errs: &mut Errors,
    path: &str,
    names: &[String],
    defined: &[BgpPolicy],
) {
    for (i, n) in names.iter().enumerate() {
        if BUILTIN_POLICIES.contains(&n.as_str()) || defined.iter().any(|p| &p.name == n) {
            continue;
        }
        let mut known: Vec<&str> = defined.iter().map(|p| p.name.as_str()).collect();
        known.extend(BUILTIN_POLICIES);
        let at = if names.len() == 1 {
            path.to_owned()
        } else {
            format!("{path}[{i}]")
        };
        errs.push(
            at,
            format!(
                "policy {n:?} is not defined; define it in [[bgp.policies]] or use one of: {}",
                known.join(", ")
            ),
        );
    }
}
