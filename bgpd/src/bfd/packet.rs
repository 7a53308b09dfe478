//! BFD Control packets (RFC 5880 §4.1) and the packet-level checks of §6.8.6.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! |Vers |  Diag   |Sta|P|F|C|A|D|M|  Detect Mult  |    Length     |
//! |                       My Discriminator                        |
//! |                      Your Discriminator                       |
//! |                    Desired Min TX Interval                    |
//! |                   Required Min RX Interval                    |
//! |                 Required Min Echo RX Interval                 |
//! ```

use std::fmt;

/// Length of a Control packet without authentication.
pub const PACKET_LEN: usize = 24;
/// The UDP port of single-hop BFD Control packets (RFC 5881 §4).
pub const CONTROL_PORT: u16 = 3784;
/// Destination port of multihop BFD Control packets (RFC 5883 §5).
pub const MULTIHOP_PORT: u16 = 4784;
/// Source ports of BFD Control packets (RFC 5881 §4).
pub const SOURCE_PORTS: std::ops::RangeInclusive<u16> = 49152..=65535;
/// Version 1 (RFC 5880).
pub const VERSION: u8 = 1;

/// Session states (RFC 5880 §4.1, "Sta").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BfdState {
    AdminDown = 0,
    Down = 1,
    Init = 2,
    Up = 3,
}

impl BfdState {
    fn from_bits(b: u8) -> BfdState {
        match b & 3 {
            0 => BfdState::AdminDown,
            1 => BfdState::Down,
            2 => BfdState::Init,
            _ => BfdState::Up,
        }
    }
}

impl fmt::Display for BfdState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BfdState::AdminDown => "AdminDown",
            BfdState::Down => "Down",
            BfdState::Init => "Init",
            BfdState::Up => "Up",
        })
    }
}

/// Diagnostic codes (RFC 5880 §4.1, "Diag").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Diag(pub u8);

impl Diag {
    pub const NONE: Diag = Diag(0);
    pub const CONTROL_DETECTION_TIME_EXPIRED: Diag = Diag(1);
    pub const ECHO_FUNCTION_FAILED: Diag = Diag(2);
    pub const NEIGHBOR_SIGNALED_SESSION_DOWN: Diag = Diag(3);
    pub const FORWARDING_PLANE_RESET: Diag = Diag(4);
    pub const PATH_DOWN: Diag = Diag(5);
    pub const CONCATENATED_PATH_DOWN: Diag = Diag(6);
    pub const ADMINISTRATIVELY_DOWN: Diag = Diag(7);
    pub const REVERSE_CONCATENATED_PATH_DOWN: Diag = Diag(8);
}

impl fmt::Display for Diag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self.0 {
            0 => "No Diagnostic",
            1 => "Control Detection Time Expired",
            2 => "Echo Function Failed",
            3 => "Neighbor Signaled Session Down",
            4 => "Forwarding Plane Reset",
            5 => "Path Down",
            6 => "Concatenated Path Down",
            7 => "Administratively Down",
            8 => "Reverse Concatenated Path Down",
            n => return write!(f, "diagnostic {n}"),
        };
        f.write_str(s)
    }
}

/// A BFD Control packet. Intervals are in microseconds, as on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlPacket {
    pub diag: Diag,
    pub state: BfdState,
    pub poll: bool,
    pub final_: bool,
    /// Control Plane Independent.
    pub cpi: bool,
    pub demand: bool,
    pub detect_mult: u8,
    pub my_disc: u32,
    pub your_disc: u32,
    pub desired_min_tx_us: u32,
    pub required_min_rx_us: u32,
    pub required_min_echo_rx_us: u32,
}

/// Why a received packet was discarded (RFC 5880 §6.8.6).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadPacket {
    #[error("{0} bytes: shorter than a BFD Control packet (24)")]
    Truncated(usize),
    #[error("version {0}: only version 1 is spoken")]
    Version(u8),
    #[error("Length field {0} is below the minimum (24, or 26 with authentication)")]
    LengthTooSmall(u8),
    #[error("Length field {field} exceeds the {payload} bytes received")]
    LengthTooLarge { field: u8, payload: usize },
    #[error("Detect Mult is zero")]
    ZeroDetectMult,
    #[error("Multipoint (M) bit is set")]
    Multipoint,
    #[error("My Discriminator is zero")]
    ZeroMyDiscriminator,
    #[error("Your Discriminator is zero in state {0}")]
    ZeroYourDiscriminator(BfdState),
    #[error("authentication (A bit) is present but no authentication is configured")]
    UnexpectedAuth,
}

impl ControlPacket {
    /// Encodes the packet (24 bytes, no authentication section).
    pub fn encode(&self) -> [u8; PACKET_LEN] {
        let mut b = [0u8; PACKET_LEN];
        b[0] = (VERSION << 5) | (self.diag.0 & 0x1f);
        b[1] = ((self.state as u8) << 6)
            | (u8::from(self.poll) << 5)
            | (u8::from(self.final_) << 4)
            | (u8::from(self.cpi) << 3)
            | (u8::from(self.demand) << 1);
        b[2] = self.detect_mult;
        b[3] = PACKET_LEN as u8;
        b[4..8].copy_from_slice(&self.my_disc.to_be_bytes());
        b[8..12].copy_from_slice(&self.your_disc.to_be_bytes());
        b[12..16].copy_from_slice(&self.desired_min_tx_us.to_be_bytes());
        b[16..20].copy_from_slice(&self.required_min_rx_us.to_be_bytes());
        b[20..24].copy_from_slice(&self.required_min_echo_rx_us.to_be_bytes());
        b
    }

    /// Decodes a received UDP payload with every check of §6.8.6 that needs no session
    /// (the discriminator lookup and the state rules are the session's). Never panics.
    pub fn decode(buf: &[u8]) -> Result<ControlPacket, BadPacket> {
        if buf.len() < PACKET_LEN {
            // The version is checked first when it can be read.
            if let Some(&b0) = buf.first()
                && b0 >> 5 != VERSION
            {
                return Err(BadPacket::Version(b0 >> 5));
            }
            return Err(BadPacket::Truncated(buf.len()));
        }
        let version = buf[0] >> 5;
        if version != VERSION {
            return Err(BadPacket::Version(version));
        }
        let flags = buf[1];
        let auth = flags & 0x04 != 0;
        let len = buf[3];
        let min = if auth { 26 } else { 24 };
        if len < min {
            return Err(BadPacket::LengthTooSmall(len));
        }
        if usize::from(len) > buf.len() {
            return Err(BadPacket::LengthTooLarge {
                field: len,
                payload: buf.len(),
            });
        }
        let detect_mult = buf[2];
        if detect_mult == 0 {
            return Err(BadPacket::ZeroDetectMult);
        }
        if flags & 0x01 != 0 {
            return Err(BadPacket::Multipoint);
        }
        let word = |i: usize| u32::from_be_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
        let my_disc = word(4);
        if my_disc == 0 {
            return Err(BadPacket::ZeroMyDiscriminator);
        }
        let your_disc = word(8);
        let state = BfdState::from_bits(flags >> 6);
        if your_disc == 0 && !matches!(state, BfdState::Down | BfdState::AdminDown) {
            return Err(BadPacket::ZeroYourDiscriminator(state));
        }
        // No authentication is supported: §6.8.6 "If the A bit is set and no authentication
        // is in use (bfd.AuthType is zero), the packet MUST be discarded."
        if auth {
            return Err(BadPacket::UnexpectedAuth);
        }
        Ok(ControlPacket {
            diag: Diag(buf[0] & 0x1f),
            state,
            poll: flags & 0x20 != 0,
            final_: flags & 0x10 != 0,
            cpi: flags & 0x08 != 0,
            demand: flags & 0x02 != 0,
            detect_mult,
            my_disc,
            your_disc,
            desired_min_tx_us: word(12),
            required_min_rx_us: word(16),
            required_min_echo_rx_us: word(20),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt() -> ControlPacket {
        ControlPacket {
            diag: Diag::NONE,
            state: BfdState::Up,
            poll: false,
            final_: true,
            cpi: false,
            demand: false,
            detect_mult: 3,
            my_disc: 0x0102_0304,
            your_disc: 7,
            desired_min_tx_us: 100_000,
            required_min_rx_us: 100_000,
            required_min_echo_rx_us: 0,
        }
    }

    #[test]
    fn round_trip_and_wire_layout() {
        let b = pkt().encode();
        // Captured layout: version 1, state Up with F, mult 3, length 24.
        assert_eq!(&b[..4], &[0x20, 0xd0, 3, 24]);
        assert_eq!(&b[4..8], &[1, 2, 3, 4]);
        assert_eq!(ControlPacket::decode(&b), Ok(pkt()));
    }

    #[test]
    fn a_longer_datagram_than_length_is_accepted() {
        let mut v = pkt().encode().to_vec();
        v.extend_from_slice(&[0; 8]);
        assert_eq!(ControlPacket::decode(&v), Ok(pkt()));
    }

    #[test]
    fn bad_packets_are_rejected_with_the_reason() {
        let good = pkt().encode();
        let with = |f: &dyn Fn(&mut [u8; 24])| {
            let mut b = good;
            f(&mut b);
            ControlPacket::decode(&b)
        };
        assert_eq!(
            ControlPacket::decode(&good[..20]),
            Err(BadPacket::Truncated(20))
        );
        assert_eq!(ControlPacket::decode(&[]), Err(BadPacket::Truncated(0)));
        assert_eq!(with(&|b| b[0] = 0x40), Err(BadPacket::Version(2)));
        assert_eq!(with(&|b| b[3] = 23), Err(BadPacket::LengthTooSmall(23)));
        assert_eq!(
            with(&|b| b[3] = 30),
            Err(BadPacket::LengthTooLarge {
                field: 30,
                payload: 24
            })
        );
        assert_eq!(with(&|b| b[2] = 0), Err(BadPacket::ZeroDetectMult));
        assert_eq!(with(&|b| b[1] |= 1), Err(BadPacket::Multipoint));
        assert_eq!(
            with(&|b| b[4..8].copy_from_slice(&[0; 4])),
            Err(BadPacket::ZeroMyDiscriminator)
        );
        assert_eq!(
            with(&|b| b[8..12].copy_from_slice(&[0; 4])),
            Err(BadPacket::ZeroYourDiscriminator(BfdState::Up))
        );
        // Your Discriminator 0 is fine while Down.
        assert!(
            with(&|b| {
                b[8..12].copy_from_slice(&[0; 4]);
                b[1] = 0x40;
            })
            .is_ok()
        );
        // A bit with a length too small for an auth section, then with room for one.
        assert_eq!(with(&|b| b[1] |= 4), Err(BadPacket::LengthTooSmall(24)));
        let mut v = good.to_vec();
        v.extend_from_slice(&[1, 2, 0, 0]);
        v[1] |= 4;
        v[3] = 26;
        assert_eq!(ControlPacket::decode(&v), Err(BadPacket::UnexpectedAuth));
    }
}
