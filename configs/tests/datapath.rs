//! `[datapath]` load/uplinks/vxlan_device/policy_enforcement and `mesh.cni_endpoints_dir`.

use ironmesh_configs::{Config, ConfigError, DatapathMode, PolicyEnforcement};

const NODE: &str = "[node]\nname = \"n1\"\ncluster = \"c1\"\n";
const MESH: &str = "[mesh]\netcd_endpoints = [\"http://127.0.0.1:2379\"]\ncluster_id = 1\n";

fn errors(toml: &str) -> Vec<String> {
    match Config::from_toml(toml) {
        Err(ConfigError::Invalid(list)) => list.iter().map(ToString::to_string).collect(),
        Err(e) => panic!("expected validation errors, got: {e}"),
        Ok(c) => panic!("expected validation errors, config was accepted: {c:?}"),
    }
}

fn assert_error(toml: &str, expected: &str) {
    let errs = errors(&format!("{NODE}{toml}"));
    assert!(
        errs.iter().any(|e| e == expected),
        "expected {expected:?} in {errs:#?}"
    );
}

#[test]
fn defaults_do_not_load() {
    let c = Config::from_toml(&format!("{NODE}{MESH}")).unwrap();
    assert!(!c.datapath.load);
    assert!(c.datapath.uplinks.is_empty());
    assert_eq!(c.datapath.policy_enforcement, PolicyEnforcement::Default);
    assert_eq!(
        c.mesh.unwrap().cni_endpoints_dir,
        std::path::Path::new(ironmesh_configs::DEFAULT_CNI_ENDPOINTS_DIR)
    );
}

#[test]
fn load_with_uplinks_and_vxlan() {
    let c = Config::from_toml(&format!(
        "{NODE}{MESH}cni_endpoints_dir = \"/var/lib/cni/mesh/endpoints\"\n\
         [datapath]\nmode = \"vxlan\"\nload = true\nuplinks = [\"eth0\", \"eth1\"]\n\
         vxlan_device = \"vx0\"\npolicy_enforcement = \"always\"\n"
    ))
    .unwrap();
    let d = c.datapath;
    assert!(d.load);
    assert_eq!(d.uplinks, ["eth0", "eth1"]);
    assert_eq!(d.vxlan_device, "vx0");
    assert_eq!(d.mode, DatapathMode::Vxlan { port: 8472 });
    assert_eq!(d.policy_enforcement, PolicyEnforcement::Always);
    assert_eq!(
        c.mesh.unwrap().cni_endpoints_dir,
        std::path::Path::new("/var/lib/cni/mesh/endpoints")
    );
}

#[test]
fn errors_name_the_field_and_the_fix() {
    assert_error(
        "[datapath]\nuplinks = [\"eth0\"]\n",
        "datapath.uplinks: is set but meshd does not load the datapath; set datapath.load = true or remove uplinks",
    );
    assert_error(
        "[datapath]\nload = true\nuplinks = [\"eth0\", \"eth0\"]\n",
        "datapath.uplinks[1]: \"eth0\" is listed twice; keep one",
    );
    assert_error(
        "[datapath]\nload = true\nuplinks = [\"a/b\"]\n",
        "datapath.uplinks[0]: \"a/b\" is not an interface name; use 1 to 15 letters, digits, '-', '_' or '.'",
    );
    assert_error(
        "[datapath]\nload = true\nvxlan_device = \"vx0\"\n",
        "datapath.vxlan_device: is set but mode is \"native\"; remove it or set mode = \"vxlan\"",
    );
    assert_error(
        "[datapath]\npolicy_enforcement = \"strict\"\n",
        "datapath.policy_enforcement: \"strict\" is not a mode; use \"default\" (endpoints selected by a policy), \"always\" (every endpoint) or \"never\"",
    );
    assert_error(
        &format!("{MESH}cni_endpoints_dir = \"endpoints\"\n"),
        "mesh.cni_endpoints_dir: \"endpoints\" is not an absolute path; write it starting with '/'",
    );
}

#[test]
fn flows_need_the_datapath_loaded_and_a_bounded_ring() {
    let c = Config::from_toml(&format!("{NODE}{MESH}")).unwrap();
    assert_eq!(c.datapath.flows, 0, "off by default");
    let c = Config::from_toml(&format!(
        "{NODE}{MESH}[datapath]\nload = true\nflows = 4096\n"
    ))
    .unwrap();
    assert_eq!(c.datapath.flows, 4096);
    assert_error(
        "[datapath]\nflows = 10\n",
        "datapath.flows: is set but meshd does not load the datapath (it reads the events of \
         the datapath it owns); set datapath.load = true or remove it",
    );
    assert_error(
        "[datapath]\nload = true\nflows = 2000000\n",
        "datapath.flows: 2000000 is out of range; use 0..=1048576 (a number of flow records)",
    );
}

#[test]
fn observe_serves_flows_only_where_there_are_some_and_relays_need_the_mesh() {
    let c = Config::from_toml(&format!("{NODE}{MESH}")).unwrap();
    assert_eq!(c.observe, ironmesh_configs::Observe::default());
    assert!(!c.observe.serve && !c.observe.relay);
    let c = Config::from_toml(&format!(
        "{NODE}{MESH}node_ipv4 = \"192.0.2.2\"\n[datapath]\nload = true\nflows = 100\n\
         [observe]\nserve = true\nport = 4300\nrelay = true\n"
    ))
    .unwrap();
    assert_eq!(
        c.observe,
        ironmesh_configs::Observe {
            serve: true,
            port: 4300,
            relay: true,
            ui: None,
        }
    );
    assert_error(
        &format!("{MESH}node_ipv4 = \"192.0.2.2\"\n[observe]\nserve = true\n"),
        "observe.serve: there are no flow records to serve; set datapath.flows (with datapath.load = true)",
    );
    assert_error(
        "[datapath]\nload = true\nflows = 100\n[observe]\nserve = true\n",
        "observe.serve: needs [mesh] (relays reach this node at its node record's address)",
    );
    assert_error(
        "[observe]\nrelay = true\n",
        "observe.relay: needs [mesh] (the relay finds the nodes in the mesh's node records)",
    );
    assert_error(
        &format!("{MESH}[observe]\nui = \"127.0.0.1:4245\"\n"),
        "observe.ui: the page shows the relay's flows; set observe.relay = true or remove it",
    );
    assert_error(
        &format!("{MESH}[observe]\nrelay = true\nui = \"localhost\"\n"),
        "observe.ui: \"localhost\" is not an address; use IP:PORT, e.g. \"127.0.0.1:4245\"",
    );
    assert_error(
        &format!("{MESH}[observe]\nport = 0\n"),
        "observe.port: 0 is out of range; use 1..=65535 (a TCP port)",
    );
}
