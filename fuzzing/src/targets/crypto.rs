//! crypto: WireGuard UAPI answers and generic-netlink replies, netlink reply framing, XFRM
//! policy dumps, the IPsec key file.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;

use crypto::ipsec::keyfile;
use crypto::ipsec::xfrm::{self, Dir, Policy};
use crypto::netlink::{self, Msg};
use crypto::wireguard::genl::{self, nla};
use crypto::wireguard::uapi::{self, ResponseParser};
use crypto::wireguard::{PeerChange, PeerConfig};

use crate::Outcome;

/// `wg_uapi`: userspace WireGuard `get=1`/`set=1` answers, whole and line by line. A
/// key-shaped private key never appears in an error.
pub fn uapi(data: &[u8]) -> Outcome {
    let mut o = Outcome::default();
    let Ok(text) = std::str::from_utf8(data) else {
        return o;
    };
    let r = uapi::parse_get(text);
    o.step("get", &r);
    if let Err(e) = &r {
        let msg = e.to_string();
        let others: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with("private_key="))
            .collect();
        for line in text.lines() {
            if let Some(secret) = line.strip_prefix("private_key=") {
                let key_shaped =
                    secret.len() == 64 && secret.bytes().all(|b| b.is_ascii_hexdigit());
                let elsewhere = others.iter().any(|l| l.contains(secret));
                assert!(
                    !key_shaped || elsewhere || !msg.contains(secret),
                    "private key echoed in an error: {msg}"
                );
            }
        }
    }
    let set = uapi::parse_set_response(text);
    o.step("set", &set);
    let mut p = ResponseParser::new();
    for line in text.split('\n') {
        match p.feed_line(line) {
            Ok(true) | Err(_) => break,
            Ok(false) => {}
        }
    }
    o.step("lines", &p.finish());
    o.accepted = r.is_ok() || set.is_ok();
    o
}

/// Splits `data` as one netlink datagram answering request 1 (a dump).
fn replies(o: &mut Outcome, data: &[u8], dump: bool) -> Vec<netlink::Reply> {
    let mut out = Vec::new();
    let r = netlink::parse_datagram(data, 1, dump, &mut out);
    match r {
        // The kernel's error answer, read right (its errno is no new path).
        Err(netlink::NetlinkError::Kernel { .. }) => {
            o.note("kernel error");
            o.accepted = true;
        }
        r => {
            o.step("datagram", &r);
            if let Ok(ended) = r {
                o.note(ended);
            }
        }
    }
    out
}

/// `netlink_reply`: one datagram of a netlink answer (crypto::netlink::parse_datagram, the
/// reader of every route/rule/XFRM/genl reply): the first byte picks request/ack or dump.
pub fn netlink_reply(data: &[u8]) -> Outcome {
    let mut o = Outcome::default();
    let Some((&flags, rest)) = data.split_first() else {
        return o;
    };
    let out = replies(&mut o, rest, flags & 1 != 0);
    let mut attrs = 0;
    for r in &out {
        assert!(r.payload.len() + 16 <= rest.len());
        attrs += netlink::attrs(&r.payload).count();
    }
    o.note((out.len().min(3), attrs.min(3)));
    o
}

/// `wg_genl`: a GET_DEVICE dump as the kernel answers it (netlink datagram, genl bodies) into
/// `genl::parse_device`.
pub fn genl(data: &[u8]) -> Outcome {
    let mut o = Outcome::default();
    let bodies: Vec<Vec<u8>> = replies(&mut o, data, true)
        .into_iter()
        .map(|r| r.payload)
        .collect();
    let r = genl::parse_device(&bodies);
    o.step("device", &r);
    if let Ok(dev) = &r {
        o.note(dev.peers.len().min(3));
    }
    o
}

/// `xfrm_policy`: an XFRM policy dump (netlink datagram of XFRM_MSG_NEWPOLICY) into
/// `xfrm::decode_policy`; a decoded policy encodes to a message that decodes to it again.
pub fn xfrm_policy(data: &[u8]) -> Outcome {
    let mut o = Outcome::default();
    for r in replies(&mut o, data, true) {
        let p = xfrm::decode_policy(&r.payload);
        o.step_opt("policy", &p);
        if let Some(p) = p
            && let Ok(m) = xfrm::encode_policy(&p)
        {
            let bytes = m.bytes(1);
            let again = xfrm::decode_policy(&bytes[16..]);
            assert_eq!(
                again.as_ref(),
                Some(&p),
                "re-encoded policy decodes the same"
            );
        }
    }
    o
}

/// `ipsec_keyfile`: the IPsec key file (`<spi>[+] rfc4106(gcm(aes)) <hex key> <icv bits>`).
/// A key accepted is of a valid size; the key field never appears in an error.
pub fn keyfile(data: &[u8]) -> Outcome {
    let mut o = Outcome::default();
    let Ok(text) = std::str::from_utf8(data) else {
        return o;
    };
    let r = keyfile::parse(Path::new("/etc/ironmesh/ipsec.key"), text);
    o.step("keyfile", &r);
    match &r {
        Ok(k) => {
            assert!([20, 28, 36].contains(&k.expose().len()));
            assert!((1..=15).contains(&k.spi));
        }
        Err(e) => {
            let msg = e.to_string();
            for line in text.lines() {
                let fields: Vec<&str> = line
                    .split('#')
                    .next()
                    .unwrap_or("")
                    .split_whitespace()
                    .collect();
                if fields.len() != 4 {
                    continue;
                }
                let key = fields[2].strip_prefix("0x").unwrap_or(fields[2]);
                let key_shaped = key.len() >= 40 && key.bytes().all(|b| b.is_ascii_hexdigit());
                let elsewhere = text
                    .lines()
                    .flat_map(|l| l.split_whitespace())
                    .filter(|f| *f != fields[2])
                    .any(|f| f.contains(key));
                assert!(
                    !key_shaped || elsewhere || !msg.contains(key),
                    "IPsec key echoed in an error: {msg}"
                );
            }
        }
    }
    o
}

fn datagram(msgs: &[(u16, &[u8])], done: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for (t, payload) in msgs {
        let mut m = Msg::new(*t, 0x2);
        m.push(payload);
        out.extend(m.bytes(1));
    }
    if done {
        let mut m = Msg::new(3, 0x2);
        m.push(&0u32.to_ne_bytes());
        out.extend(m.bytes(1));
    }
    out
}

pub fn uapi_seeds() -> Vec<Vec<u8>> {
    vec![
        include_bytes!("../../../crypto/tests/fixtures/wireguard-go-0.0.20220316-get.txt").to_vec(),
        b"errno=0\n\n".to_vec(),
    ]
}

fn key(b: u8) -> crypto::PublicKey {
    crypto::PublicKey::from_bytes([b; 32])
}

pub fn genl_seeds() -> Vec<Vec<u8>> {
    // A GET_DEVICE answer: device attributes, then a peer with stats and allowed IPs (the
    // layout the kernel sends, as in crypto's genl tests).
    let mut peer = Vec::new();
    nla(&mut peer, genl::PEER_PUBLIC_KEY, &[9; 32]);
    nla(
        &mut peer,
        genl::PEER_ENDPOINT,
        &genl::sockaddr("192.0.2.9:51820".parse().expect("valid")),
    );
    let mut ts = 1_700_000_000u64.to_ne_bytes().to_vec();
    ts.extend_from_slice(&5u64.to_ne_bytes());
    nla(&mut peer, genl::PEER_LAST_HANDSHAKE, &ts);
    nla(&mut peer, genl::PEER_RX_BYTES, &1000u64.to_ne_bytes());
    nla(&mut peer, genl::PEER_TX_BYTES, &2000u64.to_ne_bytes());
    nla(&mut peer, genl::PEER_KEEPALIVE, &25u16.to_ne_bytes());
    let mut ips = Vec::new();
    for (addr, mask) in [(&[10u8, 244, 2, 0][..], 24u8), (&[0xfd; 16][..], 64)] {
        let mut one = Vec::new();
        let fam: u16 = if addr.len() == 4 { 2 } else { 10 };
        nla(&mut one, genl::ALLOWEDIP_FAMILY, &fam.to_ne_bytes());
        nla(&mut one, genl::ALLOWEDIP_IPADDR, addr);
        nla(&mut one, genl::ALLOWEDIP_CIDR_MASK, &[mask]);
        nla(&mut ips, genl::NLA_F_NESTED, &one);
    }
    nla(&mut peer, genl::PEER_ALLOWEDIPS | genl::NLA_F_NESTED, &ips);
    let mut peers = Vec::new();
    nla(&mut peers, genl::NLA_F_NESTED, &peer);
    let mut body = vec![genl::CMD_GET_DEVICE, 1, 0, 0];
    nla(&mut body, genl::DEVICE_PUBLIC_KEY, &[0x43; 32]);
    nla(&mut body, genl::DEVICE_LISTEN_PORT, &51820u16.to_ne_bytes());
    nla(&mut body, genl::DEVICE_FWMARK, &0u32.to_ne_bytes());
    nla(&mut body, genl::DEVICE_PEERS | genl::NLA_F_NESTED, &peers);
    // SET_DEVICE bodies from the encoder carry the same peer attributes.
    let add = PeerConfig {
        public_key: key(1),
        endpoint: Some("[2001:db8::2]:51820".parse().expect("valid")),
        allowed_ips: ["10.244.3.0/24", "fd00:3::/64"]
            .iter()
            .map(|n| n.parse().expect("valid"))
            .collect::<BTreeSet<_>>(),
        persistent_keepalive: 0,
    };
    let set = genl::set_peers("wg0", &[PeerChange::Add(add)]);
    vec![
        datagram(&[(0x1a, &body)], true),
        datagram(&[(0x1a, &set[0])], true),
        datagram(&[(0x1a, &body), (0x1a, &set[0])], true),
    ]
}

pub fn netlink_seeds() -> Vec<Vec<u8>> {
    let ack = {
        let mut m = Msg::new(2, 0);
        m.push(&0i32.to_ne_bytes());
        m.bytes(1)
    };
    let nack = {
        let mut m = Msg::new(2, 0);
        m.push(&(-17i32).to_ne_bytes());
        m.bytes(1)
    };
    let data = datagram(&[(24, &[1, 2, 3, 4, 8, 0, 1, 0, 10, 0, 0, 1])], true);
    vec![
        [&[0u8][..], &ack].concat(),
        [&[0u8][..], &nack].concat(),
        [&[1u8][..], &data].concat(),
        [&[0u8][..], &datagram(&[(24, &[0; 8])], false), &ack].concat(),
    ]
}

fn policies() -> Vec<Policy> {
    let ip = |s: &str| s.parse::<IpAddr>().expect("valid");
    let net = |s: &str| s.parse().expect("valid");
    vec![
        Policy {
            dir: Dir::Out,
            src: net("10.1.0.0/16"),
            dst: net("10.2.5.0/24"),
            tmpl_src: ip("192.0.2.11"),
            tmpl_dst: ip("198.51.100.11"),
            mark: Some(xfrm::out_mark(3)),
            priority: 1000,
            optional: false,
        },
        Policy {
            dir: Dir::In,
            src: net("fd00:2::/64"),
            dst: net("fd00:1::/48"),
            tmpl_src: ip("2001:db8::2"),
            tmpl_dst: ip("2001:db8::1"),
            mark: None,
            priority: 1000,
            optional: true,
        },
    ]
}

pub fn xfrm_seeds() -> Vec<Vec<u8>> {
    let encoded: Vec<Vec<u8>> = policies()
        .iter()
        .map(|p| {
            let b = xfrm::encode_policy(p).expect("encodes").bytes(1);
            b[16..].to_vec()
        })
        .collect();
    let msgs: Vec<(u16, &[u8])> = encoded.iter().map(|b| (19u16, &b[..])).collect();
    vec![datagram(&msgs, true), datagram(&msgs[..1], false)]
}

pub fn keyfile_seeds() -> Vec<Vec<u8>> {
    vec![
        b"3+ rfc4106(gcm(aes)) 0123456789abcdef0123456789abcdef01234567 128\n".to_vec(),
        b"# rotated\n\n7 rfc4106(gcm(aes)) 0x0123456789abcdef0123456789abcdef0123456789abcdef01234567 96 # aes-192\n"
            .to_vec(),
        b"15+ rfc4106(gcm(aes)) 0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef01234567 64\n"
            .to_vec(),
    ]
}

pub const NETLINK_TOKENS: &[&[u8]] = &[
    &[0x10, 0, 0, 0],
    &[0x14, 0, 0, 0],
    &[3, 0],
    &[2, 0],
    &[0x13, 0],
    &[1, 0, 0, 0],
    &[0x08, 0x00, 0x01, 0x80],
    &[0x24, 0x00, 0x01, 0x00],
];

pub const TEXT_TOKENS: &[&[u8]] = &[
    b"private_key=",
    b"public_key=",
    b"listen_port=",
    b"fwmark=",
    b"endpoint=",
    b"allowed_ip=",
    b"last_handshake_time_sec=",
    b"last_handshake_time_nsec=",
    b"persistent_keepalive_interval=",
    b"rx_bytes=",
    b"errno=",
    b"protocol_version=",
    b"rfc4106(gcm(aes))",
    b"0x",
    b"+",
    b" ",
];
