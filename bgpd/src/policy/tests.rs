//! Policy evaluation cases.

use std::borrow::Cow;

use super::*;
use crate::wire::Origin;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn attrs(path: &[u32]) -> PathAttrs {
    PathAttrs {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath::from_sequence(path.to_vec())),
        communities: vec![Community::new(65010, 1)],
        ..PathAttrs::default()
    }
}

fn run<'a>(p: &Policy, prefix: &str, a: &'a PathAttrs, originated: bool) -> Outcome<'a> {
    p.apply(&Route {
        prefix: net(prefix),
        attrs: a,
        originated,
        local_asn: 65000,
    })
}

fn one(matches: Vec<Match>) -> Policy {
    Policy {
        rules: vec![Rule {
            matches,
            actions: vec![],
            verdict: Verdict::Accept,
        }],
        default: Verdict::Reject,
        then: None,
    }
}

fn accepts(p: &Policy, prefix: &str, a: &PathAttrs) -> bool {
    run(p, prefix, a, false).is_accept()
}

#[test]
fn constructors() {
    let a = attrs(&[65010]);
    assert!(accepts(&Policy::accept_all(), "10.0.0.0/8", &a));
    assert!(!accepts(&Policy::reject_all(), "10.0.0.0/8", &a));
    assert!(!accepts(&Policy::default(), "10.0.0.0/8", &a));
    let o = Policy::originated_only();
    assert!(!run(&o, "10.0.0.0/8", &a, false).is_accept());
    assert!(run(&o, "10.0.0.0/8", &a, true).is_accept());
}

#[test]
fn prefix_entries_with_ge_and_le() {
    let e = |ge, le| PrefixEntry {
        prefix: net("10.0.0.0/8"),
        ge,
        le,
    };
    let m = |entry: PrefixEntry, p: &str| entry.matches(&net(p));
    assert!(m(e(None, None), "10.0.0.0/8"));
    assert!(!m(e(None, None), "10.1.0.0/16"));
    assert!(m(e(Some(16), None), "10.1.2.0/24"));
    assert!(!m(e(Some(16), None), "10.0.0.0/8"));
    assert!(m(e(None, Some(24)), "10.1.2.0/24"));
    assert!(!m(e(None, Some(24)), "10.1.2.0/25"));
    assert!(m(e(Some(16), Some(20)), "10.16.0.0/20"));
    assert!(!m(e(Some(16), Some(20)), "10.1.2.0/24"));
    assert!(!m(e(Some(8), Some(32)), "11.0.0.0/8"));
    assert!(!m(e(Some(8), Some(32)), "::/0"));
    let p = one(vec![Match::Prefix(vec![
        PrefixEntry::exact(net("192.0.2.0/24")),
        PrefixEntry::orlonger(net("fd00::/8"), 64),
    ])]);
    let a = attrs(&[1]);
    assert!(accepts(&p, "192.0.2.0/24", &a));
    assert!(accepts(&p, "fd00:1::/64", &a));
    assert!(!accepts(&p, "fd00:1::/65", &a));
    assert!(p.depends_on_prefix());
    assert!(!Policy::originated_only().depends_on_prefix());
}

#[test]
fn community_matches() {
    let mut a = attrs(&[1]);
    let lc = LargeCommunity {
        global_admin: 65000,
        local_data1: 1,
        local_data2: 2,
    };
    a.large_communities = vec![lc];
    assert!(accepts(
        &one(vec![Match::Community(Community::new(65010, 1))]),
        "10.0.0.0/8",
        &a
    ));
    assert!(!accepts(
        &one(vec![Match::Community(Community::new(65010, 2))]),
        "10.0.0.0/8",
        &a
    ));
    assert!(accepts(
        &one(vec![Match::LargeCommunity(lc)]),
        "10.0.0.0/8",
        &a
    ));
    let not = one(vec![Match::Not(Box::new(Match::LargeCommunity(lc)))]);
    assert!(!accepts(&not, "10.0.0.0/8", &a));
}

#[test]
fn as_path_matches() {
    let a = attrs(&[65010, 65020, 65030]);
    let yes = |m| accepts(&one(vec![m]), "10.0.0.0/8", &a);
    assert!(yes(Match::AsPathContains(65020)));
    assert!(!yes(Match::AsPathContains(65040)));
    assert!(yes(Match::NeighborAs(65010)));
    assert!(!yes(Match::NeighborAs(65030)));
    assert!(yes(Match::OriginAs(65030)));
    assert!(!yes(Match::OriginAs(65010)));
    // An empty path (iBGP-originated) has neither.
    let empty = attrs(&[]);
    assert!(!accepts(
        &one(vec![Match::OriginAs(65030)]),
        "10.0.0.0/8",
        &empty
    ));
}

#[test]
fn family_match_and_all_matches_must_hold() {
    let a = attrs(&[1]);
    let v6 = one(vec![Match::Family(Afi::IPV6, Safi::UNICAST)]);
    assert!(accepts(&v6, "2001:db8::/32", &a));
    assert!(!accepts(&v6, "10.0.0.0/8", &a));
    let both = one(vec![
        Match::Family(Afi::IPV4, Safi::UNICAST),
        Match::NeighborAs(2),
    ]);
    assert!(!accepts(&both, "10.0.0.0/8", &a));
}

#[test]
fn actions_modify_a_copy_and_continue_goes_on() {
    let lc = LargeCommunity {
        global_admin: 65000,
        local_data1: 7,
        local_data2: 7,
    };
    let p = Policy {
        rules: vec![
            Rule {
                matches: vec![],
                actions: vec![
                    Set::AddCommunity(Community::new(65000, 9)),
                    Set::AddCommunity(Community::new(65000, 9)),
                    Set::RemoveCommunity(Community::new(65010, 1)),
                    Set::AddLargeCommunity(lc),
                    Set::LocalPref(300),
                    Set::Prepend(2),
                ],
                verdict: Verdict::Continue,
            },
            // Sees the first rule's changes.
            Rule {
                matches: vec![Match::Community(Community::new(65000, 9))],
                actions: vec![Set::Med(10), Set::RemoveLargeCommunity(lc)],
                verdict: Verdict::Accept,
            },
        ],
        default: Verdict::Reject,
        then: None,
    };
    let a = attrs(&[65010]);
    let Outcome::Accept {
        attrs: out,
        med_set,
    } = run(&p, "10.0.0.0/8", &a, false)
    else {
        panic!()
    };
    assert!(med_set);
    assert_eq!(out.communities, vec![Community::new(65000, 9)]);
    assert!(out.large_communities.is_empty());
    assert_eq!(out.local_pref, Some(300));
    assert_eq!(out.med, Some(10));
    assert_eq!(
        out.as_path,
        Some(AsPath::from_sequence([65000, 65000, 65010]))
    );
    // The input is untouched; an accept without actions borrows.
    assert_eq!(a, attrs(&[65010]));
    assert!(matches!(
        run(&Policy::accept_all(), "10.0.0.0/8", &a, false),
        Outcome::Accept {
            attrs: Cow::Borrowed(_),
            med_set: false
        }
    ));
}

#[test]
fn a_continue_default_rejects() {
    let p = Policy {
        rules: vec![],
        default: Verdict::Continue,
        then: None,
    };
    assert!(!accepts(&p, "10.0.0.0/8", &attrs(&[1])));
}

#[test]
fn prepend_onto_a_path_starting_with_a_set() {
    let mut path = Some(AsPath {
        segments: vec![AsSegment {
            kind: AsSegmentType::Set,
            asns: vec![1, 2],
        }],
    });
    prepend(&mut path, 65000, 1);
    let segs = &path.as_ref().unwrap().segments;
    assert_eq!(segs.len(), 2);
    assert_eq!(segs[0].asns, vec![65000]);
    let mut none = None;
    prepend(&mut none, 65000, 2);
    assert_eq!(none, Some(AsPath::from_sequence([65000, 65000])));
}

/// The attributes an accepted route leaves the policy with.
fn accepted(o: Outcome<'_>) -> PathAttrs {
    match o {
        Outcome::Accept { attrs, .. } => attrs.into_owned(),
        Outcome::Reject => panic!("rejected"),
    }
}

const CONFIG: &str = r#"
[node]
name = "n1"
cluster = "c1"
[bgp]
local_asn = 65000
router_id = "192.0.2.1"
[[bgp.peers]]
name = "tor"
address = "192.0.2.2"
peer_asn = 65010
import_policy = "from-tor"
export_policy = ["originated-only", "tag"]

[[bgp.policies]]
name = "from-tor"
[[bgp.policies.rules]]
match_communities = ["65010:666"]
action = "reject"
[[bgp.policies.rules]]
match_prefixes = ["10.0.0.0/8 le 24"]
set_local_pref = 200
remove_communities = ["65010:1"]
add_communities = ["65000:7"]
action = "accept"

[[bgp.policies]]
name = "tag"
default = "accept"
[[bgp.policies.rules]]
match_family = "ipv6-unicast"
action = "reject"
[[bgp.policies.rules]]
prepend = 2
add_large_communities = ["65000:1:2"]
action = "continue"
"#;

fn configured(names: &[&str]) -> Policy {
    let c = configs::Config::from_toml(CONFIG).unwrap();
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    chain(&names, &c.bgp.unwrap().policies)
        .expect("known names")
        .expect("non-empty")
}

#[test]
fn configured_import_policy_matches_and_sets() {
    let p = configured(&["from-tor"]);
    let a = attrs(&[65010, 65020]);
    let out = accepted(run(&p, "10.1.2.0/24", &a, false));
    assert_eq!(out.local_pref, Some(200));
    assert_eq!(out.communities, vec![Community::new(65000, 7)]);
    // Outside the prefix list (too specific, or not covered): the default rejects.
    assert!(!accepts(&p, "10.1.2.0/25", &a));
    assert!(!accepts(&p, "192.0.2.0/24", &a));
    // The blackhole community is refused before the prefix rule.
    let mut bad = a.clone();
    bad.communities.push(Community::new(65010, 666));
    assert!(!accepts(&p, "10.1.2.0/24", &bad));
    assert!(p.depends_on_prefix());
}

#[test]
fn configured_chain_runs_in_order_and_stops_at_a_reject() {
    let p = configured(&["originated-only", "tag"]);
    let a = attrs(&[]);
    // Learned routes stop at the first policy.
    assert!(!run(&p, "10.0.0.0/24", &a, false).is_accept());
    // Ours go on through "tag": prepended twice, tagged, accepted by its default.
    let out = accepted(run(&p, "10.0.0.0/24", &a, true));
    assert_eq!(out.as_path, Some(AsPath::from_sequence(vec![65000, 65000])));
    assert_eq!(
        out.large_communities,
        vec![LargeCommunity {
            global_admin: 65000,
            local_data1: 1,
            local_data2: 2
        }]
    );
    // "tag" rejects IPv6 even though the first policy accepted it.
    assert!(!run(&p, "2001:db8::/48", &a, true).is_accept());
    assert!(!p.depends_on_prefix(), "family is not a prefix match");
}

#[test]
fn chain_of_nothing_is_none_and_unknown_names_are_refused() {
    assert_eq!(Policy::chain(Vec::new()), None);
    let c = configs::Config::from_toml(CONFIG).unwrap();
    assert!(chain(&["nope".to_string()], &c.bgp.unwrap().policies).is_none());
    // A chain of chains keeps every link.
    let inner = Policy::chain(vec![Policy::originated_only(), Policy::accept_all()]).unwrap();
    let outer = Policy::chain(vec![inner, Policy::reject_all()]).unwrap();
    let a = attrs(&[]);
    assert!(!run(&outer, "10.0.0.0/24", &a, true).is_accept());
}
