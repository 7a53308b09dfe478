use std::collections::BTreeMap;
use std::net::IpAddr;

use common::{Identity, ReservedIdentity};
use datapath::Service;
use datapath::ipcache::{F_REMOTE_CLUSTER, F_TUNNEL_EP, IpcacheValue};
use datapath::lb::{Proto, Scope};

use super::{DatapathMaps, Maps, ServiceKey};
use crate::reconcile::{IpCacheEntry, Reconciler, Sink};
use crate::services::{Backend, BackendState, Frontend, FrontendSpec, Protocol};

#[derive(Default)]
struct Fake {
    ipcache: BTreeMap<IpAddr, IpcacheValue>,
    services: BTreeMap<ServiceKey, Service>,
    external: BTreeMap<ServiceKey, Service>,
    backends: BTreeMap<u32, ()>,
    /// Fails every write of this map ("ipcache" or "services").
    fail: Option<&'static str>,
}

impl Fake {
    fn check(&self, map: &'static str) -> Result<(), String> {
        match self.fail {
            Some(m) if m == map => Err(format!("map {map}: injected failure")),
            _ => Ok(()),
        }
    }

    /// The entries of `scope`.
    fn table(&mut self, scope: Scope) -> &mut BTreeMap<ServiceKey, Service> {
        match scope {
            Scope::Internal => &mut self.services,
            Scope::External => &mut self.external,
        }
    }
}

impl Maps for Fake {
    fn ipcache_upsert(&mut self, ip: IpAddr, value: IpcacheValue) -> Result<(), String> {
        self.check("ipcache")?;
        self.ipcache.insert(ip, value);
        Ok(())
    }
    fn ipcache_remove(&mut self, ip: IpAddr) -> Result<(), String> {
        self.check("ipcache")?;
        self.ipcache.remove(&ip);
        Ok(())
    }
    fn service_id(&self, scope: Scope, key: ServiceKey) -> Result<Option<u32>, String> {
        let table = match scope {
            Scope::Internal => &self.services,
            Scope::External => &self.external,
        };
        Ok(table.get(&key).map(|s| s.id))
    }
    fn upsert_service(&mut self, scope: Scope, svc: &Service) -> Result<(), String> {
        self.check("services")?;
        for b in &svc.backends {
            self.backends.insert(b.id, ());
        }
        self.table(scope)
            .insert((svc.vip, svc.port, svc.proto), svc.clone());
        Ok(())
    }
    fn remove_service(&mut self, scope: Scope, key: ServiceKey) -> Result<(), String> {
        self.check("services")?;
        self.table(scope).remove(&key);
        Ok(())
    }
    fn remove_backend(&mut self, id: u32) -> Result<(), String> {
        self.backends.remove(&id);
        Ok(())
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn entry(id: u32, cluster: &str, tunnel: Option<&str>) -> IpCacheEntry {
    IpCacheEntry {
        identity: Identity::from_raw(id).unwrap(),
        cluster: cluster.parse().unwrap(),
        node: Some("n1".parse().unwrap()),
        tunnel_endpoint: tunnel.map(ip),
        encrypt_key: 3,
    }
}

fn fe(vip: &str, port: u16) -> Frontend {
    Frontend {
        vip: ip(vip),
        port,
        protocol: Protocol::Tcp,
    }
}

fn spec(backends: &[(&str, BackendState)]) -> FrontendSpec {
    FrontendSpec {
        service: "shop/web".parse().unwrap(),
        backends: backends
            .iter()
            .map(|(a, state)| Backend {
                ip: ip(a),
                port: 8080,
                port_name: None,
                node: None,
                cluster: Some("red".parse().unwrap()),
                zone: None,
                state: *state,
            })
            .collect(),
        load_balancer: false,
    }
}

/// A LoadBalancer frontend's spec: backends as (address, node, state).
fn lb_spec(backends: &[(&str, &str, BackendState)]) -> FrontendSpec {
    FrontendSpec {
        service: "shop/web".parse().unwrap(),
        backends: backends
            .iter()
            .map(|(a, node, state)| Backend {
                ip: ip(a),
                port: 8080,
                port_name: None,
                node: Some(node.parse().unwrap()),
                cluster: Some("red".parse().unwrap()),
                zone: None,
                state: *state,
            })
            .collect(),
        load_balancer: true,
    }
}

fn external_backends(
    m: &DatapathMaps<Fake>,
    vip: &str,
) -> Option<Vec<(IpAddr, datapath::lb::BackendState)>> {
    m.with(|f| {
        f.external
            .get(&(ip(vip), 80, Proto::Tcp))
            .map(|s| s.backends.iter().map(|b| (b.ip, b.state)).collect())
    })
}

#[test]
fn load_balancer_frontends_get_an_external_entry_with_this_nodes_backends() {
    use datapath::lb::BackendState as Dp;
    let m = maps().with_node("n1".parse().unwrap());
    let mut sink = m.service_sink();
    let lb = fe("203.0.113.10", 80);
    sink.upsert(
        &lb,
        &lb_spec(&[
            ("10.1.0.10", "n1", BackendState::Active),
            ("10.1.0.11", "n1", BackendState::Terminating),
            ("10.2.0.10", "n2", BackendState::Active),
        ]),
    )
    .unwrap();
    // Internal: every backend; external: this node's, with their states.
    m.with(|f| {
        assert_eq!(
            f.services[&(ip("203.0.113.10"), 80, Proto::Tcp)]
                .backends
                .len(),
            3
        )
    });
    assert_eq!(
        external_backends(&m, "203.0.113.10").unwrap(),
        [
            (ip("10.1.0.10"), Dp::Active),
            (ip("10.1.0.11"), Dp::Terminating)
        ]
    );
    let (ids, backend_ids) = m.ids();
    let ext_id = m.external_ids()[&lb];
    assert_ne!(ext_id, ids[&lb]);
    assert_ne!(ext_id, 0);

    // A ClusterIP frontend (not a LoadBalancer VIP) gets no external entry.
    let cip = fe("10.96.0.10", 80);
    sink.upsert(&cip, &spec(&[("10.1.0.10", BackendState::Active)]))
        .unwrap();
    assert!(external_backends(&m, "10.96.0.10").is_none());

    // The same state in a fresh meshd over the same maps: same ids.
    let fake = m.with(|f| Fake {
        services: f.services.clone(),
        external: f.external.clone(),
        backends: f.backends.clone(),
        ..Fake::default()
    });
    let m2 = DatapathMaps::with_maps(fake, "red".parse().unwrap()).with_node("n1".parse().unwrap());
    m2.service_sink()
        .upsert(&lb, &lb_spec(&[("10.1.0.10", "n1", BackendState::Active)]))
        .unwrap();
    assert_eq!(m2.external_ids()[&lb], ext_id);
    assert_eq!(m2.ids().0[&lb], ids[&lb]);

    // The node's backends leave: the entry goes, the local backend stays while the
    // ClusterIP frontend uses it, the others are deleted.
    sink.upsert(&lb, &lb_spec(&[("10.2.0.10", "n2", BackendState::Active)]))
        .unwrap();
    assert!(external_backends(&m, "203.0.113.10").is_none());
    assert!(m.external_ids().is_empty());
    m.with(|f| {
        assert!(
            f.backends
                .contains_key(&backend_ids[&(ip("10.1.0.10"), 8080)])
        );
        assert!(
            !f.backends
                .contains_key(&backend_ids[&(ip("10.1.0.11"), 8080)])
        );
    });
    // Back, then the VIP stops being a LoadBalancer VIP: gone again.
    let back = lb_spec(&[("10.1.0.10", "n1", BackendState::Active)]);
    sink.upsert(&lb, &back).unwrap();
    assert_eq!(m.external_ids()[&lb], ext_id);
    sink.upsert(
        &lb,
        &FrontendSpec {
            load_balancer: false,
            ..back.clone()
        },
    )
    .unwrap();
    assert!(external_backends(&m, "203.0.113.10").is_none());
    // Removing the frontend removes both entries.
    sink.upsert(&lb, &back).unwrap();
    sink.remove(&lb).unwrap();
    sink.remove(&cip).unwrap();
    m.with(|f| {
        assert!(f.services.is_empty() && f.external.is_empty());
        assert!(f.backends.is_empty());
    });
    assert!(m.external_ids().is_empty() && m.ids().0.is_empty());
}

#[test]
fn without_a_node_name_no_external_entry_is_programmed() {
    let m = maps();
    let lb = fe("203.0.113.10", 80);
    m.service_sink()
        .upsert(&lb, &lb_spec(&[("10.1.0.10", "n1", BackendState::Active)]))
        .unwrap();
    assert!(external_backends(&m, "203.0.113.10").is_none());
    m.with(|f| assert_eq!(f.services.len(), 1));
}

fn maps() -> DatapathMaps<Fake> {
    DatapathMaps::with_maps(Fake::default(), "red".parse().unwrap())
}

#[test]
fn ipcache_entries_carry_identity_tunnel_key_and_remote_flag() {
    let m = maps();
    let mut sink = m.ipcache_sink();
    sink.upsert(&ip("10.1.0.5"), &entry(4242, "red", Some("192.0.2.2")))
        .unwrap();
    sink.upsert(&ip("10.2.0.5"), &entry(4243, "blue", Some("198.51.100.2")))
        .unwrap();
    let host = IpCacheEntry {
        identity: ReservedIdentity::Host.into(),
        tunnel_endpoint: None,
        ..entry(1, "red", None)
    };
    sink.upsert(&ip("192.0.2.2"), &host).unwrap();
    // An IPv6 tunnel endpoint cannot be used by the datapath: identity only.
    sink.upsert(&ip("fd00::5"), &entry(4244, "red", Some("fd00::1")))
        .unwrap();
    m.with(|f| {
        let local = f.ipcache[&ip("10.1.0.5")];
        assert_eq!(local.identity, 4242);
        assert_eq!(local.tunnel_endpoint(), Some("192.0.2.2".parse().unwrap()));
        assert_eq!(local.key_index, 3);
        assert_eq!(local.flags & F_REMOTE_CLUSTER, 0);
        let remote = f.ipcache[&ip("10.2.0.5")];
        assert_ne!(remote.flags & F_REMOTE_CLUSTER, 0);
        let h = f.ipcache[&ip("192.0.2.2")];
        assert_eq!(h.tunnel_endpoint(), None);
        assert_eq!(h.identity().unwrap(), ReservedIdentity::Host.into());
        assert_eq!(f.ipcache[&ip("fd00::5")].flags & F_TUNNEL_EP, 0);
    });
    sink.remove(&ip("10.1.0.5")).unwrap();
    sink.remove(&ip("10.1.0.5")).unwrap();
    m.with(|f| assert!(!f.ipcache.contains_key(&ip("10.1.0.5"))));
}

#[test]
fn services_use_maglev_stable_ids_and_shared_backends_are_refcounted() {
    let m = maps();
    let mut sink = m.service_sink();
    let a = fe("10.96.0.10", 80);
    let b = fe("10.96.0.11", 80);
    sink.upsert(
        &a,
        &spec(&[
            ("10.1.0.10", BackendState::Active),
            ("10.1.0.11", BackendState::Terminating),
            ("fd00::10", BackendState::Active),
        ]),
    )
    .unwrap();
    sink.upsert(&b, &spec(&[("10.1.0.10", BackendState::Active)]))
        .unwrap();
    let (svc_ids, backend_ids) = m.ids();
    assert_ne!(svc_ids[&a], svc_ids[&b]);
    assert!(svc_ids.values().all(|id| *id != 0));
    // The IPv6 backend is not given to the IPv4 VIP.
    assert_eq!(backend_ids.len(), 2);
    m.with(|f| {
        let s = &f.services[&(ip("10.96.0.10"), 80, Proto::Tcp)];
        assert!(s.maglev);
        assert_eq!(s.backends.len(), 2);
        assert_eq!(
            s.backends
                .iter()
                .filter(|b| b.state == datapath::lb::BackendState::Terminating)
                .count(),
            1
        );
        assert_eq!(f.backends.len(), 2);
    });

    // The same state in a fresh meshd gives the same ids (hash-derived).
    let m2 = maps();
    m2.service_sink()
        .upsert(&a, &spec(&[("10.1.0.10", BackendState::Active)]))
        .unwrap();
    assert_eq!(m2.ids().0[&a], svc_ids[&a]);
    assert_eq!(
        m2.ids().1[&(ip("10.1.0.10"), 8080)],
        backend_ids[&(ip("10.1.0.10"), 8080)]
    );

    // 10.1.0.11 leaves a: deleted; 10.1.0.10 is still used by b.
    sink.upsert(&a, &spec(&[("10.1.0.10", BackendState::Active)]))
        .unwrap();
    let shared = backend_ids[&(ip("10.1.0.10"), 8080)];
    let gone = backend_ids[&(ip("10.1.0.11"), 8080)];
    m.with(|f| {
        assert!(f.backends.contains_key(&shared));
        assert!(!f.backends.contains_key(&gone));
    });
    sink.remove(&a).unwrap();
    m.with(|f| assert!(f.backends.contains_key(&shared)));
    sink.remove(&b).unwrap();
    m.with(|f| {
        assert!(f.services.is_empty());
        assert!(f.backends.is_empty());
    });
    assert!(m.ids().0.is_empty() && m.ids().1.is_empty());
}

#[test]
fn a_frontend_already_in_the_map_keeps_its_id() {
    let mut fake = Fake::default();
    fake.services.insert(
        (ip("10.96.0.10"), 80, Proto::Tcp),
        Service {
            id: 77,
            vip: ip("10.96.0.10"),
            port: 80,
            proto: Proto::Tcp,
            maglev: true,
            backends: vec![],
        },
    );
    let m = DatapathMaps::with_maps(fake, "red".parse().unwrap());
    let a = fe("10.96.0.10", 80);
    m.service_sink()
        .upsert(&a, &spec(&[("10.1.0.10", BackendState::Active)]))
        .unwrap();
    assert_eq!(m.ids().0[&a], 77);
}

#[test]
fn errors_name_map_and_key_and_the_reconciler_retries() {
    let m = maps();
    let mut sink = m.service_sink();
    m.state.lock().unwrap().maps.fail = Some("services");
    let a = fe("10.96.0.10", 80);
    let mut r: Reconciler<Frontend, FrontendSpec> = Reconciler::default();
    r.set(a, Some(spec(&[("10.1.0.10", BackendState::Active)])));
    let e = sink
        .upsert(&a, &spec(&[("10.1.0.10", BackendState::Active)]))
        .unwrap_err();
    assert!(
        e.0.contains("services") && e.0.contains("10.96.0.10:80/tcp"),
        "{e}"
    );
    let rep = r.flush(&mut sink);
    assert_eq!((rep.upserts, rep.failed), (0, 1));
    // Nothing half-done stays: the allocated backend is released.
    assert!(m.ids().1.is_empty());
    m.state.lock().unwrap().maps.fail = None;
    let rep = r.flush(&mut sink);
    assert_eq!((rep.upserts, rep.failed), (1, 0));
    m.with(|f| assert_eq!(f.services.len(), 1));

    let mut ic = m.ipcache_sink();
    m.state.lock().unwrap().maps.fail = Some("ipcache");
    let e = ic
        .upsert(&ip("10.1.0.5"), &entry(4242, "red", None))
        .unwrap_err();
    assert!(e.0.contains("ipcache") && e.0.contains("10.1.0.5"), "{e}");
}

#[test]
fn sctp_frontends_are_skipped() {
    let m = maps();
    let f = Frontend {
        protocol: Protocol::Sctp,
        ..fe("10.96.0.10", 80)
    };
    m.service_sink()
        .upsert(&f, &spec(&[("10.1.0.10", BackendState::Active)]))
        .unwrap();
    m.service_sink().remove(&f).unwrap();
    m.with(|x| assert!(x.services.is_empty() && x.backends.is_empty()));
}
