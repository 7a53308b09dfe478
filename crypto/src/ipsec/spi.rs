//! The SPI on the wire: one per sender, key index and receiver-unique.
//!
//! Linux finds an inbound SA by `(daddr, SPI, proto)` (and mark), as RFC 4303 §2.1 has the
//! receiver pick the SA by SPI. With per-node-pair keys, the inbound SAs of two peers must
//! therefore differ in SPI. The key file's SPI `k` (1..=15, Cilium's format) stays the key
//! *index* (it is in the packet mark and the node record); the SPI on the wire is
//!
//! `spi(k, sender) = k << 28 | sender`
//!
//! where `sender` is the sending node's mesh-wide number (< 2^28, published in its node
//! record). Unique per receiver (distinct senders have distinct numbers), different for old
//! and new `k` (a rotation's SAs overlap), never in 0..=255 (reserved, RFC 4303 §2.1)
//! because `k >= 1`, and both ends compute it from the same published inputs.

/// Bits of the sender's number in the SPI.
pub const NODE_BITS: u32 = 28;
/// The largest sender number.
pub const MAX_NODE: u32 = (1 << NODE_BITS) - 1;
/// Key indexes of the key file (the mark carries 4 bits).
pub const KEY_INDEXES: std::ops::RangeInclusive<u8> = 1..=15;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiError {
    #[error("IPsec key index {0} is not from 1 to 15")]
    KeyIndex(u8),
    #[error(
        "IPsec node number {0:#x} does not fit the SPI's {NODE_BITS} bits (largest {MAX_NODE:#x})"
    )]
    Node(u32),
}

/// The SPI of ESP traffic sent by node number `sender` with key index `key_index`.
pub fn wire_spi(key_index: u8, sender: u32) -> Result<u32, SpiError> {
    if !KEY_INDEXES.contains(&key_index) {
        return Err(SpiError::KeyIndex(key_index));
    }
    if sender > MAX_NODE {
        return Err(SpiError::Node(sender));
    }
    Ok(u32::from(key_index) << NODE_BITS | sender)
}

/// `(key index, sender number)` of a wire SPI (the inverse of [`wire_spi`]).
pub fn split(spi: u32) -> (u8, u32) {
    ((spi >> NODE_BITS) as u8, spi & MAX_NODE)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn unique_per_sender_and_key_index_and_never_reserved() {
        // Every key index × the numbers of 1023 clusters × 64 nodes, plus the edges.
        let senders: Vec<u32> = (1..=1023u32)
            .flat_map(|c| (0..64).map(move |s| c << 16 | s))
            .chain([0, 1, 255, 256, MAX_NODE])
            .collect();
        let mut seen = BTreeSet::new();
        for k in KEY_INDEXES {
            for &s in &senders {
                let spi = wire_spi(k, s).unwrap();
                assert!(spi > 255, "reserved SPI {spi} (RFC 4303 §2.1)");
                assert!(seen.insert(spi), "SPI {spi:#x} twice");
                assert_eq!(split(spi), (k, s), "receiver reads back what was sent");
            }
        }
        assert_eq!(seen.len(), 15 * senders.len());
        assert_eq!(wire_spi(3, 0x10002), Ok(0x3001_0002));
        assert_eq!(wire_spi(1, 0), Ok(0x1000_0000), "smallest");
    }

    #[test]
    fn old_and_new_key_index_differ_for_one_sender() {
        for s in [0, 0x10001, MAX_NODE] {
            let spis: BTreeSet<u32> = KEY_INDEXES.map(|k| wire_spi(k, s).unwrap()).collect();
            assert_eq!(spis.len(), 15);
        }
    }

    #[test]
    fn out_of_range_inputs_are_refused() {
        assert_eq!(wire_spi(0, 1), Err(SpiError::KeyIndex(0)));
        assert_eq!(wire_spi(16, 1), Err(SpiError::KeyIndex(16)));
        let e = wire_spi(3, MAX_NODE + 1).unwrap_err();
        assert_eq!(e, SpiError::Node(1 << 28));
        assert_eq!(
            e.to_string(),
            "IPsec node number 0x10000000 does not fit the SPI's 28 bits (largest 0xfffffff)"
        );
    }
}
