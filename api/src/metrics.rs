//! The daemons' Prometheus endpoint: a deliberately small HTTP/1.1 server (`GET /metrics`, one
//! request per connection, `Connection: close`) with a request-size limit, a read timeout and a
//! cap on concurrent connections, so a scrape endpoint cannot become a way to exhaust a daemon.
//! What it serves is rendered at scrape time by the daemon (`render`).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Largest request head accepted (request line and headers).
const MAX_REQUEST: usize = 8 * 1024;
/// Time a client gets to send its whole request head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more wait in the kernel's accept queue.
const MAX_CONNECTIONS: usize = 16;

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Binds the listener before anything starts (a bad address fails at once).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves `GET /metrics` on `listener` until `shutdown` completes. `render` gives the body
/// (OpenMetrics text), or `None` while the daemon cannot say (503).
pub async fn serve<R, F>(
    listener: TcpListener,
    render: R,
    shutdown: impl Future<Output = ()> + Send + 'static,
) where
    R: Fn() -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Option<String>> + Send,
{
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => return,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let (stream, from) = tokio::select! {
            _ = &mut shutdown => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "metrics: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let render = render.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, render).await {
                tracing::debug!(%from, error = %e, "metrics: connection ended");
            }
            drop(permit);
        });
    }
}

/// Reads one request head and answers it; the connection closes after the response.
async fn answer<R, F>(mut s: TcpStream, render: R) -> std::io::Result<()>
where
    R: Fn() -> F,
    F: Future<Output = Option<String>>,
{
    let mut buf = Vec::with_capacity(1024);
    let head = tokio::time::timeout(READ_TIMEOUT, async {
        let mut chunk = [0u8; 1024];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                return Ok(Some(end));
            }
            if buf.len() > MAX_REQUEST {
                return Ok(None);
            }
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    let (status, body) = match head {
        Err(_) => ("408 Request Timeout", String::new()),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(None)) => ("431 Request Header Fields Too Large", String::new()),
        Ok(Ok(Some(end))) => {
            let line = buf[..end].split(|b| *b == b'\r').next().unwrap_or_default();
            let mut parts = line.split(|b| *b == b' ');
            let (method, target) = (parts.next(), parts.next());
            let path = target.map(|t| t.split(|b| *b == b'?').next().unwrap_or_default());
            match (method, path) {
                (Some(b"GET"), Some(b"/metrics")) => match render().await {
                    Some(body) => ("200 OK", body),
                    None => ("503 Service Unavailable", String::new()),
                },
                (Some(b"GET"), _) => ("404 Not Found", String::new()),
                _ => ("405 Method Not Allowed", String::new()),
            }
        }
    };
    let ctype = if status.starts_with("200") {
        CONTENT_TYPE
    } else {
        "text/plain; charset=utf-8"
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(resp.as_bytes()).await?;
    s.shutdown().await
}
