//! Where ironmesh pins its eBPF maps and programs: a directory on bpffs,
//! `/sys/fs/bpf/ironmesh` by default.

use std::fs::DirBuilder;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};

pub const DEFAULT_PIN_ROOT: &str = "/sys/fs/bpf/ironmesh";
const MOUNTINFO: &str = "/proc/self/mountinfo";
const MOUNT_HINT: &str = "mount it with `mount -t bpf bpf /sys/fs/bpf` (scripts/setup does this)";

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("pin root {0:?} must be an absolute path without '..'")]
    NotAbsolute(PathBuf),
    #[error("pin name {0:?} is invalid; use 1..=255 characters without '/' (and not '.' or '..')")]
    BadName(String),
    #[error("cannot read {MOUNTINFO}: {0}")]
    MountInfo(io::Error),
    #[error("{root} is on {fstype} (mounted at {mount_point}), not bpffs; {MOUNT_HINT}", root = .root.display(), mount_point = .mount_point.display())]
    NotBpffs {
        root: PathBuf,
        fstype: String,
        mount_point: PathBuf,
    },
    #[error("cannot create pin directory {}: {source}", .path.display())]
    Create { path: PathBuf, source: io::Error },
}

/// An absolute pin directory, e.g. `/sys/fs/bpf/ironmesh`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinRoot(PathBuf);

impl Default for PinRoot {
    fn default() -> Self {
        Self(DEFAULT_PIN_ROOT.into())
    }
}

impl PinRoot {
    pub fn new(path: impl Into<PathBuf>) -> Result<Self, PinError> {
        let path = path.into();
        if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
            return Err(PinError::NotAbsolute(path));
        }
        Ok(Self(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The pin path of one map or program, directly under the root.
    pub fn pin_path(&self, name: &str) -> Result<PathBuf, PinError> {
        if name.is_empty() || name.len() > 255 || name.contains('/') || name == "." || name == ".."
        {
            return Err(PinError::BadName(name.into()));
        }
        Ok(self.0.join(name))
    }
}

/// One line of /proc/self/mountinfo, the parts we need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub mount_point: PathBuf,
    pub fstype: String,
}

/// Parses mountinfo (proc(5)); lines that do not parse are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            // Field 5 is the mount point; the fstype follows the "-" separator.
            let sep = fields.iter().position(|f| *f == "-")?;
            let mount_point = fields.get(4).filter(|_| sep >= 6)?;
            let fstype = fields.get(sep + 1)?;
            Some(Mount {
                mount_point: unescape_octal(mount_point).into(),
                fstype: (*fstype).to_owned(),
            })
        })
        .collect()
}

/// mountinfo writes space, tab, newline and backslash as `\NNN` octal.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], oct) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount that holds `path` (lexically: the longest mount point that is
/// an ancestor; the last one listed wins when mounts are stacked).
pub fn mount_for<'a>(mounts: &'a [Mount], path: &Path) -> Option<&'a Mount> {
    mounts
        .iter()
        .filter(|m| path.starts_with(&m.mount_point))
        .fold(None, |best: Option<&Mount>, m| match best {
            Some(b) if b.mount_point.components().count() > m.mount_point.components().count() => {
                Some(b)
            }
            _ => Some(m),
        })
}

fn read_mounts() -> Result<Vec<Mount>, PinError> {
    std::fs::read_to_string(MOUNTINFO)
        .map(|t| parse_mountinfo(&t))
        .map_err(PinError::MountInfo)
}

/// Whether `path` lies on a bpffs mount, per /proc/self/mountinfo.
pub fn bpffs_mounted(path: &Path) -> Result<bool, PinError> {
    Ok(mount_for(&read_mounts()?, path).is_some_and(|m| m.fstype == "bpf"))
}

/// Creates the pin directory (0700) after checking it is on bpffs: pins on
/// any other filesystem fail or vanish with the process.
pub fn ensure_pin_dir(root: &PinRoot) -> Result<(), PinError> {
    let mounts = read_mounts()?;
    match mount_for(&mounts, root.path()) {
        Some(m) if m.fstype == "bpf" => {}
        Some(m) => {
            return Err(PinError::NotBpffs {
                root: root.0.clone(),
                fstype: m.fstype.clone(),
                mount_point: m.mount_point.clone(),
            });
        }
        None => {
            return Err(PinError::NotBpffs {
                root: root.0.clone(),
                fstype: "no filesystem".into(),
                mount_point: "(none)".into(),
            });
        }
    }
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root.path())
        .map_err(|source| PinError::Create {
            path: root.0.clone(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
23 22 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
42 23 0:39 / /sys/fs/bpf rw,relatime - bpf bpf rw
50 22 0:45 / /mnt/my\\040disk rw - tmpfs tmpfs rw
51 22 0:46 / /mnt/stack rw - tmpfs tmpfs rw
52 51 0:47 / /mnt/stack rw - bpf bpf rw,mode=700
garbage line
";

    #[test]
    fn parses_mountinfo() {
        let m = parse_mountinfo(SAMPLE);
        assert_eq!(m.len(), 6);
        assert_eq!(
            m[2],
            Mount {
                mount_point: "/sys/fs/bpf".into(),
                fstype: "bpf".into()
            }
        );
        assert_eq!(m[3].mount_point, Path::new("/mnt/my disk"));
    }

    #[test]
    fn finds_the_innermost_mount() {
        let m = parse_mountinfo(SAMPLE);
        assert_eq!(
            mount_for(&m, Path::new("/sys/fs/bpf/ironmesh"))
                .unwrap()
                .fstype,
            "bpf"
        );
        assert_eq!(
            mount_for(&m, Path::new("/sys/fs/bpfx")).unwrap().fstype,
            "sysfs"
        );
        assert_eq!(mount_for(&m, Path::new("/var/lib")).unwrap().fstype, "ext4");
        // Stacked mounts: the later one is on top.
        assert_eq!(
            mount_for(&m, Path::new("/mnt/stack/x")).unwrap().fstype,
            "bpf"
        );
        assert!(mount_for(&m[1..], Path::new("/var")).is_none());
    }

    #[test]
    fn pin_root_paths() {
        let root = PinRoot::default();
        assert_eq!(root.path(), Path::new("/sys/fs/bpf/ironmesh"));
        assert_eq!(
            root.pin_path("ipcache").unwrap(),
            Path::new("/sys/fs/bpf/ironmesh/ipcache")
        );
        assert!(
            root.pin_path("a/b").is_err()
                && root.pin_path("").is_err()
                && root.pin_path("..").is_err()
        );
        assert!(PinRoot::new("relative").is_err());
        assert!(PinRoot::new("/sys/fs/bpf/../x").is_err());
    }

    #[test]
    fn refuses_a_pin_dir_off_bpffs() {
        let dir = tempfile::tempdir().unwrap();
        let root = PinRoot::new(dir.path().join("pins")).unwrap();
        let err = ensure_pin_dir(&root).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, PinError::NotBpffs { .. }), "{msg}");
        assert!(
            msg.contains("not bpffs; mount it with `mount -t bpf bpf /sys/fs/bpf`"),
            "{msg}"
        );
        assert!(!root.path().exists());
        assert!(!bpffs_mounted(root.path()).unwrap());
    }

    #[test]
    fn creates_a_pin_dir_on_bpffs_when_mounted() {
        let root =
            PinRoot::new(format!("/sys/fs/bpf/ironmesh-test-{}", std::process::id())).unwrap();
        if bpffs_mounted(root.path()).unwrap() {
            ensure_pin_dir(&root).unwrap();
            assert!(root.path().is_dir());
            ensure_pin_dir(&root).unwrap(); // idempotent
            std::fs::remove_dir(root.path()).unwrap();
        } else {
            // Without bpffs (scripts/setup not run) the error must say how to fix it.
            assert!(matches!(
                ensure_pin_dir(&root),
                Err(PinError::NotBpffs { .. })
            ));
        }
    }
}
