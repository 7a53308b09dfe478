//! Node-to-node encryption: WireGuard and IPsec keys, peers, rotation.
//!
//! Today: WireGuard key material and its on-disk store ([`KeyStore`]), and [`wireguard`]: the
//! device behind a backend trait (userspace UAPI now, kernel netlink next), the peer reconciler
//! and key rotation. IPsec and the rollout modes come next (issue 5).

mod keys;
mod store;
pub mod wireguard;

pub use keys::{KeyError, PrivateKey, PublicKey};
pub use store::{KEY_FILE, KeyStore, StoreError};
