//! `[mesh]`: this cluster's etcd, its ID, and the remote clusters it meshes with.

use std::collections::HashMap;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

use common::{ClusterId, ClusterName, IdentityLayout};

use crate::error::Errors;
use crate::node::absolute_path;
use crate::raw::{RawEtcdAuth, RawMesh, RawPodCidrPool, RawTls};
use crate::secret::{Secret, SecretFileError, read_secret_file};

/// Default TTL (seconds) of the leases meshd holds: its node record and mirror elections.
pub const DEFAULT_LEASE_TTL: u32 = 10;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mesh {
    pub etcd_endpoints: Vec<EtcdEndpoint>,
    pub cluster_id: ClusterId,
    pub identity: IdentityLayout,
    pub tls: Option<Tls>,
    /// `mesh.auth`: the etcd user this cluster's meshd logs in as (absent: no etcd auth, or
    /// the identity of the TLS client certificate).
    pub auth: Option<EtcdAuth>,
    pub remote_clusters: Vec<RemoteCluster>,
    /// Cluster pools the nodes' PodCIDRs are carved from (empty: meshd allocates none).
    pub pod_cidr_pools: Vec<PodCidrPool>,
    /// The node's addresses in its record (absent: meshd uses the first global address).
    pub node_ipv4: Option<Ipv4Addr>,
    pub node_ipv6: Option<Ipv6Addr>,
    /// TTL of meshd's leases in seconds: a dead node's record (and a dead mirror's
    /// election key) goes after about this long.
    pub lease_ttl_secs: u32,
    /// `mesh.etcd_op_timeout`: the deadline of one etcd request (and of one lease renewal);
    /// default and upper bound from the lease TTL ([`LeaseTiming`]).
    pub etcd_op_timeout: Duration,
    /// bgpd's API socket: meshd sends it this node's adverts (absent: meshd drives no bgpd).
    pub bgpd_socket: Option<PathBuf>,
    /// Which LoadBalancer VIPs this node advertises over BGP.
    pub advertise_vips: AdvertiseVips,
    /// The WireGuard device meshd configures when `[encryption]` uses WireGuard.
    pub wireguard_device: String,
    /// Where the CNI plugin writes one endpoint record per pod attachment
    /// (`<dataDir>/<network>/endpoints`); meshd registers them.
    pub cni_endpoints_dir: PathBuf,
    /// Revoke the node's lease when meshd stops, so the other nodes drop it at once (for
    /// decommissioning). Off by default: a restarted meshd takes its record back before the
    /// lease runs out, and peers keep their WireGuard peer, routes and entries meanwhile.
    pub deregister_on_stop: bool,
    /// `mesh.identity_gc_grace`: how long a security identity stays allocated with no
    /// endpoint using it, so a pod that comes back keeps its number (and policy stays put).
    pub identity_gc_grace: Duration,
    /// `mesh.pod_cidr_release_grace`: how long a node's PodCIDRs stay reserved after its record
    /// went (lease ran out), so a node that comes back keeps its pods' addresses.
    pub pod_cidr_release_grace: Duration,
    /// `mesh.pod_cidr_block_idle`: how long a node's extra PodCIDR block (one it took when its
    /// blocks filled up) holds no pod before the node gives it back.
    pub pod_cidr_block_idle: Duration,
    /// `mesh.service_cidrs`: where ClusterIPs of applied Services come from (one CIDR per
    /// family at most; empty: Services that need a ClusterIP are refused, naming this field).
    pub service_cidrs: Vec<IpNet>,
}

/// How meshd renews its leases for a TTL: a renewal every `keepalive_interval` (TTL/4); one
/// renewal that fails after `op_timeout` plus a failover to a healthy etcd member (another
/// `op_timeout`) must still land [`LeaseTiming::MARGIN`] before the TTL runs out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    pub ttl: Duration,
    pub keepalive_interval: Duration,
    /// The longest op timeout the TTL allows.
    pub max_op_timeout: Duration,
}

impl LeaseTiming {
    /// Room left for the etcd round trip and scheduling.
    pub const MARGIN: Duration = Duration::from_millis(500);
    /// The op timeout when none is configured, if the TTL allows it.
    pub const DEFAULT_OP_TIMEOUT: Duration = Duration::from_secs(3);

    pub fn for_ttl(ttl: Duration) -> Self {
        let keepalive_interval = ttl / 4;
        let max_op_timeout = ttl.saturating_sub(keepalive_interval + Self::MARGIN) / 2;
        LeaseTiming {
            ttl,
            keepalive_interval,
            max_op_timeout,
        }
    }

    /// The default op timeout: 3 s, or less when the TTL needs it.
    pub fn default_op_timeout(&self) -> Duration {
        Self::DEFAULT_OP_TIMEOUT.min(self.max_op_timeout)
    }
}

/// Default of `mesh.identity_gc_grace`.
pub const DEFAULT_IDENTITY_GC_GRACE: Duration = Duration::from_secs(300);
/// Default of `mesh.pod_cidr_block_idle`.
pub const DEFAULT_POD_CIDR_BLOCK_IDLE: Duration = Duration::from_secs(600);
/// Default of `mesh.pod_cidr_release_grace`.
pub const DEFAULT_POD_CIDR_RELEASE_GRACE: Duration = Duration::from_secs(600);
const MAX_GRACE: Duration = Duration::from_secs(30 * 86_400);

/// Default of `mesh.wireguard_device`.
pub const DEFAULT_WIREGUARD_DEVICE: &str = "ironmesh-wg0";

/// Default of `mesh.cni_endpoints_dir`: the CNI plugin's default `dataDir`
/// (`/var/lib/ironmesh/cni`) and the network name `ironmesh`.
pub const DEFAULT_CNI_ENDPOINTS_DIR: &str = "/var/lib/ironmesh/cni/ironmesh/endpoints";

/// `mesh.advertise_vips`: which LoadBalancer VIPs a node announces to its BGP peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AdvertiseVips {
    /// Only VIPs of services with an active backend on this node (`"local-backends"`), so
    /// the ToR spreads traffic over the nodes that serve it (ECMP).
    #[default]
    LocalBackends,
    /// Every VIP of the cluster (`"all"`), whatever node hosts its backends.
    All,
}

impl AdvertiseVips {
    /// The name as written in config.
    pub fn name(self) -> &'static str {
        match self {
            AdvertiseVips::LocalBackends => "local-backends",
            AdvertiseVips::All => "all",
        }
    }
}

/// `[[mesh.pod_cidr_pools]]`: each node gets one `/node_mask` of `cidr` per family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodCidrPool {
    pub cidr: IpNet,
    pub node_mask: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteCluster {
    pub name: ClusterName,
    pub id: ClusterId,
    pub endpoints: Vec<EtcdEndpoint>,
    pub tls: Option<Tls>,
    /// `auth`: the user this cluster reads the remote's etcd as (its `<cluster>-reader`).
    pub auth: Option<EtcdAuth>,
    /// `pod_cidrs`: the remote's PodCIDR pools; its node PodCIDRs, endpoint IPs and service
    /// backends must be inside (empty: none of them is accepted from it).
    pub pod_cidrs: Vec<IpNet>,
    /// `node_cidrs`: where the remote's node addresses and tunnel endpoints are (empty: no
    /// node with an address is accepted from it).
    pub node_cidrs: Vec<IpNet>,
    /// `service_cidrs`: the remote's ClusterIP ranges and LoadBalancer VIP pools (empty: no
    /// service record with a VIP is accepted from it).
    pub service_cidrs: Vec<IpNet>,
}

/// PEM files for an etcd connection; a client cert needs its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    pub ca_file: Option<PathBuf>,
    pub client: Option<(PathBuf, PathBuf)>,
}

/// An etcd user and the file holding its password (`user`, `password_file`). The password is
/// read only when a connection needs it ([`EtcdAuth::password`]), so it never sits in the
/// config, its Debug output or `ironctl config check`'s output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdAuth {
    pub user: String,
    pub password_file: PathBuf,
    /// The TOML path of this table (`mesh.auth`, `mesh.remote_clusters[0].auth`), for errors.
    pub field: String,
}

impl EtcdAuth {
    /// Reads the password file: private (`chmod 600`), bounded, one line. Errors name
    /// `<field>.password_file` and never quote the file.
    pub fn password(&self) -> Result<Secret, SecretFileError> {
        read_secret_file(
            &self.password_file,
            &format!("{}.password_file", self.field),
        )
    }
}

/// The longest etcd user name accepted.
const MAX_USER: usize = 128;

fn auth(errs: &mut Errors, path: &str, raw: Option<&RawEtcdAuth>) -> Option<Option<EtcdAuth>> {
    let Some(raw) = raw else { return Some(None) };
    let user_ok = !raw.user.is_empty()
        && raw.user.len() <= MAX_USER
        && raw
            .user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
    if !user_ok {
        let shown = crate::error::bounded(&raw.user, 64);
        errs.push(
            format!("{path}.user"),
            format!("{shown:?} is not an etcd user name; use 1 to {MAX_USER} letters, digits, '-', '_', '.' or '@' (e.g. \"red\", or \"red-reader\" for a remote)"),
        );
    }
    let file = absolute_path(errs, &format!("{path}.password_file"), &raw.password_file);
    if !user_ok {
        return None;
    }
    Some(Some(EtcdAuth {
        user: raw.user.clone(),
        password_file: file?,
        field: path.to_string(),
    }))
}

/// `http(s)://host:port`, as etcd clients take them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EtcdEndpoint {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl fmt::Display for EtcdEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

impl std::str::FromStr for EtcdEndpoint {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let err = || {
            format!(
                "{s:?} is not an etcd endpoint; write http://HOST:PORT or https://HOST:PORT (e.g. \"https://10.0.0.5:2379\")"
            )
        };
        let (tls, rest) = if let Some(r) = s.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(err());
        };
        let (host, port) = rest.rsplit_once(':').ok_or_else(err)?;
        let port: u16 = port.parse().ok().filter(|p| *p != 0).ok_or_else(err)?;
        let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
            None => {
                !host.is_empty()
                    && host
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            }
        };
        if !host_ok {
            return Err(err());
        }
        Ok(EtcdEndpoint {
            tls,
            host: host.to_owned(),
            port,
        })
    }
}

fn endpoints(errs: &mut Errors, path: &str, raw: &[String]) -> Option<Vec<EtcdEndpoint>> {
    if raw.is_empty() {
        errs.push(
            path,
            "is empty; list at least one etcd endpoint like \"https://10.0.0.5:2379\"",
        );
        return None;
    }
    raw.iter()
        .enumerate()
        .map(|(i, e)| errs.check(format!("{path}[{i}]"), e.parse()))
        .collect()
}

fn tls(errs: &mut Errors, path: &str, raw: Option<&RawTls>) -> Option<Option<Tls>> {
    let Some(raw) = raw else { return Some(None) };
    let file = |errs: &mut Errors, f: &str, v: &Option<String>| match v {
        Some(v) => absolute_path(errs, &format!("{path}.{f}"), v).map(Some),
        None => Some(None),
    };
    let ca = file(errs, "ca_file", &raw.ca_file);
    let cert = file(errs, "cert_file", &raw.cert_file);
    let key = file(errs, "key_file", &raw.key_file);
    let client = match (cert?, key?) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        (Some(_), None) => {
            errs.push(
                format!("{path}.key_file"),
                "missing; cert_file needs the matching key_file",
            );
            return None;
        }
        (None, Some(_)) => {
            errs.push(
                format!("{path}.cert_file"),
                "missing; key_file needs the matching cert_file",
            );
            return None;
        }
    };
    Some(Some(Tls {
        ca_file: ca?,
        client,
    }))
}

/// `mesh.identity_gc_grace` and `mesh.pod_cidr_release_grace` (counted from the moment the
/// node's record went, i.e. after its lease ran out).
fn graces(errs: &mut Errors, raw: &RawMesh) -> (Option<Duration>, Option<Duration>) {
    use crate::duration::field;
    let identity = match raw.identity_gc_grace.as_deref() {
        Some(t) => field(
            errs,
            "mesh.identity_gc_grace",
            t,
            Duration::from_secs(30)..=MAX_GRACE,
            "an identity whose only pod restarts must keep its number",
            "write e.g. \"5m\" (the default)",
        ),
        None => Some(DEFAULT_IDENTITY_GC_GRACE),
    };
    let pod_cidr = match raw.pod_cidr_release_grace.as_deref() {
        Some(t) => field(
            errs,
            "mesh.pod_cidr_release_grace",
            t,
            Duration::from_secs(60)..=MAX_GRACE,
            "a node that reboots must find its PodCIDRs still its own",
            "write e.g. \"10m\" (the default)",
        ),
        None => Some(DEFAULT_POD_CIDR_RELEASE_GRACE),
    };
    (identity, pod_cidr)
}

pub(crate) fn validate(
    raw: RawMesh,
    own_cluster: Option<&ClusterName>,
    errs: &mut Errors,
) -> Option<Mesh> {
    let etcd_endpoints = endpoints(errs, "mesh.etcd_endpoints", &raw.etcd_endpoints);
    let identity = match &raw.identity {
        Some(id) => {
            let path = "mesh.identity.cluster_bits";
            match u8::try_from(id.cluster_bits) {
                Ok(bits) => errs.check(path, IdentityLayout::new(bits)),
                Err(_) => {
                    errs.push(
                        path,
                        format!("{} is not supported; use 8, 9 or 10", id.cluster_bits),
                    );
                    None
                }
            }
        }
        None => Some(IdentityLayout::default()),
    };
    let layout = identity.unwrap_or_default();
    let cluster_id = check_cluster_id(errs, "mesh.cluster_id", raw.cluster_id, layout);
    let own_tls = tls(errs, "mesh.tls", raw.tls.as_ref());
    let own_auth = auth(errs, "mesh.auth", raw.auth.as_ref());

    let mut remotes = Vec::new();
    let mut by_name: HashMap<String, usize> = HashMap::new();
    let mut by_id: HashMap<u16, usize> = HashMap::new();
    for (i, r) in raw.remote_clusters.iter().enumerate() {
        let at = |f: &str| format!("mesh.remote_clusters[{i}].{f}");
        let name = errs.check(at("name"), ClusterName::new(&r.name));
        if let Some(n) = &name {
            if Some(n) == own_cluster {
                errs.push(
                    at("name"),
                    format!(
                        "{:?} is this node's own cluster (node.cluster); list only other clusters",
                        n.as_str()
                    ),
                );
            } else if let Some(first) = by_name.get(n.as_str()) {
                errs.push(at("name"), format!("{:?} is already listed as mesh.remote_clusters[{first}]; list each cluster once", n.as_str()));
            } else {
                by_name.insert(n.to_string(), i);
            }
        }
        let id = check_cluster_id(errs, &at("id"), r.id, layout);
        if let Some(id) = id {
            if Some(id) == cluster_id {
                errs.push(at("id"), format!("{id} clashes with this cluster's mesh.cluster_id; every cluster in a mesh needs its own ID"));
            } else if let Some(first) = by_id.get(&id.get()) {
                errs.push(at("id"), format!("{id} is already the ID of mesh.remote_clusters[{first}]; every cluster in a mesh needs its own ID"));
            } else {
                by_id.insert(id.get(), i);
            }
        }
        let eps = endpoints(errs, &at("endpoints"), &r.endpoints);
        let tls = tls(errs, &at("tls"), r.tls.as_ref());
        let remote_auth = auth(errs, &at("auth"), r.auth.as_ref());
        let pods = cidr_list(errs, &at("pod_cidrs"), &r.pod_cidrs, "10.2.0.0/16");
        let nodes = cidr_list(errs, &at("node_cidrs"), &r.node_cidrs, "198.51.100.0/24");
        let services = cidr_list(errs, &at("service_cidrs"), &r.service_cidrs, "10.96.0.0/16");
        remotes.push(
            match (name, id, eps, tls, remote_auth, pods, nodes, services) {
                (
                    Some(name),
                    Some(id),
                    Some(endpoints),
                    Some(tls),
                    Some(auth),
                    Some(pod_cidrs),
                    Some(node_cidrs),
                    Some(service_cidrs),
                ) => Some(RemoteCluster {
                    name,
                    id,
                    endpoints,
                    tls,
                    auth,
                    pod_cidrs,
                    node_cidrs,
                    service_cidrs,
                }),
                _ => None,
            },
        );
    }
    let pools = pod_cidr_pools(errs, &raw.pod_cidr_pools);
    let node_ipv4 = address(errs, "mesh.node_ipv4", raw.node_ipv4.as_deref());
    let node_ipv6 = address(errs, "mesh.node_ipv6", raw.node_ipv6.as_deref());
    let lease_ttl_secs = match raw.lease_ttl {
        Some(v) => errs.int(
            "mesh.lease_ttl",
            v,
            2,
            3600,
            "seconds; a dead node is noticed after about this long",
        ),
        None => Some(DEFAULT_LEASE_TTL),
    };
    let etcd_op_timeout = lease_ttl_secs.and_then(|ttl| {
        let timing = LeaseTiming::for_ttl(Duration::from_secs(u64::from(ttl)));
        match raw.etcd_op_timeout.as_deref() {
            None => Some(timing.default_op_timeout()),
            Some(t) => {
                let d = crate::duration::field(
                    errs,
                    "mesh.etcd_op_timeout",
                    t,
                    Duration::from_millis(100)..=Duration::from_secs(60),
                    "an etcd round trip must fit",
                    "write e.g. \"1s\"",
                )?;
                if d > timing.max_op_timeout {
                    errs.push(
                        "mesh.etcd_op_timeout",
                        format!(
                            "{t:?} is too long for mesh.lease_ttl = {ttl}: the lease is renewed every {:?} (TTL/4), and one renewal that times out plus a failover to another etcd member (2 × the op timeout) must land {:?} before the TTL; use at most {:?} or raise mesh.lease_ttl",
                            timing.keepalive_interval,
                            LeaseTiming::MARGIN,
                            timing.max_op_timeout
                        ),
                    );
                    return None;
                }
                Some(d)
            }
        }
    });
    let bgpd_socket = match raw.bgpd_socket.as_deref() {
        Some(v) => absolute_path(errs, "mesh.bgpd_socket", v).map(Some),
        None => Some(None),
    };
    let advertise_vips = match raw.advertise_vips.as_deref() {
        None | Some("local-backends") => Some(AdvertiseVips::LocalBackends),
        Some("all") => Some(AdvertiseVips::All),
        Some(other) => {
            errs.push(
                "mesh.advertise_vips",
                format!("{other:?} is not a choice; use \"local-backends\" (VIPs of services with an active backend on this node) or \"all\""),
            );
            None
        }
    };
    let wireguard_device = match raw.wireguard_device.as_deref() {
        None => Some(DEFAULT_WIREGUARD_DEVICE.to_string()),
        Some(d)
            if (1..=15).contains(&d.len())
                && d.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) =>
        {
            Some(d.to_string())
        }
        Some(d) => {
            errs.push(
                "mesh.wireguard_device",
                format!(
                    "{d:?} is not an interface name; use 1 to 15 letters, digits, '-', '_' or '.'"
                ),
            );
            None
        }
    };
    let cni_endpoints_dir = absolute_path(
        errs,
        "mesh.cni_endpoints_dir",
        raw.cni_endpoints_dir
            .as_deref()
            .unwrap_or(DEFAULT_CNI_ENDPOINTS_DIR),
    );
    let (identity_gc_grace, pod_cidr_release_grace) = graces(errs, &raw);
    let pod_cidr_block_idle = match raw.pod_cidr_block_idle.as_deref() {
        Some(t) => crate::duration::field(
            errs,
            "mesh.pod_cidr_block_idle",
            t,
            Duration::from_secs(1)..=MAX_GRACE,
            "a block given back at once would be taken again by the next burst of pods",
            "write e.g. \"10m\" (the default)",
        ),
        None => Some(DEFAULT_POD_CIDR_BLOCK_IDLE),
    };
    let service_cidrs = service_cidrs(errs, &raw.service_cidrs, pools.as_deref());
    Some(Mesh {
        service_cidrs: service_cidrs?,
        identity_gc_grace: identity_gc_grace?,
        pod_cidr_release_grace: pod_cidr_release_grace?,
        pod_cidr_block_idle: pod_cidr_block_idle?,
        deregister_on_stop: raw.deregister_on_stop.unwrap_or(false),
        cni_endpoints_dir: cni_endpoints_dir?,
        wireguard_device: wireguard_device?,
        bgpd_socket: bgpd_socket?,
        advertise_vips: advertise_vips?,
        pod_cidr_pools: pools?,
        node_ipv4: node_ipv4?,
        node_ipv6: node_ipv6?,
        lease_ttl_secs: lease_ttl_secs?,
        etcd_op_timeout: etcd_op_timeout?,
        etcd_endpoints: etcd_endpoints?,
        cluster_id: cluster_id?,
        identity: identity?,
        tls: own_tls?,
        auth: own_auth?,
        remote_clusters: remotes.into_iter().collect::<Option<_>>()?,
    })
}

fn address<T: std::str::FromStr>(
    errs: &mut Errors,
    path: &str,
    v: Option<&str>,
) -> Option<Option<T>> {
    let Some(v) = v else { return Some(None) };
    match v.parse() {
        Ok(a) => Some(Some(a)),
        Err(_) => {
            let fam = if path.ends_with("ipv4") {
                "IPv4"
            } else {
                "IPv6"
            };
            errs.push(
                path,
                format!(
                    "{v:?} is not an {fam} address; write it like \"{}\"",
                    if fam == "IPv4" {
                        "192.0.2.10"
                    } else {
                        "2001:db8::10"
                    }
                ),
            );
            None
        }
    }
}

/// A list of CIDRs (a remote cluster's claims): each a network without host bits.
fn cidr_list(errs: &mut Errors, path: &str, raw: &[String], example: &str) -> Option<Vec<IpNet>> {
    let mut ok = true;
    let mut out = Vec::new();
    for (i, c) in raw.iter().enumerate() {
        let at = format!("{path}[{i}]");
        match c.parse::<IpNet>() {
            Ok(n) if n.trunc() == n => out.push(n),
            Ok(n) => {
                errs.push(
                    at,
                    format!("{c} has host bits set; write the network, {}", n.trunc()),
                );
                ok = false;
            }
            Err(_) => {
                errs.push(
                    at,
                    format!("{c:?} is not a CIDR; write it like \"{example}\""),
                );
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

fn service_cidrs(
    errs: &mut Errors,
    raw: &[String],
    pools: Option<&[PodCidrPool]>,
) -> Option<Vec<IpNet>> {
    let mut out: Vec<IpNet> = Vec::new();
    let mut ok = true;
    for (i, c) in raw.iter().enumerate() {
        let at = format!("mesh.service_cidrs[{i}]");
        let net = match c.parse::<IpNet>() {
            Ok(n) if n.trunc() == n => n,
            Ok(n) => {
                errs.push(at, format!("{c} has host bits set; write {}", n.trunc()));
                ok = false;
                continue;
            }
            Err(_) => {
                errs.push(
                    at,
                    format!(
                        "{c:?} is not a CIDR; write it like \"10.96.0.0/16\" or \"fd00:96::/112\""
                    ),
                );
                ok = false;
                continue;
            }
        };
        if out.iter().any(|o| {
            matches!(
                (o, &net),
                (IpNet::V4(_), IpNet::V4(_)) | (IpNet::V6(_), IpNet::V6(_))
            )
        }) {
            errs.push(at, format!("{net}: one service CIDR per IP family"));
            ok = false;
            continue;
        }
        if let Some(p) = pools
            .unwrap_or_default()
            .iter()
            .find(|p| p.cidr.contains(&net.network()) || net.contains(&p.cidr.network()))
        {
            errs.push(
                at,
                format!("{net} overlaps the pod CIDR pool {}; service and pod addresses must be disjoint", p.cidr),
            );
            ok = false;
            continue;
        }
        out.push(net);
    }
    ok.then_some(out)
}

fn pod_cidr_pools(errs: &mut Errors, raw: &[RawPodCidrPool]) -> Option<Vec<PodCidrPool>> {
    let mut out: Vec<Option<PodCidrPool>> = Vec::new();
    for (i, p) in raw.iter().enumerate() {
        let at = |f: &str| format!("mesh.pod_cidr_pools[{i}].{f}");
        let cidr = match p.cidr.parse::<IpNet>() {
            Ok(c) if c.trunc() == c => Some(c),
            Ok(c) => {
                errs.push(
                    at("cidr"),
                    format!("{c} has host bits set; write the network, {}", c.trunc()),
                );
                None
            }
            Err(_) => {
                errs.push(
                    at("cidr"),
                    format!(
                        "{:?} is not a CIDR; write it like \"10.244.0.0/16\"",
                        p.cidr
                    ),
                );
                None
            }
        };
        let mask = cidr.and_then(|c| {
            errs.int(
                at("node_mask"),
                p.node_mask,
                i64::from(c.prefix_len()),
                i64::from(c.max_prefix_len()),
                &format!(
                    "the size of each node's PodCIDR, at least the pool's /{}",
                    c.prefix_len()
                ),
            )
        });
        if let Some(c) = cidr {
            let clash = out.iter().enumerate().find(|(_, o)| {
                o.is_some_and(|o| o.cidr.contains(&c.network()) || c.contains(&o.cidr.network()))
            });
            if let Some((j, _)) = clash {
                errs.push(
                    at("cidr"),
                    format!("{c} overlaps mesh.pod_cidr_pools[{j}]; pools must be disjoint"),
                );
            }
        }
        out.push(match (cidr, mask) {
            (Some(cidr), Some(node_mask)) => Some(PodCidrPool { cidr, node_mask }),
            _ => None,
        });
    }
    out.into_iter().collect()
}

fn check_cluster_id(
    errs: &mut Errors,
    path: &str,
    v: i64,
    layout: IdentityLayout,
) -> Option<ClusterId> {
    let r = u32::try_from(v)
        .map_err(|_| ())
        .and_then(|v| layout.cluster_id(v).map_err(|_| ()));
    if r.is_err() {
        errs.push(
            path,
            format!(
                "{v} is out of range; use 1..={} (mesh.identity.cluster_bits = {}; raise it to 9 or 10 for more clusters)",
                layout.max_cluster_id(),
                layout.cluster_bits()
            ),
        );
    }
    r.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        let e: EtcdEndpoint = "https://10.0.0.5:2379".parse().unwrap();
        assert_eq!((e.tls, e.host.as_str(), e.port), (true, "10.0.0.5", 2379));
        assert_eq!(e.to_string(), "https://10.0.0.5:2379");
        let e: EtcdEndpoint = "http://[2001:db8::5]:2379".parse().unwrap();
        assert_eq!(e.to_string(), "http://[2001:db8::5]:2379");
        assert!("http://etcd-0.example:2379".parse::<EtcdEndpoint>().is_ok());
        for bad in [
            "10.0.0.5:2379",
            "https://10.0.0.5",
            "https://:2379",
            "http://h:0",
            "http://h:99999",
            "http://[zz]:1",
            "grpc://h:1",
            "http://h/x:1",
        ] {
            assert!(bad.parse::<EtcdEndpoint>().is_err(), "{bad}");
        }
    }
}
