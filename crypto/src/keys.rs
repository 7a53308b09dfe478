//! WireGuard keys: x25519, base64 in the format of `wg genkey` / `wg pubkey`.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use x25519_dalek::StaticSecret;
use zeroize::{Zeroize, Zeroizing};

pub const KEY_LEN: usize = 32;
/// Base64 length of a 32-byte key, with one '=' of padding.
pub const KEY_B64_LEN: usize = 44;

/// Why a key string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error(
        "{what} is not valid base64 ({reason}); expect 44 characters as printed by `wg genkey` or `wg pubkey`"
    )]
    Base64 { what: &'static str, reason: String },
    #[error("{what} is not valid hex ({reason}); the UAPI form is 64 hex digits")]
    Hex { what: &'static str, reason: String },
    #[error("{what} decodes to {len} bytes; WireGuard keys are 32 bytes (44 base64 characters)")]
    Length { what: &'static str, len: usize },
}

fn decode(what: &'static str, s: &str) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let bytes = Zeroizing::new(STANDARD.decode(s).map_err(|e| KeyError::Base64 {
        what,
        reason: e.to_string(),
    })?);
    if bytes.len() != KEY_LEN {
        return Err(KeyError::Length {
            what,
            len: bytes.len(),
        });
    }
    Ok(bytes)
}

/// A WireGuard private key. Zeroized on drop; Debug is redacted and there is
/// no Display, so it cannot end up in logs by accident.
pub struct PrivateKey(StaticSecret);

impl PrivateKey {
    /// A fresh key from the OS RNG, clamped like `wg genkey` output.
    pub fn generate() -> Self {
        let mut bytes = StaticSecret::random().to_bytes();
        bytes[0] &= 248;
        bytes[31] &= 127;
        bytes[31] |= 64;
        let key = Self(StaticSecret::from(bytes));
        bytes.zeroize();
        key
    }

    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(StaticSecret::from(bytes))
    }

    /// Parses the base64 form (`wg genkey` output, without the newline).
    pub fn from_base64(s: &str) -> Result<Self, KeyError> {
        let bytes = decode("private key", s)?;
        let mut arr = [0u8; KEY_LEN];
        arr.copy_from_slice(&bytes);
        let key = Self::from_bytes(arr);
        arr.zeroize();
        Ok(key)
    }

    /// The base64 form, for the key file and the WireGuard backends only.
    pub fn expose_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.0.as_bytes()))
    }

    /// Lowercase hex of the key, as the UAPI protocol wants it; for the backends only.
    pub fn expose_hex(&self) -> Zeroizing<String> {
        let mut out = Zeroizing::new(String::with_capacity(2 * KEY_LEN));
        push_hex(&mut out, self.0.as_bytes());
        out
    }

    /// Parses 64 hex digits (the UAPI form).
    pub fn from_hex(s: &str) -> Result<Self, KeyError> {
        let mut arr = Zeroizing::new([0u8; KEY_LEN]);
        decode_hex("private key", s, &mut arr)?;
        Ok(Self::from_bytes(*arr))
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(x25519_dalek::PublicKey::from(&self.0).to_bytes())
    }
}

/// Appends lowercase hex of `bytes` to `out`.
pub(crate) fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
}

fn decode_hex(what: &'static str, s: &str, out: &mut [u8; KEY_LEN]) -> Result<(), KeyError> {
    if s.len() != 2 * KEY_LEN {
        return Err(KeyError::Hex {
            what,
            reason: format!("{} characters instead of {}", s.len(), 2 * KEY_LEN),
        });
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    for (i, pair) in s.as_bytes().chunks_exact(2).enumerate() {
        match (nibble(pair[0]), nibble(pair[1])) {
            (Some(h), Some(l)) => out[i] = h << 4 | l,
            _ => {
                return Err(KeyError::Hex {
                    what,
                    reason: format!("non-hex character at offset {}", 2 * i),
                });
            }
        }
    }
    Ok(())
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

/// A WireGuard public key; Display and FromStr use base64 as `wg` does.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; KEY_LEN]);

impl PublicKey {
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Lowercase hex (the UAPI wire form).
    pub fn to_hex(&self) -> String {
        let mut out = String::with_capacity(2 * KEY_LEN);
        push_hex(&mut out, &self.0);
        out
    }

    /// Parses 64 hex digits (the UAPI wire form).
    pub fn from_hex(s: &str) -> Result<Self, KeyError> {
        let mut arr = [0u8; KEY_LEN];
        decode_hex("public key", s, &mut arr)?;
        Ok(Self(arr))
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&STANDARD.encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = decode("public key", s)?;
        let mut arr = [0u8; KEY_LEN];
        arr.copy_from_slice(&bytes);
        Ok(Self(arr))
    }
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7748 §6.1 test vector (Alice).
    const ALICE_PRIV: &str = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a";
    const ALICE_PUB: &str = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a";

    fn hex(s: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }

    #[test]
    fn rfc7748_vector() {
        let k = PrivateKey::from_bytes(hex(ALICE_PRIV));
        assert_eq!(k.public_key().as_bytes(), &hex(ALICE_PUB));
    }

    #[test]
    fn base64_round_trip() {
        let k = PrivateKey::generate();
        let b64 = k.expose_base64();
        assert_eq!(b64.len(), KEY_B64_LEN);
        let again = PrivateKey::from_base64(&b64).unwrap();
        assert_eq!(again.public_key(), k.public_key());
        let p = k.public_key();
        assert_eq!(p.to_string().parse::<PublicKey>().unwrap(), p);
    }

    #[test]
    fn generated_keys_are_clamped_and_distinct() {
        let a = PrivateKey::generate();
        let bytes = STANDARD.decode(a.expose_base64().as_bytes()).unwrap();
        assert_eq!(bytes[0] & 7, 0);
        assert_eq!(bytes[31] & 0xC0, 0x40);
        assert_ne!(a.public_key(), PrivateKey::generate().public_key());
    }

    #[test]
    fn debug_is_redacted() {
        let k = PrivateKey::generate();
        let dbg = format!("{k:?}");
        assert_eq!(dbg, "PrivateKey(<redacted>)");
        assert!(!dbg.contains(k.expose_base64().as_str()));
        let p = k.public_key();
        assert_eq!(format!("{p:?}"), format!("PublicKey({p})"));
    }

    #[test]
    fn clear_errors() {
        assert_eq!(
            "AAAA".parse::<PublicKey>().unwrap_err().to_string(),
            "public key decodes to 3 bytes; WireGuard keys are 32 bytes (44 base64 characters)"
        );
        let err = "not base64!".parse::<PublicKey>().unwrap_err().to_string();
        assert!(err.starts_with("public key is not valid base64 ("), "{err}");
        assert!(
            err.ends_with("expect 44 characters as printed by `wg genkey` or `wg pubkey`"),
            "{err}"
        );
        assert!(matches!(
            PrivateKey::from_base64(""),
            Err(KeyError::Length { len: 0, .. })
        ));
    }

    #[test]
    fn hex_round_trip_matches_rfc7748() {
        let k = PrivateKey::from_hex(ALICE_PRIV).unwrap();
        assert_eq!(k.expose_hex().as_str(), ALICE_PRIV);
        assert_eq!(k.public_key().to_hex(), ALICE_PUB);
        let upper = PublicKey::from_hex(&ALICE_PUB.to_uppercase()).unwrap();
        assert_eq!(upper, k.public_key());
        let err = PublicKey::from_hex("abc").unwrap_err().to_string();
        assert_eq!(
            err,
            "public key is not valid hex (3 characters instead of 64); the UAPI form is 64 hex digits"
        );
        let bad = format!("{}zz", &ALICE_PUB[..62]);
        assert!(
            PublicKey::from_hex(&bad)
                .unwrap_err()
                .to_string()
                .contains("non-hex character at offset 62")
        );
    }

    #[test]
    fn public_key_serde_is_base64() {
        let p = PrivateKey::generate().public_key();
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, format!("\"{p}\""));
        assert_eq!(serde_json::from_str::<PublicKey>(&json).unwrap(), p);
        assert!(serde_json::from_str::<PublicKey>("\"AAAA\"").is_err());
    }
}
