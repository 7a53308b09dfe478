//! Accepting BGP connections and handing each to the task of the peer it comes from.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpSocket};
use tracing::{debug, warn};

use super::peer::PeerMsg;
use super::registry::Routes;
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
        sockopt::set_md5_key(&sock, mapped(addr, *peer), key)?;
    }
    sock.bind(addr)?;
    sock.listen(64)
}

/// A dual-stack socket sees IPv4 peers as v4-mapped IPv6 addresses.
fn mapped(listen: SocketAddr, peer: IpAddr) -> IpAddr {
    match (listen, peer) {
        (SocketAddr::V6(_), IpAddr::V4(v4)) => IpAddr::V6(v4.to_ipv6_mapped()),
        _ => peer,
    }
}

/// Sets (or with an empty key removes) a peer's MD5 key on a bound listener (config reload).
pub fn set_md5(listener: &TcpListener, peer: IpAddr, key: &[u8]) -> io::Result<()> {
    let addr = listener.local_addr()?;
    sockopt::set_md5_key(listener, mapped(addr, peer), key)
}

/// Accepts until the listener fails or every peer task is gone.
pub async fn accept_loop(listener: Arc<TcpListener>, peers: Routes) {
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // E.g. out of file descriptors: back off instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let tx = {
            let t = peers.read().unwrap();
            match from {
                SocketAddr::V6(v6) if v6.ip().is_unicast_link_local() && v6.scope_id() != 0 => {
                    t.by_ifindex.get(&v6.scope_id()).cloned()
                }
                _ => t.by_ip.get(&from.ip().to_canonical()).cloned(),
            }
        };
        match tx {
            Some(tx) => {
                let _ = stream.set_nodelay(true);
                if tx.send(PeerMsg::Incoming(stream)).await.is_err() {
                    debug!(%from, "peer removed while its connection was accepted");
                }
            }
            None => debug!(%from, "connection from an unconfigured peer refused"),
        }
    }
}
