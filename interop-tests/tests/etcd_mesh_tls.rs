//! etcd over TLS with client certificates and auth, against real etcd 3.4 in the lab
//! (issue 7). Certificates come from the openssl CLI (a CA, a server certificate for the
//! member's IP, a client certificate). Needs meshd's `tls` feature:
//!
//! `cargo test -p interop-tests --test etcd_mesh_tls --features ironmesh-meshd/tls`
//!
//! Built without it, the test proves the clear refusal instead (and says so).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::ClusterName;
use interop_tests::*;
use ironmesh_meshd::kvstore::auth::{AuthPlan, provision};
use ironmesh_meshd::kvstore::{KvConfig, KvError, KvStore, TLS_SUPPORTED, TlsFiles};
use ironmesh_meshd::nodes::NodeRecord;

fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// CA, server certificate for `ip`, client certificate; returns the directory.
fn make_certs(dir: &Path, ip: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=ironmesh-test-ca",
        ],
    );
    let ext = format!("subjectAltName=IP:{ip}\nextendedKeyUsage=serverAuth,clientAuth\n");
    std::fs::write(dir.join("server.ext"), ext).unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for (who, cn) in [("server", "etcd"), ("client", "red")] {
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{who}.key"),
                "-out",
                &format!("{who}.csr"),
                "-subj",
                &format!("/CN={cn}"),
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{who}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "1",
                "-out",
                &format!("{who}.pem"),
                "-extfile",
                &format!("{who}.ext"),
            ],
        );
    }
    // A second CA that signed nothing of this etcd.
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            "other.key",
            "-out",
            "other.pem",
            "-subj",
            "/CN=other-ca",
        ],
    );
    dir.to_path_buf()
}

fn cfg(ip: &str, tls: Option<TlsFiles>, user: Option<(&str, &str)>) -> KvConfig {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut c = KvConfig::new([format!("{scheme}://{ip}:2379")]);
    c.connect_timeout = Duration::from_secs(3);
    c.op_timeout = Duration::from_secs(2);
    c.tls = tls;
    c.user = user.map(|(u, p)| (u.into(), p.into()));
    c
}

#[test]
fn etcd_mesh_tls_client_certs_and_auth() -> Result<()> {
    let lab = Lab::new("mtls")?;
    let sw = lab.switch("sw")?;
    let e = lab.host("e0")?;
    let m = lab.host("m")?;
    lab.attach(&e, &["192.0.2.11/24"], &sw)?;
    lab.attach(&m, &["192.0.2.20/24"], &sw)?;
    let ip = "192.0.2.11";
    let certs = make_certs(&lab.dir().join("certs"), ip);
    let p = |f: &str| certs.join(f).to_string_lossy().into_owned();
    let args: Vec<String> = [
        "--name",
        "e0",
        "--data-dir",
        &e.path("etcd-tls.data").to_string_lossy(),
        "--listen-client-urls",
        &format!("https://{ip}:2379"),
        "--advertise-client-urls",
        &format!("https://{ip}:2379"),
        "--listen-peer-urls",
        &format!("http://{ip}:2380"),
        "--initial-advertise-peer-urls",
        &format!("http://{ip}:2380"),
        "--initial-cluster",
        &format!("e0=http://{ip}:2380"),
        "--cert-file",
        &p("server.pem"),
        "--key-file",
        &p("server.key"),
        "--trusted-ca-file",
        &p("ca.pem"),
        "--client-cert-auth",
        "--logger",
        "zap",
        "--log-outputs",
        "stderr",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let etcd = e.spawn("etcd-tls", "etcd", &args)?;
    let tls = TlsFiles {
        ca: certs.join("ca.pem"),
        client_cert: Some((certs.join("client.pem"), certs.join("client.key"))),
        server_name: None,
    };

    m.block_on(async {
        if !TLS_SUPPORTED {
            let err = KvStore::connect(&cfg(ip, Some(tls.clone()), None))
                .await
                .unwrap_err();
            assert!(
                matches!(&err, KvError::Tls { .. }) && err.to_string().contains("--features tls"),
                "{err}"
            );
            eprintln!(
                "TLS NOT EXERCISED (built without meshd's `tls` feature); refusal checked: {err}"
            );
            return;
        }
        // etcd takes a moment to start: retry the TLS connect for a bounded time.
        let t = Instant::now();
        let store = loop {
            match KvStore::connect(&cfg(ip, Some(tls.clone()), None)).await {
                Ok(s) => break s,
                Err(e) if t.elapsed() < Duration::from_secs(15) => {
                    assert!(etcd.is_running(), "etcd exited: {}", etcd.log_tail(2000));
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("TLS connect: {e}"),
            }
        };
        eprintln!("TLS connect after {:?}", t.elapsed());
        // Auth on top of TLS.
        let plan = AuthPlan {
            cluster: "red".parse::<ClusterName>().unwrap(),
            root_password: "root-pw".into(),
            meshd_password: "red-pw".into(),
            readers: vec![],
            rotate_passwords: false,
        };
        provision(&store, &plan).await.expect("provision over TLS");
        let red = KvStore::connect(&cfg(ip, Some(tls.clone()), Some(("red", "red-pw"))))
            .await
            .expect("TLS + auth");
        let r1 = NodeRecord::new("red".parse().unwrap(), "r1".parse().unwrap());
        red.put(&r1.key(), r1.encode(), None)
            .await
            .expect("write own prefix over TLS");
        assert!(red.get(&r1.key()).await.unwrap().is_some());
        let g = NodeRecord::new("green".parse().unwrap(), "g1".parse().unwrap());
        let err = red.put(&g.key(), g.encode(), None).await.unwrap_err();
        assert!(matches!(err, KvError::PermissionDenied { .. }), "{err}");

        // Without a client certificate, with the wrong CA, or over plain HTTP: refused.
        let no_cert = TlsFiles {
            client_cert: None,
            ..tls.clone()
        };
        let err = KvStore::connect(&cfg(ip, Some(no_cert), Some(("red", "red-pw"))))
            .await
            .unwrap_err();
        assert!(matches!(err, KvError::Tls { .. }), "{err}");
        eprintln!("no client certificate: {err}");
        let wrong_ca = TlsFiles {
            ca: certs.join("other.pem"),
            ..tls.clone()
        };
        let err = KvStore::connect(&cfg(ip, Some(wrong_ca), Some(("red", "red-pw"))))
            .await
            .unwrap_err();
        assert!(matches!(err, KvError::Tls { .. }), "{err}");
        eprintln!("wrong CA: {err}");
        let mut plain = cfg(ip, None, Some(("red", "red-pw")));
        plain.endpoints = vec![format!("http://{ip}:2379")];
        assert!(
            KvStore::connect(&plain).await.is_err(),
            "plain HTTP must not work"
        );
        let mut mixed = cfg(ip, None, None);
        mixed.endpoints = vec![format!("https://{ip}:2379")];
        let err = KvStore::connect(&mixed).await.unwrap_err();
        assert!(matches!(err, KvError::InvalidEndpoint { .. }), "{err}");
        let missing = TlsFiles {
            ca: certs.join("nope.pem"),
            ..tls.clone()
        };
        let err = KvStore::connect(&cfg(ip, Some(missing), None))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, KvError::Tls { field, .. } if field == "ca"),
            "{err}"
        );
        eprintln!("missing CA file: {err}");
    })?;
    Ok(())
}
