//! Minimal UPDATEs: nothing a peer already has is sent again.

use super::*;

// ---- minimal updates ----

#[test]
fn an_identical_reannouncement_produces_nothing() {
    let mut rib = rib_with(vec![peer(1, 65010), peer(2, 65020)]);
    let u = announce("192.0.2.1", attrs(&[65010]), &["198.51.100.0/24"]);
    rib.apply_update(PeerId(1), &u).unwrap();
    assert!(!rib.flush().updates.is_empty());
    rib.apply_update(PeerId(1), &u).unwrap();
    let out = rib.flush();
    assert!(out.updates.is_empty() && out.fib.is_empty());
    // Nor does a change the peer cannot see (a community we strip on import).
    let mut rib = rib_with(vec![peer(1, 65010), peer(2, 65020)]);
    let mut p1 = peer(1, 65010);
    p1.import = Policy {
        rules: vec![Rule {
            matches: vec![],
            actions: vec![Set::RemoveCommunity(Community::new(65010, 1))],
            verdict: Verdict::Accept,
        }],
        default: Verdict::Accept,
        then: None,
    };
    rib.remove_peer(PeerId(1)).unwrap();
    rib.add_peer(p1).unwrap();
    rib.peer_up(PeerId(1), session()).unwrap();
    rib.apply_update(PeerId(1), &u).unwrap();
    rib.flush();
    let mut a = attrs(&[65010]);
    a.communities = vec![Community::new(65010, 1)];
    rib.apply_update(PeerId(1), &announce("192.0.2.1", a, &["198.51.100.0/24"]))
        .unwrap();
    assert!(rib.flush().updates.is_empty());
}

#[test]
fn prefixes_sharing_attributes_are_packed_into_one_update() {
    let mut rib = rib_with(vec![peer(1, 65010), peer(2, 65020)]);
    rib.apply_update(
        PeerId(1),
        &announce("192.0.2.1", attrs(&[65010]), &["198.51.100.0/24"]),
    )
    .unwrap();
    rib.apply_update(
        PeerId(1),
        &announce("192.0.2.1", attrs(&[65010]), &["203.0.113.0/24"]),
    )
    .unwrap();
    rib.apply_update(
        PeerId(1),
        &announce("192.0.2.1", attrs(&[65010, 65011]), &["192.0.2.0/24"]),
    )
    .unwrap();
    let out = rib.flush();
    let msgs = sent(&out, 2, &CTX4);
    let mut nlri: Vec<Vec<Ipv4Net>> = msgs.iter().map(|m| m.nlri.clone()).collect();
    nlri.sort();
    assert_eq!(
        nlri,
        vec![
            vec![n4("192.0.2.0/24")],
            vec![n4("198.51.100.0/24"), n4("203.0.113.0/24")],
        ]
    );
    // Withdrawals are packed too.
    rib.peer_down(PeerId(1)).unwrap();
    let msgs = sent(&rib.flush(), 2, &CTX4);
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].withdrawn.len(), 3);
}

#[test]
fn a_large_table_is_split_into_full_messages() {
    let mut rib = rib_with(vec![peer(1, 65010), peer(2, 65020)]);
    let prefixes: Vec<Ipv4Net> = (0..3000u32)
        .map(|i| Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + (i << 8)), 24).unwrap())
        .collect();
    let u = wire(UpdateMsg {
        attrs: PathAttrs {
            next_hop: Some(v4("192.0.2.1")),
            ..attrs(&[65010])
        },
        nlri: prefixes[..900].to_vec(),
        ..UpdateMsg::default()
    });
    rib.apply_update(PeerId(1), &u).unwrap();
    for chunk in prefixes[900..].chunks(700) {
        let mut u = u.clone();
        u.nlri = chunk.to_vec();
        rib.apply_update(PeerId(1), &u).unwrap();
    }
    let msgs = sent(&rib.flush(), 2, &CTX4);
    let mut all: Vec<Ipv4Net> = msgs.iter().flat_map(|m| m.nlri.clone()).collect();
    assert_eq!(msgs.len(), 3);
    all.sort();
    assert_eq!(all, prefixes);
}
