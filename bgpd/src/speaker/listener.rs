//! Accepting BGP connections and handing each to the task of the peer it comes from.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::peer::PeerMsg;
use super::sockopt;

/// Binds the listening socket, with the MD5 key of every peer that has one (the kernel checks
/// signatures on the SYN, before accept).
pub fn bind(addr: SocketAddr, md5: &[(IpAddr, Vec<u8>)]) -> io::Result<TcpListener> {
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    sock.set_reuseaddr(true)?;
    for (peer, key) in md5 {
        let peer = match (addr, peer) {
            // A dual-stack socket sees IPv4 peers as v4-mapped IPv6 addresses.
            (SocketAddr::V6(_), IpAddr::V4(v4)) => IpAddr::V6(v4.to_ipv6_mapped()),
            _ => *peer,
        };
        sockopt::set_md5_key(&sock, peer, key)?;
    }
    sock.bind(addr)?;
    sock.listen(64)
}

/// Accepts until the listener fails or every peer task is gone.
pub async fn accept_loop(listener: TcpListener, peers: HashMap<IpAddr, mpsc::Sender<PeerMsg>>) {
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "accept failed");
                continue;
            }
        };
        let ip = from.ip().to_canonical();
        match peers.get(&ip) {
            Some(tx) => {
                let _ = stream.set_nodelay(true);
                if tx.send(PeerMsg::Incoming(stream)).await.is_err() {
                    return;
                }
            }
            None => debug!(%from, "connection from an unconfigured peer refused"),
        }
    }
}
