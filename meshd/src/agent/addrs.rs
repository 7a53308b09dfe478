//! The node's addresses when the config names none: the first global (not loopback, not
//! link-local) IPv4 and IPv6 address of an interface that is up, in the kernel's order.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Every address of every interface that is up (getifaddrs(3), in this network namespace).
#[allow(unsafe_code)] // getifaddrs has no safe wrapper in libc; the list is freed below.
fn interface_addresses() -> std::io::Result<Vec<IpAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we own until freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        let up = ifa.ifa_flags & libc::IFF_UP as libc::c_uint != 0;
        if up && !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points to a sockaddr whose family says its real type.
            let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
            if family == libc::AF_INET {
                // SAFETY: AF_INET: the sockaddr is a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    sin.sin_addr.s_addr,
                ))));
            } else if family == libc::AF_INET6 {
                // SAFETY: AF_INET6: the sockaddr is a sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                out.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// Usable as a node address: global scope.
pub fn is_global(a: &IpAddr) -> bool {
    match a {
        IpAddr::V4(v) => !(v.is_loopback() || v.is_link_local() || v.is_unspecified()),
        IpAddr::V6(v) => {
            !(v.is_loopback()
                || v.is_unspecified()
                || v.is_unicast_link_local()
                || v.is_multicast())
        }
    }
}

/// The first global IPv4 and IPv6 addresses of the interfaces that are up.
pub fn first_global(addrs: &[IpAddr]) -> (Option<Ipv4Addr>, Option<Ipv6Addr>) {
    let v4 = addrs.iter().find_map(|a| match a {
        IpAddr::V4(v) if is_global(a) => Some(*v),
        _ => None,
    });
    let v6 = addrs.iter().find_map(|a| match a {
        IpAddr::V6(v) if is_global(a) => Some(*v),
        _ => None,
    });
    (v4, v6)
}

/// This host's first global addresses (none when the interfaces cannot be read).
pub fn discover() -> (Option<Ipv4Addr>, Option<Ipv6Addr>) {
    match interface_addresses() {
        Ok(a) => first_global(&a),
        Err(e) => {
            tracing::warn!(error = %e, "cannot list interface addresses; set mesh.node_ipv4/node_ipv6");
            (None, None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_loopback_and_link_local() {
        let addrs: Vec<IpAddr> = [
            "127.0.0.1",
            "::1",
            "fe80::1",
            "169.254.1.1",
            "192.0.2.7",
            "2001:db8::7",
            "192.0.2.8",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        assert_eq!(
            first_global(&addrs),
            (
                Some("192.0.2.7".parse().unwrap()),
                Some("2001:db8::7".parse().unwrap())
            )
        );
        assert_eq!(first_global(&addrs[..4]), (None, None));
    }

    #[test]
    fn lists_loopback_of_this_host() {
        // Every namespace has lo; only its address may be missing when lo is down.
        assert!(interface_addresses().is_ok());
    }
}
