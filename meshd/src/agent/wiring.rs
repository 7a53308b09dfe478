//! The reconcile driver wired to the components this node runs: bgpd's adverts
//! (`mesh.bgpd_socket`), WireGuard peers or IPsec XFRM policies and SAs (`[encryption]`
//! backend) and the eBPF maps
//! (IP cache and services: the datapath meshd loads with `datapath.load`, or the maps pinned
//! under `datapath.bpffs` by another loader). Components
//! not configured get a [`NullSink`].

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::sinks::bgp::BgpAdverts;
use super::sinks::datapath::DatapathMaps;
use super::sinks::ipsec::IpsecPeers;
use super::sinks::wireguard::WireGuardPeers;
use super::sinks::{EncryptionStatusSource, NullSink};
use super::state::Shared;
use super::{AgentConfig, AgentError};
use crate::federation::{MergedView, ViewChange};
use crate::nodes::NodeRecord;
use crate::reconcile::{MeshDesired, ReconcileDriver, Sinks};

/// The driver and the components it drives; dropped at stop. What they applied stays, so the
/// node keeps forwarding (and announcing) while meshd restarts.
#[derive(Debug)]
pub(super) struct Reconcile {
    driver: Arc<ReconcileDriver>,
    bgp: Option<BgpAdverts>,
    _wireguard: Option<WireGuardPeers>,
    ipsec: Option<IpsecPeers>,
    _datapath: Option<DatapathMaps>,
    /// Reads the owned datapath's events into the node's flow records (`datapath.flows`).
    flows: Option<super::flows::FlowCollector>,
    armed: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Reconcile {
    fn drop(&mut self) {
        if let Some(t) = &self.armed {
            t.abort();
        }
    }
}

/// How long after the merged view's first listing the desired state counts as complete
/// (the driver applies the listing as one batch, in milliseconds).
const SETTLE: Duration = Duration::from_millis(500);

impl Reconcile {
    /// The datapath this node's sinks write to, if any (shared with the local endpoints).
    pub(super) fn datapath(&self) -> Option<DatapathMaps> {
        self._datapath.clone()
    }

    /// This node's IPsec announce, to publish in its node record (IPsec backend only).
    pub(super) fn ipsec_announce(
        &self,
    ) -> Option<tokio::sync::watch::Receiver<Option<crypto::ipsec::rotation::Announce>>> {
        self.ipsec.as_ref().map(IpsecPeers::announce)
    }

    /// The node's side of the cluster encryption rollout (WireGuard backend only).
    pub(super) fn wireguard_rollout(&self) -> Option<super::sinks::wireguard::RolloutSource> {
        self._wireguard.as_ref().map(WireGuardPeers::rollout)
    }

    /// What keeps the node record's WireGuard public key current (WireGuard backend only).
    pub(super) fn wireguard_key(&self) -> Option<super::sinks::wireguard::publish::KeyPublication> {
        self._wireguard.as_ref().map(WireGuardPeers::publication)
    }

    /// Once `view` listed the local etcd and the driver applied it, tells the consumers that
    /// must not act on a partial node list that the desired state is complete: bgpd's ledger
    /// (removes what a previous meshd left) and the WireGuard worker (removes unknown peers).
    pub(super) fn arm(&mut self, view: Arc<MergedView>) {
        if let Some(f) = &self.flows {
            f.set_view(view.clone());
        }
        let bgp = self.bgp.as_ref().map(BgpAdverts::sink);
        let wireguard = self._wireguard.as_ref().map(WireGuardPeers::completion);
        if bgp.is_none() && wireguard.is_none() {
            return;
        }
        let driver = self.driver.clone();
        self.armed = Some(tokio::spawn(async move {
            while !view
                .wait_until(Duration::from_secs(3600), |s| s.listed())
                .await
            {}
            tokio::time::sleep(SETTLE).await;
            for _ in 0..200 {
                if driver.with(|d| d.pending()) == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if let Some(w) = wireguard {
                w.set_complete();
            }
            if let Some(bgp) = bgp {
                tracing::info!("desired state complete: stale adverts of a previous meshd may go");
                bgp.set_complete();
            }
        }));
    }
}

/// The sender the merged view feeds the driver with, and what to drop at stop.
pub(super) type Started = (Option<mpsc::UnboundedSender<ViewChange>>, Option<Reconcile>);

/// Starts the driver when this node drives a component (no driver otherwise).
pub(super) fn start(
    cfg: &AgentConfig,
    shared: &Shared,
    own: &NodeRecord,
) -> Result<Started, AgentError> {
    let wireguard = match &cfg.encryption {
        Some(settings) => {
            let store = crypto::KeyStore::load_or_create(&cfg.state_dir)?;
            match WireGuardPeers::spawn(settings, own.clone(), store) {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::error!("{e}; no encryption on this node");
                    shared.set_encryption_off(e.to_string());
                    None
                }
            }
        }
        None if cfg.ipsec.is_some() => None,
        None => {
            shared.set_encryption_off(
                "encryption is off (set [encryption] mode and the WireGuard or IPsec backend)",
            );
            None
        }
    };
    if let Some(w) = &wireguard {
        shared.set_encryption(Some(EncryptionStatusSource::WireGuard(w.status_source())));
    }
    let ipsec = match &cfg.ipsec {
        Some(settings) => match IpsecPeers::spawn(settings, own.clone()) {
            Ok(i) => {
                shared.set_encryption(Some(EncryptionStatusSource::Ipsec(i.status_source())));
                Some(i)
            }
            Err(e) => {
                tracing::error!("{e}; no encryption on this node");
                shared.set_encryption_off(e.to_string());
                None
            }
        },
        None => None,
    };
    let bgp = cfg.bgpd_socket.as_ref().map(|socket| {
        if let Err(e) = std::fs::create_dir_all(&cfg.state_dir) {
            tracing::warn!(dir = %cfg.state_dir.display(), error = %e, "cannot create the state dir");
        }
        tracing::info!(socket = %socket.display(), vips = ?cfg.vip_adverts, "driving bgpd's adverts");
        BgpAdverts::spawn(
            socket.clone(),
            cfg.state_dir.join("bgp-adverts.json"),
            cfg.retry_interval,
        )
    });
    let datapath = match (&cfg.datapath_owner, &cfg.datapath_pin_root) {
        (Some(owner), _) => Some(
            DatapathMaps::with_maps(super::datapath_owner::load(owner)?, cfg.cluster.clone())
                .with_node(cfg.node.clone()),
        ),
        (None, Some(root)) => match DatapathMaps::open(root, cfg.cluster.clone()) {
            Ok(Some(d)) => {
                tracing::info!(pin_root = %root.display(), "driving the datapath's IP cache and services");
                Some(d.with_node(cfg.node.clone()))
            }
            Ok(None) => {
                tracing::info!(pin_root = %root.display(),
                    "no datapath maps pinned there; the IP cache and services are not programmed");
                None
            }
            Err(e) => {
                tracing::error!("{e}; the IP cache and services are not programmed");
                None
            }
        },
        (None, None) => None,
    };
    let flows = match &cfg.datapath_owner {
        Some(owner) if datapath.is_some() && shared.flows().is_some() => {
            let store = shared.flows().expect("checked");
            match super::flows::FlowCollector::spawn(
                &owner.pin_root,
                store.clone(),
                (cfg.cluster.to_string(), cfg.node.to_string()),
                cfg.cni_endpoints_dir.clone(),
            ) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::error!("{e}; this node keeps no flow records");
                    shared.set_flows(None);
                    None
                }
            }
        }
        _ => None,
    };
    if bgp.is_none() && wireguard.is_none() && ipsec.is_none() && datapath.is_none() {
        return Ok((None, None));
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let desired =
        MeshDesired::new(cfg.cluster.clone(), cfg.node.clone()).with_vip_adverts(cfg.vip_adverts);
    let sinks = Sinks {
        peers: match (&wireguard, &ipsec) {
            (Some(w), _) => Box::new(w.sink()),
            (None, Some(i)) => Box::new(i.sink()),
            (None, None) => Box::new(NullSink),
        },
        ipcache: match &datapath {
            Some(d) => Box::new(d.ipcache_sink()),
            None => Box::new(NullSink),
        },
        services: match &datapath {
            Some(d) => Box::new(d.service_sink()),
            None => Box::new(NullSink),
        },
        adverts: match &bgp {
            Some(b) => Box::new(b.sink()),
            None => Box::new(NullSink),
        },
    };
    let driver = ReconcileDriver::spawn_with(desired, rx, sinks, Duration::from_secs(1));
    Ok((
        Some(tx),
        Some(Reconcile {
            driver: Arc::new(driver),
            bgp,
            _wireguard: wireguard,
            ipsec,
            _datapath: datapath,
            flows,
            armed: None,
        }),
    ))
}
