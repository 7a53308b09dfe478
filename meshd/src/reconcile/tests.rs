use std::net::IpAddr;

use common::{ClusterName, Identity, ReservedIdentity};
use ipnet::IpNet;

use super::*;
use crate::endpoints::EndpointRecord;
use crate::lbipam::VipValue;
use crate::schema::Resource;
use crate::services::{Backend, BackendState, Protocol, ServicePort, ServiceRecord};

fn c(s: &str) -> ClusterName {
    s.parse().unwrap()
}

fn up(cluster: &str, resource: Resource, value: Vec<u8>) -> ViewChange {
    ViewChange::Upsert {
        cluster: c(cluster),
        resource,
        value,
    }
}

fn del(cluster: &str, resource: Resource) -> ViewChange {
    ViewChange::Delete {
        cluster: c(cluster),
        resource,
    }
}

fn node(cluster: &str, name: &str, ip: &str, cidr: &str) -> (Resource, Vec<u8>) {
    let mut r = NodeRecord::new(c(cluster), name.parse().unwrap());
    r.ipv4 = Some(ip.parse().unwrap());
    r.pod_cidrs = vec![cidr.parse().unwrap()];
    (Resource::Node(name.parse().unwrap()), r.encode())
}

fn ep(cluster: &str, ip: &str, node: &str, id: u32) -> (Resource, Vec<u8>) {
    let r = EndpointRecord {
        ip: ip.parse().unwrap(),
        cluster: c(cluster),
        node: node.parse().unwrap(),
        identity: Identity::from_raw(id).unwrap(),
        tunnel_endpoint: Some("192.0.2.99".parse().unwrap()),
        encrypt_key: 2,
        ports: Vec::new(),
        pod: None,
    };
    (Resource::Endpoint(r.ip), r.encode())
}

fn svc(
    cluster: &str,
    backend_ip: &str,
    affinity: crate::services::Affinity,
) -> (Resource, Vec<u8>) {
    let r = ServiceRecord {
        service: "shop/web".parse().unwrap(),
        cluster: c(cluster),
        vips: vec!["172.20.0.10".parse().unwrap()],
        ports: vec![ServicePort {
            name: None,
            port: 80,
            protocol: Protocol::Tcp,
        }],
        backends: vec![Backend {
            ip: backend_ip.parse().unwrap(),
            port: 8080,
            port_name: None,
            node: None,
            cluster: None,
            zone: None,
            state: BackendState::Active,
        }],
        global: true,
        affinity,
    };
    (Resource::Service(r.service.clone()), r.encode())
}

struct Rec {
    peers: RecordingSink<PeerKey, NodeRecord>,
    ipcache: RecordingSink<IpAddr, IpCacheEntry>,
    services: RecordingSink<Frontend, FrontendSpec>,
    adverts: RecordingSink<IpNet, Advert>,
}

impl Rec {
    fn new() -> Self {
        Self {
            peers: RecordingSink::default(),
            ipcache: RecordingSink::default(),
            services: RecordingSink::default(),
            adverts: RecordingSink::default(),
        }
    }
    fn flush(&self, d: &mut MeshDesired) -> [FlushReport; 4] {
        d.flush(
            &mut self.peers.clone(),
            &mut self.ipcache.clone(),
            &mut self.services.clone(),
            &mut self.adverts.clone(),
        )
    }
}

#[test]
fn reconciler_sends_only_differences_and_retries_failures() {
    let mut r: Reconciler<u32, &str> = Reconciler::default();
    let sink = RecordingSink::default();
    r.set(1, Some("a"));
    r.set(2, Some("b"));
    r.set(2, None);
    assert_eq!(r.pending(), 1, "2 was never applied: nothing to do for it");
    let rep = r.flush(&mut sink.clone());
    assert_eq!((rep.upserts, rep.removes, rep.failed), (1, 0, 0));
    r.set(1, Some("a"));
    assert_eq!(r.pending(), 0, "an unchanged value is not sent again");
    sink.with(|s| s.refuse.insert(1));
    r.set(1, Some("a2"));
    assert_eq!(r.flush(&mut sink.clone()).failed, 1);
    assert_eq!(sink.state()[&1], "a");
    sink.with(|s| s.refuse.clear());
    assert_eq!(r.flush(&mut sink.clone()).upserts, 1);
    assert_eq!(sink.state()[&1], "a2");
    // A consumer restart: resync sends everything again.
    let fresh = RecordingSink::default();
    r.resync();
    r.flush(&mut fresh.clone());
    assert_eq!(fresh.state(), sink.state());
}

#[test]
fn desired_state_from_view_changes() {
    let mut d = MeshDesired::new(c("red"), "r1".parse().unwrap());
    let rec = Rec::new();
    let (k, v) = node("red", "r1", "192.0.2.1", "10.1.1.0/24");
    d.apply(&up("red", k, v));
    let (k, v) = node("red", "r2", "192.0.2.2", "10.1.2.0/24");
    d.apply(&up("red", k, v));
    let (k, v) = node("green", "g1", "198.51.100.1", "10.2.1.0/24");
    d.apply(&up("green", k, v));
    let (k, v) = ep("red", "10.1.2.5", "r2", 65792);
    d.apply(&up("red", k, v));
    let (k, v) = ep("green", "10.2.1.5", "g1", 131328);
    d.apply(&up("green", k, v));
    let (k, v) = svc("red", "10.1.2.5", crate::services::Affinity::None);
    d.apply(&up("red", k, v));
    let (k, v) = svc("green", "10.2.1.5", crate::services::Affinity::None);
    d.apply(&up("green", k.clone(), v));
    let vip = VipValue {
        service: "shop/web".parse().unwrap(),
        pool: "203.0.113.0/28".parse().unwrap(),
    };
    let vip_ip: IpAddr = "203.0.113.1".parse().unwrap();
    d.apply(&up(
        "red",
        Resource::Vip(vip_ip),
        serde_json::to_vec(&vip).unwrap(),
    ));
    rec.flush(&mut d);

    // Peers: every node but this one, of both clusters.
    let peers: Vec<String> = rec
        .peers
        .state()
        .keys()
        .map(|(c, n)| format!("{c}/{n}"))
        .collect();
    assert_eq!(peers, ["green/g1", "red/r2"]);
    // IP cache: endpoints with their identity, node addresses as host / remote-node.
    let ipc = rec.ipcache.state();
    assert_eq!(
        ipc[&"10.2.1.5".parse::<IpAddr>().unwrap()].identity.raw(),
        131328
    );
    assert_eq!(
        ipc[&"10.2.1.5".parse::<IpAddr>().unwrap()].cluster,
        c("green")
    );
    assert_eq!(ipc[&"10.2.1.5".parse::<IpAddr>().unwrap()].encrypt_key, 2);
    assert_eq!(
        ipc[&"192.0.2.1".parse::<IpAddr>().unwrap()].identity,
        Identity::from(ReservedIdentity::Host)
    );
    assert_eq!(
        ipc[&"198.51.100.1".parse::<IpAddr>().unwrap()].identity,
        Identity::from(ReservedIdentity::RemoteNode)
    );
    assert_eq!(ipc.len(), 5);
    // Services: the global service has both clusters' backends.
    let svcs = rec.services.state();
    assert_eq!(svcs.len(), 1);
    let spec = svcs.values().next().unwrap();
    let bs: Vec<String> = spec
        .backends
        .iter()
        .map(|b| format!("{}/{}", b.cluster.as_ref().unwrap(), b.ip))
        .collect();
    assert_eq!(bs, ["red/10.1.2.5", "green/10.2.1.5"]);
    // Adverts: this node's PodCIDR and the cluster's VIP.
    let adv = rec.adverts.state();
    assert_eq!(
        adv[&"10.1.1.0/24".parse::<IpNet>().unwrap()],
        Advert {
            source: AdvertSource::PodCidr,
            attributes: AdvertAttributes::default()
        }
    );
    assert!(matches!(
        adv[&IpNet::from(vip_ip)].source,
        AdvertSource::LoadBalancerVip(_)
    ));
    assert_eq!(adv.len(), 2);

    // Deletes propagate as removals; only the differences are sent.
    let before = rec.ipcache.with(|s| s.upserts);
    d.apply(&del("green", k));
    d.apply(&del("green", Resource::Node("g1".parse().unwrap())));
    let reports = rec.flush(&mut d);
    assert_eq!(reports[0].removes, 1);
    assert_eq!(
        reports[1],
        FlushReport {
            upserts: 0,
            removes: 1,
            failed: 0
        }
    );
    assert_eq!(rec.ipcache.with(|s| s.upserts), before);
    let spec = rec.services.state().into_values().next().unwrap();
    assert_eq!(
        spec.backends.len(),
        1,
        "green's backends left with its service"
    );
    assert_eq!(d.pending(), 0);
}

/// `shop/web` of red with one backend per (node, state).
fn svc_on(backends: &[(&str, BackendState)]) -> (Resource, Vec<u8>) {
    let (k, v) = svc("red", "10.1.2.5", crate::services::Affinity::None);
    let mut r = ServiceRecord::decode(&c("red"), &"shop/web".parse().unwrap(), &v).unwrap();
    r.backends = backends
        .iter()
        .enumerate()
        .map(|(i, (n, state))| Backend {
            ip: format!("10.1.1.{}", i + 10).parse().unwrap(),
            port: 8080,
            port_name: None,
            node: Some(n.parse().unwrap()),
            cluster: None,
            zone: None,
            state: *state,
        })
        .collect();
    (k, r.encode())
}

#[test]
fn vips_follow_local_active_backends() {
    let mut d = MeshDesired::new(c("red"), "r1".parse().unwrap())
        .with_vip_adverts(VipAdverts::LocalBackends);
    let vip_ip: IpAddr = "203.0.113.1".parse().unwrap();
    let vip = serde_json::to_vec(&VipValue {
        service: "shop/web".parse().unwrap(),
        pool: "203.0.113.0/28".parse().unwrap(),
    })
    .unwrap();
    let vip_net = IpNet::from(vip_ip);
    // The VIP alone, or with a backend on another node or a terminating one here: no advert.
    d.apply(&up("red", Resource::Vip(vip_ip), vip.clone()));
    assert_eq!(d.adverts.get(&vip_net), None);
    let (k, v) = svc_on(&[
        ("r2", BackendState::Active),
        ("r1", BackendState::Terminating),
    ]);
    d.apply(&up("red", k.clone(), v));
    assert_eq!(d.adverts.get(&vip_net), None);
    // An active backend here: advertised; the same service in another cluster does not count.
    let (k2, v2) = svc_on(&[("r1", BackendState::Active)]);
    d.apply(&up("red", k2, v2));
    assert!(matches!(
        d.adverts.get(&vip_net).map(|a| &a.source),
        Some(AdvertSource::LoadBalancerVip(_))
    ));
    // Its last local backend goes: withdrawn; back, then the VIP released: withdrawn.
    let (k, v) = svc_on(&[("r2", BackendState::Active)]);
    d.apply(&up("red", k.clone(), v));
    assert_eq!(d.adverts.get(&vip_net), None);
    let (_, v) = svc_on(&[("r1", BackendState::Active)]);
    d.apply(&up("red", k.clone(), v));
    assert!(d.adverts.get(&vip_net).is_some());
    d.apply(&del("red", Resource::Vip(vip_ip)));
    assert_eq!(d.adverts.get(&vip_net), None);
    d.apply(&up("red", Resource::Vip(vip_ip), vip));
    assert!(d.adverts.get(&vip_net).is_some());
    d.apply(&del("red", k));
    assert_eq!(d.adverts.get(&vip_net), None);
    // A green record with a backend named like this node is another cluster's node.
    let mut g = MeshDesired::new(c("red"), "r1".parse().unwrap())
        .with_vip_adverts(VipAdverts::LocalBackends);
    let (k, v) = svc_on(&[("r1", BackendState::Active)]);
    let mut r = ServiceRecord::decode(&c("red"), &"shop/web".parse().unwrap(), &v).unwrap();
    r.cluster = c("green");
    for b in &mut r.backends {
        b.cluster = None;
    }
    g.apply(&up(
        "red",
        Resource::Vip(vip_ip),
        serde_json::to_vec(&VipValue {
            service: "shop/web".parse().unwrap(),
            pool: "203.0.113.0/28".parse().unwrap(),
        })
        .unwrap(),
    ));
    g.apply(&up("green", k, r.encode()));
    assert_eq!(g.adverts.get(&vip_net), None);
}

#[test]
fn frontends_of_a_load_balancer_vip_are_marked_whichever_arrives_first() {
    use crate::services::Frontend;
    let lb_ip: IpAddr = "203.0.113.1".parse().unwrap();
    let vip = serde_json::to_vec(&VipValue {
        service: "shop/web".parse().unwrap(),
        pool: "203.0.113.0/28".parse().unwrap(),
    })
    .unwrap();
    let (k, v) = svc_on(&[("r1", BackendState::Active)]);
    let mut r = ServiceRecord::decode(&c("red"), &"shop/web".parse().unwrap(), &v).unwrap();
    r.vips.push(lb_ip);
    let v = r.encode();
    let fe = |ip: IpAddr| Frontend {
        vip: ip,
        port: 80,
        protocol: Protocol::Tcp,
    };
    let cluster_ip = fe("172.20.0.10".parse().unwrap());
    for vip_first in [true, false] {
        let mut d = MeshDesired::new(c("red"), "r1".parse().unwrap());
        if vip_first {
            d.apply(&up("red", Resource::Vip(lb_ip), vip.clone()));
        }
        d.apply(&up("red", k.clone(), v.clone()));
        if !vip_first {
            assert!(!d.services_out.get(&fe(lb_ip)).unwrap().load_balancer);
            d.apply(&up("red", Resource::Vip(lb_ip), vip.clone()));
        }
        assert!(d.services_out.get(&fe(lb_ip)).unwrap().load_balancer);
        assert!(!d.services_out.get(&cluster_ip).unwrap().load_balancer);
        // Released: an internal frontend only.
        d.apply(&del("red", Resource::Vip(lb_ip)));
        assert!(!d.services_out.get(&fe(lb_ip)).unwrap().load_balancer);
    }
}

/// A stored object of any kind from one manifest document (status empty).
fn object(yaml: &str) -> (Resource, Vec<u8>) {
    let docs = resources::parse_manifests(yaml).unwrap();
    let o = resources::decode(&docs[0]).unwrap();
    let name = crate::schema::ObjectName::new(o.kind(), o.meta.namespace.as_deref(), &o.meta.name)
        .unwrap();
    let stored = resources::Stored {
        object: o,
        status: serde_json::Value::Null,
    };
    (Resource::Object(name), stored.encode())
}

#[test]
fn bgp_advertisements_choose_what_is_announced_and_with_which_attributes() {
    let mut d = MeshDesired::new(c("red"), "r1".parse().unwrap());
    let (k, v) = node("red", "r1", "192.0.2.1", "10.1.1.0/24");
    d.apply(&up("red", k, v));
    let vip = |ip: &str, svc: &str| {
        (
            Resource::Vip(ip.parse().unwrap()),
            serde_json::to_vec(&VipValue {
                service: svc.parse().unwrap(),
                pool: "203.0.113.0/28".parse().unwrap(),
            })
            .unwrap(),
        )
    };
    for (ip, svc) in [("203.0.113.1", "shop/web"), ("203.0.113.2", "shop/db")] {
        let (k, v) = vip(ip, svc);
        d.apply(&up("red", k, v));
    }
    let (k, v) = object(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop, labels: {expose: bgp}}\n\
         spec: {type: LoadBalancer, selector: {app: web}, ports: [{port: 80}]}\n",
    );
    d.apply(&up("red", k, v));
    let pod: IpNet = "10.1.1.0/24".parse().unwrap();
    let web: IpNet = "203.0.113.1/32".parse().unwrap();
    let db: IpNet = "203.0.113.2/32".parse().unwrap();
    let attrs = |d: &MeshDesired, p: &IpNet| d.adverts.get(p).map(|a| a.attributes.clone());
    // No BGPAdvertisement: the implicit default, everything bare.
    assert_eq!(attrs(&d, &pod), Some(AdvertAttributes::default()));
    assert_eq!(attrs(&d, &web), Some(AdvertAttributes::default()));
    assert_eq!(attrs(&d, &db), Some(AdvertAttributes::default()));

    // Services labelled expose=bgp only, with attributes; the PodCIDR with its own.
    let (adv, v) = object(
        r#"
apiVersion: ironmesh.io/v1
kind: BGPAdvertisement
metadata: {name: vips}
spec:
  advertisements:
  - advertisementType: Service
    service: {addresses: [LoadBalancerIP]}
    selector: {matchLabels: {expose: bgp}}
    attributes:
      communities: {standard: ["65101:200"], large: ["65101:2:1"]}
      localPreference: 150
"#,
    );
    d.apply(&up("red", adv.clone(), v));
    assert_eq!(
        attrs(&d, &pod),
        None,
        "no PodCIDR advertisement: not announced"
    );
    assert_eq!(attrs(&d, &db), None, "shop/db is not labelled expose=bgp");
    let w = attrs(&d, &web).unwrap();
    assert_eq!(
        w.communities
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["65101:200"]
    );
    assert_eq!(
        w.large_communities
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["65101:2:1"]
    );
    assert_eq!(w.local_pref, Some(150));

    // A second advertisement adds the PodCIDR and, for every service, no-export: communities
    // are unioned, the highest LOCAL_PREF wins.
    let (adv2, v) = object(
        r#"
apiVersion: ironmesh.io/v1
kind: BGPAdvertisement
metadata: {name: all}
spec:
  advertisements:
  - advertisementType: PodCIDR
    attributes: {communities: {standard: ["65101:100"]}}
  - advertisementType: Service
    service: {addresses: [LoadBalancerIP]}
    selector: {}
    attributes: {communities: {wellKnown: [no-export]}, localPreference: 120}
"#,
    );
    d.apply(&up("red", adv2.clone(), v));
    let p = attrs(&d, &pod).unwrap();
    assert_eq!(
        p.communities
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["65101:100"]
    );
    let w = attrs(&d, &web).unwrap();
    assert_eq!(
        w.communities.iter().copied().collect::<Vec<_>>(),
        ["65101:200".parse().unwrap(), common::Community::NO_EXPORT]
    );
    assert_eq!(w.local_pref, Some(150));
    assert_eq!(attrs(&d, &db).unwrap().local_pref, Some(120));

    // The service's label goes: only the catch-all takes it now.
    let (k, v) = object(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\n\
         spec: {type: LoadBalancer, selector: {app: web}, ports: [{port: 80}]}\n",
    );
    d.apply(&up("red", k, v));
    assert_eq!(attrs(&d, &web).unwrap().local_pref, Some(120));

    // Another cluster's BGPAdvertisement is not this cluster's business.
    d.apply(&del("red", adv2));
    let (k, v) = object(
        "apiVersion: ironmesh.io/v1\nkind: BGPAdvertisement\nmetadata: {name: all}\n\
         spec: {advertisements: [{advertisementType: PodCIDR}]}\n",
    );
    d.apply(&up("blue", k, v));
    assert_eq!(attrs(&d, &pod), None);
    assert_eq!(attrs(&d, &web), None);
    // The last one deleted: the implicit default again.
    d.apply(&del("red", adv));
    assert_eq!(attrs(&d, &pod), Some(AdvertAttributes::default()));
    assert_eq!(attrs(&d, &db), Some(AdvertAttributes::default()));
}
