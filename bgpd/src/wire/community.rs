//! Communities (RFC 1997), extended (RFC 4360) and large (RFC 8092).

/// A community (RFC 1997): the workspace's one type, with its well-known constants and its
/// parser (config, API and CLI share it).
pub use common::Community;

/// An extended community (RFC 4360 §2): 8 raw octets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExtCommunity(pub [u8; 8]);

impl ExtCommunity {
    /// Type high octet.
    pub fn type_high(&self) -> u8 {
        self.0[0]
    }

    /// RFC 4360 §2: IANA-authority bit.
    pub fn is_transitive(&self) -> bool {
        self.0[0] & 0x40 == 0
    }
}

/// A large community (RFC 8092 §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LargeCommunity {
    pub global_admin: u32,
    pub local_data1: u32,
    pub local_data2: u32,
}
