//! What this node registered, kept in `<state_dir>/endpoints.json` across restarts.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::cni::CniEndpoint;

/// One registered endpoint (by its record's file stem).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tracked {
    pub record: CniEndpoint,
    pub identity: u32,
    /// The datapath's endpoint id (the key of its policy), never 0.
    pub endpoint_id: u32,
}

/// FNV-1a 32 of the stem, never 0: a restarted meshd without its ledger picks the same ids.
pub fn hash_id(stem: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in stem.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h.max(1)
}

/// The ledger; a missing or unreadable one is empty (logged).
pub fn load(path: &Path) -> BTreeMap<String, Tracked> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
            tracing::warn!(path = %path.display(), error = %e, "ignoring an unreadable endpoint ledger");
            BTreeMap::new()
        }),
        Err(_) => BTreeMap::new(),
    }
}

/// Writes the ledger atomically (temp file + rename).
pub fn save(path: &Path, tracked: &BTreeMap<String, Tracked>) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(tracked).expect("ledger serializes"),
    )?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_round_trips_and_ids_are_never_zero() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("endpoints.json");
        assert!(load(&p).is_empty());
        let rec: CniEndpoint = serde_json::from_str(
            r#"{"containerID":"c1","ifname":"eth0","hostIfname":"im1","addresses":["10.1.0.2"]}"#,
        )
        .unwrap();
        let t: BTreeMap<_, _> = [(
            "c1-eth0".to_string(),
            Tracked {
                record: rec,
                identity: 65792,
                endpoint_id: hash_id("c1-eth0"),
            },
        )]
        .into();
        save(&p, &t).unwrap();
        assert_eq!(load(&p), t);
        std::fs::write(&p, "garbage").unwrap();
        assert!(load(&p).is_empty());
        assert_ne!(hash_id(""), 0);
        assert_eq!(hash_id("c1-eth0"), hash_id("c1-eth0"));
    }
}
