//! Multipath (ECMP) and the FIB changes a flush reports.

use super::*;

// ---- multipath and the FIB ----

#[test]
fn equal_paths_from_two_tors_form_an_ecmp_set() {
    let mut rib = rib_with(vec![peer(1, 65010), peer(2, 65020)]);
    rib.apply_update(
        PeerId(1),
        &announce("192.0.2.1", attrs(&[65010, 65099]), &["0.0.0.0/0"]),
    )
    .unwrap();
    rib.apply_update(
        PeerId(2),
        &announce("192.0.2.2", attrs(&[65020, 65099]), &["0.0.0.0/0"]),
    )
    .unwrap();
    let out = rib.flush();
    assert_eq!(
        out.fib,
        vec![FibChange {
            prefix: net("0.0.0.0/0"),
            next_hops: vec![ip("192.0.2.1"), ip("192.0.2.2")],
        }]
    );
    let routes = rib.routes(net("0.0.0.0/0"));
    assert_eq!(routes.iter().filter(|r| r.multipath).count(), 2);
    assert_eq!(routes.iter().filter(|r| r.best).count(), 1);
    // One ToR goes away: the set shrinks.
    rib.peer_down(PeerId(2)).unwrap();
    let out = rib.flush();
    assert_eq!(out.fib[0].next_hops, vec![ip("192.0.2.1")]);
    // A longer path does not join the set.
    rib.peer_up(PeerId(2), session()).unwrap();
    rib.apply_update(
        PeerId(2),
        &announce("192.0.2.2", attrs(&[65020, 65021, 65099]), &["0.0.0.0/0"]),
    )
    .unwrap();
    let out = rib.flush();
    assert!(out.fib.is_empty(), "{:?}", out.fib);
}

#[test]
fn withdrawing_the_last_path_removes_the_fib_route_and_withdraws_from_peers() {
    let mut rib = rib_with(vec![peer(1, 65010), peer(2, 65020)]);
    rib.apply_update(
        PeerId(1),
        &announce("192.0.2.1", attrs(&[65010]), &["198.51.100.0/24"]),
    )
    .unwrap();
    let out = rib.flush();
    assert_eq!(out.fib[0].next_hops, vec![ip("192.0.2.1")]);
    assert_eq!(sent(&out, 2, &CTX4)[0].nlri, vec![n4("198.51.100.0/24")]);
    assert!(sent(&out, 1, &CTX4).is_empty(), "never back to the source");

    rib.apply_update(PeerId(1), &withdraw(&["198.51.100.0/24"]))
        .unwrap();
    let out = rib.flush();
    assert_eq!(
        out.fib,
        vec![FibChange {
            prefix: net("198.51.100.0/24"),
            next_hops: vec![],
        }]
    );
    let msgs = sent(&out, 2, &CTX4);
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].withdrawn, vec![n4("198.51.100.0/24")]);
    assert_eq!(rib.adj_rib_out(PeerId(2)).count(), 0);
    assert_eq!(rib.loc_rib().count(), 0);
}

#[test]
fn next_hop_change_updates_the_fib_attribute_change_does_not() {
    let mut rib = rib_with(vec![peer(1, 65010)]);
    rib.apply_update(
        PeerId(1),
        &announce("192.0.2.1", attrs(&[65010]), &["198.51.100.0/24"]),
    )
    .unwrap();
    rib.flush();
    rib.apply_update(
        PeerId(1),
        &announce("192.0.2.9", attrs(&[65010]), &["198.51.100.0/24"]),
    )
    .unwrap();
    assert_eq!(rib.flush().fib[0].next_hops, vec![ip("192.0.2.9")]);
    let mut a = attrs(&[65010]);
    a.communities = vec![Community::new(65010, 7)];
    rib.apply_update(PeerId(1), &announce("192.0.2.9", a, &["198.51.100.0/24"]))
        .unwrap();
    assert!(rib.flush().fib.is_empty());
}
