//! What the runtime hands us: environment variables (spec "Parameters") and the network
//! configuration on stdin (spec "Network configuration"). Pure parsing, no I/O.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use common::podcidrs::{FILE_NAME, PodCidrsFile};
use ipnet::IpNet;
use serde::Deserialize;

use crate::error::{CniError, Code, Result};

/// The CNI versions this plugin speaks (VERSION output, checked on every command).
pub const SUPPORTED_VERSIONS: &[&str] = &["0.4.0", "1.0.0", "1.1.0"];
/// The version used for results when the input did not name a usable one.
pub const CURRENT_VERSION: &str = "1.1.0";
/// Where allocations and endpoint records live unless the config says otherwise.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/ironmesh/cni";
/// The `ipam.type` we implement (host-scope allocation from the node's PodCIDR).
pub const IPAM_TYPE: &str = "ironmesh";

/// `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    /// 1.1.0: garbage-collect attachments the runtime no longer knows.
    Gc,
    /// 1.1.0: is the plugin ready to ADD?
    Status,
}

impl Command {
    pub fn parse(s: &str) -> Result<Command> {
        Ok(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            other => {
                return Err(CniError::new(
                    Code::InvalidEnvironment,
                    format!("CNI_COMMAND: unknown command {other:?}"),
                )
                .with_details("expected one of ADD, DEL, CHECK, VERSION, GC, STATUS"));
            }
        })
    }
}

/// The per-attachment parameters from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    pub command: Command,
    pub container_id: String,
    /// `None` on DEL when the runtime no longer has the netns (allowed by the spec).
    pub netns: Option<PathBuf>,
    pub ifname: String,
    pub args: CniArgs,
    pub path: Vec<PathBuf>,
}

/// The parts of `CNI_ARGS` we use (`K8S_POD_NAMESPACE=..;K8S_POD_NAME=..`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    pub pod_namespace: Option<String>,
    pub pod_name: Option<String>,
    pub pod_uid: Option<String>,
    pub other: BTreeMap<String, String>,
}

impl CniArgs {
    /// Parses `KEY=VALUE;KEY=VALUE`. Unknown keys are kept (and otherwise ignored).
    pub fn parse(s: &str) -> Result<CniArgs> {
        let mut out = CniArgs::default();
        for pair in s.split(';').filter(|p| !p.is_empty()) {
            let Some((k, v)) = pair.split_once('=') else {
                return Err(CniError::new(
                    Code::InvalidEnvironment,
                    format!("CNI_ARGS: {pair:?} is not KEY=VALUE"),
                ));
            };
            match k {
                "K8S_POD_NAMESPACE" => out.pod_namespace = Some(v.into()),
                "K8S_POD_NAME" => out.pod_name = Some(v.into()),
                "K8S_POD_UID" => out.pod_uid = Some(v.into()),
                _ => {
                    out.other.insert(k.into(), v.into());
                }
            }
        }
        Ok(out)
    }
}

fn valid_name(s: &str) -> bool {
    // Spec: container ID and network name `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`.
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// Spec: a container ID matches `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`.
pub fn valid_container_id(s: &str) -> bool {
    valid_name(s)
}

/// Spec: an interface name must be a valid Linux name (1–15 bytes, not `.`/`..`, no `/`,
/// `:` or whitespace).
pub fn valid_ifname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s != "."
        && s != ".."
        && !s.chars().any(|c| c == '/' || c == ':' || c.is_whitespace())
}

impl Env {
    /// Reads the environment through `get` (so tests need not touch the process env).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Env> {
        let missing = |var: &str| {
            CniError::new(
                Code::InvalidEnvironment,
                format!("{var}: required environment variable is not set"),
            )
        };
        let command = Command::parse(&get("CNI_COMMAND").ok_or_else(|| missing("CNI_COMMAND"))?)?;
        let needs_attachment = matches!(command, Command::Add | Command::Del | Command::Check);
        let mut env = Env {
            command,
            container_id: String::new(),
            netns: None,
            ifname: String::new(),
            args: CniArgs::default(),
            path: Vec::new(),
        };
        if !needs_attachment {
            return Ok(env);
        }
        let container_id = get("CNI_CONTAINERID")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| missing("CNI_CONTAINERID"))?;
        if !valid_name(&container_id) {
            return Err(CniError::new(
                Code::InvalidEnvironment,
                format!(
                    "CNI_CONTAINERID: {container_id:?} must match ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$"
                ),
            ));
        }
        let ifname = get("CNI_IFNAME")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| missing("CNI_IFNAME"))?;
        if !valid_ifname(&ifname) {
            return Err(CniError::new(
                Code::InvalidEnvironment,
                format!("CNI_IFNAME: {ifname:?} is not a valid interface name"),
            ));
        }
        let netns = get("CNI_NETNS")
            .filter(|s| !s.is_empty())
            .map(PathBuf::from);
        if netns.is_none() && command != Command::Del {
            return Err(missing("CNI_NETNS"));
        }
        let path = get("CNI_PATH").ok_or_else(|| missing("CNI_PATH"))?;
        env.container_id = container_id;
        env.ifname = ifname;
        env.netns = netns;
        env.args = CniArgs::parse(&get("CNI_ARGS").unwrap_or_default())?;
        env.path = std::env::split_paths(&path).collect();
        Ok(env)
    }
}

/// One address family of a pod's pool: the node's blocks of it, the first with room first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub v6: bool,
    pub blocks: Vec<IpNet>,
    /// The pool meshd can grow (none for a PodCIDR from the config).
    pub pool: Option<String>,
}

impl Group {
    pub fn family(&self) -> &'static str {
        if self.v6 { "ipv6" } else { "ipv4" }
    }
}

/// `ipam` section: `{"type": "ironmesh", "podCIDR": "10.244.1.0/24", "podCIDRv6": "fd00:244:1::/64"}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpamConfig {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(rename = "podCIDR", default, deserialize_with = "de_pod_cidr")]
    pub pod_cidr: Option<IpNet>,
    #[serde(rename = "podCIDRv6", default, deserialize_with = "de_pod_cidr_v6")]
    pub pod_cidr_v6: Option<IpNet>,
}

fn de_prefix<'de, D: serde::Deserializer<'de>>(
    d: D,
    field: &str,
) -> Result<Option<IpNet>, D::Error> {
    let s: Option<String> = Option::deserialize(d)?;
    s.map(|s| {
        s.parse::<IpNet>().map_err(|_| {
            serde::de::Error::custom(format!("ipam.{field}: {s:?} is not an IP prefix (CIDR)"))
        })
    })
    .transpose()
}

fn de_pod_cidr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<IpNet>, D::Error> {
    de_prefix(d, "podCIDR")
}

fn de_pod_cidr_v6<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<IpNet>, D::Error> {
    de_prefix(d, "podCIDRv6")
}

/// `dns` as the spec defines it (copied into the result).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_none()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

/// `runtimeConfig` (capability arguments); we use `labels` (`{"app": "web"}`), `ips`
/// (the `ips` capability: static addresses, `["10.244.1.5/24"]`) and `ports` (the pod's
/// named container ports, as Kubernetes writes them: `[{"name": "http", "containerPort":
/// 8080, "protocol": "TCP"}]`; Services' and NetworkPolicies' named ports resolve through them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct RuntimeConfig {
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub ips: Vec<String>,
    #[serde(default)]
    pub ports: Vec<common::ContainerPort>,
}

/// `args` (CNI conventions: `{"cni": {"ips": ["10.244.1.5"]}}`); other keys are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Args {
    #[serde(default)]
    pub cni: ArgsCni,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ArgsCni {
    #[serde(default)]
    pub ips: Vec<String>,
}

/// The network configuration on stdin (after the runtime flattened the list entry).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub ipam: IpamConfig,
    #[serde(default)]
    pub dns: Dns,
    #[serde(default)]
    pub mtu: Option<u32>,
    /// Allocations and endpoint records (`<dataDir>/<network name>/...`).
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    #[serde(default)]
    pub runtime_config: RuntimeConfig,
    #[serde(default)]
    pub args: Args,
    /// GC (1.1.0): the attachments the runtime still knows; everything else is ours to free.
    #[serde(rename = "cni.dev/valid-attachments", default)]
    pub valid_attachments: Option<Vec<ValidAttachment>>,
    /// CHECK/DEL: the result of the previous ADD (kept as JSON; compared on CHECK).
    #[serde(default)]
    pub prev_result: Option<serde_json::Value>,
    /// The node's blocks and pools from meshd, when the config names no PodCIDR.
    #[serde(skip)]
    pub meshd: Option<PodCidrsFile>,
}

/// One entry of `cni.dev/valid-attachments`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ValidAttachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// meshd's file is input too: blocks the CNI can use, pools inside them, names that are
/// safe as file names (a pool's name names its request file).
fn check_meshd_pools(f: &PodCidrsFile) -> std::result::Result<(), String> {
    if f.pod_cidrs.is_empty() {
        return Err("lists no PodCIDR".into());
    }
    for n in &f.pod_cidrs {
        let too_small = match n {
            IpNet::V4(v) => v.prefix_len() > 30,
            IpNet::V6(v) => v.prefix_len() > 126,
        };
        if too_small {
            return Err(format!("lists {n}, too small for a gateway and a pod"));
        }
    }
    for p in &f.pools {
        let safe = !p.name.is_empty()
            && p.name.len() <= 253
            && !p.name.starts_with('.')
            && p.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
        if !safe {
            return Err(format!(
                "names a pool {:?}, which is not a pool name",
                p.name
            ));
        }
        if let Some(bad) = p.families.iter().find(|f| *f != "ipv4" && *f != "ipv6") {
            return Err(format!(
                "pool {}: family {bad:?} is not ipv4 or ipv6",
                p.name
            ));
        }
        if let Some(bad) = p.cidrs.iter().find(|c| !f.pod_cidrs.contains(c)) {
            return Err(format!("pool {}: {bad} is not one of podCIDRs", p.name));
        }
    }
    Ok(())
}

/// The minimal header every input has: used for VERSION/STATUS/GC and to pick the
/// version of an error object before the full config parsed.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Header {
    cni_version: Option<String>,
}

/// The `cniVersion` of `stdin`, if it is JSON that has one.
pub fn sniff_version(stdin: &[u8]) -> Option<String> {
    serde_json::from_slice::<Header>(stdin).ok()?.cni_version
}

/// Checks `v` is one of [`SUPPORTED_VERSIONS`].
pub fn check_version(v: &str) -> Result<()> {
    if SUPPORTED_VERSIONS.contains(&v) {
        Ok(())
    } else {
        Err(CniError::new(
            Code::IncompatibleVersion,
            format!("cniVersion: {v:?} is not supported"),
        )
        .with_details(format!(
            "supported versions: {}",
            SUPPORTED_VERSIONS.join(", ")
        )))
    }
}

impl NetConf {
    /// Parses and validates the config for ADD/DEL/CHECK.
    pub fn parse(stdin: &[u8]) -> Result<NetConf> {
        let value: serde_json::Value = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(
                Code::Decode,
                "network configuration on stdin is not valid JSON",
            )
            .with_details(e.to_string())
        })?;
        // Name the missing/odd field before serde's generic message does.
        let obj = value.as_object().ok_or_else(|| {
            CniError::new(Code::Decode, "network configuration must be a JSON object")
        })?;
        for field in ["cniVersion", "name", "type", "ipam"] {
            if !obj.contains_key(field) {
                return Err(CniError::new(
                    Code::InvalidNetworkConfig,
                    format!("{field}: required field is missing"),
                ));
            }
        }
        let mut conf: NetConf = serde_json::from_value(value).map_err(|e| {
            CniError::new(
                Code::InvalidNetworkConfig,
                format!("network configuration: {e}"),
            )
        })?;
        if conf.ipam.pod_cidr.is_none() && conf.ipam.pod_cidr_v6.is_none() {
            conf.pod_cidrs_from_meshd()?;
        }
        conf.validate()?;
        Ok(conf)
    }

    /// `<dataDir>/<network>/pod-cidrs.json`: the node's PodCIDRs as meshd writes them once it
    /// has them (`{"podCIDRs": ["10.1.0.0/24", "fd00:1::/64"]}`), used when the config names
    /// none, so nobody copies the PodCIDR into the CNI config by hand.
    pub fn meshd_pod_cidrs_file(&self) -> PathBuf {
        self.network_dir().join(FILE_NAME)
    }

    fn pod_cidrs_from_meshd(&mut self) -> Result<()> {
        let path = self.meshd_pod_cidrs_file();
        let eps = self.network_dir().join("endpoints");
        let missing = |why: String| {
            CniError::new(
                Code::InvalidNetworkConfig,
                format!(
                    "ipam.podCIDR: the config names no PodCIDR and {} {why}; set ipam.podCIDR, or run meshd with mesh.cni_endpoints_dir = {:?} (it writes the node's PodCIDRs there)",
                    path.display(),
                    eps
                ),
            )
        };
        let mut buf = Vec::new();
        let f = std::fs::File::open(&path).map_err(|e| missing(format!("cannot be read ({e})")))?;
        use std::io::Read;
        f.take(64 * 1024 + 1)
            .read_to_end(&mut buf)
            .map_err(|e| missing(format!("cannot be read ({e})")))?;
        if buf.len() > 64 * 1024 {
            return Err(missing("is larger than 64 KiB".into()));
        }
        let file: PodCidrsFile =
            serde_json::from_slice(&buf).map_err(|e| missing(format!("is not valid ({e})")))?;
        check_meshd_pools(&file).map_err(missing)?;
        // The first block of each family stands for the family in the checks below.
        for net in &file.pod_cidrs {
            match net {
                IpNet::V4(_) if self.ipam.pod_cidr.is_none() => self.ipam.pod_cidr = Some(*net),
                IpNet::V6(_) if self.ipam.pod_cidr_v6.is_none() => {
                    self.ipam.pod_cidr_v6 = Some(*net)
                }
                _ => {}
            }
        }
        self.meshd = Some(file);
        Ok(())
    }

    /// The config as it is now: `pod-cidrs.json` read again (after meshd added a block).
    pub fn reload_meshd(&self) -> Result<NetConf> {
        let mut c = self.clone();
        if c.meshd.is_some() {
            c.ipam.pod_cidr = None;
            c.ipam.pod_cidr_v6 = None;
            c.meshd = None;
            c.pod_cidrs_from_meshd()?;
            c.validate()?;
        }
        Ok(c)
    }

    /// The families a pod of `namespace` (absent: `default`) gets an address of, with the
    /// node's blocks of each: from meshd's pools, the first that takes the namespace.
    pub fn groups_for(&self, namespace: Option<&str>) -> Result<Vec<Group>> {
        let by_family = |nets: &[IpNet], fams: &[bool], pool: Option<String>| -> Vec<Group> {
            fams.iter()
                .map(|v6| Group {
                    v6: *v6,
                    blocks: nets
                        .iter()
                        .filter(|n| n.addr().is_ipv6() == *v6)
                        .map(IpNet::trunc)
                        .collect(),
                    pool: pool.clone(),
                })
                .collect()
        };
        let Some(file) = &self.meshd else {
            return Ok(self
                .pod_cidrs()
                .into_iter()
                .map(|n| Group {
                    v6: n.addr().is_ipv6(),
                    blocks: vec![n],
                    pool: None,
                })
                .collect());
        };
        if file.pools.is_empty() {
            let fams: Vec<bool> = [false, true]
                .into_iter()
                .filter(|v6| file.pod_cidrs.iter().any(|n| n.addr().is_ipv6() == *v6))
                .collect();
            return Ok(by_family(&file.pod_cidrs, &fams, None));
        }
        let ns = namespace.unwrap_or("default");
        let Some(pool) = file.pools.iter().find(|p| {
            p.namespaces
                .as_ref()
                .is_none_or(|n| n.iter().any(|x| x == ns))
        }) else {
            let names: Vec<&str> = file.pools.iter().map(|p| p.name.as_str()).collect();
            return Err(CniError::new(
                Code::TryAgainLater,
                format!(
                    "ipam: no PodCIDR pool takes namespace {ns:?} (pools: {})",
                    names.join(", ")
                ),
            )
            .with_details(
                "apply an IPPool of type PodCIDR whose namespaceSelector selects the namespace, or one without a namespaceSelector",
            ));
        };
        let fams: Vec<bool> = [("ipv4", false), ("ipv6", true)]
            .into_iter()
            .filter(|(n, _)| pool.families.iter().any(|f| f == n))
            .map(|(_, v6)| v6)
            .collect();
        Ok(by_family(&pool.cidrs, &fams, Some(pool.name.clone())))
    }

    fn validate(&self) -> Result<()> {
        check_version(&self.cni_version)?;
        let invalid = |msg: String| CniError::new(Code::InvalidNetworkConfig, msg);
        if !valid_name(&self.name) {
            return Err(invalid(format!(
                "name: {:?} must match ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$",
                self.name
            )));
        }
        if self.ipam.kind != IPAM_TYPE {
            return Err(invalid(format!(
                "ipam.type: {:?} is not supported (this plugin does its own IPAM: {IPAM_TYPE:?})",
                self.ipam.kind
            )));
        }
        match (&self.ipam.pod_cidr, &self.ipam.pod_cidr_v6) {
            (None, None) => {
                return Err(invalid(
                    "ipam.podCIDR: at least one of podCIDR and podCIDRv6 is required".into(),
                ));
            }
            (Some(IpNet::V6(_)), _) => {
                return Err(invalid("ipam.podCIDR: must be an IPv4 prefix".into()));
            }
            (_, Some(IpNet::V4(_))) => {
                return Err(invalid("ipam.podCIDRv6: must be an IPv6 prefix".into()));
            }
            _ => {}
        }
        if let Some(IpNet::V4(n)) = self.ipam.pod_cidr
            && n.prefix_len() > 30
        {
            return Err(invalid(format!(
                "ipam.podCIDR: {n} is too small (need a gateway and at least one pod: /30 or larger)"
            )));
        }
        if let Some(IpNet::V6(n)) = self.ipam.pod_cidr_v6
            && n.prefix_len() > 126
        {
            return Err(invalid(format!(
                "ipam.podCIDRv6: {n} is too small (/126 or larger)"
            )));
        }
        if let Some(mtu) = self.mtu
            && !(68..=65535).contains(&mtu)
        {
            return Err(invalid(format!("mtu: {mtu} is out of range 68..=65535")));
        }
        common::port::check_container_ports(&self.runtime_config.ports)
            .map_err(|e| invalid(format!("runtimeConfig.ports{e}")))?;
        Ok(())
    }

    /// The node's PodCIDRs (every block meshd gave it, or the configured ones), normalised to
    /// their network address.
    pub fn pod_cidrs(&self) -> Vec<IpNet> {
        if let Some(f) = &self.meshd {
            return f.pod_cidrs.iter().map(IpNet::trunc).collect();
        }
        [self.ipam.pod_cidr, self.ipam.pod_cidr_v6]
            .into_iter()
            .flatten()
            .map(|n| n.trunc())
            .collect()
    }

    /// The `ipam.*` field a pool came from (for messages).
    fn pool_field(pool: &IpNet) -> &'static str {
        if pool.addr().is_ipv4() {
            "ipam.podCIDR"
        } else {
            "ipam.podCIDRv6"
        }
    }

    /// The static addresses the runtime asked for (`runtimeConfig.ips`, `args.cni.ips`,
    /// `CNI_ARGS` `IP=`), each checked to be a pod address of this node's PodCIDRs: not
    /// outside them, not their network, gateway or broadcast address, at most one per
    /// PodCIDR. Empty: allocate as usual.
    pub fn requested_ips(&self, env: &Env) -> Result<Vec<IpAddr>> {
        let mut wanted: Vec<(String, Code, &str)> = Vec::new();
        for (i, s) in self.runtime_config.ips.iter().enumerate() {
            wanted.push((
                format!("runtimeConfig.ips[{i}]"),
                Code::InvalidNetworkConfig,
                s,
            ));
        }
        for (i, s) in self.args.cni.ips.iter().enumerate() {
            wanted.push((format!("args.cni.ips[{i}]"), Code::InvalidNetworkConfig, s));
        }
        if let Some(list) = env.args.other.get("IP") {
            for s in list.split(',') {
                wanted.push(("CNI_ARGS IP".into(), Code::InvalidEnvironment, s));
            }
        }
        let pools = self.pod_cidrs();
        let mut out: Vec<IpAddr> = Vec::new();
        for (field, code, s) in wanted {
            let text = s.trim();
            let ip = text
                .parse::<IpAddr>()
                .or_else(|_| text.parse::<IpNet>().map(|n| n.addr()))
                .map_err(|_| CniError::new(code, format!("{field}: {s:?} is not an IP address")))?;
            let Some(pool) = pools.iter().find(|p| p.contains(&ip)) else {
                let have: Vec<String> = pools
                    .iter()
                    .map(|p| format!("{} {p}", NetConf::pool_field(p)))
                    .collect();
                return Err(CniError::new(
                    code,
                    format!(
                        "{field}: {ip} is outside this node's PodCIDR ({}); request an address inside it, or none",
                        have.join(", ")
                    ),
                ));
            };
            if !crate::ipam::is_pod_address(*pool, ip) {
                return Err(CniError::new(
                    code,
                    format!(
                        "{field}: {ip} is the network, gateway or broadcast address of {} {pool}, not a pod address",
                        NetConf::pool_field(pool)
                    ),
                ));
            }
            if out.contains(&ip) {
                continue;
            }
            if let Some(other) = out.iter().find(|o| pool.contains(*o)) {
                return Err(CniError::new(
                    code,
                    format!(
                        "{field}: {ip} and {other} are both requested from {} {pool}; an attachment gets one address per PodCIDR",
                        NetConf::pool_field(pool)
                    ),
                ));
            }
            out.push(ip);
        }
        Ok(out)
    }

    /// `<dataDir>/<network name>`.
    pub fn network_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
            .join(&self.name)
    }

    /// Whether results carry the pre-1.0 `version` field on IPs.
    pub fn legacy_result(&self) -> bool {
        self.cni_version == "0.4.0"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(json: &str) -> Result<NetConf> {
        NetConf::parse(json.as_bytes())
    }

    const GOOD: &str = r#"{"cniVersion":"1.0.0","name":"mesh","type":"ironmesh-cni",
        "ipam":{"type":"ironmesh","podCIDR":"10.244.1.7/24","podCIDRv6":"fd00:244:1::/64"},
        "dns":{"nameservers":["10.96.0.10"]},"runtimeConfig":{"labels":{"app":"web"}}}"#;

    #[test]
    fn parses_a_good_config() {
        let c = conf(GOOD).unwrap();
        assert_eq!(c.name, "mesh");
        assert_eq!(
            c.pod_cidrs(),
            vec![
                "10.244.1.0/24".parse::<IpNet>().unwrap(),
                "fd00:244:1::/64".parse().unwrap()
            ]
        );
        assert_eq!(c.runtime_config.labels["app"], "web");
        assert_eq!(c.network_dir(), PathBuf::from("/var/lib/ironmesh/cni/mesh"));
    }

    #[test]
    fn the_pods_named_ports_are_read_and_checked() {
        let with = |ports: &str| {
            conf(&GOOD.replace(
                r#""runtimeConfig":{"labels":{"app":"web"}}"#,
                &format!(r#""runtimeConfig":{{"labels":{{"app":"web"}},"ports":{ports}}}"#),
            ))
        };
        let c = with(r#"[{"name":"http","containerPort":8080},{"name":"dns","containerPort":53,"protocol":"UDP"}]"#)
            .unwrap();
        assert_eq!(c.runtime_config.ports.len(), 2);
        assert_eq!(
            c.runtime_config.ports[1].protocol,
            common::PortProtocol::Udp
        );
        let e = with(r#"[{"name":"http","containerPort":1},{"name":"http","containerPort":2}]"#)
            .unwrap_err();
        assert!(
            e.msg
                .contains("runtimeConfig.ports[1].name: \"http\" is used twice"),
            "{e:?}"
        );
        let e = with(r#"[{"name":"HTTP","containerPort":1}]"#).unwrap_err();
        assert!(e.msg.contains("runtimeConfig.ports[0].name"), "{e:?}");
    }

    #[test]
    fn bad_configs_get_spec_codes_naming_the_field() {
        let e = conf("{not json").unwrap_err();
        assert_eq!(e.code, Code::Decode);
        let e = conf(r#"{"name":"x","type":"t","ipam":{"type":"ironmesh"}}"#).unwrap_err();
        assert_eq!(e.code, Code::InvalidNetworkConfig);
        assert!(e.msg.contains("cniVersion"), "{e}");
        let e = conf(&GOOD.replace("1.0.0", "0.3.1")).unwrap_err();
        assert_eq!(e.code, Code::IncompatibleVersion);
        assert!(e.msg.contains("cniVersion"), "{e}");
        let e = conf(&GOOD.replace(r#""type":"ironmesh""#, r#""type":"host-local""#)).unwrap_err();
        assert_eq!(e.code, Code::InvalidNetworkConfig);
        assert!(e.msg.contains("ipam.type"), "{e}");
        let e = conf(&GOOD.replace("10.244.1.7/24", "fd00::/64")).unwrap_err();
        assert!(e.msg.contains("ipam.podCIDR"), "{e}");
        let e = conf(&GOOD.replace("10.244.1.7/24", "banana")).unwrap_err();
        assert_eq!(e.code, Code::InvalidNetworkConfig);
        assert!(e.msg.contains("podCIDR"), "{e}");
        let e = conf(&GOOD.replace(r#""name":"mesh""#, r#""name":"-x""#)).unwrap_err();
        assert!(e.msg.starts_with("name:"), "{e}");
    }

    fn env(vars: &[(&str, &str)]) -> Result<Env> {
        let vars: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env::from_lookup(|k| vars.get(k).cloned())
    }

    #[test]
    fn environment_is_validated() {
        let full = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc123"),
            ("CNI_NETNS", "/var/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0",
            ),
        ];
        let e = env(&full).unwrap();
        assert_eq!(e.command, Command::Add);
        assert_eq!(e.args.pod_namespace.as_deref(), Some("default"));
        assert_eq!(e.args.pod_name.as_deref(), Some("web-0"));
        for missing in [
            "CNI_COMMAND",
            "CNI_CONTAINERID",
            "CNI_NETNS",
            "CNI_IFNAME",
            "CNI_PATH",
        ] {
            let vars: Vec<_> = full
                .iter()
                .copied()
                .filter(|(k, _)| *k != missing)
                .collect();
            let err = env(&vars).unwrap_err();
            assert_eq!(err.code, Code::InvalidEnvironment, "{missing}");
            assert!(err.msg.contains(missing), "{err}");
        }
        // DEL without a netns is fine (the runtime may have lost it).
        let vars: Vec<_> = full
            .iter()
            .copied()
            .filter(|(k, _)| *k != "CNI_NETNS")
            .map(|(k, v)| {
                if k == "CNI_COMMAND" {
                    (k, "DEL")
                } else {
                    (k, v)
                }
            })
            .collect();
        assert_eq!(env(&vars).unwrap().netns, None);
        let err = env(&[("CNI_COMMAND", "FROB")]).unwrap_err();
        assert_eq!(err.code, Code::InvalidEnvironment);
        assert!(err.msg.contains("CNI_COMMAND"));
        let mut bad = full;
        bad[3] = ("CNI_IFNAME", "a/b");
        assert!(env(&bad).unwrap_err().msg.contains("CNI_IFNAME"));
        bad = full;
        bad[5] = ("CNI_ARGS", "novalue");
        assert!(env(&bad).unwrap_err().msg.contains("CNI_ARGS"));
        assert_eq!(
            env(&[("CNI_COMMAND", "VERSION")]).unwrap().command,
            Command::Version
        );
    }

    fn add_env(args: &str) -> Env {
        env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/var/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin"),
            ("CNI_ARGS", args),
        ])
        .unwrap()
    }

    #[test]
    fn requested_addresses_must_be_pod_addresses_of_the_pod_cidrs() {
        let with_ips = |ips: &str| {
            conf(&GOOD.replace(
                r#""runtimeConfig":{"labels":{"app":"web"}}"#,
                &format!(r#""runtimeConfig":{{"ips":{ips}}}"#),
            ))
            .unwrap()
        };
        let none = add_env("");
        assert_eq!(
            conf(GOOD).unwrap().requested_ips(&none).unwrap(),
            Vec::<IpAddr>::new()
        );
        let ok = with_ips(r#"["10.244.1.9/24","fd00:244:1::9"]"#);
        assert_eq!(
            ok.requested_ips(&none).unwrap(),
            vec![
                "10.244.1.9".parse::<IpAddr>().unwrap(),
                "fd00:244:1::9".parse().unwrap()
            ]
        );
        for (ips, says) in [
            (
                r#"["10.9.9.9"]"#,
                "outside this node's PodCIDR (ipam.podCIDR 10.244.1.0/24",
            ),
            (r#"["10.244.1.1"]"#, "gateway"),
            (r#"["10.244.1.0"]"#, "network"),
            (r#"["10.244.1.255"]"#, "broadcast"),
            (r#"["fd00:244:2::1"]"#, "ipam.podCIDRv6 fd00:244:1::/64"),
            (r#"["10.244.1.2","10.244.1.3"]"#, "one address per PodCIDR"),
            (r#"["x"]"#, "not an IP address"),
        ] {
            let e = with_ips(ips).requested_ips(&none).unwrap_err();
            assert_eq!(e.code, Code::InvalidNetworkConfig, "{ips}");
            assert!(e.msg.starts_with("runtimeConfig.ips["), "{e}");
            assert!(e.msg.contains(says), "{e} should say {says}");
        }
        // CNI_ARGS IP= (host-local's convention): environment errors.
        let c = conf(GOOD).unwrap();
        assert_eq!(
            c.requested_ips(&add_env("IgnoreUnknown=1;IP=10.244.1.40"))
                .unwrap(),
            vec!["10.244.1.40".parse::<IpAddr>().unwrap()]
        );
        let e = c.requested_ips(&add_env("IP=192.168.1.1")).unwrap_err();
        assert_eq!(e.code, Code::InvalidEnvironment);
        assert!(e.msg.starts_with("CNI_ARGS IP:"), "{e}");
        // args.cni.ips (conventions' "args").
        let a = conf(&GOOD.replace(
            r#""runtimeConfig""#,
            r#""args":{"cni":{"ips":["10.245.0.2"]}},"runtimeConfig""#,
        ))
        .unwrap();
        let e = a.requested_ips(&none).unwrap_err();
        assert!(
            e.msg.starts_with("args.cni.ips[0]: 10.245.0.2 is outside"),
            "{e}"
        );
    }

    #[test]
    fn without_a_pod_cidr_the_config_takes_the_one_meshd_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let json = format!(
            r#"{{"cniVersion":"1.1.0","name":"mesh","type":"ironmesh-cni","dataDir":{:?},"ipam":{{"type":"ironmesh"}}}}"#,
            dir.path()
        );
        let e = NetConf::parse(json.as_bytes()).unwrap_err();
        assert!(
            e.msg
                .starts_with("ipam.podCIDR: the config names no PodCIDR"),
            "{e}"
        );
        assert!(e.msg.contains("mesh.cni_endpoints_dir"), "{e}");
        std::fs::create_dir_all(dir.path().join("mesh")).unwrap();
        let file = dir.path().join("mesh").join(FILE_NAME);
        std::fs::write(&file, r#"{"podCIDRs":["10.1.3.0/24","fd00:1:3::/64"]}"#).unwrap();
        let c = NetConf::parse(json.as_bytes()).unwrap();
        assert_eq!(
            c.pod_cidrs(),
            vec![
                "10.1.3.0/24".parse::<IpNet>().unwrap(),
                "fd00:1:3::/64".parse().unwrap()
            ]
        );
        // A grown node: two blocks of one family, both the node's, one group.
        std::fs::write(&file, r#"{"podCIDRs":["10.1.3.0/24","10.1.4.0/24"]}"#).unwrap();
        let c = NetConf::parse(json.as_bytes()).unwrap();
        let g = c.groups_for(None).unwrap();
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].blocks.len(), 2);
        assert_eq!(g[0].pool, None);
        // Hostile or broken content is refused naming the file.
        for (body, why) in [
            (r#"{"podCIDRs":["10.1.3.0/31"]}"#.to_string(), "too small"),
            (r#"{"podCIDRs":[]}"#.to_string(), "lists no PodCIDR"),
            (
                r#"{"podCIDRs":["10.1.3.0/24"],"pools":[{"name":"../../etc","families":["ipv4"],"cidrs":[]}]}"#.to_string(),
                "not a pool name",
            ),
            (
                r#"{"podCIDRs":["10.1.3.0/24"],"pools":[{"name":"p","families":["ipv4"],"cidrs":["10.9.0.0/24"]}]}"#.to_string(),
                "10.9.0.0/24 is not one of podCIDRs",
            ),
            (
                r#"{"podCIDRs":["10.1.3.0/24"],"pools":[{"name":"p","families":["ipx"],"cidrs":[]}]}"#.to_string(),
                "is not ipv4 or ipv6",
            ),
            ("x".repeat(70_000), "larger than 64 KiB"),
        ] {
            std::fs::write(&file, body).unwrap();
            let e = NetConf::parse(json.as_bytes()).unwrap_err();
            assert!(e.msg.contains(why), "{why}: {e}");
            assert!(e.msg.contains(FILE_NAME), "{e}");
        }
    }

    #[test]
    fn a_pod_takes_the_first_pool_that_takes_its_namespace_with_every_family_it_has() {
        let dir = tempfile::tempdir().unwrap();
        let json = format!(
            r#"{{"cniVersion":"1.1.0","name":"mesh","type":"ironmesh-cni","dataDir":{:?},"ipam":{{"type":"ironmesh"}}}}"#,
            dir.path()
        );
        std::fs::create_dir_all(dir.path().join("mesh")).unwrap();
        std::fs::write(
            dir.path().join("mesh").join(FILE_NAME),
            r#"{"podCIDRs":["10.1.3.0/24","10.9.0.8/29","10.9.0.16/29"],"pools":[
                {"name":"tenants","namespaces":["team-a"],"families":["ipv4","ipv6"],"cidrs":["10.9.0.8/29","10.9.0.16/29"]},
                {"name":"mesh.pod_cidr_pools","families":["ipv4"],"cidrs":["10.1.3.0/24"]}]}"#,
        )
        .unwrap();
        let c = NetConf::parse(json.as_bytes()).unwrap();
        let a = c.groups_for(Some("team-a")).unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].pool.as_deref(), Some("tenants"));
        assert_eq!(
            a[0].blocks,
            vec![
                "10.9.0.8/29".parse::<IpNet>().unwrap(),
                "10.9.0.16/29".parse().unwrap()
            ]
        );
        // The node has no IPv6 block of the pool yet: an empty group (the plugin asks meshd).
        assert!(a[1].v6 && a[1].blocks.is_empty());
        let d = c.groups_for(None).unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].pool.as_deref(), Some("mesh.pod_cidr_pools"));
        assert_eq!(c.pod_cidrs().len(), 3);
    }
}
