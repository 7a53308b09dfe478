//! XFRM policies and states over netlink (`NETLINK_XFRM`), tunnel mode, ESP with AES-GCM.
//!
//! Per peer, three policies (selector: PodCIDR to PodCIDR; template: node IP to node IP, ESP,
//! tunnel mode, reqid 1):
//! - `out`  local pods → remote pods, mark `0x0e00 | spi << 12` / `0xff00`: only packets the
//!   datapath marked for encryption with that SPI match (one out policy per SPI in use, so a
//!   rotation switches SPI by switching the mark, never by editing a live policy);
//! - `in` and `fwd` remote pods → local pods, no mark: decrypted packets are checked against
//!   them (the SA is found by the SPI in the ESP header: one per sender and key index,
//!   [`super::spi`], so each peer's inbound SA has its own key).
//!
//! Layouts are those of `<linux/xfrm.h>` on 64-bit Linux (`xfrm_userpolicy_info` 168 bytes,
//! `xfrm_usersa_info` 224, `xfrm_user_tmpl` 64), host byte order except addresses, ports and
//! SPIs (network order).

use std::net::IpAddr;

use ipnet::IpNet;

use super::keyfile::{ALGORITHM_GCM_AES, IpsecKey};
use crate::netlink::{self, NETLINK_XFRM, NLM_F_DUMP, Netlink, NetlinkError};

const XFRM_MSG_NEWSA: u16 = 16;
const XFRM_MSG_NEWPOLICY: u16 = 19;
const XFRM_MSG_DELPOLICY: u16 = 20;
const XFRM_MSG_GETPOLICY: u16 = 21;
const XFRM_MSG_UPDPOLICY: u16 = 25;
const XFRMA_TMPL: u16 = 5;
const XFRMA_ALG_AEAD: u16 = 18;
pub(super) const XFRMA_MARK: u16 = 21;
pub(super) const IPPROTO_ESP: u8 = 50;
const XFRM_MODE_TUNNEL: u8 = 1;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
pub const REQID: u32 = 1;
pub const POLICY_PRIORITY: u32 = 1000;
pub const MARK_ENCRYPT: u32 = 0x0e00;
pub const MARK_MASK: u32 = 0xff00;

const SELECTOR_LEN: usize = 56;
const POLICY_INFO_LEN: usize = 168;
pub(super) const SA_INFO_LEN: usize = 224;
const TMPL_LEN: usize = 64;

/// The policy direction (`XFRM_POLICY_IN/OUT/FWD`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dir {
    In = 0,
    Out = 1,
    Fwd = 2,
}

/// One XFRM policy as ironmesh writes and reads it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Policy {
    pub dir: Dir,
    pub src: IpNet,
    pub dst: IpNet,
    /// Outer (tunnel) source and destination: the node IPs.
    pub tmpl_src: IpAddr,
    pub tmpl_dst: IpAddr,
    pub mark: Option<(u32, u32)>,
    pub priority: u32,
    /// The template is optional (`level use`): packets that were not transformed still pass
    /// the check. Linux allows it on `in`/`fwd` policies only (a tunnel-mode optional
    /// template on `out` is refused with EINVAL); ironmesh uses it in opportunistic mode.
    pub optional: bool,
}

/// A remote node as IPsec needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XfrmPeer {
    pub node: String,
    pub local_ip: IpAddr,
    pub remote_ip: IpAddr,
    pub local_pods: IpNet,
    pub remote_pods: IpNet,
}

/// The out mark of `spi`.
pub fn out_mark(spi: u8) -> (u32, u32) {
    (MARK_ENCRYPT | (u32::from(spi) << 12), MARK_MASK)
}

/// The in, out and fwd policies of `peer` for `spi`.
pub fn policies(peer: &XfrmPeer, spi: u8) -> [Policy; 3] {
    let inbound = |dir| Policy {
        dir,
        src: peer.remote_pods,
        dst: peer.local_pods,
        tmpl_src: peer.remote_ip,
        tmpl_dst: peer.local_ip,
        mark: None,
        priority: POLICY_PRIORITY,
        optional: false,
    };
    [
        Policy {
            dir: Dir::Out,
            src: peer.local_pods,
            dst: peer.remote_pods,
            tmpl_src: peer.local_ip,
            tmpl_dst: peer.remote_ip,
            mark: Some(out_mark(spi)),
            priority: POLICY_PRIORITY,
            optional: false,
        },
        inbound(Dir::In),
        inbound(Dir::Fwd),
    ]
}

/// An ESP security association (one direction).
#[derive(Debug)]
pub struct Sa<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// The SPI on the wire ([`super::spi::wire_spi`]); the key's own `spi` is its index.
    pub spi: u32,
    pub key: &'a IpsecKey,
    /// Outbound SAs carry the out mark of their SPI; inbound ones none.
    pub mark: Option<(u32, u32)>,
}

#[derive(Debug, thiserror::Error)]
pub enum XfrmError {
    #[error(
        "this kernel cannot install IPsec (ESP) security associations (SA spi {spi:#010x} {src} -> {dst}: {source}): it lacks ESP (CONFIG_INET_ESP / CONFIG_INET6_ESP, modules esp4/esp6) or AES-GCM (CONFIG_CRYPTO_GCM); load them or use WireGuard encryption"
    )]
    EspUnavailable {
        spi: u32,
        src: IpAddr,
        dst: IpAddr,
        source: NetlinkError,
    },
    #[error("XFRM {op}: {source}")]
    Netlink { op: String, source: NetlinkError },
    #[error("XFRM policy {0}: source and destination families differ")]
    MixedFamilies(String),
}

pub(super) fn family(ip: IpAddr) -> u16 {
    if ip.is_ipv4() { AF_INET } else { AF_INET6 }
}

pub(super) fn addr16(ip: IpAddr) -> [u8; 16] {
    let mut out = [0u8; 16];
    match ip {
        IpAddr::V4(a) => out[..4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => out = a.octets(),
    }
    out
}

pub(super) fn addr_from(b: &[u8], fam: u16) -> Option<IpAddr> {
    match fam {
        AF_INET => Some(IpAddr::from(<[u8; 4]>::try_from(b.get(..4)?).ok()?)),
        AF_INET6 => Some(IpAddr::from(<[u8; 16]>::try_from(b.get(..16)?).ok()?)),
        _ => None,
    }
}

/// `struct xfrm_selector`: from `src` to `dst`, any protocol and port.
fn selector(src: IpNet, dst: IpNet) -> [u8; SELECTOR_LEN] {
    let mut s = [0u8; SELECTOR_LEN];
    s[0..16].copy_from_slice(&addr16(dst.network()));
    s[16..32].copy_from_slice(&addr16(src.network()));
    s[40..42].copy_from_slice(&family(dst.network()).to_ne_bytes());
    s[42] = dst.prefix_len();
    s[43] = src.prefix_len();
    s
}

/// `struct xfrm_lifetime_cfg` with no limits: byte and packet limits `XFRM_INF` (all ones),
/// the four expiry times 0 (= never, as `ip xfrm` sends them). All ones in the times is not
/// "never": Linux adds the add time to it, overflows, and expires the object at its first
/// timer run (about a second later).
fn lifetime_cfg() -> [u8; 64] {
    let mut l = [0u8; 64];
    for chunk in l[..32].chunks_exact_mut(8) {
        chunk.copy_from_slice(&u64::MAX.to_ne_bytes());
    }
    l
}

pub(super) fn mark_bytes((v, m): (u32, u32)) -> [u8; 8] {
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&v.to_ne_bytes());
    out[4..].copy_from_slice(&m.to_ne_bytes());
    out
}

/// The netlink message that creates or replaces `p` (XFRM_MSG_UPDPOLICY).
pub fn encode_policy(p: &Policy) -> Result<netlink::Msg, XfrmError> {
    if p.src.network().is_ipv4() != p.dst.network().is_ipv4()
        || p.tmpl_src.is_ipv4() != p.tmpl_dst.is_ipv4()
    {
        return Err(XfrmError::MixedFamilies(format!("{} -> {}", p.src, p.dst)));
    }
    let mut info = [0u8; POLICY_INFO_LEN];
    info[..SELECTOR_LEN].copy_from_slice(&selector(p.src, p.dst));
    info[56..120].copy_from_slice(&lifetime_cfg());
    info[152..156].copy_from_slice(&p.priority.to_ne_bytes());
    info[160] = p.dir as u8; // action 0 = allow, flags 0, share 0
    let mut tmpl = [0u8; TMPL_LEN];
    tmpl[0..16].copy_from_slice(&addr16(p.tmpl_dst));
    tmpl[20] = IPPROTO_ESP;
    tmpl[24..26].copy_from_slice(&family(p.tmpl_dst).to_ne_bytes());
    tmpl[28..44].copy_from_slice(&addr16(p.tmpl_src));
    tmpl[44..48].copy_from_slice(&REQID.to_ne_bytes());
    tmpl[48] = XFRM_MODE_TUNNEL;
    tmpl[50] = u8::from(p.optional);
    for algos in tmpl[52..64].chunks_exact_mut(4) {
        algos.copy_from_slice(&u32::MAX.to_ne_bytes()); // any algorithm (as `ip xfrm` sets)
    }
    let mut m = netlink::Msg::new(XFRM_MSG_UPDPOLICY, 0);
    m.push(&info).attr(XFRMA_TMPL, &tmpl);
    if let Some(mark) = p.mark {
        m.attr(XFRMA_MARK, &mark_bytes(mark));
    }
    Ok(m)
}

/// The message that deletes `p` (by selector, direction and mark).
pub fn encode_policy_delete(p: &Policy) -> netlink::Msg {
    let mut id = [0u8; 64];
    id[..SELECTOR_LEN].copy_from_slice(&selector(p.src, p.dst));
    id[60] = p.dir as u8;
    let mut m = netlink::Msg::new(XFRM_MSG_DELPOLICY, 0);
    m.push(&id);
    if let Some(mark) = p.mark {
        m.attr(XFRMA_MARK, &mark_bytes(mark));
    }
    m
}

/// Reads an `XFRM_MSG_NEWPOLICY` payload (dump answer); None for what ironmesh does not write.
pub fn decode_policy(b: &[u8]) -> Option<Policy> {
    let info = b.get(..POLICY_INFO_LEN)?;
    let fam = u16::from_ne_bytes([info[40], info[41]]);
    let dst = IpNet::new(addr_from(&info[0..16], fam)?, info[42]).ok()?;
    let src = IpNet::new(addr_from(&info[16..32], fam)?, info[43]).ok()?;
    // ironmesh writes selectors as networks (`selector`); one with host bits is not ours, and
    // read as ours it compared unequal to its own re-encoding (found by `scripts/fuzz
    // xfrm_policy`).
    if dst.trunc() != dst || src.trunc() != src {
        return None;
    }
    let dir = match info[160] {
        0 => Dir::In,
        1 => Dir::Out,
        2 => Dir::Fwd,
        _ => return None,
    };
    let priority = netlink::u32_at(info, 152)?;
    let (mut tmpl, mut mark, mut optional) = (None, None, false);
    for (kind, v) in netlink::attrs(&b[POLICY_INFO_LEN..]) {
        match kind {
            XFRMA_TMPL if v.len() >= TMPL_LEN => {
                let tfam = u16::from_ne_bytes([v[24], v[25]]);
                tmpl = Some((addr_from(&v[28..44], tfam)?, addr_from(&v[0..16], tfam)?));
                optional = v[50] != 0;
            }
            XFRMA_MARK => mark = Some((netlink::u32_at(v, 0)?, netlink::u32_at(v, 4)?)),
            _ => {}
        }
    }
    let (tmpl_src, tmpl_dst) = tmpl?;
    Some(Policy {
        dir,
        src,
        dst,
        tmpl_src,
        tmpl_dst,
        mark,
        priority,
        optional,
    })
}

/// The message that adds `sa` (XFRM_MSG_NEWSA). Holds key material: send, then drop.
pub fn encode_sa(sa: &Sa<'_>) -> netlink::Msg {
    let mut info = [0u8; SA_INFO_LEN];
    let fam = family(sa.dst);
    info[40..42].copy_from_slice(&fam.to_ne_bytes()); // selector: any, this family
    info[56..72].copy_from_slice(&addr16(sa.dst));
    info[72..76].copy_from_slice(&sa.spi.to_be_bytes()); // RFC 4303 §2.1, network order
    info[76] = IPPROTO_ESP;
    info[80..96].copy_from_slice(&addr16(sa.src));
    info[96..160].copy_from_slice(&lifetime_cfg());
    info[208..212].copy_from_slice(&REQID.to_ne_bytes());
    info[212..214].copy_from_slice(&fam.to_ne_bytes());
    info[214] = XFRM_MODE_TUNNEL;
    info[215] = 32; // replay window
    let key = sa.key.expose();
    let mut aead = zeroize::Zeroizing::new(vec![0u8; 72 + key.len()]);
    aead[..ALGORITHM_GCM_AES.len()].copy_from_slice(ALGORITHM_GCM_AES.as_bytes());
    let bits = u32::try_from(key.len() * 8).expect("36-byte key at most");
    aead[64..68].copy_from_slice(&bits.to_ne_bytes());
    aead[68..72].copy_from_slice(&sa.key.icv_bits.to_ne_bytes());
    aead[72..].copy_from_slice(key);
    let mut m = netlink::Msg::new(XFRM_MSG_NEWSA, 0);
    m.push(&info).attr(XFRMA_ALG_AEAD, &aead);
    if let Some(mark) = sa.mark {
        m.attr(XFRMA_MARK, &mark_bytes(mark));
    }
    m
}

/// XFRM over netlink in the calling thread's network namespace.
#[derive(Debug)]
pub struct Xfrm {
    pub(super) nl: Netlink,
}

impl Xfrm {
    pub fn open() -> Result<Self, XfrmError> {
        Netlink::open(NETLINK_XFRM)
            .map(|nl| Self { nl })
            .map_err(|source| XfrmError::Netlink {
                op: "open socket".into(),
                source,
            })
    }

    /// Creates or replaces a policy.
    pub fn put_policy(&self, p: &Policy) -> Result<(), XfrmError> {
        self.nl
            .request(&encode_policy(p)?)
            .map(drop)
            .map_err(|source| XfrmError::Netlink {
                op: format!("add policy {:?} {} -> {}", p.dir, p.src, p.dst),
                source,
            })
    }

    pub fn delete_policy(&self, p: &Policy) -> Result<(), XfrmError> {
        self.nl
            .request(&encode_policy_delete(p))
            .map(drop)
            .map_err(|source| XfrmError::Netlink {
                op: format!("delete policy {:?} {} -> {}", p.dir, p.src, p.dst),
                source,
            })
    }

    /// Every policy in the namespace that ironmesh's decoder understands.
    pub fn policies(&self) -> Result<Vec<Policy>, XfrmError> {
        let mut m = netlink::Msg::new(XFRM_MSG_GETPOLICY, NLM_F_DUMP);
        m.push(&[0u8; 64]);
        let replies = self.nl.dump(&m).map_err(|source| XfrmError::Netlink {
            op: "dump policies".into(),
            source,
        })?;
        Ok(replies
            .iter()
            .filter(|r| r.msg_type == XFRM_MSG_NEWPOLICY)
            .filter_map(|r| decode_policy(&r.payload))
            .collect())
    }

    /// Adds an SA. A kernel without ESP answers EPROTONOSUPPORT (or ENOSYS/ENOENT for a
    /// missing algorithm): that becomes [`XfrmError::EspUnavailable`].
    pub fn add_sa(&self, sa: &Sa<'_>) -> Result<(), XfrmError> {
        const ENOENT: i32 = 2;
        const ENOSYS: i32 = 38;
        const EPROTONOSUPPORT: i32 = 93;
        self.nl
            .request(&encode_sa(sa))
            .map(drop)
            .map_err(|source| match source.errno() {
                Some(ENOENT | ENOSYS | EPROTONOSUPPORT) => XfrmError::EspUnavailable {
                    spi: sa.spi,
                    src: sa.src,
                    dst: sa.dst,
                    source,
                },
                _ => XfrmError::Netlink {
                    op: format!("add SA spi {:#010x} {} -> {}", sa.spi, sa.src, sa.dst),
                    source,
                },
            })
    }
}

#[cfg(test)]
#[path = "xfrm_tests.rs"]
mod tests;
