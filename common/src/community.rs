//! BGP communities as people write them — in config files, manifests, the API and the CLI:
//! `65000:100` or a well-known name (RFC 1997, 3765, 7611, 7999, 8326, 9494) and
//! `65000:1:2` (large, RFC 8092). The one type and parser every crate uses: bgpd's codec
//! (`ironmesh_bgpd::wire::Community`) is this type, and the config, the API, manifests and the
//! CLI all parse with [`Community::from_str`].

use std::fmt;
use std::str::FromStr;

/// A standard community, `asn:value` with 16-bit halves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Community(pub u32);

impl Community {
    /// RFC 8326.
    pub const GRACEFUL_SHUTDOWN: Community = Community(0xFFFF_0000);
    /// RFC 7611.
    pub const ACCEPT_OWN: Community = Community(0xFFFF_0001);
    /// RFC 9494.
    pub const LLGR_STALE: Community = Community(0xFFFF_0006);
    /// RFC 9494.
    pub const NO_LLGR: Community = Community(0xFFFF_0007);
    /// RFC 7999.
    pub const BLACKHOLE: Community = Community(0xFFFF_029A);
    /// RFC 1997.
    pub const NO_EXPORT: Community = Community(0xFFFF_FF01);
    pub const NO_ADVERTISE: Community = Community(0xFFFF_FF02);
    pub const NO_EXPORT_SUBCONFED: Community = Community(0xFFFF_FF03);
    /// RFC 3765.
    pub const NO_PEER: Community = Community(0xFFFF_FF04);

    pub const fn new(asn: u16, value: u16) -> Self {
        Community(((asn as u32) << 16) | value as u32)
    }

    /// Whether this is in the well-known range 0xFFFF0000-0xFFFFFFFF (RFC 1997).
    pub const fn is_well_known(self) -> bool {
        self.0 >> 16 == 0xFFFF
    }

    /// The names accepted for well-known communities (`local-as` is Cisco's and FRR's name
    /// for NO_EXPORT_SUBCONFED).
    pub const NAMED: [(&'static str, Community); 10] = [
        ("graceful-shutdown", Self::GRACEFUL_SHUTDOWN),
        ("accept-own", Self::ACCEPT_OWN),
        ("llgr-stale", Self::LLGR_STALE),
        ("no-llgr", Self::NO_LLGR),
        ("blackhole", Self::BLACKHOLE),
        ("no-export", Self::NO_EXPORT),
        ("no-advertise", Self::NO_ADVERTISE),
        ("no-export-subconfed", Self::NO_EXPORT_SUBCONFED),
        ("local-as", Self::NO_EXPORT_SUBCONFED),
        ("no-peer", Self::NO_PEER),
    ];
}

impl fmt::Display for Community {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.0 >> 16, self.0 & 0xFFFF)
    }
}

impl FromStr for Community {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some((_, c)) = Self::NAMED.iter().find(|(name, _)| *name == s) {
            return Ok(*c);
        }
        let err = || {
            format!(
                "{s:?} is not a community; write ASN:VALUE with each part in 0..=65535 (e.g. \"65000:100\") \
                 or one of graceful-shutdown, accept-own, llgr-stale, no-llgr, blackhole, no-export, \
                 no-advertise, no-export-subconfed (local-as), no-peer"
            )
        };
        let (hi, lo) = s.split_once(':').ok_or_else(err)?;
        let hi: u16 = parse_part(hi).ok_or_else(err)?;
        let lo: u16 = parse_part(lo).ok_or_else(err)?;
        Ok(Community((u32::from(hi) << 16) | u32::from(lo)))
    }
}

/// A large community, `global:local1:local2` with 32-bit parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LargeCommunity {
    pub global: u32,
    pub local1: u32,
    pub local2: u32,
}

impl fmt::Display for LargeCommunity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.global, self.local1, self.local2)
    }
}

impl FromStr for LargeCommunity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || {
            format!(
                "{s:?} is not a large community; write GLOBAL:LOCAL1:LOCAL2 with each part in 0..=4294967295 (e.g. \"65000:1:2\")"
            )
        };
        let mut parts = s.split(':').map(parse_part::<u32>);
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(Some(global)), Some(Some(local1)), Some(Some(local2)), None) => {
                Ok(LargeCommunity {
                    global,
                    local1,
                    local2,
                })
            }
            _ => Err(err()),
        }
    }
}

/// Decimal digits only: no sign, no whitespace.
fn parse_part<T: FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn communities() {
        let c: Community = "65000:100".parse().unwrap();
        assert_eq!(c.0, (65000 << 16) | 100);
        assert_eq!(c.to_string(), "65000:100");
        assert_eq!("no-export".parse(), Ok(Community::NO_EXPORT));
        assert_eq!(
            "graceful-shutdown".parse(),
            Ok(Community::GRACEFUL_SHUTDOWN)
        );
        assert_eq!("local-as".parse(), Ok(Community::NO_EXPORT_SUBCONFED));
        for bad in [
            "65536:1",
            "1",
            "1:2:3",
            "a:b",
            " 1:2",
            "-1:2",
            "+1:2",
            "1:+2",
            "",
            "NO-EXPORT",
        ] {
            assert!(bad.parse::<Community>().is_err(), "{bad}");
        }
    }

    #[test]
    fn large_communities() {
        let c: LargeCommunity = "4200000000:1:2".parse().unwrap();
        assert_eq!((c.global, c.local1, c.local2), (4_200_000_000, 1, 2));
        assert_eq!(c.to_string(), "4200000000:1:2");
        for bad in [
            "1:2",
            "1:2:3:4",
            "4294967296:0:0",
            "a:1:2",
            "1::2",
            "+1:2:3",
        ] {
            assert!(bad.parse::<LargeCommunity>().is_err(), "{bad}");
        }
    }
}
