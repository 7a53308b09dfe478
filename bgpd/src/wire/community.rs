//! Communities (RFC 1997), extended (RFC 4360) and large (RFC 8092).

/// A community (RFC 1997).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Community(pub u32);

impl Community {
    /// RFC 8326.
    pub const GRACEFUL_SHUTDOWN: Community = Community(0xffff_0000);
    /// RFC 7611.
    pub const ACCEPT_OWN: Community = Community(0xffff_0001);
    /// RFC 9494.
    pub const LLGR_STALE: Community = Community(0xffff_0006);
    /// RFC 9494.
    pub const NO_LLGR: Community = Community(0xffff_0007);
    /// RFC 7999.
    pub const BLACKHOLE: Community = Community(0xffff_029a);
    /// RFC 1997.
    pub const NO_EXPORT: Community = Community(0xffff_ff01);
    pub const NO_ADVERTISE: Community = Community(0xffff_ff02);
    pub const NO_EXPORT_SUBCONFED: Community = Community(0xffff_ff03);
    /// RFC 3765.
    pub const NO_PEER: Community = Community(0xffff_ff04);

    pub fn new(asn: u16, value: u16) -> Self {
        Community(((asn as u32) << 16) | value as u32)
    }

    /// Whether this is in the well-known range 0xFFFF0000-0xFFFFFFFF.
    pub fn is_well_known(self) -> bool {
        self.0 >> 16 == 0xffff
    }
}

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
