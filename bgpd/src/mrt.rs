//! MRT TABLE_DUMP_V2 (RFC 6396 §4.3) snapshots of the RIB, readable by bgpdump and other MRT
//! tools: a PEER_INDEX_TABLE, then one RIB_IPV4_UNICAST / RIB_IPV6_UNICAST record per prefix
//! with an entry per path.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use bytes::{BufMut, Bytes, BytesMut};
use ipnet::IpNet;

use crate::rib::{PeerId, Rib};
use crate::wire::{Context, MpNextHop};

/// MRT type TABLE_DUMP_V2 (RFC 6396 §4.3) and its subtypes.
const TABLE_DUMP_V2: u16 = 13;
const PEER_INDEX_TABLE: u16 = 1;
const RIB_IPV4_UNICAST: u16 = 2;
const RIB_IPV6_UNICAST: u16 = 4;
/// Peer type bits (§4.3.1): IPv6 address, 4-octet AS.
const PEER_IPV6: u8 = 1;
const PEER_AS4: u8 = 2;

fn record(out: &mut BytesMut, ts: u32, subtype: u16, body: &[u8]) {
    out.put_u32(ts);
    out.put_u16(TABLE_DUMP_V2);
    out.put_u16(subtype);
    out.put_u32(body.len() as u32);
    out.put_slice(body);
}

/// A TABLE_DUMP_V2 snapshot of every path in the RIB at time `ts` (seconds since the epoch).
/// Locally originated routes appear as learned from peer 0, ourselves.
pub fn table_dump_v2(rib: &Rib, ts: u32) -> (Bytes, usize) {
    let mut out = BytesMut::new();
    // §4.3.1: peer 0 is us (originated routes), then the configured peers.
    let mut index: BTreeMap<Option<PeerId>, u16> = BTreeMap::new();
    let mut body = BytesMut::new();
    body.put_slice(&rib.router_id().octets());
    body.put_u16(0); // no view name
    let peers: Vec<_> = rib.peers().cloned().collect();
    body.put_u16(1 + peers.len() as u16);
    put_peer(
        &mut body,
        rib.router_id(),
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        rib.local_asn(),
    );
    index.insert(None, 0);
    for (i, p) in peers.iter().enumerate() {
        put_peer(&mut body, p.router_id, p.address, p.asn);
        index.insert(Some(p.id), i as u16 + 1);
    }
    record(&mut out, ts, PEER_INDEX_TABLE, &body);

    // §4.3.4: attributes as in an UPDATE, AS numbers always 4 octets; MP_REACH_NLRI keeps only
    // the next hop.
    let ctx = Context {
        four_octet_as: true,
        extended_message: true,
    };
    let mut by_prefix: BTreeMap<IpNet, Vec<BytesMut>> = BTreeMap::new();
    let mut entries = 0;
    for r in rib.loc_rib() {
        let mut e = BytesMut::new();
        e.put_u16(index.get(&r.peer).copied().unwrap_or(0));
        e.put_u32(ts);
        let mut attrs = BytesMut::new();
        let v4_nh = match (r.prefix, &r.attrs.next_hop) {
            (IpNet::V4(_), Some(MpNextHop::Ipv4(nh))) => Some(*nh),
            _ => None,
        };
        r.attrs.attrs.encode_with(&mut attrs, &ctx, v4_nh);
        if let (IpNet::V6(_), Some(MpNextHop::Ipv6 { global, link_local })) =
            (r.prefix, &r.attrs.next_hop)
        {
            let mut nh = BytesMut::new();
            nh.put_slice(&global.octets());
            if let Some(ll) = link_local {
                nh.put_slice(&ll.octets());
            }
            attrs.put_u8(0x80); // optional
            attrs.put_u8(14); // MP_REACH_NLRI
            attrs.put_u8(1 + nh.len() as u8);
            attrs.put_u8(nh.len() as u8);
            attrs.put_slice(&nh);
        }
        e.put_u16(attrs.len() as u16);
        e.put_slice(&attrs);
        by_prefix.entry(r.prefix).or_default().push(e);
        entries += 1;
    }
    for (seq, (prefix, list)) in by_prefix.into_iter().enumerate() {
        let mut body = BytesMut::new();
        body.put_u32(seq as u32);
        body.put_u8(prefix.prefix_len());
        let octets = usize::from(prefix.prefix_len()).div_ceil(8);
        match prefix.addr() {
            IpAddr::V4(a) => body.put_slice(&a.octets()[..octets]),
            IpAddr::V6(a) => body.put_slice(&a.octets()[..octets]),
        }
        body.put_u16(list.len() as u16);
        for e in list {
            body.put_slice(&e);
        }
        let sub = if prefix.addr().is_ipv4() {
            RIB_IPV4_UNICAST
        } else {
            RIB_IPV6_UNICAST
        };
        record(&mut out, ts, sub, &body);
    }
    (out.freeze(), entries)
}

fn put_peer(b: &mut BytesMut, id: Ipv4Addr, addr: IpAddr, asn: u32) {
    let v6 = matches!(addr, IpAddr::V6(a) if a.to_ipv4_mapped().is_none());
    b.put_u8(PEER_AS4 | if v6 { PEER_IPV6 } else { 0 });
    b.put_slice(&id.octets());
    match addr {
        IpAddr::V4(a) => b.put_slice(&a.octets()),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => b.put_slice(&v4.octets()),
            None => b.put_slice(&a.octets()),
        },
    }
    b.put_u32(asn);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rib::Advert;

    #[test]
    fn empty_rib_has_a_peer_index_table_with_ourselves() {
        let rib = Rib::new(65001, "192.0.2.1".parse().unwrap());
        let (b, n) = table_dump_v2(&rib, 1_700_000_000);
        assert_eq!(n, 0);
        // Header: time, type 13, subtype 1, length.
        assert_eq!(
            &b[..12],
            &[0x65, 0x53, 0xf1, 0x00, 0, 13, 0, 1, 0, 0, 0, 21]
        );
        // Collector id, empty view name, 1 peer: AS4, id, 0.0.0.0, AS 65001.
        assert_eq!(
            &b[12..],
            &[
                192, 0, 2, 1, 0, 0, 0, 1, 2, 192, 0, 2, 1, 0, 0, 0, 0, 0, 0, 0xfd, 0xe9
            ]
        );
    }

    #[test]
    fn originated_route_is_one_rib_entry_from_peer_zero() {
        let mut rib = Rib::new(65001, "192.0.2.1".parse().unwrap());
        rib.originate(Advert {
            prefix: "10.244.1.0/24".parse().unwrap(),
            ..Advert::default()
        });
        rib.flush();
        let (b, n) = table_dump_v2(&rib, 0);
        assert_eq!(n, 1);
        let second = &b[12 + 21..];
        assert_eq!(&second[4..8], &[0, 13, 0, 2], "RIB_IPV4_UNICAST");
        // seq 0, /24, 3 prefix octets, 1 entry from peer 0.
        assert_eq!(&second[12..22], &[0, 0, 0, 0, 24, 10, 244, 1, 0, 1]);
        assert_eq!(&second[22..24], &[0, 0]);
    }
}
