//! The node's WireGuard private key on disk: `<state_dir>/wireguard.key`,
//! base64 plus newline (as `wg genkey` writes it), mode 0600.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use zeroize::Zeroizing;

use crate::keys::{KEY_B64_LEN, KeyError, PrivateKey, PublicKey};

pub const KEY_FILE: &str = "wireguard.key";

/// Why the key store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "{path} has mode {mode:04o}, readable or writable by group or others; a private key must not be: run `chmod 600 {path}` (and consider rotating the key)"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("{path} is not a regular file; remove it so a new key can be created")]
    NotAFile { path: PathBuf },
    #[error(
        "{path} holds no valid key: {source}; remove the file to generate a new key (peers then need the new public key)"
    )]
    Corrupt { path: PathBuf, source: KeyError },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.to_owned();
    move |source| StoreError::Io {
        action,
        path,
        source,
    }
}

/// The node's long-lived WireGuard key, loaded from or created in the state dir.
#[derive(Debug)]
pub struct KeyStore {
    path: PathBuf,
    key: PrivateKey,
}

impl KeyStore {
    /// Loads `<state_dir>/wireguard.key`, creating the dir (0700) and a new
    /// key (0600, written atomically) if there is none.
    pub fn load_or_create(state_dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        let dir = state_dir.as_ref();
        let path = dir.join(KEY_FILE);
        match fs::symlink_metadata(&path) {
            Ok(_) => {
                return Ok(Self {
                    key: load(&path)?,
                    path,
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("inspect", &path)(e)),
        }
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err("create directory", dir))?;
        let key = PrivateKey::generate();
        create(dir, &path, &key)?;
        Ok(Self { path, key })
    }

    /// Replaces the key with a fresh one and returns its public key. The file is replaced
    /// atomically (a crash leaves the old or the new key, never neither); the old key is
    /// zeroized. Applying it to the device is [`crate::wireguard::rotate_key`]'s job.
    pub fn rotate(&mut self) -> Result<PublicKey, StoreError> {
        let key = PrivateKey::generate();
        let dir = self.path.parent().unwrap_or(Path::new("."));
        create(dir, &self.path, &key)?;
        self.key = key;
        Ok(self.key.public_key())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn private_key(&self) -> &PrivateKey {
        &self.key
    }

    pub fn public_key(&self) -> PublicKey {
        self.key.public_key()
    }

    /// Time since the key file was written (created or rotated: it is replaced, never edited).
    pub fn key_age(&self, now: SystemTime) -> Option<Duration> {
        let written = fs::metadata(&self.path).and_then(|m| m.modified()).ok()?;
        Some(now.duration_since(written).unwrap_or_default())
    }
}

fn load(path: &Path) -> Result<PrivateKey, StoreError> {
    let meta = fs::symlink_metadata(path).map_err(io_err("inspect", path))?;
    if !meta.file_type().is_file() {
        return Err(StoreError::NotAFile {
            path: path.to_owned(),
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(StoreError::Permissions {
            path: path.to_owned(),
            mode,
        });
    }
    let corrupt = |source| StoreError::Corrupt {
        path: path.to_owned(),
        source,
    };
    // Read at most one byte more than a valid file, so a huge file is not slurped.
    let mut text = Zeroizing::new(String::new());
    File::open(path)
        .and_then(|f| f.take(KEY_B64_LEN as u64 + 2).read_to_string(&mut text))
        .map_err(io_err("read", path))?;
    let b64 = text.strip_suffix('\n').unwrap_or(&text);
    if b64.len() != KEY_B64_LEN {
        return Err(corrupt(KeyError::Base64 {
            what: "private key",
            reason: format!("{} characters instead of {KEY_B64_LEN}", b64.len()),
        }));
    }
    PrivateKey::from_base64(b64).map_err(corrupt)
}

/// Writes a temp file (O_EXCL, 0600), fsyncs it, renames it into place and
/// fsyncs the dir, so a crash leaves either no key or a whole key.
fn create(dir: &Path, path: &Path, key: &PrivateKey) -> Result<(), StoreError> {
    let tmp = dir.join(format!(".{KEY_FILE}.tmp-{}", std::process::id()));
    // A temp file of a crashed earlier process with our pid: never a live one.
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(io_err("remove stale", &tmp)(e));
        }
        _ => {}
    }
    let write = || -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        // The umask can only clear bits; set the exact mode anyway.
        f.set_permissions(fs::Permissions::from_mode(0o600))?;
        let mut line = key.expose_base64();
        line.push('\n');
        f.write_all(line.as_bytes())?;
        f.sync_all()
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(io_err("write", &tmp)(e));
    }
    fs::rename(&tmp, path).map_err(io_err("rename into place", path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync directory", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_0600_and_reloads_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let first = KeyStore::load_or_create(&state).unwrap();
        let meta = fs::metadata(first.path()).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
        assert_eq!(
            fs::metadata(&state).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let again = KeyStore::load_or_create(&state).unwrap();
        assert_eq!(again.public_key(), first.public_key());
        // Only the key file is left behind.
        let names: Vec<_> = fs::read_dir(&state)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [KEY_FILE]);
        let text = fs::read_to_string(first.path()).unwrap();
        assert_eq!(
            text,
            format!("{}\n", first.private_key().expose_base64().as_str())
        );
    }

    #[test]
    fn rotate_replaces_the_file_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = KeyStore::load_or_create(dir.path()).unwrap();
        let old = store.public_key();
        let new = store.rotate().unwrap();
        assert_ne!(old, new);
        assert_eq!(store.public_key(), new);
        let meta = fs::metadata(store.path()).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
        assert_eq!(
            KeyStore::load_or_create(dir.path()).unwrap().public_key(),
            new
        );
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [KEY_FILE]);
    }

    #[test]
    fn refuses_group_readable_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::load_or_create(dir.path()).unwrap();
        fs::set_permissions(store.path(), fs::Permissions::from_mode(0o640)).unwrap();
        let err = KeyStore::load_or_create(dir.path()).unwrap_err();
        assert!(
            matches!(err, StoreError::Permissions { mode: 0o640, .. }),
            "{err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("has mode 0640") && msg.contains("chmod 600"),
            "{msg}"
        );
    }

    #[test]
    fn refuses_wrong_length_and_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        for (content, needle) in [
            ("AAAA\n", "4 characters instead of 44"),
            ("x".repeat(500).as_str(), "46 characters instead of 44"),
            (
                "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!=\n",
                "not valid base64",
            ),
        ] {
            let _ = fs::remove_file(&path);
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .unwrap()
                .write_all(content.as_bytes())
                .unwrap();
            let err = KeyStore::load_or_create(dir.path()).unwrap_err();
            let msg = err.to_string();
            assert!(
                matches!(err, StoreError::Corrupt { .. }) && msg.contains(needle),
                "{msg}"
            );
            assert!(
                msg.contains("remove the file to generate a new key"),
                "{msg}"
            );
        }
    }

    #[test]
    fn refuses_a_directory_or_symlink() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join(KEY_FILE)).unwrap();
        assert!(matches!(
            KeyStore::load_or_create(dir.path()),
            Err(StoreError::NotAFile { .. })
        ));
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc/hostname", dir.path().join(KEY_FILE)).unwrap();
        assert!(matches!(
            KeyStore::load_or_create(dir.path()),
            Err(StoreError::NotAFile { .. })
        ));
    }

    #[test]
    fn accepts_wg_genkey_style_file_without_newline() {
        let dir = tempfile::tempdir().unwrap();
        let key = PrivateKey::generate();
        let path = dir.path().join(KEY_FILE);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o400)
            .open(&path)
            .unwrap();
        f.write_all(key.expose_base64().as_bytes()).unwrap();
        assert_eq!(
            KeyStore::load_or_create(dir.path()).unwrap().public_key(),
            key.public_key()
        );
    }
}
