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
