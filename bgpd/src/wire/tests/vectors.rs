//! Wire vectors, checked both ways (decode and encode).

use std::net::{Ipv4Addr, Ipv6Addr};

use bytes::{Bytes, BytesMut};

use super::*;
use crate::wire::*;

fn open_msg(caps: Vec<Capability>) -> Message {
    Message::Open(OpenMsg {
        my_as: 65001,
        hold_time: 180,
        bgp_id: Ipv4Addr::new(10, 0, 0, 1),
        capabilities: caps,
    })
}

fn upd(u: UpdateMsg) -> Message {
    Message::Update(Box::new(u))
}

const V4U: (Afi, Safi) = (Afi::IPV4, Safi::UNICAST);

#[test]
fn keepalive() {
    both_ways(&msg(4, ""), &Message::Keepalive, &CTX4);
}

/// A router's OPEN with all capabilities in one optional parameter (BIRD
/// style), RFC 5492 §4.
#[test]
fn open_router_capabilities() {
    let wire = msg(
        1,
        "04 fde9 00b4 0a000001 3f 02 3d
         01 04 0001 00 01
         01 04 0002 00 01
         02 00
         46 00
         41 04 0000fde9
         40 06 4078 0001 01 80
         45 04 0001 01 01
         06 00
         47 07 0001 01 80 000e10
         05 06 0001 0001 0002
         49 04 02 7231 00",
    );
    let expected = open_msg(vec![
        Capability::Multiprotocol {
            afi: Afi::IPV4,
            safi: Safi::UNICAST,
        },
        Capability::Multiprotocol {
            afi: Afi::IPV6,
            safi: Safi::UNICAST,
        },
        Capability::RouteRefresh,
        Capability::EnhancedRouteRefresh,
        Capability::FourOctetAs(65001),
        Capability::GracefulRestart(GracefulRestart {
            restart_state: false,
            notification: true,
            restart_time: 120,
            families: vec![GrFamily {
                afi: Afi::IPV4,
                safi: Safi::UNICAST,
                forwarding: true,
            }],
        }),
        Capability::AddPath(vec![AddPathFamily {
            afi: Afi::IPV4,
            safi: Safi::UNICAST,
            mode: AddPathMode::Receive,
        }]),
        Capability::ExtendedMessage,
        Capability::LongLivedGracefulRestart(vec![LlgrFamily {
            afi: Afi::IPV4,
            safi: Safi::UNICAST,
            forwarding: true,
            stale_time: 3600,
        }]),
        Capability::ExtendedNextHop(vec![ExtNextHopEntry {
            nlri_afi: Afi::IPV4,
            nlri_safi: 1,
            next_hop_afi: Afi::IPV6,
        }]),
        Capability::Unknown {
            code: 73,
            value: hex("02723100"),
        },
    ]);
    both_ways(&wire, &expected, &CTX2);
    let Message::Open(o) = expected else {
        unreachable!()
    };
    assert_eq!(o.asn(), 65001);
    assert!(o.has_capability(cap_code::GRACEFUL_RESTART));
}

/// One capability per optional parameter (Cisco/FRR style) decodes to the
/// same value; we re-encode into one parameter.
#[test]
fn open_one_capability_per_parameter() {
    let wire = msg(
        1,
        "04 fde9 00b4 0a000001 14
         02 06 01040001 0001  02 02 0200  02 06 4104 0000fde9",
    );
    let expected = open_msg(vec![
        Capability::Multiprotocol {
            afi: Afi::IPV4,
            safi: Safi::UNICAST,
        },
        Capability::RouteRefresh,
        Capability::FourOctetAs(65001),
    ]);
    assert_eq!(Message::decode(wire, &CTX2).unwrap(), expected);
    let out = expected.to_bytes(&CTX2).unwrap();
    let canonical = msg(
        1,
        "04 fde9 00b4 0a000001 10 02 0e 010400010001 0200 41040000fde9",
    );
    assert_eq!(out, canonical);
}

/// RFC 9072 §2: extended optional parameters length.
#[test]
fn open_extended_optional_parameters() {
    let wire = msg(
        1,
        "04 fde9 00b4 0a000001 ff ff 000b 02 0008 010400010001 0200",
    );
    let expected = open_msg(vec![
        Capability::Multiprotocol {
            afi: Afi::IPV4,
            safi: Safi::UNICAST,
        },
        Capability::RouteRefresh,
    ]);
    assert_eq!(Message::decode(wire, &CTX2).unwrap(), expected);
    // Long capability lists are sent in the extended form.
    let caps: Vec<Capability> = (0..30)
        .map(|i| Capability::Unknown {
            code: 200,
            value: Bytes::from(vec![i; 8]),
        })
        .collect();
    let big = open_msg(caps);
    let bytes = big.to_bytes(&CTX2).unwrap();
    assert_eq!(&bytes[28..32], &[0xff, 0xff, 0x01, 0x2f]);
    assert_eq!(Message::decode(bytes, &CTX2).unwrap(), big);
}

#[test]
fn open_without_capabilities() {
    let wire = msg(1, "04 fde9 0000 0a000001 00");
    let mut m = open_msg(vec![]);
    if let Message::Open(o) = &mut m {
        o.hold_time = 0;
    }
    both_ways(&wire, &m, &CTX2);
}

fn base_attrs(as_path: AsPath) -> PathAttrs {
    PathAttrs {
        origin: Some(Origin::Igp),
        as_path: Some(as_path),
        ..PathAttrs::default()
    }
}

/// RFC 4271 §4.3: classic IPv4 UPDATE with a trailing-bit prefix (/25).
#[test]
fn update_ipv4_classic() {
    let wire = msg(
        2,
        "0000 002a
         40 01 01 00
         40 02 0a 02 02 0000fde9 0000fdea
         40 03 04 0a000001
         80 04 04 00000064
         c0 08 08 fde90064 ffffff01
         10 0a01  18 c0a801  19 0a020380",
    );
    let attrs = PathAttrs {
        next_hop: Some(Ipv4Addr::new(10, 0, 0, 1)),
        med: Some(100),
        communities: vec![Community::new(65001, 100), Community::NO_EXPORT],
        ..base_attrs(AsPath::from_sequence([65001, 65002]))
    };
    let u = UpdateMsg {
        attrs,
        nlri: vec![
            net4("10.1.0.0/16"),
            net4("192.168.1.0/24"),
            net4("10.2.3.128/25"),
        ],
        ..UpdateMsg::default()
    };
    both_ways(&wire, &upd(u), &CTX4);
}

/// RFC 6793 §4.2.2: a 2-octet session carries AS_TRANS plus AS4_PATH;
/// ATOMIC_AGGREGATE and 2-octet AGGREGATOR.
#[test]
fn update_two_octet_with_as4_path() {
    let wire = msg(
        2,
        "0000 002d
         40 01 01 00
         40 02 06 02 02 fde9 5ba0
         40 03 04 0a000001
         40 06 00
         c0 07 06 fde9 0a000001
         c0 11 0a 02 02 0000fde9 fa56ea00
         18 c0a802",
    );
    let attrs = PathAttrs {
        next_hop: Some(Ipv4Addr::new(10, 0, 0, 1)),
        atomic_aggregate: true,
        aggregator: Some(Aggregator {
            asn: 65001,
            address: Ipv4Addr::new(10, 0, 0, 1),
        }),
        as4_path: Some(AsPath::from_sequence([65001, 4_200_000_000])),
        ..base_attrs(AsPath::from_sequence([65001, 23456]))
    };
    let u = UpdateMsg {
        attrs,
        nlri: vec![net4("192.168.2.0/24")],
        ..UpdateMsg::default()
    };
    both_ways(&wire, &upd(u), &CTX2);

    // The encoder derives AS4_PATH from a 4-octet path itself.
    let attrs = PathAttrs {
        next_hop: Some(Ipv4Addr::new(10, 0, 0, 1)),
        atomic_aggregate: true,
        aggregator: Some(Aggregator {
            asn: 65001,
            address: Ipv4Addr::new(10, 0, 0, 1),
        }),
        ..base_attrs(AsPath::from_sequence([65001, 4_200_000_000]))
    };
    let u = UpdateMsg {
        attrs,
        nlri: vec![net4("192.168.2.0/24")],
        ..UpdateMsg::default()
    };
    assert_eq!(upd(u).to_bytes(&CTX2).unwrap(), wire);
}

/// RFC 6793 §3: 4-octet AGGREGATOR; AS_SET segment.
#[test]
fn update_aggregator_four_octet_and_as_set() {
    let wire = msg(
        2,
        "0000 0029
         40 01 01 00
         40 02 10 02 01 0000fde9 01 02 0000fdea 0000fdeb
         40 03 04 0a000001
         c0 07 08 fa56ea00 0a000001
         08 0a",
    );
    let path = AsPath {
        segments: vec![
            AsSegment {
                kind: AsSegmentType::Sequence,
                asns: vec![65001],
            },
            AsSegment {
                kind: AsSegmentType::Set,
                asns: vec![65002, 65003],
            },
        ],
    };
    assert_eq!(path.path_len(), 2);
    let attrs = PathAttrs {
        next_hop: Some(Ipv4Addr::new(10, 0, 0, 1)),
        aggregator: Some(Aggregator {
            asn: 4_200_000_000,
            address: Ipv4Addr::new(10, 0, 0, 1),
        }),
        ..base_attrs(path)
    };
    let u = UpdateMsg {
        attrs,
        nlri: vec![net4("10.0.0.0/8")],
        ..UpdateMsg::default()
    };
    both_ways(&wire, &upd(u), &CTX4);
}

/// iBGP/route-reflector attributes, well-known communities (RFC 8326,
/// RFC 9494), extended (RFC 4360) and large (RFC 8092) communities.
#[test]
fn update_ibgp_attributes() {
    let wire = msg(
        2,
        "0000 0057
         40 01 01 02
         40 02 00
         40 03 04 0a000001
         80 04 04 00000000
         40 05 04 000000c8
         c0 08 0c ffff0000 ffff0006 ffff0007
         80 09 04 0a000002
         80 0a 08 0a000003 0a000004
         c0 10 08 0002fde900000064
         c0 20 0c 0000fde9 00000001 00000002
         20 0a000001",
    );
    let attrs = PathAttrs {
        origin: Some(Origin::Incomplete),
        as_path: Some(AsPath::default()),
        next_hop: Some(Ipv4Addr::new(10, 0, 0, 1)),
        med: Some(0),
        local_pref: Some(200),
        communities: vec![
            Community::GRACEFUL_SHUTDOWN,
            Community::LLGR_STALE,
            Community::NO_LLGR,
        ],
        originator_id: Some(Ipv4Addr::new(10, 0, 0, 2)),
        cluster_list: vec![Ipv4Addr::new(10, 0, 0, 3), Ipv4Addr::new(10, 0, 0, 4)],
        ext_communities: vec![ExtCommunity([0x00, 0x02, 0xfd, 0xe9, 0, 0, 0, 0x64])],
        large_communities: vec![LargeCommunity {
            global_admin: 65001,
            local_data1: 1,
            local_data2: 2,
        }],
        ..PathAttrs::default()
    };
    let u = UpdateMsg {
        attrs,
        nlri: vec![net4("10.0.0.1/32")],
        ..UpdateMsg::default()
    };
    both_ways(&wire, &upd(u), &CTX4);
}

/// RFC 4760 §3, RFC 2545 §3: IPv6 unicast with global + link-local.
#[test]
fn update_ipv6_mp_reach() {
    let wire = msg(
        2,
        "0000 003d
         80 0e 2c 0002 01 20
            20010db8000000000000000000000001
            fe800000000000000000000000000001
            00 30 20010db80001
         40 01 01 00
         40 02 00
         40 05 04 00000064",
    );
    let attrs = PathAttrs {
        local_pref: Some(100),
        ..base_attrs(AsPath::default())
    };
    let u = UpdateMsg {
        attrs,
        mp_reach: Some(MpReach::Ipv6Unicast {
            next_hop: MpNextHop::Ipv6 {
                global: "2001:db8::1".parse().unwrap(),
                link_local: Some("fe80::1".parse().unwrap()),
            },
            nlri: vec![net6("2001:db8:1::/48")],
        }),
        ..UpdateMsg::default()
    };
    both_ways(&wire, &upd(u.clone()), &CTX4);
    assert_eq!(u.ipv6_nlri(), &[net6("2001:db8:1::/48")]);
}

/// RFC 8950 §4: IPv4 NLRI with an IPv6 next hop.
#[test]
fn update_ipv4_with_ipv6_next_hop() {
    let wire = msg(
        2,
        "0000 0029
         80 0e 19 0001 01 10 20010db8000000000000000000000001 00 18 c0a801
         40 01 01 00
         40 02 06 02 01 0000fde9",
    );
    let u = UpdateMsg {
        attrs: base_attrs(AsPath::from_sequence([65001])),
        mp_reach: Some(MpReach::Ipv4Unicast {
            next_hop: MpNextHop::Ipv6 {
                global: "2001:db8::1".parse().unwrap(),
                link_local: None,
            },
            nlri: vec![net4("192.168.1.0/24")],
        }),
        ..UpdateMsg::default()
    };
    both_ways(&wire, &upd(u), &CTX4);
}

/// RFC 4760 §4.
#[test]
fn update_ipv6_mp_unreach() {
    let wire = msg(2, "0000 000d 80 0f 0a 0002 01 30 20010db80001");
    let u = UpdateMsg {
        mp_unreach: Some(MpUnreach::Ipv6Unicast(vec![net6("2001:db8:1::/48")])),
        ..UpdateMsg::default()
    };
    both_ways(&wire, &upd(u), &CTX4);
}

/// RFC 4271 §4.3: withdrawn routes.
#[test]
fn update_ipv4_withdraw() {
    let wire = msg(2, "0007 18c0a801 100a01 0000");
    let u = UpdateMsg {
        withdrawn: vec![net4("192.168.1.0/24"), net4("10.1.0.0/16")],
        ..UpdateMsg::default()
    };
    both_ways(&wire, &upd(u), &CTX4);
}

/// RFC 4724 §2: End-of-RIB markers.
#[test]
fn end_of_rib() {
    let v4 = UpdateMsg::end_of_rib_marker(Afi::IPV4, Safi::UNICAST);
    both_ways(&msg(2, "0000 0000"), &upd(v4.clone()), &CTX4);
    assert_eq!(v4.end_of_rib(), Some(V4U));
    let v6 = UpdateMsg::end_of_rib_marker(Afi::IPV6, Safi::UNICAST);
    both_ways(&msg(2, "0000 0006 800f03 000201"), &upd(v6.clone()), &CTX4);
    assert_eq!(v6.end_of_rib(), Some((Afi::IPV6, Safi::UNICAST)));
    let other = UpdateMsg::end_of_rib_marker(Afi(25), Safi(70));
    both_ways(
        &msg(2, "0000 0006 800f03 001946"),
        &upd(other.clone()),
        &CTX4,
    );
    assert_eq!(other.end_of_rib(), Some((Afi(25), Safi(70))));
    let not_eor = update("0000 0007 800f04 00020100", &CTX4).unwrap();
    assert_eq!(not_eor.end_of_rib(), None);
}

/// RFC 4760: MP attributes of families we do not parse are kept raw.
#[test]
fn update_mp_unknown_family_kept_raw() {
    let wire = msg(
        2,
        "0000 0016 80 0e 0c 0019 46 04 0a000001 00 aabbcc 40 01 01 00 40 02 00",
    );
    let u = UpdateMsg {
        attrs: base_attrs(AsPath::default()),
        mp_reach: Some(MpReach::Unknown {
            afi: Afi(25),
            safi: Safi(70),
            value: hex("04 0a000001 00 aabbcc"),
        }),
        ..UpdateMsg::default()
    };
    both_ways(&wire, &upd(u), &CTX4);
}

/// RFC 4271 §5: unknown optional transitive attributes are passed on with
/// Partial set; unknown optional non-transitive ones are not passed on.
#[test]
fn update_unknown_attributes() {
    let wire = msg(
        2,
        "0000 0010 40 01 01 00 40 02 00 c0 63 02 abcd 80 64 01 ff",
    );
    let u = update(
        "0000 0010 40 01 01 00 40 02 00 c0 63 02 abcd 80 64 01 ff",
        &CTX4,
    )
    .unwrap();
    assert!(u.errors.is_empty());
    assert_eq!(
        u.attrs.unknown,
        vec![
            RawAttr {
                flags: 0xc0,
                type_code: 0x63,
                value: hex("abcd")
            },
            RawAttr {
                flags: 0x80,
                type_code: 0x64,
                value: hex("ff")
            },
        ]
    );
    let out = upd(u).to_bytes(&CTX4).unwrap();
    assert_ne!(out, wire);
    assert_eq!(out, msg(2, "0000 000c 40 01 01 00 40 02 00 e0 63 02 abcd"));
}

/// RFC 4271 §4.3: Extended Length is chosen when the value exceeds 255
/// octets and accepted on short values.
#[test]
fn extended_length_attribute() {
    let communities: Vec<Community> = (0..70).map(|i| Community::new(65001, i)).collect();
    let u = UpdateMsg {
        attrs: PathAttrs {
            communities: communities.clone(),
            ..PathAttrs::default()
        },
        ..UpdateMsg::default()
    };
    let bytes = upd(u.clone()).to_bytes(&CTX4).unwrap();
    assert_eq!(&bytes[23..27], &[0xd0, 0x08, 0x01, 0x18]);
    assert_eq!(Message::decode(bytes, &CTX4).unwrap(), upd(u));
    // Extended Length on a short value decodes the same.
    let short = update("0000 0005 50 01 0001 00", &CTX4).unwrap();
    assert_eq!(short.attrs.origin, Some(Origin::Igp));
    assert!(short.errors.is_empty());
}

/// RFC 4271 §4.3: trailing bits past the prefix length are ignored.
#[test]
fn nlri_trailing_bits_masked() {
    let u = update(
        "0000 000e 40 01 01 00 40 02 00 40 03 04 0a000001 17 c0a8ff",
        &CTX4,
    )
    .unwrap();
    assert_eq!(u.nlri, vec![net4("192.168.254.0/23")]);
    let u = update("0000 0000 00", &CTX4).unwrap();
    assert_eq!(u.nlri, vec![net4("0.0.0.0/0")]);
}

#[test]
fn notification_cease_shutdown_communication() {
    // RFC 9003 §2: length octet then UTF-8 text.
    let wire = msg(3, "06 02 0b 6d61696e74656e616e6365");
    let n = NotificationMsg::cease_with_communication(
        cease_subcode::ADMINISTRATIVE_SHUTDOWN,
        "maintenance",
    );
    assert_eq!(n.shutdown_communication(), Some("maintenance"));
    both_ways(&wire, &Message::Notification(n), &CTX4);
    let reset = NotificationMsg::cease_with_communication(cease_subcode::ADMINISTRATIVE_RESET, "");
    both_ways(
        &msg(3, "06 04 00"),
        &Message::Notification(reset.clone()),
        &CTX4,
    );
    assert_eq!(reset.shutdown_communication(), Some(""));
    // Other Cease subcodes carry no communication.
    let n = NotificationMsg::new(
        error_code::CEASE,
        cease_subcode::PEER_DECONFIGURED,
        Bytes::new(),
    );
    both_ways(&msg(3, "06 03"), &Message::Notification(n.clone()), &CTX4);
    assert_eq!(n.shutdown_communication(), None);
    // Over-long text is cut at a character boundary (255 octets).
    let long = "é".repeat(200);
    let n = NotificationMsg::cease_with_communication(2, &long);
    assert_eq!(n.data[0], 254);
    assert_eq!(n.shutdown_communication().map(str::len), Some(254));
}

#[test]
fn notification_with_data() {
    let n = NotificationMsg::new(error_code::HOLD_TIMER_EXPIRED, 0, Bytes::new());
    both_ways(&msg(3, "04 00"), &Message::Notification(n), &CTX4);
    let n = NotificationMsg::new(
        error_code::OPEN_MESSAGE,
        open_subcode::UNSUPPORTED_CAPABILITY,
        hex("0104 00020001"),
    );
    both_ways(
        &msg(3, "02 07 0104 00020001"),
        &Message::Notification(n),
        &CTX4,
    );
}

#[test]
fn route_refresh() {
    // RFC 2918 §3 and RFC 7313 §3 subtypes.
    for (body, subtype, afi) in [
        ("0001 00 01", RouteRefreshSubtype::Normal, Afi::IPV4),
        ("0002 01 01", RouteRefreshSubtype::BoRR, Afi::IPV6),
        ("0001 02 01", RouteRefreshSubtype::EoRR, Afi::IPV4),
        ("0001 07 01", RouteRefreshSubtype::Reserved(7), Afi::IPV4),
    ] {
        let m = Message::RouteRefresh(RouteRefreshMsg {
            afi,
            subtype,
            safi: Safi::UNICAST,
        });
        both_ways(&msg(5, body), &m, &CTX4);
    }
}

#[test]
fn ipv6_next_hop_without_link_local() {
    let nh = MpNextHop::Ipv6 {
        global: Ipv6Addr::LOCALHOST,
        link_local: None,
    };
    let mut b = BytesMut::new();
    nh.encode(&mut b);
    assert_eq!(b.len(), 17);
}

/// RFC 6793 §4.2.3: reconstructing the 4-octet path.
#[test]
fn as4_path_merge() {
    let seq = |v: &[u32]| AsSegment {
        kind: AsSegmentType::Sequence,
        asns: v.to_vec(),
    };
    // A 2-octet speaker prepended 65010 after the AS4_PATH was formed.
    let two = AsPath {
        segments: vec![seq(&[65010, 65001, 23456])],
    };
    let four = AsPath::from_sequence([65001, 4_200_000_000]);
    assert_eq!(
        two.merge_as4_path(&four).segments,
        vec![seq(&[65010]), seq(&[65001, 4_200_000_000])]
    );
    // AS4_PATH longer than AS_PATH: ignored.
    let long = AsPath::from_sequence([1, 2, 3, 4]);
    assert_eq!(two.merge_as4_path(&long), two);
    // Through the attribute set, including AS4_AGGREGATOR.
    let addr = Ipv4Addr::new(10, 0, 0, 1);
    let mut attrs = PathAttrs {
        as_path: Some(two.clone()),
        as4_path: Some(four.clone()),
        aggregator: Some(Aggregator {
            asn: 23456,
            address: addr,
        }),
        as4_aggregator: Some(Aggregator {
            asn: 4_200_000_000,
            address: addr,
        }),
        ..PathAttrs::default()
    };
    let (path, agg) = attrs.effective_as_path();
    assert_eq!(path, Some(two.merge_as4_path(&four)));
    assert_eq!(agg.map(|a| a.asn), Some(4_200_000_000));
    // A real AS in AGGREGATOR: AS4_* ignored.
    attrs.aggregator = Some(Aggregator {
        asn: 65010,
        address: addr,
    });
    assert_eq!(attrs.effective_as_path(), (Some(two), attrs.aggregator));
}
