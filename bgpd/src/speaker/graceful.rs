//! Graceful restart as the restarting speaker (RFC 4724 §4.1): bgpd stops without a
//! NOTIFICATION and leaves a marker; the next start within the restart time sets the R bit,
//! and peers keep our routes (stale) and keep forwarding until our End-of-RIB.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::{info, warn};

use super::config::RESTART_TIME;

const MARKER: &str = "bgpd.graceful-restart";

fn marker(dir: &Path) -> PathBuf {
    dir.join(MARKER)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Called at a graceful stop: remember when.
pub fn mark_stopped(dir: &Path) {
    if let Err(e) =
        std::fs::create_dir_all(dir).and_then(|()| std::fs::write(marker(dir), now().to_string()))
    {
        warn!(dir = %dir.display(), error = %e, "cannot write the graceful-restart marker; the next start will not set the R bit");
    }
}

/// Called at start: true when the previous run stopped gracefully less than the restart time
/// ago. The marker is consumed.
pub fn restarted(dir: &Path) -> bool {
    let path = marker(dir);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return false;
    };
    let _ = std::fs::remove_file(&path);
    let stopped: u64 = text.trim().parse().unwrap_or(0);
    let age = Duration::from_secs(now().saturating_sub(stopped));
    let within = age < Duration::from_secs(RESTART_TIME.into());
    if within {
        info!(ago = ?age, "restarting gracefully: R bit set, peers keep our routes until End-of-RIB");
    }
    within
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_round_trip_and_consumed() {
        let dir = std::env::temp_dir().join(format!("ironmesh-gr-{}", std::process::id()));
        assert!(!restarted(&dir));
        mark_stopped(&dir);
        assert!(restarted(&dir));
        assert!(!restarted(&dir), "the marker is used once");
        std::fs::write(marker(&dir), (now() - 3600).to_string()).unwrap();
        assert!(!restarted(&dir), "an old marker is not a restart");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
