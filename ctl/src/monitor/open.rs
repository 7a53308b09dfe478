//! Opening the pinned ring buffer and `endpoints` map, with errors an operator can act on.

use std::io::{self, ErrorKind};
use std::path::Path;

use aya::maps::{HashMap as BpfHashMap, Map, MapData};
use datapath::EventReader;
use datapath::pin::{PinRoot, bpffs_mounted};
use datapath::policy::{EndpointInfo, EndpointKey};

const NOT_LOADED_HINT: &str = "is the agent running? pass --pin-root";

fn permission_denied(path: &Path) -> String {
    format!(
        "permission denied reading {}: the datapath's pinned maps need root \
         (CAP_BPF and access to the pin root); run ironctl monitor with sudo",
        path.display()
    )
}

/// Opens the events ring buffer with an error an operator can act on.
pub(super) fn open_reader(root: &PinRoot) -> Result<EventReader, String> {
    let dir = root.path();
    let not_loaded = || format!("no datapath loaded at {}: {NOT_LOADED_HINT}", dir.display());
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(format!(
                "{}: not a directory; {NOT_LOADED_HINT}",
                dir.display()
            ));
        }
        Err(e) if e.kind() == ErrorKind::NotFound => return Err(not_loaded()),
        Err(e) if e.kind() == ErrorKind::PermissionDenied => return Err(permission_denied(dir)),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    }
    let events = root
        .pin_path("events")
        .map_err(|e| format!("--pin-root: {e}"))?;
    match std::fs::symlink_metadata(&events) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {
            if !bpffs_mounted(dir).unwrap_or(true) {
                return Err(format!(
                    "no datapath loaded at {} (not on bpffs): {NOT_LOADED_HINT}",
                    dir.display()
                ));
            }
            return Err(not_loaded());
        }
        Err(e) if e.kind() == ErrorKind::PermissionDenied => return Err(permission_denied(dir)),
        Err(e) => return Err(format!("{}: {e}", events.display())),
    }
    EventReader::open(root).map_err(|e| match io_error(&e).map(io::Error::kind) {
        Some(ErrorKind::PermissionDenied) => permission_denied(&events),
        Some(ErrorKind::NotFound) => not_loaded(),
        _ => format!("opening {}: {}", events.display(), error_chain(&e)),
    })
}

/// The first `io::Error` in an error's source chain (aya wraps the syscall's error).
fn io_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a io::Error> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            return Some(io);
        }
        cur = err.source();
    }
    None
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(err) = cur {
        let next = err.to_string();
        if !s.contains(&next) {
            s.push_str(": ");
            s.push_str(&next);
        }
        cur = err.source();
    }
    s
}

pub(super) type EndpointsMap = BpfHashMap<MapData, EndpointKey, EndpointInfo>;

/// The pinned `endpoints` map (local address → endpoint id, identity), if it can be opened;
/// without it identities are learned from events only.
pub(super) fn open_endpoints_map(root: &PinRoot) -> Option<EndpointsMap> {
    let path = root.pin_path("endpoints").ok()?;
    let data = MapData::from_pin(&path).ok()?;
    EndpointsMap::try_from(Map::HashMap(data)).ok()
}
