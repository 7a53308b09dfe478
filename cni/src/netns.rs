//! Running code inside another network namespace.
//!
//! `setns(2)` switches only the calling thread, so the switch happens on a short-lived thread
//! of our own that ends right after: no other code of the process ever runs in the pod's
//! namespace by accident. Netlink sockets stay bound to the namespace they were created in,
//! so a connection made on that thread keeps talking to the pod's namespace afterwards.
#![allow(unsafe_code)] // setns(2) has no safe wrapper in std or libc.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Runs `f` on a fresh thread that first joined the network namespace `ns` (an open
/// `/var/run/netns/<name>` or `/proc/<pid>/ns/net`).
pub fn run_in<F, R>(ns: &File, f: F) -> io::Result<R>
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    let fd = ns.as_raw_fd();
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: `fd` is an open descriptor owned by `ns`, which the scope borrows
            // for the whole life of this thread, so it cannot be closed or reused under us.
            // setns(2) with CLONE_NEWNET changes only this thread's network namespace and
            // touches no memory of ours; the thread ends when `f` returns, so nothing else
            // runs in the switched namespace.
            let rc = unsafe { libc::setns(fd, libc::CLONE_NEWNET) };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(f())
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}
