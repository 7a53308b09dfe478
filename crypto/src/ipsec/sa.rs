//! Removing ESP security associations (`XFRM_MSG_DELSA`), the counterpart of
//! [`Xfrm::add_sa`](super::xfrm::Xfrm::add_sa), and reading an SA's identity back. An SA is
//! found by `(daddr, SPI, proto)` and its mark (RFC 4303 §2.1: the receiver picks the SA by
//! SPI; Linux also matches the mark).

use std::net::IpAddr;

use super::xfrm::{
    IPPROTO_ESP, SA_INFO_LEN, XFRMA_MARK, Xfrm, XfrmError, addr_from, addr16, family, mark_bytes,
};
use crate::netlink;

const XFRM_MSG_DELSA: u16 = 17;
const XFRMA_SRCADDR: u16 = 13;
/// `struct xfrm_usersa_id`: daddr (16), spi (4, network order), family (2), proto (1), pad.
const SA_ID_LEN: usize = 24;

/// Which SA: what Linux needs to find it (no key material).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SaId {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// The SPI on the wire ([`super::spi::wire_spi`]).
    pub spi: u32,
    pub mark: Option<(u32, u32)>,
}

/// The message that deletes the SA `id` (as `ip xfrm state delete` sends it, source address
/// included; Linux looks ESP SAs up without it).
pub fn encode_sa_delete(id: &SaId) -> netlink::Msg {
    let mut b = [0u8; SA_ID_LEN];
    b[0..16].copy_from_slice(&addr16(id.dst));
    b[16..20].copy_from_slice(&id.spi.to_be_bytes());
    b[20..22].copy_from_slice(&family(id.dst).to_ne_bytes());
    b[22] = IPPROTO_ESP;
    let mut m = netlink::Msg::new(XFRM_MSG_DELSA, 0);
    m.push(&b).attr(XFRMA_SRCADDR, &addr16(id.src));
    if let Some(mark) = id.mark {
        m.attr(XFRMA_MARK, &mark_bytes(mark));
    }
    m
}

/// The identity of an SA from an `XFRM_MSG_NEWSA` payload (`xfrm_usersa_info` + attributes);
/// None for what is not ESP or too short.
pub fn decode_sa_id(b: &[u8]) -> Option<SaId> {
    let info = b.get(..SA_INFO_LEN)?;
    if info[76] != IPPROTO_ESP {
        return None;
    }
    let fam = u16::from_ne_bytes([info[212], info[213]]);
    let mut mark = None;
    for (kind, v) in netlink::attrs(&b[SA_INFO_LEN..]) {
        if kind == XFRMA_MARK {
            mark = Some((netlink::u32_at(v, 0)?, netlink::u32_at(v, 4)?));
        }
    }
    Some(SaId {
        dst: addr_from(&info[56..72], fam)?,
        spi: u32::from_be_bytes(info[72..76].try_into().ok()?),
        src: addr_from(&info[80..96], fam)?,
        mark,
    })
}

impl Xfrm {
    /// Deletes an SA; one that is already gone (ESRCH) counts as deleted.
    pub fn delete_sa(&self, id: &SaId) -> Result<(), XfrmError> {
        const ESRCH: i32 = 3;
        match self.nl.request(&encode_sa_delete(id)) {
            Ok(_) => Ok(()),
            Err(e) if e.errno() == Some(ESRCH) => Ok(()),
            Err(source) => Err(XfrmError::Netlink {
                op: format!("delete SA spi {:#010x} {} -> {}", id.spi, id.src, id.dst),
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ip xfrm state delete src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x30010002 mark 0x3e00
    /// mask 0xff00` (iproute2 6.1, captured with strace): the payload after `nlmsghdr`.
    const IP_XFRM_DELSA: &str = "c0000202000000000000000000000000300100020200320014000d00\
                                 c00002010000000000000000000000000c001500003e000000ff0000";

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn delete_is_what_ip_xfrm_sends() {
        let id = SaId {
            src: "192.0.2.1".parse().unwrap(),
            dst: "192.0.2.2".parse().unwrap(),
            spi: 0x3001_0002,
            mark: Some((0x3e00, 0xff00)),
        };
        let b = encode_sa_delete(&id).bytes(1);
        assert_eq!(u16::from_ne_bytes([b[4], b[5]]), XFRM_MSG_DELSA);
        assert_eq!(b[16..], hex(IP_XFRM_DELSA)[..], "byte for byte");
        let body = &b[16..16 + SA_ID_LEN];
        assert_eq!(&body[16..20], &[0x30, 0x01, 0, 2], "spi, network order");
        let attrs: Vec<_> = netlink::attrs(&b[16 + SA_ID_LEN..]).collect();
        assert_eq!(attrs[1], (XFRMA_MARK, &mark_bytes((0x3e00, 0xff00))[..]));
    }
}
