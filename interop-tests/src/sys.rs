//! The few libc calls the lab needs.
//! unsafe: `kill(2)`, `geteuid(2)` and `setns(2)` are plain syscalls with integer arguments
//! and no memory ownership; these wrappers are the only unsafe code in the crate.
#![allow(unsafe_code)]

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Sends `sig` to `pid`; false if the process does not exist.
pub fn signal(pid: u32, sig: i32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false; // never signal a process group or everyone
    }
    // SAFETY: kill takes integers only.
    unsafe { libc::kill(pid, sig) == 0 }
}

pub fn alive(pid: u32) -> bool {
    signal(pid, 0) || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Moves the calling thread into the network namespace `netns` (setns(2) changes only the
/// calling thread, so callers use a thread of their own).
pub fn join_netns(netns: &str) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(format!("/run/netns/{netns}"))?;
    // SAFETY: the fd stays open for the call; CLONE_NEWNET is a plain flag.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
