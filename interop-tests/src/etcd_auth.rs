//! Lab etcds secured as in production: clients on TLS with certificates of one lab CA
//! (`--client-cert-auth`), and per-cluster users and roles made by the real
//! `ironctl mesh provision` (auth on). The mesh lab runs this way; `etcd_mesh_*_rbac_*`
//! tests build on it.
//!
//! Secrets live under one directory: `<dir>/<cluster>/<user>.password` is the password of
//! `<user>` in `<cluster>`'s etcd (`root`, the cluster's own meshd user, `<remote>-reader`),
//! each created 0600; the certificates under `<dir>/pki/`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::error::{Result, io_err};
use crate::etcd::{EtcdCluster, EtcdTls};
use crate::lab::Host;
use crate::pki::{CertPair, Pki, password_file};

/// The lab's CA, the lab's root client certificate and the secrets directory.
#[derive(Debug, Clone)]
pub struct EtcdAuthLab {
    pub pki: Pki,
    /// Common name `root`: the lab's etcdctl and the provisioning log in with it.
    pub root: CertPair,
    pub dir: PathBuf,
}

/// What a cluster's meshd logs in to the etcds with: its nodes' client certificate (common
/// name = the cluster), its own user's password, and for each remote the password of
/// `<cluster>-reader` in that remote's etcd.
#[derive(Debug, Clone)]
pub struct NodeCreds {
    pub cluster: String,
    pub ca: PathBuf,
    pub cert: CertPair,
    pub dir: PathBuf,
}

impl EtcdAuthLab {
    /// The CA (in `<dir>/pki`) and the root client certificate.
    pub fn new(dir: &Path) -> Result<EtcdAuthLab> {
        std::fs::create_dir_all(dir).map_err(io_err("creating the lab's secrets dir"))?;
        let pki = Pki::new(&dir.join("pki"))?;
        let root = pki.issue("root", "root", &[])?;
        Ok(EtcdAuthLab {
            pki,
            root,
            dir: dir.into(),
        })
    }

    /// The TLS of `cluster`'s etcd whose members listen on `ips`.
    pub fn etcd_tls(&self, cluster: &str, ips: &[IpAddr]) -> Result<EtcdTls> {
        Ok(EtcdTls {
            ca: self.pki.ca(),
            server: self
                .pki
                .issue(&format!("{cluster}-etcd"), &format!("{cluster}-etcd"), ips)?,
            client: self.root.clone(),
        })
    }

    /// The client certificate of `cluster`'s nodes.
    pub fn node_creds(&self, cluster: &str) -> Result<NodeCreds> {
        Ok(NodeCreds {
            cluster: cluster.into(),
            ca: self.pki.ca(),
            cert: self.pki.issue(&format!("{cluster}-node"), cluster, &[])?,
            dir: self.dir.clone(),
        })
    }

    /// Runs `ironctl mesh provision` for `cluster` against its `etcd` from `host` (which
    /// reaches it): new random passwords for root, the cluster's user and one reader per
    /// remote (an existing file is kept, so a second run changes nothing). Returns what
    /// ironctl printed.
    pub fn provision(
        &self,
        ironctl: &Path,
        host: &Host,
        etcd: &EtcdCluster,
        cluster: &str,
        remotes: &[&str],
    ) -> Result<String> {
        self.provision_with(ironctl, host, etcd, cluster, remotes, &[])
    }

    /// As [`provision`](Self::provision), with `extra` arguments (e.g. `--rotate-passwords`).
    pub fn provision_with(
        &self,
        ironctl: &Path,
        host: &Host,
        etcd: &EtcdCluster,
        cluster: &str,
        remotes: &[&str],
        extra: &[&str],
    ) -> Result<String> {
        let d = self.dir.join(cluster);
        std::fs::create_dir_all(&d).map_err(io_err("creating a cluster's secrets dir"))?;
        let file = |user: &str| -> Result<String> {
            let p = password_path(&self.dir, cluster, user);
            if !p.exists() {
                password_file(&p)?;
            }
            Ok(p.to_string_lossy().into_owned())
        };
        let tls = etcd.tls.as_ref();
        let p = |p: &Path| p.to_string_lossy().into_owned();
        let mut args: Vec<String> = vec![
            "mesh".into(),
            "provision".into(),
            "--cluster".into(),
            cluster.into(),
            "--endpoints".into(),
            etcd.endpoints(),
            "--root-password-file".into(),
            file("root")?,
            "--password-file".into(),
            file(cluster)?,
        ];
        if let Some(t) = tls {
            args.extend([
                "--cacert".into(),
                p(&t.ca),
                "--cert".into(),
                p(&t.client.cert),
                "--key".into(),
                p(&t.client.key),
            ]);
        }
        for r in remotes {
            args.push("--reader".into());
            args.push(format!("{r}={}", file(&format!("{r}-reader"))?));
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        host.exec(&ironctl.to_string_lossy(), &args)
    }
}

/// `<dir>/<cluster>/<user>.password`: `user`'s password in `cluster`'s etcd.
pub fn password_path(dir: &Path, cluster: &str, user: &str) -> PathBuf {
    dir.join(cluster).join(format!("{user}.password"))
}

impl NodeCreds {
    /// `[mesh.tls]` / `[mesh.auth]` of a meshd of this cluster, for its local etcd.
    pub fn local_toml(&self) -> String {
        format!(
            "[mesh.tls]\n{}\n[mesh.auth]\nuser = \"{c}\"\npassword_file = {:?}\n",
            self.tls_lines(),
            password_path(&self.dir, &self.cluster, &self.cluster),
            c = self.cluster,
        )
    }

    /// The `tls` and `auth` tables of `[[mesh.remote_clusters]]` for `remote` (to append
    /// right after that remote's keys): this cluster's reader user in the remote's etcd.
    pub fn remote_toml(&self, remote: &str) -> String {
        let reader = format!("{}-reader", self.cluster);
        format!(
            "[mesh.remote_clusters.tls]\n{}\n[mesh.remote_clusters.auth]\nuser = \"{reader}\"\npassword_file = {:?}\n",
            self.tls_lines(),
            password_path(&self.dir, remote, &reader),
        )
    }

    fn tls_lines(&self) -> String {
        format!(
            "ca_file = {:?}\ncert_file = {:?}\nkey_file = {:?}",
            self.ca, self.cert.cert, self.cert.key
        )
    }
}
