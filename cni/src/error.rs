//! CNI error results (spec §"Error", well-known codes 1–99; plugin codes from 100).

use serde::Serialize;

/// Error codes the CNI spec defines (SPEC.md "Error" table), plus our plugin-specific ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Code {
    /// 1: incompatible CNI version.
    IncompatibleVersion = 1,
    /// 2: unsupported field in network configuration.
    UnsupportedField = 2,
    /// 3: container unknown or does not exist.
    UnknownContainer = 3,
    /// 4: invalid necessary environment variables, like CNI_COMMAND, CNI_CONTAINERID, etc.
    InvalidEnvironment = 4,
    /// 5: I/O failure.
    Io = 5,
    /// 6: failed to decode content.
    Decode = 6,
    /// 7: invalid network config.
    InvalidNetworkConfig = 7,
    /// 50 (1.1.0 STATUS): the plugin is not available (cannot service ADD).
    NotAvailable = 50,
    /// 11: try again later (here: the PodCIDR is exhausted; retry after a DEL frees an address).
    TryAgainLater = 11,
    /// 100 (plugin-specific): CHECK found the attachment not as ADD made it.
    CheckFailed = 100,
    /// 999 (libcni's "internal" convention): netlink or other unexpected failure.
    Internal = 999,
}

/// A CNI error: printed as the spec's error object on stdout, exit status non-zero.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CNI error {}: {msg}{}", *code as u32, details.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
pub struct CniError {
    pub code: Code,
    pub msg: String,
    pub details: Option<String>,
}

impl CniError {
    pub fn new(code: Code, msg: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: None,
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> CniError {
        self.details = Some(details.into());
        self
    }

    pub fn internal(msg: impl Into<String>, err: impl std::fmt::Display) -> CniError {
        CniError::new(Code::Internal, msg).with_details(err.to_string())
    }

    pub fn io(msg: impl Into<String>, err: impl std::fmt::Display) -> CniError {
        CniError::new(Code::Io, msg).with_details(err.to_string())
    }

    /// The spec's JSON error object for `cni_version`.
    pub fn to_json(&self, cni_version: &str) -> String {
        #[derive(Serialize)]
        struct Wire<'a> {
            #[serde(rename = "cniVersion")]
            cni_version: &'a str,
            code: u32,
            msg: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            details: Option<&'a str>,
        }
        serde_json::to_string(&Wire {
            cni_version,
            code: self.code as u32,
            msg: &self.msg,
            details: self.details.as_deref(),
        })
        .expect("error object serializes")
    }
}

pub type Result<T, E = CniError> = std::result::Result<T, E>;
