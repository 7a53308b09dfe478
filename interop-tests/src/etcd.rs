//! A real etcd 3.4 cluster (1 or 3 members), each member in a host of the lab; plain, or
//! with TLS and client-certificate auth ([`EtcdCluster::start_tls`]).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::cmd::{require_binary, wait_for};
use crate::error::{LabError, Result};
use crate::lab::Host;
use crate::pki::CertPair;
use crate::process::Process;

const CLIENT_PORT: u16 = 2379;
const PEER_PORT: u16 = 2380;

#[derive(Debug)]
pub struct EtcdMember {
    pub name: String,
    pub host: Host,
    pub ip: IpAddr,
    pub process: Process,
    tls: bool,
}

impl EtcdMember {
    pub fn client_url(&self) -> String {
        url(self.ip, CLIENT_PORT, self.tls)
    }
}

/// TLS of a lab etcd: its members' server certificate (clients must present a certificate of
/// the same CA: `--client-cert-auth`) and the client certificate the lab itself uses. With
/// common name `root`, that one acts as etcd's root user once auth is on, so the lab's
/// etcdctl needs no password on its command line.
#[derive(Debug, Clone)]
pub struct EtcdTls {
    pub ca: PathBuf,
    pub server: CertPair,
    pub client: CertPair,
}

#[derive(Debug)]
pub struct EtcdCluster {
    pub members: Vec<EtcdMember>,
    /// `Some`: clients speak https and present a certificate.
    pub tls: Option<EtcdTls>,
}

fn url(ip: IpAddr, port: u16, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    match ip {
        IpAddr::V4(a) => format!("{scheme}://{a}:{port}"),
        IpAddr::V6(a) => format!("{scheme}://[{a}]:{port}"),
    }
}

impl EtcdCluster {
    /// Starts one member per `(host, ip)` (the ip must be on that host) and waits until every
    /// member reports healthy.
    pub fn start(members: &[(&Host, IpAddr)]) -> Result<EtcdCluster> {
        Self::start_with(members, None, None)
    }

    /// [`EtcdCluster::start`] with raft timing for a LAN of sub-millisecond round trips:
    /// heartbeat 50 ms, election timeout 500 ms (etcd's defaults, 100 ms and 1 s, are sized for
    /// a WAN-ish RTT; its tuning guide puts the election timeout at about 10x the RTT). A cut
    /// leader is then replaced within 0.5-1 s instead of 1-2 s.
    pub fn start_lan(members: &[(&Host, IpAddr)]) -> Result<EtcdCluster> {
        Self::start_with(members, None, Some((50, 500)))
    }

    /// [`EtcdCluster::start`] with clients on TLS (`--client-cert-auth`); peers stay on
    /// plain HTTP inside the lab.
    pub fn start_tls(members: &[(&Host, IpAddr)], tls: EtcdTls) -> Result<EtcdCluster> {
        Self::start_with(members, Some(tls), None)
    }

    /// `timing`: (heartbeat, election timeout) in ms; `None`: etcd's defaults.
    fn start_with(
        members: &[(&Host, IpAddr)],
        tls: Option<EtcdTls>,
        timing: Option<(u32, u32)>,
    ) -> Result<EtcdCluster> {
        require_binary("etcd", "etcd-server")?;
        require_binary("etcdctl", "etcd-client")?;
        if members.is_empty() {
            return Err(LabError::Invalid("an etcd cluster needs a member".into()));
        }
        let token = format!("t-{}", members[0].0.netns());
        let initial: Vec<String> = members
            .iter()
            .enumerate()
            .map(|(i, (_, ip))| format!("e{i}={}", url(*ip, PEER_PORT, false)))
            .collect();
        let initial = initial.join(",");
        let mut out = Vec::new();
        for (i, (host, ip)) in members.iter().enumerate() {
            let name = format!("e{i}");
            let data = host.path(&format!("etcd-{name}.data"));
            let secure = tls.is_some();
            let mut args: Vec<String> = vec![
                "--name".into(),
                name.clone(),
                "--data-dir".into(),
                data.to_string_lossy().into_owned(),
                "--listen-peer-urls".into(),
                url(*ip, PEER_PORT, false),
                "--initial-advertise-peer-urls".into(),
                url(*ip, PEER_PORT, false),
                "--listen-client-urls".into(),
                url(*ip, CLIENT_PORT, secure),
                "--advertise-client-urls".into(),
                url(*ip, CLIENT_PORT, secure),
                "--initial-cluster".into(),
                initial.clone(),
                "--initial-cluster-state".into(),
                "new".into(),
                "--initial-cluster-token".into(),
                token.clone(),
                "--logger".into(),
                "zap".into(),
                "--log-outputs".into(),
                "stderr".into(),
            ];
            if let Some((heartbeat, election)) = timing {
                args.extend([
                    "--heartbeat-interval".into(),
                    heartbeat.to_string(),
                    "--election-timeout".into(),
                    election.to_string(),
                ]);
            }
            if let Some(t) = &tls {
                let p = |p: &PathBuf| p.to_string_lossy().into_owned();
                args.extend([
                    "--cert-file".into(),
                    p(&t.server.cert),
                    "--key-file".into(),
                    p(&t.server.key),
                    "--trusted-ca-file".into(),
                    p(&t.ca),
                    "--client-cert-auth".into(),
                ]);
            }
            let process = host.spawn(&format!("etcd-{name}"), "etcd", &args)?;
            out.push(EtcdMember {
                name,
                host: (*host).clone(),
                ip: *ip,
                process,
                tls: secure,
            });
        }
        let cluster = EtcdCluster { members: out, tls };
        for i in 0..cluster.members.len() {
            cluster.wait_healthy(i, Duration::from_secs(20))?;
        }
        Ok(cluster)
    }

    /// All client URLs, comma-separated (for `--endpoints`).
    pub fn endpoints(&self) -> String {
        let urls: Vec<String> = self.members.iter().map(EtcdMember::client_url).collect();
        urls.join(",")
    }

    /// Runs etcdctl (v3 API) against member `i` only, from that member's host.
    pub fn etcdctl(&self, i: usize, args: &[&str]) -> Result<String> {
        let m = &self.members[i];
        let ep = format!("--endpoints={}", m.client_url());
        let mut full = vec!["ETCDCTL_API=3", "etcdctl", &ep, "--command-timeout=3s"];
        let flags = self.etcdctl_tls_flags();
        full.extend(flags.iter().map(String::as_str));
        full.extend_from_slice(args);
        m.host.exec("env", &full)
    }

    /// etcdctl's `--cacert/--cert/--key` for the lab's own (root) client certificate.
    pub fn etcdctl_tls_flags(&self) -> Vec<String> {
        match &self.tls {
            Some(t) => vec![
                format!("--cacert={}", t.ca.display()),
                format!("--cert={}", t.client.cert.display()),
                format!("--key={}", t.client.key.display()),
            ],
            None => Vec::new(),
        }
    }

    pub fn wait_healthy(&self, i: usize, timeout: Duration) -> Result<()> {
        wait_for(
            &format!("etcd member e{i} healthy"),
            timeout,
            Duration::from_millis(100),
            |_| Ok(self.etcdctl(i, &["endpoint", "health"]).ok().map(drop)),
        )
    }

    pub fn put(&self, via: usize, key: &str, value: &str) -> Result<()> {
        self.etcdctl(via, &["put", key, value]).map(drop)
    }

    pub fn del(&self, via: usize, key: &str) -> Result<()> {
        self.etcdctl(via, &["del", key]).map(drop)
    }

    /// The value of `key` as member `via` serves it (linearizable read).
    pub fn get(&self, via: usize, key: &str) -> Result<Option<String>> {
        let out = self.etcdctl(via, &["get", key, "--print-value-only"])?;
        let v = out.strip_suffix('\n').unwrap_or(&out);
        Ok((!out.is_empty()).then(|| v.to_string()))
    }

    /// (member id, leader id) as member `i` reports them.
    fn status(&self, i: usize) -> Result<(u64, u64)> {
        let out = self.etcdctl(i, &["endpoint", "status", "-w", "json"])?;
        let v: Value = serde_json::from_str(&out).map_err(|e| LabError::Parse {
            what: "etcdctl endpoint status".into(),
            detail: format!("{e}: {out}"),
        })?;
        let s = &v[0]["Status"];
        match (s["header"]["member_id"].as_u64(), s["leader"].as_u64()) {
            (Some(me), Some(leader)) => Ok((me, leader)),
            _ => Err(LabError::Parse {
                what: "etcd member/leader ids".into(),
                detail: out,
            }),
        }
    }

    /// The index of the current leader, as the running members see it.
    pub fn leader(&self) -> Result<usize> {
        let mut seen = Vec::new();
        let mut last = String::from("no member answered");
        for i in (0..self.members.len()).filter(|i| self.members[*i].process.is_running()) {
            match self.status(i) {
                Ok(st) => seen.push((i, st)),
                Err(e) => last = e.to_string(),
            }
        }
        seen.iter()
            .find(|(_, (me, _))| seen.iter().any(|(_, (_, leader))| leader == me))
            .map(|(i, _)| *i)
            .ok_or_else(|| LabError::Invalid(format!("no etcd leader found: {seen:?}; {last}")))
    }

    /// Waits until some running member is leader; returns its index.
    pub fn wait_leader(&self, timeout: Duration) -> Result<usize> {
        wait_for(
            "an etcd leader",
            timeout,
            Duration::from_millis(200),
            |last| match self.leader() {
                Ok(i) if self.members[i].process.is_running() => Ok(Some(i)),
                Ok(i) => {
                    *last = format!("e{i} (stopped)");
                    Ok(None)
                }
                Err(e) => {
                    *last = e.to_string();
                    Ok(None)
                }
            },
        )
    }
}
