//! Unnumbered peering: the peer is found on an interface by its IPv6 link-local address
//! (RFC 8950 carries IPv4 routes over the session). We ask all nodes on the link
//! (ICMPv6 echo to ff02::1, RFC 4443) and take the one answer that is not ours.

use std::io;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::sockopt;

const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// Every IPv6 address of this namespace with its interface name (/proc/net/if_inet6).
pub(crate) fn interface_addresses() -> Vec<(Ipv6Addr, String)> {
    let text = std::fs::read_to_string("/proc/net/if_inet6").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let a = Ipv6Addr::from(u128::from_str_radix(f.first()?, 16).ok()?);
            Some((a, f.get(5)?.to_string()))
        })
        .collect()
}

/// Our own link-local addresses on interface `ifname`.
fn own_link_locals(ifname: &str) -> Vec<Ipv6Addr> {
    interface_addresses()
        .into_iter()
        .filter(|(a, i)| i == ifname && a.is_unicast_link_local())
        .map(|(a, _)| a)
        .collect()
}

/// Finds the peer on `ifname`: its link-local address with the interface as scope.
/// Blocking (at most `wait`); call it from `spawn_blocking`.
pub fn discover(ifname: &str, port: u16, wait: Duration) -> io::Result<SocketAddr> {
    let index = sockopt::ifindex(ifname)?;
    let own = own_link_locals(ifname);
    let sock = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
    sock.set_multicast_if_v6(index)?;
    sock.set_multicast_loop_v6(false)?;
    sock.set_read_timeout(Some(Duration::from_millis(100)))?;
    // Echo Request: type 128, code 0, checksum (the kernel fills it), id, seq.
    let id = (std::process::id() & 0xffff) as u16;
    let mut req = vec![128, 0, 0, 0];
    req.extend_from_slice(&id.to_be_bytes());
    req.extend_from_slice(&[0, 1]);
    let to = SockAddr::from(SocketAddrV6::new(ALL_NODES, 0, 0, index));
    let start = Instant::now();
    let mut next_send = start;
    while start.elapsed() < wait {
        if Instant::now() >= next_send {
            sock.send_to(&req, &to)?;
            next_send = Instant::now() + Duration::from_millis(300);
        }
        let mut buf = [0u8; 256];
        let (n, from) = match sockopt::recv_from(&sock, &mut buf) {
            Ok(x) => x,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) => return Err(e),
        };
        let data = &buf[..n];
        let Some(SocketAddr::V6(src)) = from.as_socket() else {
            continue;
        };
        let is_reply = data.first() == Some(&129) && data.get(4..6) == Some(&id.to_be_bytes()[..]);
        if is_reply && src.ip().is_unicast_link_local() && !own.contains(src.ip()) {
            return Ok(SocketAddr::V6(SocketAddrV6::new(*src.ip(), port, 0, index)));
        }
    }
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "no IPv6 neighbour answered on {ifname} within {wait:?} (is the link up and the peer there?)"
        ),
    ))
}
