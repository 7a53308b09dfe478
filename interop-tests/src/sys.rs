//! The few libc calls the lab needs.
//! unsafe: `kill(2)` and `geteuid(2)` are plain syscalls with integer arguments and no memory
//! ownership; these wrappers are the only unsafe code in the crate.
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
