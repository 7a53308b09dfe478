//! ironmesh's CNI plugin (CNI spec 1.0.0/1.1.0, also 0.4.0 results).
//!
//! Pure parts: [`config`] (environment + network configuration), [`ipam`] (host-scope
//! allocator over files), [`result`] (the spec's result objects), [`endpoint`] (records for
//! meshd). I/O edge: [`netlink`] (rtnetlink) and [`netns`] (setns on a helper thread).
//! [`plugin`] runs the commands.

pub mod config;
pub mod endpoint;
pub mod error;
pub mod grow;
pub mod ipam;
pub mod netlink;
pub mod netns;
pub mod plugin;
pub mod result;

pub use error::{CniError, Code};
