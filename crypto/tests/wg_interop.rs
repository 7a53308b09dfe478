//! Our public key derivation must match `wg pubkey` (wireguard-tools).

use std::io::Write;
use std::process::{Command, Stdio};

use ironmesh_crypto::{KeyStore, PrivateKey, PublicKey};

fn wg_pubkey(private_b64: &str) -> PublicKey {
    let mut child = match Command::new("wg")
        .arg("pubkey")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => panic!("cannot run `wg` ({e}); install wireguard-tools with scripts/setup"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{private_b64}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "wg pubkey failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .trim_end()
        .parse()
        .unwrap()
}

#[test]
fn public_keys_match_wg_pubkey() {
    for _ in 0..8 {
        let key = PrivateKey::generate();
        assert_eq!(wg_pubkey(&key.expose_base64()), key.public_key());
    }
}

#[test]
fn key_file_is_readable_by_wg() {
    let dir = tempfile::tempdir().unwrap();
    let store = KeyStore::load_or_create(dir.path()).unwrap();
    let file = std::fs::read_to_string(store.path()).unwrap();
    assert_eq!(wg_pubkey(file.trim_end()), store.public_key());
}

#[test]
fn reads_wg_genkey_output() {
    let out = Command::new("wg")
        .arg("genkey")
        .output()
        .expect("run `wg genkey`; install wireguard-tools with scripts/setup");
    let b64 = String::from_utf8(out.stdout).unwrap();
    let key = PrivateKey::from_base64(b64.trim_end()).unwrap();
    assert_eq!(wg_pubkey(b64.trim_end()), key.public_key());
}
