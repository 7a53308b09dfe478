//! A small synchronous netlink client: message building, request/ack and dumps (RFC 3549).
//!
//! Used for the tunnel routes and rules (`NETLINK_ROUTE`) and for XFRM (`NETLINK_XFRM`). The
//! socket is opened in the calling thread's network namespace; callers that manage another
//! namespace open it from a thread that joined it. Own encoding rather than a crate: the few
//! messages ironmesh sends are fixed-layout C structs, checked against `ip` output in the lab.

use std::io::{self, Read};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

pub const NETLINK_ROUTE: i32 = 0;
pub const NETLINK_XFRM: i32 = 6;

pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_REPLACE: u16 = 0x100;
pub const NLM_F_EXCL: u16 = 0x200;
pub const NLM_F_CREATE: u16 = 0x400;
pub const NLM_F_DUMP: u16 = 0x300;

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const HDR_LEN: usize = 16;

static SEQ: AtomicU32 = AtomicU32::new(1);

/// A netlink failure: the socket, or the kernel's answer (a positive errno).
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("netlink socket: {0}")]
    Io(#[from] io::Error),
    #[error("kernel refused the request: {} (errno {errno})", io::Error::from_raw_os_error(*errno))]
    Kernel { errno: i32 },
    #[error("malformed netlink reply: {0}")]
    Malformed(&'static str),
}

impl NetlinkError {
    /// The kernel's errno, if the kernel answered with one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Kernel { errno } => Some(*errno),
            _ => None,
        }
    }
}

/// A netlink message under construction: header, fixed part, attributes (4-byte aligned).
#[derive(Debug, Clone)]
pub struct Msg {
    buf: Vec<u8>,
}

impl Msg {
    pub fn new(msg_type: u16, flags: u16) -> Self {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by finish
        buf.extend_from_slice(&msg_type.to_ne_bytes());
        buf.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // seq, set by send
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it
        Self { buf }
    }

    /// Appends raw bytes (a fixed struct), padded to 4.
    pub fn push(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(bytes);
        self.pad();
        self
    }

    /// Appends an attribute (type, payload), padded to 4.
    pub fn attr(&mut self, kind: u16, payload: &[u8]) -> &mut Self {
        let len = u16::try_from(4 + payload.len()).expect("netlink attribute under 64 KiB");
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.pad();
        self
    }

    pub fn attr_u32(&mut self, kind: u16, v: u32) -> &mut Self {
        self.attr(kind, &v.to_ne_bytes())
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    /// The finished bytes with length and sequence number.
    pub fn bytes(&self, seq: u32) -> Vec<u8> {
        let mut out = self.buf.clone();
        let len = u32::try_from(out.len()).expect("netlink message under 4 GiB");
        out[0..4].copy_from_slice(&len.to_ne_bytes());
        out[8..12].copy_from_slice(&seq.to_ne_bytes());
        out
    }
}

impl Drop for Msg {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.buf);
    }
}

/// One message of a reply: its type and payload (after the 16-byte header).
#[derive(Debug, Clone)]
pub struct Reply {
    pub msg_type: u16,
    pub payload: Vec<u8>,
}

/// Iterates the attributes in `data` as (type without flag bits, payload).
pub fn attrs(mut data: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if data.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([data[0], data[1]]));
        let kind = u16::from_ne_bytes([data[2], data[3]]) & 0x3fff;
        if len < 4 || len > data.len() {
            return None;
        }
        let payload = &data[4..len];
        let next = len.next_multiple_of(4).min(data.len());
        data = &data[next..];
        Some((kind, payload))
    })
}

pub fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

/// A netlink socket of one protocol in the calling thread's network namespace.
#[derive(Debug)]
pub struct Netlink {
    sock: Socket,
}

impl Netlink {
    pub fn open(protocol: i32) -> Result<Self, NetlinkError> {
        let sock = Socket::new(
            Domain::from(libc::AF_NETLINK),
            Type::RAW,
            Some(Protocol::from(protocol)),
        )?;
        sock.set_read_timeout(Some(Duration::from_secs(5)))?;
        // Dumps of thousands of routes or XFRM objects arrive faster than we read.
        sock.set_recv_buffer_size(1 << 20)?;
        Ok(Self { sock })
    }

    /// Asks the kernel to filter dumps by the request's header and attributes
    /// (NETLINK_GET_STRICT_CHK, Linux 4.20+), e.g. routes of one table only.
    #[allow(unsafe_code)] // setsockopt with an int option; socket2 has no safe wrapper for it
    pub fn strict_check(&self) -> Result<(), NetlinkError> {
        use std::os::fd::AsRawFd;
        const SOL_NETLINK: libc::c_int = 270;
        const NETLINK_GET_STRICT_CHK: libc::c_int = 12;
        let one: libc::c_int = 1;
        // SAFETY: a valid socket fd we own, a pointer to a live c_int and its exact size.
        let rc = unsafe {
            libc::setsockopt(
                self.sock.as_raw_fd(),
                SOL_NETLINK,
                NETLINK_GET_STRICT_CHK,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error().into())
        }
    }

    fn send(&self, msg: &Msg) -> Result<u32, NetlinkError> {
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        // Zeroized after the send: messages may carry keys (XFRM SAs, WireGuard).
        let bytes = zeroize::Zeroizing::new(msg.bytes(seq));
        self.sock.send(&bytes)?;
        Ok(seq)
    }

    /// Sends a request with NLM_F_ACK and waits for its acknowledgement; returns any data
    /// messages that came before it (e.g. the answer of a GET).
    pub fn request(&self, msg: &Msg) -> Result<Vec<Reply>, NetlinkError> {
        let mut m = msg.clone();
        let flags = u16::from_ne_bytes([m.buf[6], m.buf[7]]) | NLM_F_ACK;
        m.buf[6..8].copy_from_slice(&flags.to_ne_bytes());
        let seq = self.send(&m)?;
        self.collect(seq, false)
    }

    /// Sends a dump request and returns every message until NLMSG_DONE.
    pub fn dump(&self, msg: &Msg) -> Result<Vec<Reply>, NetlinkError> {
        let seq = self.send(msg)?;
        self.collect(seq, true)
    }

    fn collect(&self, seq: u32, dump: bool) -> Result<Vec<Reply>, NetlinkError> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        // Bounded: a reply ends with DONE or an error/ack; the read timeout bounds each read.
        for _ in 0..1_000_000 {
            let n = (&self.sock).read(&mut buf)?;
            if parse_datagram(&buf[..n], seq, dump, &mut out)? {
                return Ok(out);
            }
        }
        Err(NetlinkError::Malformed("reply never ended"))
    }
}

/// Reads one datagram of the answer to request `seq` (sans-IO, fuzzed: `scripts/fuzz
/// netlink_reply`): appends its data messages to `out`; `Ok(true)` once the answer ended (the
/// acknowledgement, or NLMSG_DONE of a dump), `Ok(false)` if more datagrams follow. Messages of
/// other sequence numbers are skipped; an error message becomes [`NetlinkError::Kernel`].
pub fn parse_datagram(
    mut data: &[u8],
    seq: u32,
    dump: bool,
    out: &mut Vec<Reply>,
) -> Result<bool, NetlinkError> {
    while data.len() >= HDR_LEN {
        let len = u32_at(data, 0).ok_or(NetlinkError::Malformed("header"))? as usize;
        if len < HDR_LEN || len > data.len() {
            return Err(NetlinkError::Malformed("message length"));
        }
        let msg_type = u16::from_ne_bytes([data[4], data[5]]);
        let msg_seq = u32_at(data, 8).ok_or(NetlinkError::Malformed("header"))?;
        let payload = &data[HDR_LEN..len];
        data = &data[len.next_multiple_of(4).min(data.len())..];
        if msg_seq != seq {
            continue;
        }
        match msg_type {
            NLMSG_ERROR => {
                let code = u32_at(payload, 0).ok_or(NetlinkError::Malformed("error"))? as i32;
                return if code == 0 {
                    Ok(true)
                } else {
                    // saturating: -i32::MIN overflows (found by `scripts/fuzz netlink_reply`).
                    Err(NetlinkError::Kernel {
                        errno: code.saturating_neg(),
                    })
                };
            }
            NLMSG_DONE if dump => return Ok(true),
            _ => out.push(Reply {
                msg_type,
                payload: payload.to_vec(),
            }),
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_aligned_messages_and_reads_attributes() {
        let mut m = Msg::new(24, NLM_F_CREATE);
        m.push(&[1, 2, 3]).attr(1, &[10, 0, 0]).attr_u32(15, 202);
        let b = m.bytes(7);
        assert_eq!(b.len(), 16 + 4 + 8 + 8);
        assert_eq!(u32_at(&b, 0), Some(36));
        assert_eq!(
            u16::from_ne_bytes([b[6], b[7]]),
            NLM_F_CREATE | NLM_F_REQUEST
        );
        assert_eq!(u32_at(&b, 8), Some(7));
        let got: Vec<_> = attrs(&b[20..]).collect();
        assert_eq!(
            got,
            [(1, &[10u8, 0, 0][..]), (15, &202u32.to_ne_bytes()[..])]
        );
        // Truncated or lying lengths end the iteration instead of panicking.
        assert_eq!(attrs(&[8, 0, 1, 0, 1]).count(), 0);
        assert_eq!(attrs(&[2, 0, 1, 0]).count(), 0);
    }

    #[test]
    fn reads_reply_datagrams() {
        let msg = |t: u16, seq: u32, payload: &[u8]| {
            let mut m = Msg::new(t, 0);
            m.push(payload);
            m.bytes(seq)
        };
        // A dump: data, another request's message (skipped), then DONE.
        let mut d = msg(20, 5, &[1, 2, 3, 4, 5, 6, 7, 8]);
        d.extend(msg(20, 6, &[9]));
        d.extend(msg(NLMSG_DONE, 5, &[0; 4]));
        let mut out = Vec::new();
        assert!(parse_datagram(&d, 5, true, &mut out).unwrap());
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].msg_type, &out[0].payload[..]),
            (20, &[1, 2, 3, 4, 5, 6, 7, 8][..])
        );
        // No end yet: more to read.
        let mut out = Vec::new();
        assert!(!parse_datagram(&msg(20, 5, &[]), 5, true, &mut out).unwrap());
        // An error message with an errno, and an ack.
        let nack = msg(NLMSG_ERROR, 5, &(-17i32).to_ne_bytes());
        let err = parse_datagram(&nack, 5, false, &mut out).unwrap_err();
        assert_eq!(err.errno(), Some(17));
        let ack = msg(NLMSG_ERROR, 5, &0i32.to_ne_bytes());
        assert!(parse_datagram(&ack, 5, false, &mut out).unwrap());
        // A length past the datagram is malformed, not a panic.
        let mut bad = msg(20, 5, &[0; 8]);
        bad[0] = 200;
        assert!(matches!(
            parse_datagram(&bad, 5, false, &mut out),
            Err(NetlinkError::Malformed(_))
        ));
    }

    /// Found by `scripts/fuzz netlink_reply`: an error code of i32::MIN panicked on negation.
    #[test]
    fn an_error_code_of_i32_min_is_an_errno_not_a_panic() {
        let mut m = Msg::new(NLMSG_ERROR, 0);
        m.push(&i32::MIN.to_ne_bytes());
        let err = parse_datagram(&m.bytes(9), 9, false, &mut Vec::new()).unwrap_err();
        assert_eq!(err.errno(), Some(i32::MAX));
    }
}
