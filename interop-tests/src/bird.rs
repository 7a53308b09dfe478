//! BIRD 2 in a host: generated config, `birdc` queries parsed into typed values.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use crate::bfd::BfdTimers;
use crate::cmd::{require_binary, run, wait_for};
use crate::error::{LabError, Result, io_err};
use crate::lab::Host;
use crate::process::Process;
use crate::route::{BgpRoute, Origin, parse_community, parse_large};

/// A BGP protocol (one neighbor) in BIRD's config.
#[derive(Debug, Clone)]
pub struct BirdPeer {
    pub name: String,
    pub local_as: u32,
    pub local_addr: Option<IpAddr>,
    pub neighbor: IpAddr,
    pub neighbor_as: u32,
    pub password: Option<String>,
    pub multihop: Option<u8>,
    pub hold_time: Option<u16>,
    pub ipv4: bool,
    pub ipv6: bool,
    /// Session over this interface (link-local neighbor).
    pub interface: Option<String>,
    /// RFC 8950: IPv4 routes with IPv6 next hops on this (IPv6) session.
    pub extended_next_hop: bool,
    /// Graceful restart (RFC 4724) as the restarting speaker too, not only aware.
    pub graceful_restart: bool,
    /// `bfd on;` (needs [`BirdConfig::bfd`]).
    pub bfd: bool,
    /// `graceful restart time N;` (with `graceful_restart`).
    pub graceful_restart_time: Option<u16>,
    /// Long-lived graceful restart (RFC 9494) with this stale time.
    pub long_lived_stale_time: Option<u32>,
    /// `rs client;`: BIRD acts as a route server for this neighbor and does not prepend its AS.
    pub rs_client: bool,
}

impl BirdPeer {
    /// An eBGP/iBGP neighbor with the channel of its address family, import/export all.
    pub fn new(name: &str, local_as: u32, neighbor: IpAddr, neighbor_as: u32) -> BirdPeer {
        BirdPeer {
            name: name.into(),
            local_as,
            local_addr: None,
            neighbor,
            neighbor_as,
            password: None,
            multihop: None,
            hold_time: None,
            ipv4: neighbor.is_ipv4(),
            ipv6: neighbor.is_ipv6(),
            interface: None,
            extended_next_hop: false,
            graceful_restart: false,
            bfd: false,
            graceful_restart_time: None,
            long_lived_stale_time: None,
            rs_client: false,
        }
    }
}

/// BIRD's whole config: router id, BGP peers, static routes to announce, raw extras.
#[derive(Debug, Clone)]
pub struct BirdConfig {
    pub router_id: Ipv4Addr,
    pub peers: Vec<BirdPeer>,
    /// Prefixes announced from a static protocol (blackhole routes).
    pub statics: Vec<String>,
    /// A `protocol bfd` with these timers on every interface.
    pub bfd: Option<BfdTimers>,
    /// Appended verbatim.
    pub extra: String,
}

impl BirdConfig {
    pub fn new(router_id: Ipv4Addr) -> BirdConfig {
        BirdConfig {
            router_id,
            peers: Vec::new(),
            statics: Vec::new(),
            bfd: None,
            extra: String::new(),
        }
    }

    pub fn render(&self) -> String {
        let mut c = format!(
            "router id {};\nlog stderr all;\nprotocol device {{}}\n",
            self.router_id
        );
        let (v4, v6): (Vec<_>, Vec<_>) = self.statics.iter().partition(|p| !p.contains(':'));
        for (family, routes) in [("ipv4", v4), ("ipv6", v6)] {
            if !routes.is_empty() {
                let _ = writeln!(c, "protocol static static_{family} {{ {family};");
                for r in routes {
                    let _ = writeln!(c, "  route {r} blackhole;");
                }
                c.push_str("}\n");
            }
        }
        if let Some(t) = self.bfd {
            let _ = writeln!(
                c,
                "protocol bfd {{\n  interface \"*\" {{ min rx interval {} ms; min tx interval {} ms; \
                 multiplier {}; }};\n}}",
                t.min_rx_ms, t.min_tx_ms, t.multiplier
            );
        }
        for p in &self.peers {
            let _ = writeln!(c, "protocol bgp {} {{", p.name);
            match p.local_addr {
                Some(a) => {
                    let _ = writeln!(c, "  local {a} as {};", p.local_as);
                }
                None => {
                    let _ = writeln!(c, "  local as {};", p.local_as);
                }
            }
            let _ = writeln!(c, "  neighbor {} as {};", p.neighbor, p.neighbor_as);
            if let Some(pw) = &p.password {
                let _ = writeln!(c, "  password \"{pw}\";");
            }
            if let Some(ttl) = p.multihop {
                let _ = writeln!(c, "  multihop {ttl};");
            }
            // Lab timing: retry fast after an error (BIRD's default error wait is 60-300 s).
            c.push_str("  error wait time 1, 5;\n  connect retry time 2;\n");
            if let Some(h) = p.hold_time {
                let _ = writeln!(c, "  hold time {h};");
            }
            if p.graceful_restart {
                c.push_str("  graceful restart on;\n");
            }
            if let Some(t) = p.graceful_restart_time {
                let _ = writeln!(c, "  graceful restart time {t};");
            }
            if let Some(t) = p.long_lived_stale_time {
                let _ = writeln!(
                    c,
                    "  long lived graceful restart on;\n  long lived stale time {t};"
                );
            }
            if p.bfd {
                c.push_str("  bfd on;\n");
            }
            if p.rs_client {
                c.push_str("  rs client;\n");
            }
            if let Some(i) = &p.interface {
                let _ = writeln!(c, "  interface \"{i}\";\n  direct;");
            }
            for (on, fam) in [(p.ipv4, "ipv4"), (p.ipv6, "ipv6")] {
                if on {
                    let enh = if fam == "ipv4" && p.extended_next_hop {
                        " extended next hop on;"
                    } else {
                        ""
                    };
                    let _ = writeln!(c, "  {fam} {{ import all; export all;{enh} }};");
                }
            }
            c.push_str("}\n");
        }
        c.push_str(&self.extra);
        c
    }
}

/// A running BIRD.
#[derive(Debug)]
pub struct Bird {
    pub host: Host,
    pub process: Process,
    conf: PathBuf,
    ctl: PathBuf,
}

/// What `show protocols all` says of one BGP protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BirdProtocol {
    /// "Established", "Active", "Connect", ... (BIRD's "BGP state").
    pub bgp_state: String,
    pub last_error: Option<String>,
}

impl Bird {
    /// Starts BIRD in `host` with `config` and waits until its control socket answers.
    pub fn start(host: &Host, config: &BirdConfig) -> Result<Bird> {
        require_binary("bird", "bird2")?;
        require_binary("birdc", "bird2")?;
        let conf = host.path("bird.conf");
        let ctl = host.path("bird.ctl");
        std::fs::write(&conf, config.render()).map_err(io_err("writing bird.conf"))?;
        let args: Vec<String> = [
            "-f",
            "-c",
            &conf.to_string_lossy(),
            "-s",
            &ctl.to_string_lossy(),
            "-P",
            &host.path("bird.pid").to_string_lossy(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let process = host.spawn("bird", "bird", &args)?;
        let bird = Bird {
            host: host.clone(),
            process,
            conf,
            ctl,
        };
        wait_for(
            "BIRD control socket",
            Duration::from_secs(10),
            Duration::from_millis(50),
            |_| Ok(bird.birdc("show status").ok()),
        )?;
        Ok(bird)
    }

    /// Runs a birdc command and returns its output without the banner line.
    pub fn birdc(&self, command: &str) -> Result<String> {
        let out = run("birdc", &["-s", &self.ctl.to_string_lossy(), command])?;
        Ok(out
            .lines()
            .filter(|l| !l.starts_with("BIRD ") || !l.ends_with("ready."))
            .collect::<Vec<_>>()
            .join("\n"))
    }

    /// Writes a new config for the next start (see [`Process::restart`]).
    pub fn write_config(&self, config: &BirdConfig) -> Result<()> {
        std::fs::write(&self.conf, config.render()).map_err(io_err("writing bird.conf"))
    }

    /// Writes a new config and tells BIRD to apply it (`birdc configure`).
    pub fn reconfigure(&self, config: &BirdConfig) -> Result<()> {
        std::fs::write(&self.conf, config.render()).map_err(io_err("writing bird.conf"))?;
        let out = self.birdc("configure")?;
        if out.contains("Reconfigured") || out.contains("Reconfiguration in progress") {
            Ok(())
        } else {
            Err(LabError::Invalid(format!("birdc configure: {out}")))
        }
    }

    pub fn protocol(&self, name: &str) -> Result<BirdProtocol> {
        let out = self.birdc(&format!("show protocols all {name}"))?;
        let field = |key: &str| {
            out.lines()
                .find_map(|l| l.trim().strip_prefix(key))
                .map(|v| v.trim().to_string())
        };
        let bgp_state = field("BGP state:").ok_or_else(|| LabError::Parse {
            what: format!("birdc show protocols all {name}"),
            detail: out.clone(),
        })?;
        Ok(BirdProtocol {
            bgp_state,
            last_error: field("Last error:"),
        })
    }

    /// Waits until protocol `name` is Established.
    pub fn wait_established(&self, name: &str, timeout: Duration) -> Result<()> {
        wait_for(
            &format!("BIRD protocol {name} Established"),
            timeout,
            Duration::from_millis(200),
            |last| {
                let p = self.protocol(name)?;
                *last = format!("{p:?}");
                Ok((p.bgp_state == "Established").then_some(()))
            },
        )
    }

    /// `show bfd sessions`: (neighbor, state) of every BFD session ("Up", "Down", "Init").
    pub fn bfd_sessions(&self) -> Result<Vec<(IpAddr, String)>> {
        Ok(parse_bfd_sessions(&self.birdc("show bfd sessions")?))
    }

    /// Waits until the BFD session with `neighbor` is in `state`.
    pub fn wait_bfd(&self, neighbor: IpAddr, state: &str, timeout: Duration) -> Result<()> {
        wait_for(
            &format!("BIRD BFD session {neighbor} {state}"),
            timeout,
            Duration::from_millis(100),
            |last| {
                let s = self.bfd_sessions()?;
                *last = format!("{s:?}");
                Ok(s.iter()
                    .any(|(a, st)| *a == neighbor && st == state)
                    .then_some(()))
            },
        )
    }

    /// Routes BIRD imported from protocol `name` (both address families).
    pub fn routes_from(&self, name: &str) -> Result<Vec<BgpRoute>> {
        let mut routes = Vec::new();
        for table in ["master4", "master6"] {
            let out = self.birdc(&format!("show route all table {table} protocol {name}"))?;
            routes.extend(parse_routes(&out)?);
        }
        Ok(routes)
    }

    /// Waits until the routes from `name` satisfy `pred`, returning them.
    pub fn wait_routes(
        &self,
        name: &str,
        timeout: Duration,
        pred: impl Fn(&[BgpRoute]) -> bool,
    ) -> Result<Vec<BgpRoute>> {
        wait_for(
            &format!("routes from BIRD protocol {name}"),
            timeout,
            Duration::from_millis(200),
            |last| {
                let r = self.routes_from(name)?;
                *last = format!("{r:?}");
                Ok(pred(&r).then_some(r))
            },
        )
    }
}

/// Parses `show bfd sessions`: rows of "address interface state since interval timeout".
pub(crate) fn parse_bfd_sessions(out: &str) -> Vec<(IpAddr, String)> {
    out.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let addr = w.next()?.parse().ok()?;
            let state = w.nth(1)?.to_string();
            Some((addr, state))
        })
        .collect()
}

/// Parses `show route all` output.
pub(crate) fn parse_routes(out: &str) -> Result<Vec<BgpRoute>> {
    let bad = |l: &str| LabError::Parse {
        what: "birdc show route all".into(),
        detail: l.into(),
    };
    let mut routes: Vec<BgpRoute> = Vec::new();
    let mut prefix = None;
    for line in out.lines() {
        if line.is_empty() || line.starts_with("Table ") || line.starts_with("BIRD ") {
            continue;
        }
        let indented = line.starts_with(' ') || line.starts_with('\t');
        if !indented {
            let p = line.split_whitespace().next().ok_or_else(|| bad(line))?;
            prefix = Some(p.parse().map_err(|_| bad(line))?);
            routes.push(BgpRoute::new(prefix.unwrap()));
            continue;
        }
        let t = line.trim();
        if t.starts_with("unicast [") || t.starts_with("blackhole [") {
            // Another path for the same prefix.
            routes.push(BgpRoute::new(prefix.ok_or_else(|| bad(line))?));
            continue;
        }
        let Some(r) = routes.last_mut() else { continue };
        let Some((key, val)) = t.split_once(':') else {
            continue;
        };
        let val = val.trim();
        match key {
            "BGP.origin" => {
                r.origin = Some(match val {
                    "IGP" => Origin::Igp,
                    "EGP" => Origin::Egp,
                    _ => Origin::Incomplete,
                })
            }
            "BGP.as_path" => {
                r.as_path = val
                    .split(|c: char| !c.is_ascii_digit())
                    .filter_map(|a| a.parse().ok())
                    .collect()
            }
            "BGP.next_hop" => {
                // "global [link-local]"; a link-local-only next hop shows as ":: fe80::...".
                let hops: Vec<IpAddr> = val
                    .split_whitespace()
                    .filter_map(|a| a.parse().ok())
                    .collect();
                r.next_hop = hops.iter().find(|a| !a.is_unspecified()).copied()
            }
            "BGP.med" => r.med = val.parse().ok(),
            "BGP.local_pref" => r.local_pref = val.parse().ok(),
            "BGP.community" => {
                r.communities = groups(val)
                    .filter_map(|g| parse_community(&g.replace(',', ":")))
                    .collect()
            }
            "BGP.large_community" => {
                r.large_communities = groups(val)
                    .filter_map(|g| parse_large(&g.replace(',', ":")))
                    .collect()
            }
            _ => {}
        }
    }
    Ok(routes)
}

/// The "(a,b)" groups of a BIRD community list.
fn groups(val: &str) -> impl Iterator<Item = String> + '_ {
    val.split('(')
        .filter_map(|g| g.split(')').next())
        .filter(|g| !g.trim().is_empty())
        .map(|g| g.replace(' ', ""))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from BIRD 2.0.12 on this machine.
    const SHOW_ROUTE: &str = "Table master4:
203.0.113.0/24       unicast [peer1 12:49:37.411] * (100) [AS65002i]
\tvia 192.0.2.2 on xva
\tType: BGP univ
\tBGP.origin: IGP
\tBGP.as_path: 65002 65010
\tBGP.next_hop: 192.0.2.2
\tBGP.med: 0
\tBGP.local_pref: 100
\tBGP.community: (65002,7) (65535,0)
\tBGP.large_community: (65002, 1, 2)
198.51.100.0/24      unicast [peer1 12:49:37.411] * (100) [AS65002?]
\tvia 192.0.2.2 on xva
\tType: BGP univ
\tBGP.origin: Incomplete
\tBGP.as_path: 65002
\tBGP.next_hop: 2001:db8::2 fe80::1
2001:db8:1::/64      unicast [peer1 12:49:37.411] * (100) [AS65002i]
\tBGP.next_hop: :: fe80::1
";

    #[test]
    fn show_route_all_parses() {
        let r = parse_routes(SHOW_ROUTE).unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].prefix.to_string(), "203.0.113.0/24");
        assert_eq!(r[0].as_path, vec![65002, 65010]);
        assert_eq!(r[0].origin, Some(Origin::Igp));
        assert_eq!(r[0].next_hop, Some("192.0.2.2".parse().unwrap()));
        assert_eq!((r[0].med, r[0].local_pref), (Some(0), Some(100)));
        assert_eq!(r[0].communities, vec![(65002, 7), (65535, 0)]);
        assert_eq!(r[0].large_communities, vec![(65002, 1, 2)]);
        assert_eq!(r[1].origin, Some(Origin::Incomplete));
        assert_eq!(r[1].next_hop, Some("2001:db8::2".parse().unwrap()));
        assert_eq!(r[2].next_hop, Some("fe80::1".parse().unwrap()));
    }

    #[test]
    fn bfd_sessions_parse() {
        let out = "bfd1:\nIP address                Interface  State      Since         Interval  Timeout\n\
                   192.0.2.2                 eth0       Up         13:02:11.512    0.100    0.300\n\
                   2001:db8::2               eth0       Down       13:02:10.001    1.000    0.000\n";
        assert_eq!(
            parse_bfd_sessions(out),
            vec![
                ("192.0.2.2".parse().unwrap(), "Up".to_string()),
                ("2001:db8::2".parse().unwrap(), "Down".to_string())
            ]
        );
    }

    #[test]
    fn config_renders_peers_and_statics() {
        let mut c = BirdConfig::new("192.0.2.1".parse().unwrap());
        let mut p = BirdPeer::new("node1", 65001, "192.0.2.2".parse().unwrap(), 65002);
        p.password = Some("s3cret".into());
        c.peers.push(p);
        c.statics = vec!["198.51.100.0/24".into(), "2001:db8:100::/48".into()];
        let s = c.render();
        assert!(s.contains("protocol bgp node1 {"));
        assert!(s.contains("neighbor 192.0.2.2 as 65002;"));
        assert!(s.contains("password \"s3cret\";"));
        assert!(s.contains("ipv4 { import all; export all; };"));
        assert!(
            s.contains("protocol static static_ipv6 { ipv6;\n  route 2001:db8:100::/48 blackhole;")
        );
    }
}
