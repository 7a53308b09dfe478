//! GoBGP (gobgpd + the `gobgp` CLI over its gRPC API) in a host.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use serde_json::Value;

use crate::cmd::{require_binary, wait_for};
use crate::error::{LabError, Result, io_err};
use crate::lab::Host;
use crate::process::Process;
use crate::route::{BgpRoute, Origin};

/// gobgpd's gRPC API, on the host's own loopback.
const API_PORT: &str = "50051";

#[derive(Debug, Clone)]
pub struct GobgpNeighbor {
    pub addr: IpAddr,
    pub peer_as: u32,
    pub password: Option<String>,
    pub multihop_ttl: Option<u8>,
    pub families: Vec<&'static str>,
    /// Graceful restart helper (RFC 4724) for every family.
    pub graceful_restart: bool,
    /// The Restart Time it advertises (with `graceful_restart`).
    pub graceful_restart_time: u16,
    /// With `graceful_restart`: list every family in the capability (`mp-graceful-restart`);
    /// `false` sends the capability with no address family.
    pub graceful_restart_families: bool,
}

impl GobgpNeighbor {
    pub fn new(addr: IpAddr, peer_as: u32) -> GobgpNeighbor {
        GobgpNeighbor {
            addr,
            peer_as,
            password: None,
            multihop_ttl: None,
            graceful_restart: false,
            graceful_restart_time: 120,
            graceful_restart_families: true,
            families: vec![if addr.is_ipv4() {
                "ipv4-unicast"
            } else {
                "ipv6-unicast"
            }],
        }
    }
}

#[derive(Debug, Clone)]
pub struct GobgpConfig {
    pub asn: u32,
    pub router_id: Ipv4Addr,
    pub neighbors: Vec<GobgpNeighbor>,
}

impl GobgpConfig {
    pub fn new(asn: u32, router_id: Ipv4Addr) -> GobgpConfig {
        GobgpConfig {
            asn,
            router_id,
            neighbors: Vec::new(),
        }
    }

    pub fn render(&self) -> String {
        let mut c = format!(
            "[global.config]\n  as = {}\n  router-id = \"{}\"\n",
            self.asn, self.router_id
        );
        for n in &self.neighbors {
            let _ = write!(
                c,
                "\n[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{}\"\n    peer-as = {}\n",
                n.addr, n.peer_as
            );
            if let Some(pw) = &n.password {
                let _ = writeln!(c, "    auth-password = \"{pw}\"");
            }
            if let Some(ttl) = n.multihop_ttl {
                let _ = write!(
                    c,
                    "  [neighbors.ebgp-multihop.config]\n    enabled = true\n    multihop-ttl = {ttl}\n"
                );
            }
            if n.graceful_restart {
                let _ = write!(
                    c,
                    "  [neighbors.graceful-restart.config]\n    enabled = true\n    restart-time = {}\n",
                    n.graceful_restart_time
                );
            }
            for f in &n.families {
                let _ = write!(
                    c,
                    "  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"{f}\"\n"
                );
                if n.graceful_restart && n.graceful_restart_families {
                    c.push_str("    [neighbors.afi-safis.mp-graceful-restart.config]\n      enabled = true\n");
                }
            }
        }
        c
    }
}

/// A running gobgpd.
#[derive(Debug)]
pub struct Gobgp {
    pub host: Host,
    pub process: Process,
    config: GobgpConfig,
}

impl Gobgp {
    pub fn start(host: &Host, config: &GobgpConfig) -> Result<Gobgp> {
        require_binary("gobgpd", "gobgpd")?;
        require_binary("gobgp", "gobgpd")?;
        let conf = host.path("gobgpd.toml");
        std::fs::write(&conf, config.render()).map_err(io_err("writing gobgpd.toml"))?;
        let args: Vec<String> = [
            "-f",
            &conf.to_string_lossy(),
            "--api-hosts",
            &format!("127.0.0.1:{API_PORT}"),
            "--pprof-disable",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let process = host.spawn("gobgpd", "gobgpd", &args)?;
        let g = Gobgp {
            host: host.clone(),
            process,
            config: config.clone(),
        };
        wait_for(
            "gobgpd API",
            Duration::from_secs(10),
            Duration::from_millis(100),
            |_| Ok(g.cli(&["global"]).ok()),
        )?;
        Ok(g)
    }

    /// Runs `gobgp -u 127.0.0.1 -p 50051 args...` in the host.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["-u", "127.0.0.1", "-p", API_PORT];
        full.extend_from_slice(args);
        self.host.exec("gobgp", &full)
    }

    fn cli_json(&self, args: &[&str]) -> Result<Value> {
        let out = self.cli(args)?;
        if out.trim().is_empty() || out.trim() == "null" {
            return Ok(Value::Null);
        }
        serde_json::from_str(&out).map_err(|e| LabError::Parse {
            what: format!("gobgp {}", args.join(" ")),
            detail: format!("{e}: {out}"),
        })
    }

    /// The neighbor's session state, named as RFC 4271 §8.2.2 does ("Established", ...).
    pub fn neighbor_state(&self, addr: IpAddr) -> Result<String> {
        let v = self.cli_json(&["neighbor", "-j"])?;
        let n = v
            .as_array()
            .into_iter()
            .flatten()
            .find(|n| n["state"]["neighbor_address"].as_str() == Some(&addr.to_string()))
            .ok_or_else(|| LabError::Invalid(format!("gobgp has no neighbor {addr}")))?;
        // api.PeerState.SessionState, as a number or a name depending on the CLI's marshaller.
        let state = &n["state"]["session_state"];
        Ok(match state.as_u64() {
            Some(1) => "Idle".into(),
            Some(2) => "Connect".into(),
            Some(3) => "Active".into(),
            Some(4) => "OpenSent".into(),
            Some(5) => "OpenConfirm".into(),
            Some(6) => "Established".into(),
            Some(x) => format!("Unknown({x})"),
            None => state.as_str().unwrap_or("Unknown").to_string(),
        })
    }

    pub fn wait_established(&self, addr: IpAddr, timeout: Duration) -> Result<()> {
        wait_for(
            &format!("GoBGP neighbor {addr} Established"),
            timeout,
            Duration::from_millis(200),
            |last| {
                let s = self.neighbor_state(addr)?;
                let ok = s.eq_ignore_ascii_case("established");
                *last = s;
                Ok(ok.then_some(()))
            },
        )
    }

    /// Originates `prefix` from the global RIB with optional communities.
    pub fn announce(&self, prefix: &str, communities: &[&str], large: &[&str]) -> Result<()> {
        let afi = if prefix.contains(':') { "ipv6" } else { "ipv4" };
        let mut args = vec!["global", "rib", "add", "-a", afi, prefix];
        let c = communities.join(",");
        let l = large.join(",");
        if !communities.is_empty() {
            args.extend(["community", &c]);
        }
        if !large.is_empty() {
            args.extend(["large-community", &l]);
        }
        self.cli(&args).map(drop)
    }

    pub fn withdraw(&self, prefix: &str) -> Result<()> {
        let afi = if prefix.contains(':') { "ipv6" } else { "ipv4" };
        self.cli(&["global", "rib", "del", "-a", afi, prefix])
            .map(drop)
    }

    /// Adj-RIB-In from `neighbor`, both address families.
    pub fn adj_in(&self, neighbor: IpAddr) -> Result<Vec<BgpRoute>> {
        let n = neighbor.to_string();
        let mut out = Vec::new();
        // Only the families configured for this neighbor (GoBGP errors on the others).
        let fams: Vec<&str> = self
            .config
            .neighbors
            .iter()
            .filter(|x| x.addr == neighbor)
            .flat_map(|x| x.families.iter())
            .map(|f| {
                if f.starts_with("ipv6") {
                    "ipv6"
                } else {
                    "ipv4"
                }
            })
            .collect();
        for afi in fams {
            let v = self.cli_json(&["neighbor", &n, "adj-in", "-a", afi, "-j"])?;
            out.extend(parse_rib(&v)?);
        }
        Ok(out)
    }

    pub fn wait_adj_in(
        &self,
        neighbor: IpAddr,
        timeout: Duration,
        pred: impl Fn(&[BgpRoute]) -> bool,
    ) -> Result<Vec<BgpRoute>> {
        wait_for(
            &format!("GoBGP adj-in from {neighbor}"),
            timeout,
            Duration::from_millis(200),
            |last| {
                let r = self.adj_in(neighbor)?;
                *last = format!("{r:?}");
                Ok(pred(&r).then_some(r))
            },
        )
    }
}

/// Parses gobgp's `-j` RIB output: `{"prefix": [path, ...], ...}`.
pub(crate) fn parse_rib(v: &Value) -> Result<Vec<BgpRoute>> {
    let mut out = Vec::new();
    let Some(map) = v.as_object() else {
        return Ok(out);
    };
    for (prefix, paths) in map {
        let net = prefix.parse().map_err(|_| LabError::Parse {
            what: "gobgp prefix".into(),
            detail: prefix.clone(),
        })?;
        for p in paths.as_array().into_iter().flatten() {
            let mut r = BgpRoute::new(net);
            for a in p["attrs"].as_array().into_iter().flatten() {
                match a["type"].as_u64() {
                    Some(1) => {
                        r.origin = match a["value"].as_u64() {
                            Some(0) => Some(Origin::Igp),
                            Some(1) => Some(Origin::Egp),
                            _ => Some(Origin::Incomplete),
                        }
                    }
                    Some(2) => {
                        r.as_path = a["as_paths"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .flat_map(|s| s["asns"].as_array().into_iter().flatten())
                            .filter_map(|x| x.as_u64().map(|x| x as u32))
                            .collect()
                    }
                    Some(3) | Some(14) => {
                        r.next_hop = a["nexthop"].as_str().and_then(|s| s.parse().ok())
                    }
                    Some(4) => r.med = a["metric"].as_u64().map(|x| x as u32),
                    Some(5) => r.local_pref = a["value"].as_u64().map(|x| x as u32),
                    Some(8) => {
                        r.communities = a["communities"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|c| c.as_u64())
                            .map(|c| ((c >> 16) as u16, c as u16))
                            .collect()
                    }
                    Some(32) => {
                        r.large_communities = a["value"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|c| {
                                Some((
                                    c["ASN"].as_u64()? as u32,
                                    c["LocalData1"].as_u64()? as u32,
                                    c["LocalData2"].as_u64()? as u32,
                                ))
                            })
                            .collect()
                    }
                    _ => {}
                }
            }
            out.push(r);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rib_json_parses() {
        // Captured from gobgp 3.10 on this machine.
        let v: Value = serde_json::from_str(
            r#"{"203.0.113.0/24":[{"nlri":{"prefix":"203.0.113.0/24"},"best":true,
            "attrs":[{"type":1,"value":2},{"type":8,"communities":[4259971079]},
            {"type":32,"value":[{"ASN":65002,"LocalData1":1,"LocalData2":2}]},
            {"type":2,"as_paths":[{"segment_type":2,"num":2,"asns":[65001,65009]}]},
            {"type":3,"nexthop":"192.0.2.1"}],"stale":false}]}"#,
        )
        .unwrap();
        let r = parse_rib(&v).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].origin, Some(Origin::Incomplete));
        assert_eq!(r[0].communities, vec![(65002, 7)]);
        assert_eq!(r[0].large_communities, vec![(65002, 1, 2)]);
        assert_eq!(r[0].as_path, vec![65001, 65009]);
        assert_eq!(r[0].next_hop, Some("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn config_is_gobgpd_toml() {
        let mut c = GobgpConfig::new(65002, "192.0.2.2".parse().unwrap());
        let mut n = GobgpNeighbor::new("192.0.2.1".parse().unwrap(), 65001);
        n.password = Some("pw".into());
        c.neighbors.push(n);
        let s = c.render();
        assert!(s.contains("neighbor-address = \"192.0.2.1\"\n    peer-as = 65001\n"));
        assert!(s.contains("auth-password = \"pw\""));
        assert!(s.contains("afi-safi-name = \"ipv4-unicast\""));
    }
}
