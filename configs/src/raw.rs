//! The TOML file as written: loose types (strings, i64) so that validation
//! can name the field and the fix instead of a generic serde message.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub node: RawNode,
    pub bgp: Option<RawBgp>,
    pub encryption: Option<RawEncryption>,
    pub mesh: Option<RawMesh>,
    pub datapath: Option<RawDatapath>,
    pub observe: Option<RawObserve>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawObserve {
    pub serve: Option<bool>,
    pub port: Option<i64>,
    pub relay: Option<bool>,
    pub ui: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNode {
    pub name: String,
    pub cluster: String,
    pub state_dir: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBgp {
    pub local_asn: RawAsn,
    pub router_id: Option<String>,
    pub listen_address: Option<String>,
    pub listen_port: Option<i64>,
    #[serde(default)]
    pub peers: Vec<RawPeer>,
    #[serde(default)]
    pub adverts: Vec<RawAdvert>,
    pub fib: Option<RawFib>,
    #[serde(default)]
    pub pools: Vec<RawPool>,
    #[serde(default)]
    pub policies: Vec<RawPolicy>,
    pub bmp: Option<RawBmp>,
    #[serde(default)]
    pub allow_special_prefixes: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBmp {
    pub collectors: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub name: String,
    pub default: Option<String>,
    #[serde(default)]
    pub rules: Vec<RawRule>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    #[serde(default)]
    pub match_prefixes: Vec<String>,
    #[serde(default)]
    pub match_communities: Vec<String>,
    #[serde(default)]
    pub match_large_communities: Vec<String>,
    pub match_as_path_contains: Option<i64>,
    pub match_neighbor_as: Option<i64>,
    pub match_origin_as: Option<i64>,
    pub match_originated: Option<bool>,
    pub match_family: Option<String>,
    #[serde(default)]
    pub add_communities: Vec<String>,
    #[serde(default)]
    pub remove_communities: Vec<String>,
    #[serde(default)]
    pub add_large_communities: Vec<String>,
    #[serde(default)]
    pub remove_large_communities: Vec<String>,
    pub set_local_pref: Option<i64>,
    pub set_med: Option<i64>,
    pub prepend: Option<i64>,
    pub action: Option<String>,
}

/// One name or a list of names (a policy chain).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawNames {
    One(String),
    Many(Vec<String>),
}

impl RawNames {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            RawNames::One(s) => vec![s],
            RawNames::Many(v) => v,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFib {
    pub table: Option<i64>,
    pub protocol: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPeer {
    pub name: String,
    pub address: Option<String>,
    pub interface: Option<String>,
    pub peer_asn: RawAsn,
    pub local_address: Option<String>,
    pub port: Option<i64>,
    pub md5_password: Option<String>,
    #[serde(default)]
    pub ttl_security: bool,
    pub multihop_ttl: Option<i64>,
    pub hold_time: Option<i64>,
    pub keepalive: Option<i64>,
    #[serde(default)]
    pub passive: bool,
    pub families: Option<Vec<String>>,
    pub import_policy: Option<RawNames>,
    pub export_policy: Option<RawNames>,
    pub ebgp_requires_policy: Option<bool>,
    #[serde(default)]
    pub next_hop_self: bool,
    pub enforce_first_as: Option<bool>,
    pub max_prefixes: Option<i64>,
    pub max_prefixes_action: Option<String>,
    pub max_prefixes_restart: Option<i64>,
    #[serde(default)]
    pub bfd: bool,
    pub bfd_min_tx_ms: Option<i64>,
    pub bfd_min_rx_ms: Option<i64>,
    pub bfd_multiplier: Option<i64>,
    pub bfd_min_ttl: Option<i64>,
    pub graceful_restart_time: Option<i64>,
    pub graceful_notification: Option<bool>,
    pub long_lived_stale_time: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdvert {
    pub prefix: String,
    #[serde(default)]
    pub communities: Vec<String>,
    #[serde(default)]
    pub large_communities: Vec<String>,
    pub local_pref: Option<i64>,
    pub pool: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPool {
    pub name: String,
    pub prefix: String,
    #[serde(default)]
    pub aggregate: bool,
    #[serde(default)]
    pub communities: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEncryption {
    pub mode: Option<String>,
    pub backend: Option<String>,
    pub wireguard: Option<RawWireGuard>,
    pub ipsec: Option<RawIpsec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIpsec {
    pub key_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWireGuard {
    pub listen_port: Option<i64>,
    pub persistent_keepalive: Option<i64>,
    pub rotate_every: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMesh {
    pub etcd_endpoints: Vec<String>,
    pub cluster_id: i64,
    pub identity: Option<RawIdentity>,
    pub tls: Option<RawTls>,
    pub auth: Option<RawEtcdAuth>,
    #[serde(default)]
    pub remote_clusters: Vec<RawRemoteCluster>,
    #[serde(default)]
    pub pod_cidr_pools: Vec<RawPodCidrPool>,
    pub node_ipv4: Option<String>,
    pub node_ipv6: Option<String>,
    pub lease_ttl: Option<i64>,
    pub etcd_op_timeout: Option<String>,
    pub bgpd_socket: Option<String>,
    pub advertise_vips: Option<String>,
    pub wireguard_device: Option<String>,
    pub cni_endpoints_dir: Option<String>,
    pub deregister_on_stop: Option<bool>,
    pub identity_gc_grace: Option<String>,
    pub pod_cidr_release_grace: Option<String>,
    pub pod_cidr_block_idle: Option<String>,
    #[serde(default)]
    pub service_cidrs: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPodCidrPool {
    pub cidr: String,
    pub node_mask: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIdentity {
    pub cluster_bits: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
}

/// `[mesh.auth]` / `[mesh.remote_clusters.auth]`: an etcd user and the file of its password.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEtcdAuth {
    pub user: String,
    pub password_file: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRemoteCluster {
    pub name: String,
    pub id: i64,
    pub endpoints: Vec<String>,
    pub tls: Option<RawTls>,
    pub auth: Option<RawEtcdAuth>,
    #[serde(default)]
    pub pod_cidrs: Vec<String>,
    #[serde(default)]
    pub node_cidrs: Vec<String>,
    #[serde(default)]
    pub service_cidrs: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDatapath {
    pub mode: Option<String>,
    pub vxlan_port: Option<i64>,
    pub bpffs: Option<String>,
    pub load: Option<bool>,
    pub uplinks: Option<Vec<String>>,
    pub vxlan_device: Option<String>,
    pub policy_enforcement: Option<String>,
    pub flows: Option<i64>,
}

/// An ASN as written: a number, or a string ("any" or asdot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawAsn {
    Number(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawAsn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawAsn;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an ASN (1..=4294967295) or \"any\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawAsn, E> {
                Ok(RawAsn::Number(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawAsn, E> {
                Ok(RawAsn::Number(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawAsn, E> {
                Ok(RawAsn::Text(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}
