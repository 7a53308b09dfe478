//! The agent's life once started: local etcd, PodCIDRs, node record, mirrors, merged view,
//! garbage collection; and the clean stop.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crypto::ipsec::rotation::Announce;

use super::endpoints::{self, LocalEndpoints, Settings};
use super::sinks::ipsec::{ids, plan};
use super::state::Shared;
use super::wiring;
use super::{AgentConfig, AgentError, addrs, connect_local, retrying, stopped};
use crate::federation::{MergedView, MirrorConfig, MirrorController};
use crate::gc::{GcController, IdentityGc, PodCidrGc};
use crate::ipam::{IpamError, PodCidrAllocator};
use crate::kvstore::{KvError, KvStore};
use crate::nodes::{LeaseConfig, NodeRecord, NodeRegistration};

/// How long a clean stop waits for each lease revocation.
const STOP_TIMEOUT: Duration = Duration::from_secs(3);

/// Aborts a task when dropped.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The garbage collectors: both with pools, identities only without (no PodCIDRs to release).
/// Held only to be dropped at stop (which stops the collectors).
#[derive(Debug)]
struct Gc {
    _both: Option<GcController>,
    _identities: Option<AbortOnDrop>,
}

fn spawn_gc(cfg: &AgentConfig, store: &KvStore, ipam: Option<Arc<PodCidrAllocator>>) -> Gc {
    let mut ids = IdentityGc::new(store.clone(), cfg.cluster.clone(), cfg.identity_grace);
    match ipam {
        Some(ipam) => {
            let cidrs =
                PodCidrGc::new(store.clone(), cfg.cluster.clone(), ipam, cfg.pod_cidr_grace);
            Gc {
                _both: Some(GcController::spawn(ids, cidrs, cfg.gc_interval)),
                _identities: None,
            }
        }
        None => {
            let every = cfg.gc_interval;
            Gc {
                _both: None,
                _identities: Some(AbortOnDrop(tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(every).await;
                        if let Err(e) = ids.run_once().await {
                            tracing::warn!(error = %e, "identity garbage collection failed; retrying");
                        }
                    }
                }))),
            }
        }
    }
}

/// Errors the PodCIDR allocation waits out: etcd's transient ones, and a malformed value under
/// this node's own keys (an operator fixes or deletes it; meshd must not crash-loop meanwhile).
fn ipam_transient(e: &IpamError) -> bool {
    matches!(e, IpamError::Kv(k) if k.is_transient()) || matches!(e, IpamError::Malformed { .. })
}

/// This node's addresses: the configured ones, else the host's first global ones.
pub(super) fn addresses(
    cfg: &AgentConfig,
) -> (Option<std::net::Ipv4Addr>, Option<std::net::Ipv6Addr>) {
    if cfg.ipv4.is_none() && cfg.ipv6.is_none() {
        addrs::discover()
    } else {
        (cfg.ipv4, cfg.ipv6)
    }
}

/// The node record, with [`addresses`].
fn record(cfg: &AgentConfig, pod_cidrs: Vec<ipnet::IpNet>, wg: Option<String>) -> NodeRecord {
    let mut r = NodeRecord::new(cfg.cluster.clone(), cfg.node.clone());
    (r.ipv4, r.ipv6) = addresses(cfg);
    r.pod_cidrs = pod_cidrs;
    r.wireguard_public_key = wg;
    r
}

/// Until `stop`: publishes this node's IPsec announce (the SPI it sends with in
/// `ipsec_key_index`, the SPIs it accepts in a label) in its node record whenever it changes.
async fn publish_ipsec(
    cfg: &AgentConfig,
    shared: &Shared,
    reg: &NodeRegistration,
    mut announce: watch::Receiver<Option<Announce>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let current = announce.borrow_and_update().clone();
        if let Some(a) = current {
            // On the record as it is now: the PodCIDR grower changes it too.
            while reg.record() != plan::with_announce(&reg.record(), &a) {
                match reg.modify(|r| *r = plan::with_announce(r, &a)).await {
                    Ok(r) => {
                        tracing::info!(spi = a.sends, accepts = ?a.accepts, "IPsec announce published in the node record");
                        shared.set_record(Some(r.clone()));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "publishing the IPsec announce failed; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(cfg.retry_interval) => {}
                            _ = stop.wait_for(|s| *s) => return,
                        }
                    }
                }
            }
        }
        let closed = tokio::select! {
            changed = announce.changed() => changed.is_err(),
            _ = stop.wait_for(|s| *s) => return,
        };
        if closed {
            return stopped(stop).await;
        }
    }
}

/// A request the local etcd refused for lack of permission becomes [`AgentError::Denied`]
/// (naming the user and `mesh.auth.user`), a refused login names `mesh.auth`; other errors go
/// through `other`.
pub(super) fn denied(
    cfg: &AgentConfig,
    e: KvError,
    other: fn(KvError) -> AgentError,
) -> AgentError {
    match e {
        KvError::PermissionDenied { .. } => AgentError::Denied {
            user: cfg.local_etcd.user.as_ref().map_or_else(
                || "(the TLS client certificate's CN)".into(),
                |(u, _)| u.clone(),
            ),
            cluster: cfg.cluster.clone(),
            source: Box::new(e),
        },
        KvError::Auth { .. } | KvError::AuthRequired { .. } => AgentError::Config {
            field: "mesh.auth".into(),
            detail: format!(
                "{e}; set user and password_file to cluster {}'s own etcd user (`ironctl mesh provision` made it)",
                cfg.cluster
            ),
        },
        e => other(e),
    }
}

/// Runs the node's part of the mesh until `stop`; returns early only on a permanent error.
pub(super) async fn serve(
    cfg: &AgentConfig,
    shared: &Shared,
    wireguard_key: Option<String>,
    stop: watch::Receiver<bool>,
) -> Result<(), AgentError> {
    let Some(store) = connect_local(cfg, shared, &stop).await? else {
        return Ok(());
    };
    let ipam = match cfg.pools.is_empty() {
        true => None,
        false => Some(Arc::new(
            PodCidrAllocator::new(store.clone(), cfg.cluster.clone(), cfg.pools.clone())
                .map_err(AgentError::Ipam)?,
        )),
    };
    let cidrs = match &ipam {
        Some(a) => {
            let got = super::retrying_backoff(
                "PodCIDR allocation",
                cfg.retry_interval,
                &stop,
                ipam_transient,
                || a.allocate(&cfg.node),
            )
            .await
            .map_err(|e| match e {
                crate::ipam::IpamError::Kv(k) => denied(cfg, k, AgentError::Etcd),
                e => AgentError::Ipam(e),
            })?;
            match got {
                Some(c) => c,
                None => return Ok(()),
            }
        }
        None => Vec::new(),
    };
    let mut rec = record(cfg, cidrs, wireguard_key);
    // The node number in the wire SPIs; IPsec cannot work without one.
    let number = ids::node_number(cfg.cluster_id.get(), &cfg.pools, &rec.pod_cidrs);
    if let (Some(_), Err(e)) = (&cfg.ipsec, &number) {
        return Err(AgentError::Config {
            field: "encryption.backend = \"ipsec\"".into(),
            detail: e.to_string(),
        });
    }
    rec.ipsec_node_id = number.ok();
    let lease = LeaseConfig::with_ttl(cfg.lease_ttl_secs);
    let reg = retrying(
        "registering the node record",
        cfg.retry_interval,
        &stop,
        KvError::is_transient,
        || NodeRegistration::register(store.clone(), rec.clone(), lease),
    )
    .await
    .map_err(|e| denied(cfg, e, AgentError::Etcd))?;
    let Some(reg) = reg else { return Ok(()) };
    tracing::info!(
        node = %rec.name, cluster = %rec.cluster, ipv4 = ?rec.ipv4, ipv6 = ?rec.ipv6,
        pod_cidrs = ?rec.pod_cidrs, ipsec_node_id = ?rec.ipsec_node_id,
        lease = reg.status().lease_id, "node registered"
    );
    shared.set_record(Some(rec.clone()));
    shared.set_lease(Some(reg.watch_status()));

    let (changes_tx, mut reconcile) = wiring::start(cfg, shared, &rec)?;
    let (changes_tx, policy_inputs) = endpoints::inputs::tap(cfg.cluster.clone(), changes_tx);
    let (trust, refused) = cfg.trust();
    for (remote, e) in refused {
        tracing::error!(%remote, error = %e, "remote cluster refused: it is neither mirrored nor read; fix mesh.remote_clusters");
        shared.refuse_remote(remote, e.to_string());
    }
    let admitted: Vec<_> = cfg
        .remotes
        .iter()
        .filter(|r| trust.remotes.contains_key(&r.name))
        .cloned()
        .collect();
    let view = Arc::new(MergedView::spawn_checked(
        store.clone(),
        trust.clone(),
        cfg.probe_interval,
        Some(changes_tx),
    ));
    // The node's blocks as they grow: the CNI endpoint controller refuses addresses outside.
    let (cidrs_tx, cidrs_rx) = watch::channel(rec.pod_cidrs.clone());
    let local_endpoints = cfg.cni_endpoints_dir.as_ref().map(|dir| {
        LocalEndpoints::spawn(
            Settings {
                dir: dir.clone(),
                cluster: cfg.cluster.clone(),
                cluster_id: cfg.cluster_id,
                layout: cfg.layout,
                node: cfg.node.clone(),
                tunnel_endpoint: if cfg.tunnel {
                    rec.ipv4.map(std::net::IpAddr::V4)
                } else {
                    None
                },
                ledger: cfg.state_dir.join("endpoints.json"),
                poll: cfg.endpoint_poll,
                lease_ttl_secs: cfg.lease_ttl_secs,
                pod_cidrs: cidrs_rx.clone(),
            },
            store.clone(),
            reconcile.as_ref().and_then(|r| r.datapath()),
            view.clone(),
            policy_inputs,
            stop.clone(),
        )
    });
    shared.set_store(store.clone());
    let health_checks = super::health::HealthChecks::spawn(
        store.clone(),
        cfg.cluster.clone(),
        cfg.node.clone(),
        cfg.lease_ttl_secs,
        view.clone(),
        shared.events(),
        stop.clone(),
    );
    let rollout = reconcile
        .as_ref()
        .and_then(|r| r.wireguard_rollout())
        .map(|source| {
            super::rollout::RolloutTask::spawn(
                store.clone(),
                cfg.cluster.clone(),
                cfg.node.clone(),
                cfg.lease_ttl_secs,
                view.clone(),
                source,
                stop.clone(),
            )
        });
    shared.set_view(view.clone());
    if let Some(r) = &mut reconcile {
        r.arm(view.clone());
    }
    let mirrors: Vec<MirrorController> = admitted
        .iter()
        .map(|r| {
            let m = MirrorController::spawn(
                store.clone(),
                MirrorConfig {
                    local: cfg.cluster.clone(),
                    remote: r.name.clone(),
                    remote_etcd: r.etcd.clone(),
                    candidate: cfg.node.to_string(),
                    lease_ttl_secs: cfg.lease_ttl_secs,
                    probe_interval: cfg.probe_interval,
                    trust: Some(trust.clone()),
                },
            );
            shared.add_mirror(r.name.clone(), m.watch_status());
            m
        })
        .collect();
    let grower = match (&ipam, &cfg.cni_endpoints_dir) {
        (Some(ipam), Some(dir)) => dir.parent().map(|network_dir| super::podcidrs::Grower {
            cfg,
            shared,
            reg: &reg,
            ipam: ipam.clone(),
            view: view.clone(),
            cidrs: cidrs_tx,
            network_dir: network_dir.to_path_buf(),
        }),
        _ => None,
    };
    let gc = spawn_gc(cfg, &store, ipam);

    let grow = async {
        if let Some(g) = grower {
            g.run(stop.clone()).await
        }
    };
    let publish = async {
        match reconcile.as_ref().and_then(|r| r.ipsec_announce()) {
            Some(announce) => publish_ipsec(cfg, shared, &reg, announce, stop.clone()).await,
            None => match reconcile.as_ref().and_then(|r| r.wireguard_key()) {
                Some(key) => {
                    key.run(shared, &reg, cfg.retry_interval, stop.clone())
                        .await
                }
                None => stopped(stop.clone()).await,
            },
        }
    };
    tokio::join!(grow, publish);
    tracing::info!("stopping: resigning mirror elections");
    drop(local_endpoints);
    drop(health_checks);
    drop(rollout);
    drop(reconcile);
    drop(gc);
    for m in mirrors {
        if tokio::time::timeout(STOP_TIMEOUT, m.resign())
            .await
            .is_err()
        {
            tracing::warn!("resigning a mirror election timed out; its lease will expire");
        }
    }
    shared.set_record(None);
    if !cfg.deregister_on_stop {
        // A restart takes the record back with a new lease before this one runs out, so the
        // other nodes keep this node's peer, routes and entries throughout.
        tracing::info!(
            ttl_secs = cfg.lease_ttl_secs,
            "node record kept: it goes when its lease runs out unless meshd is back first"
        );
        reg.stop();
    } else {
        match tokio::time::timeout(STOP_TIMEOUT, reg.deregister()).await {
            Ok(Ok(())) => tracing::info!("node lease revoked (mesh.deregister_on_stop)"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "revoking the node lease failed; it will expire")
            }
            Err(_) => tracing::warn!("revoking the node lease timed out; it will expire"),
        }
    }
    drop(view);
    Ok(())
}
