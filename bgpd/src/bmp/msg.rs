//! BMP messages (RFC 7854 §4), sans-IO: encoders for what bgpd sends, and a decoder for tests
//! and tools (checked both ways against hand-built vectors).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// §4.1: version 3.
pub const VERSION: u8 = 3;
/// Common header: version (1), length (4), type (1).
pub const COMMON_HEADER_LEN: usize = 6;
/// §4.2: per-peer header length.
pub const PEER_HEADER_LEN: usize = 42;

/// §4.1 message types.
pub mod msg_type {
    pub const ROUTE_MONITORING: u8 = 0;
    pub const STATISTICS_REPORT: u8 = 1;
    pub const PEER_DOWN: u8 = 2;
    pub const PEER_UP: u8 = 3;
    pub const INITIATION: u8 = 4;
    pub const TERMINATION: u8 = 5;
}

/// §4.2 peer flags.
pub mod peer_flags {
    /// The peer address is IPv6.
    pub const V: u8 = 0x80;
    /// Post-policy Adj-RIB-In.
    pub const L: u8 = 0x40;
    /// The peer uses 2-octet AS numbers (no 4-octet AS capability).
    pub const A: u8 = 0x20;
}

/// §4.4 Initiation and §4.5 Termination information TLV types.
pub mod info_type {
    pub const STRING: u16 = 0;
    pub const SYS_DESCR: u16 = 1;
    pub const SYS_NAME: u16 = 2;
}

/// §4.5 Termination reasons.
pub mod term_reason {
    pub const ADMIN_CLOSE: u16 = 0;
    pub const UNSPECIFIED: u16 = 1;
    pub const OUT_OF_RESOURCES: u16 = 2;
}

/// §4.9 Peer Down reasons.
pub mod down_reason {
    /// We sent a NOTIFICATION (it follows).
    pub const LOCAL_NOTIFICATION: u8 = 1;
    /// We closed without a NOTIFICATION (a 2-octet FSM event code follows).
    pub const LOCAL_NO_NOTIFICATION: u8 = 2;
    /// The peer sent a NOTIFICATION (it follows).
    pub const REMOTE_NOTIFICATION: u8 = 3;
    /// The peer closed without a NOTIFICATION.
    pub const REMOTE_NO_NOTIFICATION: u8 = 4;
    /// The peer was de-configured.
    pub const DECONFIGURED: u8 = 5;
}

/// §4.8 statistics types used here (64-bit gauges).
pub mod stat_type {
    pub const ADJ_RIB_IN_ROUTES: u16 = 7;
    pub const LOC_RIB_ROUTES: u16 = 8;
}

/// §4.2 per-peer header (peer type 0, global instance: distinguisher 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerHeader {
    pub flags: u8,
    pub address: IpAddr,
    pub asn: u32,
    pub bgp_id: Ipv4Addr,
    pub seconds: u32,
    pub micros: u32,
}

impl PeerHeader {
    fn put(&self, out: &mut BytesMut) {
        out.put_u8(0); // global instance peer
        let v6 = matches!(self.address, IpAddr::V6(_)) as u8 * peer_flags::V;
        out.put_u8((self.flags & !peer_flags::V) | v6);
        out.put_u64(0); // peer distinguisher
        put_address(out, self.address);
        out.put_u32(self.asn);
        out.put_slice(&self.bgp_id.octets());
        out.put_u32(self.seconds);
        out.put_u32(self.micros);
    }

    fn get(b: &mut Bytes) -> Result<PeerHeader, BmpError> {
        need(b, PEER_HEADER_LEN, "per-peer header")?;
        let _peer_type = b.get_u8();
        let flags = b.get_u8();
        let _distinguisher = b.get_u64();
        let address = get_address(b, flags & peer_flags::V != 0);
        let asn = b.get_u32();
        let bgp_id = Ipv4Addr::from(b.get_u32());
        Ok(PeerHeader {
            flags,
            address,
            asn,
            bgp_id,
            seconds: b.get_u32(),
            micros: b.get_u32(),
        })
    }
}

/// 16 octets: IPv4 in the last four (§4.2).
fn put_address(out: &mut BytesMut, a: IpAddr) {
    match a {
        IpAddr::V4(v4) => {
            out.put_bytes(0, 12);
            out.put_slice(&v4.octets());
        }
        IpAddr::V6(v6) => out.put_slice(&v6.octets()),
    }
}

fn get_address(b: &mut Bytes, v6: bool) -> IpAddr {
    let raw = b.get_u128();
    if v6 {
        IpAddr::V6(Ipv6Addr::from(raw))
    } else {
        IpAddr::V4(Ipv4Addr::from(raw as u32))
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BmpError {
    #[error("BMP {what} truncated")]
    Truncated { what: &'static str },
    #[error("BMP version {0} (only 3 is known)")]
    Version(u8),
    #[error("BMP message type {0} unknown")]
    Type(u8),
    #[error("BMP message length {0} shorter than its header")]
    Length(u32),
}

fn need(b: &Bytes, n: usize, what: &'static str) -> Result<(), BmpError> {
    if b.len() < n {
        Err(BmpError::Truncated { what })
    } else {
        Ok(())
    }
}

/// A decoded message (the BGP PDUs inside stay raw).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BmpMessage {
    RouteMonitoring {
        peer: PeerHeader,
        update: Bytes,
    },
    Statistics {
        peer: PeerHeader,
        stats: Vec<(u16, u64)>,
    },
    PeerDown {
        peer: PeerHeader,
        reason: u8,
        data: Bytes,
    },
    PeerUp {
        peer: PeerHeader,
        local_address: IpAddr,
        local_port: u16,
        remote_port: u16,
        sent_open: Bytes,
        received_open: Bytes,
    },
    Initiation(Vec<(u16, Bytes)>),
    Termination(Vec<(u16, Bytes)>),
}

fn frame(kind: u8, body: impl FnOnce(&mut BytesMut)) -> Bytes {
    let mut out = BytesMut::with_capacity(64);
    out.put_u8(VERSION);
    out.put_u32(0);
    out.put_u8(kind);
    body(&mut out);
    let len = out.len() as u32;
    out[1..5].copy_from_slice(&len.to_be_bytes());
    out.freeze()
}

fn put_tlvs(out: &mut BytesMut, tlvs: &[(u16, &[u8])]) {
    for (t, v) in tlvs {
        out.put_u16(*t);
        out.put_u16(v.len() as u16);
        out.put_slice(v);
    }
}

/// §4.3: a BGP UPDATE PDU (whole message, header included) for the peer.
pub fn route_monitoring(peer: &PeerHeader, update: &[u8]) -> Bytes {
    frame(msg_type::ROUTE_MONITORING, |o| {
        peer.put(o);
        o.put_slice(update);
    })
}

/// §4.8: 64-bit gauges.
pub fn statistics(peer: &PeerHeader, stats: &[(u16, u64)]) -> Bytes {
    frame(msg_type::STATISTICS_REPORT, |o| {
        peer.put(o);
        o.put_u32(stats.len() as u32);
        for (t, v) in stats {
            o.put_u16(*t);
            o.put_u16(8);
            o.put_u64(*v);
        }
    })
}

/// §4.9: `data` is the NOTIFICATION PDU, the 2-octet FSM event, or nothing, per `reason`.
pub fn peer_down(peer: &PeerHeader, reason: u8, data: &[u8]) -> Bytes {
    frame(msg_type::PEER_DOWN, |o| {
        peer.put(o);
        o.put_u8(reason);
        o.put_slice(data);
    })
}

/// §4.10: the OPEN PDUs both ways, whole messages.
pub fn peer_up(
    peer: &PeerHeader,
    local: (IpAddr, u16),
    remote_port: u16,
    sent_open: &[u8],
    received_open: &[u8],
) -> Bytes {
    frame(msg_type::PEER_UP, |o| {
        peer.put(o);
        put_address(o, local.0);
        o.put_u16(local.1);
        o.put_u16(remote_port);
        o.put_slice(sent_open);
        o.put_slice(received_open);
    })
}

/// §4.3: sysDescr and sysName are required.
pub fn initiation(sys_descr: &str, sys_name: &str) -> Bytes {
    frame(msg_type::INITIATION, |o| {
        put_tlvs(
            o,
            &[
                (info_type::SYS_DESCR, sys_descr.as_bytes()),
                (info_type::SYS_NAME, sys_name.as_bytes()),
            ],
        )
    })
}

/// §4.5: reason code TLV (type 1), and an optional string.
pub fn termination(reason: u16, text: &str) -> Bytes {
    frame(msg_type::TERMINATION, |o| {
        let r = reason.to_be_bytes();
        let mut tlvs: Vec<(u16, &[u8])> = vec![(1, &r)];
        if !text.is_empty() {
            tlvs.insert(0, (info_type::STRING, text.as_bytes()));
        }
        put_tlvs(o, &tlvs)
    })
}

fn get_tlvs(b: &mut Bytes) -> Result<Vec<(u16, Bytes)>, BmpError> {
    let mut out = Vec::new();
    while !b.is_empty() {
        need(b, 4, "information TLV")?;
        let t = b.get_u16();
        let len = b.get_u16() as usize;
        need(b, len, "information TLV value")?;
        out.push((t, b.split_to(len)));
    }
    Ok(out)
}

/// The length of a BGP message at the start of `b` (its header's length field).
fn bgp_len(b: &Bytes) -> Result<usize, BmpError> {
    need(b, 19, "BGP PDU header")?;
    let len = u16::from_be_bytes([b[16], b[17]]) as usize;
    need(b, len.max(19), "BGP PDU")?;
    Ok(len.max(19))
}

impl BmpMessage {
    /// Decodes one message from the front of `buf`; `Ok(None)` if it is not all there yet.
    pub fn decode_from(buf: &mut BytesMut) -> Result<Option<BmpMessage>, BmpError> {
        if buf.len() < COMMON_HEADER_LEN {
            return Ok(None);
        }
        if buf[0] != VERSION {
            return Err(BmpError::Version(buf[0]));
        }
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
        if (len as usize) < COMMON_HEADER_LEN {
            return Err(BmpError::Length(len));
        }
        if buf.len() < len as usize {
            return Ok(None);
        }
        let mut b = buf.split_to(len as usize).freeze();
        let kind = b[5];
        b.advance(COMMON_HEADER_LEN);
        let m = match kind {
            msg_type::ROUTE_MONITORING => BmpMessage::RouteMonitoring {
                peer: PeerHeader::get(&mut b)?,
                update: b,
            },
            msg_type::STATISTICS_REPORT => {
                let peer = PeerHeader::get(&mut b)?;
                need(&b, 4, "statistics count")?;
                let n = b.get_u32();
                let mut stats = Vec::new();
                for _ in 0..n {
                    need(&b, 4, "statistic")?;
                    let t = b.get_u16();
                    let l = b.get_u16() as usize;
                    need(&b, l, "statistic value")?;
                    let mut v = b.split_to(l);
                    let value = match l {
                        4 => u64::from(v.get_u32()),
                        8 => v.get_u64(),
                        _ => continue,
                    };
                    stats.push((t, value));
                }
                BmpMessage::Statistics { peer, stats }
            }
            msg_type::PEER_DOWN => {
                let peer = PeerHeader::get(&mut b)?;
                need(&b, 1, "peer down reason")?;
                BmpMessage::PeerDown {
                    peer,
                    reason: b.get_u8(),
                    data: b,
                }
            }
            msg_type::PEER_UP => {
                let peer = PeerHeader::get(&mut b)?;
                need(&b, 20, "peer up addresses")?;
                let v6 = peer.flags & peer_flags::V != 0;
                let local_address = get_address(&mut b, v6);
                let local_port = b.get_u16();
                let remote_port = b.get_u16();
                let n = bgp_len(&b)?;
                let sent_open = b.split_to(n);
                let n = bgp_len(&b)?;
                let received_open = b.split_to(n);
                BmpMessage::PeerUp {
                    peer,
                    local_address,
                    local_port,
                    remote_port,
                    sent_open,
                    received_open,
                }
            }
            msg_type::INITIATION => BmpMessage::Initiation(get_tlvs(&mut b)?),
            msg_type::TERMINATION => BmpMessage::Termination(get_tlvs(&mut b)?),
            other => return Err(BmpError::Type(other)),
        };
        Ok(Some(m))
    }
}
