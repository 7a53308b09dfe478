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
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

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

/// A network namespace's identity: device and inode of its nsfs file (what `ip netns
/// identify` compares). Two paths name the same namespace exactly when these are equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetnsId {
    pub dev: u64,
    pub ino: u64,
}

impl NetnsId {
    /// The identity of an open namespace file.
    pub fn of(ns: &File) -> io::Result<NetnsId> {
        let m = ns.metadata()?;
        Ok(NetnsId {
            dev: m.dev(),
            ino: m.ino(),
        })
    }

    /// The network namespace this process runs in (`/proc/self/ns/net`): the host's, as
    /// far as the plugin is concerned.
    pub fn own() -> io::Result<NetnsId> {
        let m = std::fs::metadata("/proc/self/ns/net")?;
        Ok(NetnsId {
            dev: m.dev(),
            ino: m.ino(),
        })
    }
}

/// Opens `path` as a network namespace without trusting it: it must be a plain file (a
/// namespace file or its bind mount; not a FIFO, device or directory, which opening could
/// block on or disturb), opened non-blocking, and joinable as a network namespace
/// (`setns(2)` on a throwaway thread). Returns the open file and its identity.
pub fn open(path: &Path) -> io::Result<(File, NetnsId)> {
    let not_netns = || io::Error::new(io::ErrorKind::InvalidInput, "not a network namespace");
    if !std::fs::metadata(path)?.is_file() {
        return Err(not_netns());
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(not_netns());
    }
    run_in(&f, || ()).map_err(|e| {
        if e.raw_os_error() == Some(libc::EINVAL) {
            not_netns()
        } else {
            e
        }
    })?;
    let id = NetnsId::of(&f)?;
    Ok((f, id))
}
