//! The gRPC API of bgpd (`api/proto/bgp.proto`) over the speaker handle.

use api::bgp as pb;
use ipnet::IpNet;
use tonic::{Request, Response, Status};

use super::SpeakerHandle;
use super::config::{parse_community, parse_large_community, parse_prefix};
use super::status::PeerStatus;
use crate::fsm::State;
use crate::rib::{Advert, PeerId, RibRoute};
use crate::wire::{AsSegmentType, Community, MpNextHop, Origin};

#[derive(Debug)]
pub struct BgpApi {
    h: SpeakerHandle,
}

impl BgpApi {
    pub fn new(h: SpeakerHandle) -> Self {
        BgpApi { h }
    }
}

fn gone() -> Status {
    Status::unavailable("bgpd is shutting down")
}

fn state(s: State) -> pb::SessionState {
    match s {
        State::Idle => pb::SessionState::Idle,
        State::Connect => pb::SessionState::Connect,
        State::Active => pb::SessionState::Active,
        State::OpenSent => pb::SessionState::OpenSent,
        State::OpenConfirm => pb::SessionState::OpenConfirm,
        State::Established => pb::SessionState::Established,
    }
}

fn capabilities(st: &PeerStatus) -> Vec<String> {
    let Some(n) = &st.negotiated else {
        return Vec::new();
    };
    let mut caps: Vec<String> = n
        .families
        .iter()
        .map(|(afi, safi)| match (afi.0, safi.0) {
            (1, 1) => "ipv4-unicast".to_string(),
            (2, 1) => "ipv6-unicast".to_string(),
            (a, s) => format!("afi{a}-safi{s}"),
        })
        .collect();
    for (on, name) in [
        (n.four_octet_as, "4-octet-asn"),
        (n.route_refresh, "route-refresh"),
        (n.enhanced_route_refresh, "enhanced-route-refresh"),
        (n.extended_message, "extended-message"),
        (!n.extended_next_hop.is_empty(), "extended-next-hop"),
        (n.peer_graceful_restart.is_some(), "graceful-restart"),
        (n.graceful_notification(), "graceful-notification"),
    ] {
        if on {
            caps.push(name.into());
        }
    }
    caps
}

fn route(r: &RibRoute<'_>, peer_name: &dyn Fn(PeerId) -> String) -> pb::Route {
    let a = &r.attrs.attrs;
    let as_path = a
        .as_path
        .iter()
        .flat_map(|p| p.segments.iter())
        .filter(|s| matches!(s.kind, AsSegmentType::Sequence | AsSegmentType::Set))
        .flat_map(|s| s.asns.iter().copied())
        .collect();
    let next_hop = match (&r.attrs.next_hop, a.next_hop) {
        (Some(MpNextHop::Ipv4(v)), _) => v.to_string(),
        (Some(MpNextHop::Ipv6 { global, .. }), _) => global.to_string(),
        (None, Some(v)) => v.to_string(),
        (None, None) => String::new(),
    };
    pb::Route {
        prefix: r.prefix.to_string(),
        next_hop,
        as_path,
        origin: match a.origin {
            Some(Origin::Igp) => "igp",
            Some(Origin::Egp) => "egp",
            Some(Origin::Incomplete) => "incomplete",
            None => "",
        }
        .into(),
        med: a.med,
        local_pref: a.local_pref,
        communities: a.communities.iter().map(Community::to_string).collect(),
        large_communities: a
            .large_communities
            .iter()
            .map(|l| format!("{}:{}:{}", l.global_admin, l.local_data1, l.local_data2))
            .collect(),
        peer: r.peer.map(peer_name).unwrap_or_default(),
        best: r.best,
        stale: r.stale,
    }
}

fn bfd_pb(s: &crate::bfd::BfdStatus) -> pb::Bfd {
    let ms = |d: std::time::Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
    pb::Bfd {
        state: s.state.to_string(),
        remote_state: s.remote_state.to_string(),
        diag: s.diag.to_string(),
        local_discriminator: s.local_disc,
        remote_discriminator: s.remote_disc,
        tx_interval_ms: ms(s.tx_interval),
        required_min_rx_ms: ms(s.required_min_rx),
        remote_min_rx_ms: ms(s.remote_min_rx),
        remote_desired_min_tx_ms: ms(s.remote_desired_min_tx),
        detect_mult: s.detect_mult.into(),
        remote_detect_mult: s.remote_detect_mult.into(),
        detection_time_ms: s.detection_time.map(ms).unwrap_or(0),
    }
}

fn advert(a: pb::Advert) -> Result<(Advert, Option<String>), Status> {
    let bad = |e: String| Status::invalid_argument(e);
    let pool = (!a.pool.is_empty()).then(|| a.pool.clone());
    Ok((
        Advert {
            prefix: parse_prefix(&a.prefix).map_err(bad)?,
            communities: a
                .communities
                .iter()
                .map(|c| parse_community(c))
                .collect::<Result<_, _>>()
                .map_err(bad)?,
            large_communities: a
                .large_communities
                .iter()
                .map(|c| parse_large_community(c))
                .collect::<Result<_, _>>()
                .map_err(bad)?,
            local_pref: a.local_pref,
            med: None,
        },
        pool,
    ))
}

#[tonic::async_trait]
impl pb::bgp_server::Bgp for BgpApi {
    async fn list_peers(
        &self,
        req: Request<pb::ListPeersRequest>,
    ) -> Result<Response<pb::ListPeersResponse>, Status> {
        let want = req.into_inner().name;
        let ids: Vec<PeerId> = self.h.peers().iter().map(|p| p.id).collect();
        let rib_counters = self
            .h
            .query(move |rib| {
                ids.iter()
                    .map(|id| rib.counters(*id).unwrap_or_default())
                    .collect::<Vec<_>>()
            })
            .await
            .ok_or_else(gone)?;
        let bfd = self.h.bfd_status().await;
        let mut peers = Vec::new();
        for (p, rc) in self.h.peers().iter().zip(rib_counters) {
            if !want.is_empty() && want != p.name {
                continue;
            }
            let st = p.status.lock().unwrap().clone();
            let n = st.negotiated.as_ref();
            peers.push(pb::Peer {
                name: p.name.clone(),
                address: p.address.to_string(),
                peer_asn: n.map(|n| n.peer_asn).unwrap_or(0),
                local_asn: p.local_asn,
                state: state(st.state) as i32,
                uptime_seconds: st.since.elapsed().as_secs(),
                hold_time: n.map(|n| u32::from(n.hold_time)).unwrap_or(0),
                capabilities: capabilities(&st),
                counters: Some(pb::Counters {
                    updates_in: st.counters.updates_in,
                    updates_out: st.counters.updates_out,
                    notifications_in: st.counters.notifications_in,
                    notifications_out: st.counters.notifications_out,
                    keepalives_in: st.counters.keepalives_in,
                    keepalives_out: st.counters.keepalives_out,
                    prefixes_received: rc.received,
                    prefixes_accepted: rc.accepted,
                    prefixes_advertised: rc.advertised,
                }),
                last_error: st.last_error.clone().unwrap_or_default(),
                peer_router_id: n.map(|n| n.peer_router_id.to_string()).unwrap_or_default(),
                bfd: bfd.get(&p.name).map(bfd_pb),
            });
        }
        if !want.is_empty() && peers.is_empty() {
            return Err(Status::not_found(format!("no peer named {want:?}")));
        }
        Ok(Response::new(pb::ListPeersResponse { peers }))
    }

    async fn list_routes(
        &self,
        req: Request<pb::ListRoutesRequest>,
    ) -> Result<Response<pb::ListRoutesResponse>, Status> {
        let r = req.into_inner();
        let kind = pb::RibKind::try_from(r.rib).unwrap_or(pb::RibKind::Unspecified);
        let peer = if r.peer.is_empty() {
            None
        } else {
            let p = self
                .h
                .peers()
                .into_iter()
                .find(|p| p.name == r.peer || p.address.to_string() == r.peer)
                .ok_or_else(|| Status::not_found(format!("no peer {:?}", r.peer)))?;
            Some(p.id)
        };
        let filter: Option<IpNet> = if r.prefix.is_empty() {
            None
        } else {
            Some(r.prefix.parse().map_err(|_| {
                Status::invalid_argument(format!("prefix {:?} is not CIDR", r.prefix))
            })?)
        };
        let family = r.family.clone();
        let names: Vec<(PeerId, String)> = self
            .h
            .peers()
            .iter()
            .map(|p| (p.id, p.name.clone()))
            .collect();
        let routes = self
            .h
            .query(move |rib| {
                let name = |id: PeerId| {
                    names
                        .iter()
                        .find(|(i, _)| *i == id)
                        .map(|(_, n)| n.clone())
                        .unwrap_or_default()
                };
                let keep = |p: &IpNet| {
                    filter.is_none_or(|f| f.contains(p))
                        && match family.as_str() {
                            "ipv4-unicast" => matches!(p, IpNet::V4(_)),
                            "ipv6-unicast" => matches!(p, IpNet::V6(_)),
                            _ => true,
                        }
                };
                let mut out = Vec::new();
                match (kind, peer) {
                    (pb::RibKind::AdjIn, Some(id)) => out.extend(
                        rib.adj_rib_in(id)
                            .filter(|r| keep(&r.prefix))
                            .map(|r| route(&r, &name)),
                    ),
                    (pb::RibKind::AdjOut, Some(id)) => {
                        for (prefix, attrs) in rib.adj_rib_out(id).filter(|(p, _)| keep(p)) {
                            let rr = RibRoute {
                                prefix,
                                peer: None,
                                attrs,
                                accepted: true,
                                best: true,
                                multipath: false,
                                stale: false,
                            };
                            out.push(route(&rr, &name));
                        }
                    }
                    (pb::RibKind::AdjIn | pb::RibKind::AdjOut, None) => return Err(()),
                    _ => out.extend(
                        rib.loc_rib()
                            .filter(|r| keep(&r.prefix) && peer.is_none_or(|id| r.peer == Some(id)))
                            .map(|r| route(&r, &name)),
                    ),
                }
                Ok(out)
            })
            .await
            .ok_or_else(gone)?
            .map_err(|()| Status::invalid_argument("Adj-RIB-In/Out views need a peer"))?;
        Ok(Response::new(pb::ListRoutesResponse { routes }))
    }

    async fn add_adverts(
        &self,
        req: Request<pb::AddAdvertsRequest>,
    ) -> Result<Response<pb::AddAdvertsResponse>, Status> {
        let list = req
            .into_inner()
            .adverts
            .into_iter()
            .map(advert)
            .collect::<Result<Vec<_>, _>>()?;
        let n = self
            .h
            .add_adverts_in_pools(list)
            .await
            .ok_or_else(gone)?
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Response::new(pb::AddAdvertsResponse {
            added: n.added,
            replaced: n.replaced,
        }))
    }

    async fn remove_adverts(
        &self,
        req: Request<pb::RemoveAdvertsRequest>,
    ) -> Result<Response<pb::RemoveAdvertsResponse>, Status> {
        let list = req
            .into_inner()
            .prefixes
            .iter()
            .map(|p| parse_prefix(p).map_err(Status::invalid_argument))
            .collect::<Result<Vec<_>, _>>()?;
        let removed = self.h.remove_adverts(list).await.ok_or_else(gone)?;
        Ok(Response::new(pb::RemoveAdvertsResponse { removed }))
    }

    async fn drain(
        &self,
        _req: Request<pb::DrainRequest>,
    ) -> Result<Response<pb::DrainResponse>, Status> {
        let peers = self.h.drain().await.ok_or_else(gone)?;
        Ok(Response::new(pb::DrainResponse { peers }))
    }

    async fn dump_mrt(
        &self,
        _req: Request<pb::DumpMrtRequest>,
    ) -> Result<Response<pb::DumpMrtResponse>, Status> {
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(0);
        let (data, routes) = self
            .h
            .query(move |rib| crate::mrt::table_dump_v2(rib, ts))
            .await
            .ok_or_else(gone)?;
        Ok(Response::new(pb::DumpMrtResponse {
            data: data.to_vec(),
            routes: routes as u64,
        }))
    }

    async fn reload(
        &self,
        _req: Request<pb::ReloadRequest>,
    ) -> Result<Response<pb::ReloadResponse>, Status> {
        match self.h.reload_from_file().await {
            Ok(changed_peers) => Ok(Response::new(pb::ReloadResponse { changed_peers })),
            Err(e) => Err(Status::failed_precondition(format!(
                "reload refused, the running config is kept: {e}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::speaker::{Speaker, SpeakerConfig};
    use pb::bgp_server::Bgp;

    async fn speaker(bgp_extra: &str) -> Speaker {
        let toml = format!(
            "[node]\nname = \"n\"\ncluster = \"c\"\n[bgp]\nlocal_asn = 65001\nrouter_id = \"192.0.2.1\"\nlisten_port = 0\n{bgp_extra}\n"
        );
        let c = configs::Config::from_toml(&toml).unwrap();
        let mut cfg = SpeakerConfig::from_config(&c).unwrap();
        cfg.state_dir = None;
        Speaker::start(cfg).await.unwrap()
    }

    fn add(prefixes: &[&str]) -> Request<pb::AddAdvertsRequest> {
        Request::new(pb::AddAdvertsRequest {
            adverts: prefixes
                .iter()
                .map(|p| pb::Advert {
                    prefix: p.to_string(),
                    ..Default::default()
                })
                .collect(),
        })
    }

    async fn originated(h: &SpeakerHandle) -> Vec<String> {
        h.query(|rib| rib.loc_rib().map(|r| r.prefix.to_string()).collect())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn add_adverts_refuses_a_special_prefix_naming_it_and_the_opt_in_and_adds_nothing() {
        let sp = speaker("").await;
        let api = BgpApi::new(sp.handle());
        for p in [
            "0.0.0.0/0",
            "::/0",
            "127.0.0.1/32",
            "ff02::/16",
            "169.254.1.0/24",
        ] {
            let e = api
                .add_adverts(add(&["203.0.113.10/32", p]))
                .await
                .unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{p}");
            assert!(e.message().starts_with(&format!("advert {p} is ")), "{e:?}");
            assert!(
                e.message().contains("bgp.allow_special_prefixes = true"),
                "{e:?}"
            );
        }
        assert!(originated(&sp.handle()).await.is_empty(), "nothing added");
        // An ordinary prefix still goes.
        let r = api.add_adverts(add(&["203.0.113.10/32"])).await.unwrap();
        assert_eq!(r.into_inner().added, 1);
        assert_eq!(originated(&sp.handle()).await, ["203.0.113.10/32"]);
        sp.stop(false).await;
    }

    /// One community type and parser: a config advert and an API advert with the same names
    /// (from both former lists) carry the same communities; a bad one is refused by the API with
    /// the config's wording.
    #[tokio::test]
    async fn config_and_api_accept_the_same_community_names() {
        let names = [
            "no-peer",
            "graceful-shutdown",
            "blackhole",
            "no-export",
            "65000:7",
        ];
        let sp = speaker(&format!(
            "[[bgp.adverts]]\nprefix = \"203.0.113.1/32\"\ncommunities = {names:?}\n"
        ))
        .await;
        let api = BgpApi::new(sp.handle());
        let mut req = add(&["203.0.113.2/32"]);
        req.get_mut().adverts[0].communities = names.iter().map(|n| n.to_string()).collect();
        assert_eq!(api.add_adverts(req).await.unwrap().into_inner().added, 1);
        let comms = sp
            .handle()
            .query(|rib| {
                rib.loc_rib()
                    .map(|r| r.attrs.attrs.communities.clone())
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap();
        let expected = vec![
            Community::NO_PEER,
            Community::GRACEFUL_SHUTDOWN,
            Community::BLACKHOLE,
            Community::NO_EXPORT,
            Community::new(65000, 7),
        ];
        assert_eq!(comms, vec![expected.clone(), expected.clone()]);
        let shown: Vec<String> = expected.iter().map(Community::to_string).collect();
        assert_eq!(
            shown,
            [
                "65535:65284",
                "65535:0",
                "65535:666",
                "65535:65281",
                "65000:7"
            ]
        );
        let mut bad = add(&["203.0.113.3/32"]);
        bad.get_mut().adverts[0].communities = vec!["no-such-thing".into()];
        let e = api.add_adverts(bad).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            e.message(),
            "no-such-thing".parse::<configs::Community>().unwrap_err()
        );
        sp.stop(false).await;
    }

    #[tokio::test]
    async fn add_adverts_accepts_a_special_prefix_with_allow_special_prefixes() {
        let sp = speaker("allow_special_prefixes = true").await;
        let api = BgpApi::new(sp.handle());
        let r = api
            .add_adverts(add(&["0.0.0.0/0", "127.0.0.1/32"]))
            .await
            .unwrap();
        assert_eq!(r.into_inner().added, 2);
        assert_eq!(
            originated(&sp.handle()).await,
            ["0.0.0.0/0", "127.0.0.1/32"]
        );
        sp.stop(false).await;
    }
}
