//! The userspace WireGuard configuration protocol ("cross-platform interface",
//! <https://www.wireguard.com/xplatform/>), sans-IO: requests are built as text, responses are
//! fed line by line. Keys are 64 lowercase hex digits on the wire (not base64).
//!
//! ```text
//! get=1\n\n                       → private_key=…\nlisten_port=…\n[fwmark=…\n]
//!                                   (public_key=…\n peer lines…)*  errno=0\n\n
//! set=1\n<key=value\n>*\n         → errno=N\n\n        (N = 0 or a negated errno)
//! ```
//!
//! Secrets: the private key appears in a `get` response and in a device `set` request. The
//! parser turns it into a public key at once and never copies the line into an error; the
//! device request is built into a zeroizing buffer of fixed capacity (no reallocation copies).

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, UNIX_EPOCH};

use ipnet::IpNet;
use zeroize::Zeroizing;

use super::{DeviceSettings, DeviceState, PeerChange, PeerConfig, PeerState};
use crate::keys::{PrivateKey, PublicKey};

/// The `get` request.
pub const GET: &str = "get=1\n\n";

/// A non-zero `errno=` answer. wireguard-go sends the negated Linux errno; either sign is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UapiErrno {
    /// EINVAL (22): a value the device does not accept, or a key it does not know.
    InvalidArgument,
    /// EADDRINUSE (98): the listen port is taken.
    AddressInUse,
    /// EIO (5): the device failed applying the change (e.g. binding the port, bringing it up).
    Io,
    /// EPROTO (71): the request was not a `get=1` / `set=1` operation.
    Protocol,
    /// Anything else, as received.
    Other(i64),
}

impl UapiErrno {
    pub fn from_wire(n: i64) -> Option<UapiErrno> {
        Some(match n.unsigned_abs() {
            0 => return None,
            22 => UapiErrno::InvalidArgument,
            98 => UapiErrno::AddressInUse,
            5 => UapiErrno::Io,
            71 => UapiErrno::Protocol,
            _ => UapiErrno::Other(n),
        })
    }
}

impl fmt::Display for UapiErrno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UapiErrno::InvalidArgument => f.write_str(
                "errno EINVAL: a key, address or value was not accepted (see the daemon's log for the line)",
            ),
            UapiErrno::AddressInUse => {
                f.write_str("errno EADDRINUSE: the listen port is already in use")
            }
            UapiErrno::Io => f.write_str("errno EIO: the device failed to apply the change"),
            UapiErrno::Protocol => f.write_str("errno EPROTO: not a get=1 or set=1 operation"),
            UapiErrno::Other(n) => write!(f, "errno {n}"),
        }
    }
}

/// A response that does not follow the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ParseError {
    pub line: usize,
    pub reason: String,
}

/// What a response says: the device's answer, a refusal, or garbage.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    #[error("{0}")]
    Refused(UapiErrno),
    #[error("{0}")]
    Malformed(ParseError),
}

/// Appends `key=value\n`.
fn line(out: &mut String, key: &str, value: impl fmt::Display) {
    use fmt::Write;
    let _ = writeln!(out, "{key}={value}");
}

/// The device `set` request (private key, port, fwmark), in a zeroizing buffer allocated once.
pub fn encode_device_set(settings: &DeviceSettings<'_>) -> Zeroizing<String> {
    // "set=1\n" + "private_key=" + 64 + "\n" + "listen_port=65535\n" + "fwmark=4294967295\n" + "\n"
    let mut out = Zeroizing::new(String::with_capacity(160));
    out.push_str("set=1\n");
    if let Some(key) = settings.private_key {
        out.push_str("private_key=");
        out.push_str(&key.expose_hex());
        out.push('\n');
    }
    if let Some(port) = settings.listen_port {
        line(&mut out, "listen_port", port);
    }
    if let Some(mark) = settings.fwmark {
        line(&mut out, "fwmark", mark);
    }
    out.push('\n');
    debug_assert!(out.len() <= 160);
    out
}

fn allowed_ips<'a>(out: &mut String, ips: impl IntoIterator<Item = &'a IpNet>) {
    out.push_str("replace_allowed_ips=true\n");
    for ip in ips {
        line(out, "allowed_ip", ip);
    }
}

/// The peer `set` request for `changes`, in order. An empty list gives an empty `set`, which
/// the device answers with `errno=0`.
pub fn encode_peer_set(changes: &[PeerChange]) -> String {
    let mut out = String::with_capacity(32 + changes.len() * 200);
    out.push_str("set=1\n");
    for change in changes {
        line(&mut out, "public_key", change.public_key().to_hex());
        match change {
            PeerChange::Add(c) => {
                if let Some(ep) = c.endpoint {
                    line(&mut out, "endpoint", ep);
                }
                allowed_ips(&mut out, &c.allowed_ips);
                // Last: turning keepalive on makes wireguard-go send a keepalive at once, which
                // starts the handshake with a re-keyed or new peer without waiting for traffic.
                line(
                    &mut out,
                    "persistent_keepalive_interval",
                    c.persistent_keepalive,
                );
            }
            PeerChange::Update {
                endpoint,
                allowed_ips: ips,
                persistent_keepalive,
                ..
            } => {
                out.push_str("update_only=true\n");
                if let Some(ep) = endpoint {
                    line(&mut out, "endpoint", ep);
                }
                if let Some(ips) = ips {
                    allowed_ips(&mut out, ips);
                }
                if let Some(k) = persistent_keepalive {
                    line(&mut out, "persistent_keepalive_interval", k);
                }
            }
            PeerChange::Remove(_) => out.push_str("remove=true\n"),
        }
    }
    out.push('\n');
    out
}

/// Feeds the complete lines of `text`; a trailing fragment without newline is not a line.
fn feed_text(p: &mut ResponseParser, text: &str) -> Result<(), ResponseError> {
    for l in text.split_inclusive('\n') {
        let Some(l) = l.strip_suffix('\n') else {
            break;
        };
        if p.feed_line(l).map_err(ResponseError::Malformed)? {
            break;
        }
    }
    Ok(())
}

/// Reads the answer to a `set`: `errno=N` and a blank line.
pub fn parse_set_response(text: &str) -> Result<(), ResponseError> {
    let mut p = ResponseParser::new();
    feed_text(&mut p, text)?;
    p.finish().map(drop)
}

/// Reads a whole `get` response.
pub fn parse_get(text: &str) -> Result<DeviceState, ResponseError> {
    let mut p = ResponseParser::new();
    feed_text(&mut p, text)?;
    p.finish()
}

/// A line-fed parser of `get` (and `set`) responses; the I/O layer feeds lines without their
/// newline until [`feed_line`](Self::feed_line) says the response is complete.
#[derive(Debug, Default)]
pub struct ResponseParser {
    line_no: usize,
    device: DeviceState,
    peer: Option<PeerBuilder>,
    errno: Option<i64>,
    done: bool,
}

#[derive(Debug)]
struct PeerBuilder {
    state: PeerState,
    handshake_sec: u64,
    handshake_nsec: u32,
}

impl PeerBuilder {
    fn finish(mut self) -> PeerState {
        if self.handshake_sec != 0 || self.handshake_nsec != 0 {
            self.state.last_handshake = UNIX_EPOCH.checked_add(Duration::new(
                self.handshake_sec,
                self.handshake_nsec.min(999_999_999),
            ));
        }
        self.state
    }
}

impl ResponseParser {
    pub fn new() -> Self {
        Self::default()
    }

    fn err(&self, reason: impl Into<String>) -> ParseError {
        ParseError {
            line: self.line_no,
            reason: reason.into(),
        }
    }

    fn end_peer(&mut self) {
        if let Some(p) = self.peer.take() {
            let state = p.finish();
            self.device.peers.insert(state.config.public_key, state);
        }
    }

    /// Feeds one line (without `\n`). Returns true once the response is complete.
    pub fn feed_line(&mut self, line: &str) -> Result<bool, ParseError> {
        if self.done {
            return Ok(true);
        }
        self.line_no += 1;
        if line.is_empty() {
            if self.errno.is_none() {
                return Err(self.err("response ended without an errno= line"));
            }
            self.done = true;
            return Ok(true);
        }
        if self.errno.is_some() {
            return Err(self.err("data after the errno= line"));
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(self.err(format!("not key=value: {:?}", shorten(line))));
        };
        let num = |this: &Self, what: &str| -> Result<u64, ParseError> {
            value
                .parse::<u64>()
                .map_err(|_| this.err(format!("{what}={:?} is not a number", shorten(value))))
        };
        match key {
            "errno" => {
                let n = value
                    .parse::<i64>()
                    .map_err(|_| self.err(format!("errno={:?} is not a number", shorten(value))))?;
                self.end_peer();
                self.errno = Some(n);
            }
            "public_key" => {
                self.end_peer();
                let key = PublicKey::from_hex(value)
                    .map_err(|e| self.err(format!("peer public_key: {e}")))?;
                self.peer = Some(PeerBuilder {
                    state: PeerState {
                        config: PeerConfig {
                            public_key: key,
                            endpoint: None,
                            allowed_ips: Default::default(),
                            persistent_keepalive: 0,
                        },
                        last_handshake: None,
                        rx_bytes: 0,
                        tx_bytes: 0,
                    },
                    handshake_sec: 0,
                    handshake_nsec: 0,
                });
            }
            _ if self.peer.is_none() => match key {
                // Never echo this line: it is the secret.
                "private_key" => {
                    let key = PrivateKey::from_hex(value)
                        .map_err(|_| self.err("private_key is not 64 hex digits"))?;
                    self.device.public_key = Some(key.public_key());
                }
                "listen_port" => {
                    self.device.listen_port = u16::try_from(num(self, key)?)
                        .map_err(|_| self.err("listen_port out of range"))?;
                }
                "fwmark" => {
                    self.device.fwmark = u32::try_from(num(self, key)?)
                        .map_err(|_| self.err("fwmark out of range"))?;
                }
                // Unknown device keys of newer daemons are ignored.
                _ => {}
            },
            _ => {
                let n = match key {
                    "last_handshake_time_sec"
                    | "last_handshake_time_nsec"
                    | "rx_bytes"
                    | "tx_bytes"
                    | "persistent_keepalive_interval" => num(self, key)?,
                    _ => 0,
                };
                let allowed = match key {
                    "allowed_ip" => Some(
                        value
                            .parse::<IpNet>()
                            .map_err(|_| {
                                self.err(format!("allowed_ip={:?} is not a prefix", shorten(value)))
                            })?
                            .trunc(),
                    ),
                    _ => None,
                };
                let p = self.peer.as_mut().expect("checked above");
                match key {
                    // A scoped IPv6 endpoint (fe80::1%eth0) does not parse as a SocketAddr:
                    // it reads as "no endpoint", and a managed peer gets ours set again.
                    "endpoint" => p.state.config.endpoint = value.parse::<SocketAddr>().ok(),
                    "last_handshake_time_sec" => p.handshake_sec = n,
                    "last_handshake_time_nsec" => {
                        p.handshake_nsec = n.min(u64::from(u32::MAX)) as u32
                    }
                    "rx_bytes" => p.state.rx_bytes = n,
                    "tx_bytes" => p.state.tx_bytes = n,
                    "persistent_keepalive_interval" => {
                        p.state.config.persistent_keepalive = u16::try_from(n).unwrap_or(u16::MAX)
                    }
                    "allowed_ip" => {
                        p.state.config.allowed_ips.extend(allowed);
                    }
                    // preshared_key (unused by ironmesh), protocol_version, newer keys.
                    _ => {}
                }
            }
        }
        Ok(false)
    }

    /// The device state, or the device's refusal.
    pub fn finish(mut self) -> Result<DeviceState, ResponseError> {
        if !self.done {
            return Err(ResponseError::Malformed(
                self.err("response ended before its closing blank line"),
            ));
        }
        self.end_peer();
        match self.errno.and_then(UapiErrno::from_wire) {
            Some(e) => Err(ResponseError::Refused(e)),
            None => Ok(self.device),
        }
    }
}

fn shorten(s: &str) -> &str {
    match s.char_indices().nth(80) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// `get=1` answered by wireguard-go 0.0.20220316 (Debian 12), captured on the lab machine:
    /// a device with the RFC 7748 "Alice" private key, fwmark 0x1234, a peer that completed a
    /// handshake (IPv4 endpoint, keepalive 25, v4+v6 allowed IPs) and one that did not (IPv6
    /// endpoint).
    const CAPTURED_GET: &str =
        include_str!("../../tests/fixtures/wireguard-go-0.0.20220316-get.txt");

    // RFC 7748 §6.1 Alice's public key (the device key above, as clamped by wg).
    const ALICE_PUB: &str = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a";

    fn key(hex: &str) -> PublicKey {
        PublicKey::from_hex(hex).unwrap()
    }

    fn nets(s: &[&str]) -> BTreeSet<IpNet> {
        s.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn parses_captured_wireguard_go_get() {
        let dev = parse_get(CAPTURED_GET).unwrap();
        assert_eq!(dev.public_key, Some(key(ALICE_PUB)));
        assert_eq!(dev.listen_port, 51820);
        assert_eq!(dev.fwmark, 0x1234);
        assert_eq!(dev.peers.len(), 2);

        let a =
            &dev.peers[&key("f48280ce8f6d8c036426982df944d64bd230ec11b82111d90c87a4320690424e")];
        assert_eq!(a.config.endpoint, Some("192.0.2.2:51821".parse().unwrap()));
        assert_eq!(a.config.persistent_keepalive, 25);
        assert_eq!(
            a.config.allowed_ips,
            nets(&["10.244.1.0/24", "2001:db8:1::/64"])
        );
        let hs = a.last_handshake.expect("handshake happened");
        assert_eq!(
            hs.duration_since(UNIX_EPOCH).unwrap(),
            Duration::new(1795441334, 494113910)
        );
        assert!(a.tx_bytes > 0 && a.rx_bytes > 0);

        let b =
            &dev.peers[&key("164b4f95ac701634122319323863a68a53799bbf679be9eed3ff6fd3ffc1004f")];
        assert_eq!(
            b.config.endpoint,
            Some("[2001:db8::2]:51820".parse().unwrap())
        );
        assert_eq!(b.last_handshake, None);
        assert_eq!((b.rx_bytes, b.tx_bytes), (0, 0));
        assert_eq!(b.config.persistent_keepalive, 0);
        assert_eq!(b.config.allowed_ips, nets(&["10.244.2.0/24"]));
    }

    #[test]
    fn fresh_device_and_refusals() {
        // A device just started by wireguard-go: no key, no port.
        let dev = parse_get("errno=0\n\n").unwrap();
        assert_eq!(dev, DeviceState::default());
        // Captured: wireguard-go answers a bad set with a negated errno.
        assert_eq!(
            parse_set_response("errno=-22\n\n"),
            Err(ResponseError::Refused(UapiErrno::InvalidArgument))
        );
        assert_eq!(parse_set_response("errno=0\n\n"), Ok(()));
        assert_eq!(
            parse_set_response("errno=98\n\n"),
            Err(ResponseError::Refused(UapiErrno::AddressInUse))
        );
        assert_eq!(
            parse_set_response("errno=-7\n\n"),
            Err(ResponseError::Refused(UapiErrno::Other(-7)))
        );
        let msg = ResponseError::Refused(UapiErrno::InvalidArgument).to_string();
        assert!(msg.contains("EINVAL"), "{msg}");
    }

    #[test]
    fn malformed_responses_are_errors_that_hide_the_private_key() {
        let secret = "zz".repeat(32);
        let err = parse_get(&format!("private_key={secret}\nerrno=0\n\n")).unwrap_err();
        let msg = err.to_string();
        assert_eq!(msg, "line 1: private_key is not 64 hex digits");
        assert!(!msg.contains(&secret));

        for (text, needle) in [
            (
                "listen_port=x\nerrno=0\n\n",
                "line 1: listen_port=\"x\" is not a number",
            ),
            ("garbage\n\n", "line 1: not key=value"),
            (
                "listen_port=1\n\n",
                "line 2: response ended without an errno= line",
            ),
            ("errno=0\n", "before its closing blank line"),
            (
                "errno=0\nlisten_port=1\n\n",
                "line 2: data after the errno= line",
            ),
            (
                "public_key=abc\nerrno=0\n\n",
                "line 1: peer public_key: public key is not valid hex",
            ),
            (
                &format!("public_key={ALICE_PUB}\nallowed_ip=10.0.0.0/33\nerrno=0\n\n"),
                "line 2: allowed_ip=\"10.0.0.0/33\" is not a prefix",
            ),
        ] {
            let msg = parse_get(text).unwrap_err().to_string();
            assert!(msg.contains(needle), "{text:?}: {msg}");
        }
    }

    #[test]
    fn unknown_keys_are_ignored_and_prefixes_normalized() {
        let text = format!(
            "listen_port=1\nnew_device_key=1\npublic_key={ALICE_PUB}\nnew_peer_key=x\n\
             allowed_ip=10.244.1.7/24\nendpoint=[fe80::1%eth0]:1\nerrno=0\n\n"
        );
        let dev = parse_get(&text).unwrap();
        let p = &dev.peers[&key(ALICE_PUB)];
        assert_eq!(p.config.allowed_ips, nets(&["10.244.1.0/24"]));
        assert_eq!(p.config.endpoint, None);
    }

    #[test]
    fn device_set_request() {
        let k = PrivateKey::from_hex(
            "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
        )
        .unwrap();
        let req = encode_device_set(&DeviceSettings {
            private_key: Some(&k),
            listen_port: Some(51820),
            fwmark: Some(u32::MAX),
        });
        assert_eq!(
            req.as_str(),
            "set=1\nprivate_key=77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a\n\
             listen_port=51820\nfwmark=4294967295\n\n"
        );
        assert!(req.capacity() == 160, "never reallocated");
        let req = encode_device_set(&DeviceSettings {
            listen_port: Some(1),
            ..Default::default()
        });
        assert_eq!(req.as_str(), "set=1\nlisten_port=1\n\n");
    }

    #[test]
    fn peer_set_request() {
        let a = key(ALICE_PUB);
        let b = key("f48280ce8f6d8c036426982df944d64bd230ec11b82111d90c87a4320690424e");
        let req = encode_peer_set(&[
            PeerChange::Remove(b),
            PeerChange::Update {
                public_key: a,
                endpoint: Some("[2001:db8::2]:51820".parse().unwrap()),
                allowed_ips: Some(nets(&["10.244.1.0/24", "192.0.2.2/32"])),
                persistent_keepalive: None,
            },
            PeerChange::Add(PeerConfig {
                public_key: b,
                endpoint: Some("192.0.2.3:51820".parse().unwrap()),
                allowed_ips: nets(&["10.244.3.0/24"]),
                persistent_keepalive: 25,
            }),
        ]);
        assert_eq!(
            req,
            format!(
                "set=1\n\
                 public_key={b}\nremove=true\n\
                 public_key={a}\nupdate_only=true\nendpoint=[2001:db8::2]:51820\n\
                 replace_allowed_ips=true\nallowed_ip=10.244.1.0/24\nallowed_ip=192.0.2.2/32\n\
                 public_key={b}\nendpoint=192.0.2.3:51820\nreplace_allowed_ips=true\n\
                 allowed_ip=10.244.3.0/24\npersistent_keepalive_interval=25\n\n",
                a = a.to_hex(),
                b = b.to_hex()
            )
        );
        assert_eq!(encode_peer_set(&[]), "set=1\n\n");
    }
}
