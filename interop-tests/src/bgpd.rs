//! ironmesh's bgpd in a host, queried over its gRPC API (Unix socket, reachable from the test
//! process whatever the namespace).

use std::path::{Path, PathBuf};
use std::time::Duration;

use api::bgp as pb;
use api::bgp::bgp_client::BgpClient;

use crate::cmd::wait_for;
use crate::error::{LabError, Result, io_err};
use crate::lab::Host;
use crate::process::Process;
use crate::route::{BgpRoute, Origin, parse_community, parse_large};

/// A running bgpd.
#[derive(Debug)]
pub struct Bgpd {
    pub host: Host,
    pub process: Process,
    pub api: PathBuf,
    pub config: PathBuf,
}

/// Finds a binary built by cargo next to the running test or demo (target/<profile>/NAME).
pub fn cargo_binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().map_err(io_err("locating the test binary"))?;
    let mut dir = exe.parent();
    for _ in 0..2 {
        if let Some(d) = dir {
            let p = d.join(name);
            if p.is_file() {
                return Ok(p);
            }
            dir = d.parent();
        }
    }
    Err(LabError::Invalid(format!(
        "{name} not found next to {}: build it with `cargo build -p interop-tests --bin {name}`",
        exe.display()
    )))
}

/// Builds workspace binaries (`(package, bin)` pairs) with the profile of the running test
/// binary (cargo inside `cargo test` works: no lock is held while tests run) and returns their
/// paths, in order. For daemons the lab runs that interop-tests does not build itself.
pub fn build_binaries(bins: &[(&str, &str)]) -> Result<Vec<PathBuf>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut cmd = std::process::Command::new(cargo);
    cmd.current_dir(&workspace).arg("build");
    for (package, bin) in bins {
        cmd.args(["-p", package, "--bin", bin]);
    }
    let exe = std::env::current_exe().map_err(io_err("locating the test binary"))?;
    if exe.components().any(|c| c.as_os_str() == "release") {
        cmd.arg("--release");
    }
    let out = cmd.output().map_err(io_err("running cargo build"))?;
    if !out.status.success() {
        return Err(LabError::Invalid(format!(
            "cargo build of {bins:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    bins.iter().map(|(_, bin)| cargo_binary(bin)).collect()
}

fn rt() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io_err("starting a tokio runtime"))
}

impl Bgpd {
    /// Writes `config` (TOML) and starts bgpd in `host`; waits until its API answers.
    pub fn start(host: &Host, config: &str) -> Result<Bgpd> {
        Bgpd::start_with_args(host, config, &[])
    }

    /// [`Bgpd::start`] with `extra` command-line arguments (e.g. `--metrics ADDR`).
    pub fn start_with_args(host: &Host, config: &str, extra: &[&str]) -> Result<Bgpd> {
        let bin = cargo_binary("lab-bgpd")?;
        let conf = host.path("bgpd.toml");
        // Each bgpd keeps its state (the graceful-restart marker) in the lab, never in
        // /var/lib/ironmesh shared by parallel tests.
        let config = if config.contains("state_dir") {
            config.to_string()
        } else {
            let dir = host.path("bgpd-state");
            config.replacen(
                "[node]\n",
                &format!("[node]\nstate_dir = {:?}\n", dir.display().to_string()),
                1,
            )
        };
        std::fs::write(&conf, &config).map_err(io_err("writing bgpd.toml"))?;
        let api = host.path("bgpd.sock");
        let mut args = vec![
            "--config".to_string(),
            conf.to_string_lossy().into_owned(),
            "--api".into(),
            api.to_string_lossy().into_owned(),
            "--log".into(),
            "debug".into(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let process = host.spawn("bgpd", &bin.to_string_lossy(), &args)?;
        let b = Bgpd {
            host: host.clone(),
            process,
            api,
            config: conf,
        };
        wait_for(
            "bgpd API",
            Duration::from_secs(10),
            Duration::from_millis(50),
            |last| {
                if !b.process.is_running() {
                    return Err(LabError::Invalid(format!(
                        "bgpd exited: {}",
                        b.process.log_tail(2000)
                    )));
                }
                match b.peers() {
                    Ok(_) => Ok(Some(())),
                    Err(e) => {
                        *last = e.to_string();
                        Ok(None)
                    }
                }
            },
        )?;
        Ok(b)
    }

    fn call<T>(
        &self,
        f: impl AsyncFnOnce(BgpClient<tonic::transport::Channel>) -> Result<T, tonic::Status>,
    ) -> Result<T> {
        rt()?.block_on(async {
            let ch = api::unix::connect(&self.api)
                .await
                .map_err(|e| LabError::Invalid(format!("bgpd API {}: {e}", self.api.display())))?;
            f(BgpClient::new(ch))
                .await
                .map_err(|s| LabError::Invalid(format!("bgpd API: {}", s.message())))
        })
    }

    pub fn peers(&self) -> Result<Vec<pb::Peer>> {
        self.call(async |mut c| {
            Ok(c.list_peers(pb::ListPeersRequest::default())
                .await?
                .into_inner()
                .peers)
        })
    }

    pub fn peer(&self, name: &str) -> Result<pb::Peer> {
        self.peers()?
            .into_iter()
            .find(|p| p.name == name)
            .ok_or_else(|| LabError::Invalid(format!("bgpd has no peer {name}")))
    }

    pub fn wait_established(&self, name: &str, timeout: Duration) -> Result<pb::Peer> {
        wait_for(
            &format!("bgpd peer {name} Established"),
            timeout,
            Duration::from_millis(100),
            |last| {
                let p = self.peer(name)?;
                *last = format!("{:?} last_error={:?}", p.state(), p.last_error);
                Ok((p.state() == pb::SessionState::Established).then_some(p))
            },
        )
    }

    /// A RIB view: Loc-RIB (`peer` filters by origin peer), or Adj-RIB-In/Out of `peer`.
    pub fn routes(&self, rib: pb::RibKind, peer: &str) -> Result<Vec<BgpRoute>> {
        self.api_routes(rib, peer)?
            .into_iter()
            .map(convert)
            .collect()
    }

    /// [`Bgpd::routes`] as the API returns them (with `best` and `stale`).
    pub fn api_routes(&self, rib: pb::RibKind, peer: &str) -> Result<Vec<pb::Route>> {
        let req = pb::ListRoutesRequest {
            rib: rib as i32,
            peer: peer.into(),
            ..Default::default()
        };
        self.call(async |mut c| Ok(c.list_routes(req).await?.into_inner().routes))
    }

    pub fn wait_routes(
        &self,
        rib: pb::RibKind,
        peer: &str,
        timeout: Duration,
        pred: impl Fn(&[BgpRoute]) -> bool,
    ) -> Result<Vec<BgpRoute>> {
        wait_for(
            &format!("bgpd {rib:?} routes of {peer}"),
            timeout,
            Duration::from_millis(100),
            |last| {
                let r = self.routes(rib, peer)?;
                *last = format!("{r:?}");
                Ok(pred(&r).then_some(r))
            },
        )
    }

    pub fn add_adverts(&self, adverts: Vec<pb::Advert>) -> Result<pb::AddAdvertsResponse> {
        self.call(async |mut c| {
            Ok(c.add_adverts(pb::AddAdvertsRequest { adverts })
                .await?
                .into_inner())
        })
    }

    pub fn remove_adverts(&self, prefixes: &[&str]) -> Result<u32> {
        let prefixes = prefixes.iter().map(|s| s.to_string()).collect();
        self.call(async |mut c| {
            Ok(c.remove_adverts(pb::RemoveAdvertsRequest { prefixes })
                .await?
                .into_inner()
                .removed)
        })
    }

    /// The API's Reload (as SIGHUP): re-reads the config file; returns the peers it changed.
    pub fn reload(&self) -> Result<Vec<String>> {
        self.call(async |mut c| {
            Ok(c.reload(pb::ReloadRequest {})
                .await?
                .into_inner()
                .changed_peers)
        })
    }

    /// An MRT TABLE_DUMP_V2 snapshot of bgpd's RIB.
    pub fn dump_mrt(&self) -> Result<Vec<u8>> {
        self.call(async |c| {
            let mut c = c.max_decoding_message_size(usize::MAX);
            Ok(c.dump_mrt(pb::DumpMrtRequest {}).await?.into_inner().data)
        })
    }

    pub fn drain(&self) -> Result<u32> {
        self.call(async |mut c| Ok(c.drain(pb::DrainRequest {}).await?.into_inner().peers))
    }
}

/// An advert with communities ("a:b") and large communities ("a:b:c").
pub fn advert(prefix: &str, communities: &[&str], large: &[&str]) -> pb::Advert {
    pb::Advert {
        prefix: prefix.into(),
        communities: communities.iter().map(|s| s.to_string()).collect(),
        large_communities: large.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn convert(r: pb::Route) -> Result<BgpRoute> {
    let mut out = BgpRoute::new(r.prefix.parse().map_err(|_| LabError::Parse {
        what: "bgpd route prefix".into(),
        detail: r.prefix.clone(),
    })?);
    out.next_hop = r.next_hop.parse().ok();
    out.as_path = r.as_path;
    out.origin = match r.origin.as_str() {
        "igp" => Some(Origin::Igp),
        "egp" => Some(Origin::Egp),
        "incomplete" => Some(Origin::Incomplete),
        _ => None,
    };
    out.med = r.med;
    out.local_pref = r.local_pref;
    out.communities = r
        .communities
        .iter()
        .filter_map(|c| parse_community(c))
        .collect();
    out.large_communities = r
        .large_communities
        .iter()
        .filter_map(|c| parse_large(c))
        .collect();
    Ok(out)
}

/// A bgpd peer for [`BgpdConfig`].
#[derive(Debug, Clone)]
pub struct BgpdPeer {
    pub name: String,
    pub address: String,
    pub peer_asn: u32,
    pub hold_time: u16,
    /// Empty: the default for the address family.
    pub families: Vec<String>,
    /// Extra TOML lines for this peer (e.g. `md5_password = "x"`).
    pub extra: String,
}

impl BgpdPeer {
    pub fn new(name: &str, address: &str, peer_asn: u32) -> BgpdPeer {
        BgpdPeer {
            name: name.into(),
            address: address.into(),
            peer_asn,
            hold_time: 9,
            families: Vec::new(),
            extra: String::new(),
        }
    }
}

/// bgpd's TOML config for a lab node: accept-all import, originated-only export.
#[derive(Debug, Clone)]
pub struct BgpdConfig {
    pub asn: u32,
    pub router_id: String,
    pub peers: Vec<BgpdPeer>,
    /// (prefix, communities, large communities)
    pub adverts: Vec<(String, Vec<String>, Vec<String>)>,
}

impl BgpdConfig {
    pub fn new(asn: u32, router_id: &str) -> BgpdConfig {
        BgpdConfig {
            asn,
            router_id: router_id.into(),
            peers: Vec::new(),
            adverts: Vec::new(),
        }
    }

    pub fn advert(mut self, prefix: &str, communities: &[&str], large: &[&str]) -> Self {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        self.adverts.push((prefix.into(), v(communities), v(large)));
        self
    }

    pub fn peer(mut self, p: BgpdPeer) -> Self {
        self.peers.push(p);
        self
    }

    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let list = |v: &[String]| {
            let q: Vec<String> = v.iter().map(|s| format!("{s:?}")).collect();
            format!("[{}]", q.join(", "))
        };
        let mut c = format!(
            "[node]\nname = \"node\"\ncluster = \"lab\"\n\n[bgp]\nlocal_asn = {}\nrouter_id = \"{}\"\nlisten_port = 0\n",
            self.asn, self.router_id
        );
        for p in &self.peers {
            let _ = write!(
                c,
                "\n[[bgp.peers]]\nname = \"{}\"\naddress = \"{}\"\npeer_asn = {}\nhold_time = {}\n\
                 import_policy = \"accept-all\"\nexport_policy = \"originated-only\"\n",
                p.name, p.address, p.peer_asn, p.hold_time
            );
            if !p.families.is_empty() {
                let _ = writeln!(c, "families = {}", list(&p.families));
            }
            c.push_str(&p.extra);
            c.push('\n');
        }
        for (prefix, comm, large) in &self.adverts {
            let _ = write!(c, "\n[[bgp.adverts]]\nprefix = \"{prefix}\"\n");
            if !comm.is_empty() {
                let _ = writeln!(c, "communities = {}", list(comm));
            }
            if !large.is_empty() {
                let _ = writeln!(c, "large_communities = {}", list(large));
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_renders_valid_bgpd_toml() {
        let mut p = BgpdPeer::new("tor6", "2001:db8::1", 65000);
        p.families = vec!["ipv6-unicast".into()];
        p.extra = "md5_password = \"x\"\n".into();
        let c = BgpdConfig::new(65101, "192.0.2.2")
            .peer(BgpdPeer::new("tor4", "192.0.2.1", 65000))
            .peer(p)
            .advert("10.244.1.0/24", &["65101:100"], &["65101:1:1"])
            .render();
        let cfg = configs::Config::from_toml(&c).unwrap_or_else(|e| panic!("{e}\n{c}"));
        let bgp = cfg.bgp.unwrap();
        assert_eq!(bgp.peers.len(), 2);
        assert_eq!(bgp.adverts[0].prefix.to_string(), "10.244.1.0/24");
        assert!(bgp.peers[1].md5_password.is_some());
    }
}
