//! Every example config with a [bgp] section is one bgpd accepts, so the examples can't rot.

use ironmesh_bgpd::speaker::SpeakerConfig;

#[test]
fn every_example_with_bgp_is_a_valid_speaker_config() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let cfg =
            configs::Config::from_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if cfg.bgp.is_none() {
            continue;
        }
        let sc =
            SpeakerConfig::from_config(&cfg).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(!sc.peers.is_empty(), "{}", path.display());
        checked += 1;
    }
    assert!(
        checked >= 2,
        "only {checked} example(s) with [bgp] found in {}",
        dir.display()
    );
}

#[test]
fn unknown_policy_names_are_refused_with_the_fix() {
    let toml = r#"
[node]
name = "n"
cluster = "c"
[bgp]
local_asn = 65001
router_id = "192.0.2.1"
[[bgp.peers]]
name = "tor"
address = "192.0.2.2"
peer_asn = 65000
import_policy = "from-fabric"
export_policy = "originated-only"
"#;
    // Refused by the config itself, before bgpd sees it, naming what exists.
    let e = configs::Config::from_toml(toml).unwrap_err().to_string();
    assert_eq!(
        e,
        "bgp.peers[0].import_policy: policy \"from-fabric\" is not defined; define it in [[bgp.policies]] or use one of: accept-all, reject-all, originated-only"
    );
}
