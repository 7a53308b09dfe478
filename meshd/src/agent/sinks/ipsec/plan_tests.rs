//! Small stories of the IPsec reconcile logic: records in, desired XFRM state out.

use std::collections::{BTreeMap, BTreeSet};

use common::ClusterName;
use crypto::ipsec::rotation::{Action, Rotation};
use crypto::ipsec::xfrm::{Dir, XfrmPeer, out_mark};
use crypto::rollout::EncryptionMode::{Off, Opportunistic, Strict};

use super::ids::{Numbers, numbers};
use super::plan::*;
use crate::nodes::NodeRecord;

fn rec(i: u8) -> NodeRecord {
    let mut r = NodeRecord::new("red".parse().unwrap(), format!("n{i}").parse().unwrap());
    r.ipv4 = Some(format!("192.0.2.{i}").parse().unwrap());
    r.pod_cidrs = vec![format!("10.244.{i}.0/24").parse().unwrap()];
    r.ipsec_node_id = Some(id(i));
    r
}

/// Node `ni`'s number (cluster ID 1, slot i).
fn id(i: u8) -> u32 {
    0x1_0000 | u32::from(i)
}

/// Node `of`'s view of the numbers of `others` (all published).
fn nums(of: u8, others: &[u8]) -> Numbers {
    let names: Vec<String> = others.iter().map(|i| format!("n{i}")).collect();
    numbers(
        Some(id(of)),
        names
            .iter()
            .zip(others)
            .map(|(n, &i)| (n.as_str(), Some(id(i)))),
    )
}

fn peers(of: u8, others: &[u8]) -> Vec<XfrmPeer> {
    others
        .iter()
        .flat_map(|&i| xfrm_peers(&format!("n{i}"), &rec(of), &rec(i)).unwrap())
        .collect()
}

fn spis(s: &[u8]) -> BTreeSet<u8> {
    s.iter().copied().collect()
}

#[test]
fn peers_pair_pod_cidrs_of_a_family_and_name_what_is_missing() {
    let mut own = rec(1);
    own.ipv6 = Some("2001:db8::1".parse().unwrap());
    own.pod_cidrs.push("fd00:1::/64".parse().unwrap());
    let mut two = rec(2);
    two.ipv6 = Some("2001:db8::2".parse().unwrap());
    two.pod_cidrs.push("fd00:2::/64".parse().unwrap());
    let p = xfrm_peers("n2", &own, &two).unwrap();
    assert_eq!(p.len(), 2, "{p:?}");
    assert_eq!(p[1].remote_ip.to_string(), "2001:db8::2");
    assert_eq!(p[1].local_pods.to_string(), "fd00:1::/64");
    let mut bare = rec(3);
    bare.ipv4 = None;
    let e = xfrm_peers("n3", &own, &bare).unwrap_err();
    assert!(e.starts_with("node n3: no node address and PodCIDR"), "{e}");
    let red: ClusterName = "red".parse().unwrap();
    let green: ClusterName = "green".parse().unwrap();
    assert_eq!(peer_name(&red, &green, &"g1".parse().unwrap()), "green/g1");
    assert_eq!(peer_name(&red, &red, &"r1".parse().unwrap()), "r1");
}

#[test]
fn opportunistic_never_blocks_strict_fails_closed_off_has_nothing() {
    let p = peers(1, &[2, 3]);
    let none = BTreeSet::new();
    let opp = desired_policies(Opportunistic, &p, &spis(&[3]), &none);
    assert_eq!(opp.len(), 4, "in + fwd per peer, no out without an SA");
    assert!(opp.iter().all(|p| p.optional && p.dir != Dir::Out));
    // Once n2's outbound SA exists, its out policy (marked) follows.
    let installed: BTreeSet<_> = [outbound_sa(&p[0], 3, 0x3001_0001)].into();
    let opp = desired_policies(Opportunistic, &p, &spis(&[3]), &installed);
    let out: Vec<_> = opp.iter().filter(|p| p.dir == Dir::Out).collect();
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].mark, out[0].optional, out[0].tmpl_dst.to_string()),
        (Some((0x3e00, 0xff00)), false, "192.0.2.2".into())
    );
    let strict = desired_policies(Strict, &p, &spis(&[3]), &none);
    assert_eq!(strict.len(), 6);
    assert!(strict.iter().all(|p| !p.optional));
    assert!(desired_policies(Off, &p, &spis(&[3]), &none).is_empty());
    assert!(desired_sas(Off, &p, &spis(&[3]), &nums(1, &[2, 3])).is_empty());
}

#[test]
fn sas_are_retried_until_installed_and_removed_with_their_peer() {
    let p = peers(1, &[2, 3]);
    let want = desired_sas(Strict, &p, &spis(&[3]), &nums(1, &[2, 3]));
    assert_eq!(want.len(), 4, "in + out per peer");
    let mut l = SaLedger::default();
    let plan = l.plan(&want);
    assert_eq!((plan.add.len(), plan.remove.len()), (4, 0));
    // The kernel refuses (no ESP): nothing installed, the error kept per peer, retried.
    l.errors.insert("n2".into(), "no ESP".into());
    l.errors.insert("n3".into(), "no ESP".into());
    l.settle(&want);
    assert_eq!(l.errors.len(), 2);
    assert_eq!(l.plan(&want).add.len(), 4, "retried at the next step");
    // A kernel with ESP: installed; nothing left to do; errors settle.
    l.installed.extend(want.keys().cloned());
    l.settle(&want);
    assert!(l.errors.is_empty());
    assert_eq!(l.plan(&want), SaPlan::default());
    // n3 leaves: its two SAs go, n2's stay.
    let want2 = desired_sas(Strict, &peers(1, &[2]), &spis(&[3]), &nums(1, &[2]));
    let plan = l.plan(&want2);
    assert_eq!(plan.add, vec![]);
    assert_eq!(plan.remove.len(), 2);
    assert!(
        plan.remove
            .iter()
            .all(|id| id.src.to_string() == "192.0.2.3" || id.dst.to_string() == "192.0.2.3")
    );
}

#[test]
fn peer_paths_follow_policies_and_sas() {
    let p = peers(1, &[2]);
    let mut input = BTreeMap::new();
    input.insert("n2".to_string(), (Some(3), Ok(p.clone())));
    input.insert(
        "n4".to_string(),
        (None, Err("node n4: no node address".into())),
    );
    let sas = desired_sas(Opportunistic, &p, &spis(&[3]), &nums(1, &[2]));
    let none = BTreeMap::new();
    let mut l = SaLedger::default();
    l.errors
        .insert("n2".into(), "this kernel cannot install IPsec (ESP)".into());
    let want = desired_policies(Opportunistic, &p, &spis(&[3]), &l.installed);
    let v = peer_views(
        Opportunistic,
        &input,
        &want,
        &BTreeSet::new(),
        &sas,
        &l,
        &none,
    );
    assert_eq!((v[0].path, v[1].path), ("pending", "rejected"));
    let v = peer_views(Opportunistic, &input, &want, &want, &sas, &l, &none);
    assert_eq!(v[0].path, "clear_no_sa");
    assert_eq!(v[0].spi, Some(3));
    assert!(v[0].error.as_deref().unwrap().contains("ESP"));
    let strict = desired_policies(Strict, &p, &spis(&[3]), &l.installed);
    let v = peer_views(Strict, &input, &strict, &strict, &sas, &l, &none);
    assert_eq!(v[0].path, "blocked_no_sa");
    l.installed.extend(sas.keys().cloned());
    l.errors.clear();
    let v = peer_views(Strict, &input, &strict, &strict, &sas, &l, &none);
    assert_eq!((v[0].path, v[0].error.clone()), ("ipsec", None));
}

/// Two nodes rotate SPI 3 → 4 with announces carried only by their node records (encoded
/// and decoded as etcd stores them): the out policies of 3 and 4 overlap until both switched,
/// then 3 goes; neither ever sends with an SPI the other does not accept.
#[test]
fn rotation_through_node_records() {
    let mut rot = [Rotation::new(3), Rotation::new(3)];
    let mut recs = [rec(1), rec(2)];
    for (i, r) in rot.iter_mut().enumerate() {
        r.set_peers([format!("n{}", 2 - i).as_str()]);
        recs[i] = with_announce(&recs[i], &r.announce());
    }
    let through_etcd =
        |r: &NodeRecord| NodeRecord::decode(&r.cluster, &r.name, &r.encode()).expect("decodes");
    let step = |rot: &mut [Rotation; 2], recs: &mut [NodeRecord; 2], i: usize| -> Vec<Action> {
        let other = through_etcd(&recs[1 - i]);
        let a = announce_of(&other).expect("announce in the record");
        let actions = rot[i].on_peer(other.name.as_ref(), a);
        recs[i] = with_announce(&recs[i], &rot[i].announce());
        actions
    };
    assert_eq!(recs[0].ipsec_key_index, Some(3));
    assert_eq!(recs[0].labels.get(ACCEPTS_LABEL), Some("3"));
    // n1 gets the new key file first.
    let a = rot[0].on_key(4);
    assert_eq!(a[0], Action::InstallInbound(4));
    recs[0] = with_announce(&recs[0], &rot[0].announce());
    assert_eq!(
        (recs[0].ipsec_key_index, recs[0].labels.get(ACCEPTS_LABEL)),
        (Some(3), Some("3.4"))
    );
    let p = peers(1, &[2]);
    let marks = |r: &Rotation| -> BTreeSet<(u32, u32)> {
        desired_policies(Strict, &p, &r.announce().accepts, &BTreeSet::new())
            .iter()
            .filter_map(|p| p.mark)
            .collect()
    };
    assert_eq!(marks(&rot[0]), [out_mark(3), out_mark(4)].into(), "overlap");
    assert!(
        step(&mut rot, &mut recs, 0).is_empty(),
        "n2 does not accept 4 yet"
    );
    rot[1].on_key(4);
    recs[1] = with_announce(&recs[1], &rot[1].announce());
    let safe = |rot: &[Rotation; 2]| {
        for i in 0..2 {
            assert!(
                rot[1 - i]
                    .announce()
                    .accepts
                    .contains(&rot[i].announce().sends)
            );
        }
    };
    for _ in 0..4 {
        for i in 0..2 {
            step(&mut rot, &mut recs, i);
            safe(&rot);
        }
    }
    for (r, rec) in rot.iter().zip(&recs) {
        assert!(r.is_settled(), "{r:?}");
        assert_eq!(marks(r), [out_mark(4)].into(), "old SPI gone");
        assert_eq!(rec.ipsec_key_index, Some(4));
        assert_eq!(rec.labels.get(ACCEPTS_LABEL), Some("4"));
    }
}

#[test]
fn records_without_the_label_accept_their_key_index() {
    let mut r = rec(2);
    assert_eq!(announce_of(&r), None);
    r.ipsec_key_index = Some(5);
    let a = announce_of(&r).unwrap();
    assert_eq!((a.sends, a.accepts), (5, spis(&[5])));
}

/// Four nodes, numbers read from each other's records as etcd stores them: every node's
/// inbound SAs have one SPI per peer and key index, and A's outbound SA to B is exactly B's
/// inbound SA from A (same addresses and wire SPI), also while two key indexes overlap.
#[test]
fn wire_spis_are_per_sender_and_both_ends_agree_through_records() {
    use crypto::ipsec::spi::wire_spi;
    let through_etcd =
        |r: &NodeRecord| NodeRecord::decode(&r.cluster, &r.name, &r.encode()).unwrap();
    let all = [1u8, 2, 3, 4];
    let sas_of = |i: u8, accepts: &BTreeSet<u8>| {
        let others: Vec<u8> = all.iter().copied().filter(|&j| j != i).collect();
        let recs: Vec<NodeRecord> = others.iter().map(|&j| through_etcd(&rec(j))).collect();
        let n = numbers(
            through_etcd(&rec(i)).ipsec_node_id,
            recs.iter().map(|r| (r.name.as_ref(), r.ipsec_node_id)),
        );
        assert!(n.refused.is_empty(), "{n:?}");
        desired_sas(Strict, &peers(i, &others), accepts, &n)
    };
    for accepts in [spis(&[3]), spis(&[3, 4])] {
        let per_node: BTreeMap<u8, _> = all.iter().map(|&i| (i, sas_of(i, &accepts))).collect();
        for (&i, sas) in &per_node {
            let inbound: Vec<u32> = sas
                .iter()
                .filter(|(_, s)| s.inbound)
                .map(|(id, _)| id.spi)
                .collect();
            let distinct: BTreeSet<u32> = inbound.iter().copied().collect();
            assert_eq!(inbound.len(), 3 * accepts.len());
            assert_eq!(distinct.len(), inbound.len(), "n{i}: an inbound SPI twice");
            assert!(inbound.iter().all(|&s| s > 255), "RFC 4303 §2.1 reserved");
            for (id, s) in sas.iter().filter(|(_, s)| s.inbound) {
                let j: u8 = s.peer[1..].parse().unwrap();
                assert_eq!(id.spi, wire_spi(s.key_index, self::id(j)).unwrap());
                // The sender j computes the same SA as its outbound one to i.
                let theirs = per_node[&j]
                    .iter()
                    .find(|(o, t)| !t.inbound && t.peer == format!("n{i}") && o.spi == id.spi)
                    .unwrap_or_else(|| panic!("n{j} sends no SA with spi {:#x}", id.spi));
                assert_eq!((theirs.0.src, theirs.0.dst), (id.src, id.dst));
                assert_eq!(theirs.0.mark, Some(out_mark(s.key_index)));
                assert_eq!(theirs.1.key_index, s.key_index);
            }
        }
    }
}

/// A peer without a number (older meshd) and two peers sharing one get no SAs and say why;
/// their policies stay (opportunistic: clear, strict: blocked), the other peer keeps its SAs.
#[test]
fn peers_without_or_sharing_a_number_are_refused_the_rest_keep_working() {
    let mut old = rec(3);
    old.ipsec_node_id = None;
    let mut twin = rec(5);
    twin.ipsec_node_id = Some(id(4));
    let recs = [rec(2), old, rec(4), twin];
    let n = numbers(
        Some(id(1)),
        recs.iter().map(|r| (r.name.as_ref(), r.ipsec_node_id)),
    );
    assert_eq!(n.peers.keys().collect::<Vec<_>>(), ["n2"]);
    assert!(n.refused["n3"].contains("no ipsec_node_id"), "{n:?}");
    assert!(n.refused["n4"].contains("as n5 does"), "{n:?}");
    assert!(n.refused["n5"].contains("as n4 does"), "{n:?}");
    let p = peers(1, &[2, 3, 4, 5]);
    let sas = desired_sas(Strict, &p, &spis(&[3]), &n);
    assert!(
        sas.values().all(|s| s.peer == "n2") && sas.len() == 2,
        "{sas:?}"
    );
    let mut l = SaLedger::default();
    l.installed.extend(sas.keys().cloned());
    let mut input: PeerInputs = BTreeMap::new();
    for i in [2u8, 3, 4, 5] {
        input.insert(format!("n{i}"), (Some(3), Ok(peers(1, &[i]))));
    }
    for (mode, no_sa) in [(Opportunistic, "clear_no_sa"), (Strict, "blocked_no_sa")] {
        let pols = desired_policies(mode, &p, &spis(&[3]), &l.installed);
        let ins = pols.iter().filter(|p| p.dir == Dir::In).count();
        assert_eq!(ins, 4, "in policies for every peer, numbered or not");
        let v = peer_views(mode, &input, &pols, &pols, &sas, &l, &n.refused);
        let paths: Vec<_> = v.iter().map(|v| (v.node.as_str(), v.path)).collect();
        assert_eq!(
            paths,
            [("n2", "ipsec"), ("n3", no_sa), ("n4", no_sa), ("n5", no_sa)]
        );
        assert_eq!(v[0].error, None);
        assert!(
            v[1].error
                .as_deref()
                .unwrap()
                .starts_with("refused for IPsec")
        );
    }
}
