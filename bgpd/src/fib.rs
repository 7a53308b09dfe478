//! Learned best paths into a kernel routing table over rtnetlink (native routing).
//!
//! Our routes carry our protocol id and metric, so they are recognisable and never replace an
//! operator's route (the kernel keys routes by table, prefix and metric). At start the task
//! reads the routes a previous run left: they keep forwarding (graceful restart, RFC 4724
//! §4.1) until the RIB has converged again, then the ones not re-learned are removed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use futures_util::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::route::{RouteAttribute, RouteMessage, RouteProtocol};
use rtnetlink::{Handle, RouteMessageBuilder, RouteNextHopBuilder};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::rib::FibChange;

/// Metric of our routes: an operator's route to the same prefix with the default metric wins.
pub const METRIC: u32 = 20;

#[derive(Debug, thiserror::Error)]
pub enum FibError {
    #[error("rtnetlink: {0}")]
    Netlink(#[from] rtnetlink::Error),
    #[error("cannot open a netlink socket: {0}")]
    Socket(#[from] std::io::Error),
    #[error("route {0}: {1}")]
    Route(IpNet, String),
}

/// Messages to the FIB task.
#[derive(Debug)]
pub enum FibMsg {
    Changes(Vec<FibChange>),
    /// Every peer is back and sent End-of-RIB: stale routes of a previous run can go.
    Converged,
}

#[derive(Clone, Debug)]
pub struct Fib {
    handle: Handle,
    table: u32,
    protocol: u8,
}

impl Fib {
    pub fn connect(table: u32, protocol: u8) -> Result<Fib, FibError> {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(conn);
        Ok(Fib {
            handle,
            table,
            protocol,
        })
    }

    fn ours(&self, m: &RouteMessage) -> bool {
        let table = m
            .attributes
            .iter()
            .find_map(|a| match a {
                RouteAttribute::Table(t) => Some(*t),
                _ => None,
            })
            .unwrap_or(u32::from(m.header.table));
        table == self.table && u8::from(m.header.protocol) == self.protocol
    }

    /// Our routes in our table now.
    pub async fn dump(&self) -> Result<BTreeSet<IpNet>, FibError> {
        let mut out = BTreeSet::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut req = RouteMessageBuilder::<IpAddr>::new().build();
            req.header.address_family = family;
            let mut s = self.handle.route().get(req).execute();
            while let Some(m) = s.try_next().await? {
                if !self.ours(&m) {
                    continue;
                }
                let len = m.header.destination_prefix_length;
                let dst = m.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Destination(d) => Some(d.clone()),
                    _ => None,
                });
                let ip: Option<IpAddr> = match dst {
                    Some(rtnetlink::packet_route::route::RouteAddress::Inet(v4)) => Some(v4.into()),
                    Some(rtnetlink::packet_route::route::RouteAddress::Inet6(v6)) => {
                        Some(v6.into())
                    }
                    None if family == AddressFamily::Inet => {
                        Some(std::net::Ipv4Addr::UNSPECIFIED.into())
                    }
                    None => Some(std::net::Ipv6Addr::UNSPECIFIED.into()),
                    _ => None,
                };
                if let Some(p) = ip.and_then(|ip| IpNet::new(ip, len).ok()) {
                    out.insert(p);
                }
            }
        }
        Ok(out)
    }

    fn base(&self, prefix: IpNet) -> Result<RouteMessageBuilder<IpAddr>, FibError> {
        Ok(RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(prefix.addr(), prefix.prefix_len())
            .map_err(|e| FibError::Route(prefix, e.to_string()))?
            .table_id(self.table)
            .protocol(RouteProtocol::from(self.protocol))
            .priority(METRIC))
    }

    /// Installs or replaces `prefix` via `next_hops` (ECMP when more than one).
    pub async fn install(&self, prefix: IpNet, next_hops: &[IpAddr]) -> Result<(), FibError> {
        let b = self.base(prefix)?;
        let msg = match next_hops {
            [one] => b.gateway(*one).map_err(route_err(prefix))?.build(),
            many => {
                let family = if prefix.addr().is_ipv4() {
                    AddressFamily::Inet
                } else {
                    AddressFamily::Inet6
                };
                let hops = many
                    .iter()
                    .map(|nh| RouteNextHopBuilder::new(family).via(*nh).map(|b| b.build()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(route_err(prefix))?;
                b.multipath(hops).build()
            }
        };
        self.handle.route().add(msg).replace().execute().await?;
        Ok(())
    }

    /// Removes our route to `prefix` (the protocol and metric make sure it is ours).
    pub async fn remove(&self, prefix: IpNet) -> Result<(), FibError> {
        let msg = self.base(prefix)?.build();
        match self.handle.route().del(msg).execute().await {
            Ok(()) => Ok(()),
            // Already gone (ESRCH): the goal is reached.
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ESRCH => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

fn route_err<E: std::fmt::Display>(prefix: IpNet) -> impl Fn(E) -> FibError {
    move |e| FibError::Route(prefix, e.to_string())
}

/// The FIB task: applies changes in order; removes a previous run's leftovers once converged
/// or after `stale_after`.
pub async fn run(fib: Fib, mut rx: mpsc::Receiver<FibMsg>, stale_after: Duration) {
    let mut stale = match fib.dump().await {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "cannot read the kernel table; previous routes are not reconciled");
            BTreeSet::new()
        }
    };
    if !stale.is_empty() {
        info!(
            count = stale.len(),
            "routes from a previous run kept until the RIB converges"
        );
    }
    let mut installed: BTreeMap<IpNet, Vec<IpAddr>> = BTreeMap::new();
    let deadline = tokio::time::sleep(stale_after);
    tokio::pin!(deadline);
    let mut swept = stale.is_empty();
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(FibMsg::Changes(changes)) => {
                    for c in changes {
                        stale.remove(&c.prefix);
                        let res = if c.next_hops.is_empty() {
                            installed.remove(&c.prefix);
                            fib.remove(c.prefix).await
                        } else {
                            installed.insert(c.prefix, c.next_hops.clone());
                            fib.install(c.prefix, &c.next_hops).await
                        };
                        if let Err(e) = res {
                            warn!(prefix = %c.prefix, error = %e, "kernel route not updated");
                        }
                    }
                }
                Some(FibMsg::Converged) if !swept => {
                    sweep(&fib, &mut stale).await;
                    swept = true;
                }
                Some(FibMsg::Converged) => {}
                None => return,
            },
            _ = &mut deadline, if !swept => {
                info!("restart time over: removing routes not re-learned");
                sweep(&fib, &mut stale).await;
                swept = true;
            }
        }
    }
}

async fn sweep(fib: &Fib, stale: &mut BTreeSet<IpNet>) {
    for p in std::mem::take(stale) {
        if let Err(e) = fib.remove(p).await {
            warn!(prefix = %p, error = %e, "stale kernel route not removed");
        }
    }
}
