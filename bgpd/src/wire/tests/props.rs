//! Property tests: encode then decode gives the value back; decoders
//! never panic.

use std::net::{Ipv4Addr, Ipv6Addr};

use bytes::Bytes;
use ipnet::{Ipv4Net, Ipv6Net};
use proptest::collection::{btree_set, vec};
use proptest::option;
use proptest::prelude::*;

use crate::wire::*;

const EXT4: Context = Context {
    four_octet_as: true,
    extended_message: true,
};
const EXT2: Context = Context {
    four_octet_as: false,
    extended_message: true,
};

fn afi() -> impl Strategy<Value = Afi> {
    prop_oneof![Just(Afi::IPV4), Just(Afi::IPV6), any::<u16>().prop_map(Afi)]
}

fn safi() -> impl Strategy<Value = Safi> {
    prop_oneof![Just(Safi::UNICAST), any::<u8>().prop_map(Safi)]
}

fn ipv4() -> impl Strategy<Value = Ipv4Addr> {
    any::<u32>().prop_map(Ipv4Addr::from)
}

fn ipv6() -> impl Strategy<Value = Ipv6Addr> {
    any::<u128>().prop_map(Ipv6Addr::from)
}

fn net4() -> impl Strategy<Value = Ipv4Net> {
    (ipv4(), 0u8..=32).prop_map(|(a, l)| Ipv4Net::new(a, l).unwrap().trunc())
}

fn net6() -> impl Strategy<Value = Ipv6Net> {
    (ipv6(), 0u8..=128).prop_map(|(a, l)| Ipv6Net::new(a, l).unwrap().trunc())
}

fn capability() -> impl Strategy<Value = Capability> {
    let known = [1u8, 2, 5, 6, 64, 65, 69, 70, 71];
    prop_oneof![
        (afi(), safi()).prop_map(|(afi, safi)| Capability::Multiprotocol { afi, safi }),
        Just(Capability::RouteRefresh),
        Just(Capability::EnhancedRouteRefresh),
        Just(Capability::ExtendedMessage),
        any::<u32>().prop_map(Capability::FourOctetAs),
        vec((afi(), any::<u16>(), afi()), 0..10).prop_map(|v| Capability::ExtendedNextHop(
            v.into_iter()
                .map(|(a, s, n)| ExtNextHopEntry {
                    nlri_afi: a,
                    nlri_safi: s,
                    next_hop_afi: n
                })
                .collect()
        )),
        (
            any::<bool>(),
            any::<bool>(),
            0u16..0x1000,
            vec((afi(), safi(), any::<bool>()), 0..10)
        )
            .prop_map(|(r, n, t, f)| Capability::GracefulRestart(GracefulRestart {
                restart_state: r,
                notification: n,
                restart_time: t,
                families: f
                    .into_iter()
                    .map(|(afi, safi, forwarding)| GrFamily {
                        afi,
                        safi,
                        forwarding
                    })
                    .collect(),
            })),
        vec((afi(), safi(), 1u8..=3), 0..10).prop_map(|v| Capability::AddPath(
            v.into_iter()
                .map(|(afi, safi, m)| AddPathFamily {
                    afi,
                    safi,
                    mode: [AddPathMode::Receive, AddPathMode::Send, AddPathMode::Both]
                        [m as usize - 1],
                })
                .collect()
        )),
        vec((afi(), safi(), any::<bool>(), 0u32..0x100_0000), 0..10).prop_map(|v| {
            Capability::LongLivedGracefulRestart(
                v.into_iter()
                    .map(|(afi, safi, forwarding, stale_time)| LlgrFamily {
                        afi,
                        safi,
                        forwarding,
                        stale_time,
                    })
                    .collect(),
            )
        }),
        (
            any::<u8>().prop_filter("unknown", move |c| !known.contains(c)),
            vec(any::<u8>(), 0..40)
        )
            .prop_map(|(code, v)| Capability::Unknown {
                code,
                value: Bytes::from(v)
            }),
    ]
}

fn open() -> impl Strategy<Value = OpenMsg> {
    (
        any::<u16>(),
        any::<u16>().prop_filter("hold", |h| *h != 1 && *h != 2),
        any::<u32>()
            .prop_filter("id", |i| *i != 0)
            .prop_map(Ipv4Addr::from),
        vec(capability(), 0..40),
    )
        .prop_map(|(my_as, hold_time, bgp_id, capabilities)| OpenMsg {
            my_as,
            hold_time,
            bgp_id,
            capabilities,
        })
}

fn as_path(max_asn: u32) -> impl Strategy<Value = AsPath> {
    let kind = prop_oneof![
        Just(AsSegmentType::Set),
        Just(AsSegmentType::Sequence),
        Just(AsSegmentType::ConfedSequence),
        Just(AsSegmentType::ConfedSet),
    ];
    vec((kind, vec(1..=max_asn, 1..20)), 0..5).prop_map(|segs| AsPath {
        segments: segs
            .into_iter()
            .map(|(kind, asns)| AsSegment { kind, asns })
            .collect(),
    })
}

fn aggregator(max_asn: u32) -> impl Strategy<Value = Aggregator> {
    (1..=max_asn, ipv4()).prop_map(|(asn, address)| Aggregator { asn, address })
}

/// Unknown optional transitive attributes as they are re-encoded.
fn unknown_attrs() -> impl Strategy<Value = Vec<RawAttr>> {
    btree_set(prop_oneof![19u8..=31, 33u8..=255], 0..4).prop_flat_map(|codes| {
        let n = codes.len();
        vec(vec(any::<u8>(), 0..300), n).prop_map(move |values| {
            codes
                .iter()
                .zip(values)
                .map(|(&type_code, v)| RawAttr {
                    flags: 0xe0,
                    type_code,
                    value: Bytes::from(v),
                })
                .collect()
        })
    })
}

/// Attributes for a 4-octet session (`four`) or a 2-octet one.
fn path_attrs(four: bool) -> impl Strategy<Value = PathAttrs> {
    let max_asn = if four { u32::MAX } else { 0xffff };
    let origin = prop_oneof![
        Just(Origin::Igp),
        Just(Origin::Egp),
        Just(Origin::Incomplete)
    ];
    let as4 = if four {
        Just(None).boxed()
    } else {
        option::of(as_path(u32::MAX)).boxed()
    };
    let as4_agg = if four {
        Just(None).boxed()
    } else {
        option::of(aggregator(u32::MAX)).boxed()
    };
    (
        (
            option::of(origin),
            option::of(as_path(max_asn)),
            option::of(ipv4()),
            option::of(any::<u32>()),
            option::of(any::<u32>()),
            any::<bool>(),
            option::of(aggregator(max_asn)),
            vec(any::<u32>().prop_map(Community), 0..80),
        ),
        (
            option::of(ipv4()),
            vec(ipv4(), 0..5),
            vec(any::<[u8; 8]>().prop_map(ExtCommunity), 0..5),
            as4,
            as4_agg,
            vec(any::<(u32, u32, u32)>(), 0..5),
            unknown_attrs(),
        ),
    )
        .prop_map(|(a, b)| PathAttrs {
            origin: a.0,
            as_path: a.1,
            next_hop: a.2,
            med: a.3,
            local_pref: a.4,
            atomic_aggregate: a.5,
            aggregator: a.6,
            communities: a.7,
            originator_id: b.0,
            cluster_list: b.1,
            ext_communities: b.2,
            as4_path: b.3,
            as4_aggregator: b.4,
            large_communities: b
                .5
                .into_iter()
                .map(|(g, l1, l2)| LargeCommunity {
                    global_admin: g,
                    local_data1: l1,
                    local_data2: l2,
                })
                .collect(),
            unknown: b.6,
        })
}

fn next_hop_v6() -> impl Strategy<Value = MpNextHop> {
    (ipv6(), option::of(ipv6()))
        .prop_map(|(global, link_local)| MpNextHop::Ipv6 { global, link_local })
}

fn mp_reach() -> impl Strategy<Value = MpReach> {
    prop_oneof![
        (
            prop_oneof![ipv4().prop_map(MpNextHop::Ipv4), next_hop_v6()],
            vec(net4(), 0..50)
        )
            .prop_map(|(next_hop, nlri)| MpReach::Ipv4Unicast { next_hop, nlri }),
        (next_hop_v6(), vec(net6(), 0..50))
            .prop_map(|(next_hop, nlri)| MpReach::Ipv6Unicast { next_hop, nlri }),
    ]
}

fn mp_unreach() -> impl Strategy<Value = MpUnreach> {
    prop_oneof![
        vec(net4(), 0..50).prop_map(MpUnreach::Ipv4Unicast),
        vec(net6(), 0..50).prop_map(MpUnreach::Ipv6Unicast),
        (2u16..100, 3u8..100, vec(any::<u8>(), 0..20)).prop_map(|(a, s, v)| MpUnreach::Unknown {
            afi: Afi(a),
            safi: Safi(s),
            value: Bytes::from(v),
        }),
    ]
}

/// Well-formed UPDATEs: mandatory attributes present when routes are.
fn update(four: bool) -> impl Strategy<Value = UpdateMsg> {
    (
        vec(net4(), 0..50),
        path_attrs(four),
        option::of(mp_reach()),
        option::of(mp_unreach()),
        vec(net4(), 0..50),
    )
        .prop_map(|(withdrawn, mut attrs, mp_reach, mp_unreach, nlri)| {
            if !nlri.is_empty() || mp_reach.as_ref().is_some_and(MpReach::has_nlri) {
                attrs.origin.get_or_insert(Origin::Igp);
                attrs.as_path.get_or_insert_with(AsPath::default);
            }
            if !nlri.is_empty() {
                attrs.next_hop.get_or_insert(Ipv4Addr::LOCALHOST);
            }
            UpdateMsg {
                withdrawn,
                attrs,
                mp_reach,
                mp_unreach,
                nlri,
                errors: Vec::new(),
            }
        })
}

fn message(four: bool) -> impl Strategy<Value = Message> {
    prop_oneof![
        open().prop_map(Message::Open),
        update(four).prop_map(|u| Message::Update(Box::new(u))),
        (any::<u8>(), any::<u8>(), vec(any::<u8>(), 0..64)).prop_map(|(c, s, d)| {
            Message::Notification(NotificationMsg::new(c, s, Bytes::from(d)))
        }),
        Just(Message::Keepalive),
        (afi(), any::<u8>(), safi()).prop_map(|(afi, st, safi)| {
            let subtype = match st {
                0 => RouteRefreshSubtype::Normal,
                1 => RouteRefreshSubtype::BoRR,
                2 => RouteRefreshSubtype::EoRR,
                v => RouteRefreshSubtype::Reserved(v),
            };
            Message::RouteRefresh(RouteRefreshMsg { afi, subtype, safi })
        }),
    ]
}

fn round_trip(m: &Message, ctx: &Context) -> Result<(), TestCaseError> {
    let bytes = m
        .to_bytes(ctx)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let back =
        Message::decode(bytes.clone(), ctx).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&back, m);
    // Encoding is deterministic.
    prop_assert_eq!(back.to_bytes(ctx).unwrap(), bytes);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn message_round_trip_four_octet(m in message(true)) {
        round_trip(&m, &EXT4)?;
    }

    #[test]
    fn message_round_trip_two_octet(m in message(false)) {
        round_trip(&m, &EXT2)?;
    }

    #[test]
    fn attributes_round_trip(attrs in path_attrs(true)) {
        let m = Message::Update(Box::new(UpdateMsg { attrs, ..UpdateMsg::default() }));
        round_trip(&m, &EXT4)?;
    }

    #[test]
    fn capability_round_trip(caps in vec(capability(), 0..5)) {
        let open = OpenMsg { my_as: 1, hold_time: 90, bgp_id: Ipv4Addr::LOCALHOST, capabilities: caps };
        round_trip(&Message::Open(open), &EXT4)?;
    }

    /// Arbitrary bodies behind a valid header never panic.
    #[test]
    fn decode_never_panics(t in 1u8..=5, body in vec(any::<u8>(), 0..600), four in any::<bool>()) {
        let mut v = vec![0xff; 16];
        v.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
        v.push(t);
        v.extend_from_slice(&body);
        let ctx = Context { four_octet_as: four, extended_message: false };
        if let Ok(m) = Message::decode(Bytes::from(v), &ctx) {
            let _ = m.to_bytes(&ctx);
        }
    }

    /// Mutating one byte of a valid message never panics.
    #[test]
    fn mutated_message_never_panics(m in message(true), pos in any::<usize>(), byte in any::<u8>()) {
        if let Ok(bytes) = m.to_bytes(&EXT4) {
            let mut v = bytes.to_vec();
            let i = pos % v.len();
            v[i] = byte;
            let _ = Message::decode(Bytes::from(v), &EXT4);
        }
    }
}
