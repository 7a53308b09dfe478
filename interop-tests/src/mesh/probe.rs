//! Traffic and observation in the mesh lab: a `who` server in each web pod, TCP requests from
//! any host (one-shot or a long-lived flow), ironctl, and packet captures on the underlay.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::cmd::{require_binary, wait_for};
use crate::error::{LabError, Result, io_err};
use crate::lab::Host;
use crate::process::Process;

/// Serves `answer` on the app port in `pod`: every chunk a client sends is answered with it
/// (so one connection can ask many times). Runs until `stop`.
pub fn serve(pod: &Host, answer: String, stop: Arc<AtomicBool>) -> Result<()> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    pod.spawn_thread("who", move || {
        let l = TcpListener::bind(("0.0.0.0", super::APP_PORT))
            .map_err(io_err("binding the app port"))?;
        l.set_nonblocking(true)
            .map_err(io_err("non-blocking listener"))?;
        let _ = ready_tx.send(());
        while !stop.load(Ordering::Relaxed) {
            match l.accept() {
                Ok((s, _)) => {
                    let (answer, stop) = (answer.clone(), stop.clone());
                    std::thread::spawn(move || answer_all(s, &answer, &stop));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        Ok(())
    })?;
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .map_err(|_| LabError::Invalid(format!("the server in {} did not start", pod.name())))
}

fn answer_all(mut s: TcpStream, answer: &str, stop: &AtomicBool) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 64];
    while !stop.load(Ordering::Relaxed) {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {
                if s.write_all(answer.as_bytes()).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return,
        }
    }
}

/// A TCP connection opened from inside a host (the socket stays in that namespace).
#[derive(Debug)]
pub struct Flow {
    stream: TcpStream,
    pub local: SocketAddr,
}

impl Flow {
    /// Connects from `from` to `dst` (2 s timeout).
    pub fn open(from: &Host, dst: SocketAddr) -> std::result::Result<Flow, String> {
        from.in_netns(move || {
            let stream = TcpStream::connect_timeout(&dst, Duration::from_secs(2))
                .map_err(|e| format!("connect {dst}: {e}"))?;
            stream
                .set_read_timeout(Some(Duration::from_secs(2)))
                .map_err(|e| e.to_string())?;
            let local = stream.local_addr().map_err(|e| e.to_string())?;
            Ok(Flow { stream, local })
        })
        .map_err(|e| e.to_string())?
    }

    /// Asks once; the server's answer.
    pub fn ask(&mut self) -> std::result::Result<String, String> {
        self.stream
            .write_all(b"who")
            .map_err(|e| format!("write: {e}"))?;
        let mut buf = [0u8; 64];
        let n = self
            .stream
            .read(&mut buf)
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed by the server".into());
        }
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    }
}

/// One request from `from` to `dst` on a new connection: the answer.
pub fn ask(from: &Host, dst: SocketAddr) -> std::result::Result<String, String> {
    Flow::open(from, dst)?.ask()
}

/// Runs `ironctl args`; its stdout.
pub fn ironctl(bin: &Path, args: &[&str]) -> Result<String> {
    let out = std::process::Command::new(bin)
        .args(args)
        .output()
        .map_err(io_err("running ironctl"))?;
    if !out.status.success() {
        return Err(LabError::Command {
            cmd: format!("ironctl {}", args.join(" ")),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A tcpdump writing to a file in the lab dir.
#[derive(Debug)]
pub struct Capture {
    host: Host,
    file: String,
    process: Process,
}

impl Capture {
    /// Starts capturing on `iface` of `host` and waits until tcpdump listens.
    pub fn start(host: &Host, iface: &str, name: &str) -> Result<Capture> {
        require_binary("tcpdump", "tcpdump")?;
        let file = host.path(&format!("{name}.pcap")).display().to_string();
        let args: Vec<String> = ["-i", iface, "-n", "-U", "--immediate-mode", "-w", &file]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let process = host.spawn(&format!("tcpdump-{name}"), "tcpdump", &args)?;
        wait_for(
            "tcpdump listening",
            Duration::from_secs(10),
            Duration::from_millis(50),
            |_| {
                Ok(process
                    .log_tail(4096)
                    .contains("listening on")
                    .then_some(()))
            },
        )?;
        Ok(Capture {
            host: host.clone(),
            file,
            process,
        })
    }

    /// Stops the capture (after a moment for the last packets).
    pub fn stop(&self) -> Result<()> {
        std::thread::sleep(Duration::from_millis(200));
        self.process.terminate();
        Ok(())
    }

    /// The captured packets matching a pcap `filter`, one line each (after [`Capture::stop`]).
    pub fn packets(&self, filter: &str) -> Result<Vec<String>> {
        let out = self
            .host
            .exec("tcpdump", &["-r", &self.file, "-n", filter])?;
        Ok(out.lines().map(str::to_string).collect())
    }
}
