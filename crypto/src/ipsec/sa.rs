//! Removing ESP security associations (`XFRM_MSG_DELSA`), the counterpart of
//! [`Xfrm::add_sa`](super::xfrm::Xfrm::add_sa). An SA is found by `(daddr, SPI, proto)` and
//! its mark (RFC 4303 §2.1: the receiver picks the SA by SPI; Linux also matches the mark).

use std::net::IpAddr;

use super::xfrm::{IPPROTO_ESP, Xfrm, XfrmError, addr16, family, mark_bytes};
use crate::netlink;

const XFRM_MSG_DELSA: u16 = 17;
const XFRMA_MARK: u16 = 21;
/// `struct xfrm_usersa_id`: daddr (16), spi (4, network order), family (2), proto (1), pad.
const SA_ID_LEN: usize = 24;

/// Which SA: what Linux needs to find it (no key material).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SaId {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub spi: u8,
    pub mark: Option<(u32, u32)>,
}

/// The message that deletes the SA `id`.
pub fn encode_sa_delete(id: &SaId) -> netlink::Msg {
    let mut b = [0u8; SA_ID_LEN];
    b[0..16].copy_from_slice(&addr16(id.dst));
    b[16..20].copy_from_slice(&u32::from(id.spi).to_be_bytes());
    b[20..22].copy_from_slice(&family(id.dst).to_ne_bytes());
    b[22] = IPPROTO_ESP;
    let mut m = netlink::Msg::new(XFRM_MSG_DELSA, 0);
    m.push(&b);
    if let Some(mark) = id.mark {
        m.attr(XFRMA_MARK, &mark_bytes(mark));
    }
    m
}

impl Xfrm {
    /// Deletes an SA; one that is already gone (ESRCH) counts as deleted.
    pub fn delete_sa(&self, id: &SaId) -> Result<(), XfrmError> {
        const ESRCH: i32 = 3;
        match self.nl.request(&encode_sa_delete(id)) {
            Ok(_) => Ok(()),
            Err(e) if e.errno() == Some(ESRCH) => Ok(()),
            Err(source) => Err(XfrmError::Netlink {
                op: format!("delete SA spi {} {} -> {}", id.spi, id.src, id.dst),
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delete_layout_matches_xfrm_usersa_id() {
        let id = SaId {
            src: "192.0.2.1".parse().unwrap(),
            dst: "192.0.2.2".parse().unwrap(),
            spi: 7,
            mark: Some((0x7e00, 0xff00)),
        };
        let b = encode_sa_delete(&id).bytes(1);
        let body = &b[16..16 + SA_ID_LEN];
        assert_eq!(&body[0..4], &[192, 0, 2, 2], "daddr");
        assert_eq!(&body[16..20], &[0, 0, 0, 7], "spi, network order");
        assert_eq!(u16::from_ne_bytes([body[20], body[21]]), 2, "AF_INET");
        assert_eq!(body[22], IPPROTO_ESP);
        let attrs: Vec<_> = netlink::attrs(&b[16 + SA_ID_LEN..]).collect();
        assert_eq!(attrs, vec![(XFRMA_MARK, &mark_bytes((0x7e00, 0xff00))[..])]);
    }
}
