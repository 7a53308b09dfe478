//! The speaker's runtime configuration, derived from the validated TOML config. Anything the
//! speaker cannot honour is refused here, before a socket opens.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use configs::{Family, PeerAsn, PeerTarget};
use ipnet::IpNet;

use super::conn::Transport;
use crate::fsm::{PeerAs, SessionConfig};
use crate::policy::Policy;
use crate::rib::{Advert, PeerId};
use crate::wire::{
    Afi, Capability, Community, ExtNextHopEntry, GrFamily, GracefulRestart, LargeCommunity,
    LlgrFamily, Safi,
};

/// Graceful restart time we advertise (RFC 4724 §3), seconds.
pub const RESTART_TIME: u16 = configs::DEFAULT_GRACEFUL_RESTART_TIME;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no [bgp] section: bgpd needs local_asn and peers")]
    NoBgp,
    #[error("bgp.peers[{index}] ({name}): {reason}")]
    Peer {
        index: usize,
        name: String,
        reason: String,
    },
    /// A field's value bgpd refuses; `path` as in the config file (`bgp.adverts[2].prefix`).
    #[error("{path}: {reason}")]
    Field { path: String, reason: String },
}

#[derive(Clone, Debug, PartialEq)]
pub struct PeerSpec {
    pub id: PeerId,
    pub name: String,
    pub address: IpAddr,
    pub transport: Transport,
    pub session: SessionConfig,
    pub import: Policy,
    pub export: Policy,
    pub next_hop_self: bool,
    /// RFC 4271 §6.3: routes from this eBGP peer must have its AS first in AS_PATH.
    pub enforce_first_as: bool,
    pub max_prefixes: Option<configs::MaxPrefixes>,
    /// BFD to the peer's address (single hop, RFC 5881).
    pub bfd: Option<crate::bfd::BfdConfig>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SpeakerConfig {
    /// Where bgpd keeps the graceful-restart marker between runs.
    pub state_dir: Option<std::path::PathBuf>,
    pub local_asn: u32,
    pub router_id: Ipv4Addr,
    pub listen: Option<SocketAddr>,
    pub peers: Vec<PeerSpec>,
    pub adverts: Vec<Advert>,
    /// Install learned routes into the kernel (table, protocol id).
    pub fib: Option<configs::Fib>,
    /// BMP monitoring stations (RFC 7854) and the sysName we give them.
    pub bmp_collectors: Vec<std::net::SocketAddr>,
    pub sys_name: String,
    /// VIP pools, and the pool of each configured advert that names one.
    pub pools: Vec<configs::Pool>,
    pub advert_pool: std::collections::BTreeMap<IpNet, String>,
    /// `bgp.allow_special_prefixes`: announce what [`special_prefix`] names, from config and
    /// API alike.
    pub allow_special_prefixes: bool,
}

impl SpeakerConfig {
    pub fn from_config(c: &configs::Config) -> Result<SpeakerConfig, ConfigError> {
        let bgp = c.bgp.as_ref().ok_or(ConfigError::NoBgp)?;
        let local_asn = bgp.local_asn.0;
        if let Some(what) = not_unicast(IpAddr::V4(bgp.router_id)) {
            return Err(ConfigError::Field {
                path: "bgp.router_id".into(),
                reason: format!(
                    "{} is {what}; a BGP identifier must be a unicast IPv4 address of this node (RFC 6286), e.g. its loopback or uplink address",
                    bgp.router_id
                ),
            });
        }
        if !bgp.allow_special_prefixes {
            let adverts = bgp.adverts.iter().map(|a| a.prefix).enumerate();
            let pools = bgp.pools.iter().enumerate();
            // An aggregated pool announces its own prefix.
            let aggregates = pools
                .filter(|(_, p)| p.aggregate)
                .map(|(i, p)| (i, p.prefix));
            let found = adverts
                .map(|(i, p)| (format!("bgp.adverts[{i}].prefix"), p))
                .chain(aggregates.map(|(i, p)| (format!("bgp.pools[{i}].prefix"), p)))
                .find_map(|(path, p)| special_prefix_refusal(&p).map(|reason| (path, reason)));
            if let Some((path, reason)) = found {
                return Err(ConfigError::Field { path, reason });
            }
        }
        let mut peers = Vec::new();
        for (index, p) in bgp.peers.iter().enumerate() {
            let err = |reason: String| ConfigError::Peer {
                index,
                name: p.name.clone(),
                reason,
            };
            let (address, interface) = match &p.target {
                PeerTarget::Address(a) => {
                    if let Some(what) = not_unicast(*a) {
                        return Err(ConfigError::Field {
                            path: format!("bgp.peers[{index}].address"),
                            reason: format!(
                                "{a} (peer {:?}) is {what}; a BGP peer is one unicast host reached over TCP (RFC 4271): give the peer's own address",
                                p.name
                            ),
                        });
                    }
                    (*a, None)
                }
                PeerTarget::Interface(i) => {
                    if p.md5_password.is_some() {
                        return Err(err(format!(
                            "md5_password with unnumbered peering (interface = {i:?}) is not supported: the peer's address is not known in advance; give its address instead"
                        )));
                    }
                    (IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), Some(i.clone()))
                }
            };
            if let (Some(_), Some(i)) = (&p.bfd, &interface) {
                return Err(err(format!(
                    "bfd with unnumbered peering (interface = {i:?}) is not supported yet; give the peer's address instead"
                )));
            }
            let ebgp = p.may_be_ebgp(bgp.local_asn);
            let policy = |names: &[String], dir: &str| -> Result<Policy, ConfigError> {
                match crate::policy::chain(names, &bgp.policies) {
                    None => Err(err(format!(
                        "{dir}_policy {names:?} names an undefined policy; define it in [[bgp.policies]]"
                    ))),
                    Some(Some(p)) => Ok(p),
                    // RFC 8212: no eBGP import/export without a policy, unless opted out.
                    Some(None) if ebgp && p.ebgp_requires_policy => Ok(Policy::reject_all()),
                    Some(None) => Ok(Policy::accept_all()),
                }
            };
            let import = policy(&p.import_policy, "import")?;
            let export = policy(&p.export_policy, "export")?;
            let families: Vec<(Afi, Safi)> = p
                .families
                .iter()
                .map(|f| match f {
                    Family::Ipv4Unicast => (Afi::IPV4, Safi::UNICAST),
                    Family::Ipv6Unicast => (Afi::IPV6, Safi::UNICAST),
                })
                .collect();
            let mut caps: Vec<Capability> = families
                .iter()
                .map(|&(afi, safi)| Capability::Multiprotocol { afi, safi })
                .collect();
            caps.push(Capability::RouteRefresh);
            caps.push(Capability::EnhancedRouteRefresh);
            if address.is_ipv6() && families.contains(&(Afi::IPV4, Safi::UNICAST)) {
                // RFC 8950: IPv4 routes with an IPv6 next hop on an IPv6 session.
                caps.push(Capability::ExtendedNextHop(vec![ExtNextHopEntry {
                    nlri_afi: Afi::IPV4,
                    nlri_safi: u16::from(Safi::UNICAST.0),
                    next_hop_afi: Afi::IPV6,
                }]));
            }
            // RFC 4724 §3: forwarding state is preserved across a bgpd restart (the kernel
            // and the eBPF datapath keep forwarding), so the F bit is set; the R bit is set
            // at start when bgpd restarted gracefully (see `speaker::graceful`).
            // RFC 8538 §2: the N bit: a NOTIFICATION other than Hard Reset is a graceful end
            // too (the FSM sends the Cease subcodes meant to remove routes as Hard Reset).
            caps.push(Capability::GracefulRestart(GracefulRestart {
                restart_state: false,
                notification: p.graceful_notification,
                restart_time: p.graceful_restart_time,
                families: families
                    .iter()
                    .map(|&(afi, safi)| GrFamily {
                        afi,
                        safi,
                        forwarding: true,
                    })
                    .collect(),
            }));
            // RFC 9494 §3: long-lived stale time per family, forwarding preserved.
            if let Some(stale_time) = p.long_lived_stale_time {
                caps.push(Capability::LongLivedGracefulRestart(
                    families
                        .iter()
                        .map(|&(afi, safi)| LlgrFamily {
                            afi,
                            safi,
                            forwarding: true,
                            stale_time,
                        })
                        .collect(),
                ));
            }
            let session = SessionConfig {
                local_asn,
                router_id: bgp.router_id,
                peer_as: match p.peer_asn {
                    PeerAsn::Fixed(a) => PeerAs::Exact(a.0),
                    PeerAsn::Any => PeerAs::Any,
                },
                hold_time: p.hold_time,
                keepalive: (p.keepalive > 0).then_some(p.keepalive),
                connect_retry: Duration::from_secs(5),
                passive: p.passive,
                capabilities: caps,
                idle_hold: Duration::from_secs(1),
                idle_hold_max: Duration::from_secs(60),
            };
            let transport = Transport {
                remote: SocketAddr::new(address, p.port),
                interface,
                local: p.local_address,
                md5_key: p
                    .md5_password
                    .as_ref()
                    .map(|s| s.expose().as_bytes().to_vec()),
                gtsm_hops: p.ttl_security.then_some(1),
                // eBGP peers are directly connected unless multihop (RFC 4271 §5.1.3).
                ttl: p.multihop_ttl.or(if ebgp { Some(1) } else { None }),
                // Shorter than ConnectRetry, so a failed attempt is reported before the next.
                connect_timeout: Duration::from_secs(3),
            };
            peers.push(PeerSpec {
                id: PeerId(index as u32 + 1),
                name: p.name.clone(),
                address,
                transport,
                session,
                import,
                export,
                next_hop_self: p.next_hop_self,
                enforce_first_as: p.enforce_first_as,
                max_prefixes: p.max_prefixes,
                bfd: p.bfd.map(|b| crate::bfd::BfdConfig {
                    desired_min_tx: Duration::from_millis(b.min_tx_ms.into()),
                    required_min_rx: Duration::from_millis(b.min_rx_ms.into()),
                    detect_mult: b.multiplier,
                    // RFC 5883: a multihop BGP session gets a multihop BFD session.
                    multihop: p.multihop_ttl.map(|_| b.min_ttl.unwrap_or(1)),
                }),
            });
        }
        let adverts = bgp
            .adverts
            .iter()
            .map(|a| Advert {
                prefix: a.prefix,
                communities: a.communities.clone(),
                large_communities: a
                    .large_communities
                    .iter()
                    .map(|l| LargeCommunity {
                        global_admin: l.global,
                        local_data1: l.local1,
                        local_data2: l.local2,
                    })
                    .collect(),
                local_pref: a.local_pref,
                med: None,
            })
            .collect();
        Ok(SpeakerConfig {
            state_dir: Some(c.node.state_dir.clone()),
            local_asn,
            router_id: bgp.router_id,
            listen: bgp.listen,
            peers,
            adverts,
            fib: bgp.fib,
            bmp_collectors: bgp.bmp_collectors.clone(),
            sys_name: c.node.name.to_string(),
            pools: bgp.pools.clone(),
            advert_pool: bgp
                .adverts
                .iter()
                .filter_map(|a| a.pool.clone().map(|p| (a.prefix, p)))
                .collect(),
            allow_special_prefixes: bgp.allow_special_prefixes,
        })
    }
}

/// Why `a` cannot be a peer's address or a BGP identifier: the unspecified address, the IPv4
/// broadcast address or a multicast address (none names one host).
pub fn not_unicast(a: IpAddr) -> Option<&'static str> {
    match a {
        IpAddr::V4(v) if v.is_unspecified() => Some("the unspecified address"),
        IpAddr::V4(v) if v.is_broadcast() => Some("the broadcast address"),
        IpAddr::V4(v) if v.is_multicast() => Some("a multicast address (224.0.0.0/4)"),
        IpAddr::V6(v) if v.is_unspecified() => Some("the unspecified address"),
        IpAddr::V6(v) if v.is_multicast() => Some("a multicast address (ff00::/8)"),
        _ => None,
    }
}

/// What makes `p` a prefix no one should announce by mistake: the default route, or a prefix
/// inside the unspecified ("this network", RFC 1122), loopback, link-local, multicast or
/// broadcast ranges. `None` for an ordinary prefix.
pub fn special_prefix(p: &IpNet) -> Option<&'static str> {
    const RANGES: [(&str, &str); 9] = [
        (
            "0.0.0.0/8",
            "unspecified (inside 0.0.0.0/8, \"this network\")",
        ),
        ("127.0.0.0/8", "loopback (inside 127.0.0.0/8)"),
        ("169.254.0.0/16", "link-local (inside 169.254.0.0/16)"),
        ("224.0.0.0/4", "multicast (inside 224.0.0.0/4)"),
        ("255.255.255.255/32", "the broadcast address"),
        ("::/128", "the unspecified address"),
        ("::1/128", "loopback (::1/128)"),
        ("fe80::/10", "link-local (inside fe80::/10)"),
        ("ff00::/8", "multicast (inside ff00::/8)"),
    ];
    if p.prefix_len() == 0 {
        return Some("the default route");
    }
    RANGES.iter().find_map(|(range, what)| {
        let range: IpNet = range.parse().expect("a valid range");
        range.contains(p).then_some(*what)
    })
}

/// The refusal of a [`special_prefix`], naming it and the opt-in; `None` for an ordinary one.
pub fn special_prefix_refusal(p: &IpNet) -> Option<String> {
    special_prefix(p).map(|what| {
        format!(
            "{p} is {what}: bgpd does not announce default-route, unspecified, loopback, link-local, multicast or broadcast prefixes unless bgpd's config sets bgp.allow_special_prefixes = true"
        )
    })
}

/// Parses "65000:100" or a well-known name (RFC 1997, 8326, ...) with the one parser every
/// ironmesh crate uses ([`configs::Community`]).
pub fn parse_community(s: &str) -> Result<Community, String> {
    s.parse::<Community>()
}

/// Parses "65000:1:2" (RFC 8092), see [`parse_community`].
pub fn parse_large_community(s: &str) -> Result<LargeCommunity, String> {
    s.parse::<configs::LargeCommunity>()
        .map(|c| LargeCommunity {
            global_admin: c.global,
            local_data1: c.local1,
            local_data2: c.local2,
        })
}

/// Parses an advert prefix, refusing host bits (a config or API mistake, not a route).
pub fn parse_prefix(s: &str) -> Result<IpNet, String> {
    let p: IpNet = s
        .parse()
        .map_err(|_| format!("prefix {s:?}: use CIDR notation, e.g. 203.0.113.10/32"))?;
    if p.trunc() != p {
        return Err(format!(
            "prefix {s:?} has host bits set; did you mean {}?",
            p.trunc()
        ));
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_toml(bgp_extra: &str, rest: &str) -> Result<SpeakerConfig, ConfigError> {
        let toml = format!(
            "[node]\nname = \"n\"\ncluster = \"c\"\n[bgp]\nlocal_asn = 65001\nrouter_id = \"192.0.2.1\"\n{bgp_extra}\n{rest}"
        );
        let c = configs::Config::from_toml(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
        SpeakerConfig::from_config(&c)
    }

    fn advert(prefix: &str) -> String {
        format!("[[bgp.adverts]]\nprefix = \"{prefix}\"\n")
    }

    fn peer(address: &str) -> String {
        format!("[[bgp.peers]]\nname = \"tor\"\naddress = \"{address}\"\npeer_asn = 65000\n")
    }

    /// The N bit of the GR capability we send (RFC 8538 §2).
    fn sends_n_bit(s: &SpeakerConfig) -> bool {
        s.peers[0]
            .session
            .capabilities
            .iter()
            .any(|c| matches!(c, Capability::GracefulRestart(gr) if gr.notification))
    }

    #[test]
    fn the_n_bit_is_sent_unless_graceful_notification_is_off() {
        let on = from_toml("", &peer("192.0.2.1")).unwrap();
        assert!(sends_n_bit(&on));
        let off = from_toml(
            "",
            &format!("{}graceful_notification = false\n", peer("192.0.2.1")),
        )
        .unwrap();
        assert!(!sends_n_bit(&off));
    }

    const SPECIAL: [&str; 12] = [
        "0.0.0.0/0",
        "::/0",
        "0.0.0.0/32",
        "::/128",
        "127.0.0.0/8",
        "127.0.0.1/32",
        "::1/128",
        "224.0.0.0/4",
        "239.1.2.0/24",
        "ff00::/8",
        "169.254.0.0/16",
        "fe80::/10",
    ];

    #[test]
    fn special_prefixes_are_named_and_ordinary_ones_are_not() {
        for p in SPECIAL {
            assert!(special_prefix(&p.parse().unwrap()).is_some(), "{p}");
        }
        for p in [
            "10.0.0.0/8",
            "203.0.113.10/32",
            "2001:db8::/32",
            "128.0.0.0/1",
            "::2/128",
            "fec0::/10",
        ] {
            assert_eq!(special_prefix(&p.parse().unwrap()), None, "{p}");
        }
    }

    #[test]
    fn a_special_advert_in_config_is_refused_with_its_field_path_and_the_opt_in() {
        for p in SPECIAL {
            let e = from_toml("", &advert(p)).unwrap_err().to_string();
            assert!(e.starts_with("bgp.adverts[0].prefix: "), "{e}");
            assert!(e.contains(p), "{e}");
            assert!(e.contains("bgp.allow_special_prefixes = true"), "{e}");
        }
        let e = from_toml("", &advert("127.0.0.1/32"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("loopback"), "{e}");
        let e = from_toml("", &advert("0.0.0.0/0")).unwrap_err().to_string();
        assert!(e.contains("the default route"), "{e}");
    }

    #[test]
    fn a_special_advert_in_config_is_accepted_with_allow_special_prefixes() {
        for p in SPECIAL {
            let c = from_toml("allow_special_prefixes = true", &advert(p)).unwrap();
            assert_eq!(c.adverts[0].prefix.to_string(), p);
            assert!(c.allow_special_prefixes);
        }
    }

    #[test]
    fn an_aggregated_pool_with_a_special_prefix_is_refused() {
        let pool = "[[bgp.pools]]\nname = \"p\"\nprefix = \"169.254.0.0/16\"\naggregate = true\n";
        let e = from_toml("", pool).unwrap_err().to_string();
        assert!(
            e.starts_with("bgp.pools[0].prefix: 169.254.0.0/16 is link-local"),
            "{e}"
        );
    }

    #[test]
    fn a_peer_address_that_is_not_one_unicast_host_is_refused_with_its_field_path() {
        for (a, what) in [
            ("0.0.0.0", "the unspecified address"),
            ("::", "the unspecified address"),
            ("255.255.255.255", "the broadcast address"),
            ("224.0.0.5", "a multicast address"),
            ("ff02::5", "a multicast address"),
        ] {
            let e = from_toml("", &peer(a)).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!(
                    "bgp.peers[0].address: {a} (peer \"tor\") is {what}"
                )),
                "{e}"
            );
            assert!(e.contains("give the peer's own address"), "{e}");
        }
        assert!(from_toml("", &peer("192.0.2.254")).is_ok());
    }

    #[test]
    fn a_router_id_that_is_multicast_or_broadcast_is_refused_with_its_field_path() {
        for (id, what) in [
            ("255.255.255.255", "the broadcast address"),
            ("224.0.0.1", "a multicast address"),
        ] {
            let toml = format!(
                "[node]\nname = \"n\"\ncluster = \"c\"\n[bgp]\nlocal_asn = 65001\nrouter_id = \"{id}\"\n"
            );
            let c = configs::Config::from_toml(&toml).unwrap();
            let e = SpeakerConfig::from_config(&c).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("bgp.router_id: {id} is {what}")),
                "{e}"
            );
            assert!(e.contains("unicast IPv4 address"), "{e}");
        }
    }
}
