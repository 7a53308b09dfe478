//! `[[bgp.policies]]`: definitions parsed into rules, and every mistake named with its path.

use ironmesh_configs::{Config, ConfigError, PolicyAction, PrefixMatch};

const BASE: &str = "[node]\nname = \"n1\"\ncluster = \"c1\"\n\
    [bgp]\nlocal_asn = 65001\nrouter_id = \"192.0.2.1\"\n";

fn with(peer_policy: &str, policies: &str) -> String {
    format!(
        "{BASE}[[bgp.peers]]\nname = \"tor\"\naddress = \"192.0.2.2\"\npeer_asn = 65000\n\
         {peer_policy}\n{policies}"
    )
}

fn errors(toml: &str) -> Vec<String> {
    match Config::from_toml(toml) {
        Err(ConfigError::Invalid(list)) => list.iter().map(ToString::to_string).collect(),
        Err(e) => panic!("expected validation errors, got: {e}"),
        Ok(_) => panic!("config was accepted:\n{toml}"),
    }
}

fn assert_error(toml: &str, expected: &str) {
    let errs = errors(toml);
    assert!(
        errs.iter().any(|e| e == expected),
        "expected {expected:?} in {errs:#?}"
    );
}

const FROM_TOR: &str = r#"
[[bgp.policies]]
name = "from-tor"

[[bgp.policies.rules]]
match_communities = ["65000:666"]
action = "reject"

[[bgp.policies.rules]]
match_prefixes = ["10.0.0.0/8 le 24", "2001:db8::/32 ge 48 le 64"]
set_local_pref = 200
add_communities = ["65001:1"]
action = "accept"

[[bgp.policies]]
name = "tag"
default = "accept"

[[bgp.policies.rules]]
match_originated = true
prepend = 2
add_large_communities = ["65001:1:2"]
action = "continue"
"#;

#[test]
fn definitions_and_chains_parse() {
    let c = Config::from_toml(&with(
        "import_policy = \"from-tor\"\nexport_policy = [\"originated-only\", \"tag\"]",
        FROM_TOR,
    ))
    .unwrap();
    let bgp = c.bgp.unwrap();
    assert_eq!(bgp.peers[0].import_policy, vec!["from-tor"]);
    assert_eq!(bgp.peers[0].export_policy, vec!["originated-only", "tag"]);
    assert_eq!(bgp.policies.len(), 2);
    let from_tor = &bgp.policies[0];
    assert_eq!(from_tor.default, PolicyAction::Reject, "reject unless told");
    assert_eq!(from_tor.rules[0].action, Some(PolicyAction::Reject));
    assert_eq!(
        from_tor.rules[1].prefixes,
        vec![
            PrefixMatch {
                prefix: "10.0.0.0/8".parse().unwrap(),
                ge: None,
                le: Some(24)
            },
            PrefixMatch {
                prefix: "2001:db8::/32".parse().unwrap(),
                ge: Some(48),
                le: Some(64)
            },
        ]
    );
    assert_eq!(from_tor.rules[1].set_local_pref, Some(200));
    let tag = &bgp.policies[1];
    assert_eq!(tag.default, PolicyAction::Accept);
    assert_eq!(tag.rules[0].prepend, Some(2));
    assert_eq!(tag.rules[0].originated, Some(true));
}

#[test]
fn undefined_policy_lists_the_known_ones() {
    assert_error(
        &with("import_policy = \"from-to\"", FROM_TOR),
        "bgp.peers[0].import_policy: policy \"from-to\" is not defined; define it in [[bgp.policies]] \
         or use one of: from-tor, tag, accept-all, reject-all, originated-only",
    );
    assert_error(
        &with("export_policy = [\"tag\", \"nope\"]", FROM_TOR),
        "bgp.peers[0].export_policy[1]: policy \"nope\" is not defined; define it in [[bgp.policies]] \
         or use one of: from-tor, tag, accept-all, reject-all, originated-only",
    );
}

#[test]
fn bad_prefix_entries_are_named() {
    let rule = |entry: &str| {
        with(
            "",
            &format!(
                "[[bgp.policies]]\nname = \"p\"\n[[bgp.policies.rules]]\n\
                 match_prefixes = [\"10.0.0.0/8\", \"{entry}\"]\naction = \"accept\"\n"
            ),
        )
    };
    let at = "bgp.policies[0].rules[0].match_prefixes[1]";
    assert_error(
        &rule("10.1.0.0/8"),
        &format!("{at}: 10.1.0.0/8 has host bits set; write the network address 10.0.0.0/8"),
    );
    assert_error(
        &rule("10.0.0.0/8 le 33"),
        &format!("{at}: le 33 is outside 8..=32 (from the prefix length to the family's maximum)"),
    );
    assert_error(
        &rule("10.0.0.0/8 ge 24 le 16"),
        &format!("{at}: ge 24 is greater than le 16; no route could match"),
    );
    let syntax = |e: &str| {
        format!(
            "{at}: {e:?} is not a prefix-list entry; write \"10.0.0.0/8\", \"10.0.0.0/8 le 24\", \
             \"10.0.0.0/8 ge 16\" or \"10.0.0.0/8 ge 16 le 24\""
        )
    };
    for bad in [
        "10.0.0.0/8 le",
        "10.0.0.0/8 upto 24",
        "10.0.0.0/8 le 24 ge 16",
        "ten/8",
    ] {
        assert_error(&rule(bad), &syntax(bad));
    }
}

#[test]
fn other_mistakes_are_named() {
    let one = |rule: &str| {
        with(
            "",
            &format!("[[bgp.policies]]\nname = \"p\"\n[[bgp.policies.rules]]\n{rule}\n"),
        )
    };
    let at = "bgp.policies[0].rules[0]";
    assert_error(
        &one("set_med = 1"),
        &format!(
            "{at}.action: missing; every rule ends with action = \"accept\", \"reject\" or \"continue\""
        ),
    );
    assert_error(
        &one("action = \"permit\""),
        &format!(
            "{at}.action: \"permit\" is not an action; use \"accept\", \"reject\" or \"continue\""
        ),
    );
    assert_error(
        &one("prepend = 40\naction = \"accept\""),
        &format!("{at}.prepend: 40 is out of range; use 1..=16 (a prepend count (1..=16))"),
    );
    assert_error(
        &one("match_communities = [\"65000\"]\naction = \"accept\""),
        &format!(
            "{at}.match_communities[0]: \"65000\" is not a community; write ASN:VALUE with each part in 0..=65535 (e.g. \"65000:100\") or one of graceful-shutdown, accept-own, llgr-stale, no-llgr, blackhole, no-export, no-advertise, no-export-subconfed (local-as), no-peer"
        ),
    );
    assert_error(
        &one("match_family = \"ipv4\"\naction = \"accept\""),
        &format!(
            "{at}.match_family: \"ipv4\" is not a family; use \"ipv4-unicast\" or \"ipv6-unicast\""
        ),
    );
    let dup = with(
        "",
        "[[bgp.policies]]\nname = \"p\"\n[[bgp.policies]]\nname = \"p\"\n",
    );
    assert_error(
        &dup,
        "bgp.policies[1].name: \"p\" is already defined by bgp.policies[0]; policy names must be unique",
    );
    assert_error(
        &with("", "[[bgp.policies]]\nname = \"accept-all\"\n"),
        "bgp.policies[0].name: \"accept-all\" is built in; choose another name",
    );
    assert_error(
        &with(
            "",
            "[[bgp.policies]]\nname = \"p\"\ndefault = \"continue\"\n",
        ),
        "bgp.policies[0].default: \"continue\" is not a default; use \"accept\" or \"reject\"",
    );
    assert_error(
        &with("import_policy = []", ""),
        "bgp.peers[0].import_policy: is an empty list; name at least one policy or remove the field",
    );
}

#[test]
fn bmp_collectors_are_checked() {
    let bmp = |list: &str| with("", &format!("[bgp.bmp]\ncollectors = {list}\n"));
    let c = Config::from_toml(&bmp("[\"192.0.2.9:11019\", \"[2001:db8::9]:11019\"]")).unwrap();
    assert_eq!(c.bgp.unwrap().bmp_collectors.len(), 2);
    assert_error(
        &bmp("[]"),
        "bgp.bmp.collectors: is empty; list at least one \"address:port\" or remove [bgp.bmp]",
    );
    assert_error(
        &bmp("[\"192.0.2.9\"]"),
        "bgp.bmp.collectors[0]: \"192.0.2.9\" is not an address:port; write \"192.0.2.9:11019\" or \"[2001:db8::9]:11019\"",
    );
    assert_error(
        &bmp("[\"192.0.2.9:0\"]"),
        "bgp.bmp.collectors[0]: \"192.0.2.9:0\" has port 0; give the collector's port (often 11019)",
    );
    assert_error(
        &bmp("[\"192.0.2.9:11019\", \"192.0.2.9:11019\"]"),
        "bgp.bmp.collectors[1]: \"192.0.2.9:11019\" is listed twice; list each collector once",
    );
}
