//! Anti-spoofing in pod_egress through BPF_PROG_TEST_RUN: a pod may send only from its own
//! addresses (an endpoint's, behind its own veth). Test runs see the packet arrive on the
//! loopback device of this namespace (ifindex 1). Needs root and bpffs (scripts/setup).

mod support;

use ironmesh_datapath::events::{DropReason, EventKind};
use ironmesh_datapath::loader::{TC_ACT_OK, TC_ACT_SHOT};
use ironmesh_datapath::{Config, Datapath, Endpoint, EventReader, Program};
use support::*;

const POD: &str = "10.0.1.5";
const POD6: &str = "fd00:1::5";
const DST: &str = "10.0.2.7";
const DST6: &str = "fd00:2::7";
/// The device test runs arrive on.
const LO: u32 = 1;

fn datapath(root: &TestRoot, ifindex: u32) -> Datapath {
    let mut dp = Datapath::load(&root.0).unwrap();
    dp.upsert_endpoint(&Endpoint {
        id: 1,
        identity: 4242,
        ifindex,
        addresses: vec![ip(POD), ip(POD6)],
    })
    .unwrap();
    dp
}

fn verdict(dp: &Datapath, src: &str, dst: &str) -> u32 {
    dp.run(
        Program::PodEgress,
        &packet((ip(src), 40000), (ip(dst), 80), TCP),
        1,
    )
    .unwrap()
    .verdict
}

fn spoof_drops(events: &mut EventReader) -> Vec<String> {
    events
        .drain()
        .into_iter()
        .map(Result::unwrap)
        .filter(|e| e.kind == EventKind::Drop(DropReason::Spoofed))
        .map(|e| e.src.0.to_string())
        .collect()
}

#[test]
fn a_pod_sends_only_from_its_own_addresses() {
    let root = TestRoot::new();
    let mut dp = datapath(&root, LO);
    let mut events = EventReader::open(&root.0).unwrap();
    dp.set_config(&Config::default()).unwrap();

    assert_eq!(verdict(&dp, POD, DST), TC_ACT_OK, "its own IPv4 address");
    assert_eq!(verdict(&dp, POD6, DST6), TC_ACT_OK, "its own IPv6 address");
    assert_eq!(verdict(&dp, "fe80::1", DST6), TC_ACT_OK, "link-local (ND)");
    assert_eq!(verdict(&dp, "::", DST6), TC_ACT_OK, "unspecified (DAD)");
    assert!(spoof_drops(&mut events).is_empty());

    assert_eq!(
        verdict(&dp, "10.0.1.99", DST),
        TC_ACT_SHOT,
        "no endpoint has it"
    );
    assert_eq!(verdict(&dp, "fd00:1::99", DST6), TC_ACT_SHOT);
    assert_eq!(
        spoof_drops(&mut events),
        ["10.0.1.99", "fd00:1::99"],
        "each spoofed packet is reported with its source"
    );
}

#[test]
fn another_pods_address_behind_another_veth_is_spoofed() {
    let root = TestRoot::new();
    // The endpoint owning POD sits behind ifindex 7; the packet arrives on 1.
    let mut dp = datapath(&root, 7);
    let mut events = EventReader::open(&root.0).unwrap();
    dp.set_config(&Config::default()).unwrap();
    assert_eq!(verdict(&dp, POD, DST), TC_ACT_SHOT);
    assert_eq!(spoof_drops(&mut events), [POD]);

    // An endpoint whose veth is not known yet (0) is not checked by device.
    let dp0 = datapath(&root, 0);
    assert_eq!(verdict(&dp0, POD, DST), TC_ACT_OK);
}

#[test]
fn unchecked_when_allowed_or_before_any_config() {
    let root = TestRoot::new();
    let mut dp = datapath(&root, LO);
    assert_eq!(
        verdict(&dp, "10.0.1.99", DST),
        TC_ACT_OK,
        "no config written yet: nothing enforced"
    );
    dp.set_config(&Config {
        allow_spoofed_sources: true,
        ..Config::default()
    })
    .unwrap();
    assert_eq!(verdict(&dp, "10.0.1.99", DST), TC_ACT_OK);
    dp.set_config(&Config::default()).unwrap();
    assert_eq!(verdict(&dp, "10.0.1.99", DST), TC_ACT_SHOT);
}
