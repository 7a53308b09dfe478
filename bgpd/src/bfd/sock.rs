//! BFD's sockets (RFC 5881): a shared receive socket per address family on port 3784 that
//! reports each datagram's TTL / hop limit, and a send socket per session from a source port
//! in 49152-65535 with TTL 255.
//!
//! unsafe: `setsockopt(2)` with a pointer to a live `c_int`, and `recvmsg(2)` into buffers we
//! own, whose lengths we pass; control messages are walked with the libc CMSG macros and read
//! unaligned.
#![allow(unsafe_code)]

use std::io;
use std::mem::{size_of, size_of_val};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;

use super::packet::SOURCE_PORTS;

/// The TTL / hop limit single-hop BFD requires (RFC 5881 §5).
pub const TTL: u8 = 255;

fn set_int(fd: RawFd, level: i32, name: i32, v: libc::c_int) -> io::Result<()> {
    // SAFETY: a pointer to a live c_int and its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&v as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The receive socket of one address family and port: `0.0.0.0:<port>` or `[::]:<port>` (IPv6
/// only); port 3784 single hop, 4784 multihop.
pub fn bind_receive(v6: bool, port: u16) -> io::Result<UdpSocket> {
    let (domain, addr) = if v6 {
        (
            Domain::IPV6,
            SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)),
        )
    } else {
        (
            Domain::IPV4,
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)),
        )
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    if v6 {
        s.set_only_v6(true)?;
        set_int(
            s.as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_RECVHOPLIMIT,
            1,
        )?;
    } else {
        set_int(s.as_raw_fd(), libc::IPPROTO_IP, libc::IP_RECVTTL, 1)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

/// A session's send socket: bound to `local` (or any address of the peer's family) and a
/// source port in 49152-65535 (the same for the whole session), TTL / hop limit 255.
pub fn bind_send(peer: IpAddr, local: Option<IpAddr>, seed: u64) -> io::Result<UdpSocket> {
    let local = local.unwrap_or(if peer.is_ipv6() {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    });
    let span = u64::from(SOURCE_PORTS.end() - SOURCE_PORTS.start()) + 1;
    let mut last = io::Error::new(io::ErrorKind::AddrInUse, "no free BFD source port");
    for i in 0..64u64 {
        let port = SOURCE_PORTS.start() + ((seed.wrapping_add(i * 7919)) % span) as u16;
        let domain = if peer.is_ipv6() {
            Domain::IPV6
        } else {
            Domain::IPV4
        };
        let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
        if peer.is_ipv6() {
            s.set_only_v6(true)?;
            s.set_unicast_hops_v6(TTL.into())?;
        } else {
            s.set_ttl_v4(TTL.into())?;
        }
        s.set_nonblocking(true)?;
        match s.bind(&SocketAddr::new(local, port).into()) {
            Ok(()) => return UdpSocket::from_std(s.into()),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// One received datagram.
#[derive(Debug)]
pub struct Datagram {
    pub len: usize,
    pub from: SocketAddr,
    /// The received TTL / hop limit, when the kernel reported it.
    pub ttl: Option<u8>,
}

/// Receives one datagram with its TTL (IP_TTL / IPV6_HOPLIMIT control message).
pub async fn recv(sock: &UdpSocket, buf: &mut [u8]) -> io::Result<Datagram> {
    sock.async_io(Interest::READABLE, || recvmsg(sock.as_raw_fd(), buf))
        .await
}

fn recvmsg(fd: RawFd, buf: &mut [u8]) -> io::Result<Datagram> {
    // SAFETY: all-zero is a valid sockaddr_storage and msghdr.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut cbuf = [0u64; 16];
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut addr as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = size_of_val(&cbuf) as _;
    // SAFETY: msg points to buffers that outlive the call, with their lengths.
    let n = unsafe { libc::recvmsg(fd, &mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut ttl = None;
    // SAFETY: the kernel filled msg_control up to msg_controllen; CMSG_* stay inside it.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let h = &*c;
            if (h.cmsg_level == libc::IPPROTO_IP && h.cmsg_type == libc::IP_TTL)
                || (h.cmsg_level == libc::IPPROTO_IPV6 && h.cmsg_type == libc::IPV6_HOPLIMIT)
            {
                let v = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::c_int);
                ttl = u8::try_from(v).ok();
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    let from = match i32::from(addr.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let a =
                unsafe { *(&addr as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            ))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let a =
                unsafe { *(&addr as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            ))
        }
        f => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("datagram from address family {f}"),
            ));
        }
    };
    Ok(Datagram {
        len: n as usize,
        from,
        ttl,
    })
}
