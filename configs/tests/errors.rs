//! Each validation error names the TOML path and the fix.

use ironmesh_configs::{Config, ConfigError};

const NODE: &str = "[node]\nname = \"n1\"\ncluster = \"c1\"\n";

/// A config with a valid node and one BGP peer, plus `extra` appended.
fn bgp(peer_extra: &str, extra: &str) -> String {
    format!(
        "{NODE}[bgp]\nlocal_asn = 65001\nrouter_id = \"192.0.2.1\"\n\
         [[bgp.peers]]\nname = \"p0\"\naddress = \"192.0.2.2\"\npeer_asn = 65000\n{peer_extra}\n{extra}"
    )
}

/// The field errors of an invalid config, as `path: message` strings.
fn errors(toml: &str) -> Vec<String> {
    match Config::from_toml(toml) {
        Err(ConfigError::Invalid(list)) => list.iter().map(ToString::to_string).collect(),
        Err(e) => panic!("expected validation errors, got: {e}"),
        Ok(c) => panic!("expected validation errors, config was accepted: {c:?}"),
    }
}

fn assert_error(toml: &str, expected: &str) {
    let errs = errors(toml);
    assert!(
        errs.iter().any(|e| e == expected),
        "expected {expected:?} in {errs:#?}"
    );
}

#[test]
fn base_is_valid() {
    Config::from_toml(&bgp("", "")).unwrap();
}

#[test]
fn peer_asn_zero() {
    let t = bgp(
        "",
        "[[bgp.peers]]\nname = \"p1\"\naddress = \"192.0.2.3\"\npeer_asn = 0\n",
    );
    assert_error(
        &t,
        "bgp.peers[1].peer_asn: 0 is not a valid ASN; use 1..=4294967295 or \"any\"",
    );
}

#[test]
fn peer_asn_strings() {
    let t = bgp(
        "",
        "[[bgp.peers]]\nname = \"p1\"\naddress = \"192.0.2.3\"\npeer_asn = \"some\"\n",
    );
    assert_error(
        &t,
        "bgp.peers[1].peer_asn: \"some\" is not a valid ASN; use 1..=4294967295 or \"any\"",
    );
    let t = bgp(
        "",
        "[[bgp.peers]]\nname = \"p1\"\naddress = \"192.0.2.3\"\npeer_asn = 4294967296\n",
    );
    assert_error(
        &t,
        "bgp.peers[1].peer_asn: 4294967296 is not a valid ASN; use 1..=4294967295 or \"any\"",
    );
    // asdot is accepted.
    let t = bgp(
        "",
        "[[bgp.peers]]\nname = \"p1\"\naddress = \"192.0.2.3\"\npeer_asn = \"1.10\"\n",
    );
    Config::from_toml(&t).unwrap();
}

#[test]
fn local_asn() {
    let t = format!("{NODE}[bgp]\nlocal_asn = 0\nrouter_id = \"192.0.2.1\"\n");
    assert_error(
        &t,
        "bgp.local_asn: 0 is not a valid ASN; use 1..=4294967295",
    );
    let t = format!("{NODE}[bgp]\nlocal_asn = 23456\nrouter_id = \"192.0.2.1\"\n");
    assert_error(
        &t,
        "bgp.local_asn: 23456 is AS_TRANS (RFC 6793) and cannot be a local ASN; use your real ASN",
    );
}

#[test]
fn hold_time_and_keepalive() {
    assert_error(
        &bgp("hold_time = 2", ""),
        "bgp.peers[0].hold_time: 2 is not allowed; use 0 (no keepalives) or 3..=65535 seconds (RFC 4271 §4.2)",
    );
    assert_error(
        &bgp("hold_time = 90\nkeepalive = 90", ""),
        "bgp.peers[0].keepalive: 90 must be in 1..90 (less than hold_time); the usual choice is hold_time / 3 = 30",
    );
    assert_error(
        &bgp("hold_time = 0\nkeepalive = 10", ""),
        "bgp.peers[0].keepalive: 10 must be 0 when hold_time is 0 (keepalives are off)",
    );
    let c = Config::from_toml(&bgp("hold_time = 0", "")).unwrap();
    assert_eq!(c.bgp.unwrap().peers[0].keepalive, 0);
}

#[test]
fn duplicate_peers() {
    let t = bgp(
        "",
        "[[bgp.peers]]\nname = \"p0\"\naddress = \"192.0.2.2\"\npeer_asn = 65000\n",
    );
    assert_error(
        &t,
        "bgp.peers[1].name: \"p0\" is already used by bgp.peers[0]; peer names must be unique",
    );
    assert_error(
        &t,
        "bgp.peers[1].address: 192.0.2.2 is already the address of bgp.peers[0]; configure each neighbor once",
    );
}

#[test]
fn address_or_interface() {
    let t = format!(
        "{NODE}[bgp]\nlocal_asn = 1\nrouter_id = \"192.0.2.1\"\n[[bgp.peers]]\nname = \"p\"\npeer_asn = 2\n"
    );
    assert_error(
        &t,
        "bgp.peers[0].address: missing; set address = \"<peer IP>\" or interface = \"<ifname>\" for an unnumbered peer",
    );
    assert_error(
        &bgp("interface = \"eth0\"", ""),
        "bgp.peers[0].address: address and interface are both set; keep address for a numbered peer or interface for an unnumbered one",
    );
    let t = bgp(
        "",
        "[[bgp.peers]]\nname = \"p1\"\ninterface = \"a/b\"\npeer_asn = 1\n",
    );
    assert_error(
        &t,
        "bgp.peers[1].interface: \"a/b\" is not a Linux interface name; use 1..=15 characters without '/', ':' or spaces",
    );
    let t = bgp(
        "",
        "[[bgp.peers]]\nname = \"p1\"\naddress = \"192.0.2.300\"\npeer_asn = 1\n",
    );
    assert_error(
        &t,
        "bgp.peers[1].address: \"192.0.2.300\" is not an IP address; write e.g. \"192.0.2.1\" or \"2001:db8::1\"",
    );
}

#[test]
fn router_id_required_without_ipv4() {
    let t = format!(
        "{NODE}[bgp]\nlocal_asn = 1\n[[bgp.peers]]\nname = \"p\"\naddress = \"2001:db8::2\"\npeer_asn = 2\n"
    );
    assert_error(
        &t,
        "bgp.router_id: missing, and no IPv4 address can be derived from bgp.listen_address or bgp.peers[*].local_address; set router_id = \"<an IPv4 address of this node>\"",
    );
    let t = format!("{NODE}[bgp]\nlocal_asn = 1\nlisten_address = \"198.51.100.4\"\n");
    assert_eq!(
        Config::from_toml(&t)
            .unwrap()
            .bgp
            .unwrap()
            .router_id
            .to_string(),
        "198.51.100.4"
    );
    let t = format!("{NODE}[bgp]\nlocal_asn = 1\nrouter_id = \"0.0.0.0\"\n");
    assert_error(
        &t,
        "bgp.router_id: 0.0.0.0 is not a valid router ID; use a non-zero IPv4 address",
    );
}

#[test]
fn peer_options() {
    assert_error(
        &bgp("ttl_security = true\nmultihop_ttl = 2", ""),
        "bgp.peers[0].multihop_ttl: cannot be combined with ttl_security (GTSM expects TTL 255 from a direct neighbor); remove one of them",
    );
    assert_error(
        &bgp("multihop_ttl = 256", ""),
        "bgp.peers[0].multihop_ttl: 256 is out of range; use 1..=255 (hops)",
    );
    assert_error(
        &bgp("port = 0", ""),
        "bgp.peers[0].port: 0 is out of range; use 1..=65535 (a TCP port)",
    );
    assert_error(
        &bgp(&format!("md5_password = \"{}\"", "x".repeat(81)), ""),
        "bgp.peers[0].md5_password: must be 1..=80 bytes long (the kernel's TCP MD5 key limit)",
    );
    assert_error(
        &bgp("local_address = \"2001:db8::1\"", ""),
        "bgp.peers[0].local_address: 2001:db8::1 and address 192.0.2.2 are of different IP families; use a local address of the same family",
    );
    assert_error(
        &bgp("families = [\"ipv4-unicast\", \"l2vpn-evpn\"]", ""),
        "bgp.peers[0].families[1]: \"l2vpn-evpn\" is not a supported family; use \"ipv4-unicast\" or \"ipv6-unicast\"",
    );
    assert_error(
        &bgp("families = []", ""),
        "bgp.peers[0].families: is empty; list at least one of \"ipv4-unicast\", \"ipv6-unicast\"",
    );
    assert_error(
        &bgp("import_policy = \"no spaces\"", ""),
        "bgp.peers[0].import_policy: \"no spaces\" is not a valid policy name; use 1..=64 characters of A-Z, a-z, 0-9, '-' and '_'",
    );
}

#[test]
fn adverts() {
    let t = bgp("", "[[bgp.adverts]]\nprefix = \"10.1.0.1/24\"\n");
    assert_error(
        &t,
        "bgp.adverts[0].prefix: 10.1.0.1/24 has host bits set; use 10.1.0.0/24",
    );
    let t = bgp(
        "",
        "[[bgp.adverts]]\nprefix = \"10.1.0.0/24\"\ncommunities = [\"65000:70000\"]\n",
    );
    assert_error(
        &t,
        "bgp.adverts[0].communities[0]: \"65000:70000\" is not a community; write ASN:VALUE with each part in 0..=65535 (e.g. \"65000:100\") or one of graceful-shutdown, accept-own, llgr-stale, no-llgr, blackhole, no-export, no-advertise, no-export-subconfed (local-as), no-peer",
    );
    let t = bgp(
        "",
        "[[bgp.adverts]]\nprefix = \"10.1.0.0/24\"\nlarge_communities = [\"1:2\"]\n",
    );
    assert_error(
        &t,
        "bgp.adverts[0].large_communities[0]: \"1:2\" is not a large community; write GLOBAL:LOCAL1:LOCAL2 with each part in 0..=4294967295 (e.g. \"65000:1:2\")",
    );
    let t = bgp(
        "",
        "[[bgp.adverts]]\nprefix = \"10.1.0.0/24\"\n[[bgp.adverts]]\nprefix = \"10.1.0.0/24\"\n",
    );
    assert_error(
        &t,
        "bgp.adverts[1].prefix: 10.1.0.0/24 is already advertised by bgp.adverts[0]; merge the two",
    );
    let t = bgp(
        "",
        "[[bgp.adverts]]\nprefix = \"10.1.0.0/24\"\nlocal_pref = -1\n",
    );
    assert_error(
        &t,
        "bgp.adverts[0].local_pref: -1 is out of range; use 0..=4294967295 (LOCAL_PREF is 32 bits)",
    );
}

#[test]
fn node_section() {
    assert_error(
        "[node]\nname = \"N1\"\ncluster = \"c\"\n",
        "node.name: node name \"N1\" has invalid character 'N'; use lowercase a-z, 0-9 and '-' ('.' separates parts)",
    );
    assert_error(
        "[node]\nname = \"n\"\ncluster = \"c\"\nstate_dir = \"var/lib\"\n",
        "node.state_dir: \"var/lib\" is not an absolute path; write it starting with '/'",
    );
}

#[test]
fn encryption_section() {
    assert_error(
        &format!("{NODE}[encryption]\nmode = \"on\"\n"),
        "encryption.mode: \"on\" is not an encryption mode; use \"off\", \"opportunistic\" or \"strict\"",
    );
    assert_error(
        &format!(
            "{NODE}[encryption]\nbackend = \"ipsec\"\n[encryption.wireguard]\nlisten_port = 1\n"
        ),
        "encryption.wireguard: is set but backend is \"ipsec\"; remove the section or set backend = \"wireguard\"",
    );
    assert_error(
        &format!("{NODE}[encryption]\n[encryption.wireguard]\nlisten_port = 0\n"),
        "encryption.wireguard.listen_port: 0 is out of range; use 1..=65535 (a UDP port)",
    );
}

const MESH: &str = "[mesh]\netcd_endpoints = [\"http://127.0.0.1:2379\"]\ncluster_id = 1\n";

#[test]
fn mesh_section() {
    assert_error(
        &format!("{NODE}[mesh]\netcd_endpoints = [\"127.0.0.1:2379\"]\ncluster_id = 1\n"),
        "mesh.etcd_endpoints[0]: \"127.0.0.1:2379\" is not an etcd endpoint; write http://HOST:PORT or https://HOST:PORT (e.g. \"https://10.0.0.5:2379\")",
    );
    assert_error(
        &format!("{NODE}[mesh]\netcd_endpoints = [\"http://e:2379\"]\ncluster_id = 256\n"),
        "mesh.cluster_id: 256 is out of range; use 1..=255 (mesh.identity.cluster_bits = 8; raise it to 9 or 10 for more clusters)",
    );
    Config::from_toml(&format!("{NODE}[mesh]\netcd_endpoints = [\"http://e:2379\"]\ncluster_id = 256\n[mesh.identity]\ncluster_bits = 9\n")).unwrap();
    assert_error(
        &format!("{NODE}{MESH}[mesh.identity]\ncluster_bits = 12\n"),
        "mesh.identity.cluster_bits: identity cluster_bits 12 is not supported; use 8, 9 or 10",
    );
    assert_error(
        &format!("{NODE}{MESH}[mesh.tls]\ncert_file = \"/c.pem\"\n"),
        "mesh.tls.key_file: missing; cert_file needs the matching key_file",
    );
}

/// Whether the config warns that meshd logs in to etcd as nobody.
fn c_warnings_mention_auth(toml: &str) -> bool {
    Config::from_toml(toml)
        .unwrap()
        .warnings()
        .iter()
        .any(|w| w.starts_with("mesh.auth: ") && w.contains("ironctl mesh provision"))
}

#[test]
fn etcd_auth_sections() {
    let c = Config::from_toml(&format!(
        "{NODE}{MESH}[mesh.auth]\nuser = \"c1\"\npassword_file = \"/etc/ironmesh/c1.password\"\n\
         [[mesh.remote_clusters]]\nname = \"r\"\nid = 2\nendpoints = [\"https://r:2379\"]\n\
         [mesh.remote_clusters.auth]\nuser = \"c1-reader\"\npassword_file = \"/etc/ironmesh/r.password\"\n"
    ))
    .unwrap();
    let mesh = c.mesh.unwrap();
    let own = mesh.auth.unwrap();
    assert_eq!((own.user.as_str(), own.field.as_str()), ("c1", "mesh.auth"));
    let r = mesh.remote_clusters[0].auth.clone().unwrap();
    assert_eq!(
        (r.user.as_str(), r.field.as_str()),
        ("c1-reader", "mesh.remote_clusters[0].auth")
    );
    assert_eq!(
        r.password_file,
        std::path::Path::new("/etc/ironmesh/r.password")
    );
    // Read only when used: a missing file names the field.
    let e = r.password().unwrap_err().to_string();
    assert!(
        e.starts_with(
            "mesh.remote_clusters[0].auth.password_file: cannot read /etc/ironmesh/r.password"
        ),
        "{e}"
    );
    assert_error(
        &format!("{NODE}{MESH}[mesh.auth]\nuser = \"c1\"\npassword_file = \"c1.password\"\n"),
        "mesh.auth.password_file: \"c1.password\" is not an absolute path; write it starting with '/'",
    );
    assert_error(
        &format!("{NODE}{MESH}[mesh.auth]\nuser = \"a:b\"\npassword_file = \"/p\"\n"),
        "mesh.auth.user: \"a:b\" is not an etcd user name; use 1 to 128 letters, digits, '-', '_', '.' or '@' (e.g. \"red\", or \"red-reader\" for a remote)",
    );
    assert!(c_warnings_mention_auth(&format!("{NODE}{MESH}")));
    assert!(!c_warnings_mention_auth(&format!(
        "{NODE}{MESH}[mesh.auth]\nuser = \"c1\"\npassword_file = \"/p\"\n"
    )));
    assert!(!c_warnings_mention_auth(&format!(
        "{NODE}{MESH}[mesh.tls]\ncert_file = \"/c.pem\"\nkey_file = \"/k.pem\"\n"
    )));
    // The password itself never goes into the config.
    let e = Config::from_toml(&format!(
        "{NODE}{MESH}[mesh.auth]\nuser = \"c1\"\npassword = \"x\"\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("unknown field `password`"), "{e}");
}

#[test]
fn remote_clusters() {
    let remote = |name: &str, id: u32| {
        format!(
            "[[mesh.remote_clusters]]\nname = \"{name}\"\nid = {id}\nendpoints = [\"https://r:2379\"]\n"
        )
    };
    assert_error(
        &format!("{NODE}{MESH}{}", remote("other", 1)),
        "mesh.remote_clusters[0].id: 1 clashes with this cluster's mesh.cluster_id; every cluster in a mesh needs its own ID",
    );
    assert_error(
        &format!("{NODE}{MESH}{}", remote("c1", 2)),
        "mesh.remote_clusters[0].name: \"c1\" is this node's own cluster (node.cluster); list only other clusters",
    );
    let t = format!("{NODE}{MESH}{}{}", remote("a", 2), remote("a", 2));
    assert_error(
        &t,
        "mesh.remote_clusters[1].name: \"a\" is already listed as mesh.remote_clusters[0]; list each cluster once",
    );
    assert_error(
        &t,
        "mesh.remote_clusters[1].id: 2 is already the ID of mesh.remote_clusters[0]; every cluster in a mesh needs its own ID",
    );
    assert_error(
        &format!("{NODE}{MESH}[[mesh.remote_clusters]]\nname = \"r\"\nid = 2\nendpoints = []\n"),
        "mesh.remote_clusters[0].endpoints: is empty; list at least one etcd endpoint like \"https://10.0.0.5:2379\"",
    );
    let claims = |f: &str, v: &str| {
        format!(
            "{NODE}{MESH}[[mesh.remote_clusters]]\nname = \"r\"\nid = 2\nendpoints = [\"https://r:2379\"]\n{f} = [{v}]\n"
        )
    };
    assert_error(
        &claims("pod_cidrs", "\"10.2.0.0/16\", \"10.3.1.1/16\""),
        "mesh.remote_clusters[0].pod_cidrs[1]: 10.3.1.1/16 has host bits set; write the network, 10.3.0.0/16",
    );
    assert_error(
        &claims("node_cidrs", "\"nodes\""),
        "mesh.remote_clusters[0].node_cidrs[0]: \"nodes\" is not a CIDR; write it like \"198.51.100.0/24\"",
    );
    assert_error(
        &claims("service_cidrs", "\"10.96.0.0\""),
        "mesh.remote_clusters[0].service_cidrs[0]: \"10.96.0.0\" is not a CIDR; write it like \"10.96.0.0/16\"",
    );
}

#[test]
fn datapath_section() {
    assert_error(
        &format!("{NODE}[datapath]\nvxlan_port = 4789\n"),
        "datapath.vxlan_port: is set but mode is \"native\"; remove it or set mode = \"vxlan\"",
    );
    assert_error(
        &format!("{NODE}[datapath]\nmode = \"geneve\"\n"),
        "datapath.mode: \"geneve\" is not a datapath mode; use \"native\" or \"vxlan\"",
    );
    assert_error(
        &format!("{NODE}[datapath]\nbpffs = \"bpf\"\n"),
        "datapath.bpffs: \"bpf\" is not an absolute path; write it starting with '/'",
    );
}

#[test]
fn all_errors_are_reported_at_once() {
    let t = "[node]\nname = \"-\"\ncluster = \"C\"\n[datapath]\nmode = \"x\"\n";
    let errs = errors(t);
    assert_eq!(errs.len(), 3, "{errs:#?}");
    let err = Config::from_toml(t).unwrap_err();
    assert_eq!(err.to_string().lines().count(), 3);
    assert_eq!(err.field_errors()[2].path, "datapath.mode");
}

#[test]
fn unknown_fields_and_types_are_parse_errors() {
    let err = Config::from_toml(&format!("{NODE}colour = \"red\"\n")).unwrap_err();
    assert!(matches!(err, ConfigError::Parse(_)), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("unknown field `colour`") && msg.contains("line 4"),
        "{msg}"
    );
    let err =
        Config::from_toml(&bgp("", "").replace("peer_asn = 65000", "peer_asn = true")).unwrap_err();
    assert!(
        err.to_string()
            .contains("expected an ASN (1..=4294967295) or \"any\""),
        "{err}"
    );
    let err = Config::from_toml("").unwrap_err();
    assert!(err.to_string().contains("missing field `node`"), "{err}");
}

#[test]
fn missing_file_names_the_path() {
    let err = Config::from_file("/nonexistent/ironmesh.toml").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("cannot read config file /nonexistent/ironmesh.toml: "),
        "{err}"
    );
}

#[test]
fn warnings_for_ebgp_without_policy() {
    let c = Config::from_toml(&bgp("", "")).unwrap();
    assert_eq!(
        c.warnings(),
        [
            "bgp.peers[0].import_policy: eBGP peer \"p0\" has none, so no routes will be accepted (RFC 8212); set import_policy or ebgp_requires_policy = false",
            "bgp.peers[0].export_policy: eBGP peer \"p0\" has none, so no routes will be advertised (RFC 8212); set export_policy or ebgp_requires_policy = false",
        ]
    );
    assert!(
        Config::from_toml(&bgp("ebgp_requires_policy = false", ""))
            .unwrap()
            .warnings()
            .is_empty()
    );
    // iBGP needs no policy.
    assert!(
        Config::from_toml(&bgp("", "").replace("peer_asn = 65000", "peer_asn = 65001"))
            .unwrap()
            .warnings()
            .is_empty()
    );
}

#[test]
fn max_prefixes_errors_name_the_field() {
    assert_eq!(
        errors(&bgp("max_prefixes = 0", "")),
        vec![
            "bgp.peers[0].max_prefixes: 0 is out of range; use 1..=9223372036854775807 (a number of prefixes)"
        ]
    );
    assert_eq!(
        errors(&bgp(
            "max_prefixes = 10\nmax_prefixes_action = \"shutdown\"",
            ""
        )),
        vec![
            "bgp.peers[0].max_prefixes_action: \"shutdown\" is not an action; use \"warn\", \"drop\" or \"teardown\""
        ]
    );
    assert_eq!(
        errors(&bgp("max_prefixes_action = \"warn\"", "")),
        vec![
            "bgp.peers[0].max_prefixes: max_prefixes_action/max_prefixes_restart need max_prefixes = N"
        ]
    );
    let c = Config::from_toml(&bgp("max_prefixes = 10", "")).unwrap();
    let m = c.bgp.unwrap().peers[0].max_prefixes.unwrap();
    assert_eq!(
        (m.limit, m.action, m.restart),
        (10, ironmesh_configs::MaxPrefixAction::Teardown, 60)
    );
}

#[test]
fn fib_errors_name_the_field() {
    assert_eq!(
        errors(&bgp("", "[bgp.fib]\nprotocol = 2")),
        vec![
            "bgp.fib.protocol: 2 is out of range; use 5..=255 (an rtnetlink protocol id; 0-4 belong to the kernel)"
        ]
    );
    let c = Config::from_toml(&bgp("", "[bgp.fib]\n")).unwrap();
    let f = c.bgp.unwrap().fib.unwrap();
    assert_eq!((f.table, f.protocol), (254, 201));
}

#[test]
fn pool_errors_name_the_field() {
    let pools = "[[bgp.pools]]\nname = \"public\"\nprefix = \"203.0.113.0/24\"\naggregate = true\n";
    assert_eq!(
        errors(&bgp(
            "",
            &format!("{pools}[[bgp.adverts]]\nprefix = \"198.51.100.1/32\"\npool = \"public\"\n")
        )),
        vec!["bgp.adverts[0].prefix: 198.51.100.1/32 is outside pool \"public\" (203.0.113.0/24)"]
    );
    assert_eq!(
        errors(&bgp(
            "",
            "[[bgp.adverts]]\nprefix = \"203.0.113.1/32\"\npool = \"nope\"\n"
        )),
        vec!["bgp.adverts[0].pool: no pool named \"nope\"; define it in [[bgp.pools]]"]
    );
    let c = Config::from_toml(&bgp(
        "",
        &format!("{pools}[[bgp.adverts]]\nprefix = \"203.0.113.1/32\"\npool = \"public\"\n"),
    ))
    .unwrap();
    let bgp = c.bgp.unwrap();
    assert!(bgp.pools[0].aggregate);
    assert_eq!(bgp.adverts[0].pool.as_deref(), Some("public"));
}

#[test]
fn bfd_defaults_and_timers() {
    let c = Config::from_toml(&bgp("bfd = true", "")).unwrap();
    let b = c.bgp.unwrap().peers[0].bfd.unwrap();
    assert_eq!((b.min_tx_ms, b.min_rx_ms, b.multiplier), (300, 300, 3));
    let c = Config::from_toml(&bgp(
        "bfd = true\nbfd_min_tx_ms = 100\nbfd_min_rx_ms = 200\nbfd_multiplier = 5",
        "",
    ))
    .unwrap();
    let b = c.bgp.unwrap().peers[0].bfd.unwrap();
    assert_eq!((b.min_tx_ms, b.min_rx_ms, b.multiplier), (100, 200, 5));
    assert!(
        Config::from_toml(&bgp("", "")).unwrap().bgp.unwrap().peers[0]
            .bfd
            .is_none()
    );
}

#[test]
fn bfd_errors() {
    assert_error(
        &bgp("bfd_min_tx_ms = 100", ""),
        "bgp.peers[0].bfd_min_tx_ms: needs bfd = true (BFD is off for this peer)",
    );
    assert_error(
        &bgp("bfd = true\nbfd_min_rx_ms = 5", ""),
        "bgp.peers[0].bfd_min_rx_ms: 5 is out of range; use 10..=60000 (milliseconds)",
    );
    assert_error(
        &bgp("bfd = true\nbfd_multiplier = 0", ""),
        "bgp.peers[0].bfd_multiplier: 0 is out of range; use 1..=255 (missed packets before down)",
    );
}

#[test]
fn restart_times_are_range_checked() {
    let c = ironmesh_configs::Config::from_toml(&bgp(
        "graceful_restart_time = 30\nlong_lived_stale_time = 86400",
        "",
    ))
    .unwrap();
    let p = &c.bgp.unwrap().peers[0];
    assert_eq!(
        (p.graceful_restart_time, p.long_lived_stale_time),
        (30, Some(86400))
    );
    let d = ironmesh_configs::Config::from_toml(&bgp("", "")).unwrap();
    let p = &d.bgp.unwrap().peers[0];
    assert_eq!(
        (p.graceful_restart_time, p.long_lived_stale_time),
        (120, None)
    );
    assert_error(
        &bgp("graceful_restart_time = 5000", ""),
        "bgp.peers[0].graceful_restart_time: 5000 is out of range; use 0..=4095 (seconds (12 bits, RFC 4724))",
    );
    assert_error(
        &bgp("long_lived_stale_time = 0", ""),
        "bgp.peers[0].long_lived_stale_time: 0 is out of range; use 1..=16777215 (seconds (24 bits, RFC 9494))",
    );
}

#[test]
fn bfd_min_ttl_is_for_multihop_only() {
    assert_error(
        &bgp("bfd = true\nbfd_min_ttl = 250", ""),
        "bgp.peers[0].bfd_min_ttl: only applies to multihop BFD (set multihop_ttl); single-hop BFD always requires TTL 255",
    );
    let c = ironmesh_configs::Config::from_toml(&bgp(
        "multihop_ttl = 3\nbfd = true\nbfd_min_ttl = 250",
        "",
    ))
    .unwrap();
    assert_eq!(c.bgp.unwrap().peers[0].bfd.unwrap().min_ttl, Some(250));
}

/// The garbage collectors' grace periods: defaults, durations, and refusals naming the field,
/// the floor's reason and the fix.
#[test]
fn mesh_gc_graces() {
    use std::time::Duration;
    let m = Config::from_toml(&format!("{NODE}{MESH}"))
        .unwrap()
        .mesh
        .unwrap();
    assert_eq!(m.identity_gc_grace, Duration::from_secs(300));
    assert_eq!(m.pod_cidr_release_grace, Duration::from_secs(600));
    let m = Config::from_toml(&format!(
        "{NODE}{MESH}identity_gc_grace = \"1h30m\"\npod_cidr_release_grace = \"2d\"\n"
    ))
    .unwrap()
    .mesh
    .unwrap();
    assert_eq!(m.identity_gc_grace, Duration::from_secs(5400));
    assert_eq!(m.pod_cidr_release_grace, Duration::from_secs(2 * 86_400));
    assert_error(
        &format!("{NODE}{MESH}identity_gc_grace = \"10s\"\n"),
        "mesh.identity_gc_grace: \"10s\" is too short: at least 30s (an identity whose only pod restarts must keep its number); write e.g. \"5m\" (the default)",
    );
    assert_error(
        &format!("{NODE}{MESH}pod_cidr_release_grace = \"31d\"\n"),
        "mesh.pod_cidr_release_grace: \"31d\" is too long: at most 30d; write e.g. \"10m\" (the default)",
    );
    assert_error(
        &format!("{NODE}{MESH}pod_cidr_release_grace = \"10\"\n"),
        "mesh.pod_cidr_release_grace: \"10\" has no unit; add one of s, m, h, d (e.g. \"10h\")",
    );
    // Both wrong: both reported, nothing else.
    let e = Config::from_toml(&format!(
        "{NODE}{MESH}identity_gc_grace = \"5x\"\npod_cidr_release_grace = \"30s\"\n"
    ))
    .unwrap_err();
    let paths: Vec<&str> = e.field_errors().iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        ["mesh.identity_gc_grace", "mesh.pod_cidr_release_grace"],
        "{e}"
    );
    // An idle extra block goes back after mesh.pod_cidr_block_idle (10m by default).
    assert_eq!(m.pod_cidr_block_idle, Duration::from_secs(600));
    let m = Config::from_toml(&format!("{NODE}{MESH}pod_cidr_block_idle = \"2s\"\n"))
        .unwrap()
        .mesh
        .unwrap();
    assert_eq!(m.pod_cidr_block_idle, Duration::from_secs(2));
    assert_error(
        &format!("{NODE}{MESH}pod_cidr_block_idle = \"0s\"\n"),
        "mesh.pod_cidr_block_idle: \"0s\" is too short: at least 1s (a block given back at once would be taken again by the next burst of pods); write e.g. \"10m\" (the default)",
    );
}

#[test]
fn mesh_agent_settings() {
    let ok = Config::from_toml(&format!(
        "{NODE}{MESH}node_ipv4 = \"192.0.2.10\"\nlease_ttl = 3\npod_cidr_pools = [{{ cidr = \"10.244.0.0/16\", node_mask = 24 }}, {{ cidr = \"fd00:10::/48\", node_mask = 64 }}]\n"
    ))
    .unwrap();
    let m = ok.mesh.unwrap();
    assert_eq!(m.pod_cidr_pools.len(), 2);
    assert_eq!(m.lease_ttl_secs, 3);
    assert!(!m.deregister_on_stop, "a stop keeps the record by default");
    assert_eq!(m.node_ipv4, Some("192.0.2.10".parse().unwrap()));
    let leave = Config::from_toml(&format!("{NODE}{MESH}deregister_on_stop = true\n")).unwrap();
    assert!(leave.mesh.unwrap().deregister_on_stop);
    assert!(
        Config::from_toml(&format!("{NODE}{MESH}deregister_on_stop = \"yes\"\n"))
            .unwrap_err()
            .to_string()
            .contains("deregister_on_stop"),
        "a non-boolean is refused naming the field"
    );
    assert_error(
        &format!("{NODE}{MESH}pod_cidr_pools = [{{ cidr = \"10.244.0.0/16\", node_mask = 8 }}]\n"),
        "mesh.pod_cidr_pools[0].node_mask: 8 is out of range; use 16..=32 (the size of each node's PodCIDR, at least the pool's /16)",
    );
    assert_error(
        &format!(
            "{NODE}{MESH}pod_cidr_pools = [{{ cidr = \"10.244.0.0/16\", node_mask = 24 }}, {{ cidr = \"10.244.128.0/17\", node_mask = 24 }}]\n"
        ),
        "mesh.pod_cidr_pools[1].cidr: 10.244.128.0/17 overlaps mesh.pod_cidr_pools[0]; pools must be disjoint",
    );
    assert_error(
        &format!("{NODE}{MESH}node_ipv4 = \"fd00::1\"\n"),
        "mesh.node_ipv4: \"fd00::1\" is not an IPv4 address; write it like \"192.0.2.10\"",
    );
    assert_error(
        &format!("{NODE}{MESH}lease_ttl = 1\n"),
        "mesh.lease_ttl: 1 is out of range; use 2..=3600 (seconds; a dead node is noticed after about this long)",
    );
}

#[test]
fn etcd_op_timeout_follows_the_lease_ttl() {
    use std::time::Duration;
    let mesh = |extra: &str| {
        Config::from_toml(&format!("{NODE}{MESH}{extra}"))
            .unwrap()
            .mesh
            .unwrap()
    };
    // Default TTL (10 s): 3 s fits (2.5 s + 2 × 3 s + 0.5 s = 9 s).
    assert_eq!(mesh("").etcd_op_timeout, Duration::from_secs(3));
    // A 4 s TTL: renewal every 1 s, at most (4 - 1 - 0.5) / 2 = 1.25 s per request.
    assert_eq!(
        mesh("lease_ttl = 4\n").etcd_op_timeout,
        Duration::from_millis(1250)
    );
    assert_eq!(
        mesh("lease_ttl = 4\netcd_op_timeout = \"800ms\"\n").etcd_op_timeout,
        Duration::from_millis(800)
    );
    let t = ironmesh_configs::LeaseTiming::for_ttl(Duration::from_secs(2));
    assert_eq!(t.keepalive_interval, Duration::from_millis(500));
    assert_eq!(t.max_op_timeout, Duration::from_millis(500));
    let e = Config::from_toml(&format!(
        "{NODE}{MESH}lease_ttl = 4\netcd_op_timeout = \"2s\"\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("mesh.etcd_op_timeout")
            && e.contains("mesh.lease_ttl = 4")
            && e.contains("at most 1.25s"),
        "{e}"
    );
}

#[test]
fn mesh_bgpd_settings() {
    let m = Config::from_toml(&format!("{NODE}{MESH}"))
        .unwrap()
        .mesh
        .unwrap();
    assert_eq!(m.bgpd_socket, None);
    assert_eq!(
        m.advertise_vips,
        ironmesh_configs::AdvertiseVips::LocalBackends
    );
    let m = Config::from_toml(&format!(
        "{NODE}{MESH}bgpd_socket = \"/run/ironmesh/bgpd.sock\"\nadvertise_vips = \"all\"\n"
    ))
    .unwrap()
    .mesh
    .unwrap();
    assert_eq!(
        m.bgpd_socket.as_deref(),
        Some(std::path::Path::new("/run/ironmesh/bgpd.sock"))
    );
    assert_eq!(m.advertise_vips, ironmesh_configs::AdvertiseVips::All);
    assert_error(
        &format!("{NODE}{MESH}bgpd_socket = \"bgpd.sock\"\n"),
        "mesh.bgpd_socket: \"bgpd.sock\" is not an absolute path; write it starting with '/'",
    );
    assert_eq!(
        m.wireguard_device,
        ironmesh_configs::DEFAULT_WIREGUARD_DEVICE
    );
    assert_error(
        &format!("{NODE}{MESH}wireguard_device = \"a/b\"\n"),
        "mesh.wireguard_device: \"a/b\" is not an interface name; use 1 to 15 letters, digits, '-', '_' or '.'",
    );
    assert_error(
        &format!("{NODE}{MESH}advertise_vips = \"some\"\n"),
        "mesh.advertise_vips: \"some\" is not a choice; use \"local-backends\" (VIPs of services with an active backend on this node) or \"all\"",
    );
}

#[test]
fn a_huge_config_file_is_refused_before_it_is_parsed() {
    let dir = std::env::temp_dir().join(format!("ironmesh-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("huge.toml");
    let mut text = bgp("", "");
    text.push_str(&format!("# {}\n", "x".repeat(2 * 1024 * 1024)));
    std::fs::write(&path, &text).unwrap();
    let e = Config::from_file(&path).unwrap_err();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(matches!(e, ConfigError::TooLarge { .. }), "{e}");
    assert!(e.to_string().contains("more than the 1048576"), "{e}");
}

#[test]
fn an_offending_value_is_quoted_only_in_part() {
    let long = "y".repeat(100_000);
    let errs = errors(&bgp(
        "",
        &format!("[mesh]\netcd_endpoints = [\"{long}\"]\ncluster_id = 1\n"),
    ));
    let e = errs
        .iter()
        .find(|e| e.starts_with("mesh.etcd_endpoints"))
        .unwrap_or_else(|| panic!("{errs:#?}"));
    assert!(e.len() < 1200, "{} bytes", e.len());
    assert!(e.contains("bytes in all"), "{e}");
    // A syntax error on a huge line is bounded too.
    let bad = format!("{NODE}x = \"{long}");
    let e = Config::from_toml(&bad).unwrap_err().to_string();
    assert!(e.len() < 1200, "{} bytes", e.len());
}
