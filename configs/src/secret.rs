//! A secret string (e.g. a TCP MD5 password): zeroized on drop, redacted in Debug; and the
//! reader of secret files (etcd passwords), which never puts their content in an error.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(Zeroizing::new(s.into()))
    }

    /// The secret itself, for the one place that needs it (a setsockopt).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The largest secret file read (a password is a line; anything longer is the wrong file).
pub const MAX_SECRET_FILE_BYTES: u64 = 4096;

/// Why a secret file (e.g. `mesh.auth.password_file`) cannot be used. Never carries its content.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    /// (`cause` is part of the message, not a `source`: printed once in an error chain.)
    #[error("{field}: cannot read {path}: {cause}")]
    Read {
        field: String,
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{field}: {path} is not a regular file; point it at the file holding the password")]
    NotAFile { field: String, path: PathBuf },
    #[error(
        "{field}: {path} can be read by its group or by others (mode {mode:04o}); a password file must be private: run `chmod 600 {path}`"
    )]
    TooOpen {
        field: String,
        path: PathBuf,
        mode: u32,
    },
    #[error(
        "{field}: {path} has more than {MAX_SECRET_FILE_BYTES} bytes; a password file holds one line, the password"
    )]
    TooLarge { field: String, path: PathBuf },
    #[error("{field}: {path} {problem}; write the password alone on one line")]
    Invalid {
        field: String,
        path: PathBuf,
        problem: &'static str,
    },
}

/// Reads the secret in the file at `path` (named `field` in errors): a private regular file
/// (no permission for group or others), at most [`MAX_SECRET_FILE_BYTES`], one line of UTF-8
/// (a final newline is dropped). The mode is checked on the open file, not the path.
pub fn read_secret_file(path: &Path, field: &str) -> Result<Secret, SecretFileError> {
    use std::os::unix::fs::PermissionsExt;
    let read_err = |cause| SecretFileError::Read {
        field: field.into(),
        path: path.into(),
        cause,
    };
    // A FIFO or device would block or never end: look before opening, check again after.
    if !std::fs::metadata(path).map_err(read_err)?.is_file() {
        return Err(SecretFileError::NotAFile {
            field: field.into(),
            path: path.into(),
        });
    }
    let file = std::fs::File::open(path).map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    if !meta.is_file() {
        return Err(SecretFileError::NotAFile {
            field: field.into(),
            path: path.into(),
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(SecretFileError::TooOpen {
            field: field.into(),
            path: path.into(),
            mode,
        });
    }
    let mut buf = zeroize::Zeroizing::new(Vec::new());
    file.take(MAX_SECRET_FILE_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(read_err)?;
    if buf.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(SecretFileError::TooLarge {
            field: field.into(),
            path: path.into(),
        });
    }
    let invalid = |problem| SecretFileError::Invalid {
        field: field.into(),
        path: path.into(),
        problem,
    };
    let text = std::str::from_utf8(&buf).map_err(|_| invalid("is not UTF-8 text"))?;
    let line = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(text);
    if line.is_empty() {
        return Err(invalid("is empty"));
    }
    if line.chars().any(char::is_control) {
        return Err(invalid("holds more than one line or control characters"));
    }
    Ok(Secret::new(line))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &Path, name: &str, content: &[u8], mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(name);
        std::fs::write(&p, content).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn secret_files_are_private_bounded_and_never_quoted() {
        let dir = tempfile::tempdir().unwrap();
        let f = "mesh.auth.password_file";
        let ok = file(dir.path(), "ok", b"s3cret-pw\n", 0o600);
        assert_eq!(read_secret_file(&ok, f).unwrap().expose(), "s3cret-pw");
        let crlf = file(dir.path(), "crlf", b"pw\r\n", 0o400);
        assert_eq!(read_secret_file(&crlf, f).unwrap().expose(), "pw");
        let bare = file(dir.path(), "bare", b"pw", 0o600);
        assert_eq!(read_secret_file(&bare, f).unwrap().expose(), "pw");

        let open = file(dir.path(), "open", b"leaky-pw\n", 0o644);
        let e = read_secret_file(&open, f).unwrap_err().to_string();
        assert!(e.starts_with("mesh.auth.password_file: "), "{e}");
        assert!(e.contains("mode 0644") && e.contains("chmod 600"), "{e}");
        assert!(!e.contains("leaky-pw"), "{e}");
        let group = file(dir.path(), "group", b"pw\n", 0o640);
        assert!(matches!(
            read_secret_file(&group, f),
            Err(SecretFileError::TooOpen { mode: 0o640, .. })
        ));

        let big = file(dir.path(), "big", &[b'a'; 5000], 0o600);
        assert!(matches!(
            read_secret_file(&big, f),
            Err(SecretFileError::TooLarge { .. })
        ));
        for (name, content) in [
            ("empty", &b""[..]),
            ("nl", b"\n"),
            ("two", b"secret-one\nsecret-two\n"),
            ("bin", b"\xff\xfe"),
        ] {
            let p = file(dir.path(), name, content, 0o600);
            let e = read_secret_file(&p, f).unwrap_err();
            assert!(matches!(e, SecretFileError::Invalid { .. }), "{name}: {e}");
            assert!(!e.to_string().contains("secret-"), "{e}");
        }
        let e = read_secret_file(&dir.path().join("missing"), f).unwrap_err();
        assert!(matches!(e, SecretFileError::Read { .. }), "{e}");
        let e = read_secret_file(dir.path(), f).unwrap_err();
        assert!(matches!(e, SecretFileError::NotAFile { .. }), "{e}");
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            let e = read_secret_file(&fifo, f).unwrap_err();
            assert!(matches!(e, SecretFileError::NotAFile { .. }), "{e}");
        }
    }

    #[test]
    fn debug_is_redacted() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert_eq!(s.expose(), "hunter2");
    }
}
