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

#[test]
fn sa_layout_matches_linux_xfrm_h() {
    let key = crate::ipsec::keyfile::parse(
        std::path::Path::new("k"),
        "5 rfc4106(gcm(aes)) 000102030405060708090a0b0c0d0e0f10111213 128",
    )
    .unwrap();
    let sa = Sa {
        src: "192.0.2.1".parse().unwrap(),
        dst: "192.0.2.2".parse().unwrap(),
        key: &key,
        mark: Some(out_mark(5)),
    };
    let b = encode_sa(&sa).bytes(1);
    let info = &b[16..16 + SA_INFO_LEN];
    assert_eq!(&info[56..60], &[192, 0, 2, 2], "id.daddr");
    assert_eq!(&info[72..76], &[0, 0, 0, 5], "id.spi, network order");
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
