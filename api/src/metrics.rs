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
    let handler = move |route: Route| {
        let render = render.clone();
        async move {
            match route {
                Route::Metrics => Some(render().await.map(|b| (CONTENT_TYPE, b))),
                _ => None,
            }
        }
    };
    serve_routes(listener, handler, shutdown).await;
}

/// What a handler answers for a route: `None`: 404 (not served here); `Some(None)`: 503 (the
/// daemon cannot say now); `Some(Some((content type, body)))`: 200.
pub type Answer = Option<Option<(&'static str, String)>>;

/// Serves the GET routes `handler` answers (the same limits as the metrics endpoint).
pub async fn serve_routes<H, F>(
    listener: TcpListener,
    handler: H,
    shutdown: impl Future<Output = ()> + Send + 'static,
) where
    H: Fn(Route) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Answer> + Send,
{
    let render = handler;
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

/// What the bytes of a request received so far say (sans-IO, fuzzed: `scripts/fuzz metrics_request`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    /// The head (up to the blank line) is complete: what to answer.
    Complete(Route),
    /// Longer than the limit without the blank line: 431.
    TooLarge,
    /// Read more.
    Partial,
}

/// The answer to a complete request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /metrics` (any query): the body.
    Metrics,
    /// `GET /` (any query): a page (meshd's flows page, `observe.ui`).
    Index,
    /// `GET /flows.json` (any query): the page's data.
    Flows,
    /// `GET` of another path: 404.
    NotFound,
    /// Another method, or no request line: 405.
    MethodNotAllowed,
}

/// Parses the request head in `buf` (the bytes received so far): only the request line's
/// method and path matter; headers are skipped.
pub fn parse_head(buf: &[u8]) -> Head {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > MAX_REQUEST {
            Head::TooLarge
        } else {
            Head::Partial
        };
    };
    let line = buf[..end].split(|b| *b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|b| *b == b' ');
    let (method, target) = (parts.next(), parts.next());
    let path = target.map(|t| t.split(|b| *b == b'?').next().unwrap_or_default());
    Head::Complete(match (method, path) {
        (Some(b"GET"), Some(b"/metrics")) => Route::Metrics,
        (Some(b"GET"), Some(b"/")) => Route::Index,
        (Some(b"GET"), Some(b"/flows.json")) => Route::Flows,
        (Some(b"GET"), _) => Route::NotFound,
        _ => Route::MethodNotAllowed,
    })
}

/// Reads one request head and answers it; the connection closes after the response.
async fn answer<R, F>(mut s: TcpStream, render: R) -> std::io::Result<()>
where
    R: Fn(Route) -> F,
    F: Future<Output = Answer>,
{
    let mut buf = Vec::with_capacity(1024);
    let head = tokio::time::timeout(READ_TIMEOUT, async {
        let mut chunk = [0u8; 1024];
        loop {
            match parse_head(&buf) {
                Head::Complete(route) => return Ok(Some(route)),
                Head::TooLarge => return Ok(None),
                Head::Partial => {}
            }
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    let plain = "text/plain; charset=utf-8";
    let (status, ctype, body) = match head {
        Err(_) => ("408 Request Timeout", plain, String::new()),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(None)) => ("431 Request Header Fields Too Large", plain, String::new()),
        Ok(Ok(Some(Route::MethodNotAllowed))) => ("405 Method Not Allowed", plain, String::new()),
        Ok(Ok(Some(Route::NotFound))) => ("404 Not Found", plain, String::new()),
        Ok(Ok(Some(route))) => match render(route).await {
            Some(Some((ctype, body))) => ("200 OK", ctype, body),
            Some(None) => ("503 Service Unavailable", plain, String::new()),
            None => ("404 Not Found", plain, String::new()),
        },
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(resp.as_bytes()).await?;
    s.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_heads() {
        let route = |s: &str| parse_head(s.as_bytes());
        assert_eq!(route("GET /metrics"), Head::Partial);
        assert_eq!(
            route("GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"),
            Head::Complete(Route::Metrics)
        );
        assert_eq!(
            route("GET / HTTP/1.1\r\n\r\n"),
            Head::Complete(Route::Index)
        );
        assert_eq!(
            route("GET /flows.json?last=5 HTTP/1.1\r\n\r\n"),
            Head::Complete(Route::Flows)
        );
        assert_eq!(
            route("GET /etc/passwd HTTP/1.1\r\n\r\n"),
            Head::Complete(Route::NotFound)
        );
        assert_eq!(
            route("POST /metrics HTTP/1.1\r\n\r\n"),
            Head::Complete(Route::MethodNotAllowed)
        );
        assert_eq!(route("\r\n\r\n"), Head::Complete(Route::MethodNotAllowed));
        assert_eq!(parse_head(&[b'a'; MAX_REQUEST + 1]), Head::TooLarge);
        assert_eq!(parse_head(&[b'a'; MAX_REQUEST]), Head::Partial);
    }
}
