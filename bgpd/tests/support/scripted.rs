//! A BGP peer driven by hand against a running speaker: real TCP from 127.0.0.3, messages
//! built with the codec or byte by byte. The speaker has one passive peer `scripted`
//! (AS 65000, 127.0.0.3) and listens on a kernel-chosen port.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ironmesh_bgpd::fsm::build_open;
use ironmesh_bgpd::speaker::SpeakerConfig;
use ironmesh_bgpd::wire::{Afi, Capability, Context, Message, Safi};

pub const PEER_AS: u32 = 65000;

/// The speaker's config: AS 65001, one passive peer `scripted` (hold time 30 s).
pub fn speaker_config() -> SpeakerConfig {
    speaker_config_with("")
}

/// [`speaker_config`] with `peer_extra` TOML lines in the peer `scripted`.
pub fn speaker_config_with(peer_extra: &str) -> SpeakerConfig {
    let mut c = super::cfg(&format!(
        r#"
[node]
name = "a"
cluster = "lab"
[bgp]
local_asn = 65001
router_id = "192.0.2.1"
[[bgp.peers]]
name = "scripted"
address = "127.0.0.3"
peer_asn = 65000
passive = true
hold_time = 30
import_policy = "accept-all"
export_policy = "originated-only"
{peer_extra}
"#
    ));
    c.listen = Some("127.0.0.1:0".parse().unwrap());
    c
}

pub struct Scripted {
    pub sock: TcpStream,
    buf: BytesMut,
    ctx: Context,
}

impl Scripted {
    pub fn connect(to: SocketAddr) -> Scripted {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.bind(&"127.0.0.3:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        s.connect_timeout(&to.into(), Duration::from_secs(2))
            .unwrap();
        let sock: TcpStream = s.into();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Scripted {
            sock,
            buf: BytesMut::new(),
            ctx: Context {
                four_octet_as: true,
                extended_message: false,
            },
        }
    }

    pub fn send(&mut self, m: &Message) {
        self.sock
            .write_all(&m.to_bytes(&self.ctx).unwrap())
            .unwrap();
    }

    /// Our OPEN (AS 65000, IPv4 unicast).
    pub fn send_open(&mut self) {
        let open = build_open(
            PEER_AS,
            90,
            "192.0.2.9".parse().unwrap(),
            &[Capability::Multiprotocol {
                afi: Afi::IPV4,
                safi: Safi::UNICAST,
            }],
        );
        self.send(&Message::Open(open));
    }

    /// Our OPEN (AS 65000, IPv4 unicast) with more capabilities, each its code and value
    /// octets as given (e.g. a graceful restart capability written byte by byte).
    pub fn send_open_with_raw_capabilities(&mut self, caps: &[(u8, &[u8])]) {
        let mut all = vec![Capability::Multiprotocol {
            afi: Afi::IPV4,
            safi: Safi::UNICAST,
        }];
        all.extend(caps.iter().map(|(code, value)| Capability::Unknown {
            code: *code,
            value: bytes::Bytes::copy_from_slice(value),
        }));
        let open = build_open(PEER_AS, 90, "192.0.2.9".parse().unwrap(), &all);
        self.send(&Message::Open(open));
    }

    /// [`Scripted::establish`] after [`Scripted::send_open_with_raw_capabilities`].
    pub fn establish_with_raw_capabilities(&mut self, caps: &[(u8, &[u8])]) {
        self.send_open_with_raw_capabilities(caps);
        assert!(matches!(self.recv(), Some(Message::Open(_))));
        self.send(&Message::Keepalive);
        assert!(matches!(self.recv(), Some(Message::Keepalive)));
    }

    /// OPEN both ways, then KEEPALIVE both ways: the session is Established on both sides.
    pub fn establish(&mut self) {
        self.send_open();
        assert!(matches!(self.recv(), Some(Message::Open(_))));
        self.send(&Message::Keepalive);
        assert!(matches!(self.recv(), Some(Message::Keepalive)));
    }

    /// Next message, within 5 s; `None` if the connection closed.
    pub fn recv(&mut self) -> Option<Message> {
        self.recv_within(Duration::from_secs(5))
    }

    /// Next message within `bound` (panics after it); `None` if the connection closed.
    pub fn recv_within(&mut self, bound: Duration) -> Option<Message> {
        let start = Instant::now();
        loop {
            if let Some(m) = Message::decode_from(&mut self.buf, &self.ctx).unwrap() {
                return Some(m);
            }
            assert!(start.elapsed() < bound, "no message within {bound:?}");
            let mut b = [0u8; 4096];
            match self.sock.read(&mut b) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&b[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// An UPDATE from raw path attributes and IPv4 NLRI (RFC 4271 §4.3).
    pub fn update(&mut self, attrs: &[u8], nlri: &[u8]) {
        let body_len = 2 + 2 + attrs.len() + nlri.len();
        let mut m = vec![0xff; 16];
        m.extend_from_slice(&((19 + body_len) as u16).to_be_bytes());
        m.push(2);
        m.extend_from_slice(&[0, 0]);
        m.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        m.extend_from_slice(attrs);
        m.extend_from_slice(nlri);
        self.sock.write_all(&m).unwrap();
    }
}
