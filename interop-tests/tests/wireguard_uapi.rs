//! ironmesh's userspace backend against a real wireguard-go: what it writes, wireguard-go
//! applies; what wireguard-go answers, it reads; refusals become clear errors.

use std::collections::BTreeSet;

use crypto::PrivateKey;
use crypto::wireguard::{
    DeviceSettings, PeerChange, PeerConfig, UapiErrno, UserspaceBackend, WgError, WireGuardBackend,
    ensure_device,
};
use interop_tests::*;

fn peer(endpoint: &str, ips: &[&str], keepalive: u16) -> PeerConfig {
    PeerConfig {
        public_key: PrivateKey::generate().public_key(),
        endpoint: Some(endpoint.parse().unwrap()),
        allowed_ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
        persistent_keepalive: keepalive,
    }
}

#[test]
fn wireguard_uapi_backend_round_trips_with_wireguard_go() -> Result<()> {
    let lab = Lab::new("wg-uapi")?;
    let a = lab.host("a")?;
    let dev = WgDevice::start(&a, 51820)?;
    let backend = UserspaceBackend::new(&dev.ifname);
    assert_eq!(backend.kind(), "userspace-uapi");

    // Device key and port: set once, then nothing to do.
    let key = PrivateKey::generate();
    assert!(ensure_device(&backend, &key, 51900).unwrap());
    assert!(!ensure_device(&backend, &key, 51900).unwrap());
    let st = backend.device().unwrap();
    assert_eq!(st.public_key, Some(key.public_key()));
    assert_eq!(st.listen_port, 51900);
    assert!(st.peers.is_empty());
    // `wg` agrees on the public key (our hex private key was taken as is).
    assert_eq!(
        a.exec("wg", &["show", &dev.ifname, "public-key"])?.trim(),
        key.public_key().to_string()
    );

    // Peers: add two, read them back exactly.
    let p1 = peer(
        "192.0.2.2:51820",
        &["10.244.2.0/24", "192.0.2.2/32", "2001:db8:2::/64"],
        25,
    );
    let p2 = peer("[2001:db8::3]:51821", &["10.244.3.0/24"], 0);
    backend
        .apply(&[PeerChange::Add(p1.clone()), PeerChange::Add(p2.clone())])
        .unwrap();
    let st = backend.device().unwrap();
    assert_eq!(st.peers.len(), 2);
    assert_eq!(st.peers[&p1.public_key].config, p1);
    assert_eq!(st.peers[&p2.public_key].config, p2);
    assert_eq!(st.peers[&p1.public_key].last_handshake, None);

    // Update only keepalive: the allowed IPs stay; then replace the allowed IPs.
    backend
        .apply(&[PeerChange::Update {
            public_key: p2.public_key,
            endpoint: None,
            allowed_ips: None,
            persistent_keepalive: Some(10),
        }])
        .unwrap();
    let got = backend.device().unwrap().peers[&p2.public_key]
        .config
        .clone();
    assert_eq!(got.persistent_keepalive, 10);
    assert_eq!(got.allowed_ips, p2.allowed_ips);
    let ips: BTreeSet<_> = ["10.244.30.0/24".parse().unwrap()].into();
    backend
        .apply(&[PeerChange::Update {
            public_key: p2.public_key,
            endpoint: Some("192.0.2.9:1".parse().unwrap()),
            allowed_ips: Some(ips.clone()),
            persistent_keepalive: None,
        }])
        .unwrap();
    let got = backend.device().unwrap().peers[&p2.public_key]
        .config
        .clone();
    assert_eq!(got.allowed_ips, ips);
    assert_eq!(got.endpoint, Some("192.0.2.9:1".parse().unwrap()));

    // update_only: an update of a peer that is gone does not create it.
    let ghost = PrivateKey::generate().public_key();
    backend
        .apply(&[PeerChange::Update {
            public_key: ghost,
            endpoint: None,
            allowed_ips: Some(ips),
            persistent_keepalive: None,
        }])
        .unwrap();
    assert!(!backend.device().unwrap().peers.contains_key(&ghost));

    // Remove.
    backend.apply(&[PeerChange::Remove(p1.public_key)]).unwrap();
    let st = backend.device().unwrap();
    assert_eq!(
        st.peers.keys().collect::<Vec<_>>(),
        [&p2.public_key],
        "p1 removed"
    );

    // A refusal: a second device in the same namespace cannot take the same port.
    let other = WgDevice::start(&a, 51821)?;
    let err = UserspaceBackend::new(&other.ifname)
        .configure(&DeviceSettings {
            listen_port: Some(51900),
            ..Default::default()
        })
        .unwrap_err();
    eprintln!("port clash: {err}");
    assert!(
        matches!(
            err,
            WgError::Refused {
                errno: UapiErrno::AddressInUse | UapiErrno::Io | UapiErrno::InvalidArgument,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains(&other.ifname), "{err}");

    // No daemon: the error names the socket and what to check.
    let err = UserspaceBackend::new("wgnosuchdev0").device().unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("/var/run/wireguard/wgnosuchdev0.sock") && msg.contains("wireguard-go"),
        "{msg}"
    );
    Ok(())
}
