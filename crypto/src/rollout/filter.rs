//! The plaintext filter: nftables rules in the node's network namespace that name the pod CIDRs.
//!
//! ```text
//! table inet ironmesh_crypto            (forward hook, priority filter - 10, policy accept)
//!   iifname != "<wg>" ip saddr @remote_pods_v4 ip daddr @local_pods_v4  counter plaintext_in  [drop]
//!   oifname != "<wg>" ip saddr @local_pods_v4  ip daddr @remote_pods_v4 counter plaintext_out [drop]
//!   (the same for IPv6)
//! ```
//!
//! Pod traffic between this node and another node that did not come out of (or is not going
//! into) the WireGuard device is plaintext on the underlay. `strict` drops it in both
//! directions (fail closed: a missing tunnel route cannot leak pod traffic); `opportunistic`
//! installs the same rules without `drop`, as an audit: the counters say whether any pod
//! traffic still moves in clear, i.e. whether it is safe to go strict. The table is replaced
//! in one `nft -f` transaction; its comment carries a digest of the rules, so an unchanged
//! table is left alone (counters keep counting) and a table edited by hand is put back.
//! Applied with the `nft` binary, as kube-proxy's nftables mode does.

use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::process::{Command, Stdio};

use ipnet::IpNet;

pub const TABLE: &str = "ironmesh_crypto";

/// What the filter must do.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FilterSpec {
    /// true: drop plaintext pod traffic (strict); false: count it only (opportunistic).
    pub enforce: bool,
    /// The WireGuard interface: the only way pod traffic may enter or leave.
    pub tunnel_if: String,
    pub local_pods: Vec<IpNet>,
    pub remote_pods: Vec<IpNet>,
}

/// Plaintext pod packets seen since the table was (re)installed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PlaintextCounters {
    /// From other nodes' pods, arriving outside the tunnel.
    pub packets_in: u64,
    /// To other nodes' pods, leaving outside the tunnel.
    pub packets_out: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("plaintext filter: cannot run `nft` ({0}); install nftables")]
    Spawn(std::io::Error),
    #[error("plaintext filter: `nft {args}` failed: {stderr}")]
    Nft { args: String, stderr: String },
    #[error("plaintext filter: unreadable `nft list table` output: {0:?}")]
    Listing(String),
    #[error("plaintext filter: interface name {0:?} is not a valid Linux interface name")]
    BadInterface(String),
}

/// Installs, removes and reads the filter.
pub trait PlaintextFilter: std::fmt::Debug + Send + Sync {
    /// Makes the filter match `spec` (None: no table). Returns true if it had to change.
    fn apply(&self, spec: Option<&FilterSpec>) -> Result<bool, FilterError>;
    /// The counters, or None without a table.
    fn counters(&self) -> Result<Option<PlaintextCounters>, FilterError>;
}

fn set(out: &mut String, name: &str, kind: &str, nets: &[&IpNet]) {
    let _ = write!(
        out,
        "\tset {name} {{ type {kind}; flags interval; auto-merge;"
    );
    if !nets.is_empty() {
        let list: Vec<String> = nets.iter().map(|n| n.trunc().to_string()).collect();
        let _ = write!(out, " elements = {{ {} }};", list.join(", "));
    }
    out.push_str(" }\n");
}

/// The digest the table's comment carries.
pub fn digest(spec: &FilterSpec) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    spec.hash(&mut h);
    format!("{:016x}", h.finish())
}

fn valid_ifname(s: &str) -> bool {
    !s.is_empty()
        && s.len() < 16
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// The `nft -f` script that replaces the table with `spec` (or deletes it) in one transaction.
pub fn script(spec: Option<&FilterSpec>) -> Result<String, FilterError> {
    let mut out = format!("table inet {TABLE}\ndelete table inet {TABLE}\n");
    let Some(spec) = spec else {
        return Ok(out);
    };
    if !valid_ifname(&spec.tunnel_if) {
        return Err(FilterError::BadInterface(spec.tunnel_if.clone()));
    }
    let mode = if spec.enforce {
        "strict"
    } else {
        "opportunistic"
    };
    let _ = writeln!(out, "table inet {TABLE} {{");
    let _ = writeln!(out, "\tcomment \"ironmesh {mode} {}\"", digest(spec));
    out.push_str("\tcounter plaintext_in { }\n\tcounter plaintext_out { }\n");
    for (fam, kind) in [("v4", "ipv4_addr"), ("v6", "ipv6_addr")] {
        let v4 = fam == "v4";
        fn pick(nets: &[IpNet], v4: bool) -> Vec<&IpNet> {
            nets.iter()
                .filter(|n| matches!(n, IpNet::V4(_)) == v4)
                .collect()
        }
        set(
            &mut out,
            &format!("local_pods_{fam}"),
            kind,
            &pick(&spec.local_pods, v4),
        );
        set(
            &mut out,
            &format!("remote_pods_{fam}"),
            kind,
            &pick(&spec.remote_pods, v4),
        );
    }
    out.push_str(
        "\tchain forward {\n\t\ttype filter hook forward priority filter - 10; policy accept;\n",
    );
    let verdict = if spec.enforce { " drop" } else { "" };
    let wg = &spec.tunnel_if;
    for (fam, ip) in [("v4", "ip"), ("v6", "ip6")] {
        let _ = writeln!(
            out,
            "\t\tiifname != \"{wg}\" {ip} saddr @remote_pods_{fam} {ip} daddr @local_pods_{fam} counter name \"plaintext_in\"{verdict}"
        );
        let _ = writeln!(
            out,
            "\t\toifname != \"{wg}\" {ip} saddr @local_pods_{fam} {ip} daddr @remote_pods_{fam} counter name \"plaintext_out\"{verdict}"
        );
    }
    out.push_str("\t}\n}\n");
    Ok(out)
}

/// What `nft list table` says of our table.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Listed {
    pub comment: Option<String>,
    pub counters: PlaintextCounters,
    /// Rules that count plaintext (4 when intact).
    pub rules: usize,
}

/// Reads `nft list table inet ironmesh_crypto` text output. (The JSON output of nftables
/// 1.0.6 leaves out the table comment, which carries the digest.)
pub fn parse_listing(text: &str) -> Result<Listed, FilterError> {
    if !text.contains(&format!("table inet {TABLE} {{")) {
        return Err(FilterError::Listing(text.chars().take(200).collect()));
    }
    let mut out = Listed::default();
    let mut counter: Option<&str> = None;
    for line in text.lines().map(str::trim) {
        if let Some(c) = line.strip_prefix("comment \"") {
            out.comment = Some(c.trim_end_matches('"').to_string());
        } else if let Some(name) = line.strip_prefix("counter ") {
            counter = name.strip_suffix(" {");
        } else if let (Some(name), Some(rest)) = (counter, line.strip_prefix("packets ")) {
            let n = rest.split_whitespace().next().and_then(|n| n.parse().ok());
            let n = n.ok_or_else(|| FilterError::Listing(line.into()))?;
            match name {
                "plaintext_in" => out.counters.packets_in = n,
                "plaintext_out" => out.counters.packets_out = n,
                _ => {}
            }
            counter = None;
        } else if line.contains("counter name \"plaintext_") {
            out.rules += 1;
        }
    }
    Ok(out)
}

/// [`PlaintextFilter`] through the `nft` binary, in the calling thread's network namespace.
#[derive(Debug, Clone, Default)]
pub struct NftFilter;

fn nft(args: &[&str], stdin: Option<&str>) -> Result<Option<String>, FilterError> {
    let mut child = Command::new("nft")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(FilterError::Spawn)?;
    if let (Some(text), Some(mut w)) = (stdin, child.stdin.take()) {
        w.write_all(text.as_bytes()).map_err(FilterError::Spawn)?;
    }
    let out = child.wait_with_output().map_err(FilterError::Spawn)?;
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if !out.status.success() {
        // A missing table is an answer, not a failure.
        if stderr.contains("No such file or directory") && stdin.is_none() {
            return Ok(None);
        }
        return Err(FilterError::Nft {
            args: args.join(" "),
            stderr,
        });
    }
    Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()))
}

impl NftFilter {
    fn listed(&self) -> Result<Option<Listed>, FilterError> {
        match nft(&["list", "table", "inet", TABLE], None)? {
            Some(text) => parse_listing(&text).map(Some),
            None => Ok(None),
        }
    }
}

impl PlaintextFilter for NftFilter {
    fn apply(&self, spec: Option<&FilterSpec>) -> Result<bool, FilterError> {
        let listed = self.listed()?;
        let in_place = match (spec, &listed) {
            (None, None) => true,
            (Some(s), Some(l)) => {
                l.comment
                    .as_deref()
                    .is_some_and(|c| c.ends_with(&digest(s)))
                    && l.rules == 4
            }
            _ => false,
        };
        if in_place {
            return Ok(false);
        }
        nft(&["-f", "-"], Some(&script(spec)?))?;
        Ok(true)
    }

    fn counters(&self) -> Result<Option<PlaintextCounters>, FilterError> {
        Ok(self.listed()?.map(|l| l.counters))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(enforce: bool) -> FilterSpec {
        FilterSpec {
            enforce,
            tunnel_if: "wg0".into(),
            local_pods: vec![
                "10.244.1.0/24".parse().unwrap(),
                "fd00:1::/64".parse().unwrap(),
            ],
            remote_pods: vec![
                "10.244.2.0/24".parse().unwrap(),
                "10.244.3.7/24".parse().unwrap(),
            ],
        }
    }

    #[test]
    fn strict_script_drops_both_directions_by_pod_sets() {
        let s = script(Some(&spec(true))).unwrap();
        assert!(s.starts_with("table inet ironmesh_crypto\ndelete table inet ironmesh_crypto\n"));
        assert!(s.contains("set remote_pods_v4 { type ipv4_addr; flags interval; auto-merge; elements = { 10.244.2.0/24, 10.244.3.0/24 }; }"), "{s}");
        assert!(
            s.contains("set remote_pods_v6 { type ipv6_addr; flags interval; auto-merge; }"),
            "{s}"
        );
        assert!(s.contains("set local_pods_v6 { type ipv6_addr; flags interval; auto-merge; elements = { fd00:1::/64 }; }"));
        assert!(s.contains("iifname != \"wg0\" ip saddr @remote_pods_v4 ip daddr @local_pods_v4 counter name \"plaintext_in\" drop\n"));
        assert!(s.contains("oifname != \"wg0\" ip6 saddr @local_pods_v6 ip6 daddr @remote_pods_v6 counter name \"plaintext_out\" drop\n"));
        assert!(s.contains(&format!(
            "comment \"ironmesh strict {}\"",
            digest(&spec(true))
        )));
    }

    #[test]
    fn opportunistic_counts_without_dropping_and_off_deletes() {
        let s = script(Some(&spec(false))).unwrap();
        assert_eq!(s.matches("counter name").count(), 4);
        assert!(!s.contains("drop"), "{s}");
        assert_ne!(digest(&spec(false)), digest(&spec(true)));
        assert_eq!(
            script(None).unwrap(),
            "table inet ironmesh_crypto\ndelete table inet ironmesh_crypto\n"
        );
    }

    #[test]
    fn hostile_interface_name_is_refused() {
        let mut s = spec(true);
        s.tunnel_if = "wg0\" accept; #".into();
        let e = script(Some(&s)).unwrap_err().to_string();
        assert!(e.contains("not a valid Linux interface name"), "{e}");
    }

    /// `nft list table inet ironmesh_crypto` of nftables 1.0.6 (sets trimmed).
    #[test]
    fn parses_nft_listing() {
        let text = "table inet ironmesh_crypto {
	comment \"ironmesh strict 00ff\"
	counter plaintext_in {
		packets 3 bytes 252
	}

	counter plaintext_out {
		packets 0 bytes 0
	}

	set local_pods_v4 {
		type ipv4_addr
		flags interval
		auto-merge
		elements = { 10.244.1.0/24 }
	}

	chain forward {
		type filter hook forward priority filter - 10; policy accept;
		iifname != \"wg0\" ip saddr @remote_pods_v4 ip daddr @local_pods_v4 counter name \"plaintext_in\" drop
	}
}
";
        let l = parse_listing(text).unwrap();
        assert_eq!(l.comment.as_deref(), Some("ironmesh strict 00ff"));
        assert_eq!(
            l.counters,
            PlaintextCounters {
                packets_in: 3,
                packets_out: 0
            }
        );
        assert_eq!(l.rules, 1);
        assert!(parse_listing("table ip other {\n}\n").is_err());
        let bad = text.replace("packets 3", "packets x");
        assert!(
            parse_listing(&bad)
                .unwrap_err()
                .to_string()
                .contains("packets x")
        );
    }
}
