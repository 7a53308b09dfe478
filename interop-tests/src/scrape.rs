//! Prometheus scrapes of the lab's daemons (meshd's and bgpd's `GET /metrics`) and other GETs
//! (meshd's flows page), from inside a host's namespace, and what an exposition defines.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::error::{Result, io_err};
use crate::lab::Host;

/// meshd's metrics address in the lab (each daemon in its own namespace).
pub const MESHD_METRICS: &str = "0.0.0.0:9464";
/// bgpd's.
pub const BGPD_METRICS: &str = "0.0.0.0:9179";

/// `GET /metrics` of whatever serves it at `addr` (an address `host` reaches, e.g.
/// 127.0.0.1:9464): the exposition text.
pub fn get(host: &Host, addr: &str) -> Result<String> {
    http_get(host, addr, "/metrics")
}

/// `GET path` from `addr`, from inside `host`'s namespace: the body.
pub fn http_get(host: &Host, addr: &str, path: &str) -> Result<String> {
    use std::io::{Read, Write};
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let text = host
        .in_netns(|| -> std::io::Result<String> {
            let mut s = std::net::TcpStream::connect(addr)?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(request.as_bytes())?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        })?
        .map_err(io_err("scraping metrics"))?;
    Ok(text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or(text))
}

/// The value of the sample `series` (`name{labels}` exactly as exposed) in `text`; 0 when
/// it is absent (a counter not incremented yet).
pub fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// The metric names an exposition defines: each family's name (`# TYPE`), with `_total` for
/// counters, and every sample's name.
pub fn names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (it.next(), it.next()) {
                out.insert(name.to_string());
                if kind == "counter" {
                    out.insert(format!("{name}_total"));
                }
            }
        } else if !l.starts_with('#') {
            let name: String = l
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}
