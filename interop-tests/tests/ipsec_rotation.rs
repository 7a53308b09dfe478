//! IPsec key file and SPI rotation on the lab kernel: the policies follow the rotation (old and
//! new out policies overlap, then the old go), bad key files are refused with clear errors
//! while the running keys and policies stay, and a removed node's policies go.
//!
//! Limits: no ESP on this kernel, so SAs cannot be installed (the refusal is checked); the
//! peers' announces are handed over by the test (no etcd).

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crypto::ipsec::rotation::{Action, Announce};
use crypto::ipsec::xfrm::{Xfrm, XfrmError, XfrmPeer};
use crypto::ipsec::{InstallError, IpsecNode, PolicySync};
use interop_tests::*;

const HEX40: &str = "0123456789abcdef0123456789abcdef01234567";

fn write_key(path: &Path, line: &str, mode: u32) {
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    writeln!(f, "{line}").unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn peer(i: u8) -> XfrmPeer {
    XfrmPeer {
        node: format!("n{i}"),
        local_ip: "192.0.2.1".parse().unwrap(),
        remote_ip: format!("192.0.2.{i}").parse().unwrap(),
        local_pods: "10.244.1.0/24".parse().unwrap(),
        remote_pods: format!("10.244.{i}.0/24").parse().unwrap(),
    }
}

fn sync(host: &Host, node: &IpsecNode, peers: &[XfrmPeer]) -> PolicySync {
    let desired = node.desired_policies(peers);
    host.in_netns(|| IpsecNode::sync_policies(&Xfrm::open()?, &desired))
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn marks(host: &Host) -> BTreeSet<String> {
    host.exec("ip", &["xfrm", "policy"])
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("mark "))
        .map(|m| m.trim().to_string())
        .collect()
}

fn announce(accepts: &[u8], sends: u8) -> Announce {
    Announce {
        accepts: accepts.iter().copied().collect(),
        sends,
    }
}

#[test]
fn ipsec_rotation_moves_policies_and_survives_bad_key_files() -> Result<()> {
    let lab = Lab::new("ipsec-rot")?;
    let n1 = lab.host("n1")?;
    let key_file = lab.dir().join("ipsec.keys");
    write_key(
        &key_file,
        &format!("3+ rfc4106(gcm(aes)) {HEX40} 128"),
        0o600,
    );
    let mut node = IpsecNode::load("n1", &key_file).unwrap();
    let rot = node.rotation_mut();
    rot.set_peers(["n2", "n3"]);
    rot.on_peer("n2", announce(&[3], 3));
    rot.on_peer("n3", announce(&[3], 3));
    let peers = [peer(2), peer(3)];

    let s = sync(&n1, &node, &peers);
    assert_eq!((s.added.len(), s.removed.len()), (6, 0));
    assert_eq!(
        sync(&n1, &node, &peers),
        PolicySync::default(),
        "idempotent"
    );
    assert_eq!(marks(&n1), ["0x3e00/0xff00".to_string()].into());

    // SAs: refused by this kernel, clearly; the policies stay.
    // Inbound first, with the peer's SPI (key index 3, n2's number 0x10002).
    let err = n1
        .in_netns(|| {
            let x = Xfrm::open().map_err(InstallError::from)?;
            node.install_sas(&x, &peers[0], (0x1_0001, 0x1_0002))
        })?
        .unwrap_err();
    assert!(
        matches!(
            err,
            InstallError::Xfrm(XfrmError::EspUnavailable {
                spi: 0x3001_0002,
                ..
            })
        ),
        "{err}"
    );
    assert_eq!(
        n1.exec("ip", &["xfrm", "policy"])?.matches("dir ").count(),
        6
    );

    // Bad key files: each refused with line, field and fix; nothing changes.
    let bad = [
        (
            format!("4+ rfc4106(gcm(aes)) {} 128", &HEX40[..38]),
            0o600,
            "line 1: field 3 (key) has 38 hex digits (19 bytes)",
        ),
        (
            format!("4+ cbc(aes) {HEX40} 128"),
            0o600,
            "line 1: field 2 (algorithm) \"cbc(aes)\" is not supported; use rfc4106(gcm(aes))",
        ),
        (
            format!("0 rfc4106(gcm(aes)) {HEX40} 128"),
            0o600,
            "line 1: field 1 (SPI) \"0\" is not a number from 1 to 15",
        ),
        (
            format!("4+ rfc4106(gcm(aes)) {HEX40} 128"),
            0o644,
            "has mode 0644",
        ),
        ("".to_string(), 0o600, "no key line"),
    ];
    for (line, mode, want) in bad {
        write_key(&key_file, &line, mode);
        let e = node.reload(&key_file).unwrap_err().to_string();
        eprintln!("refused: {e}");
        assert!(e.contains(want), "{e}");
        assert!(!e.contains(&HEX40[..16]), "key material in {e}");
        assert_eq!(node.spis(), [3]);
    }
    assert_eq!(sync(&n1, &node, &peers), PolicySync::default());

    // Rotation to SPI 4: new out policies next to the old ones.
    write_key(
        &key_file,
        &format!("4+ rfc4106(gcm(aes)) {HEX40} 128"),
        0o600,
    );
    let actions = node.reload(&key_file).unwrap();
    assert_eq!(actions[0], Action::InstallInbound(4));
    let s = sync(&n1, &node, &peers);
    assert_eq!((s.added.len(), s.removed.len()), (2, 0));
    assert_eq!(
        marks(&n1),
        ["0x3e00/0xff00".to_string(), "0x4e00/0xff00".to_string()].into()
    );
    // The peers install 4 too: n1 switches its outbound; the old out policies stay.
    node.rotation_mut().on_peer("n2", announce(&[3, 4], 3));
    let a = node.rotation_mut().on_peer("n3", announce(&[3, 4], 3));
    assert_eq!(a[0], Action::SwitchOutbound { from: 3, to: 4 });
    assert_eq!(sync(&n1, &node, &peers), PolicySync::default());
    // Every peer sends with 4: SPI 3 goes.
    node.rotation_mut().on_peer("n2", announce(&[3, 4], 4));
    let a = node.rotation_mut().on_peer("n3", announce(&[3, 4], 4));
    assert_eq!(a[0], Action::Remove(3));
    node.forget_removed(&a);
    let s = sync(&n1, &node, &peers);
    assert_eq!((s.added.len(), s.removed.len()), (0, 2));
    assert_eq!(marks(&n1), ["0x4e00/0xff00".to_string()].into());

    // n3 leaves: its in, fwd and out policies go.
    let s = sync(&n1, &node, &peers[..1]);
    assert_eq!(s.removed.len(), 3);
    assert!(
        s.removed
            .iter()
            .all(|p| p.src.to_string() == "10.244.3.0/24" || p.dst.to_string() == "10.244.3.0/24")
    );
    assert_eq!(
        n1.exec("ip", &["xfrm", "policy"])?.matches("dir ").count(),
        3
    );
    Ok(())
}
