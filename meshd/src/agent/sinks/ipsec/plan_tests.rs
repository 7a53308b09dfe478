//! Small stories of the IPsec reconcile logic: records in, desired XFRM state out.

use std::collections::{BTreeMap, BTreeSet};

use common::ClusterName;
use crypto::ipsec::rotation::{Action, Rotation};
use crypto::ipsec::xfrm::{Dir, XfrmPeer, out_mark};
use crypto::rollout::EncryptionMode::{Off, Opportunistic, Strict};

use super::plan::*;
use crate::nodes::NodeRecord;

fn rec(i: u8) -> NodeRecord {
    let mut r = NodeRecord::new("red".parse().unwrap(), format!("n{i}").parse().unwrap());
    r.ipv4 = Some(format!("192.0.2.{i}").parse().unwrap());
    r.pod_cidrs = vec![format!("10.244.{i}.0/24").parse().unwrap()];
    r
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
    let installed: BTreeSet<_> = [outbound_sa(&p[0], 3)].into();
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
    assert!(desired_sas(Off, &p, &spis(&[3])).is_empty());
}

#[test]
fn sas_are_retried_until_installed_and_removed_with_their_peer() {
    let p = peers(1, &[2, 3]);
    let want = desired_sas(Strict, &p, &spis(&[3]));
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
    let want2 = desired_sas(Strict, &peers(1, &[2]), &spis(&[3]));
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
    let sas = desired_sas(Opportunistic, &p, &spis(&[3]));
    let mut l = SaLedger::default();
    l.errors
        .insert("n2".into(), "this kernel cannot install IPsec (ESP)".into());
    let want = desired_policies(Opportunistic, &p, &spis(&[3]), &l.installed);
    let v = peer_views(Opportunistic, &input, &want, &BTreeSet::new(), &sas, &l);
    assert_eq!((v[0].path, v[1].path), ("pending", "rejected"));
    let v = peer_views(Opportunistic, &input, &want, &want, &sas, &l);
    assert_eq!(v[0].path, "clear_no_sa");
    assert_eq!(v[0].spi, Some(3));
    assert!(v[0].error.as_deref().unwrap().contains("ESP"));
    let strict = desired_policies(Strict, &p, &spis(&[3]), &l.installed);
    let v = peer_views(Strict, &input, &strict, &strict, &sas, &l);
    assert_eq!(v[0].path, "blocked_no_sa");
    l.installed.extend(sas.keys().cloned());
    l.errors.clear();
    let v = peer_views(Strict, &input, &strict, &strict, &sas, &l);
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
