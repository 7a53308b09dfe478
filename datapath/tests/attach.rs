//! Attaching to a real veth through TCX links, inside a network namespace
//! of the test's own (the veth vanishes with it). Needs root.
#![allow(unsafe_code)] // unshare(2) for the test's namespace; see SAFETY below

mod support;

use std::process::Command;

use aya::programs::{SchedClassifier, TcAttachType};
use ironmesh_datapath::{Datapath, Program};
use support::TestRoot;

fn names(iface: &str, at: TcAttachType) -> Vec<String> {
    let (_, progs) = SchedClassifier::query_tcx(iface, at).unwrap();
    progs
        .iter()
        .map(|p| p.name_as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn attaches_to_and_detaches_from_a_pod_veth() {
    let root = TestRoot::new();
    // A thread of its own: unshare(CLONE_NEWNET) moves only this thread (and
    // the `ip` it spawns) into the new namespace.
    std::thread::spawn(move || {
        // SAFETY: unshare takes no pointers; it only changes this thread's
        // network namespace, which nothing else in the thread relies on.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "unshare: {}", std::io::Error::last_os_error());
        let ok = Command::new("ip")
            .args([
                "link", "add", "lxc-test", "type", "veth", "peer", "name", "eth0",
            ])
            .status()
            .unwrap();
        assert!(ok.success());

        let mut dp = Datapath::load(&root.0).unwrap();
        dp.attach("lxc-test").unwrap();
        assert_eq!(
            names("lxc-test", TcAttachType::Ingress),
            [Program::PodEgress.name()]
        );
        assert_eq!(
            names("lxc-test", TcAttachType::Egress),
            [Program::PodIngress.name()]
        );
        dp.attach("lxc-test").unwrap(); // re-attach replaces, never doubles
        assert_eq!(names("lxc-test", TcAttachType::Ingress).len(), 1);

        dp.detach("lxc-test").unwrap();
        assert!(names("lxc-test", TcAttachType::Ingress).is_empty());
        assert!(names("lxc-test", TcAttachType::Egress).is_empty());
        assert!(dp.detach("lxc-test").is_err());
        assert!(dp.attach("no-such-if").is_err());
    })
    .join()
    .unwrap();
}

fn ids(iface: &str, at: TcAttachType) -> Vec<u32> {
    let (_, progs) = SchedClassifier::query_tcx(iface, at).unwrap();
    progs.iter().map(|p| p.id()).collect()
}

#[test]
fn links_outlive_the_agent_and_a_restart_replaces_them_in_place() {
    let root = TestRoot::new();
    std::thread::spawn(move || {
        // SAFETY: as above: only this thread's network namespace changes.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "unshare: {}", std::io::Error::last_os_error());
        let ok = Command::new("ip")
            .args([
                "link", "add", "lxc-up", "type", "veth", "peer", "name", "eth0",
            ])
            .status()
            .unwrap();
        assert!(ok.success());

        let mut first = Datapath::load(&root.0).unwrap();
        first.attach("lxc-up").unwrap();
        let before = ids("lxc-up", TcAttachType::Ingress);
        assert_eq!(before.len(), 1);
        drop(first); // the agent exits: its pinned links stay
        assert_eq!(ids("lxc-up", TcAttachType::Ingress), before);
        assert_eq!(
            names("lxc-up", TcAttachType::Egress),
            [Program::PodIngress.name()]
        );

        // The agent starts again (new program instances, same pinned maps).
        let mut second = Datapath::load(&root.0).unwrap();
        second.attach("lxc-up").unwrap();
        // The old link is released asynchronously; wait for it (bounded).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while ids("lxc-up", TcAttachType::Ingress).len() > 1
            || ids("lxc-up", TcAttachType::Egress).len() > 1
        {
            assert!(
                std::time::Instant::now() < deadline,
                "old link still attached"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let after = ids("lxc-up", TcAttachType::Ingress);
        assert_eq!(after.len(), 1);
        assert_ne!(after, before, "the new program replaced the old one");
        assert_eq!(
            names("lxc-up", TcAttachType::Egress),
            [Program::PodIngress.name()]
        );
        second.detach("lxc-up").unwrap();
        assert!(ids("lxc-up", TcAttachType::Ingress).is_empty());
    })
    .join()
    .unwrap();
}
