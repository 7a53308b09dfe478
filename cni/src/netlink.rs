//! The netlink edge: veth pairs, addresses, routes and neighbours over rtnetlink.
//! Everything here is I/O; the decisions live in `plugin`.

use std::fs::File;
use std::net::IpAddr;
use std::os::fd::AsRawFd;

use futures_util::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags};
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::neighbour::NeighbourState;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteScope,
};
use rtnetlink::{Handle, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::error::{CniError, Result};

/// A netlink connection bound to one network namespace, with its own small runtime.
#[derive(Debug)]
pub struct Netlink {
    rt: tokio::runtime::Runtime,
    h: Handle,
}

/// What we need to know about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Vec<u8>,
    pub up: bool,
    pub veth: bool,
}

/// A route as read back from the kernel (main table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: IpNet,
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
}

pub fn mac_string(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn nl_err(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> CniError {
    let what = what.into();
    move |e| CniError::internal(what, e)
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

fn route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some((*v4).into()),
        RouteAddress::Inet6(v6) => Some((*v6).into()),
        _ => None,
    }
}

fn link_of(m: &LinkMessage) -> Link {
    let mut l = Link {
        index: m.header.index,
        name: String::new(),
        mac: Vec::new(),
        up: m.header.flags.contains(LinkFlags::Up),
        veth: false,
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => l.name = n.clone(),
            LinkAttribute::Address(mac) => l.mac = mac.clone(),
            LinkAttribute::LinkInfo(infos) => {
                l.veth = infos
                    .iter()
                    .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth)));
            }
            _ => {}
        }
    }
    l
}

impl Netlink {
    /// A connection in the current thread's namespace.
    pub fn new() -> Result<Netlink> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|e| CniError::internal("starting the netlink runtime", e))?;
        let h = {
            let _enter = rt.enter();
            let (conn, h, _) = rtnetlink::new_connection()
                .map_err(|e| CniError::internal("opening a netlink socket", e))?;
            rt.spawn(conn);
            h
        };
        Ok(Netlink { rt, h })
    }

    /// A connection into the namespace `ns` (the socket is made on a thread inside it).
    pub fn new_in(ns: &File) -> Result<Netlink> {
        crate::netns::run_in(ns, Netlink::new)
            .map_err(|e| CniError::internal("entering the pod network namespace", e))?
    }

    /// The link called `name`, if there is one.
    pub fn link(&self, name: &str) -> Result<Option<Link>> {
        self.rt.block_on(async {
            let mut s = self.h.link().get().match_name(name.to_string()).execute();
            match s.try_next().await {
                Ok(m) => Ok(m.map(|m| link_of(&m))),
                Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
                Err(e) => Err(nl_err(format!("looking up link {name}"))(e)),
            }
        })
    }

    /// Creates the veth pair `host_name` (here) / `pod_name` (created directly in `pod_ns`,
    /// so it never clashes with a host interface of that name).
    pub fn add_veth(
        &self,
        host_name: &str,
        pod_name: &str,
        pod_ns: &File,
        mtu: Option<u32>,
    ) -> Result<()> {
        let mut peer = LinkUnspec::new_with_name(pod_name).setns_by_fd(pod_ns.as_raw_fd());
        let mut b = LinkVeth::new(host_name, pod_name);
        if let Some(mtu) = mtu {
            peer = peer.mtu(mtu);
            b = b.mtu(mtu);
        }
        let msg = b
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())))
            .build();
        self.rt
            .block_on(self.h.link().add(msg).execute())
            .map_err(nl_err(format!("creating veth {host_name}/{pod_name}")))
    }

    pub fn set_up(&self, index: u32) -> Result<()> {
        let msg = LinkUnspec::new_with_index(index).up().build();
        self.rt
            .block_on(self.h.link().change(msg).execute())
            .map_err(nl_err(format!("setting link {index} up")))
    }

    /// Deletes a link; one already gone is fine.
    pub fn del_link(&self, index: u32) -> Result<()> {
        match self.rt.block_on(self.h.link().del(index).execute()) {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(()),
            Err(e) => Err(nl_err(format!("deleting link {index}"))(e)),
        }
    }

    /// Adds (or replaces) `addr` on `index`; IPv6 without DAD so it is usable at once.
    pub fn add_addr(&self, index: u32, addr: IpNet) -> Result<()> {
        let mut req = self
            .h
            .address()
            .add(index, addr.addr(), addr.prefix_len())
            .replace();
        if addr.addr().is_ipv6() {
            req.message_mut()
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        self.rt
            .block_on(req.execute())
            .map_err(nl_err(format!("adding address {addr}")))
    }

    /// The addresses on `index`.
    pub fn addrs(&self, index: u32) -> Result<Vec<IpNet>> {
        self.rt.block_on(async {
            let mut s = self
                .h
                .address()
                .get()
                .set_link_index_filter(index)
                .execute();
            let mut out = Vec::new();
            while let Some(m) = s.try_next().await.map_err(nl_err("listing addresses"))? {
                for a in &m.attributes {
                    if let AddressAttribute::Address(ip) = a
                        && let Ok(n) = IpNet::new(*ip, m.header.prefix_len)
                    {
                        out.push(n);
                    }
                }
            }
            Ok(out)
        })
    }

    /// A route to `dst` out of `index`: on-link (scope link) or via `gateway`. Replaces.
    pub fn add_route(&self, dst: IpNet, index: u32, gateway: Option<IpAddr>) -> Result<()> {
        let what = || format!("adding route {dst}");
        let mut b = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(dst.addr(), dst.prefix_len())
            .map_err(|e| CniError::internal(what(), e))?
            .output_interface(index);
        b = match gateway {
            Some(gw) => b.gateway(gw).map_err(|e| CniError::internal(what(), e))?,
            None => b.scope(RouteScope::Link),
        };
        self.rt
            .block_on(self.h.route().add(b.build()).replace().execute())
            .map_err(nl_err(what()))
    }

    /// Deletes the route to `dst` out of `index`; a missing one is fine.
    pub fn del_route(&self, dst: IpNet, index: u32) -> Result<()> {
        let msg = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(dst.addr(), dst.prefix_len())
            .map_err(|e| CniError::internal(format!("deleting route {dst}"), e))?
            .output_interface(index)
            .build();
        match self.rt.block_on(self.h.route().del(msg).execute()) {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::ESRCH) => Ok(()),
            Err(e) => Err(nl_err(format!("deleting route {dst}"))(e)),
        }
    }

    /// The main table's routes of both families.
    pub fn routes(&self) -> Result<Vec<Route>> {
        self.rt.block_on(async {
            let mut out = Vec::new();
            for family in [AddressFamily::Inet, AddressFamily::Inet6] {
                let mut req: RouteMessage = RouteMessageBuilder::<IpAddr>::new().build();
                req.header.address_family = family;
                let mut s = self.h.route().get(req).execute();
                while let Some(m) = s.try_next().await.map_err(nl_err("listing routes"))? {
                    if m.header.table != RouteHeader::RT_TABLE_MAIN {
                        continue;
                    }
                    let mut dst = None;
                    let mut gateway = None;
                    let mut oif = None;
                    for a in &m.attributes {
                        match a {
                            RouteAttribute::Destination(d) => dst = route_addr(d),
                            RouteAttribute::Gateway(g) => gateway = route_addr(g),
                            RouteAttribute::Oif(i) => oif = Some(*i),
                            _ => {}
                        }
                    }
                    let dst = dst.unwrap_or(match family {
                        AddressFamily::Inet => IpAddr::from([0u8; 4]),
                        _ => IpAddr::from([0u16; 8]),
                    });
                    if let Ok(dst) = IpNet::new(dst, m.header.destination_prefix_length) {
                        out.push(Route { dst, gateway, oif });
                    }
                }
            }
            Ok(out)
        })
    }

    /// A permanent neighbour entry `ip` → `mac` on `index`.
    pub fn add_neigh(&self, index: u32, ip: IpAddr, mac: &[u8]) -> Result<()> {
        let req = self
            .h
            .neighbours()
            .add(index, ip)
            .link_layer_address(mac)
            .state(NeighbourState::Permanent)
            .replace();
        self.rt
            .block_on(req.execute())
            .map_err(nl_err(format!("adding neighbour {ip}")))
    }
}
