//! A throwaway certificate authority for a lab's etcds (the openssl CLI, EC P-256 keys: a
//! whole lab's certificates take well under a second), and the lab's secret files.
//!
//! Every key and password file is created mode 0600; nothing here prints their content.

use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::cmd::require_binary;
use crate::error::{LabError, Result, io_err};

/// A CA under `dir` (`ca.pem`, `ca.key`) that issues server and client certificates.
#[derive(Debug, Clone)]
pub struct Pki {
    dir: PathBuf,
}

/// A certificate and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let out = std::process::Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .map_err(io_err("running openssl"))?;
    if !out.status.success() {
        return Err(LabError::Invalid(format!(
            "openssl {}: {}",
            args.first().copied().unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

fn private(path: &Path) -> Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io_err("chmod 600 on a lab key"))
}

const EC: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];

impl Pki {
    /// Makes the CA in `dir` (created 0700).
    pub fn new(dir: &Path) -> Result<Pki> {
        require_binary("openssl", "openssl")?;
        std::fs::create_dir_all(dir).map_err(io_err("creating the lab's PKI dir"))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io_err("chmod 700 on the lab's PKI dir"))?;
        let mut args = vec!["req", "-x509"];
        args.extend(EC);
        args.extend([
            "-nodes",
            "-days",
            "2",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=ironmesh-lab-ca",
        ]);
        openssl(dir, &args)?;
        private(&dir.join("ca.key"))?;
        Ok(Pki { dir: dir.into() })
    }

    /// The CA certificate (etcd's `--trusted-ca-file`, clients' `ca_file`).
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Issues `<name>.pem` / `<name>.key` for common name `cn`; with `ips`, a server (and
    /// client, for etcd's peer links) certificate valid for those addresses, else a client one.
    pub fn issue(&self, name: &str, cn: &str, ips: &[IpAddr]) -> Result<CertPair> {
        let (key, csr, cert, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        let mut args = vec!["req"];
        args.extend(EC);
        let subj = format!("/CN={cn}");
        args.extend(["-nodes", "-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(&self.dir, &args)?;
        private(&self.dir.join(&key))?;
        let text = if ips.is_empty() {
            "extendedKeyUsage=clientAuth\n".to_string()
        } else {
            let sans: Vec<String> = ips.iter().map(|ip| format!("IP:{ip}")).collect();
            format!(
                "subjectAltName={}\nextendedKeyUsage=serverAuth,clientAuth\n",
                sans.join(",")
            )
        };
        std::fs::write(self.dir.join(&ext), text).map_err(io_err("writing a cert extension"))?;
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-set_serial",
                &serial(),
                "-days",
                "2",
                "-out",
                &cert,
                "-extfile",
                &ext,
            ],
        )?;
        Ok(CertPair {
            cert: self.dir.join(cert),
            key: self.dir.join(key),
        })
    }
}

/// A random certificate serial number (decimal).
fn serial() -> String {
    let mut b = [0u8; 8];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut b);
    }
    (u64::from_le_bytes(b) >> 1).to_string()
}

/// Writes a new random password (32 hex digits) to `path`, created 0600, and returns the path.
pub fn password_file(path: &Path) -> Result<PathBuf> {
    use std::io::{Read, Write};
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(io_err("reading /dev/urandom"))?;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err("creating a lab password file"))?;
    writeln!(f, "{hex}").map_err(io_err("writing a lab password file"))?;
    Ok(path.to_path_buf())
}
