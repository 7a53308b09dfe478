//! The node's eBPF maps from meshd: the IP cache (endpoint IPs and node addresses → identity,
//! tunnel endpoint, key index) and the services (VIP:port/proto → backends, Maglev), written
//! through the `datapath` crate's typed handles on the maps pinned under `datapath.bpffs`.
//!
//! With `datapath.load`, meshd loads and attaches the datapath itself
//! ([`super::super::datapath_owner`]) and the sink uses that. Otherwise the sink is on only
//! when the pin root already holds the datapath's maps (whoever loads the programs pinned
//! them): meshd opens them with [`datapath::Datapath::load`] (which also loads, but does not
//! attach, the programs; pinned maps are reused and a layout of another version is refused).
//!
//! Ids: the datapath wants a service id (never 0) per frontend and a backend id per backend
//! (shared by the services that use it). Both are derived from a hash of the frontend / the
//! backend's address and port (probing past ids in use), so a restarted meshd picks the same
//! ids as its predecessor for what is still there; a frontend already in the map keeps its id.
//! Backends are reference-counted across services and deleted with their last user.
//!
//! LoadBalancer VIPs (`FrontendSpec::load_balancer`) are also reached from outside the
//! cluster: the frontend gets a second, *external* entry ([`Datapath::upsert_external_service`],
//! used by host_ingress on the uplink) holding only this node's backends
//! (externalTrafficPolicy=Local: no SNAT, replies leave from the VIP). It has its own id
//! (hash of "service-external" and the frontend, same probing and restart rules) and is
//! removed when this node has no backend of the frontend left (active or terminating:
//! terminating ones keep their established flows; with no active one, new flows are dropped
//! with an event while the node withdraws its announcement).
//!
//! Both halves write the maps directly (one syscall per entry; a Maglev table is one update)
//! from the reconcile driver. An error names the map and the key; the key is retried.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use common::{ClusterName, NodeName};
use datapath::ipcache::{F_REMOTE_CLUSTER, IpcacheValue};
use datapath::lb::{BackendState as DpState, Proto, Scope};
use datapath::loader::MAPS;
use datapath::pin::PinRoot;
use datapath::{Backend as DpBackend, Datapath, Service};
use ipnet::IpNet;

use crate::reconcile::{IpCacheEntry, Sink, SinkError};
use crate::services::{BackendState, Frontend, FrontendSpec, Protocol};

/// A service entry's key in the map: VIP, port, protocol.
pub type ServiceKey = (IpAddr, u16, Proto);

/// The map operations the sinks need (the real [`Datapath`], or a fake in tests). Errors are
/// the datapath's messages (they name the map). The service operations act on the entry of
/// `scope`: the internal one, or a LoadBalancer VIP's external one.
pub trait Maps: Send {
    fn ipcache_upsert(&mut self, ip: IpAddr, value: IpcacheValue) -> Result<(), String>;
    fn ipcache_remove(&mut self, ip: IpAddr) -> Result<(), String>;
    /// The id of the `scope` entry in the map at this key, if any.
    fn service_id(&self, scope: Scope, key: ServiceKey) -> Result<Option<u32>, String>;
    fn upsert_service(&mut self, scope: Scope, svc: &Service) -> Result<(), String>;
    fn remove_service(&mut self, scope: Scope, key: ServiceKey) -> Result<(), String>;
    fn remove_backend(&mut self, id: u32) -> Result<(), String>;
}

impl Maps for Datapath {
    fn ipcache_upsert(&mut self, ip: IpAddr, value: IpcacheValue) -> Result<(), String> {
        Datapath::ipcache_upsert(self, IpNet::from(ip), value).map_err(|e| e.to_string())
    }

    fn ipcache_remove(&mut self, ip: IpAddr) -> Result<(), String> {
        Datapath::ipcache_remove(self, IpNet::from(ip)).map_err(|e| e.to_string())
    }

    fn service_id(
        &self,
        scope: Scope,
        (vip, port, proto): ServiceKey,
    ) -> Result<Option<u32>, String> {
        match scope {
            Scope::Internal => Datapath::service(self, vip, port, proto),
            Scope::External => Datapath::external_service(self, vip, port, proto),
        }
        .map(|s| s.map(|v| v.id))
        .map_err(|e| e.to_string())
    }

    fn upsert_service(&mut self, scope: Scope, svc: &Service) -> Result<(), String> {
        match scope {
            Scope::Internal => Datapath::upsert_service(self, svc),
            Scope::External => Datapath::upsert_external_service(self, svc),
        }
        .map_err(|e| e.to_string())
    }

    fn remove_service(
        &mut self,
        scope: Scope,
        (vip, port, proto): ServiceKey,
    ) -> Result<(), String> {
        match scope {
            Scope::Internal => Datapath::remove_service(self, vip, port, proto),
            Scope::External => Datapath::remove_external_service(self, vip, port, proto),
        }
        .map_err(|e| e.to_string())
    }

    fn remove_backend(&mut self, id: u32) -> Result<(), String> {
        Datapath::remove_backend(self, id).map_err(|e| e.to_string())
    }
}

/// Why the datapath sinks could not start.
#[derive(Debug, thiserror::Error)]
pub enum DatapathSinkError {
    #[error("datapath.bpffs {}: {detail}", .pin_root.display())]
    PinRoot { pin_root: PathBuf, detail: String },
    #[error("opening the datapath maps under {}: {detail}", .pin_root.display())]
    Open { pin_root: PathBuf, detail: String },
}

/// Whether `pin_root` holds every map of the datapath (the datapath was loaded there).
pub fn maps_pinned(pin_root: &Path) -> bool {
    MAPS.iter().all(|m| pin_root.join(m.name).exists())
}

type BackendAddr = (IpAddr, u16);

#[derive(Debug)]
struct Programmed {
    id: u32,
    proto: Proto,
    backends: BTreeSet<BackendAddr>,
}

#[derive(Debug)]
struct BackendRef {
    id: u32,
    users: usize,
}

struct State<M> {
    maps: M,
    local: ClusterName,
    /// This node (its backends make the external entries); `None`: no external entries.
    node: Option<NodeName>,
    /// Frontends in the map, with their id and the backends they use.
    services: BTreeMap<Frontend, Programmed>,
    /// External entries of LoadBalancer frontends (this node's backends).
    external: BTreeMap<Frontend, Programmed>,
    svc_ids: BTreeSet<u32>,
    backends: BTreeMap<BackendAddr, BackendRef>,
    backend_ids: BTreeSet<u32>,
    /// Backends no service uses any more whose deletion failed; retried at the next change.
    orphans: BTreeSet<BackendAddr>,
}

/// FNV-1a 32, never 0.
fn hash_id(parts: &[&[u8]]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for p in parts {
        for b in *p {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    }
    h.max(1)
}

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// The first id from `start` (wrapping, skipping 0) not in `used`.
fn free_id(start: u32, used: &BTreeSet<u32>) -> u32 {
    let mut id = start.max(1);
    while used.contains(&id) {
        id = id.wrapping_add(1).max(1);
    }
    id
}

fn proto_of(p: Protocol) -> Option<Proto> {
    match p {
        Protocol::Tcp => Some(Proto::Tcp),
        Protocol::Udp => Some(Proto::Udp),
        Protocol::Sctp => None,
    }
}

fn state_of(s: BackendState) -> DpState {
    match s {
        BackendState::Active => DpState::Active,
        BackendState::Terminating => DpState::Terminating,
        BackendState::Quarantined => DpState::Quarantined,
    }
}

fn frontend_name(f: &Frontend) -> String {
    let vip = match f.vip {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    };
    format!("{vip}:{}/{:?}", f.port, f.protocol).to_lowercase()
}

impl<M: Maps> State<M> {
    fn ipcache_value(&self, e: &IpCacheEntry) -> IpcacheValue {
        let mut v = IpcacheValue::new(e.identity).with_key_index(e.encrypt_key);
        // The datapath tunnels over IPv4 only; an IPv6 tunnel endpoint is left out.
        if let Some(IpAddr::V4(t)) = e.tunnel_endpoint {
            v = v.with_tunnel(t);
        }
        if e.cluster != self.local {
            v = v.with_flags(F_REMOTE_CLUSTER);
        }
        v
    }

    fn backend_id(&mut self, addr: BackendAddr) -> u32 {
        if let Some(b) = self.backends.get(&addr) {
            return b.id;
        }
        let port = addr.1.to_be_bytes();
        let id = free_id(
            hash_id(&[b"backend", &ip_bytes(addr.0), &port]),
            &self.backend_ids,
        );
        self.backend_ids.insert(id);
        self.backends.insert(addr, BackendRef { id, users: 0 });
        self.orphans.insert(addr);
        id
    }

    /// Deletes backends no service uses; a failure leaves them for the next change.
    fn sweep(&mut self) {
        for addr in std::mem::take(&mut self.orphans) {
            let Some(b) = self.backends.get(&addr) else {
                continue;
            };
            if b.users > 0 {
                continue;
            }
            let id = b.id;
            match self.maps.remove_backend(id) {
                Ok(()) => {
                    self.backends.remove(&addr);
                    self.backend_ids.remove(&id);
                }
                Err(e) => {
                    tracing::warn!(backend = %format!("{}:{}", addr.0, addr.1), id, error = %e,
                        "datapath: deleting an unused backend failed; will retry");
                    self.orphans.insert(addr);
                }
            }
        }
    }

    fn release(&mut self, addrs: impl IntoIterator<Item = BackendAddr>) {
        for a in addrs {
            if let Some(b) = self.backends.get_mut(&a) {
                b.users = b.users.saturating_sub(1);
                if b.users == 0 {
                    self.orphans.insert(a);
                }
            }
        }
    }

    fn upsert_service(&mut self, f: &Frontend, spec: &FrontendSpec) -> Result<(), SinkError> {
        let Some(proto) = proto_of(f.protocol) else {
            tracing::warn!(service = %spec.service, frontend = %frontend_name(f),
                "datapath: SCTP services are not load-balanced by the datapath; skipped");
            return Ok(());
        };
        let id = self.service_id(Scope::Internal, f, proto)?;
        let by_addr = by_addr(f, spec.backends.iter());
        if let Err(e) = self.program(Scope::Internal, f, id, proto, &by_addr) {
            self.sweep();
            return Err(e);
        }
        let r = self.sync_external(f, spec, proto);
        self.sweep();
        r
    }

    /// The frontends programmed in `scope` (`services` or `external`).
    fn programmed(&mut self, scope: Scope) -> &mut BTreeMap<Frontend, Programmed> {
        match scope {
            Scope::Internal => &mut self.services,
            Scope::External => &mut self.external,
        }
    }

    /// The id of `f`'s entry in `scope`: the one it has, else the one in the map (left by a
    /// predecessor) if free, else a fresh one from the hash of the frontend.
    fn service_id(&mut self, scope: Scope, f: &Frontend, proto: Proto) -> Result<u32, SinkError> {
        if let Some(p) = self.programmed(scope).get(f) {
            return Ok(p.id);
        }
        let existing = self
            .maps
            .service_id(scope, (f.vip, f.port, proto))
            .map_err(|e| service_error(scope, f, e))?;
        Ok(match existing {
            Some(id) if id != 0 && !self.svc_ids.contains(&id) => id,
            _ => {
                let tag: &[u8] = match scope {
                    Scope::Internal => b"service",
                    Scope::External => b"service-external",
                };
                free_id(
                    hash_id(&[
                        tag,
                        &ip_bytes(f.vip),
                        &f.port.to_be_bytes(),
                        &[proto.number()],
                    ]),
                    &self.svc_ids,
                )
            }
        })
    }

    /// Writes `f`'s entry in `scope` (id `id`) with these backends and takes them into use,
    /// releasing the ones the entry used before. The backends of a failed write are left to
    /// the next sweep.
    fn program(
        &mut self,
        scope: Scope,
        f: &Frontend,
        id: u32,
        proto: Proto,
        by_addr: &BTreeMap<BackendAddr, DpState>,
    ) -> Result<(), SinkError> {
        let backends = self.dp_backends(by_addr);
        let svc = Service {
            id,
            vip: f.vip,
            port: f.port,
            proto,
            maglev: true,
            backends,
        };
        self.maps
            .upsert_service(scope, &svc)
            .map_err(|e| service_error(scope, f, e))?;
        let now: BTreeSet<BackendAddr> = by_addr.keys().copied().collect();
        for a in &now {
            if let Some(b) = self.backends.get_mut(a) {
                b.users += 1;
            }
        }
        self.svc_ids.insert(id);
        let old = self.programmed(scope).insert(
            *f,
            Programmed {
                id,
                proto,
                backends: now,
            },
        );
        if let Some(old) = old {
            self.release(old.backends);
        }
        Ok(())
    }

    /// Deletes `f`'s entry in `scope` from the map; once it is gone, forgets it and
    /// releases its id and backends.
    fn unprogram(&mut self, scope: Scope, f: &Frontend, proto: Proto) -> Result<(), SinkError> {
        self.maps
            .remove_service(scope, (f.vip, f.port, proto))
            .map_err(|e| service_error(scope, f, e))?;
        if let Some(old) = self.programmed(scope).remove(f) {
            self.svc_ids.remove(&old.id);
            self.release(old.backends);
        }
        Ok(())
    }

    fn dp_backends(&mut self, by_addr: &BTreeMap<BackendAddr, DpState>) -> Vec<DpBackend> {
        by_addr
            .iter()
            .map(|(&(ip, port), &state)| DpBackend {
                id: self.backend_id((ip, port)),
                ip,
                port,
                state,
            })
            .collect()
    }

    /// The external entry of `f`: this node's backends when `f` is a LoadBalancer VIP and
    /// the node has any; else none.
    fn sync_external(
        &mut self,
        f: &Frontend,
        spec: &FrontendSpec,
        proto: Proto,
    ) -> Result<(), SinkError> {
        let local: BTreeMap<BackendAddr, DpState> = match &self.node {
            Some(me) if spec.load_balancer => by_addr(
                f,
                spec.backends.iter().filter(|b| {
                    b.node.as_ref() == Some(me)
                        && b.cluster.as_ref().is_none_or(|c| *c == self.local)
                }),
            ),
            _ => BTreeMap::new(),
        };
        if local.is_empty() {
            // Also clears an entry a predecessor left for a frontend no longer external here.
            return self.unprogram(Scope::External, f, proto);
        }
        let id = self.service_id(Scope::External, f, proto)?;
        self.program(Scope::External, f, id, proto, &local)
    }

    fn remove_service(&mut self, f: &Frontend) -> Result<(), SinkError> {
        let proto = match self.services.get(f) {
            Some(p) => p.proto,
            None => match proto_of(f.protocol) {
                Some(p) => p,
                None => return Ok(()),
            },
        };
        self.unprogram(Scope::Internal, f, proto)?;
        let r = self.unprogram(Scope::External, f, proto);
        self.sweep();
        r
    }
}

/// A failed write of `f`'s entry in `scope`, naming the map and the key.
fn service_error(scope: Scope, f: &Frontend, e: String) -> SinkError {
    let key = match scope {
        Scope::Internal => "key",
        Scope::External => "external key",
    };
    SinkError(format!(
        "datapath map services, {key} {}: {e}",
        frontend_name(f)
    ))
}

/// A frontend's backends by address: a dual-stack service lists backends of both families, a
/// VIP gets its own family's; an address listed twice is active if any listing is.
fn by_addr<'a>(
    f: &Frontend,
    backends: impl Iterator<Item = &'a crate::services::Backend>,
) -> BTreeMap<BackendAddr, DpState> {
    let mut by_addr: BTreeMap<BackendAddr, DpState> = BTreeMap::new();
    for b in backends {
        if b.ip.is_ipv4() == f.vip.is_ipv4() {
            let s = state_of(b.state);
            by_addr
                .entry((b.ip, b.port))
                .and_modify(|old| {
                    if s == DpState::Active {
                        *old = s;
                    }
                })
                .or_insert(s);
        }
    }
    by_addr
}

/// The datapath maps of this node, shared by the two sinks.
pub struct DatapathMaps<M: Maps = Datapath> {
    state: Arc<Mutex<State<M>>>,
}

impl<M: Maps> std::fmt::Debug for DatapathMaps<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DatapathMaps")
    }
}

impl<M: Maps> Clone for DatapathMaps<M> {
    fn clone(&self) -> Self {
        Self {
            state: self.state.clone(),
        }
    }
}

impl DatapathMaps<Datapath> {
    /// Opens the maps pinned under `pin_root`; `Ok(None)` when the datapath is not there.
    pub fn open(pin_root: &Path, local: ClusterName) -> Result<Option<Self>, DatapathSinkError> {
        if !maps_pinned(pin_root) {
            return Ok(None);
        }
        let root = PinRoot::new(pin_root).map_err(|e| DatapathSinkError::PinRoot {
            pin_root: pin_root.to_path_buf(),
            detail: e.to_string(),
        })?;
        let dp = Datapath::load(&root).map_err(|e| DatapathSinkError::Open {
            pin_root: pin_root.to_path_buf(),
            detail: e.to_string(),
        })?;
        Ok(Some(Self::with_maps(dp, local)))
    }
}

impl<M: Maps> DatapathMaps<M> {
    pub fn with_maps(maps: M, local: ClusterName) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                maps,
                local,
                node: None,
                services: BTreeMap::new(),
                external: BTreeMap::new(),
                svc_ids: BTreeSet::new(),
                backends: BTreeMap::new(),
                backend_ids: BTreeSet::new(),
                orphans: BTreeSet::new(),
            })),
        }
    }

    /// This node's name: LoadBalancer frontends then get an external entry with the
    /// backends on this node. Without it, no external entries are programmed.
    pub fn with_node(self, node: NodeName) -> Self {
        self.state.lock().expect("datapath lock").node = Some(node);
        self
    }

    /// The external entries' ids (tests, status).
    pub fn external_ids(&self) -> BTreeMap<Frontend, u32> {
        let s = self.state.lock().expect("datapath lock");
        s.external.iter().map(|(f, p)| (*f, p.id)).collect()
    }

    pub fn ipcache_sink(&self) -> DatapathIpCache<M> {
        DatapathIpCache(self.clone())
    }

    pub fn service_sink(&self) -> DatapathServices<M> {
        DatapathServices(self.clone())
    }

    /// Changes the maps directly (local endpoints, policy, CIDR peers).
    pub fn with_mut<T>(&self, f: impl FnOnce(&mut M) -> T) -> T {
        f(&mut self.state.lock().expect("datapath lock").maps)
    }

    /// Reads the maps (tests).
    pub fn with<T>(&self, f: impl FnOnce(&M) -> T) -> T {
        f(&self.state.lock().expect("datapath lock").maps)
    }

    /// The service id and backend ids in use (tests, status).
    pub fn ids(&self) -> (BTreeMap<Frontend, u32>, BTreeMap<(IpAddr, u16), u32>) {
        let s = self.state.lock().expect("datapath lock");
        (
            s.services.iter().map(|(f, p)| (*f, p.id)).collect(),
            s.backends.iter().map(|(a, b)| (*a, b.id)).collect(),
        )
    }
}

/// The IP cache half.
#[derive(Debug, Clone)]
pub struct DatapathIpCache<M: Maps = Datapath>(DatapathMaps<M>);

impl<M: Maps> Sink<IpAddr, IpCacheEntry> for DatapathIpCache<M> {
    fn upsert(&mut self, key: &IpAddr, value: &IpCacheEntry) -> Result<(), SinkError> {
        let mut s = self.0.state.lock().expect("datapath lock");
        let v = s.ipcache_value(value);
        s.maps
            .ipcache_upsert(*key, v)
            .map_err(|e| SinkError(format!("datapath map ipcache, key {key}: {e}")))
    }

    fn remove(&mut self, key: &IpAddr) -> Result<(), SinkError> {
        let mut s = self.0.state.lock().expect("datapath lock");
        s.maps
            .ipcache_remove(*key)
            .map_err(|e| SinkError(format!("datapath map ipcache, key {key}: {e}")))
    }
}

/// The services half.
#[derive(Debug, Clone)]
pub struct DatapathServices<M: Maps = Datapath>(DatapathMaps<M>);

impl<M: Maps> Sink<Frontend, FrontendSpec> for DatapathServices<M> {
    fn upsert(&mut self, key: &Frontend, value: &FrontendSpec) -> Result<(), SinkError> {
        self.0
            .state
            .lock()
            .expect("datapath lock")
            .upsert_service(key, value)
    }

    fn remove(&mut self, key: &Frontend) -> Result<(), SinkError> {
        self.0
            .state
            .lock()
            .expect("datapath lock")
            .remove_service(key)
    }
}

#[cfg(test)]
mod tests;
