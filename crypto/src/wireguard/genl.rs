//! The WireGuard generic netlink protocol (`include/uapi/linux/wireguard.h`, family
//! `wireguard`, version 1): message bodies for WG_CMD_SET_DEVICE and the parser of
//! WG_CMD_GET_DEVICE dumps. Pure: no socket here (see [`super::kernel`]).
//!
//! A body is the 4-byte genl header (cmd, version, reserved) and attributes; arrays (peers,
//! allowed IPs) are nested attributes whose type is the element's index, as `wg(8)` sends.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::time::{Duration, SystemTime};

use ipnet::IpNet;

use super::{DeviceSettings, DeviceState, PeerChange, PeerConfig, PeerState};
use crate::keys::{KEY_LEN, PublicKey};

pub const FAMILY_NAME: &str = "wireguard";
pub const VERSION: u8 = 1;
pub const CMD_GET_DEVICE: u8 = 0;
pub const CMD_SET_DEVICE: u8 = 1;

pub const NLA_F_NESTED: u16 = 1 << 15;

// enum wgdevice_attribute
pub const DEVICE_IFNAME: u16 = 2;
pub const DEVICE_PRIVATE_KEY: u16 = 3;
pub const DEVICE_PUBLIC_KEY: u16 = 4;
pub const DEVICE_LISTEN_PORT: u16 = 6;
pub const DEVICE_FWMARK: u16 = 7;
pub const DEVICE_PEERS: u16 = 8;

// enum wgpeer_flag / wgpeer_attribute
pub const PEER_F_REMOVE_ME: u32 = 1 << 0;
pub const PEER_F_REPLACE_ALLOWEDIPS: u32 = 1 << 1;
pub const PEER_F_UPDATE_ONLY: u32 = 1 << 2;
pub const PEER_PUBLIC_KEY: u16 = 1;
pub const PEER_FLAGS: u16 = 3;
pub const PEER_ENDPOINT: u16 = 4;
pub const PEER_KEEPALIVE: u16 = 5;
pub const PEER_LAST_HANDSHAKE: u16 = 6;
pub const PEER_RX_BYTES: u16 = 7;
pub const PEER_TX_BYTES: u16 = 8;
pub const PEER_ALLOWEDIPS: u16 = 9;

// enum wgallowedip_attribute
pub const ALLOWEDIP_FAMILY: u16 = 1;
pub const ALLOWEDIP_IPADDR: u16 = 2;
pub const ALLOWEDIP_CIDR_MASK: u16 = 3;

/// Bodies above this are split at a peer boundary (the kernel takes larger ones, but `wg`
/// stays near a page as well; a dump reply is bounded the same way).
pub const MAX_BODY: usize = 32 * 1024;

/// Appends one attribute (4-byte aligned).
pub fn nla(out: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = u16::try_from(4 + payload.len()).expect("attribute under 64 KiB");
    out.extend_from_slice(&len.to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(payload);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

fn genl_header(cmd: u8) -> Vec<u8> {
    vec![cmd, VERSION, 0, 0]
}

fn ifname_attr(out: &mut Vec<u8>, ifname: &str) {
    let mut name = ifname.as_bytes().to_vec();
    name.push(0);
    nla(out, DEVICE_IFNAME, &name);
}

/// `struct sockaddr_in` / `sockaddr_in6` as the kernel reads them (family host order, port
/// network order).
pub fn sockaddr(addr: SocketAddr) -> Vec<u8> {
    let mut b = Vec::with_capacity(28);
    match addr {
        SocketAddr::V4(a) => {
            b.extend_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            b.extend_from_slice(&a.port().to_be_bytes());
            b.extend_from_slice(&a.ip().octets());
            b.extend_from_slice(&[0; 8]);
        }
        SocketAddr::V6(a) => {
            b.extend_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            b.extend_from_slice(&a.port().to_be_bytes());
            b.extend_from_slice(&a.flowinfo().to_be_bytes());
            b.extend_from_slice(&a.ip().octets());
            b.extend_from_slice(&a.scope_id().to_ne_bytes());
        }
    }
    b
}

fn parse_sockaddr(b: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes(b.get(0..2)?.try_into().ok()?);
    let port = u16::from_be_bytes(b.get(2..4)?.try_into().ok()?);
    if family == libc::AF_INET as u16 {
        let ip: [u8; 4] = b.get(4..8)?.try_into().ok()?;
        Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port)))
    } else if family == libc::AF_INET6 as u16 {
        let flow = u32::from_be_bytes(b.get(4..8)?.try_into().ok()?);
        let ip: [u8; 16] = b.get(8..24)?.try_into().ok()?;
        let scope = u32::from_ne_bytes(b.get(24..28)?.try_into().ok()?);
        Some(SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::from(ip),
            port,
            flow,
            scope,
        )))
    } else {
        None
    }
}

fn allowed_ips(set: &BTreeSet<IpNet>) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, net) in set.iter().enumerate() {
        let mut one = Vec::new();
        let (family, addr) = match net.addr() {
            IpAddr::V4(a) => (libc::AF_INET as u16, a.octets().to_vec()),
            IpAddr::V6(a) => (libc::AF_INET6 as u16, a.octets().to_vec()),
        };
        nla(&mut one, ALLOWEDIP_FAMILY, &family.to_ne_bytes());
        nla(&mut one, ALLOWEDIP_IPADDR, &addr);
        nla(&mut one, ALLOWEDIP_CIDR_MASK, &[net.prefix_len()]);
        nla(&mut out, index(i) | NLA_F_NESTED, &one);
    }
    out
}

fn index(i: usize) -> u16 {
    u16::try_from(i).unwrap_or(u16::MAX) & 0x3fff
}

/// One peer element (without its array index wrapper).
fn peer(change: &PeerChange) -> Vec<u8> {
    let mut p = Vec::new();
    nla(&mut p, PEER_PUBLIC_KEY, change.public_key().as_bytes());
    match change {
        PeerChange::Add(c) => {
            nla(&mut p, PEER_FLAGS, &PEER_F_REPLACE_ALLOWEDIPS.to_ne_bytes());
            if let Some(e) = c.endpoint {
                nla(&mut p, PEER_ENDPOINT, &sockaddr(e));
            }
            nla(
                &mut p,
                PEER_KEEPALIVE,
                &c.persistent_keepalive.to_ne_bytes(),
            );
            nla(
                &mut p,
                PEER_ALLOWEDIPS | NLA_F_NESTED,
                &allowed_ips(&c.allowed_ips),
            );
        }
        PeerChange::Update {
            endpoint,
            allowed_ips: ips,
            persistent_keepalive,
            ..
        } => {
            let mut flags = PEER_F_UPDATE_ONLY;
            if ips.is_some() {
                flags |= PEER_F_REPLACE_ALLOWEDIPS;
            }
            nla(&mut p, PEER_FLAGS, &flags.to_ne_bytes());
            if let Some(e) = endpoint {
                nla(&mut p, PEER_ENDPOINT, &sockaddr(*e));
            }
            if let Some(k) = persistent_keepalive {
                nla(&mut p, PEER_KEEPALIVE, &k.to_ne_bytes());
            }
            if let Some(ips) = ips {
                nla(&mut p, PEER_ALLOWEDIPS | NLA_F_NESTED, &allowed_ips(ips));
            }
        }
        PeerChange::Remove(_) => {
            nla(&mut p, PEER_FLAGS, &PEER_F_REMOVE_ME.to_ne_bytes());
        }
    }
    p
}

/// SET_DEVICE bodies applying `changes` in order, split at peer boundaries under
/// [`MAX_BODY`]. No changes: no message.
pub fn set_peers(ifname: &str, changes: &[PeerChange]) -> Vec<Vec<u8>> {
    let mut bodies = Vec::new();
    let mut peers: Vec<u8> = Vec::new();
    let mut count = 0;
    let flush = |peers: &mut Vec<u8>, bodies: &mut Vec<Vec<u8>>| {
        let mut body = genl_header(CMD_SET_DEVICE);
        ifname_attr(&mut body, ifname);
        nla(&mut body, DEVICE_PEERS | NLA_F_NESTED, peers);
        bodies.push(body);
        peers.clear();
    };
    for change in changes {
        let one = peer(change);
        if !peers.is_empty() && peers.len() + one.len() + 8 > MAX_BODY {
            flush(&mut peers, &mut bodies);
            count = 0;
        }
        nla(&mut peers, index(count) | NLA_F_NESTED, &one);
        count += 1;
    }
    if !peers.is_empty() {
        flush(&mut peers, &mut bodies);
    }
    bodies
}

/// The SET_DEVICE body for device-level settings. The private key's bytes live only in the
/// returned buffer, which the caller zeroizes.
pub fn set_device(ifname: &str, s: &DeviceSettings<'_>) -> zeroize::Zeroizing<Vec<u8>> {
    let mut body = zeroize::Zeroizing::new(genl_header(CMD_SET_DEVICE));
    ifname_attr(&mut body, ifname);
    if let Some(k) = s.private_key {
        let hex = k.expose_hex();
        let mut raw = zeroize::Zeroizing::new([0u8; KEY_LEN]);
        for (i, byte) in raw.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex from expose_hex");
        }
        nla(&mut body, DEVICE_PRIVATE_KEY, &raw[..]);
    }
    if let Some(p) = s.listen_port {
        nla(&mut body, DEVICE_LISTEN_PORT, &p.to_ne_bytes());
    }
    if let Some(m) = s.fwmark {
        nla(&mut body, DEVICE_FWMARK, &m.to_ne_bytes());
    }
    body
}

/// The GET_DEVICE (dump) body for `ifname`.
pub fn get_device(ifname: &str) -> Vec<u8> {
    let mut body = genl_header(CMD_GET_DEVICE);
    ifname_attr(&mut body, ifname);
    body
}

/// What a GET_DEVICE reply does not say right.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenlParseError {
    #[error("message shorter than the genl header")]
    Short,
    #[error("{0} has the wrong length")]
    Length(&'static str),
    #[error("a peer without a public key")]
    PeerWithoutKey,
    #[error("allowed IP {0} is not a valid prefix")]
    AllowedIp(String),
}

/// Folds the messages of one GET_DEVICE dump (genl bodies) into the device state. A peer
/// split over messages continues with the same public key; its allowed IPs add up.
pub fn parse_device(bodies: &[Vec<u8>]) -> Result<DeviceState, GenlParseError> {
    let mut dev = DeviceState::default();
    for body in bodies {
        let attrs = body.get(4..).ok_or(GenlParseError::Short)?;
        for (kind, v) in crate::netlink::attrs(attrs) {
            match kind {
                DEVICE_PUBLIC_KEY => {
                    let k: [u8; KEY_LEN] = v
                        .try_into()
                        .map_err(|_| GenlParseError::Length("public key"))?;
                    dev.public_key = Some(PublicKey::from_bytes(k));
                }
                DEVICE_LISTEN_PORT => dev.listen_port = u16_of(v, "listen port")?,
                DEVICE_FWMARK => dev.fwmark = u32_of(v, "fwmark")?,
                DEVICE_PEERS => {
                    for (_, p) in crate::netlink::attrs(v) {
                        let state = parse_peer(p)?;
                        merge(&mut dev, state);
                    }
                }
                // The private key (if the kernel sent it) is never kept.
                _ => {}
            }
        }
    }
    Ok(dev)
}

fn merge(dev: &mut DeviceState, state: PeerState) {
    let key = state.config.public_key;
    match dev.peers.get_mut(&key) {
        Some(have) => have.config.allowed_ips.extend(state.config.allowed_ips),
        None => {
            dev.peers.insert(key, state);
        }
    }
}

fn u16_of(v: &[u8], what: &'static str) -> Result<u16, GenlParseError> {
    Ok(u16::from_ne_bytes(
        v.try_into().map_err(|_| GenlParseError::Length(what))?,
    ))
}

fn u32_of(v: &[u8], what: &'static str) -> Result<u32, GenlParseError> {
    Ok(u32::from_ne_bytes(
        v.try_into().map_err(|_| GenlParseError::Length(what))?,
    ))
}

fn u64_of(v: &[u8], what: &'static str) -> Result<u64, GenlParseError> {
    Ok(u64::from_ne_bytes(
        v.try_into().map_err(|_| GenlParseError::Length(what))?,
    ))
}

fn parse_peer(p: &[u8]) -> Result<PeerState, GenlParseError> {
    let mut key = None;
    let mut endpoint = None;
    let mut keepalive = 0;
    let mut ips = BTreeSet::new();
    let mut last_handshake = None;
    let (mut rx, mut tx) = (0, 0);
    for (kind, v) in crate::netlink::attrs(p) {
        match kind {
            PEER_PUBLIC_KEY => {
                let k: [u8; KEY_LEN] = v
                    .try_into()
                    .map_err(|_| GenlParseError::Length("peer public key"))?;
                key = Some(PublicKey::from_bytes(k));
            }
            PEER_ENDPOINT => endpoint = parse_sockaddr(v),
            PEER_KEEPALIVE => keepalive = u16_of(v, "keepalive")?,
            PEER_LAST_HANDSHAKE => {
                // struct __kernel_timespec { s64 sec; s64 nsec; }; zero: never.
                let sec = u64_of(v.get(0..8).unwrap_or(&[]), "handshake time")?;
                let nsec = u64_of(v.get(8..16).unwrap_or(&[]), "handshake time")?;
                // A time past what SystemTime holds (or a negative s64) is no time: None, as
                // the UAPI parser does (it panicked: found by `scripts/fuzz wg_genl`).
                if sec != 0 || nsec != 0 {
                    last_handshake = SystemTime::UNIX_EPOCH
                        .checked_add(Duration::new(sec, nsec.min(999_999_999) as u32));
                }
            }
            PEER_RX_BYTES => rx = u64_of(v, "rx bytes")?,
            PEER_TX_BYTES => tx = u64_of(v, "tx bytes")?,
            PEER_ALLOWEDIPS => {
                for (_, ip) in crate::netlink::attrs(v) {
                    ips.insert(parse_allowed_ip(ip)?);
                }
            }
            _ => {}
        }
    }
    Ok(PeerState {
        config: PeerConfig {
            public_key: key.ok_or(GenlParseError::PeerWithoutKey)?,
            endpoint,
            allowed_ips: ips,
            persistent_keepalive: keepalive,
        },
        last_handshake,
        rx_bytes: rx,
        tx_bytes: tx,
    })
}

fn parse_allowed_ip(v: &[u8]) -> Result<IpNet, GenlParseError> {
    let (mut addr, mut mask) = (None, None);
    for (kind, x) in crate::netlink::attrs(v) {
        match kind {
            ALLOWEDIP_IPADDR => {
                addr = match x.len() {
                    4 => Some(IpAddr::from(<[u8; 4]>::try_from(x).expect("4 bytes"))),
                    16 => Some(IpAddr::from(<[u8; 16]>::try_from(x).expect("16 bytes"))),
                    _ => return Err(GenlParseError::Length("allowed IP address")),
                }
            }
            ALLOWEDIP_CIDR_MASK => mask = x.first().copied(),
            _ => {}
        }
    }
    let (addr, mask) = match (addr, mask) {
        (Some(a), Some(m)) => (a, m),
        _ => return Err(GenlParseError::AllowedIp("incomplete".into())),
    };
    IpNet::new(addr, mask).map_err(|_| GenlParseError::AllowedIp(format!("{addr}/{mask}")))
}

#[cfg(test)]
#[path = "genl_tests.rs"]
mod tests;
