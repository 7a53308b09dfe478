//! Two in-process speakers on loopback, shared by the integration tests: A (AS 65001,
//! listening on a kernel-chosen port, passive, announcing 10.244.1.0/24) and B (AS 65002,
//! connecting from 127.0.0.2).

// Each test binary uses part of this.
#![allow(dead_code)]

pub mod scripted;

use std::time::{Duration, Instant};

use ironmesh_bgpd::speaker::{Speaker, SpeakerConfig};

pub fn cfg(toml: &str) -> SpeakerConfig {
    let c = configs::Config::from_toml(toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
    SpeakerConfig::from_config(&c).unwrap()
}

/// Polls `f` every 50 ms for up to 15 s.
pub async fn wait(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(15) {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A, with `peer_extra` TOML lines in its peer `b`.
pub async fn start_a(peer_extra: &str) -> Speaker {
    let mut ca = cfg(&format!(
        r#"
[node]
name = "a"
cluster = "lab"
[bgp]
local_asn = 65001
router_id = "192.0.2.1"
[[bgp.peers]]
name = "b"
address = "127.0.0.2"
peer_asn = 65002
passive = true
hold_time = 9
import_policy = "accept-all"
export_policy = "originated-only"
{peer_extra}
[[bgp.adverts]]
prefix = "10.244.1.0/24"
communities = ["65001:100"]
"#
    ));
    // In the config file port 0 disables listening; tests let the kernel pick one.
    ca.listen = Some("127.0.0.1:0".parse().unwrap());
    Speaker::start(ca).await.unwrap()
}

/// B peering with A's listening `port`; `global` goes into `[bgp]`, `peer_extra` into its
/// peer `a`, `tail` after it (adverts).
pub async fn start_b(port: u16, global: &str, peer_extra: &str, tail: &str) -> Speaker {
    Speaker::start(cfg(&format!(
        r#"
[node]
name = "b"
cluster = "lab"
[bgp]
local_asn = 65002
router_id = "192.0.2.2"
listen_port = 0
{global}
[[bgp.peers]]
name = "a"
address = "127.0.0.1"
port = {port}
local_address = "127.0.0.2"
peer_asn = 65001
hold_time = 9
import_policy = "accept-all"
export_policy = "originated-only"
{peer_extra}
{tail}
"#
    )))
    .await
    .unwrap()
}
