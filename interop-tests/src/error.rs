use std::time::Duration;

/// Everything the lab can fail with. Messages say what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("the lab needs root (network namespaces, veth, daemons); run the tests as root")]
    NotRoot,
    #[error(
        "`{binary}` is not installed: run `sudo scripts/setup` (installs Debian package {package})"
    )]
    MissingBinary { binary: String, package: String },
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Command {
        cmd: String,
        status: String,
        stderr: String,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("timed out after {waited:?} waiting for {what}; last seen: {last}")]
    Timeout {
        what: String,
        waited: Duration,
        last: String,
    },
    #[error("could not parse {what}: {detail}")]
    Parse { what: String, detail: String },
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = LabError> = std::result::Result<T, E>;

pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> LabError {
    let context = context.into();
    move |source| LabError::Io { context, source }
}
