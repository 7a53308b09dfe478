//! FRR's bgpd (and zebra when asked) in a host, one pathspace per host, queried as JSON.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::bfd::BfdTimers;
use crate::cmd::{require_binary, run, wait_for};
use crate::error::{LabError, Result, io_err};
use crate::lab::{Host, set_mode};
use crate::process::Process;
use crate::route::{BgpRoute, Origin, parse_community, parse_large};

const FRR_LIB: &str = "/usr/lib/frr";

#[derive(Debug, Clone)]
pub struct FrrNeighbor {
    pub addr: IpAddr,
    pub remote_as: u32,
    pub password: Option<String>,
    pub multihop: Option<u8>,
    pub ipv4: bool,
    pub ipv6: bool,
    /// `neighbor X bfd profile lab` (needs [`FrrConfig::bfd`]).
    pub bfd: bool,
}

impl FrrNeighbor {
    pub fn new(addr: IpAddr, remote_as: u32) -> FrrNeighbor {
        FrrNeighbor {
            addr,
            remote_as,
            password: None,
            multihop: None,
            ipv4: addr.is_ipv4(),
            ipv6: addr.is_ipv6(),
            bfd: false,
        }
    }
}

/// FRR's config: one `router bgp`, RFC 8212 policy off (lab ToR), network statements.
#[derive(Debug, Clone)]
pub struct FrrConfig {
    pub asn: u32,
    pub router_id: Ipv4Addr,
    pub neighbors: Vec<FrrNeighbor>,
    /// Prefixes announced with `network` (no RIB import check).
    pub networks: Vec<String>,
    /// Start zebra too (kernel routes); otherwise bgpd runs with `--no_zebra`.
    pub with_zebra: bool,
    /// Run bfdd (and zebra, through which bgpd reaches it) with a `lab` profile of these
    /// timers, for the neighbors with `bfd` set.
    pub bfd: Option<BfdTimers>,
    /// Appended verbatim.
    pub extra: String,
}

impl FrrConfig {
    pub fn new(asn: u32, router_id: Ipv4Addr) -> FrrConfig {
        FrrConfig {
            asn,
            router_id,
            neighbors: Vec::new(),
            networks: Vec::new(),
            with_zebra: false,
            bfd: None,
            extra: String::new(),
        }
    }

    pub fn render(&self, hostname: &str) -> String {
        let mut c = format!(
            "frr defaults traditional\nhostname {hostname}\nrouter bgp {}\n bgp router-id {}\n \
             no bgp ebgp-requires-policy\n no bgp network import-check\n no bgp default ipv4-unicast\n",
            self.asn, self.router_id
        );
        for n in &self.neighbors {
            let _ = writeln!(c, " neighbor {} remote-as {}", n.addr, n.remote_as);
            if let Some(pw) = &n.password {
                let _ = writeln!(c, " neighbor {} password {pw}", n.addr);
            }
            if let Some(ttl) = n.multihop {
                let _ = writeln!(c, " neighbor {} ebgp-multihop {ttl}", n.addr);
            }
            if n.bfd {
                let _ = writeln!(c, " neighbor {} bfd profile lab", n.addr);
            }
        }
        for (v6, afi) in [(false, "ipv4"), (true, "ipv6")] {
            let _ = writeln!(c, " address-family {afi} unicast");
            for n in &self.neighbors {
                if (v6 && n.ipv6) || (!v6 && n.ipv4) {
                    let _ = writeln!(c, "  neighbor {} activate", n.addr);
                }
            }
            for p in self.networks.iter().filter(|p| p.contains(':') == v6) {
                let _ = writeln!(c, "  network {p}");
            }
            c.push_str(" exit-address-family\n");
        }
        c.push_str(&self.extra);
        c
    }

    /// bfdd's own config file: the `lab` profile (kept out of frr.conf, where bgpd and zebra
    /// would trip over the `bfd` node).
    pub fn render_bfdd(&self, hostname: &str) -> Option<String> {
        let t = self.bfd?;
        Some(format!(
            "frr defaults traditional\nhostname {hostname}\nbfd\n profile lab\n  \
             detect-multiplier {}\n  receive-interval {}\n  transmit-interval {}\n exit\nexit\n",
            t.multiplier, t.min_rx_ms, t.min_tx_ms
        ))
    }
}

/// A running FRR (bgpd, and zebra if configured).
#[derive(Debug)]
pub struct Frr {
    pub host: Host,
    pub bgpd: Process,
    pub zebra: Option<Process>,
    pub bfdd: Option<Process>,
    pathspace: String,
}

impl Frr {
    pub fn start(host: &Host, config: &FrrConfig) -> Result<Frr> {
        require_binary(&format!("{FRR_LIB}/bgpd"), "frr")?;
        require_binary("vtysh", "frr")?;
        // One pathspace per host: sockets in /var/run/frr/<ns>, vtysh.conf in /etc/frr/<ns>.
        let ps = host.netns().to_string();
        let run_dir = PathBuf::from("/var/run/frr").join(&ps);
        let etc_dir = PathBuf::from("/etc/frr").join(&ps);
        for d in [&run_dir, &etc_dir] {
            std::fs::create_dir_all(d).map_err(io_err(format!("creating {}", d.display())))?;
            host.cleanup_on_drop(d.clone());
            run("chown", &["frr:frr", &d.to_string_lossy()])?;
        }
        std::fs::write(etc_dir.join("vtysh.conf"), "").map_err(io_err("writing vtysh.conf"))?;
        let conf = host.path("frr.conf");
        std::fs::write(&conf, config.render(host.name())).map_err(io_err("writing frr.conf"))?;
        set_mode(&conf, 0o644)?;
        let conf = conf.to_string_lossy().into_owned();
        let pid = |d: &str| {
            run_dir
                .join(format!("{d}.pid"))
                .to_string_lossy()
                .into_owned()
        };
        // bgpd reaches bfdd through zebra.
        let with_zebra = config.with_zebra || config.bfd.is_some();
        let zebra = if with_zebra {
            let args = [
                "-N",
                &ps,
                "-f",
                &conf,
                "-i",
                &pid("zebra"),
                "--log",
                "stdout",
            ];
            let z = host.spawn("zebra", &format!("{FRR_LIB}/zebra"), &strings(&args))?;
            let sock = run_dir.join("zserv.api");
            wait_for(
                "zebra's zserv socket",
                Duration::from_secs(10),
                Duration::from_millis(50),
                |_| Ok(sock.exists().then_some(())),
            )?;
            Some(z)
        } else {
            None
        };
        let bfdd = if let Some(bfdd_conf) = config.render_bfdd(host.name()) {
            require_binary(&format!("{FRR_LIB}/bfdd"), "frr")?;
            let bconf = host.path("bfdd.conf");
            std::fs::write(&bconf, bfdd_conf).map_err(io_err("writing bfdd.conf"))?;
            set_mode(&bconf, 0o644)?;
            let bconf = bconf.to_string_lossy().into_owned();
            let ctl = run_dir.join("bfdd.sock").to_string_lossy().into_owned();
            let args = [
                "-N",
                &ps,
                "-f",
                &bconf,
                "-i",
                &pid("bfdd"),
                // bfdd 8.4 has no -S: it runs as user frr, like zebra.
                "--bfdctl",
                &ctl,
                "--log",
                "stdout",
            ];
            Some(host.spawn("bfdd", &format!("{FRR_LIB}/bfdd"), &strings(&args))?)
        } else {
            None
        };
        let bgpd_pid = pid("bgpd");
        let mut args = vec![
            "-N", &ps, "-f", &conf, "-i", &bgpd_pid, "-S", "--log", "stdout",
        ];
        if !with_zebra {
            args.push("-Z");
        }
        let bgpd = host.spawn("bgpd", &format!("{FRR_LIB}/bgpd"), &strings(&args))?;
        let frr = Frr {
            host: host.clone(),
            bgpd,
            zebra,
            bfdd,
            pathspace: ps,
        };
        wait_for(
            "FRR bgpd vty",
            Duration::from_secs(15),
            Duration::from_millis(100),
            |_| Ok(frr.vtysh(&["show bgp summary json"]).ok()),
        )?;
        Ok(frr)
    }

    /// Runs vtysh commands (`-c` each) in this FRR's pathspace.
    pub fn vtysh(&self, commands: &[&str]) -> Result<String> {
        let mut args = vec![
            "netns",
            "exec",
            self.host.netns(),
            "vtysh",
            "-N",
            &self.pathspace,
        ];
        for c in commands {
            args.extend(["-c", c]);
        }
        run("ip", &args)
    }

    fn vtysh_json(&self, command: &str) -> Result<Value> {
        let out = self.vtysh(&[command])?;
        serde_json::from_str(&out).map_err(|e| LabError::Parse {
            what: format!("vtysh '{command}'"),
            detail: format!("{e}: {out}"),
        })
    }

    /// bfdd's view of the single-hop session with `peer` (`show bfd peers json`), if any.
    pub fn bfd_peer(&self, peer: IpAddr) -> Result<Option<Value>> {
        let v = self.vtysh_json("show bfd peers json")?;
        Ok(v.as_array()
            .into_iter()
            .flatten()
            .find(|p| {
                p["peer"].as_str() == Some(peer.to_string().as_str())
                    && p["multihop"].as_bool() != Some(true)
            })
            .cloned())
    }

    /// Waits until bfdd's session with `peer` has `status` ("up", "down", ...).
    pub fn wait_bfd(&self, peer: IpAddr, status: &str, timeout: Duration) -> Result<Value> {
        wait_for(
            &format!("FRR BFD peer {peer} {status}"),
            timeout,
            Duration::from_millis(100),
            |last| {
                let p = self.bfd_peer(peer)?;
                *last = format!("{p:?}");
                Ok(p.filter(|p| p["status"].as_str() == Some(status)))
            },
        )
    }

    /// The neighbor's state as FRR names it ("Established", "Active", ...).
    pub fn neighbor_state(&self, addr: IpAddr) -> Result<String> {
        let v = self.vtysh_json(&format!("show bgp neighbors {addr} json"))?;
        v[addr.to_string()]["bgpState"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| LabError::Parse {
                what: "bgpState".into(),
                detail: v.to_string(),
            })
    }

    pub fn wait_established(&self, addr: IpAddr, timeout: Duration) -> Result<()> {
        wait_for(
            &format!("FRR neighbor {addr} Established"),
            timeout,
            Duration::from_millis(200),
            |last| {
                let s = self.neighbor_state(addr)?;
                let ok = s == "Established";
                *last = s;
                Ok(ok.then_some(()))
            },
        )
    }

    /// Paths FRR holds from neighbor `from` (both address families), with attributes.
    pub fn routes_from(&self, from: IpAddr) -> Result<Vec<BgpRoute>> {
        let mut routes = Vec::new();
        for afi in ["ipv4", "ipv6"] {
            let table = self.vtysh_json(&format!("show bgp {afi} unicast json"))?;
            let Some(prefixes) = table["routes"].as_object() else {
                continue;
            };
            let wanted: Vec<String> = prefixes.keys().cloned().collect();
            if wanted.is_empty() {
                continue;
            }
            // One vtysh call for the detail of every prefix (it prints one JSON value each).
            let cmds: Vec<String> = wanted
                .iter()
                .map(|p| format!("show bgp {afi} unicast {p} json"))
                .collect();
            let refs: Vec<&str> = cmds.iter().map(String::as_str).collect();
            let out = self.vtysh(&refs)?;
            for detail in serde_json::Deserializer::from_str(&out).into_iter::<Value>() {
                let detail = detail.map_err(|e| LabError::Parse {
                    what: "vtysh prefix detail".into(),
                    detail: e.to_string(),
                })?;
                routes.extend(parse_prefix_detail(&detail, from)?);
            }
        }
        Ok(routes)
    }

    pub fn wait_routes(
        &self,
        from: IpAddr,
        timeout: Duration,
        pred: impl Fn(&[BgpRoute]) -> bool,
    ) -> Result<Vec<BgpRoute>> {
        wait_for(
            &format!("routes in FRR from {from}"),
            timeout,
            Duration::from_millis(250),
            |last| {
                let r = self.routes_from(from)?;
                *last = format!("{r:?}");
                Ok(pred(&r).then_some(r))
            },
        )
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// Parses `show bgp <afi> unicast <prefix> json`, keeping paths from peer `from`.
pub(crate) fn parse_prefix_detail(v: &Value, from: IpAddr) -> Result<Vec<BgpRoute>> {
    let bad = |what: &str| LabError::Parse {
        what: format!("FRR prefix detail ({what})"),
        detail: v.to_string(),
    };
    let prefix = v["prefix"].as_str().ok_or_else(|| bad("prefix"))?;
    let prefix = prefix.parse().map_err(|_| bad("prefix"))?;
    let mut out = Vec::new();
    for p in v["paths"].as_array().into_iter().flatten() {
        if p["peer"]["peerId"].as_str() != Some(from.to_string().as_str()) {
            continue;
        }
        let mut r = BgpRoute::new(prefix);
        r.as_path = p["aspath"]["segments"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["list"].as_array().into_iter().flatten())
            .filter_map(|a| a.as_u64().map(|a| a as u32))
            .collect();
        r.origin = match p["origin"].as_str() {
            Some("IGP") => Some(Origin::Igp),
            Some("EGP") => Some(Origin::Egp),
            Some(_) => Some(Origin::Incomplete),
            None => None,
        };
        r.next_hop = p["nexthops"][0]["ip"].as_str().and_then(|a| a.parse().ok());
        r.med = p["metric"].as_u64().map(|m| m as u32);
        r.local_pref = p["locPrf"].as_u64().map(|m| m as u32);
        let words = |key: &str| -> Vec<String> {
            p[key]["string"]
                .as_str()
                .unwrap_or("")
                .split_whitespace()
                .map(str::to_string)
                .collect()
        };
        r.communities = words("community")
            .iter()
            .filter_map(|c| parse_community(c))
            .collect();
        r.large_communities = words("largeCommunity")
            .iter()
            .filter_map(|c| parse_large(c))
            .collect();
        out.push(r);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_detail_parses() {
        // Shape of FRR 8.4's `show bgp ipv4 unicast 198.51.100.0/24 json`.
        let v: Value = serde_json::from_str(
            r#"{"prefix":"198.51.100.0/24","paths":[{"aspath":{"string":"65001 65005",
            "segments":[{"type":"as-sequence","list":[65001,65005]}],"length":2},
            "origin":"IGP","metric":5,"locPrf":120,
            "community":{"string":"65001:10 graceful-shutdown"},
            "largeCommunity":{"string":"65001:1:2"},
            "nexthops":[{"ip":"192.0.2.1","afi":"ipv4"}],
            "peer":{"peerId":"192.0.2.1","routerId":"192.0.2.1","type":"external"}},
            {"aspath":{"segments":[]},"origin":"IGP","nexthops":[{"ip":"192.0.2.9"}],
            "peer":{"peerId":"192.0.2.9"}}]}"#,
        )
        .unwrap();
        let r = parse_prefix_detail(&v, "192.0.2.1".parse().unwrap()).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].as_path, vec![65001, 65005]);
        assert_eq!((r[0].med, r[0].local_pref), (Some(5), Some(120)));
        assert_eq!(r[0].communities, vec![(65001, 10), (65535, 0)]);
        assert_eq!(r[0].large_communities, vec![(65001, 1, 2)]);
        assert_eq!(r[0].next_hop, Some("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn config_activates_neighbors_per_family() {
        let mut c = FrrConfig::new(65001, "192.0.2.1".parse().unwrap());
        c.neighbors
            .push(FrrNeighbor::new("192.0.2.2".parse().unwrap(), 65002));
        c.neighbors
            .push(FrrNeighbor::new("2001:db8::2".parse().unwrap(), 65002));
        c.networks = vec!["198.51.100.0/24".into(), "2001:db8:100::/48".into()];
        let s = c.render("tor");
        let v4 = s.split(" address-family ipv6").next().unwrap();
        assert!(v4.contains("neighbor 192.0.2.2 activate"));
        assert!(!v4.contains("neighbor 2001:db8::2 activate"));
        assert!(v4.contains("network 198.51.100.0/24"));
        assert!(s.contains("address-family ipv6 unicast\n  neighbor 2001:db8::2 activate\n  network 2001:db8:100::/48"));
    }
}
