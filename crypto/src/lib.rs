//! Node-to-node encryption: WireGuard and IPsec keys, peers, rotation.
//!
//! For now: WireGuard (x25519) key material and its on-disk store.

mod keys;
mod store;

pub use keys::{KeyError, PrivateKey, PublicKey};
pub use store::{KEY_FILE, KeyStore, StoreError};
