//! The two ToRs: BIRD 2 for red, FRR for blue, eBGP to each other and to their nodes.
//!
//! Each ToR announces its connected networks (its segment, the ToR link, the client's link)
//! to the other ToR, installs what it learns into its kernel (BIRD with ECMP: `merge paths`),
//! and sends its nodes everything except their own segment (a node must never learn a route
//! for the network it sits on).

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use super::cluster::Plan;
use super::services::LB_VIP;
use crate::bird::{Bird, BirdConfig};
use crate::cmd::wait_for;
use crate::error::Result;
use crate::frr::{Frr, FrrConfig, FrrNeighbor};
use crate::lab::Host;

const TOR_LINK: [&str; 2] = ["172.16.0.1", "172.16.0.2"];

/// A running ToR.
#[derive(Debug)]
pub struct Tor {
    pub kind: TorKind,
    /// (BIRD protocol name, neighbor address) of every BGP session.
    pub peers: Vec<(String, IpAddr)>,
}

#[derive(Debug)]
pub enum TorKind {
    Bird(Bird),
    Frr(Frr),
}

fn node_peers(plan: &Plan) -> Vec<(String, IpAddr, u32)> {
    (0..2)
        .map(|i| {
            (
                format!("{}_n{}", plan.name, i + 1),
                IpAddr::V4(plan.node_ip(i)),
                plan.node_asns[i],
            )
        })
        .collect()
}

impl Tor {
    /// BIRD for `plan` (red), peering with `other`'s ToR over the ToR link.
    pub(super) fn start_bird(host: &Host, plan: &Plan, other: &Plan) -> Result<Tor> {
        let mut c = BirdConfig::new(plan.tor_ip());
        let mut extra = format!(
            "protocol direct {{ ipv4; interface \"eth*\"; }}\n\
             protocol kernel {{ ipv4 {{ export where source = RTS_BGP; }}; merge paths on; }}\n\
             filter to_nodes {{ if net = {} then reject; accept; }}\n",
            plan.segment_cidr()
        );
        let mut peers = Vec::new();
        let tor = (
            format!("{}_tor", other.name),
            IpAddr::V4(TOR_LINK[1].parse::<Ipv4Addr>().expect("address")),
            other.tor_asn,
        );
        for (name, addr, asn) in node_peers(plan).into_iter().chain([tor]) {
            let (local, export) = if name.ends_with("_tor") {
                (TOR_LINK[0].to_string(), "all")
            } else {
                (plan.tor_ip().to_string(), "filter to_nodes")
            };
            let _ = write!(
                extra,
                "protocol bgp {name} {{\n  local {local} as {};\n  neighbor {addr} as {asn};\n  \
                 hold time 9;\n  error wait time 1, 5;\n  connect retry time 2;\n  \
                 ipv4 {{ import all; export {export}; }};\n}}\n",
                plan.tor_asn
            );
            peers.push((name, addr));
        }
        c.extra = extra;
        // Spread flows to the VIP over its paths by ports, not only by addresses.
        host.exec(
            "sysctl",
            &["-q", "-w", "net.ipv4.fib_multipath_hash_policy=1"],
        )?;
        Ok(Tor {
            kind: TorKind::Bird(Bird::start(host, &c)?),
            peers,
        })
    }

    /// FRR (bgpd and zebra) for `plan` (blue).
    pub(super) fn start_frr(host: &Host, plan: &Plan, other: &Plan) -> Result<Tor> {
        let mut c = FrrConfig::new(plan.tor_asn, plan.tor_ip());
        c.with_zebra = true;
        let tor_peer: IpAddr = TOR_LINK[0].parse().expect("address");
        let mut peers = Vec::new();
        let mut out_maps = String::new();
        for (name, addr, asn) in node_peers(plan) {
            c.neighbors.push(FrrNeighbor::new(addr, asn));
            let _ = writeln!(out_maps, "  neighbor {addr} route-map to-nodes out");
            peers.push((name, addr));
        }
        c.neighbors.push(FrrNeighbor::new(tor_peer, other.tor_asn));
        peers.push((format!("{}_tor", other.name), tor_peer));
        c.networks = vec![plan.segment_cidr(), "172.16.0.0/30".into()];
        c.extra = format!(
            "ip prefix-list own-segment seq 5 deny {seg}\n\
             ip prefix-list own-segment seq 10 permit 0.0.0.0/0 le 32\n\
             route-map to-nodes permit 10\n match ip address prefix-list own-segment\nexit\n\
             router bgp {asn}\n timers bgp 3 9\n address-family ipv4 unicast\n  maximum-paths 8\n\
             {out_maps} exit-address-family\nexit\n",
            seg = plan.segment_cidr(),
            asn = plan.tor_asn,
        );
        Ok(Tor {
            kind: TorKind::Frr(Frr::start(host, &c)?),
            peers,
        })
    }

    pub fn host(&self) -> &Host {
        match &self.kind {
            TorKind::Bird(b) => &b.host,
            TorKind::Frr(f) => &f.host,
        }
    }

    /// Which daemon, for people.
    pub fn daemon(&self) -> &'static str {
        match &self.kind {
            TorKind::Bird(_) => "BIRD 2",
            TorKind::Frr(_) => "FRR",
        }
    }

    /// Waits until every BGP session is Established.
    pub fn wait_sessions(&self, timeout: Duration) -> Result<()> {
        for (name, addr) in &self.peers {
            match &self.kind {
                TorKind::Bird(b) => b.wait_established(name, timeout)?,
                TorKind::Frr(f) => f.wait_established(*addr, timeout)?,
            }
        }
        Ok(())
    }

    /// The ToR's IPv4 kernel routes (`ip -4 route`).
    pub fn kernel_routes(&self) -> Result<String> {
        self.host().ip(&["-4", "route"])
    }

    /// Waits until the ToR's kernel has a route for each of `prefixes` (as `ip route` prints
    /// them: `10.1.0.0/24`, or a host address without `/32`).
    pub fn wait_kernel_routes(&self, prefixes: &[String], timeout: Duration) -> Result<()> {
        wait_for(
            &format!("{prefixes:?} at {}", self.host().name()),
            timeout,
            Duration::from_millis(100),
            |last| {
                let have = self.kernel_routes()?;
                let ok = prefixes.iter().all(|p| {
                    have.lines()
                        .any(|l| l.split_whitespace().next() == Some(p.as_str()))
                });
                *last = have;
                Ok(ok.then_some(()))
            },
        )
    }

    /// The next hops of the VIP's kernel route (one per ECMP path; empty: no route).
    pub fn vip_next_hops(&self) -> Result<Vec<Ipv4Addr>> {
        let out = self
            .host()
            .ip(&["-4", "route", "show", "exact", &format!("{LB_VIP}/32")])?;
        let words: Vec<&str> = out.split_whitespace().collect();
        Ok(words
            .windows(2)
            .filter(|w| w[0] == "via")
            .filter_map(|w| w[1].parse().ok())
            .collect())
    }

    /// The daemon's own session summary (`birdc show protocols` / `show bgp summary`).
    /// The BGP routes (with their attributes) the ToR has from its `i`-th node.
    pub fn routes_from_node(&self, i: usize) -> Result<Vec<crate::route::BgpRoute>> {
        let (name, addr) = self
            .peers
            .get(i)
            .ok_or_else(|| crate::LabError::Invalid(format!("the ToR has no node peer {i}")))?;
        match &self.kind {
            TorKind::Bird(b) => b.routes_from(name),
            TorKind::Frr(f) => f.routes_from(*addr),
        }
    }

    pub fn show_sessions(&self) -> Result<String> {
        match &self.kind {
            TorKind::Bird(b) => b.birdc("show protocols"),
            TorKind::Frr(f) => f.vtysh(&["show bgp ipv4 unicast summary"]),
        }
    }

    /// The daemon's BGP table (every path, ECMP ones marked).
    pub fn show_routes(&self) -> Result<String> {
        match &self.kind {
            TorKind::Bird(b) => b.birdc("show route where source = RTS_BGP"),
            TorKind::Frr(f) => f.vtysh(&["show bgp ipv4 unicast"]),
        }
    }

    /// Kills the ToR's routing daemons by PID (SIGKILL: a crash) and starts them again with
    /// the same config: BIRD; FRR's bgpd and zebra (bfdd too if any). zebra comes back first
    /// (its zserv socket recreated), then bgpd.
    pub fn crash_and_restart(&self) -> Result<()> {
        let f = match &self.kind {
            TorKind::Bird(b) => {
                b.process.kill();
                return b.process.restart();
            }
            TorKind::Frr(f) => f,
        };
        f.bgpd.kill();
        for p in [&f.bfdd, &f.zebra].into_iter().flatten() {
            p.kill();
        }
        // The socket a killed zebra leaves: waiting for the new one must not see it.
        let zserv = Path::new("/var/run/frr")
            .join(f.host.netns())
            .join("zserv.api");
        let _ = std::fs::remove_file(&zserv);
        if let Some(z) = &f.zebra {
            z.restart()?;
            wait_for(
                "the restarted zebra's zserv socket",
                Duration::from_secs(10),
                Duration::from_millis(50),
                |_| Ok(zserv.exists().then_some(())),
            )?;
        }
        if let Some(b) = &f.bfdd {
            b.restart()?;
        }
        f.bgpd.restart()?;
        wait_for(
            "the restarted bgpd's vty",
            Duration::from_secs(15),
            Duration::from_millis(100),
            |_| Ok(f.vtysh(&["show bgp summary json"]).ok()),
        )
        .map(drop)
    }

    /// The exact command to query this ToR by hand.
    pub fn cli_hint(&self) -> String {
        let ns = self.host().netns();
        match &self.kind {
            TorKind::Bird(_) => format!(
                "birdc -s {} show protocols",
                self.host().path("bird.ctl").display()
            ),
            TorKind::Frr(_) => format!("ip netns exec {ns} vtysh -N {ns} -c 'show bgp summary'"),
        }
    }
}
