//! IPsec XFRM on the lab kernel: policies installed for real over netlink in a test namespace,
//! read back over netlink and compared with `ip xfrm policy`; an SA install meets the kernel's
//! refusal (this kernel has no ESP) and reports it plainly.
//!
//! Limits: no ESP/AH on this kernel, so no SA is installed and no packet is encrypted here;
//! SA encoding is checked by crypto's unit tests against the `<linux/xfrm.h>` layout.

use std::collections::BTreeSet;

use crypto::ipsec::keyfile;
use crypto::ipsec::xfrm::{self, Sa, Xfrm, XfrmError, XfrmPeer};
use crypto::ipsec::{directional_key, pair_keys, wire_spi};
use interop_tests::*;

fn peers() -> Vec<XfrmPeer> {
    (2..=3)
        .map(|i| XfrmPeer {
            node: format!("n{i}"),
            local_ip: "192.0.2.1".parse().unwrap(),
            remote_ip: format!("192.0.2.{i}").parse().unwrap(),
            local_pods: "10.244.1.0/24".parse().unwrap(),
            remote_pods: format!("10.244.{i}.0/24").parse().unwrap(),
        })
        .collect()
}

#[test]
fn ipsec_xfrm_policies_and_sa_refusal() -> Result<()> {
    let lab = Lab::new("ipsec-xfrm")?;
    let n1 = lab.host("n1")?;
    let want: BTreeSet<_> = peers().iter().flat_map(|p| xfrm::policies(p, 3)).collect();

    let got = n1
        .in_netns(|| -> std::result::Result<_, XfrmError> {
            let x = Xfrm::open()?;
            for p in &want {
                x.put_policy(p)?;
            }
            // Idempotent: putting them again replaces, never duplicates.
            for p in &want {
                x.put_policy(p)?;
            }
            Ok(x.policies()?.into_iter().collect::<BTreeSet<_>>())
        })?
        .map_err(|e| LabError::Invalid(e.to_string()))?;
    assert_eq!(got, want, "read back over netlink");

    // What `ip xfrm policy` says: the same six policies, field by field.
    let text = n1.exec("ip", &["xfrm", "policy"])?;
    eprintln!("{text}");
    for p in &want {
        let dir = format!("{:?}", p.dir).to_lowercase();
        let head = format!("src {} dst {} \n\tdir {dir} priority 1000", p.src, p.dst);
        assert!(text.contains(&head), "missing {head:?} in:\n{text}");
        let tmpl = format!(
            "tmpl src {} dst {}\n\t\tproto esp reqid 1 mode tunnel",
            p.tmpl_src, p.tmpl_dst
        );
        assert!(text.contains(&tmpl), "missing {tmpl:?} in:\n{text}");
    }
    assert!(text.contains("mark 0x3e00/0xff00"), "{text}");
    assert_eq!(text.matches("dir out").count(), 2);
    assert_eq!(text.matches("dir in").count(), 2);
    assert_eq!(text.matches("dir fwd").count(), 2);

    // An SA: the kernel refuses (no ESP here) and the error says so.
    let shared = keyfile::parse(
        std::path::Path::new("test"),
        "3+ rfc4106(gcm(aes)) 0123456789abcdef0123456789abcdef01234567 128",
    )
    .unwrap();
    let out_key = directional_key(&shared, "n1", "n2");
    assert_eq!(
        out_key.expose(),
        pair_keys(&shared, "n2", "n1").inbound.expose()
    );
    let err = n1
        .in_netns(|| {
            Xfrm::open()?.add_sa(&Sa {
                src: "192.0.2.1".parse().unwrap(),
                dst: "192.0.2.2".parse().unwrap(),
                spi: wire_spi(3, 0x1_0001).unwrap(),
                key: &out_key,
                mark: Some(xfrm::out_mark(3)),
            })
        })?
        .expect_err("this kernel has no ESP");
    let msg = err.to_string();
    eprintln!("SA install: {msg}");
    assert!(
        matches!(
            err,
            XfrmError::EspUnavailable {
                spi: 0x3001_0001,
                ..
            }
        ),
        "{msg}"
    );
    assert!(
        msg.contains("spi 0x30010001 192.0.2.1 -> 192.0.2.2"),
        "{msg}"
    );
    assert!(msg.contains("cannot install IPsec (ESP)") && msg.contains("WireGuard"));
    assert!(
        !msg.contains("0123456789abcdef"),
        "key material in an error"
    );
    // `ip xfrm` agrees: no state could be added.
    assert!(n1.exec("ip", &["xfrm", "state"])?.trim().is_empty());

    // Removal: every policy goes, by selector, direction and mark.
    let left = n1
        .in_netns(|| -> std::result::Result<_, XfrmError> {
            let x = Xfrm::open()?;
            for p in &want {
                x.delete_policy(p)?;
            }
            x.policies()
        })?
        .map_err(|e| LabError::Invalid(e.to_string()))?;
    assert!(left.is_empty(), "{left:?}");
    assert!(n1.exec("ip", &["xfrm", "policy"])?.trim().is_empty());
    Ok(())
}
