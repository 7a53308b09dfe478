//! IPsec: the key file (Cilium's format), per-node-pair keys, the per-sender SPI on the wire,
//! XFRM policies and states over netlink, and SPI rotation as a sans-IO plan.
//!
//! What was verified where: on the lab kernel (6.18, no ESP/AH/IPcomp), policies are installed
//! for real in a test namespace, read back over netlink and compared with `ip xfrm policy`; an
//! SA install is sent for real and the kernel's refusal is mapped to
//! [`XfrmError::EspUnavailable`]. SA encoding is checked field by field in unit tests (and by
//! `ip xfrm` only where a kernel with ESP exists: not here).

pub mod derive;
pub mod keyfile;
pub mod node;
pub mod rotation;
pub mod sa;
pub mod spi;
pub mod xfrm;

pub use derive::{PairKeys, directional_key, pair_keys};
pub use keyfile::{IpsecKey, KeyFileError, LineError};
pub use node::{InstallError, IpsecNode, PolicySync};
pub use sa::SaId;
pub use spi::{SpiError, wire_spi};
pub use xfrm::{Dir, Policy, Sa, Xfrm, XfrmError, XfrmPeer};
