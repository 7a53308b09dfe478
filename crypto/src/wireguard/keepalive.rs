//! Persistent keepalive as programmed on the device.
//!
//! A keepalive at or below WireGuard's REKEY_TIMEOUT (5 s) can keep a pair from ever
//! completing a handshake. When two nodes add each other at the same moment (both react to
//! the same node-record event), both send an initiation at once; each consumes the other's,
//! which overwrites its own pending handshake, answers it, and rejects the answer to its own
//! (no longer pending) initiation. Every handshake message restarts the keepalive timer, so
//! both timers expire together K seconds later and the initiations cross again, before the
//! jittered retransmit timer (5 s + up to 333 ms) could break the tie. Reproduced in
//! `e2e_encryption` (keepalive 5): 7 initiations each way in 31 s, every one answered, no
//! answer accepted (`wg show` transfer 1036 B = 7 × 148 B received on both sides).
//! With a keepalive above 5.333 s the jittered retransmits come first and the pair settles.

/// The smallest non-zero persistent keepalive programmed (seconds).
pub const MIN_PERSISTENT_KEEPALIVE: u16 = 6;

/// The keepalive to program for a configured one: 0 stays off, 1–5 become 6.
pub fn effective_keepalive(configured: u16) -> u16 {
    match configured {
        0 => 0,
        k => k.max(MIN_PERSISTENT_KEEPALIVE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Off stays off, short intervals are raised past the retransmit window, others kept.
    #[test]
    fn short_keepalives_are_raised_past_rekey_timeout() {
        assert_eq!(effective_keepalive(0), 0);
        for k in 1..=5 {
            assert_eq!(effective_keepalive(k), 6, "{k}");
        }
        assert_eq!(effective_keepalive(6), 6);
        assert_eq!(effective_keepalive(25), 25);
    }
}
