//! Socket options BGP needs beyond socket2: TCP MD5 signatures (RFC 2385) and GTSM (RFC 5082).
//!
//! unsafe: `setsockopt(2)` with pointers to values we own, of the sizes we pass; the MD5 struct
//! mirrors the kernel's `struct tcp_md5sig` and its size is checked at compile time.
#![allow(unsafe_code)]

use std::io;
use std::mem::size_of;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, RawFd};

use socket2::SockAddr;

/// Longest key the kernel accepts (TCP_MD5SIG_MAXKEYLEN).
pub const MD5_MAX_KEY_LEN: usize = 80;

/// `struct tcp_md5sig` from linux/tcp.h.
#[repr(C)]
struct TcpMd5Sig {
    addr: libc::sockaddr_storage,
    flags: u8,
    prefixlen: u8,
    keylen: u16,
    ifindex: u32,
    key: [u8; MD5_MAX_KEY_LEN],
}

const _: () = assert!(size_of::<TcpMd5Sig>() == 216);

fn setsockopt<T>(fd: RawFd, level: i32, name: i32, value: &T) -> io::Result<()> {
    // SAFETY: `value` points to a live T of exactly the length passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets (or with an empty key, removes) the RFC 2385 key for segments to/from `peer`.
/// On a listening socket, call it once per peer that may connect.
pub fn set_md5_key(sock: &impl AsRawFd, peer: IpAddr, key: &[u8]) -> io::Result<()> {
    if key.len() > MD5_MAX_KEY_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "TCP MD5 key is {} bytes; at most {MD5_MAX_KEY_LEN}",
                key.len()
            ),
        ));
    }
    let sa = SockAddr::from(std::net::SocketAddr::new(peer, 0));
    // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
    let mut sig: TcpMd5Sig = unsafe { std::mem::zeroed() };
    // SAFETY: `sa` holds at most sizeof(sockaddr_storage) bytes of a valid sockaddr.
    unsafe {
        std::ptr::copy_nonoverlapping(
            sa.as_ptr().cast::<u8>(),
            (&mut sig.addr as *mut libc::sockaddr_storage).cast::<u8>(),
            sa.len() as usize,
        );
    }
    sig.keylen = key.len() as u16;
    sig.key[..key.len()].copy_from_slice(key);
    setsockopt(sock.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_MD5SIG, &sig)
}

/// GTSM (RFC 5082 §3): send with TTL 255 and accept only segments that arrive with a TTL of at
/// least `256 - hops` (hops = 1 for directly connected peers).
pub fn set_gtsm(sock: &impl AsRawFd, v6: bool, hops: u8) -> io::Result<()> {
    let min: libc::c_int = 256 - libc::c_int::from(hops.max(1));
    let ttl: libc::c_int = 255;
    let fd = sock.as_raw_fd();
    if v6 {
        setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, &ttl)?;
        setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_MINHOPCOUNT, &min)
    } else {
        setsockopt(fd, libc::IPPROTO_IP, libc::IP_TTL, &ttl)?;
        setsockopt(fd, libc::IPPROTO_IP, libc::IP_MINTTL, &min)
    }
}

/// The index of interface `name` (if_nametoindex(3)).
pub fn ifindex(name: &str) -> io::Result<u32> {
    let c = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name with NUL"))?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no interface {name:?}"),
        ))
    } else {
        Ok(i)
    }
}

/// `recv_from` into an initialised buffer.
pub fn recv_from(sock: &socket2::Socket, buf: &mut [u8]) -> io::Result<(usize, SockAddr)> {
    // SAFETY: u8 and MaybeUninit<u8> have the same layout, and recv_from only writes
    // initialised bytes into the buffer, so it stays initialised.
    let uninit = unsafe { &mut *(buf as *mut [u8] as *mut [std::mem::MaybeUninit<u8>]) };
    sock.recv_from(uninit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use socket2::{Domain, Protocol, Socket, Type};
    use std::net::{SocketAddr, TcpListener};
    use std::time::Duration;

    fn listener(key: &[u8]) -> TcpListener {
        let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
        set_md5_key(&s, "127.0.0.1".parse().unwrap(), key).unwrap();
        s.bind(&SockAddr::from(
            "127.0.0.1:0".parse::<SocketAddr>().unwrap(),
        ))
        .unwrap();
        s.listen(4).unwrap();
        s.into()
    }

    fn connect(to: SocketAddr, key: Option<&[u8]>) -> io::Result<()> {
        let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
        if let Some(k) = key {
            set_md5_key(&s, to.ip(), k)?;
        }
        s.connect_timeout(&to.into(), Duration::from_millis(700))
    }

    #[test]
    fn md5_same_key_connects_other_key_or_none_does_not() {
        let l = listener(b"s3cret");
        let addr = l.local_addr().unwrap();
        connect(addr, Some(b"s3cret")).expect("matching key connects");
        // The kernel drops unsigned or wrongly signed SYNs: the connect times out.
        assert!(connect(addr, Some(b"wrong")).is_err());
        assert!(connect(addr, None).is_err());
    }

    #[test]
    fn md5_key_too_long_is_refused() {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        let e = set_md5_key(&s, "127.0.0.1".parse().unwrap(), &[b'k'; 81]).unwrap_err();
        assert!(e.to_string().contains("at most 80"), "{e}");
    }

    #[test]
    fn gtsm_sets_ttl_255_and_min_ttl() {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        set_gtsm(&s, false, 1).unwrap();
        assert_eq!(s.ttl_v4().unwrap(), 255);
        let s6 = Socket::new(Domain::IPV6, Type::STREAM, None).unwrap();
        set_gtsm(&s6, true, 2).unwrap();
        assert_eq!(s6.unicast_hops_v6().unwrap(), 255);
    }
}
