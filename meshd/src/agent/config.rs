//! What the agent runs with: the validated node config turned into meshd's own settings.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use common::{ClusterId, ClusterName, IdentityLayout, NodeName};

use super::AgentError;
use super::datapath_owner::OwnerSettings;
use super::sinks::ipsec::IpsecSettings;
use super::sinks::wireguard::WireGuardSettings;
use crate::ipam::Pool;
use crate::kvstore::{KvConfig, TlsFiles};
use crate::reconcile::VipAdverts;

/// One remote cluster to mirror.
#[derive(Debug, Clone)]
pub struct RemoteSpec {
    pub name: ClusterName,
    pub id: ClusterId,
    pub etcd: KvConfig,
    /// What it may claim: its records are checked against these (empty: nothing of the kind).
    pub pod_cidrs: Vec<ipnet::IpNet>,
    pub node_cidrs: Vec<ipnet::IpNet>,
    pub service_cidrs: Vec<ipnet::IpNet>,
}

/// Everything [`run`](super::run) needs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub node: NodeName,
    pub cluster: ClusterName,
    pub cluster_id: ClusterId,
    pub layout: IdentityLayout,
    pub state_dir: PathBuf,
    pub local_etcd: KvConfig,
    pub remotes: Vec<RemoteSpec>,
    pub pools: Vec<Pool>,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    /// TTL of the node record's lease and of the mirror elections.
    pub lease_ttl_secs: i64,
    /// `mesh.deregister_on_stop`: revoke the node lease on stop (else it runs out unless
    /// meshd comes back first, so a restart does not disturb the other nodes).
    pub deregister_on_stop: bool,
    /// Publish the WireGuard public key of `<state_dir>/wireguard.key` in the node record.
    pub wireguard: bool,
    /// WireGuard peers, routes and filter (`None`: encryption off or not WireGuard).
    pub encryption: Option<WireGuardSettings>,
    /// XFRM policies and SAs per peer (`None`: encryption off or not IPsec).
    pub ipsec: Option<IpsecSettings>,
    /// bgpd's API socket: this node's adverts go there (`None`: no BGP).
    pub bgpd_socket: Option<PathBuf>,
    /// Which LoadBalancer VIPs are advertised.
    pub vip_adverts: VipAdverts,
    /// `[observe]`: serve this node's flows to relays, relay the mesh's.
    pub observe: configs::Observe,
    /// `datapath.bpffs`: the IP cache and services go to the maps pinned there, when the
    /// datapath pinned them (`None`: no datapath sink).
    pub datapath_pin_root: Option<PathBuf>,
    /// `datapath.load`: meshd loads, configures and attaches the datapath itself (then the
    /// sink above uses that datapath).
    pub datapath_owner: Option<OwnerSettings>,
    /// `mesh.cni_endpoints_dir`: the CNI plugin's endpoint records, registered by meshd.
    pub cni_endpoints_dir: Option<PathBuf>,
    /// How often the CNI endpoint dir is read.
    pub endpoint_poll: Duration,
    /// Endpoint records name this node's IPv4 address as their tunnel endpoint (VXLAN mode).
    pub tunnel: bool,
    /// The gRPC API's Unix socket (`None`: no API).
    pub api_socket: Option<PathBuf>,
    /// Prometheus metrics listen address (`None`: off).
    pub metrics: Option<SocketAddr>,
    /// Wait between attempts to reach the local etcd.
    pub retry_interval: Duration,
    /// How often remote etcds and the local one are probed (a cut link is silence).
    pub probe_interval: Duration,
    pub gc_interval: Duration,
    pub identity_grace: Duration,
    pub pod_cidr_grace: Duration,
    /// `mesh.pod_cidr_block_idle`: an extra block idle this long goes back.
    pub pod_cidr_block_idle: Duration,
    /// `mesh.service_cidrs`: where applied Services' ClusterIPs come from.
    pub service_cidrs: Vec<ipnet::IpNet>,
}

impl AgentConfig {
    /// What the merged view checks remote records against, for the remotes that pass the
    /// mesh checks ([`crate::federation::admit`]: unique IDs, one layout, PodCIDR pools
    /// disjoint from the local ones and each other's); the others come back with the reason.
    pub fn trust(
        &self,
    ) -> (
        crate::federation::Trust,
        Vec<(ClusterName, crate::federation::FederationConfigError)>,
    ) {
        use crate::federation::{ClusterInfo, RemoteClaims, Trust, admit};
        let local_pools: Vec<ipnet::IpNet> = self.pools.iter().map(|p| p.cidr()).collect();
        let local = ClusterInfo {
            name: self.cluster.clone(),
            id: self.cluster_id,
            layout: self.layout,
            pod_cidrs: local_pools.clone(),
        };
        let infos: Vec<ClusterInfo> = self
            .remotes
            .iter()
            .map(|r| ClusterInfo {
                name: r.name.clone(),
                id: r.id,
                layout: self.layout,
                pod_cidrs: r.pod_cidrs.clone(),
            })
            .collect();
        let (admitted, refused) = admit(&local, &infos);
        let remotes = self
            .remotes
            .iter()
            .filter(|r| admitted.iter().any(|a| a.name == r.name))
            .map(|r| {
                (
                    r.name.clone(),
                    RemoteClaims {
                        name: r.name.clone(),
                        id: r.id,
                        pod_cidrs: r.pod_cidrs.clone(),
                        node_cidrs: r.node_cidrs.clone(),
                        service_cidrs: r.service_cidrs.clone(),
                    },
                )
            })
            .collect();
        let trust = Trust {
            local: self.cluster.clone(),
            local_id: self.cluster_id,
            layout: self.layout,
            local_pools,
            remotes,
        };
        (trust, refused)
    }
}

/// The API socket's default: `<state_dir>/meshd.sock`.
pub fn default_api_socket(state_dir: &std::path::Path) -> PathBuf {
    state_dir.join("meshd.sock")
}

fn kv_config(
    endpoints: &[configs::EtcdEndpoint],
    tls: Option<&configs::Tls>,
    auth: Option<&configs::EtcdAuth>,
    field: &str,
) -> Result<KvConfig, AgentError> {
    let mut kv = KvConfig::new(endpoints.iter().map(ToString::to_string));
    if let Some(a) = auth {
        // Read now, so a missing or group/world-readable file stops meshd at start (exit 2)
        // with the field named; the password is never logged (KvConfig's Debug hides it).
        let password = a.password().map_err(AgentError::Secret)?;
        kv.user = Some((a.user.clone(), password.expose().to_string()));
    }
    if let Some(t) = tls {
        let ca = t.ca_file.clone().ok_or_else(|| AgentError::Config {
            field: format!("{field}.ca_file"),
            detail: "meshd needs the CA that signed etcd's certificates; set ca_file".into(),
        })?;
        kv.tls = Some(TlsFiles {
            ca,
            client_cert: t.client.clone(),
            server_name: None,
        });
    }
    Ok(kv)
}

impl AgentConfig {
    /// Builds the agent's settings from a validated node config (`[node]` and `[mesh]`).
    pub fn from_config(cfg: &configs::Config) -> Result<Self, AgentError> {
        let mesh = cfg.mesh.as_ref().ok_or(AgentError::NoMesh)?;
        let remotes = mesh
            .remote_clusters
            .iter()
            .enumerate()
            .map(|(i, r)| {
                Ok(RemoteSpec {
                    name: r.name.clone(),
                    id: r.id,
                    etcd: kv_config(
                        &r.endpoints,
                        r.tls.as_ref(),
                        r.auth.as_ref(),
                        &format!("mesh.remote_clusters[{i}].tls"),
                    )?,
                    pod_cidrs: r.pod_cidrs.clone(),
                    node_cidrs: r.node_cidrs.clone(),
                    service_cidrs: r.service_cidrs.clone(),
                })
            })
            .collect::<Result<Vec<_>, AgentError>>()?;
        let pools = mesh
            .pod_cidr_pools
            .iter()
            .enumerate()
            .map(|(i, p)| {
                Pool::new(p.cidr, p.node_mask).map_err(|e| AgentError::Config {
                    field: format!("mesh.pod_cidr_pools[{i}]"),
                    detail: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>, AgentError>>()?;
        let wireguard = cfg.encryption.mode != configs::EncryptionMode::Off
            && matches!(cfg.encryption.backend, configs::Backend::WireGuard { .. });
        let mode = match cfg.encryption.mode {
            configs::EncryptionMode::Off => crypto::rollout::EncryptionMode::Off,
            configs::EncryptionMode::Opportunistic => {
                crypto::rollout::EncryptionMode::Opportunistic
            }
            configs::EncryptionMode::Strict => crypto::rollout::EncryptionMode::Strict,
        };
        let ipsec = (cfg.encryption.mode != configs::EncryptionMode::Off
            && cfg.encryption.backend == configs::Backend::Ipsec)
            .then(|| IpsecSettings {
                mode,
                key_file: cfg.encryption.ipsec_key_file.clone(),
            });
        let encryption = match cfg.encryption.backend {
            configs::Backend::WireGuard {
                listen_port,
                persistent_keepalive,
                rotate_every,
            } if wireguard => Some(WireGuardSettings {
                mode,
                device: mesh.wireguard_device.clone(),
                listen_port,
                persistent_keepalive,
                rotate_every,
            }),
            _ => None,
        };
        Ok(AgentConfig {
            node: cfg.node.name.clone(),
            cluster: cfg.node.cluster.clone(),
            cluster_id: mesh.cluster_id,
            layout: mesh.identity,
            state_dir: cfg.node.state_dir.clone(),
            local_etcd: {
                let mut kv = kv_config(
                    &mesh.etcd_endpoints,
                    mesh.tls.as_ref(),
                    mesh.auth.as_ref(),
                    "mesh.tls",
                )?;
                // The liveness probe reads this cluster's own prefix: what its user may read
                // whatever else its role allows.
                kv.probe_prefix = crate::schema::Scope::Cluster(cfg.node.cluster.clone()).prefix();
                // Derived from (and checked against) the lease TTL: a renewal that fails plus
                // a failover to another member lands before the TTL.
                kv.op_timeout = mesh.etcd_op_timeout;
                kv
            },
            remotes,
            pools,
            ipv4: mesh.node_ipv4,
            ipv6: mesh.node_ipv6,
            lease_ttl_secs: i64::from(mesh.lease_ttl_secs),
            deregister_on_stop: mesh.deregister_on_stop,
            wireguard,
            encryption,
            ipsec,
            bgpd_socket: mesh.bgpd_socket.clone(),
            vip_adverts: match mesh.advertise_vips {
                configs::AdvertiseVips::All => VipAdverts::All,
                configs::AdvertiseVips::LocalBackends => VipAdverts::LocalBackends,
            },
            observe: cfg.observe.clone(),
            datapath_pin_root: Some(cfg.datapath.bpffs.clone()),
            datapath_owner: cfg.datapath.load.then(|| OwnerSettings {
                pin_root: cfg.datapath.bpffs.clone(),
                uplinks: cfg.datapath.uplinks.clone(),
                vxlan: match cfg.datapath.mode {
                    configs::DatapathMode::Vxlan { port } => {
                        Some((cfg.datapath.vxlan_device.clone(), port))
                    }
                    configs::DatapathMode::Native => None,
                },
                policy_mode: match cfg.datapath.policy_enforcement {
                    configs::PolicyEnforcement::Default => datapath::PolicyMode::Default,
                    configs::PolicyEnforcement::Always => datapath::PolicyMode::Always,
                    configs::PolicyEnforcement::Never => datapath::PolicyMode::Never,
                },
                flows: cfg.datapath.flows,
            }),
            cni_endpoints_dir: Some(mesh.cni_endpoints_dir.clone()),
            endpoint_poll: Duration::from_millis(200),
            tunnel: matches!(cfg.datapath.mode, configs::DatapathMode::Vxlan { .. }),
            api_socket: Some(default_api_socket(&cfg.node.state_dir)),
            metrics: None,
            retry_interval: Duration::from_secs(2),
            probe_interval: Duration::from_secs(1),
            gc_interval: Duration::from_secs(30),
            identity_grace: mesh.identity_gc_grace,
            pod_cidr_grace: mesh.pod_cidr_release_grace,
            pod_cidr_block_idle: mesh.pod_cidr_block_idle,
            service_cidrs: mesh.service_cidrs.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `[mesh.auth]` and a remote's `auth` reach the etcd client configs; a password file
    /// others can read stops the config with the field and the fix, never the password.
    #[test]
    fn etcd_users_from_password_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, pw: &str, mode: u32| {
            let p = dir.path().join(name);
            std::fs::write(&p, format!("{pw}\n")).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p
        };
        let own = write("c1.password", "own-pw", 0o600);
        let remote = write("r.password", "reader-pw", 0o600);
        let text = |own: &std::path::Path| {
            format!(
                "{BASE}[mesh.auth]\nuser = \"c1\"\npassword_file = {own:?}\n\
                 [[mesh.remote_clusters]]\nname = \"r\"\nid = 2\nendpoints = [\"http://10.0.0.9:2379\"]\n\
                 [mesh.remote_clusters.auth]\nuser = \"c1-reader\"\npassword_file = {remote:?}\n"
            )
        };
        let cfg = configs::Config::from_toml(&text(&own)).unwrap();
        let a = AgentConfig::from_config(&cfg).unwrap();
        assert_eq!(a.local_etcd.user, Some(("c1".into(), "own-pw".into())));
        assert_eq!(a.local_etcd.probe_prefix, "ironmesh/v1/clusters/c1/");
        assert_eq!(
            a.remotes[0].etcd.user,
            Some(("c1-reader".into(), "reader-pw".into()))
        );
        assert!(!format!("{a:?}").contains("-pw"), "{a:?}");

        let open = write("open.password", "leaked-pw", 0o644);
        let cfg = configs::Config::from_toml(&text(&open)).unwrap();
        let e = AgentConfig::from_config(&cfg).unwrap_err().to_string();
        assert!(e.starts_with("mesh.auth.password_file: "), "{e}");
        assert!(e.contains("chmod 600"), "{e}");
        assert!(!e.contains("leaked-pw"), "{e}");
    }

    const BASE: &str = "[node]\nname = \"n1\"\ncluster = \"c1\"\n[mesh]\netcd_endpoints = [\"http://127.0.0.1:2379\"]\ncluster_id = 1\n";

    /// The collectors' grace periods come from `[mesh]` (defaults 5 and 10 minutes).
    #[test]
    fn gc_graces_from_the_mesh_section() {
        let agent = |extra: &str| {
            let cfg = configs::Config::from_toml(&format!("{BASE}{extra}")).unwrap();
            AgentConfig::from_config(&cfg).unwrap()
        };
        let d = agent("");
        assert_eq!(
            (d.identity_grace, d.pod_cidr_grace),
            (Duration::from_secs(300), Duration::from_secs(600))
        );
        let c = agent("identity_gc_grace = \"45s\"\npod_cidr_release_grace = \"1h\"\n");
        assert_eq!(
            (c.identity_grace, c.pod_cidr_grace),
            (Duration::from_secs(45), Duration::from_secs(3600))
        );
    }
}
