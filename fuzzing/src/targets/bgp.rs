//! bgpd: the BGP message codec, its TCP framing and the BFD Control packet decoder (the same
//! properties as the cargo-fuzz targets in `fuzz/`).

use std::net::{Ipv4Addr, Ipv6Addr};

use bgpd::bfd::ControlPacket;
use bgpd::synth;
use bgpd::wire::{
    Afi, Capability, Context, MARKER, MAX_EXTENDED_MESSAGE_LEN, MAX_MESSAGE_LEN, Message,
    MpNextHop, NotificationMsg, OpenMsg, Safi, UpdateBuilder, next_frame,
};
use bytes::{Bytes, BytesMut};

use crate::Outcome;

fn ctx(flags: u8) -> Context {
    Context {
        four_octet_as: flags & 1 != 0,
        extended_message: flags & 2 != 0,
    }
}

/// decode(encode(m)) encodes to the same bytes as m.
fn check_stable(m: &Message, ctx: &Context) {
    let first = m.to_bytes(ctx).expect("a decoded message re-encodes");
    let again = Message::decode(first.clone(), ctx).expect("a re-encoded message decodes");
    assert_eq!(again.to_bytes(ctx).expect("encodes"), first);
}

/// `bgp_message`: the first byte picks the session context (4-octet AS, extended messages),
/// the rest is a TCP stream of messages and also one frame.
pub fn message(data: &[u8]) -> Outcome {
    let mut o = Outcome::default();
    let Some((&flags, rest)) = data.split_first() else {
        return o;
    };
    let ctx = ctx(flags);
    let mut buf = BytesMut::from(rest);
    loop {
        let r = Message::decode_from(&mut buf, &ctx);
        o.step("stream", &r);
        match r {
            Ok(Some(m)) => {
                o.note(std::mem::discriminant(&m));
                check_stable(&m, &ctx);
            }
            _ => break,
        }
    }
    let r = Message::decode(Bytes::copy_from_slice(rest), &ctx);
    o.step("frame", &r);
    if let Ok(m) = &r {
        check_stable(m, &ctx);
    }
    o
}

/// `bgp_update`: UPDATE bodies behind a valid header, with 2- and 4-octet AS contexts.
pub fn update(data: &[u8]) -> Outcome {
    let mut o = Outcome::default();
    if data.len() > MAX_MESSAGE_LEN - 19 {
        return o;
    }
    let mut frame = MARKER.to_vec();
    frame.extend_from_slice(&((19 + data.len()) as u16).to_be_bytes());
    frame.push(2);
    frame.extend_from_slice(data);
    let frame = Bytes::from(frame);
    for flags in [0, 1] {
        let ctx = ctx(flags);
        let r = Message::decode(frame.clone(), &ctx);
        o.step("update", &r);
        if let Ok(m) = &r {
            check_stable(m, &ctx);
        }
    }
    o
}

/// `bgp_frames`: a byte stream arriving in pieces into `wire::next_frame`. Frames carry the
/// marker and their header's length; the frames are the stream's first octets in order; an
/// error or a wait consumes nothing. The first byte picks the maximum length and piece size.
pub fn frames(data: &[u8]) -> Outcome {
    let mut o = Outcome::default();
    let Some((&flags, stream)) = data.split_first() else {
        return o;
    };
    let max = if flags & 1 != 0 {
        MAX_EXTENDED_MESSAGE_LEN
    } else {
        MAX_MESSAGE_LEN
    };
    let piece = usize::from(flags >> 1).max(1);
    let mut buf = BytesMut::new();
    let mut framed = Vec::new();
    for chunk in stream.chunks(piece) {
        buf.extend_from_slice(chunk);
        loop {
            let before = buf.len();
            let r = next_frame(&mut buf, max);
            match r {
                Ok(Some(f)) => {
                    o.note("frame");
                    assert_eq!(f[..16], MARKER);
                    let len = usize::from(u16::from_be_bytes([f[16], f[17]]));
                    assert_eq!(f.len(), len);
                    assert!((19..=max).contains(&len));
                    framed.extend_from_slice(&f);
                }
                Ok(None) => {
                    assert_eq!(buf.len(), before);
                    break;
                }
                Err(e) => {
                    assert_eq!(buf.len(), before);
                    o.step::<(), _>("frame", &Err(e));
                    return o;
                }
            }
        }
        assert_eq!(framed[..], stream[..framed.len()]);
    }
    o.accepted = true;
    o
}

/// `bfd_packet`: any bytes into the BFD Control packet decoder; what decodes re-encodes to
/// bytes that decode to the same packet.
pub fn bfd(data: &[u8]) -> Outcome {
    let mut o = Outcome::default();
    let r = ControlPacket::decode(data);
    o.step("bfd", &r);
    if let Ok(p) = &r {
        let again = ControlPacket::decode(&p.encode()).expect("a re-encoded packet decodes");
        assert_eq!(&again, p);
    }
    o
}

/// OPEN, KEEPALIVE, NOTIFICATION and UPDATEs (v4 classic and MP, v6 MP, withdrawals) made by
/// bgpd's encoders, for one context.
fn messages(ctx: &Context) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let open = OpenMsg {
        my_as: 23456,
        hold_time: 90,
        bgp_id: Ipv4Addr::new(192, 0, 2, 1),
        capabilities: vec![
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
            Capability::ExtendedMessage,
            Capability::FourOctetAs(4_200_000_001),
            Capability::Unknown {
                code: 200,
                value: Bytes::from_static(&[1, 2, 3]),
            },
        ],
    };
    let notification = NotificationMsg::new(6, 2, Bytes::from_static(b"shutdown"));
    for m in [
        Message::Open(open),
        Message::Keepalive,
        Message::Notification(notification),
    ] {
        out.push(m.to_bytes(ctx).expect("encodes").to_vec());
    }
    let mut rng = synth::Rng(7);
    let attrs = synth::attr_sets(&mut rng, 3, 65010);
    let v4 = synth::v4_prefixes(&mut rng, 6, |_| true);
    let v6 = synth::v6_prefixes(&mut rng, 4, |_| true);
    let nh4 = MpNextHop::Ipv4(Ipv4Addr::new(192, 0, 2, 1));
    let nh6 = MpNextHop::Ipv6 {
        global: Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1),
        link_local: Some(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1)),
    };
    for mp in [false, true] {
        let b = UpdateBuilder::new(*ctx).ipv4_mp_reach(mp);
        let mut buf = BytesMut::new();
        b.announce_ipv4(&attrs[0], nh4, &v4[..3], &mut buf)
            .expect("encodes");
        out.push(buf.to_vec());
        let mut buf = BytesMut::new();
        b.withdraw_ipv4(&v4[3..], &mut buf).expect("encodes");
        out.push(buf.to_vec());
    }
    let b = UpdateBuilder::new(*ctx);
    let mut buf = BytesMut::new();
    b.announce_ipv6(&attrs[1], nh6, &v6[..2], &mut buf)
        .expect("encodes");
    out.push(buf.to_vec());
    let mut buf = BytesMut::new();
    b.withdraw_ipv6(&v6[2..], &mut buf).expect("encodes");
    out.push(buf.to_vec());
    let mut buf = BytesMut::new();
    b.announce_ipv4(&attrs[2], nh6, &v4[..2], &mut buf)
        .expect("encodes");
    out.push(buf.to_vec());
    out
}

pub fn message_seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for flags in [0u8, 1, 3] {
        for m in messages(&ctx(flags)) {
            let mut s = vec![flags];
            s.extend(m);
            out.push(s);
        }
    }
    out
}

pub fn update_seeds() -> Vec<Vec<u8>> {
    messages(&ctx(0))
        .into_iter()
        .chain(messages(&ctx(1)))
        .filter(|m| m[18] == 2)
        .map(|m| m[19..].to_vec())
        .collect()
}

pub fn frames_seeds() -> Vec<Vec<u8>> {
    let all: Vec<u8> = messages(&ctx(1)).concat();
    vec![
        [&[0u8][..], &all].concat(),
        [&[7u8 << 1][..], &all].concat(),
        [&[1u8 | (40 << 1)][..], &all].concat(),
    ]
}

pub fn bfd_seeds() -> Vec<Vec<u8>> {
    let base = ControlPacket::decode(&{
        let mut b = [0u8; 24];
        b[0] = 1 << 5;
        b[1] = 1 << 6; // Down
        b[2] = 3;
        b[3] = 24;
        b[4..8].copy_from_slice(&1u32.to_be_bytes());
        b[12..16].copy_from_slice(&1_000_000u32.to_be_bytes());
        b[16..20].copy_from_slice(&1_000_000u32.to_be_bytes());
        b
    })
    .expect("a valid Down packet");
    let mut up = base;
    up.your_disc = 7;
    up.poll = true;
    vec![base.encode().to_vec(), up.encode().to_vec()]
}

pub const BGP_TOKENS: &[&[u8]] = &[
    &[0xff; 16],
    &[0x40, 0x01, 0x01, 0x00],
    &[0x50, 0x02, 0x00, 0x00],
    &[0x80, 0x0e],
    &[0x80, 0x0f],
    &[0xc0, 0x08],
    &[0xc0, 0x20],
    &[0x02, 0x06, 0x01, 0x04, 0x00, 0x01, 0x00, 0x01],
    &[0x41, 0x04],
];
