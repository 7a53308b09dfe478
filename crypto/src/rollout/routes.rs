//! Tunnel routes: which remote PodCIDRs go through the WireGuard device.
//!
//! ironmesh never edits the main table (bgpd, the CNI or an operator own it). It keeps its own
//! table (default 202) with one `PodCIDR dev <wg> proto 201 scope link` route per tunnelled
//! peer, and one rule per family, `pref 100 lookup 202`, ahead of `main`. A PodCIDR missing
//! from table 202 falls through to `main` and leaves in clear; adding or deleting one route
//! moves one peer's traffic in or out of the tunnel at once (`ip route replace` semantics).
//! Inspect with `ip rule` and `ip route show table 202`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::netlink::{
    self, NETLINK_ROUTE, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE, Netlink, NetlinkError,
};

/// Routing protocol id of ironmesh's routes (bgpd uses the same).
pub const RT_PROTO_IRONMESH: u8 = 201;
pub const DEFAULT_TABLE: u32 = 202;
pub const DEFAULT_RULE_PRIORITY: u32 = 100;

const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTM_GETROUTE: u16 = 26;
const RTM_NEWRULE: u16 = 32;
const RTM_DELRULE: u16 = 33;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_TABLE: u16 = 15;
const FRA_PRIORITY: u16 = 6;
const FRA_TABLE: u16 = 15;
const IFLA_IFNAME: u16 = 3;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const RT_SCOPE_LINK: u8 = 253;
const RTN_UNICAST: u8 = 1;
const FR_ACT_TO_TBL: u8 = 1;
const EEXIST: i32 = 17;
const ENOENT: i32 = 2;
const ESRCH: i32 = 3;
const EAFNOSUPPORT: i32 = 97;

/// Why a tunnel route or rule could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error(
        "tunnel routes: interface {ifname} not found ({source}); is the WireGuard device up in this network namespace?"
    )]
    NoDevice {
        ifname: String,
        source: NetlinkError,
    },
    #[error("tunnel routes: {op} {what} in table {table}: {source}")]
    Netlink {
        op: &'static str,
        what: String,
        table: u32,
        source: NetlinkError,
    },
}

/// Reads and writes the tunnel routes of one device.
pub trait TunnelRoutes: std::fmt::Debug + Send + Sync {
    /// The routes in ironmesh's table: prefix → whether it points at the tunnel device.
    fn current(&self) -> Result<BTreeMap<IpNet, bool>, RouteError>;
    /// Adds or replaces the route of `prefix` through the device.
    fn put(&self, prefix: IpNet) -> Result<(), RouteError>;
    fn delete(&self, prefix: IpNet) -> Result<(), RouteError>;
    /// Adds (`on`) or removes the rules that send lookups to ironmesh's table; idempotent.
    fn rules(&self, on: bool) -> Result<(), RouteError>;
}

/// [`TunnelRoutes`] over rtnetlink, in the calling thread's network namespace.
#[derive(Debug, Clone)]
pub struct NetlinkRoutes {
    ifname: String,
    table: u32,
    priority: u32,
}

impl NetlinkRoutes {
    pub fn new(ifname: &str) -> Self {
        Self {
            ifname: ifname.into(),
            table: DEFAULT_TABLE,
            priority: DEFAULT_RULE_PRIORITY,
        }
    }

    pub fn with_table(mut self, table: u32, rule_priority: u32) -> Self {
        self.table = table;
        self.priority = rule_priority;
        self
    }

    pub fn table(&self) -> u32 {
        self.table
    }

    fn err(&self, op: &'static str, what: String) -> impl FnOnce(NetlinkError) -> RouteError {
        let table = self.table;
        move |source| RouteError::Netlink {
            op,
            what,
            table,
            source,
        }
    }

    fn nl(&self) -> Result<Netlink, RouteError> {
        Netlink::open(NETLINK_ROUTE).map_err(self.err("open", "netlink socket".into()))
    }

    fn ifindex(&self, nl: &Netlink) -> Result<u32, RouteError> {
        let mut m = netlink::Msg::new(RTM_GETLINK, 0);
        m.push(&[0u8; 16]);
        let mut name = self.ifname.as_bytes().to_vec();
        name.push(0);
        m.attr(IFLA_IFNAME, &name);
        let no_dev = |source| RouteError::NoDevice {
            ifname: self.ifname.clone(),
            source,
        };
        let replies = nl.request(&m).map_err(no_dev)?;
        replies
            .iter()
            .find(|r| r.msg_type == RTM_NEWLINK)
            .and_then(|r| netlink::u32_at(&r.payload, 4))
            .ok_or_else(|| no_dev(NetlinkError::Malformed("no RTM_NEWLINK answer")))
    }

    fn route_msg(&self, kind: u16, flags: u16, prefix: IpNet, oif: Option<u32>) -> netlink::Msg {
        let (family, addr) = family_bytes(prefix.network());
        let mut m = netlink::Msg::new(kind, flags);
        let table8 = u8::try_from(self.table).unwrap_or(0);
        m.push(&[
            family,
            prefix.prefix_len(),
            0,
            0,
            table8,
            RT_PROTO_IRONMESH,
            RT_SCOPE_LINK,
            RTN_UNICAST,
            0,
            0,
            0,
            0,
        ]);
        m.attr(RTA_DST, &addr).attr_u32(RTA_TABLE, self.table);
        if let Some(oif) = oif {
            m.attr_u32(RTA_OIF, oif);
        }
        m
    }
}

fn family_bytes(ip: IpAddr) -> (u8, Vec<u8>) {
    match ip {
        IpAddr::V4(a) => (AF_INET, a.octets().to_vec()),
        IpAddr::V6(a) => (AF_INET6, a.octets().to_vec()),
    }
}

impl TunnelRoutes for NetlinkRoutes {
    fn current(&self) -> Result<BTreeMap<IpNet, bool>, RouteError> {
        let nl = self.nl()?;
        let oif = self.ifindex(&nl).ok();
        // Only our table, filtered by the kernel where it can (a node may hold a full BGP
        // table in `main`); older kernels ignore the filter and we filter below.
        let _ = nl.strict_check();
        let mut m = netlink::Msg::new(RTM_GETROUTE, NLM_F_DUMP);
        let table8 = u8::try_from(self.table).unwrap_or(0);
        m.push(&[0, 0, 0, 0, table8, 0, 0, 0, 0, 0, 0, 0])
            .attr_u32(RTA_TABLE, self.table);
        let replies = nl.dump(&m).map_err(self.err("dump", "routes".into()))?;
        let mut out = BTreeMap::new();
        for r in replies.iter().filter(|r| r.msg_type == RTM_NEWROUTE) {
            let p = &r.payload;
            if p.len() < 12 {
                continue;
            }
            let (family, dst_len) = (p[0], p[1]);
            let mut table = u32::from(p[4]);
            let mut dst = None;
            let mut route_oif = None;
            for (kind, v) in netlink::attrs(&p[12..]) {
                match kind {
                    RTA_TABLE => table = netlink::u32_at(v, 0).unwrap_or(table),
                    RTA_OIF => route_oif = netlink::u32_at(v, 0),
                    RTA_DST => dst = Some(v.to_vec()),
                    _ => {}
                }
            }
            if table != self.table {
                continue;
            }
            let ip: Option<IpAddr> = match (family, dst.as_deref()) {
                (AF_INET, Some(b)) => <[u8; 4]>::try_from(b).ok().map(IpAddr::from),
                (AF_INET6, Some(b)) => <[u8; 16]>::try_from(b).ok().map(IpAddr::from),
                (AF_INET, None) => Some(IpAddr::from([0u8; 4])),
                (AF_INET6, None) => Some(IpAddr::from([0u8; 16])),
                _ => None,
            };
            if let Some(net) = ip.and_then(|ip| IpNet::new(ip, dst_len).ok()) {
                out.insert(net, oif.is_some() && route_oif == oif);
            }
        }
        Ok(out)
    }

    fn put(&self, prefix: IpNet) -> Result<(), RouteError> {
        let nl = self.nl()?;
        let oif = self.ifindex(&nl)?;
        let m = self.route_msg(
            RTM_NEWROUTE,
            NLM_F_CREATE | NLM_F_REPLACE,
            prefix,
            Some(oif),
        );
        nl.request(&m)
            .map(drop)
            .map_err(self.err("add route", prefix.to_string()))
    }

    fn delete(&self, prefix: IpNet) -> Result<(), RouteError> {
        let nl = self.nl()?;
        let m = self.route_msg(RTM_DELROUTE, 0, prefix, None);
        match nl.request(&m) {
            Err(e) if matches!(e.errno(), Some(ENOENT | ESRCH)) => Ok(()),
            r => r
                .map(drop)
                .map_err(self.err("delete route", prefix.to_string())),
        }
    }

    fn rules(&self, on: bool) -> Result<(), RouteError> {
        let nl = self.nl()?;
        for family in [AF_INET, AF_INET6] {
            let (kind, flags) = if on {
                (RTM_NEWRULE, NLM_F_CREATE | NLM_F_EXCL)
            } else {
                (RTM_DELRULE, 0)
            };
            let mut m = netlink::Msg::new(kind, flags);
            let table8 = u8::try_from(self.table).unwrap_or(0);
            m.push(&[family, 0, 0, 0, table8, 0, 0, FR_ACT_TO_TBL, 0, 0, 0, 0]);
            m.attr_u32(FRA_PRIORITY, self.priority)
                .attr_u32(FRA_TABLE, self.table);
            let what = format!("rule pref {} (family {family})", self.priority);
            match nl.request(&m) {
                Err(e) if on && e.errno() == Some(EEXIST) => {}
                // IPv6 disabled on this host: no IPv6 pod traffic to steer either.
                Err(e) if family == AF_INET6 && e.errno() == Some(EAFNOSUPPORT) => {}
                Err(e) if !on && matches!(e.errno(), Some(ENOENT | ESRCH)) => {}
                r => r
                    .map(drop)
                    .map_err(self.err(if on { "add" } else { "delete" }, what))?,
            }
        }
        Ok(())
    }
}
