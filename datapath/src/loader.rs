//! Loads the tc programs with aya, pins their maps under the pin root (so
//! they outlive the agent and are shared by every program object), and
//! offers typed handles on the maps.

use std::io;
use std::mem::size_of;
use std::net::IpAddr;
use std::time::Duration;

use aya::maps::lpm_trie::{Key as LpmKey, LpmTrie};
use aya::maps::{Array, HashMap, HashOfMaps, Map, MapData, MapError, MapInfo, MapType, RingBuf};
use aya::programs::{ProgramError, SchedClassifier, TcAttachType, TestRun, TestRunOptions};
use aya::{Ebpf, EbpfError, EbpfLoader};
use ipnet::IpNet;

use crate::events::{Event, RawEvent};
use crate::ipcache::{IpcacheKey, IpcacheValue};
use crate::lb::{
    BackendSlotKey, BackendState, BackendValue, CtKey, CtValue, MaglevTable, Proto, SVC_F_MAGLEV,
    Scope, SvcKey, SvcValue, addr_bytes,
};
use crate::maglev::{self, MaglevBackend};
use crate::pin::{PinError, PinRoot, ensure_pin_dir};
use crate::policy::{DpConfig, EndpointInfo, EndpointKey, PolicyKey, PolicyValue};

static POD_EGRESS_OBJ: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/pod_egress.bpf.o"));
static POD_INGRESS_OBJ: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/pod_ingress.bpf.o"));
static HOST_INGRESS_OBJ: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/host_ingress.bpf.o"));
static OVERLAY_INGRESS_OBJ: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/overlay_ingress.bpf.o"));

/// The tc programs, one per attach point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Program {
    /// What a pod sends: service DNAT. Runs at tc *ingress* of the pod
    /// veth's host side (the pod's egress is the host side's ingress).
    PodEgress,
    /// What a pod receives: reverse NAT of service replies, ingress policy.
    /// Runs at tc *egress* of the pod veth's host side.
    PodIngress,
    /// The node's uplink (tc ingress): native-routing fast path to local pods.
    HostIngress,
    /// The `external` VXLAN device (tc ingress): identity from the VNI.
    OverlayIngress,
}

impl Program {
    pub const ALL: [Program; 4] = [
        Program::PodEgress,
        Program::PodIngress,
        Program::HostIngress,
        Program::OverlayIngress,
    ];
    /// The programs of a pod veth's host side.
    pub const POD: [Program; 2] = [Program::PodEgress, Program::PodIngress];

    pub fn name(self) -> &'static str {
        match self {
            Program::PodEgress => "pod_egress",
            Program::PodIngress => "pod_ingress",
            Program::HostIngress => "host_ingress",
            Program::OverlayIngress => "overlay_ingress",
        }
    }

    fn object(self) -> &'static [u8] {
        match self {
            Program::PodEgress => POD_EGRESS_OBJ,
            Program::PodIngress => POD_INGRESS_OBJ,
            Program::HostIngress => HOST_INGRESS_OBJ,
            Program::OverlayIngress => OVERLAY_INGRESS_OBJ,
        }
    }

    /// Where it attaches on its interface.
    pub fn attach_type(self) -> TcAttachType {
        match self {
            Program::PodIngress => TcAttachType::Egress,
            Program::PodEgress | Program::HostIngress | Program::OverlayIngress => {
                TcAttachType::Ingress
            }
        }
    }
}

/// What a map must look like; a pinned map that differs (left by another
/// version) is refused instead of silently reused with a wrong layout.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MapSpec {
    pub name: &'static str,
    pub map_type: MapType,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
}

const fn spec(
    name: &'static str,
    map_type: MapType,
    key_size: usize,
    value_size: usize,
    max_entries: u32,
) -> MapSpec {
    MapSpec {
        name,
        map_type,
        key_size: key_size as u32,
        value_size: value_size as u32,
        max_entries,
    }
}

/// Every map of `bpf/ironmesh.h` (tests/abi.rs checks the C side agrees).
pub const MAPS: [MapSpec; 10] = [
    spec(
        "ipcache",
        MapType::LpmTrie,
        IpcacheKey::SIZE,
        IpcacheValue::SIZE,
        262_144,
    ),
    spec(
        "services",
        MapType::Hash,
        size_of::<SvcKey>(),
        size_of::<SvcValue>(),
        131_072,
    ),
    spec(
        "backend_slots",
        MapType::Hash,
        size_of::<BackendSlotKey>(),
        4,
        262_144,
    ),
    spec(
        "backends",
        MapType::Hash,
        4,
        size_of::<BackendValue>(),
        262_144,
    ),
    spec("maglev", MapType::Hash, 4, size_of::<MaglevTable>(), 4096),
    spec(
        "conntrack",
        MapType::LruHash,
        size_of::<CtKey>(),
        size_of::<CtValue>(),
        262_144,
    ),
    spec("events", MapType::RingBuf, 0, 0, 256 * 1024),
    spec(
        "endpoints",
        MapType::Hash,
        size_of::<EndpointKey>(),
        size_of::<EndpointInfo>(),
        65_536,
    ),
    spec("policy", MapType::HashOfMaps, 4, 4, 65_536),
    spec("config", MapType::Array, 4, size_of::<DpConfig>(), 1),
];

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error(transparent)]
    Pin(#[from] PinError),
    #[error("loading {object}: {source}")]
    Load {
        object: &'static str,
        source: Box<EbpfError>,
    },
    #[error("program {program}: {source}")]
    Program {
        program: &'static str,
        source: Box<ProgramError>,
    },
    #[error("map {map}: {source}")]
    Map {
        map: &'static str,
        source: Box<MapError>,
    },
    #[error("the object has no {0:?}")]
    Missing(&'static str),
    #[error(
        "pinned map {} is {found:?}, this build needs {expected:?}; \
         a datapath of another version pinned it: remove the pin to recreate it (drops its entries)",
        .expected.name
    )]
    PinnedMapMismatch { found: MapSpec, expected: MapSpec },
    #[error("service {0}: {1}")]
    InvalidService(u32, &'static str),
    #[error("interface {0:?} has no programs of ours attached")]
    NotAttached(String),
    #[error(
        "interface {0:?} still runs our programs 2 s after their links were unpinned; \
         something else holds the links (see `bpftool link`)"
    )]
    DetachTimeout(String),
    #[error("link pin {}: {source}", .path.display())]
    LinkPin {
        path: std::path::PathBuf,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
    #[error("endpoint {0}: {1}")]
    InvalidEndpoint(u32, &'static str),
}

pub(crate) fn map_err(map: &'static str) -> impl FnOnce(MapError) -> DatapathError {
    move |e| DatapathError::Map {
        map,
        source: Box::new(e),
    }
}

pub(crate) fn prog_err(program: &'static str) -> impl FnOnce(ProgramError) -> DatapathError {
    move |e| DatapathError::Program {
        program,
        source: Box::new(e),
    }
}

/// A missing key on lookup (KeyNotFound) or delete (ENOENT).
fn is_not_found(e: &MapError) -> bool {
    match e {
        MapError::KeyNotFound | MapError::ElementNotFound => true,
        MapError::SyscallError(s) => s.io_error.kind() == io::ErrorKind::NotFound,
        _ => false,
    }
}

/// `Ok(None)` for a missing key.
pub(crate) fn found<V>(r: Result<V, MapError>) -> Result<Option<V>, MapError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Deleting what is already gone is fine (idempotent reconcilers).
pub(crate) fn removed(r: Result<(), MapError>) -> Result<(), MapError> {
    found(r).map(|_| ())
}

/// A service backend as the control plane knows it; `id` is allocated by
/// the control plane and may be shared by several services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backend {
    pub id: u32,
    pub ip: IpAddr,
    pub port: u16,
    pub state: BackendState,
}

/// A service: VIP:port/proto and its backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Never 0.
    pub id: u32,
    pub vip: IpAddr,
    pub port: u16,
    pub proto: Proto,
    /// Pick backends with Maglev (consistent across nodes) instead of at random.
    pub maglev: bool,
    pub backends: Vec<Backend>,
}

impl Service {
    /// The key of its internal (pod) entry.
    pub fn key(&self) -> SvcKey {
        SvcKey::new(self.vip, self.port, self.proto)
    }
}

/// What one BPF_PROG_TEST_RUN returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutput {
    /// The program's verdict (`TC_ACT_OK` = 0, `TC_ACT_SHOT` = 2).
    pub verdict: u32,
    /// The packet after the program.
    pub packet: Vec<u8>,
    /// Mean time per run as the kernel measured it.
    pub duration: Duration,
}

pub const TC_ACT_OK: u32 = 0;
pub const TC_ACT_SHOT: u32 = 2;

/// The loaded datapath: programs (not yet attached anywhere) and handles on
/// the pinned maps.
pub struct Datapath {
    pin_root: PinRoot,
    objects: Vec<(Program, Ebpf)>,
    ipcache: LpmTrie<MapData, [u8; 20], IpcacheValue>,
    services: HashMap<MapData, SvcKey, SvcValue>,
    backend_slots: HashMap<MapData, BackendSlotKey, u32>,
    backends: HashMap<MapData, u32, BackendValue>,
    maglev: HashMap<MapData, u32, MaglevTable>,
    conntrack: HashMap<MapData, CtKey, CtValue>,
    events: RingBuf<MapData>,
    pub(crate) endpoints: HashMap<MapData, EndpointKey, EndpointInfo>,
    pub(crate) policy: HashOfMaps<MapData, u32, HashMap<MapData, PolicyKey, PolicyValue>>,
    pub(crate) config: Array<MapData, DpConfig>,
}

impl std::fmt::Debug for Datapath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Datapath")
            .field("pin_root", &self.pin_root)
            .finish_non_exhaustive()
    }
}

impl Datapath {
    /// Loads every program; maps are created and pinned under `pin_root`, or
    /// reused from there if a previous run pinned them (entries survive).
    pub fn load(pin_root: &PinRoot) -> Result<Self, DatapathError> {
        ensure_pin_dir(pin_root)?;
        let mut objects = Vec::new();
        for (i, program) in Program::ALL.into_iter().enumerate() {
            let mut ebpf = EbpfLoader::new()
                .default_map_pin_directory(pin_root.path())
                .load(program.object())
                .map_err(|e| DatapathError::Load {
                    object: program.name(),
                    source: Box::new(e),
                })?;
            if i == 0 {
                // The first object created or reused the pins: check them
                // before any program is verified against them.
                check_pins(pin_root)?;
            }
            let prog: &mut SchedClassifier = ebpf
                .program_mut(program.name())
                .ok_or(DatapathError::Missing(program.name()))?
                .try_into()
                .map_err(prog_err(program.name()))?;
            prog.load().map_err(prog_err(program.name()))?;
            objects.push((program, ebpf));
        }
        let first = &mut objects[0].1;
        let mut take = |name: &'static str| -> Result<Map, DatapathError> {
            first.take_map(name).ok_or(DatapathError::Missing(name))
        };
        Ok(Self {
            ipcache: take("ipcache")?.try_into().map_err(map_err("ipcache"))?,
            services: take("services")?.try_into().map_err(map_err("services"))?,
            backend_slots: take("backend_slots")?
                .try_into()
                .map_err(map_err("backend_slots"))?,
            backends: take("backends")?.try_into().map_err(map_err("backends"))?,
            maglev: take("maglev")?.try_into().map_err(map_err("maglev"))?,
            conntrack: take("conntrack")?
                .try_into()
                .map_err(map_err("conntrack"))?,
            events: take("events")?.try_into().map_err(map_err("events"))?,
            endpoints: take("endpoints")?
                .try_into()
                .map_err(map_err("endpoints"))?,
            policy: take("policy")?.try_into().map_err(map_err("policy"))?,
            config: take("config")?.try_into().map_err(map_err("config"))?,
            pin_root: pin_root.clone(),
            objects,
        })
    }

    pub fn pin_root(&self) -> &PinRoot {
        &self.pin_root
    }

    pub(crate) fn program(&self, program: Program) -> Result<&SchedClassifier, DatapathError> {
        let (_, ebpf) = self
            .objects
            .iter()
            .find(|(p, _)| *p == program)
            .ok_or(DatapathError::Missing(program.name()))?;
        ebpf.program(program.name())
            .ok_or(DatapathError::Missing(program.name()))?
            .try_into()
            .map_err(prog_err(program.name()))
    }

    pub(crate) fn program_mut(
        &mut self,
        program: Program,
    ) -> Result<&mut SchedClassifier, DatapathError> {
        let (_, ebpf) = self
            .objects
            .iter_mut()
            .find(|(p, _)| *p == program)
            .ok_or(DatapathError::Missing(program.name()))?;
        ebpf.program_mut(program.name())
            .ok_or(DatapathError::Missing(program.name()))?
            .try_into()
            .map_err(prog_err(program.name()))
    }

    /// Runs a program on `packet` (an Ethernet frame) with BPF_PROG_TEST_RUN,
    /// `repeat` times (the maps see every run).
    pub fn run(
        &self,
        program: Program,
        packet: &[u8],
        repeat: u32,
    ) -> Result<RunOutput, DatapathError> {
        self.run_with_mark(program, packet, repeat, 0)
    }

    /// [`Datapath::run`] with `skb->mark` preset (e.g. the identity mark the
    /// overlay program hands to pod_ingress).
    pub fn run_with_mark(
        &self,
        program: Program,
        packet: &[u8],
        repeat: u32,
        mark: u32,
    ) -> Result<RunOutput, DatapathError> {
        let mut out = vec![0u8; packet.len() + 256];
        // struct __sk_buff up to and including `mark` (offset 8); the kernel
        // accepts a shorter context and zero-fills the rest.
        let mut ctx = [0u8; 12];
        ctx[8..12].copy_from_slice(&mark.to_ne_bytes());
        let r = self
            .program(program)?
            .test_run(TestRunOptions {
                data_in: Some(packet),
                data_out: Some(&mut out),
                ctx_in: (mark != 0).then_some(&ctx[..]),
                repeat: repeat.max(1),
                ..TestRunOptions::new()
            })
            .map_err(prog_err(program.name()))?;
        out.truncate(r.data_size_out as usize);
        Ok(RunOutput {
            verdict: r.return_value,
            packet: out,
            duration: r.duration,
        })
    }

    // ---- IP cache ----

    fn ipcache_key(net: IpNet) -> LpmKey<[u8; 20]> {
        let k = IpcacheKey::new(net).to_bytes();
        let mut tail = [0u8; 20];
        tail.copy_from_slice(&k[4..]);
        LpmKey::new(u32::from_ne_bytes([k[0], k[1], k[2], k[3]]), tail)
    }

    pub fn ipcache_upsert(&mut self, net: IpNet, value: IpcacheValue) -> Result<(), DatapathError> {
        self.ipcache
            .insert(&Self::ipcache_key(net), value, 0)
            .map_err(map_err("ipcache"))
    }

    pub fn ipcache_remove(&mut self, net: IpNet) -> Result<(), DatapathError> {
        removed(self.ipcache.remove(&Self::ipcache_key(net))).map_err(map_err("ipcache"))
    }

    /// Longest-prefix match of one address, as the programs do it.
    pub fn ipcache_lookup(&self, ip: IpAddr) -> Result<Option<IpcacheValue>, DatapathError> {
        found(self.ipcache.get(&Self::ipcache_key(IpNet::from(ip)), 0)).map_err(map_err("ipcache"))
    }

    // ---- services ----

    /// Creates or replaces a service and writes its backends. Order keeps
    /// every packet consistent: backends first, then the selection data
    /// (the Maglev table replaced whole, or the slots), then the service
    /// entry, then clean-up of what the old version used.
    /// Backends that left the service are not deleted (another service may
    /// share them): use [`Datapath::remove_backend`].
    pub fn upsert_service(&mut self, svc: &Service) -> Result<(), DatapathError> {
        self.upsert_scoped(svc, Scope::Internal)
    }

    /// Creates or replaces the *external* entry of a VIP:port/proto: the one
    /// host_ingress uses for clients arriving on the uplink. `svc.backends`
    /// must be this node's backends only (externalTrafficPolicy=Local: no
    /// SNAT, the backend replies through its pod_egress, which restores
    /// VIP:port). Its id must differ from the internal entry's (each id has
    /// its own Maglev table / slots). Same ordering and rules as
    /// [`Datapath::upsert_service`]; an entry without active backends drops
    /// new flows with a `no_backend` event and keeps established ones.
    pub fn upsert_external_service(&mut self, svc: &Service) -> Result<(), DatapathError> {
        self.upsert_scoped(svc, Scope::External)
    }

    fn upsert_scoped(&mut self, svc: &Service, scope: Scope) -> Result<(), DatapathError> {
        if svc.id == 0 {
            return Err(DatapathError::InvalidService(0, "id 0 is reserved"));
        }
        let (_, family) = addr_bytes(svc.vip);
        if svc.backends.iter().any(|b| addr_bytes(b.ip).1 != family) {
            return Err(DatapathError::InvalidService(
                svc.id,
                "backends must be of the VIP's address family",
            ));
        }
        let key = SvcKey::scoped(svc.vip, svc.port, svc.proto, scope);
        let other = SvcKey {
            scope: match scope {
                Scope::Internal => Scope::External,
                Scope::External => Scope::Internal,
            }
            .raw(),
            ..key
        };
        if found(self.services.get(&other, 0))
            .map_err(map_err("services"))?
            .is_some_and(|o| o.id == svc.id)
        {
            return Err(DatapathError::InvalidService(
                svc.id,
                "the internal and external entries of a VIP need different ids",
            ));
        }
        let old = found(self.services.get(&key, 0)).map_err(map_err("services"))?;

        for b in &svc.backends {
            self.backends
                .insert(b.id, BackendValue::new(b.ip, b.port, b.state), 0)
                .map_err(map_err("backends"))?;
        }
        let mut active: Vec<&Backend> = svc
            .backends
            .iter()
            .filter(|b| b.state == BackendState::Active)
            .collect();
        active.sort_by_key(|b| b.id);
        active.dedup_by_key(|b| b.id);
        let count = u16::try_from(active.len()).map_err(|_| {
            DatapathError::InvalidService(svc.id, "more than 65535 active backends")
        })?;

        if svc.maglev {
            let mb: Vec<MaglevBackend> = active
                .iter()
                .map(|b| MaglevBackend {
                    id: b.id,
                    ip: b.ip,
                    port: b.port,
                })
                .collect();
            if mb.is_empty() {
                removed(self.maglev.remove(&svc.id)).map_err(map_err("maglev"))?;
            } else {
                let table: Box<MaglevTable> = maglev::table(&mb)
                    .into_boxed_slice()
                    .try_into()
                    .map_err(|_| DatapathError::InvalidService(svc.id, "Maglev table size"))?;
                self.maglev
                    .insert(svc.id, table.as_ref(), 0)
                    .map_err(map_err("maglev"))?;
            }
        } else {
            for (slot, b) in active.iter().enumerate() {
                let k = BackendSlotKey {
                    svc_id: svc.id,
                    slot: slot as u32,
                };
                self.backend_slots
                    .insert(k, b.id, 0)
                    .map_err(map_err("backend_slots"))?;
            }
        }

        let value = SvcValue {
            id: svc.id,
            backend_count: count,
            flags: if svc.maglev { SVC_F_MAGLEV } else { 0 },
        };
        self.services
            .insert(key, value, 0)
            .map_err(map_err("services"))?;

        if let Some(old) = old {
            let same_id = old.id == svc.id;
            let keep_slots = if same_id && !svc.maglev { count } else { 0 };
            self.remove_slots(old.id, keep_slots, old.backend_count)?;
            if !same_id || !svc.maglev {
                removed(self.maglev.remove(&old.id)).map_err(map_err("maglev"))?;
            }
        }
        Ok(())
    }

    fn remove_slots(&mut self, svc_id: u32, from: u16, to: u16) -> Result<(), DatapathError> {
        for slot in from..to {
            let k = BackendSlotKey {
                svc_id,
                slot: slot.into(),
            };
            removed(self.backend_slots.remove(&k)).map_err(map_err("backend_slots"))?;
        }
        Ok(())
    }

    /// Removes a service (not its backends); absent is fine.
    pub fn remove_service(
        &mut self,
        vip: IpAddr,
        port: u16,
        proto: Proto,
    ) -> Result<(), DatapathError> {
        self.remove_scoped(SvcKey::new(vip, port, proto))
    }

    /// Removes the external entry of a VIP (not its backends); absent is fine.
    /// Established external flows then pass host_ingress untranslated.
    pub fn remove_external_service(
        &mut self,
        vip: IpAddr,
        port: u16,
        proto: Proto,
    ) -> Result<(), DatapathError> {
        self.remove_scoped(SvcKey::scoped(vip, port, proto, Scope::External))
    }

    fn remove_scoped(&mut self, key: SvcKey) -> Result<(), DatapathError> {
        let Some(old) = found(self.services.get(&key, 0)).map_err(map_err("services"))? else {
            return Ok(());
        };
        removed(self.services.remove(&key)).map_err(map_err("services"))?;
        self.remove_slots(old.id, 0, old.backend_count)?;
        removed(self.maglev.remove(&old.id)).map_err(map_err("maglev"))
    }

    pub fn service(
        &self,
        vip: IpAddr,
        port: u16,
        proto: Proto,
    ) -> Result<Option<SvcValue>, DatapathError> {
        found(self.services.get(&SvcKey::new(vip, port, proto), 0)).map_err(map_err("services"))
    }

    /// The external entry of a VIP, if any.
    pub fn external_service(
        &self,
        vip: IpAddr,
        port: u16,
        proto: Proto,
    ) -> Result<Option<SvcValue>, DatapathError> {
        found(
            self.services
                .get(&SvcKey::scoped(vip, port, proto, Scope::External), 0),
        )
        .map_err(map_err("services"))
    }

    /// The Maglev table a service uses now.
    pub fn maglev_table(&self, svc_id: u32) -> Result<Option<Vec<u32>>, DatapathError> {
        Ok(found(self.maglev.get(&svc_id, 0))
            .map_err(map_err("maglev"))?
            .map(|t| t.to_vec()))
    }

    /// Changes one backend's state (terminating: no new flows, established
    /// ones stay; quarantined: established flows move too). Recompute the
    /// services using it with [`Datapath::upsert_service`] so new flows avoid it.
    pub fn set_backend(&mut self, b: &Backend) -> Result<(), DatapathError> {
        self.backends
            .insert(b.id, BackendValue::new(b.ip, b.port, b.state), 0)
            .map_err(map_err("backends"))
    }

    /// Deletes a backend; its established flows are re-balanced on their next packet.
    pub fn remove_backend(&mut self, id: u32) -> Result<(), DatapathError> {
        removed(self.backends.remove(&id)).map_err(map_err("backends"))
    }

    pub fn backend(&self, id: u32) -> Result<Option<BackendValue>, DatapathError> {
        found(self.backends.get(&id, 0)).map_err(map_err("backends"))
    }

    // ---- conntrack ----

    pub fn conntrack_get(&self, key: &CtKey) -> Result<Option<CtValue>, DatapathError> {
        found(self.conntrack.get(key, 0)).map_err(map_err("conntrack"))
    }

    pub fn conntrack_len(&self) -> usize {
        self.conntrack.keys().filter(Result::is_ok).count()
    }

    // ---- events ----

    /// Every event the programs wrote since the last call.
    pub fn drain_events(&mut self) -> Vec<Result<Event, RawEvent>> {
        let mut out = Vec::new();
        while let Some(item) = self.events.next() {
            if let Some(raw) = RawEvent::from_bytes(&item) {
                out.push(Event::try_from(raw));
            }
        }
        out
    }
}

/// A map pinned by an earlier run must have this build's layout.
fn check_pins(root: &PinRoot) -> Result<(), DatapathError> {
    for expected in MAPS {
        let path = root.pin_path(expected.name)?;
        let info = MapInfo::from_pin(&path).map_err(map_err(expected.name))?;
        let found = MapSpec {
            name: expected.name,
            map_type: info.map_type().map_err(map_err(expected.name))?,
            key_size: info.key_size(),
            value_size: info.value_size(),
            max_entries: info.max_entries(),
        };
        if found != expected {
            return Err(DatapathError::PinnedMapMismatch { found, expected });
        }
    }
    Ok(())
}
