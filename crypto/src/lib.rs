//! Node-to-node encryption: WireGuard and IPsec keys, peers, rotation.
//!
//! Today: WireGuard key material and its on-disk store ([`KeyStore`]), and [`wireguard`]: the
//! device behind a backend trait (userspace UAPI now, kernel netlink next), the peer reconciler
//! and key rotation; [`rollout`]: the modes off / opportunistic / strict (tunnel routes, the
//! nftables plaintext filter, per-node status, loss-free key rotation); [`ipsec`]: the key file
//! (Cilium's format), per-node-pair keys, XFRM policies and states over [`netlink`], and SPI
//! rotation as a sans-IO plan. See docs/encryption.md for what was verified on which kernel.

pub mod ipsec;
mod keys;
pub mod netlink;
pub mod rollout;
mod store;
pub mod wireguard;

pub use keys::{KeyError, PrivateKey, PublicKey};
pub use store::{KEY_FILE, KeyStore, StoreError};
