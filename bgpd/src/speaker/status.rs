//! What the API shows of a peer: state, negotiated capabilities, counters, last error.

use std::net::SocketAddr;
use std::time::Instant;

use crate::fsm::{Negotiated, State};
use crate::wire::{HEADER_LEN, NotificationMsg, error_code};

#[derive(Clone, Debug, Default)]
pub struct Counters {
    pub updates_in: u64,
    pub updates_out: u64,
    pub notifications_in: u64,
    pub notifications_out: u64,
    pub keepalives_in: u64,
    pub keepalives_out: u64,
}

#[derive(Clone, Debug)]
pub struct PeerStatus {
    pub state: State,
    pub since: Instant,
    pub negotiated: Option<Negotiated>,
    pub local: Option<SocketAddr>,
    pub remote: Option<SocketAddr>,
    pub counters: Counters,
    pub last_error: Option<String>,
}

impl Default for PeerStatus {
    fn default() -> Self {
        PeerStatus {
            state: State::Idle,
            since: Instant::now(),
            negotiated: None,
            local: None,
            remote: None,
            counters: Counters::default(),
            last_error: None,
        }
    }
}

/// Number of whole messages in a buffer of encoded messages.
pub fn count_messages(mut b: &[u8]) -> u64 {
    let mut n = 0;
    while b.len() >= HEADER_LEN {
        let len = usize::from(u16::from_be_bytes([b[16], b[17]]));
        if len < HEADER_LEN || len > b.len() {
            break;
        }
        n += 1;
        b = &b[len..];
    }
    n
}

/// "Hold Timer Expired", "Cease/Administrative Shutdown: <text>" (RFC 4271 §4.5, RFC 4486).
pub fn notification_text(n: &NotificationMsg) -> String {
    // RFC 8538 §3: a Hard Reset is shown with the NOTIFICATION it carries (not nested twice).
    if let Some(inner) = n.hard_reset_inner()
        && !inner.is_hard_reset()
    {
        return format!("Cease/Hard Reset ({})", notification_text(&inner));
    }
    let code = match n.code {
        error_code::MESSAGE_HEADER => "Message Header Error",
        error_code::OPEN_MESSAGE => "OPEN Message Error",
        error_code::UPDATE_MESSAGE => "UPDATE Message Error",
        error_code::HOLD_TIMER_EXPIRED => "Hold Timer Expired",
        error_code::FSM => "Finite State Machine Error",
        error_code::CEASE => "Cease",
        error_code::ROUTE_REFRESH => "ROUTE-REFRESH Message Error",
        _ => "Unknown Error",
    };
    let sub = match (n.code, n.subcode) {
        (error_code::OPEN_MESSAGE, 2) => "Bad Peer AS",
        (error_code::OPEN_MESSAGE, 3) => "Bad BGP Identifier",
        (error_code::OPEN_MESSAGE, 6) => "Unacceptable Hold Time",
        (error_code::OPEN_MESSAGE, 7) => "Unsupported Capability",
        (error_code::CEASE, 1) => "Maximum Number of Prefixes Reached",
        (error_code::CEASE, 2) => "Administrative Shutdown",
        (error_code::CEASE, 3) => "Peer De-configured",
        (error_code::CEASE, 4) => "Administrative Reset",
        (error_code::CEASE, 5) => "Connection Rejected",
        (error_code::CEASE, 6) => "Other Configuration Change",
        (error_code::CEASE, 7) => "Connection Collision Resolution",
        (error_code::CEASE, 8) => "Out of Resources",
        (error_code::CEASE, 9) => "Hard Reset",
        (_, 0) => "",
        _ => "subcode",
    };
    let mut s = code.to_string();
    if sub == "subcode" {
        s.push_str(&format!(" (subcode {})", n.subcode));
    } else if !sub.is_empty() {
        s.push('/');
        s.push_str(sub);
    }
    if let Some(text) = n.shutdown_communication().filter(|t| !t.is_empty()) {
        s.push_str(&format!(": \"{text}\""));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn notifications_read_like_the_rfc() {
        let n = NotificationMsg::new(4, 0, Bytes::new());
        assert_eq!(notification_text(&n), "Hold Timer Expired");
        let n = NotificationMsg::cease_with_communication(2, "maintenance");
        assert_eq!(
            notification_text(&n),
            "Cease/Administrative Shutdown: \"maintenance\""
        );
        assert_eq!(
            notification_text(&NotificationMsg::new(2, 2, Bytes::new())),
            "OPEN Message Error/Bad Peer AS"
        );
        // RFC 8538 §3: a Hard Reset shows what it carries; a short one shows as itself.
        let hard =
            NotificationMsg::hard_reset(&NotificationMsg::cease_with_communication(3, "gone"));
        assert_eq!(
            notification_text(&hard),
            "Cease/Hard Reset (Cease/Peer De-configured)"
        );
        assert_eq!(
            notification_text(&NotificationMsg::new(6, 9, Bytes::from_static(&[6]))),
            "Cease/Hard Reset"
        );
    }

    #[test]
    fn counts_messages_in_a_buffer() {
        let mut b = Vec::new();
        for _ in 0..3 {
            let mut m = vec![0xff; 16];
            m.extend_from_slice(&[0, 19, 4]);
            b.extend_from_slice(&m);
        }
        assert_eq!(count_messages(&b), 3);
        assert_eq!(count_messages(&b[..30]), 1);
    }
}
