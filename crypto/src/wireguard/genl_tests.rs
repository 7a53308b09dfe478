//! Wire vectors for the WireGuard generic netlink messages, built by hand from
//! `include/uapi/linux/wireguard.h` (little-endian hosts), checked both ways.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use super::*;
use crate::keys::{PrivateKey, PublicKey};
use crate::netlink::Netlink;
use crate::wireguard::kernel::{KernelBackend, NETLINK_GENERIC, resolve_family};
use crate::wireguard::{DeviceSettings, PeerChange, PeerConfig, WgError};

fn key(b: u8) -> PublicKey {
    PublicKey::from_bytes([b; 32])
}

fn nets(list: &[&str]) -> BTreeSet<ipnet::IpNet> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

#[cfg(target_endian = "little")]
#[test]
fn remove_peer_vector() {
    let bodies = set_peers("wg0", &[PeerChange::Remove(key(7))]);
    let mut want = vec![CMD_SET_DEVICE, 1, 0, 0];
    want.extend_from_slice(&[8, 0, 2, 0, b'w', b'g', b'0', 0]); // WGDEVICE_A_IFNAME
    want.extend_from_slice(&[52, 0, 0x08, 0x80]); // WGDEVICE_A_PEERS | NLA_F_NESTED
    want.extend_from_slice(&[48, 0, 0x00, 0x80]); // peer 0 | NLA_F_NESTED
    want.extend_from_slice(&[36, 0, 1, 0]); // WGPEER_A_PUBLIC_KEY
    want.extend_from_slice(&[7; 32]);
    want.extend_from_slice(&[8, 0, 3, 0, 1, 0, 0, 0]); // WGPEER_A_FLAGS = REMOVE_ME
    assert_eq!(bodies, [want]);
}

#[cfg(target_endian = "little")]
#[test]
fn sockaddr_vectors() {
    let v4: SocketAddr = "192.0.2.1:51820".parse().unwrap();
    assert_eq!(
        sockaddr(v4),
        [2, 0, 0xca, 0x6c, 192, 0, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0]
    );
    let v6: SocketAddr = "[2001:db8::1]:51820".parse().unwrap();
    let b = sockaddr(v6);
    assert_eq!(b.len(), 28);
    assert_eq!(&b[0..4], &[10, 0, 0xca, 0x6c]);
    assert_eq!(&b[8..10], &[0x20, 0x01]);
}

#[test]
fn add_and_update_read_back_as_sent() {
    let add = PeerConfig {
        public_key: key(1),
        endpoint: Some("192.0.2.2:51820".parse().unwrap()),
        allowed_ips: nets(&["10.244.2.0/24", "fd00:2::/64"]),
        persistent_keepalive: 25,
    };
    let bodies = set_peers("wg0", &[PeerChange::Add(add.clone())]);
    let dev = parse_device(&bodies).unwrap();
    assert_eq!(dev.peers[&key(1)].config, add);
    // The flags say "replace the allowed IPs" (an add overwrites).
    let flags = PEER_F_REPLACE_ALLOWEDIPS.to_ne_bytes();
    assert!(
        bodies[0]
            .windows(8)
            .any(|w| w[2..4] == PEER_FLAGS.to_ne_bytes() && w[4..8] == flags)
    );

    let update = PeerChange::Update {
        public_key: key(1),
        endpoint: None,
        allowed_ips: None,
        persistent_keepalive: Some(0),
    };
    let bodies = set_peers("wg0", &[update]);
    let want = (PEER_F_UPDATE_ONLY).to_ne_bytes();
    assert!(
        bodies[0]
            .windows(8)
            .any(|w| w[2..4] == PEER_FLAGS.to_ne_bytes() && w[4..8] == want)
    );
    let dev = parse_device(&bodies).unwrap();
    let p = &dev.peers[&key(1)].config;
    assert_eq!((p.endpoint, p.allowed_ips.len()), (None, 0));
}

#[test]
fn many_peers_split_at_peer_boundaries_and_all_arrive() {
    let changes: Vec<PeerChange> = (0..2000u32)
        .map(|i| {
            let mut k = [0u8; 32];
            k[..4].copy_from_slice(&i.to_be_bytes());
            PeerChange::Add(PeerConfig {
                public_key: PublicKey::from_bytes(k),
                endpoint: Some(SocketAddr::from(([192, 0, 2, 1], 51820))),
                allowed_ips: nets(&[&format!("10.{}.{}.0/24", i / 256, i % 256)]),
                persistent_keepalive: 0,
            })
        })
        .collect();
    let bodies = set_peers("wg0", &changes);
    assert!(bodies.len() > 1, "2000 peers do not fit one body");
    for b in &bodies {
        assert!(b.len() <= MAX_BODY + 64, "body of {} bytes", b.len());
    }
    assert_eq!(parse_device(&bodies).unwrap().peers.len(), 2000);
    assert!(set_peers("wg0", &[]).is_empty());
}

#[cfg(target_endian = "little")]
#[test]
fn device_settings_vector() {
    let sk = PrivateKey::from_bytes([0x42; 32]);
    let body = set_device(
        "wg0",
        &DeviceSettings {
            private_key: Some(&sk),
            listen_port: Some(51820),
            fwmark: Some(0x4e00),
        },
    );
    let mut want = vec![CMD_SET_DEVICE, 1, 0, 0, 8, 0, 2, 0, b'w', b'g', b'0', 0];
    want.extend_from_slice(&[36, 0, 3, 0]);
    want.extend_from_slice(&[0x42; 32]);
    want.extend_from_slice(&[6, 0, 6, 0, 0x6c, 0xca, 0, 0]); // listen port, host order
    want.extend_from_slice(&[8, 0, 7, 0, 0x00, 0x4e, 0, 0]); // fwmark
    assert_eq!(&body[..], &want[..]);
}

/// A GET_DEVICE dump as the kernel sends it: one peer split over two messages.
#[cfg(target_endian = "little")]
#[test]
fn get_device_reply_is_parsed_and_split_peers_merged() {
    let peer = |ips: &[u8], stats: bool| {
        let mut p = Vec::new();
        nla(&mut p, PEER_PUBLIC_KEY, &[9; 32]);
        if stats {
            nla(
                &mut p,
                PEER_ENDPOINT,
                &sockaddr("192.0.2.9:51820".parse().unwrap()),
            );
            let mut ts = 1_700_000_000u64.to_ne_bytes().to_vec();
            ts.extend_from_slice(&5u64.to_ne_bytes());
            nla(&mut p, PEER_LAST_HANDSHAKE, &ts);
            nla(&mut p, PEER_RX_BYTES, &1000u64.to_ne_bytes());
            nla(&mut p, PEER_TX_BYTES, &2000u64.to_ne_bytes());
            nla(&mut p, PEER_KEEPALIVE, &25u16.to_ne_bytes());
        }
        nla(&mut p, PEER_ALLOWEDIPS | NLA_F_NESTED, ips);
        let mut arr = Vec::new();
        nla(&mut arr, NLA_F_NESTED, &p);
        arr
    };
    let ip = |addr: &[u8], mask: u8| {
        let mut one = Vec::new();
        let fam: u16 = if addr.len() == 4 { 2 } else { 10 };
        nla(&mut one, ALLOWEDIP_FAMILY, &fam.to_ne_bytes());
        nla(&mut one, ALLOWEDIP_IPADDR, addr);
        nla(&mut one, ALLOWEDIP_CIDR_MASK, &[mask]);
        let mut arr = Vec::new();
        nla(&mut arr, NLA_F_NESTED, &one);
        arr
    };
    let mut m1 = vec![CMD_GET_DEVICE, 1, 0, 0];
    nla(&mut m1, DEVICE_PRIVATE_KEY, &[0x42; 32]); // never kept
    nla(&mut m1, DEVICE_PUBLIC_KEY, &[0x43; 32]);
    nla(&mut m1, DEVICE_LISTEN_PORT, &51820u16.to_ne_bytes());
    nla(&mut m1, DEVICE_FWMARK, &0u32.to_ne_bytes());
    nla(
        &mut m1,
        DEVICE_PEERS | NLA_F_NESTED,
        &peer(&ip(&[10, 244, 9, 0], 24), true),
    );
    let mut m2 = vec![CMD_GET_DEVICE, 1, 0, 0];
    let v6 = [0xfd, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    nla(
        &mut m2,
        DEVICE_PEERS | NLA_F_NESTED,
        &peer(&ip(&v6, 64), false),
    );

    let dev = parse_device(&[m1, m2]).unwrap();
    assert_eq!(dev.public_key, Some(PublicKey::from_bytes([0x43; 32])));
    assert_eq!((dev.listen_port, dev.fwmark), (51820, 0));
    let p = &dev.peers[&key(9)];
    assert_eq!(
        p.config.allowed_ips,
        nets(&["10.244.9.0/24", "fd00:9::/64"])
    );
    assert_eq!(p.config.endpoint, Some("192.0.2.9:51820".parse().unwrap()));
    assert_eq!(p.config.persistent_keepalive, 25);
    assert_eq!((p.rx_bytes, p.tx_bytes), (1000, 2000));
    assert_eq!(
        p.last_handshake,
        Some(SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 5))
    );
    // Truncated input is an error, not a panic.
    assert_eq!(parse_device(&[vec![0, 1]]), Err(GenlParseError::Short));
}

/// Against the running kernel: the generic netlink plumbing resolves a family every kernel
/// has, and the WireGuard family is either there or reported as missing with the fix.
#[test]
fn the_running_kernel_answers_family_lookups() {
    let nl = Netlink::open(NETLINK_GENERIC).unwrap();
    assert_eq!(resolve_family(&nl, "nlctrl").unwrap(), Some(0x10));
    assert_eq!(resolve_family(&nl, "no-such-family").unwrap(), None);
    match KernelBackend::open("im-nowg0") {
        Ok(b) => assert_eq!(
            crate::wireguard::WireGuardBackend::kind(&b),
            "kernel-genetlink"
        ),
        Err(e @ WgError::NoKernelWireGuard { .. }) => {
            assert!(e.to_string().contains("modprobe wireguard"), "{e}")
        }
        Err(e) => panic!("unexpected: {e}"),
    }
}

/// Found by `scripts/fuzz wg_genl`: a handshake time past what SystemTime holds (or an
/// nsec field of 10^9 or more with the largest sec) panicked; it reads as no handshake.
#[test]
fn a_handshake_time_out_of_range_is_no_handshake_not_a_panic() {
    for (sec, nsec) in [(u64::MAX, 0u64), (u64::MAX, 1_500_000_000), (1 << 63, 5)] {
        let mut p = Vec::new();
        nla(&mut p, PEER_PUBLIC_KEY, &[9; 32]);
        let mut ts = sec.to_ne_bytes().to_vec();
        ts.extend_from_slice(&nsec.to_ne_bytes());
        nla(&mut p, PEER_LAST_HANDSHAKE, &ts);
        let mut peers = Vec::new();
        nla(&mut peers, NLA_F_NESTED, &p);
        let mut m = vec![CMD_GET_DEVICE, 1, 0, 0];
        nla(&mut m, DEVICE_PEERS | NLA_F_NESTED, &peers);
        let dev = parse_device(&[m]).unwrap();
        assert_eq!(
            dev.peers[&PublicKey::from_bytes([9; 32])].last_handshake,
            None
        );
    }
    // An nsec field past 10^9 is clamped, not carried into the seconds.
    let mut p = Vec::new();
    nla(&mut p, PEER_PUBLIC_KEY, &[9; 32]);
    let mut ts = 10u64.to_ne_bytes().to_vec();
    ts.extend_from_slice(&u64::MAX.to_ne_bytes());
    nla(&mut p, PEER_LAST_HANDSHAKE, &ts);
    let mut peers = Vec::new();
    nla(&mut peers, NLA_F_NESTED, &p);
    let mut m = vec![CMD_GET_DEVICE, 1, 0, 0];
    nla(&mut m, DEVICE_PEERS | NLA_F_NESTED, &peers);
    let dev = parse_device(&[m]).unwrap();
    assert_eq!(
        dev.peers[&PublicKey::from_bytes([9; 32])].last_handshake,
        Some(SystemTime::UNIX_EPOCH + Duration::new(10, 999_999_999))
    );
}
