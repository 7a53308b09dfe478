//! The lab's TCP test server and client: a server in a pod that answers `who` with the pod's
//! name and echoes anything else, and a client that asks it from another namespace.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::lab::Host;

/// Starts a TCP server on `port` in `pod` and returns once it listens. It runs until `stop`
/// or `lifetime` is over; one thread per connection, so connections may stay open.
pub fn who_server(pod: &Host, port: u16, stop: Arc<AtomicBool>, lifetime: Duration) {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let name = pod.name().to_string();
    pod.spawn_thread("who", move || {
        let l = TcpListener::bind(("0.0.0.0", port)).unwrap();
        l.set_nonblocking(true).unwrap();
        ready_tx.send(()).unwrap();
        let deadline = Instant::now() + lifetime;
        let live = move || !stop.load(Ordering::Relaxed) && Instant::now() < deadline;
        while live() {
            match l.accept() {
                Ok((s, _)) => {
                    let (live, name) = (live.clone(), name.clone());
                    std::thread::spawn(move || serve(s, &name, live));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        Ok(())
    })
    .unwrap();
    ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();
}

fn serve(mut s: TcpStream, name: &str, live: impl Fn() -> bool) {
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 64];
    while live() {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) if &buf[..n] == b"who" => {
                let _ = s.write_all(name.as_bytes());
            }
            Ok(n) => {
                let _ = s.write_all(&buf[..n]);
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
}

/// Asks the server behind `stream` who it is.
pub fn who(stream: &mut TcpStream) -> Result<String, String> {
    stream
        .write_all(b"who")
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = [0u8; 64];
    let n = stream.read(&mut buf).map_err(|e| format!("read: {e}"))?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// A connection from `pod` to `dst` (the socket stays in the pod's namespace), with its
/// local port; reads time out after 2 s.
pub fn connect(pod: &Host, dst: SocketAddr) -> Result<(TcpStream, u16), String> {
    pod.in_netns(move || {
        let s = TcpStream::connect_timeout(&dst, Duration::from_secs(2))
            .map_err(|e| format!("connect {dst}: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let port = s.local_addr().map_err(|e| e.to_string())?.port();
        Ok((s, port))
    })
    .unwrap()
}
