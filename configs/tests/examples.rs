//! Every file in configs/examples/ must load and validate.

use std::path::Path;

use ironmesh_configs::{Backend, Config, DatapathMode, EncryptionMode, PeerAsn, PeerTarget};

fn examples() -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_loads() {
    let files = examples();
    assert!(
        files.len() >= 3,
        "expected at least 3 examples, found {files:?}"
    );
    for f in files {
        if let Err(e) = Config::from_file(&f) {
            panic!("{}: {e}", f.display());
        }
    }
}

fn load(name: &str) -> Config {
    Config::from_file(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(name),
    )
    .unwrap()
}

#[test]
fn minimal_defaults() {
    let c = load("minimal.toml");
    assert_eq!(c.node.state_dir, Path::new("/var/lib/ironmesh"));
    let bgp = c.bgp.unwrap();
    assert_eq!(bgp.listen.unwrap().to_string(), "[::]:179");
    let p = &bgp.peers[0];
    assert_eq!((p.hold_time, p.keepalive, p.port), (90, 30, 179));
    assert!(p.ebgp_requires_policy);
    assert_eq!(c.encryption.mode, EncryptionMode::Off);
    assert!(c.mesh.is_none());
    assert_eq!(c.datapath.mode, DatapathMode::Native);
}

#[test]
fn dual_homed_details() {
    let c = load("node-dual-homed.toml");
    let bgp = c.bgp.as_ref().unwrap();
    assert_eq!(bgp.router_id.to_string(), "10.10.1.7");
    assert!(bgp.listen.is_none());
    assert_eq!(
        bgp.peers[0].md5_password.as_ref().unwrap().expose(),
        "change-me-plane-a"
    );
    assert_eq!(bgp.peers[1].keepalive, 3);
    assert_eq!(bgp.peers[2].peer_asn, PeerAsn::Any);
    assert_eq!(bgp.adverts[1].local_pref, Some(200));
    assert_eq!(
        bgp.peers[0].export_policy,
        vec!["originated-only", "plane-a"]
    );
    let names: Vec<&str> = bgp.policies.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, vec!["from-fabric", "plane-a"]);
    assert_eq!(bgp.policies[0].rules[1].prefixes.len(), 4);
    assert_eq!(
        bgp.bmp_collectors,
        vec!["10.10.0.50:11019".parse::<std::net::SocketAddr>().unwrap()]
    );
    assert_eq!(
        c.encryption.backend,
        Backend::WireGuard {
            listen_port: 51871,
            persistent_keepalive: 25,
            rotate_every: Some(std::time::Duration::from_secs(86_400)),
        }
    );
    assert_eq!(c.mesh.as_ref().unwrap().etcd_endpoints.len(), 3);
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());
    // The password never shows in Debug output.
    assert!(!format!("{c:?}").contains("change-me"));
}

#[test]
fn two_clusters_details() {
    let c = load("mesh-two-clusters.toml");
    let mesh = c.mesh.unwrap();
    assert_eq!(mesh.identity.cluster_bits(), 9);
    assert_eq!(mesh.remote_clusters[0].name.as_str(), "green");
    let green = &mesh.remote_clusters[0];
    assert_eq!(
        (
            green.pod_cidrs[0].to_string(),
            green.node_cidrs[0].to_string(),
            green.service_cidrs[0].to_string()
        ),
        (
            "10.2.0.0/16".into(),
            "172.16.2.0/24".into(),
            "10.96.0.0/16".into()
        )
    );
    assert!(
        mesh.remote_clusters[0]
            .tls
            .as_ref()
            .unwrap()
            .client
            .is_some()
    );
    let auth = mesh.remote_clusters[0].auth.as_ref().unwrap();
    assert_eq!(auth.user, "blue-reader");
    let peer = &c.bgp.unwrap().peers[0];
    assert_eq!(peer.target, PeerTarget::Interface("eth1".into()));
    assert_eq!(peer.peer_asn, ironmesh_configs::PeerAsn::Any);
    assert_eq!(c.datapath.mode, DatapathMode::Vxlan { port: 8472 });
    assert!(c.datapath.load);
    assert_eq!(c.datapath.uplinks, ["eth0"]);
}
