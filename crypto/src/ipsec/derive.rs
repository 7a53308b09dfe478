//! Per-node-pair keys from the cluster's shared key (HKDF-SHA256, RFC 5869).
//!
//! One key per *direction* of a pair, not one per pair: both SAs of a pair would otherwise
//! share key and salt, and RFC 4106's IV (the sequence number, RFC 4106 §3.1 / seqiv) would
//! repeat across the two directions: a nonce reuse that breaks GCM. Both ends still agree
//! without talking: A computes `key(A→B)` for its outbound SA, and B computes the same
//! `key(A→B)` for its inbound one, from the same inputs. An SA key captured from one node (from
//! `ip xfrm state`, a crash dump) exposes that node's pairs only. The shared key itself is on
//! every node (Cilium's format), so a stolen key *file* exposes all pairs: rotate it.

use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::keyfile::IpsecKey;

const SALT: &[u8] = b"ironmesh ipsec directional key v1";

fn info(spi: u8, src: &str, dst: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + src.len() + dst.len());
    out.push(spi);
    for id in [src, dst] {
        let len = u16::try_from(id.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&id.as_bytes()[..usize::from(len)]);
    }
    out
}

/// The key of ESP traffic from node `src` to node `dst` (node identities: unique names).
pub fn directional_key(shared: &IpsecKey, src: &str, dst: &str) -> IpsecKey {
    let hk = Hkdf::<Sha256>::new(Some(SALT), shared.expose());
    let mut okm = Zeroizing::new(vec![0u8; shared.expose().len()]);
    hk.expand(&info(shared.spi, src, dst), &mut okm)
        .expect("at most 36 bytes, far below 255 * 32");
    IpsecKey::new(shared.spi, shared.icv_bits, okm)
}

/// This node's outbound and inbound keys with `remote`.
#[derive(Debug)]
pub struct PairKeys {
    pub outbound: IpsecKey,
    pub inbound: IpsecKey,
}

pub fn pair_keys(shared: &IpsecKey, local: &str, remote: &str) -> PairKeys {
    PairKeys {
        outbound: directional_key(shared, local, remote),
        inbound: directional_key(shared, remote, local),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::ipsec::keyfile::parse;

    fn shared(spi: u8, hex: &str) -> IpsecKey {
        parse(
            Path::new("k"),
            &format!("{spi}+ rfc4106(gcm(aes)) {hex} 128"),
        )
        .unwrap()
    }

    const K: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn both_ends_agree_and_directions_differ() {
        let s = shared(3, K);
        let a = pair_keys(&s, "c1/n1", "c1/n2");
        let b = pair_keys(&s, "c1/n2", "c1/n1");
        assert_eq!(a.outbound.expose(), b.inbound.expose());
        assert_eq!(a.inbound.expose(), b.outbound.expose());
        assert_ne!(
            a.outbound.expose(),
            a.inbound.expose(),
            "no key (and salt) reuse across directions"
        );
        assert_eq!(a.outbound.expose().len(), 20);
        assert_eq!((a.outbound.spi, a.outbound.icv_bits), (3, 128));
    }

    #[test]
    fn keys_depend_on_every_input() {
        let s = shared(3, K);
        let base = directional_key(&s, "n1", "n2");
        let other_pair = directional_key(&s, "n1", "n3");
        let other_spi = directional_key(&shared(4, K), "n1", "n2");
        let other_key = directional_key(&shared(3, &K.replace('0', "f")), "n1", "n2");
        // Length-prefixed identities: ("n1", "2n") is not ("n12", "n").
        let ambiguous = directional_key(&s, "n12", "n");
        let other_split = directional_key(&s, "n1", "2n");
        for k in [&other_pair, &other_spi, &other_key, &ambiguous] {
            assert_ne!(base.expose(), k.expose());
        }
        assert_ne!(ambiguous.expose(), other_split.expose());
        // Deterministic; and a known answer so a change of derivation is never silent.
        assert_eq!(base.expose(), directional_key(&s, "n1", "n2").expose());
        let hex: String = base.expose().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex.len(), 40);
        assert_eq!(hex, KNOWN_N1_N2);
    }

    /// Computed independently with Python's hmac/hashlib (RFC 5869 extract + expand).
    const KNOWN_N1_N2: &str = "cee219e6c7310fa7cf61668f11703d88131f2555";
}
