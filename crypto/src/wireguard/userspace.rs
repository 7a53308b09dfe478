//! The userspace backend: the UAPI text protocol over `/var/run/wireguard/<ifname>.sock`, as
//! served by wireguard-go and boringtun. That directory is shared by all network namespaces,
//! so interface names must be unique on the machine; the socket reaches the device wherever
//! its namespace is.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use zeroize::Zeroizing;

use super::uapi::{self, ParseError, ResponseError, ResponseParser};
use super::{DeviceSettings, DeviceState, PeerChange, WgError, WireGuardBackend};

/// Where userspace WireGuard daemons put their control sockets.
pub const UAPI_SOCKET_DIR: &str = "/var/run/wireguard";

/// Longest response line accepted (real lines are under 100 bytes).
const MAX_LINE: usize = 16 * 1024;

/// A userspace WireGuard device reached through its UAPI socket. One connection per call.
#[derive(Debug, Clone)]
pub struct UserspaceBackend {
    ifname: String,
    socket: PathBuf,
    timeout: Duration,
}

impl UserspaceBackend {
    /// The device `ifname` at `/var/run/wireguard/<ifname>.sock`.
    pub fn new(ifname: &str) -> Self {
        Self::with_socket(
            ifname,
            Path::new(UAPI_SOCKET_DIR).join(format!("{ifname}.sock")),
        )
    }

    pub fn with_socket(ifname: &str, socket: impl Into<PathBuf>) -> Self {
        Self {
            ifname: ifname.into(),
            socket: socket.into(),
            timeout: Duration::from_secs(30),
        }
    }

    /// Read/write timeout of one request (default 30 s; a `set` of thousands of peers is
    /// applied by the daemon while it reads).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    fn io(&self, op: &'static str) -> impl FnOnce(std::io::Error) -> WgError + '_ {
        move |source| WgError::Io {
            device: self.ifname.clone(),
            op,
            source,
        }
    }

    fn response_error(&self, op: &'static str, e: ResponseError) -> WgError {
        match e {
            ResponseError::Refused(errno) => WgError::Refused {
                device: self.ifname.clone(),
                op,
                errno,
            },
            ResponseError::Malformed(source) => self.malformed(op, source),
        }
    }

    fn malformed(&self, op: &'static str, source: ParseError) -> WgError {
        WgError::Protocol {
            device: self.ifname.clone(),
            op,
            source,
        }
    }

    /// Sends `request` and feeds the answer to a parser, line by line, through one fixed,
    /// zeroizing buffer (a `get` answer carries the private key).
    fn exchange(&self, op: &'static str, request: &[u8]) -> Result<DeviceState, WgError> {
        let mut stream = UnixStream::connect(&self.socket).map_err(|source| WgError::Connect {
            device: self.ifname.clone(),
            path: self.socket.display().to_string(),
            source,
        })?;
        stream
            .set_read_timeout(Some(self.timeout))
            .and_then(|()| stream.set_write_timeout(Some(self.timeout)))
            .map_err(self.io(op))?;
        stream.write_all(request).map_err(self.io(op))?;

        let mut parser = ResponseParser::new();
        let mut buf = Zeroizing::new(vec![0u8; MAX_LINE]);
        let mut filled = 0;
        'read: loop {
            let n = stream.read(&mut buf[filled..]).map_err(self.io(op))?;
            if n == 0 {
                break;
            }
            filled += n;
            let mut start = 0;
            while let Some(nl) = buf[start..filled].iter().position(|&b| b == b'\n') {
                let line = std::str::from_utf8(&buf[start..start + nl]).map_err(|_| {
                    self.malformed(
                        op,
                        ParseError {
                            line: 0,
                            reason: "response is not UTF-8".into(),
                        },
                    )
                })?;
                start += nl + 1;
                if parser.feed_line(line).map_err(|e| self.malformed(op, e))? {
                    break 'read;
                }
            }
            buf.copy_within(start..filled, 0);
            filled -= start;
            if filled == MAX_LINE {
                return Err(self.malformed(
                    op,
                    ParseError {
                        line: 0,
                        reason: format!("a line longer than {MAX_LINE} bytes"),
                    },
                ));
            }
        }
        parser.finish().map_err(|e| self.response_error(op, e))
    }
}

impl WireGuardBackend for UserspaceBackend {
    fn device_name(&self) -> &str {
        &self.ifname
    }

    fn kind(&self) -> &'static str {
        "userspace-uapi"
    }

    fn device(&self) -> Result<DeviceState, WgError> {
        self.exchange("get", uapi::GET.as_bytes())
    }

    fn configure(&self, settings: &DeviceSettings<'_>) -> Result<(), WgError> {
        let req = uapi::encode_device_set(settings);
        self.exchange("set device", req.as_bytes()).map(drop)
    }

    fn apply(&self, changes: &[PeerChange]) -> Result<(), WgError> {
        if changes.is_empty() {
            return Ok(());
        }
        let req = uapi::encode_peer_set(changes);
        self.exchange("set peers", req.as_bytes()).map(drop)
    }
}
