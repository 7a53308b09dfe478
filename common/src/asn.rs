//! Autonomous system numbers (4-octet, RFC 6793).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why an ASN string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not an ASN; write asplain (e.g. 65001 or 4200000000) or asdot (e.g. 64086.59904)"
)]
pub struct AsnParseError(pub String);

/// An AS number. Displays in asplain (RFC 5396); parses asplain and asdot.
/// Any u32 is representable; whether 0 or AS_TRANS is acceptable depends on
/// where it is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Asn(pub u32);

impl Asn {
    /// Stands in for a 4-octet ASN in 2-octet fields (RFC 6793).
    pub const TRANS: Asn = Asn(23456);

    pub fn get(self) -> u32 {
        self.0
    }

    /// Reserved by RFC 7607 (0) or RFC 7300 (65535, 4294967295).
    pub fn is_reserved(self) -> bool {
        matches!(self.0, 0 | 65535 | u32::MAX)
    }

    /// Private use ranges (RFC 6996).
    pub fn is_private(self) -> bool {
        matches!(self.0, 64512..=65534 | 4_200_000_000..=4_294_967_294)
    }

    /// Needs 4 octets on the wire.
    pub fn is_four_octet(self) -> bool {
        self.0 > u32::from(u16::MAX)
    }
}

impl fmt::Display for Asn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for Asn {
    type Err = AsnParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || AsnParseError(s.into());
        let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        match s.split_once('.') {
            None if digits(s) => s.parse().map(Asn).map_err(|_| err()),
            Some((hi, lo)) if digits(hi) && digits(lo) => {
                let hi: u16 = hi.parse().map_err(|_| err())?;
                let lo: u16 = lo.parse().map_err(|_| err())?;
                Ok(Asn((u32::from(hi) << 16) | u32::from(lo)))
            }
            _ => Err(err()),
        }
    }
}

impl From<u32> for Asn {
    fn from(v: u32) -> Self {
        Asn(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asplain_display_and_parse() {
        assert_eq!(Asn(4_200_000_000).to_string(), "4200000000");
        assert_eq!("65001".parse(), Ok(Asn(65001)));
        assert_eq!("64086.59904".parse(), Ok(Asn(4_200_000_000)));
        assert_eq!("0.65001".parse(), Ok(Asn(65001)));
        for bad in [
            "",
            "AS65001",
            "4294967296",
            "1.65536",
            "1.",
            ".1",
            "-1",
            "1.2.3",
            "+5",
        ] {
            assert!(bad.parse::<Asn>().is_err(), "{bad}");
        }
        assert_eq!(
            "x".parse::<Asn>().unwrap_err().to_string(),
            "\"x\" is not an ASN; write asplain (e.g. 65001 or 4200000000) or asdot (e.g. 64086.59904)"
        );
    }

    #[test]
    fn classes() {
        assert!(Asn(0).is_reserved() && Asn(u32::MAX).is_reserved() && !Asn(1).is_reserved());
        assert!(
            Asn(64512).is_private()
                && Asn(4_200_000_000).is_private()
                && !Asn(65000 - 1000).is_private()
        );
        assert!(Asn(65536).is_four_octet() && !Asn(65535).is_four_octet());
        assert_eq!(serde_json::to_string(&Asn(65001)).unwrap(), "65001");
    }
}
