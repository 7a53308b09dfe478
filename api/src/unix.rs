//! The API is served on a Unix socket: reachable from every network namespace of the host,
//! protected by file permissions, never exposed on the network.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// The API socket's mode: owner and group (`ironctl` as root or a member of the group).
pub const SOCKET_MODE: u32 = 0o660;

/// Connects a gRPC channel to the server listening on `path`.
pub async fn connect(path: impl AsRef<Path>) -> Result<Channel, tonic::transport::Error> {
    let path: PathBuf = path.as_ref().to_path_buf();
    // The URI is required by the API but unused: the connector dials the socket.
    Endpoint::from_static("http://ironmesh.local")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
}

/// Binds `path` with mode [`SOCKET_MODE`], creating its directory.
///
/// A stale socket at `path` (a previous run's) is replaced; anything else there (a regular
/// file, a directory, a symlink, ...) is left untouched and refused with
/// [`io::ErrorKind::AlreadyExists`]: a mistyped socket path must not delete a file.
///
/// The socket never exists at `path` with another mode: it is bound in a private (0700)
/// directory beside `path`, given its mode there, then hard-linked into place (a link never
/// replaces what appeared at `path` meanwhile).
pub fn bind(path: impl AsRef<Path>) -> io::Result<UnixListenerStream> {
    let path = path.as_ref();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    remove_stale_socket(path)?;
    let private = PrivateDir::create(dir)?;
    let tmp = private.0.join("s");
    let l = UnixListener::bind(&tmp)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(SOCKET_MODE))?;
    std::fs::hard_link(&tmp, path).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            io::Error::new(
                e.kind(),
                format!(
                    "{}: something was created at the socket path while binding; it was left in place, remove it or choose another path",
                    path.display()
                ),
            )
        } else {
            e
        }
    })?;
    drop(private);
    Ok(UnixListenerStream::new(l))
}

/// Removes a socket left at `path` by a previous run; refuses anything that is not a socket.
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let t = meta.file_type();
    if !t.is_socket() {
        let what = if t.is_symlink() {
            "a symbolic link"
        } else if t.is_dir() {
            "a directory"
        } else if t.is_file() {
            "a regular file"
        } else {
            "not a socket"
        };
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} is {what}, not a socket: refusing to replace it; remove it yourself if it is stale, or choose another socket path",
                path.display()
            ),
        ));
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// A 0700 directory beside the socket path, removed with what is in it on drop.
struct PrivateDir(PathBuf);

impl PrivateDir {
    fn create(parent: &Path) -> io::Result<PrivateDir> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        // Short: a Unix socket path is at most 107 bytes, and the socket is bound inside.
        let name = format!(
            ".{}.{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = parent.join(name);
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        Ok(PrivateDir(dir))
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0.join("s"));
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let d = std::env::temp_dir().join(format!(
                "ironmesh-api-{name}-{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos()
            ));
            std::fs::create_dir_all(&d).unwrap();
            TempDir(d)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[tokio::test]
    async fn the_socket_has_mode_0660_right_after_bind_and_nothing_else_is_left() {
        let d = TempDir::new("mode");
        let path = d.0.join("api.sock");
        let _l = bind(&path).unwrap();
        let m = std::fs::symlink_metadata(&path).unwrap();
        assert!(m.file_type().is_socket());
        assert_eq!(m.mode() & 0o7777, SOCKET_MODE);
        assert_eq!(
            names(&d.0),
            ["api.sock"],
            "the private bind directory is gone"
        );
        assert_eq!(m.nlink(), 1, "only the socket path links to the socket");
    }

    #[tokio::test]
    async fn a_bound_socket_answers_connections() {
        let d = TempDir::new("connect");
        let path = d.0.join("api.sock");
        let l = bind(&path).unwrap().into_inner();
        let (client, accepted) = tokio::join!(UnixStream::connect(&path), l.accept());
        client.unwrap();
        accepted.unwrap();
    }

    #[tokio::test]
    async fn a_stale_socket_is_replaced() {
        let d = TempDir::new("stale");
        let path = d.0.join("api.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        // Stale: nobody listens behind it.
        assert!(UnixStream::connect(&path).await.is_err());
        let l = bind(&path).unwrap().into_inner();
        let m = std::fs::symlink_metadata(&path).unwrap();
        assert!(m.file_type().is_socket());
        assert_eq!(m.mode() & 0o7777, SOCKET_MODE);
        // Replaced by a live one (an inode number cannot tell: the freed one may be reused).
        let (client, accepted) = tokio::join!(UnixStream::connect(&path), l.accept());
        client.unwrap();
        accepted.unwrap();
    }

    #[tokio::test]
    async fn a_regular_file_at_the_socket_path_is_left_untouched_and_the_error_says_why() {
        let d = TempDir::new("file");
        let path = d.0.join("api.sock");
        std::fs::write(&path, "precious").unwrap();
        let e = bind(&path).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        let msg = e.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(
            msg.contains("is a regular file, not a socket: refusing to replace it"),
            "{msg}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
        assert_eq!(names(&d.0), ["api.sock"]);
    }

    #[tokio::test]
    async fn a_directory_at_the_socket_path_is_left_untouched_and_refused() {
        let d = TempDir::new("dir");
        let path = d.0.join("api.sock");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("inside"), "x").unwrap();
        let e = bind(&path).unwrap_err();
        assert!(
            e.to_string().contains("is a directory, not a socket"),
            "{e}"
        );
        assert!(path.join("inside").exists());
    }

    #[tokio::test]
    async fn a_symlink_at_the_socket_path_is_left_untouched_and_refused_even_to_a_socket() {
        let d = TempDir::new("symlink");
        let target = d.0.join("real.sock");
        drop(std::os::unix::net::UnixListener::bind(&target).unwrap());
        let path = d.0.join("api.sock");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let e = bind(&path).unwrap_err();
        assert!(
            e.to_string().contains("is a symbolic link, not a socket"),
            "{e}"
        );
        assert!(std::fs::symlink_metadata(&path).unwrap().is_symlink());
        assert!(
            std::fs::symlink_metadata(&target)
                .unwrap()
                .file_type()
                .is_socket()
        );
    }
}
