//! A lab node whose eBPF datapath a test loads (or meshd loads) at a per-test pin root: the
//! pin root removed with its pins when the test ends ([`Pins`]), and a stop flag for the pods'
//! servers ([`Stop`]). The pods themselves are attached with [`crate::cni`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use datapath::pin::{PinRoot, bpffs_mounted};

use crate::error::{LabError, Result};

/// A per-test pin root and its pins (maps and links), removed on drop, also when the test
/// panics.
#[derive(Debug)]
pub struct Pins(pub PinRoot);

impl Pins {
    /// The pin root at `path` (under `/sys/fs/bpf`), which must be on a mounted bpffs.
    pub fn mounted(path: impl Into<PathBuf>) -> Result<Pins> {
        let root = PinRoot::new(path).map_err(|e| LabError::Invalid(format!("pin root: {e}")))?;
        if !bpffs_mounted(root.path()).unwrap_or(false) {
            return Err(LabError::Invalid(
                "bpffs is not mounted on /sys/fs/bpf: run scripts/setup".into(),
            ));
        }
        Ok(Pins(root))
    }

    pub fn root(&self) -> &PinRoot {
        &self.0
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        remove_pins(self.0.path());
    }
}

/// Removes the pins in `dir` and `dir` itself; whatever is already gone is skipped.
pub fn remove_pins(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// Stops the pods' servers when the test ends, however it ends.
#[derive(Debug)]
pub struct Stop(pub Arc<AtomicBool>);

impl Stop {
    pub fn new() -> Stop {
        Stop(Arc::new(AtomicBool::new(false)))
    }
}

impl Default for Stop {
    fn default() -> Stop {
        Stop::new()
    }
}

impl Drop for Stop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}
