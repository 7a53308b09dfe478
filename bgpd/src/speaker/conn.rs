//! TCP for BGP (RFC 4271 §8.2.1: port 179): outgoing connects with the per-peer socket options,
//! and a reader task that splits the byte stream into whole messages.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream, tcp::OwnedReadHalf};
use tokio::sync::mpsc;

use super::sockopt;
use crate::wire::{
    Capability, DecodeError, HEADER_LEN, MAX_EXTENDED_MESSAGE_LEN, MAX_MESSAGE_LEN, next_frame,
};

/// Transport settings of one peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transport {
    /// For unnumbered peers: `[::]:port` until discovered on `interface`.
    pub remote: SocketAddr,
    /// Unnumbered: find the peer by its link-local address on this interface.
    pub interface: Option<String>,
    pub local: Option<IpAddr>,
    pub md5_key: Option<Vec<u8>>,
    /// GTSM hops (RFC 5082); `None` = off.
    pub gtsm_hops: Option<u8>,
    /// eBGP multihop TTL; `None` = 1 for eBGP (directly connected), 64 for iBGP.
    pub ttl: Option<u8>,
    pub connect_timeout: Duration,
}

/// Opens a connection with MD5, TTL/GTSM and the local address applied before the SYN.
pub async fn connect(t: &Transport) -> io::Result<TcpStream> {
    let remote = match &t.interface {
        Some(ifname) => {
            let (ifname, port) = (ifname.clone(), t.remote.port());
            tokio::task::spawn_blocking(move || {
                super::unnumbered::discover(&ifname, port, Duration::from_secs(2))
            })
            .await
            .map_err(io::Error::other)??
        }
        None => t.remote,
    };
    let sock = if remote.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(key) = &t.md5_key {
        sockopt::set_md5_key(&sock, remote.ip(), key)?;
    }
    apply_ttl(&sock, t)?;
    if let Some(local) = t.local {
        sock.bind(SocketAddr::new(local, 0))?;
    }
    let stream = tokio::time::timeout(t.connect_timeout, sock.connect(remote))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// TTL handling for a socket (connecting or accepted).
pub fn apply_ttl(
    sock: &(impl std::os::fd::AsRawFd + std::os::fd::AsFd),
    t: &Transport,
) -> io::Result<()> {
    let v6 = t.remote.is_ipv6();
    if let Some(hops) = t.gtsm_hops {
        return sockopt::set_gtsm(sock, v6, hops);
    }
    if let Some(ttl) = t.ttl {
        let s = socket2::SockRef::from(sock);
        if v6 {
            s.set_unicast_hops_v6(ttl.into())?;
        } else {
            s.set_ttl_v4(ttl.into())?;
        }
    }
    Ok(())
}

/// The largest message a connection may carry (RFC 4271 §4, RFC 8654): 4096 octets unless we
/// offer extended messages. Fixed for the connection: a message that is too long for the
/// negotiated context is still refused by the decoder once whole.
pub fn max_frame_len(capabilities: &[Capability]) -> usize {
    if capabilities.contains(&Capability::ExtendedMessage) {
        MAX_EXTENDED_MESSAGE_LEN
    } else {
        MAX_MESSAGE_LEN
    }
}

/// What the reader task reports.
#[derive(Debug)]
pub enum Frame {
    /// Whole messages, headers included, in order: all that one read completed (the FSM's
    /// codec decodes them one at a time, so a context change applies to the next one).
    Messages(Vec<Bytes>),
    /// A bad marker or length (RFC 4271 §6.1), with the octets of the header seen: the stream
    /// is unusable, the session is reset at once (not at the hold timer).
    HeaderError(DecodeError, Bytes),
    Closed(Option<io::Error>),
}

/// Reads whole messages (at most `max_len` octets each, see [`max_frame_len`]) and sends them,
/// tagged with `conn`, until the stream ends or breaks the framing rules.
pub async fn read_frames<T: From<(u64, Frame)>>(
    mut rd: OwnedReadHalf,
    conn: u64,
    max_len: usize,
    tx: mpsc::Sender<T>,
) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        let mut frames = Vec::new();
        let bad = loop {
            match next_frame(&mut buf, max_len) {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break None,
                Err(e) => break Some(e),
            }
        };
        // One channel message per read, not per BGP message: a full table is ~100k UPDATEs.
        if !frames.is_empty()
            && tx
                .send(T::from((conn, Frame::Messages(frames))))
                .await
                .is_err()
        {
            return;
        }
        if let Some(e) = bad {
            let seen = buf.split_to(buf.len().min(HEADER_LEN)).freeze();
            let _ = tx.send(T::from((conn, Frame::HeaderError(e, seen)))).await;
            return;
        }
        buf.reserve(HEADER_LEN.max(16 * 1024));
        match rd.read_buf(&mut buf).await {
            Ok(0) => {
                let _ = tx.send(T::from((conn, Frame::Closed(None)))).await;
                return;
            }
            Ok(_) => {}
            Err(e) => {
                let _ = tx.send(T::from((conn, Frame::Closed(Some(e))))).await;
                return;
            }
        }
    }
}
