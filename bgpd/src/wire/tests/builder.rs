//! UpdateBuilder packing.

use std::net::{Ipv4Addr, Ipv6Addr};

use bytes::BytesMut;
use ipnet::{Ipv4Net, Ipv6Net};

use super::*;
use crate::wire::*;

fn attrs() -> PathAttrs {
    PathAttrs {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath::from_sequence([65001])),
        communities: vec![Community::new(65001, 1)],
        ..PathAttrs::default()
    }
}

fn v4_prefixes(n: u32) -> Vec<Ipv4Net> {
    (0..n)
        .map(|i| Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + (i << 8)), 24).unwrap())
        .collect()
}

fn v6_prefixes(n: u32) -> Vec<Ipv6Net> {
    (0..n)
        .map(|i| {
            Ipv6Net::new(
                Ipv6Addr::from(0x2001_0db8_u128 << 96 | (i as u128) << 64),
                64,
            )
            .unwrap()
        })
        .collect()
}

/// Decodes every message in `buf`, checking each size.
fn decode_all(mut buf: BytesMut, ctx: &Context) -> Vec<UpdateMsg> {
    let mut v = Vec::new();
    while !buf.is_empty() {
        let len = u16::from_be_bytes([buf[16], buf[17]]) as usize;
        assert!(len <= ctx.max_message_len());
        match Message::decode_from(&mut buf, ctx).unwrap().unwrap() {
            Message::Update(u) => v.push(*u),
            m => panic!("{m:?}"),
        }
    }
    v
}

#[test]
fn announce_ipv4_classic_packs_full_messages() {
    let b = UpdateBuilder::new(CTX4);
    let prefixes = v4_prefixes(3000);
    let mut out = BytesMut::new();
    let nh = MpNextHop::Ipv4(Ipv4Addr::new(10, 0, 0, 1));
    let n = b.announce_ipv4(&attrs(), nh, &prefixes, &mut out).unwrap();
    let msgs = decode_all(out, &CTX4);
    assert_eq!(msgs.len(), n);
    // 4096 - 23 - 27 octets of attributes = 4046; 4 octets per /24.
    assert_eq!(msgs[0].nlri.len(), 1011);
    assert_eq!(n, 3);
    let mut all = Vec::new();
    for m in &msgs {
        assert!(m.errors.is_empty());
        assert_eq!(m.attrs.next_hop, Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(m.attrs.communities, attrs().communities);
        all.extend_from_slice(&m.nlri);
    }
    assert_eq!(all, prefixes);
}

#[test]
fn announce_ipv4_via_mp_reach() {
    let b = UpdateBuilder::new(CTX4).ipv4_mp_reach(true);
    let prefixes = v4_prefixes(1500);
    let mut out = BytesMut::new();
    let nh = MpNextHop::Ipv4(Ipv4Addr::new(10, 0, 0, 1));
    let n = b.announce_ipv4(&attrs(), nh, &prefixes, &mut out).unwrap();
    let msgs = decode_all(out, &CTX4);
    assert_eq!(n, 2);
    let mut all = Vec::new();
    for m in msgs {
        assert!(m.errors.is_empty(), "{:?}", m.errors);
        assert!(m.nlri.is_empty());
        assert_eq!(m.attrs.next_hop, None);
        match m.mp_reach {
            Some(MpReach::Ipv4Unicast { next_hop, nlri }) => {
                assert_eq!(next_hop, nh);
                all.extend(nlri);
            }
            r => panic!("{r:?}"),
        }
    }
    assert_eq!(all, prefixes);
}

#[test]
fn announce_ipv4_with_ipv6_next_hop_uses_mp_reach() {
    let b = UpdateBuilder::new(CTX4);
    let nh = MpNextHop::Ipv6 {
        global: "2001:db8::1".parse().unwrap(),
        link_local: None,
    };
    let mut out = BytesMut::new();
    b.announce_ipv4(&attrs(), nh, &v4_prefixes(3), &mut out)
        .unwrap();
    let msgs = decode_all(out, &CTX4);
    assert!(matches!(
        msgs[0].mp_reach,
        Some(MpReach::Ipv4Unicast { .. })
    ));
}

#[test]
fn announce_ipv6_and_extended_messages() {
    let prefixes = v6_prefixes(5000);
    let nh = MpNextHop::Ipv6 {
        global: "2001:db8::1".parse().unwrap(),
        link_local: Some("fe80::1".parse().unwrap()),
    };
    let mut out = BytesMut::new();
    let n = UpdateBuilder::new(CTX4)
        .announce_ipv6(&attrs(), nh, &prefixes, &mut out)
        .unwrap();
    let msgs = decode_all(out, &CTX4);
    assert_eq!(msgs.len(), n);
    let all: Vec<Ipv6Net> = msgs.iter().flat_map(|m| m.ipv6_nlri().to_vec()).collect();
    assert_eq!(all, prefixes);
    // RFC 8654: bigger messages, fewer of them.
    let ext = Context {
        extended_message: true,
        ..CTX4
    };
    let mut out = BytesMut::new();
    let n_ext = UpdateBuilder::new(ext)
        .announce_ipv6(&attrs(), nh, &prefixes, &mut out)
        .unwrap();
    assert!(n_ext < n);
    assert_eq!(decode_all(out, &ext).len(), n_ext);
    // IPv4 next hop for IPv6 NLRI is refused.
    let v4nh = MpNextHop::Ipv4(Ipv4Addr::LOCALHOST);
    let r = UpdateBuilder::new(CTX4).announce_ipv6(&attrs(), v4nh, &prefixes, &mut BytesMut::new());
    assert_eq!(r, Err(EncodeError::InvalidNextHop));
}

#[test]
fn withdrawals_ipv4_and_ipv6() {
    let v4 = v4_prefixes(2500);
    let mut out = BytesMut::new();
    let n = UpdateBuilder::new(CTX4)
        .withdraw_ipv4(&v4, &mut out)
        .unwrap();
    let msgs = decode_all(out, &CTX4);
    assert_eq!(n, 3);
    let all: Vec<Ipv4Net> = msgs.iter().flat_map(|m| m.withdrawn.clone()).collect();
    assert_eq!(all, v4);

    let mut out = BytesMut::new();
    UpdateBuilder::new(CTX4)
        .ipv4_mp_reach(true)
        .withdraw_ipv4(&v4, &mut out)
        .unwrap();
    let all: Vec<Ipv4Net> = decode_all(out, &CTX4)
        .into_iter()
        .flat_map(|m| match m.mp_unreach {
            Some(MpUnreach::Ipv4Unicast(v)) => v,
            u => panic!("{u:?}"),
        })
        .collect();
    assert_eq!(all, v4);

    let v6 = v6_prefixes(1000);
    let mut out = BytesMut::new();
    UpdateBuilder::new(CTX4)
        .withdraw_ipv6(&v6, &mut out)
        .unwrap();
    let all: Vec<Ipv6Net> = decode_all(out, &CTX4)
        .into_iter()
        .flat_map(|m| match m.mp_unreach {
            Some(MpUnreach::Ipv6Unicast(v)) => v,
            u => panic!("{u:?}"),
        })
        .collect();
    assert_eq!(all, v6);
}

#[test]
fn empty_input_writes_nothing() {
    let mut out = BytesMut::new();
    let b = UpdateBuilder::new(CTX4);
    assert_eq!(b.withdraw_ipv4(&[], &mut out), Ok(0));
    assert_eq!(
        b.announce_ipv4(
            &attrs(),
            MpNextHop::Ipv4(Ipv4Addr::LOCALHOST),
            &[],
            &mut out
        ),
        Ok(0)
    );
    assert!(out.is_empty());
}

#[test]
fn attributes_too_long() {
    let big = PathAttrs {
        communities: (0..1100).map(Community).collect(),
        ..attrs()
    };
    let r = UpdateBuilder::new(CTX4).announce_ipv4(
        &big,
        MpNextHop::Ipv4(Ipv4Addr::LOCALHOST),
        &v4_prefixes(1),
        &mut BytesMut::new(),
    );
    assert_eq!(r, Err(EncodeError::AttributesTooLong));
}

/// Full-table throughput; run with
/// `cargo test --release -p ironmesh-bgpd full_table -- --ignored --nocapture`.
#[test]
#[ignore]
fn full_table_encode_decode_speed() {
    let prefixes = v4_prefixes(1_000_000);
    let nh = MpNextHop::Ipv4(Ipv4Addr::new(10, 0, 0, 1));
    let t = std::time::Instant::now();
    let mut out = BytesMut::new();
    let n = UpdateBuilder::new(CTX4)
        .announce_ipv4(&attrs(), nh, &prefixes, &mut out)
        .unwrap();
    let enc = t.elapsed();
    let bytes = out.len();
    let t = std::time::Instant::now();
    let mut count = 0;
    while let Some(Message::Update(u)) = Message::decode_from(&mut out, &CTX4).unwrap() {
        count += u.nlri.len();
    }
    let dec = t.elapsed();
    assert_eq!(count, prefixes.len());
    println!("1M IPv4 prefixes, {n} UPDATEs, {bytes} octets: encode {enc:?}, decode {dec:?}");
}
