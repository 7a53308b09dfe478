//! A real 3-member etcd cluster on a switch: replication and leader failover.

use std::time::Duration;

use interop_tests::*;

#[test]
fn etcd_cluster_replicates_and_survives_leader_kill() -> Result<()> {
    let lab = Lab::new("etcd3")?;
    let sw = lab.switch("sw")?;
    let mut hosts = Vec::new();
    for i in 0..3 {
        let h = lab.host(&format!("e{i}"))?;
        lab.attach(&h, &[&format!("192.0.2.{}/24", 11 + i)], &sw)?;
        hosts.push(h);
    }
    let members: Vec<_> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| (h, format!("192.0.2.{}", 11 + i).parse().unwrap()))
        .collect();
    let etcd = EtcdCluster::start(&members)?;

    // Written through one member, served by another.
    etcd.put(0, "/ironmesh/lab/k1", "v1")?;
    assert_eq!(etcd.get(2, "/ironmesh/lab/k1")?.as_deref(), Some("v1"));

    // Kill the leader: the other two elect a new one and keep serving reads and writes.
    let leader = etcd.wait_leader(Duration::from_secs(10))?;
    etcd.members[leader].process.kill();
    let new_leader = etcd.wait_leader(Duration::from_secs(15))?;
    assert_ne!(new_leader, leader);
    let other = (0..3).find(|i| *i != leader && *i != new_leader).unwrap();
    etcd.put(other, "/ironmesh/lab/k2", "v2")?;
    assert_eq!(
        etcd.get(new_leader, "/ironmesh/lab/k1")?.as_deref(),
        Some("v1")
    );
    assert_eq!(
        etcd.get(new_leader, "/ironmesh/lab/k2")?.as_deref(),
        Some("v2")
    );

    // The old leader comes back and catches up.
    etcd.members[leader].process.restart()?;
    etcd.wait_healthy(leader, Duration::from_secs(15))?;
    let caught_up = interop_tests::cmd::wait_for(
        "restarted member to catch up",
        Duration::from_secs(10),
        Duration::from_millis(200),
        |_| Ok(etcd.get(leader, "/ironmesh/lab/k2").ok().flatten()),
    )?;
    assert_eq!(caught_up, "v2");
    Ok(())
}
