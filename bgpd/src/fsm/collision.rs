//! Connection collision detection (RFC 4271 §6.8).

use std::net::Ipv4Addr;

use super::State;

/// Which of two connections to the same peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Connection {
    /// The one we initiated.
    Outgoing,
    /// The one the peer initiated.
    Incoming,
}

/// §6.8: given both connections' states, which one to keep, or `None` while it cannot be decided
/// yet (neither has seen the peer's OPEN). The other is closed with Cease / Connection Collision
/// Resolution (RFC 4486 subcode 7).
///
/// - An Established connection always wins; a new one is closed.
/// - Otherwise, once the peer's BGP identifier is known: if ours is lower, keep the connection
///   the peer initiated; else keep ours. Identifiers compare as 4-octet unsigned integers.
pub fn resolve_collision(
    local_id: Ipv4Addr,
    remote_id: Option<Ipv4Addr>,
    outgoing: State,
    incoming: State,
) -> Option<Connection> {
    match (outgoing, incoming) {
        (State::Established, _) => Some(Connection::Outgoing),
        (_, State::Established) => Some(Connection::Incoming),
        _ => {
            let remote = remote_id?;
            let open_seen = |s| matches!(s, State::OpenSent | State::OpenConfirm);
            if !open_seen(outgoing) && !open_seen(incoming) {
                return None;
            }
            if u32::from(local_id) < u32::from(remote) {
                Some(Connection::Incoming)
            } else {
                Some(Connection::Outgoing)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn higher_identifier_keeps_its_own_connection() {
        let low = id("192.0.2.1");
        let high = id("192.0.2.2");
        // We are lower: the peer's connection wins.
        assert_eq!(
            resolve_collision(low, Some(high), State::OpenConfirm, State::OpenConfirm),
            Some(Connection::Incoming)
        );
        // We are higher: ours wins.
        assert_eq!(
            resolve_collision(high, Some(low), State::OpenConfirm, State::OpenSent),
            Some(Connection::Outgoing)
        );
    }

    #[test]
    fn identifiers_compare_as_unsigned_integers() {
        // 10.0.0.1 < 128.0.0.1 as u32 even though a signed compare would say otherwise.
        assert_eq!(
            resolve_collision(
                id("10.0.0.1"),
                Some(id("128.0.0.1")),
                State::OpenSent,
                State::OpenConfirm
            ),
            Some(Connection::Incoming)
        );
    }

    #[test]
    fn established_wins_and_undecidable_waits() {
        assert_eq!(
            resolve_collision(
                id("192.0.2.1"),
                Some(id("192.0.2.2")),
                State::Established,
                State::OpenConfirm
            ),
            Some(Connection::Outgoing)
        );
        assert_eq!(
            resolve_collision(id("192.0.2.9"), None, State::OpenSent, State::OpenSent),
            None
        );
    }
}
