//! Userspace WireGuard (wireguard-go) in a host, configured with `wg` over the UAPI socket.
//! The UAPI socket lives in /var/run/wireguard, shared by all namespaces, so interface names are
//! made unique on the machine.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::cmd::{require_binary, wait_for};
use crate::error::{LabError, Result, io_err};
use crate::lab::{Host, random_hex};
use crate::process::Process;

/// A wireguard-go device.
#[derive(Debug)]
pub struct WgDevice {
    pub host: Host,
    pub ifname: String,
    pub process: Process,
    /// Base64 public key (the private key stays in a 0600 file, never in logs).
    pub public_key: String,
    pub listen_port: u16,
}

impl WgDevice {
    /// Starts wireguard-go with a fresh key, listening on `listen_port`.
    pub fn start(host: &Host, listen_port: u16) -> Result<WgDevice> {
        require_binary("wireguard-go", "wireguard-go")?;
        require_binary("wg", "wireguard-tools")?;
        let ifname = format!("wg{}{}", random_hex(6), host.next_seq() % 10);
        let sock = PathBuf::from(format!("/var/run/wireguard/{ifname}.sock"));
        host.cleanup_on_drop(sock.clone());
        let process = host.spawn_env(
            &format!("wireguard-go-{ifname}"),
            "wireguard-go",
            &["-f".to_string(), ifname.clone()],
            // Verbose: handshakes and keepalives per peer (no per-packet lines), for diagnostics.
            &[
                ("WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD", "1"),
                ("LOG_LEVEL", "verbose"),
            ],
        )?;
        wait_for(
            &format!("wireguard-go UAPI socket {}", sock.display()),
            Duration::from_secs(10),
            Duration::from_millis(50),
            |_| Ok(sock.exists().then_some(())),
        )?;
        let key_path = host.path(&format!("{ifname}.key"));
        let private = run_stdin("wg", &["genkey"], "")?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&key_path)
            .map_err(io_err("creating WireGuard key file"))?;
        f.write_all(private.as_bytes())
            .map_err(io_err("writing WireGuard key file"))?;
        let public_key = run_stdin("wg", &["pubkey"], &private)?.trim().to_string();
        let port = listen_port.to_string();
        host.exec(
            "wg",
            &[
                "set",
                &ifname,
                "private-key",
                &key_path.to_string_lossy(),
                "listen-port",
                &port,
            ],
        )?;
        Ok(WgDevice {
            host: host.clone(),
            ifname,
            process,
            public_key,
            listen_port,
        })
    }

    /// Adds an address to the device and brings it up.
    pub fn up(&self, cidr: &str) -> Result<()> {
        self.host.add_addr(&self.ifname, cidr)?;
        self.host.ip(&["link", "set", &self.ifname, "up"]).map(drop)
    }

    /// Adds or updates a peer.
    pub fn set_peer(
        &self,
        public_key: &str,
        endpoint: Option<&str>,
        allowed_ips: &[&str],
    ) -> Result<()> {
        let allowed = allowed_ips.join(",");
        let mut args = vec![
            "set",
            &self.ifname,
            "peer",
            public_key,
            "allowed-ips",
            &allowed,
        ];
        if let Some(ep) = endpoint {
            args.extend(["endpoint", ep]);
        }
        self.host.exec("wg", &args).map(drop)
    }

    /// Latest handshake per peer public key (seconds since the epoch, 0 = never).
    pub fn latest_handshakes(&self) -> Result<Vec<(String, u64)>> {
        let out = self
            .host
            .exec("wg", &["show", &self.ifname, "latest-handshakes"])?;
        out.lines()
            .map(|l| {
                let mut it = l.split_whitespace();
                match (it.next(), it.next().and_then(|t| t.parse().ok())) {
                    (Some(k), Some(t)) => Ok((k.to_string(), t)),
                    _ => Err(LabError::Parse {
                        what: "wg show latest-handshakes".into(),
                        detail: l.into(),
                    }),
                }
            })
            .collect()
    }
}

fn run_stdin(program: &str, args: &[&str], input: &str) -> Result<String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io_err(format!("spawning {program}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(io_err(format!("writing to {program}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(io_err(format!("waiting for {program}")))?;
    if !out.status.success() {
        return Err(LabError::Command {
            cmd: format!("{program} {}", args.join(" ")),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
