//! Encoding tests of [`super`] against the `<linux/xfrm.h>` layouts.
use super::*;

fn peer() -> XfrmPeer {
    XfrmPeer {
        node: "n2".into(),
        local_ip: "192.0.2.1".parse().unwrap(),
        remote_ip: "192.0.2.2".parse().unwrap(),
        local_pods: "10.244.1.0/24".parse().unwrap(),
        remote_pods: "10.244.2.0/24".parse().unwrap(),
    }
}

#[test]
fn policy_encoding_round_trips_through_the_decoder() {
    for p in policies(&peer(), 3) {
        let bytes = encode_policy(&p).unwrap().bytes(1);
        assert_eq!(
            bytes.len(),
            16 + POLICY_INFO_LEN + 4 + TMPL_LEN + if p.mark.is_some() { 12 } else { 0 }
        );
        assert_eq!(decode_policy(&bytes[16..]).as_ref(), Some(&p));
    }
    let mut opt = policies(&peer(), 3)[2].clone();
    opt.optional = true;
    let bytes = encode_policy(&opt).unwrap().bytes(1);
    assert_eq!(
        bytes[16 + POLICY_INFO_LEN + 4 + 50],
        1,
        "xfrm_user_tmpl.optional"
    );
    assert_eq!(decode_policy(&bytes[16..]), Some(opt), "level use survives");
    let lft = &bytes[16 + 56..16 + 120];
    assert!(
        lft[..32].iter().all(|b| *b == 0xff),
        "byte/packet limits: XFRM_INF"
    );
    assert!(lft[32..].iter().all(|b| *b == 0), "expiry times: 0 = never");
    let [out, inb, fwd] = policies(&peer(), 3);
    assert_eq!(out.mark, Some((0x3e00, 0xff00)));
    assert_eq!(
        (inb.dir, fwd.dir, inb.src),
        (Dir::In, Dir::Fwd, peer().remote_pods)
    );
}

fn key(index: u8) -> crate::ipsec::IpsecKey {
    crate::ipsec::keyfile::parse(
        std::path::Path::new("k"),
        &format!("{index} rfc4106(gcm(aes)) 000102030405060708090a0b0c0d0e0f10111213 128"),
    )
    .unwrap()
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// `ip xfrm state add src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x30010002 reqid 1 mode
/// tunnel replay-window 32 aead 'rfc4106(gcm(aes))' 0x000102…13 128 mark 0x3e00 mask 0xff00`
/// (iproute2 6.1, captured with strace): node 0x10002's outbound SA with key index 3.
const IP_XFRM_SA_OUT_V4: &str = "
    000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
    0000000000000000c00002020000000000000000000000003001000232000000c0000201000000000000000000000000
    ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff00000000000000000000000000000000
    000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
    000000000000000000000000000000000100000002000120000000000000000060001200726663343130362867636d28
    616573292900000000000000000000000000000000000000000000000000000000000000000000000000000000000000
    00000000a000000080000000000102030405060708090a0b0c0d0e0f101112130c001500003e000000ff0000";

/// The same for `src 2001:db8::2 dst 2001:db8::1 spi 0x40010003`, no mark: the inbound SA of
/// node 2001:db8::1 for the traffic of node 0x10003 with key index 4.
const IP_XFRM_SA_IN_V6: &str = "
    000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
    000000000000000020010db8000000000000000000000001400100033200000020010db8000000000000000000000002
    ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff00000000000000000000000000000000
    000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
    00000000000000000000000000000000010000000a000120000000000000000060001200726663343130362867636d28
    616573292900000000000000000000000000000000000000000000000000000000000000000000000000000000000000
    00000000a000000080000000000102030405060708090a0b0c0d0e0f10111213";

/// Our encoding is `ip xfrm`'s but for the selector's family, which `ip` leaves 0 for the
/// kernel to fill in from the SA's family (`copy_from_user_state`); ironmesh sets it.
fn as_ip_sends(mut payload: Vec<u8>) -> Vec<u8> {
    payload[40..42].copy_from_slice(&[0, 0]);
    payload
}

#[test]
fn sa_encoding_is_what_ip_xfrm_sends_both_ways() {
    use crate::ipsec::sa::{SaId, decode_sa_id};
    use crate::ipsec::spi::wire_spi;
    let cases = [
        (
            IP_XFRM_SA_OUT_V4,
            3,
            0x10002,
            "192.0.2.1",
            "192.0.2.2",
            true,
        ),
        (
            IP_XFRM_SA_IN_V6,
            4,
            0x10003,
            "2001:db8::2",
            "2001:db8::1",
            false,
        ),
    ];
    for (vector, index, sender, src, dst, outbound) in cases {
        let k = key(index);
        let id = SaId {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            spi: wire_spi(index, sender).unwrap(),
            mark: outbound.then(|| out_mark(index)),
        };
        let sa = Sa {
            src: id.src,
            dst: id.dst,
            spi: id.spi,
            key: &k,
            mark: id.mark,
        };
        let b = encode_sa(&sa).bytes(1);
        assert_eq!(u16::from_ne_bytes([b[4], b[5]]), XFRM_MSG_NEWSA);
        let vector = hex(vector);
        // Encoding → `ip`'s bytes, and `ip`'s bytes → the same SA identity.
        assert_eq!(as_ip_sends(b[16..].to_vec()), vector, "{src} -> {dst}");
        assert_eq!(decode_sa_id(&vector).as_ref(), Some(&id));
        assert_eq!(decode_sa_id(&b[16..]).as_ref(), Some(&id));
        let fam = u16::from_ne_bytes([b[16 + 40], b[16 + 41]]);
        assert_eq!(fam, family(id.dst), "selector family set by ironmesh");
    }
}

#[test]
fn sa_layout_matches_linux_xfrm_h() {
    let key = key(5);
    let sa = Sa {
        src: "192.0.2.1".parse().unwrap(),
        dst: "192.0.2.2".parse().unwrap(),
        spi: 0x5001_0001,
        key: &key,
        mark: Some(out_mark(5)),
    };
    let b = encode_sa(&sa).bytes(1);
    let info = &b[16..16 + SA_INFO_LEN];
    assert_eq!(&info[56..60], &[192, 0, 2, 2], "id.daddr");
    assert_eq!(&info[72..76], &[0x50, 0x01, 0, 1], "id.spi, network order");
    assert_eq!(info[76], IPPROTO_ESP);
    assert_eq!(&info[80..84], &[192, 0, 2, 1], "saddr");
    assert_eq!((info[214], info[215]), (XFRM_MODE_TUNNEL, 32));
    let attrs: Vec<_> = netlink::attrs(&b[16 + SA_INFO_LEN..]).collect();
    assert_eq!(attrs[0].0, XFRMA_ALG_AEAD);
    let aead = attrs[0].1;
    assert!(aead.starts_with(b"rfc4106(gcm(aes))\0"));
    assert_eq!(netlink::u32_at(aead, 64), Some(160), "key bits incl. salt");
    assert_eq!(netlink::u32_at(aead, 68), Some(128), "ICV bits");
    assert_eq!(aead[72..], key.expose()[..]);
    assert_eq!(attrs[1], (XFRMA_MARK, &mark_bytes((0x5e00, 0xff00))[..]));
}

#[test]
fn mixed_families_and_garbage_are_refused() {
    let mut p = policies(&peer(), 1)[0].clone();
    p.dst = "2001:db8::/64".parse().unwrap();
    assert!(
        encode_policy(&p)
            .unwrap_err()
            .to_string()
            .contains("families differ")
    );
    assert_eq!(decode_policy(&[0u8; 10]), None);
    let mut short = encode_policy(&policies(&peer(), 1)[1]).unwrap().bytes(1);
    short.truncate(16 + POLICY_INFO_LEN + 8);
    assert_eq!(decode_policy(&short[16..]), None, "template cut short");
}

/// Found by `scripts/fuzz xfrm_policy`: a selector with host bits (no policy ironmesh writes)
/// decoded into a policy whose re-encoding differed from it.
#[test]
fn selectors_with_host_bits_are_not_ours() {
    let p = policies(&peer(), 1)[0].clone();
    let good = encode_policy(&p).unwrap().bytes(1);
    assert_eq!(decode_policy(&good[16..]).as_ref(), Some(&p));
    for at in [16 + 3, 16 + 16 + 3] {
        // The last octet of the IPv4 destination (0..16), then of the source (16..32).
        let mut bad = good.clone();
        bad[at] |= 1;
        assert_eq!(decode_policy(&bad[16..]), None);
    }
}
