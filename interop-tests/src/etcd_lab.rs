//! The lab of the etcd-backed meshd library tests: etcd members on one switch (192.0.2.11,
//! .12, ...) and a client host (192.0.2.20) whose namespace the test's clients run in.

use std::net::IpAddr;
use std::time::Duration;

use ironmesh_meshd::kvstore::{KvConfig, TlsFiles};

use crate::error::Result;
use crate::etcd::EtcdCluster;
use crate::lab::{Host, Lab, Link};

#[derive(Debug)]
pub struct EtcdLab {
    // Field order: the cluster is dropped before the lab.
    pub etcd: EtcdCluster,
    pub client: Host,
    /// The client's link to the switch (cut it to lose etcd).
    pub client_link: Link,
    /// Kept for its teardown on drop (namespaces, processes, logs on failure).
    _lab: Lab,
}

impl EtcdLab {
    /// `members` etcd members (192.0.2.11 up) and the client host (192.0.2.20), all healthy.
    pub fn start(name: &str, members: usize) -> Result<EtcdLab> {
        let lab = Lab::new(name)?;
        let sw = lab.switch("sw")?;
        let mut hosts = Vec::new();
        for i in 0..members {
            let h = lab.host(&format!("e{i}"))?;
            lab.attach(&h, &[&format!("192.0.2.{}/24", 11 + i)], &sw)?;
            hosts.push(h);
        }
        let client = lab.host("c")?;
        let client_link = lab.attach(&client, &["192.0.2.20/24"], &sw)?;
        let ms: Vec<(&Host, IpAddr)> = hosts
            .iter()
            .enumerate()
            .map(|(i, h)| (h, format!("192.0.2.{}", 11 + i).parse().unwrap()))
            .collect();
        let etcd = EtcdCluster::start(&ms)?;
        Ok(EtcdLab {
            etcd,
            client,
            client_link,
            _lab: lab,
        })
    }
}

/// A client config for every member of `etcd` with these timeouts (on a TLS etcd, with the
/// lab's own client certificate: etcd's root user once auth is on).
pub fn kv_config(etcd: &EtcdCluster, connect: Duration, op: Duration) -> KvConfig {
    let mut cfg = KvConfig::new(etcd.members.iter().map(|m| m.client_url()));
    cfg.connect_timeout = connect;
    cfg.op_timeout = op;
    cfg.tls = etcd.tls.as_ref().map(|t| TlsFiles {
        ca: t.ca.clone(),
        client_cert: Some((t.client.cert.clone(), t.client.key.clone())),
        server_name: None,
    });
    cfg
}
