//! RIB stories: peers come up, send UPDATEs, and we check what the RIB selects, installs and
//! sends back (decoding the produced bytes with the codec).

use std::net::{IpAddr, Ipv4Addr};

use bytes::{Bytes, BytesMut};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::*;
use crate::policy::{Match, Policy, Rule, Set, Verdict};
use crate::wire::{
    AS_TRANS, AsSegment, AsSegmentType, Community, Context, LargeCommunity, Message, MpNextHop,
    MpReach, Origin, PathAttrs, Safi, UpdateMsg,
};

mod decision;
mod errors;
mod export;
mod fib;
mod graceful;
mod originated;
mod semantics;
mod sessions;
mod updates;

const ASN: u32 = 65000;
const CTX4: Context = Context {
    four_octet_as: true,
    extended_message: false,
};

fn rid() -> Ipv4Addr {
    Ipv4Addr::new(10, 255, 255, 1)
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn n4(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn n6(s: &str) -> Ipv6Net {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn peer(id: u32, asn: u32) -> PeerInfo {
    PeerInfo {
        id: PeerId(id),
        address: IpAddr::V4(Ipv4Addr::new(192, 0, 2, id as u8)),
        asn,
        router_id: Ipv4Addr::new(10, 0, 0, id as u8),
        ibgp: asn == ASN,
        import: Policy::accept_all(),
        export: Policy::accept_all(),
        next_hop_self: false,
        enforce_first_as: false,
        max_accepted: None,
    }
}

fn session() -> SessionInfo {
    SessionInfo {
        families: vec![(Afi::IPV4, Safi::UNICAST), (Afi::IPV6, Safi::UNICAST)],
        ctx: CTX4,
        local_v4: Some(v4("192.0.2.254")),
        local_v6: Some("2001:db8::254".parse().unwrap()),
        local_v6_link_local: Some("fe80::254".parse().unwrap()),
        ipv4_over_ipv6_next_hop: false,
        long_lived_gr: false,
    }
}

/// A RIB with the given peers up and their initial End-of-RIB already flushed.
fn rib_with(peers: Vec<PeerInfo>) -> Rib {
    let mut rib = Rib::new(ASN, rid());
    for p in peers {
        let id = p.id;
        rib.add_peer(p).unwrap();
        rib.peer_up(id, session()).unwrap();
    }
    rib.flush();
    rib
}

fn attrs(path: &[u32]) -> PathAttrs {
    PathAttrs {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath::from_sequence(path.to_vec())),
        ..PathAttrs::default()
    }
}

/// An UPDATE as received: encoded and decoded again by the codec.
fn wire(u: UpdateMsg) -> UpdateMsg {
    let bytes = Message::Update(Box::new(u)).to_bytes(&CTX4).unwrap();
    match Message::decode(bytes, &CTX4).unwrap() {
        Message::Update(u) => *u,
        m => panic!("{m:?}"),
    }
}

fn announce(nh: &str, a: PathAttrs, prefixes: &[&str]) -> UpdateMsg {
    wire(UpdateMsg {
        attrs: PathAttrs {
            next_hop: Some(v4(nh)),
            ..a
        },
        nlri: prefixes.iter().map(|p| n4(p)).collect(),
        ..UpdateMsg::default()
    })
}

fn withdraw(prefixes: &[&str]) -> UpdateMsg {
    wire(UpdateMsg {
        withdrawn: prefixes.iter().map(|p| n4(p)).collect(),
        ..UpdateMsg::default()
    })
}

fn announce6(nh: MpNextHop, a: PathAttrs, prefixes: &[&str]) -> UpdateMsg {
    wire(UpdateMsg {
        attrs: a,
        mp_reach: Some(MpReach::Ipv6Unicast {
            next_hop: nh,
            nlri: prefixes.iter().map(|p| n6(p)).collect(),
        }),
        ..UpdateMsg::default()
    })
}

/// Decodes every message sent to `id` in `out`.
fn sent(out: &RibOutput, id: u32, ctx: &Context) -> Vec<UpdateMsg> {
    let mut v = Vec::new();
    for (_, bytes) in out.updates.iter().filter(|(p, _)| *p == PeerId(id)) {
        let mut buf = BytesMut::from(&bytes[..]);
        while !buf.is_empty() {
            let len = u16::from_be_bytes([buf[16], buf[17]]) as usize;
            assert!(len <= ctx.max_message_len());
            match Message::decode_from(&mut buf, ctx).unwrap().unwrap() {
                Message::Update(u) => {
                    assert!(u.errors.is_empty(), "{:?}", u.errors);
                    v.push(*u)
                }
                m => panic!("{m:?}"),
            }
        }
    }
    v
}

fn best_peer(rib: &Rib, prefix: &str) -> Option<PeerId> {
    rib.best(net(prefix)).and_then(|r| r.peer)
}

/// Two peers send the same prefix; returns who wins.
fn race(p1: PeerInfo, a1: PathAttrs, p2: PeerInfo, a2: PathAttrs) -> PeerId {
    let (id1, id2) = (p1.id, p2.id);
    let mut rib = rib_with(vec![p1, p2]);
    rib.apply_update(id1, &announce("192.0.2.1", a1, &["203.0.113.0/24"]))
        .unwrap();
    rib.apply_update(id2, &announce("192.0.2.2", a2, &["203.0.113.0/24"]))
        .unwrap();
    rib.flush();
    best_peer(&rib, "203.0.113.0/24").unwrap()
}
