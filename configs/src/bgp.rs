//! `[bgp]`, `[[bgp.peers]]` and `[[bgp.adverts]]`.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use common::Asn;
use ipnet::IpNet;

use crate::error::Errors;
use crate::policy::BgpPolicy;
use crate::raw::{RawAdvert, RawAsn, RawBgp, RawBmp, RawNames, RawPeer, RawPool};
use crate::secret::Secret;
use common::{Community, LargeCommunity};

pub const BGP_PORT: u16 = 179;
pub const DEFAULT_HOLD_TIME: u16 = 90;
/// Linux TCP_MD5SIG_MAXKEYLEN.
pub const MD5_MAX_LEN: usize = 80;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bgp {
    pub local_asn: Asn,
    pub router_id: Ipv4Addr,
    /// `None` when `listen_port = 0`: only outgoing sessions.
    pub listen: Option<SocketAddr>,
    pub peers: Vec<Peer>,
    pub adverts: Vec<Advert>,
    /// Install learned best paths into the kernel (native routing); `None`: don't.
    pub fib: Option<Fib>,
    /// VIP pools; adverts name their pool.
    pub pools: Vec<Pool>,
    /// `[[bgp.policies]]`, referenced by peers.
    pub policies: Vec<BgpPolicy>,
    /// `[bgp.bmp]`: BMP (RFC 7854) monitoring stations to export to.
    pub bmp_collectors: Vec<SocketAddr>,
    /// Opt-in for announcing the default route, unspecified, loopback, multicast, link-local
    /// or broadcast prefixes (bgpd refuses them otherwise, from config and API alike).
    pub allow_special_prefixes: bool,
}

/// `[[bgp.pools]]`: a LoadBalancer VIP pool. With `aggregate`, its VIPs are announced as the
/// pool's prefix (while at least one is present) instead of one route each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub name: String,
    pub prefix: IpNet,
    pub aggregate: bool,
    pub communities: Vec<Community>,
}

/// `[bgp.fib]`: where learned routes go in the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fib {
    /// Routing table id (254 = main).
    pub table: u32,
    /// rtnetlink protocol id marking our routes (iproute2 `proto`), never 0-4 (kernel's own).
    pub protocol: u8,
}

pub const DEFAULT_FIB_TABLE: u32 = 254;
/// In neither iproute2's nor FRR's rt_protos list (FRR takes 186-197 and 99), so no other
/// routing daemon uses it by default.
pub const DEFAULT_FIB_PROTOCOL: u8 = 201;

/// Where the peer is: a numbered address, or an interface (unnumbered,
/// the peer found by IPv6 link-local discovery, RFC 5549 next hops).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PeerTarget {
    Address(IpAddr),
    Interface(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerAsn {
    Fixed(Asn),
    /// Accept whatever ASN the peer's OPEN carries.
    Any,
}

impl fmt::Display for PeerAsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerAsn::Fixed(a) => a.fmt(f),
            PeerAsn::Any => f.write_str("any"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    Ipv4Unicast,
    Ipv6Unicast,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Ipv4Unicast => "ipv4-unicast",
            Family::Ipv6Unicast => "ipv6-unicast",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    pub target: PeerTarget,
    pub peer_asn: PeerAsn,
    pub local_address: Option<IpAddr>,
    pub port: u16,
    pub md5_password: Option<Secret>,
    /// GTSM (RFC 5082): expect TTL 255 from the peer.
    pub ttl_security: bool,
    pub multihop_ttl: Option<u8>,
    /// Seconds; 0 disables keepalives and the hold timer (RFC 4271 §4.2).
    pub hold_time: u16,
    pub keepalive: u16,
    pub passive: bool,
    pub families: Vec<Family>,
    /// Policy names applied in order (a chain); empty: none configured.
    pub import_policy: Vec<String>,
    pub export_policy: Vec<String>,
    /// RFC 8212: an eBGP session without policy accepts and sends nothing.
    pub ebgp_requires_policy: bool,
    pub next_hop_self: bool,
    /// RFC 4271 §6.3 (a MAY, on by default as in FRR): an eBGP peer's AS_PATH must start with
    /// its AS; routes whose path does not are ignored. Off for route servers, which do not
    /// prepend their AS.
    pub enforce_first_as: bool,
    /// Limit on prefixes accepted from this peer.
    pub max_prefixes: Option<MaxPrefixes>,
    /// BFD (RFC 5880; single hop RFC 5881, or multihop RFC 5883 with `multihop_ttl`) to the
    /// peer: a BFD down takes the session down.
    pub bfd: Option<Bfd>,
    /// Restart time we advertise (RFC 4724 §3): how long the peer keeps our routes while
    /// bgpd restarts. Seconds.
    pub graceful_restart_time: u16,
    /// RFC 8538: send the N bit (default). With it exchanged, a NOTIFICATION other than Hard
    /// Reset (a hold-timer expiry included) keeps the peer's routes for its restart time;
    /// `false` makes every NOTIFICATION remove them at once.
    pub graceful_notification: bool,
    /// Long-lived graceful restart (RFC 9494): after the restart time, routes are kept this
    /// much longer as LLGR_STALE (least preferred). Both ways: we advertise it and, when the
    /// peer does too, keep its routes so. Seconds; `None` disables LLGR.
    pub long_lived_stale_time: Option<u32>,
}

/// Our advertised restart time unless configured (RFC 4724 §3).
pub const DEFAULT_GRACEFUL_RESTART_TIME: u16 = 120;

/// BFD timers of a peer (RFC 5880 §6.8.2-6.8.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bfd {
    /// Desired Min TX Interval, milliseconds.
    pub min_tx_ms: u32,
    /// Required Min RX Interval, milliseconds.
    pub min_rx_ms: u32,
    /// Detect Mult.
    pub multiplier: u8,
    /// Multihop only (RFC 5883 §5): drop packets arriving with a lower TTL; `None`: any.
    pub min_ttl: Option<u8>,
}

/// FRR's defaults: 300 ms × 3.
pub const DEFAULT_BFD_INTERVAL_MS: u32 = 300;
pub const DEFAULT_BFD_MULTIPLIER: u8 = 3;

/// What to do when a peer sends more prefixes than allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxPrefixAction {
    /// Log and report, keep everything.
    Warn,
    /// Keep the session, ignore prefixes beyond the limit.
    Drop,
    /// Cease / Maximum Number of Prefixes Reached (RFC 4486), restart after `restart`.
    Teardown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxPrefixes {
    pub limit: u64,
    pub action: MaxPrefixAction,
    /// Seconds before a torn-down session may come back.
    pub restart: u64,
}

impl Peer {
    /// True unless the peer's ASN is known to equal ours.
    pub fn may_be_ebgp(&self, local: Asn) -> bool {
        self.peer_asn != PeerAsn::Fixed(local)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    pub prefix: IpNet,
    pub communities: Vec<Community>,
    pub large_communities: Vec<LargeCommunity>,
    pub local_pref: Option<u32>,
    /// The VIP pool it belongs to (`[[bgp.pools]]`).
    pub pool: Option<String>,
}

pub(crate) fn validate(raw: RawBgp, errs: &mut Errors) -> Option<Bgp> {
    let local_asn = local_asn(&raw.local_asn, errs);
    let listen_ip = ip(
        errs,
        "bgp.listen_address",
        raw.listen_address.as_deref().unwrap_or("::"),
    );
    let listen_port = match raw.listen_port {
        Some(p) => errs.int(
            "bgp.listen_port",
            p,
            0,
            65535,
            "a TCP port; 0 disables listening",
        ),
        None => Some(BGP_PORT),
    };
    let peers: Vec<_> = raw
        .peers
        .into_iter()
        .enumerate()
        .map(|(i, p)| peer(i, p, errs))
        .collect();
    check_unique_peers(&peers, errs);
    let adverts: Vec<_> = raw
        .adverts
        .into_iter()
        .enumerate()
        .map(|(i, a)| advert(i, a, errs))
        .collect();
    check_unique_adverts(&adverts, errs);
    let pools: Vec<_> = raw
        .pools
        .into_iter()
        .enumerate()
        .map(|(i, p)| pool(i, p, errs))
        .collect();
    check_pools(&pools, &adverts, errs);
    let bmp_collectors = bmp(errs, raw.bmp);
    let policies = crate::policy::policies(errs, raw.policies);
    if let Some(defined) = &policies {
        for (i, p) in peers.iter().enumerate() {
            let Some(p) = p else { continue };
            let at = |f: &str| format!("bgp.peers[{i}].{f}");
            crate::policy::check_references(errs, &at("import_policy"), &p.import_policy, defined);
            crate::policy::check_references(errs, &at("export_policy"), &p.export_policy, defined);
        }
    }

    let router_id = match raw.router_id {
        Some(s) => match s.parse::<Ipv4Addr>() {
            Ok(id) if id.is_unspecified() => {
                errs.push(
                    "bgp.router_id",
                    "0.0.0.0 is not a valid router ID; use a non-zero IPv4 address",
                );
                None
            }
            Ok(id) => Some(id),
            Err(_) => {
                errs.push(
                    "bgp.router_id",
                    format!("{s:?} is not an IPv4 address; write it like \"192.0.2.1\""),
                );
                None
            }
        },
        None => derive_router_id(listen_ip, &peers, errs),
    };

    let fib = raw.fib.map(|f| {
        let table = match f.table {
            Some(t) => errs.int(
                "bgp.fib.table",
                t,
                1,
                i64::from(u32::MAX),
                "a routing table id (254 is main); 0 is not a table",
            ),
            None => Some(DEFAULT_FIB_TABLE),
        };
        let protocol = match f.protocol {
            Some(p) => errs.int(
                "bgp.fib.protocol",
                p,
                5,
                255,
                "an rtnetlink protocol id; 0-4 belong to the kernel",
            ),
            None => Some(DEFAULT_FIB_PROTOCOL),
        };
        table
            .zip(protocol)
            .map(|(table, protocol)| Fib { table, protocol })
    });
    let fib = match fib {
        Some(None) => return None,
        Some(Some(f)) => Some(f),
        None => None,
    };
    let peers = peers.into_iter().collect::<Option<Vec<_>>>();
    let adverts = adverts.into_iter().collect::<Option<Vec<_>>>();
    let pools = pools.into_iter().collect::<Option<Vec<_>>>();
    let (listen_ip, listen_port) = (listen_ip?, listen_port?);
    Some(Bgp {
        local_asn: local_asn?,
        router_id: router_id?,
        listen: (listen_port != 0).then_some(SocketAddr::new(listen_ip, listen_port)),
        peers: peers?,
        adverts: adverts?,
        fib,
        pools: pools?,
        policies: policies?,
        bmp_collectors: bmp_collectors?,
        allow_special_prefixes: raw.allow_special_prefixes,
    })
}

fn local_asn(raw: &RawAsn, errs: &mut Errors) -> Option<Asn> {
    let path = "bgp.local_asn";
    match raw {
        RawAsn::Number(n) => match u32::try_from(*n) {
            Ok(23456) => {
                errs.push(
                    path,
                    "23456 is AS_TRANS (RFC 6793) and cannot be a local ASN; use your real ASN",
                );
                None
            }
            Ok(v) if v != 0 => Some(Asn(v)),
            _ => {
                errs.push(path, format!("{n} is not a valid ASN; use 1..=4294967295"));
                None
            }
        },
        RawAsn::Text(t) => {
            errs.push(
                path,
                format!("{t:?} is not a valid local ASN; write a number in 1..=4294967295"),
            );
            None
        }
    }
}

fn peer_asn(path: &str, raw: &RawAsn, errs: &mut Errors) -> Option<PeerAsn> {
    let bad = |what: String| format!("{what} is not a valid ASN; use 1..=4294967295 or \"any\"");
    let asn = match raw {
        RawAsn::Text(t) if t == "any" => return Some(PeerAsn::Any),
        RawAsn::Text(t) => t.parse::<Asn>().map_err(|_| bad(format!("{t:?}"))),
        RawAsn::Number(n) => u32::try_from(*n).map(Asn).map_err(|_| bad(n.to_string())),
    };
    match asn {
        Ok(Asn(0)) => errs.push(path, bad("0".into())),
        Ok(a) => return Some(PeerAsn::Fixed(a)),
        Err(e) => errs.push(path, e),
    }
    None
}

fn ip(errs: &mut Errors, path: &str, v: &str) -> Option<IpAddr> {
    v.parse::<IpAddr>()
        .map_err(|_| {
            errs.push(
                path,
                format!("{v:?} is not an IP address; write e.g. \"192.0.2.1\" or \"2001:db8::1\""),
            )
        })
        .ok()
}

fn peer(i: usize, raw: RawPeer, errs: &mut Errors) -> Option<Peer> {
    let at = |f: &str| format!("bgp.peers[{i}].{f}");
    let name = policy_name(errs, &at("name"), &raw.name, "peer name");
    let bfd = bfd(&at, &raw, errs);
    let target = match (&raw.address, &raw.interface) {
        (Some(a), None) => ip(errs, &at("address"), a).map(PeerTarget::Address),
        (None, Some(ifname)) => {
            interface(errs, &at("interface"), ifname).map(PeerTarget::Interface)
        }
        (Some(_), Some(_)) => {
            errs.push(at("address"), "address and interface are both set; keep address for a numbered peer or interface for an unnumbered one");
            None
        }
        (None, None) => {
            errs.push(at("address"), "missing; set address = \"<peer IP>\" or interface = \"<ifname>\" for an unnumbered peer");
            None
        }
    };
    let peer_asn = peer_asn(&at("peer_asn"), &raw.peer_asn, errs);
    let local_address = raw
        .local_address
        .as_deref()
        .and_then(|a| ip(errs, &at("local_address"), a));
    if let (Some(PeerTarget::Address(remote)), Some(local)) = (&target, local_address)
        && remote.is_ipv4() != local.is_ipv4()
    {
        errs.push(at("local_address"), format!("{local} and address {remote} are of different IP families; use a local address of the same family"));
    }
    let port = match raw.port {
        Some(p) => errs.int(at("port"), p, 1, 65535, "a TCP port"),
        None => Some(BGP_PORT),
    };
    let md5_password = match raw.md5_password {
        Some(p) if p.is_empty() || p.len() > MD5_MAX_LEN => {
            errs.push(
                at("md5_password"),
                format!("must be 1..={MD5_MAX_LEN} bytes long (the kernel's TCP MD5 key limit)"),
            );
            None
        }
        p => Some(p.map(Secret::new)),
    };
    let multihop_ttl = raw
        .multihop_ttl
        .and_then(|t| errs.int(at("multihop_ttl"), t, 1, 255, "hops"));
    if raw.ttl_security && raw.multihop_ttl.is_some() {
        errs.push(at("multihop_ttl"), "cannot be combined with ttl_security (GTSM expects TTL 255 from a direct neighbor); remove one of them");
    }
    let (hold_time, keepalive) = timers(i, raw.hold_time, raw.keepalive, errs);
    let families = families(errs, &at("families"), raw.families, &target);
    let import_policy = policy_names(errs, &at("import_policy"), raw.import_policy);
    let export_policy = policy_names(errs, &at("export_policy"), raw.export_policy);
    let max_prefixes = match raw.max_prefixes {
        None => {
            if raw.max_prefixes_action.is_some() || raw.max_prefixes_restart.is_some() {
                errs.push(
                    at("max_prefixes"),
                    "max_prefixes_action/max_prefixes_restart need max_prefixes = N",
                );
            }
            Some(None)
        }
        Some(n) => {
            let limit = errs.int(at("max_prefixes"), n, 1, i64::MAX, "a number of prefixes");
            let action = match raw.max_prefixes_action.as_deref().unwrap_or("teardown") {
                "warn" => Some(MaxPrefixAction::Warn),
                "drop" => Some(MaxPrefixAction::Drop),
                "teardown" => Some(MaxPrefixAction::Teardown),
                other => {
                    errs.push(
                        at("max_prefixes_action"),
                        format!(
                            "{other:?} is not an action; use \"warn\", \"drop\" or \"teardown\""
                        ),
                    );
                    None
                }
            };
            let restart = match raw.max_prefixes_restart {
                Some(r) => errs.int(at("max_prefixes_restart"), r, 1, 86_400, "seconds"),
                None => Some(60),
            };
            match (limit, action, restart) {
                (Some(limit), Some(action), Some(restart)) => Some(Some(MaxPrefixes {
                    limit,
                    action,
                    restart,
                })),
                _ => None,
            }
        }
    };
    // RFC 4724 §3: 12 bits; RFC 9494 §3: 24 bits.
    let graceful_restart_time = match raw.graceful_restart_time {
        Some(t) => errs.int(
            at("graceful_restart_time"),
            t,
            0,
            4095,
            "seconds (12 bits, RFC 4724)",
        ),
        None => Some(DEFAULT_GRACEFUL_RESTART_TIME),
    };
    let long_lived_stale_time = match raw.long_lived_stale_time {
        Some(t) => errs
            .int(
                at("long_lived_stale_time"),
                t,
                1,
                16_777_215,
                "seconds (24 bits, RFC 9494)",
            )
            .map(Some),
        None => Some(None),
    };
    Some(Peer {
        name: name?,
        target: target?,
        peer_asn: peer_asn?,
        local_address,
        port: port?,
        md5_password: md5_password?,
        ttl_security: raw.ttl_security,
        multihop_ttl,
        hold_time: hold_time?,
        keepalive: keepalive?,
        passive: raw.passive,
        families: families?,
        import_policy: import_policy?,
        export_policy: export_policy?,
        ebgp_requires_policy: raw.ebgp_requires_policy.unwrap_or(true),
        next_hop_self: raw.next_hop_self,
        enforce_first_as: raw.enforce_first_as.unwrap_or(true),
        max_prefixes: max_prefixes?,
        bfd: bfd?,
        graceful_restart_time: graceful_restart_time?,
        graceful_notification: raw.graceful_notification.unwrap_or(true),
        long_lived_stale_time: long_lived_stale_time?,
    })
}

/// `bfd = true` with optional timers; the timers alone are a mistake worth naming.
fn bfd(at: &dyn Fn(&str) -> String, raw: &RawPeer, errs: &mut Errors) -> Option<Option<Bfd>> {
    let fields = [
        ("bfd_min_tx_ms", raw.bfd_min_tx_ms),
        ("bfd_min_rx_ms", raw.bfd_min_rx_ms),
        ("bfd_multiplier", raw.bfd_multiplier),
        ("bfd_min_ttl", raw.bfd_min_ttl),
    ];
    if !raw.bfd {
        let mut ok = true;
        for (f, v) in fields {
            if v.is_some() {
                errs.push(at(f), "needs bfd = true (BFD is off for this peer)");
                ok = false;
            }
        }
        return ok.then_some(None);
    }
    let ms = |f: &str, v: Option<i64>, errs: &mut Errors| match v {
        Some(v) => errs.int(at(f), v, 10, 60_000, "milliseconds"),
        None => Some(DEFAULT_BFD_INTERVAL_MS),
    };
    let min_tx_ms = ms("bfd_min_tx_ms", raw.bfd_min_tx_ms, errs);
    let min_rx_ms = ms("bfd_min_rx_ms", raw.bfd_min_rx_ms, errs);
    let multiplier = match raw.bfd_multiplier {
        Some(m) => errs.int(
            at("bfd_multiplier"),
            m,
            1,
            255,
            "missed packets before down",
        ),
        None => Some(DEFAULT_BFD_MULTIPLIER),
    };
    let min_ttl = match raw.bfd_min_ttl {
        Some(_) if raw.multihop_ttl.is_none() => {
            errs.push(
                at("bfd_min_ttl"),
                "only applies to multihop BFD (set multihop_ttl); single-hop BFD always requires TTL 255",
            );
            None
        }
        Some(t) => errs.int(at("bfd_min_ttl"), t, 1, 255, "a TTL").map(Some),
        None => Some(None),
    };
    Some(Some(Bfd {
        min_tx_ms: min_tx_ms?,
        min_rx_ms: min_rx_ms?,
        multiplier: multiplier?,
        min_ttl: min_ttl?,
    }))
}

/// RFC 4271 §4.2: hold time 0 (no keepalives) or at least 3 seconds.
fn timers(
    i: usize,
    hold: Option<i64>,
    keepalive: Option<i64>,
    errs: &mut Errors,
) -> (Option<u16>, Option<u16>) {
    let at = |f: &str| format!("bgp.peers[{i}].{f}");
    let hold = hold.unwrap_or(DEFAULT_HOLD_TIME.into());
    let hold = if hold == 0 || (3..=65535).contains(&hold) {
        Some(hold as u16)
    } else {
        errs.push(
            at("hold_time"),
            format!(
                "{hold} is not allowed; use 0 (no keepalives) or 3..=65535 seconds (RFC 4271 §4.2)"
            ),
        );
        None
    };
    let Some(hold) = hold else {
        return (None, None);
    };
    let keepalive = match keepalive {
        None => Some(hold / 3),
        Some(0) if hold == 0 => Some(0),
        Some(k) if hold == 0 => {
            errs.push(
                at("keepalive"),
                format!("{k} must be 0 when hold_time is 0 (keepalives are off)"),
            );
            None
        }
        Some(k) if (1..i64::from(hold)).contains(&k) => Some(k as u16),
        Some(k) => {
            errs.push(
                at("keepalive"),
                format!("{k} must be in 1..{hold} (less than hold_time); the usual choice is hold_time / 3 = {}", hold / 3),
            );
            None
        }
    };
    (Some(hold), keepalive)
}

fn families(
    errs: &mut Errors,
    path: &str,
    raw: Option<Vec<String>>,
    target: &Option<PeerTarget>,
) -> Option<Vec<Family>> {
    let Some(raw) = raw else {
        return Some(match target {
            Some(PeerTarget::Address(IpAddr::V4(_))) => vec![Family::Ipv4Unicast],
            Some(PeerTarget::Address(IpAddr::V6(_))) => vec![Family::Ipv6Unicast],
            _ => vec![Family::Ipv4Unicast, Family::Ipv6Unicast],
        });
    };
    if raw.is_empty() {
        errs.push(
            path,
            "is empty; list at least one of \"ipv4-unicast\", \"ipv6-unicast\"",
        );
        return None;
    }
    let mut out = Vec::new();
    for (j, f) in raw.iter().enumerate() {
        let fam = match f.as_str() {
            "ipv4-unicast" => Family::Ipv4Unicast,
            "ipv6-unicast" => Family::Ipv6Unicast,
            other => {
                errs.push(format!("{path}[{j}]"), format!("{other:?} is not a supported family; use \"ipv4-unicast\" or \"ipv6-unicast\""));
                return None;
            }
        };
        if out.contains(&fam) {
            errs.push(
                format!("{path}[{j}]"),
                format!("{f:?} is listed twice; keep one"),
            );
            return None;
        }
        out.push(fam);
    }
    Some(out)
}

/// Linux interface names: 1..=15 bytes, no '/', ':' or whitespace.
fn interface(errs: &mut Errors, path: &str, v: &str) -> Option<String> {
    let ok = !v.is_empty()
        && v.len() <= 15
        && v != "."
        && v != ".."
        && !v.chars().any(|c| c == '/' || c == ':' || c.is_whitespace());
    if ok {
        Some(v.to_owned())
    } else {
        errs.push(path, format!("{v:?} is not a Linux interface name; use 1..=15 characters without '/', ':' or spaces"));
        None
    }
}

/// `collectors = ["192.0.2.9:11019", "[2001:db8::9]:11019"]`: distinct, with a port.
fn bmp(errs: &mut Errors, raw: Option<RawBmp>) -> Option<Vec<SocketAddr>> {
    let Some(raw) = raw else {
        return Some(Vec::new());
    };
    if raw.collectors.is_empty() {
        errs.push(
            "bgp.bmp.collectors",
            "is empty; list at least one \"address:port\" or remove [bgp.bmp]",
        );
        return None;
    }
    let mut out: Vec<SocketAddr> = Vec::new();
    let mut ok = true;
    for (i, c) in raw.collectors.iter().enumerate() {
        let at = format!("bgp.bmp.collectors[{i}]");
        match c.parse::<SocketAddr>() {
            Ok(a) if a.port() == 0 => {
                errs.push(
                    at,
                    format!("{c:?} has port 0; give the collector's port (often 11019)"),
                );
                ok = false;
            }
            Ok(a) if out.contains(&a) => {
                errs.push(
                    at,
                    format!("{c:?} is listed twice; list each collector once"),
                );
                ok = false;
            }
            Ok(a) => out.push(a),
            Err(_) => {
                errs.push(at, format!("{c:?} is not an address:port; write \"192.0.2.9:11019\" or \"[2001:db8::9]:11019\""));
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

/// A policy chain as written: one name or a non-empty list.
fn policy_names(errs: &mut Errors, path: &str, raw: Option<RawNames>) -> Option<Vec<String>> {
    if matches!(&raw, Some(RawNames::Many(v)) if v.is_empty()) {
        errs.push(
            path,
            "is an empty list; name at least one policy or remove the field",
        );
        return None;
    }
    let names = raw.map(RawNames::into_vec).unwrap_or_default();
    let mut ok = true;
    for (i, n) in names.iter().enumerate() {
        let at = if names.len() == 1 {
            path.to_owned()
        } else {
            format!("{path}[{i}]")
        };
        ok &= policy_name(errs, &at, n, "policy name").is_some();
    }
    ok.then_some(names)
}

/// Names that appear in logs and the API: `[A-Za-z0-9_-]{1,64}`.
pub(crate) fn policy_name(errs: &mut Errors, path: &str, v: &str, what: &str) -> Option<String> {
    let ok = (1..=64).contains(&v.len())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Some(v.to_owned())
    } else {
        errs.push(
            path,
            format!(
                "{v:?} is not a valid {what}; use 1..=64 characters of A-Z, a-z, 0-9, '-' and '_'"
            ),
        );
        None
    }
}

fn check_unique_peers(peers: &[Option<Peer>], errs: &mut Errors) {
    let mut names = HashMap::new();
    let mut targets = HashMap::new();
    for (i, p) in peers.iter().enumerate() {
        let Some(peer) = p else { continue };
        if let Some(&first) = names.get(&peer.name) {
            errs.push(
                format!("bgp.peers[{i}].name"),
                format!(
                    "{:?} is already used by bgp.peers[{first}]; peer names must be unique",
                    peer.name
                ),
            );
        } else {
            names.insert(peer.name.clone(), i);
        }
        let (field, shown) = match &peer.target {
            PeerTarget::Address(a) => ("address", a.to_string()),
            PeerTarget::Interface(n) => ("interface", n.clone()),
        };
        if let Some(&first) = targets.get(&peer.target) {
            errs.push(format!("bgp.peers[{i}].{field}"), format!("{shown} is already the {field} of bgp.peers[{first}]; configure each neighbor once"));
        } else {
            targets.insert(peer.target.clone(), i);
        }
    }
}

/// A prefix without host bits, or an error naming the field.
fn prefix(errs: &mut Errors, path: String, raw: &str) -> Option<IpNet> {
    match raw.parse::<IpNet>() {
        Ok(p) if p.trunc() != p => {
            errs.push(path, format!("{p} has host bits set; use {}", p.trunc()));
            None
        }
        Ok(p) => Some(p),
        Err(_) => {
            errs.push(
                path,
                format!("{raw:?} is not a prefix; write e.g. \"10.1.0.0/24\" or \"2001:db8::/48\""),
            );
            None
        }
    }
}

/// Communities ("65000:100" or well-known names), each error naming its index.
fn communities(errs: &mut Errors, path: String, raw: &[String]) -> Option<Vec<Community>> {
    raw.iter()
        .enumerate()
        .map(|(j, c)| errs.check(format!("{path}[{j}]"), c.parse()))
        .collect()
}

fn advert(i: usize, raw: RawAdvert, errs: &mut Errors) -> Option<Advert> {
    let at = |f: &str| format!("bgp.adverts[{i}].{f}");
    let prefix = prefix(errs, at("prefix"), &raw.prefix);
    let communities = communities(errs, at("communities"), &raw.communities);
    let large: Option<Vec<LargeCommunity>> = raw
        .large_communities
        .iter()
        .enumerate()
        .map(|(j, c)| errs.check(format!("{}[{j}]", at("large_communities")), c.parse()))
        .collect();
    let local_pref = match raw.local_pref {
        Some(lp) => Some(errs.int::<u32>(
            at("local_pref"),
            lp,
            0,
            u32::MAX.into(),
            "LOCAL_PREF is 32 bits",
        )?),
        None => None,
    };
    Some(Advert {
        prefix: prefix?,
        communities: communities?,
        large_communities: large?,
        local_pref,
        pool: raw.pool,
    })
}

fn pool(i: usize, raw: RawPool, errs: &mut Errors) -> Option<Pool> {
    let at = |f: &str| format!("bgp.pools[{i}].{f}");
    let prefix = prefix(errs, at("prefix"), &raw.prefix);
    let communities = communities(errs, at("communities"), &raw.communities);
    Some(Pool {
        name: raw.name,
        prefix: prefix?,
        aggregate: raw.aggregate,
        communities: communities?,
    })
}

/// Pools are unique by name; every advert's pool exists and contains the advert.
fn check_pools(pools: &[Option<Pool>], adverts: &[Option<Advert>], errs: &mut Errors) {
    let mut seen = HashMap::new();
    for (i, p) in pools.iter().enumerate() {
        let Some(p) = p else { continue };
        if let Some(first) = seen.insert(p.name.clone(), i) {
            errs.push(
                format!("bgp.pools[{i}].name"),
                format!(
                    "{:?} is already bgp.pools[{first}]; pool names must be unique",
                    p.name
                ),
            );
        }
    }
    for (i, a) in adverts.iter().enumerate() {
        let Some(a) = a else { continue };
        let Some(name) = &a.pool else { continue };
        match pools.iter().flatten().find(|p| &p.name == name) {
            None => errs.push(
                format!("bgp.adverts[{i}].pool"),
                format!("no pool named {name:?}; define it in [[bgp.pools]]"),
            ),
            Some(p) if !p.prefix.contains(&a.prefix) => errs.push(
                format!("bgp.adverts[{i}].prefix"),
                format!("{} is outside pool {name:?} ({})", a.prefix, p.prefix),
            ),
            Some(_) => {}
        }
    }
}

fn check_unique_adverts(adverts: &[Option<Advert>], errs: &mut Errors) {
    let mut seen = HashMap::new();
    for (i, a) in adverts.iter().enumerate() {
        let Some(a) = a else { continue };
        if let Some(first) = seen.get(&a.prefix) {
            errs.push(
                format!("bgp.adverts[{i}].prefix"),
                format!(
                    "{} is already advertised by bgp.adverts[{first}]; merge the two",
                    a.prefix
                ),
            );
        } else {
            seen.insert(a.prefix, i);
        }
    }
}

/// The router ID defaults to an IPv4 address we already know is ours.
fn derive_router_id(
    listen: Option<IpAddr>,
    peers: &[Option<Peer>],
    errs: &mut Errors,
) -> Option<Ipv4Addr> {
    let candidates = listen
        .into_iter()
        .chain(peers.iter().flatten().filter_map(|p| p.local_address));
    for ip in candidates {
        if let IpAddr::V4(v4) = ip
            && !v4.is_unspecified()
        {
            return Some(v4);
        }
    }
    errs.push(
        "bgp.router_id",
        "missing, and no IPv4 address can be derived from bgp.listen_address or bgp.peers[*].local_address; set router_id = \"<an IPv4 address of this node>\"",
    );
    None
}
