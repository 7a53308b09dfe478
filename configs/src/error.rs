//! Config errors: each names the TOML path of the field and how to fix it.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// One invalid field, e.g. `bgp.peers[1].peer_asn: 0 is not a valid ASN; ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// TOML path, e.g. `bgp.peers[1].peer_asn`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "config file {path} has {size} bytes, more than the {MAX_CONFIG_BYTES} a config may have; is it the right file?"
    )]
    TooLarge { path: PathBuf, size: u64 },
    /// TOML syntax, unknown field or wrong type; the message shows the line (bounded).
    #[error("{}", bounded(&.0.to_string(), MAX_QUOTED))]
    Parse(#[from] toml::de::Error),
    /// Every field that failed validation, in file order.
    #[error("{}", list(.0))]
    Invalid(Vec<FieldError>),
}

/// The largest config file read (a node config is a few KiB).
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;
/// The most of a message (and the value it quotes) an error carries.
pub const MAX_QUOTED: usize = 1024;

/// `s`, cut to `max` bytes on a character boundary, saying how long it was.
pub(crate) fn bounded(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes in all)", &s[..end], s.len())
}

fn list(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl ConfigError {
    /// The field errors of an `Invalid` config; empty for other errors.
    pub fn field_errors(&self) -> &[FieldError] {
        match self {
            ConfigError::Invalid(list) => list,
            _ => &[],
        }
    }
}

/// Collects field errors during validation.
#[derive(Debug, Default)]
pub(crate) struct Errors(pub(crate) Vec<FieldError>);

impl Errors {
    pub(crate) fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        // A message quotes the offending value: only a bounded prefix of it.
        self.0.push(FieldError {
            path: path.into(),
            message: bounded(&message.into(), MAX_QUOTED),
        });
    }

    /// Records `Err` under `path` and turns the result into an `Option`.
    pub(crate) fn check<T, E: fmt::Display>(
        &mut self,
        path: impl Into<String>,
        r: Result<T, E>,
    ) -> Option<T> {
        r.map_err(|e| self.push(path, e.to_string())).ok()
    }

    /// Checks an integer is in `lo..=hi`.
    pub(crate) fn int<T: TryFrom<i64>>(
        &mut self,
        path: impl Into<String>,
        v: i64,
        lo: i64,
        hi: i64,
        what: &str,
    ) -> Option<T> {
        if (lo..=hi).contains(&v) {
            T::try_from(v).ok()
        } else {
            self.push(
                path,
                format!("{v} is out of range; use {lo}..={hi} ({what})"),
            );
            None
        }
    }
}
