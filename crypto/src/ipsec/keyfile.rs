//! The IPsec key file, in the format operators know from Cilium: one line
//! `SPI algorithm key icv-bits`, e.g. `3+ rfc4106(gcm(aes)) <40 hex digits> 128`.
//!
//! - SPI: 1..=15 (it travels in 4 bits of the packet mark, as in Cilium); a trailing `+` asks
//!   for per-node-pair keys (ironmesh always derives them, so the `+` is accepted and noted).
//! - algorithm: `rfc4106(gcm(aes))` (AES-GCM ESP, RFC 4106), the only one accepted.
//! - key: hex of the AES key followed by the 4-byte salt (RFC 4106 §8.1): 20, 28 or 36 bytes
//!   for AES-128/192/256.
//! - ICV bits: 64, 96 or 128 (RFC 4106 §6).
//!
//! Errors name the line, the field and the fix, and never contain key material.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

pub const ALGORITHM_GCM_AES: &str = "rfc4106(gcm(aes))";
const SALT_LEN: usize = 4;
const MAX_FILE: u64 = 4096;

/// The shared IPsec key of the cluster. Debug is redacted.
pub struct IpsecKey {
    pub spi: u8,
    /// The line's SPI carried a `+` (per-node-pair keys, Cilium's notation).
    pub per_pair: bool,
    pub icv_bits: u32,
    /// AES key + salt.
    key: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for IpsecKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IpsecKey")
            .field("spi", &self.spi)
            .field("per_pair", &self.per_pair)
            .field("algorithm", &ALGORITHM_GCM_AES)
            .field("key_bytes", &self.key.len())
            .field("icv_bits", &self.icv_bits)
            .finish_non_exhaustive()
    }
}

impl IpsecKey {
    pub(crate) fn new(spi: u8, icv_bits: u32, key: Zeroizing<Vec<u8>>) -> Self {
        Self {
            spi,
            per_pair: true,
            icv_bits,
            key,
        }
    }

    /// Key + salt, for the key derivation and the XFRM state only.
    pub fn expose(&self) -> &[u8] {
        &self.key
    }

    /// AES key length in bits (without the salt).
    pub fn aes_bits(&self) -> usize {
        (self.key.len() - SALT_LEN) * 8
    }
}

/// What is wrong with a key file, where, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyFileError {
    #[error("{path}: cannot read: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error(
        "{path} has mode {mode:04o}, readable or writable by group or others; an IPsec key must not be: run `chmod 600 {path}` (and rotate the key)"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error(
        "{path}: no key line; expect `SPI rfc4106(gcm(aes)) HEXKEY 128`, e.g. `3+ rfc4106(gcm(aes)) <40 hex digits> 128`"
    )]
    Empty { path: PathBuf },
    #[error("{path}: line {line}: {problem}")]
    Line {
        path: PathBuf,
        line: usize,
        problem: LineError,
    },
}

/// A problem within one line, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error(
        "{found} fields, expected 4: `SPI algorithm key icv-bits` (the 5-field `SPI auth-algo auth-key enc-algo enc-key` form of Cilium is not supported: use rfc4106(gcm(aes)))"
    )]
    FieldCount { found: usize },
    #[error(
        "field 1 (SPI) {found:?} is not a number from 1 to 15; the SPI travels in 4 bits of the packet mark: use 1-15 and increase it by one on each rotation (15 wraps to 1)"
    )]
    Spi { found: String },
    #[error("field 2 (algorithm) {found:?} is not supported; use rfc4106(gcm(aes))")]
    Algorithm { found: String },
    #[error(
        "field 3 (key) is not hex: character {position} is not 0-9 or a-f; generate one with `dd if=/dev/urandom bs=20 count=1 | xxd -p -c 64`"
    )]
    KeyHex { position: usize },
    #[error(
        "field 3 (key) has {digits} hex digits ({bytes} bytes); rfc4106(gcm(aes)) needs the AES key plus a 4-byte salt: 40, 56 or 72 hex digits (20, 28 or 36 bytes for AES-128/192/256)"
    )]
    KeyLength { digits: usize, bytes: usize },
    #[error("field 4 (ICV bits) {found:?} is not 64, 96 or 128; use 128")]
    Icv { found: String },
    #[error(
        "a second key line; the file holds exactly one key (replace the file with the new SPI to rotate)"
    )]
    SecondKey,
}

/// Parses key file text (comments with `#` and blank lines are skipped).
pub fn parse(path: &Path, text: &str) -> Result<IpsecKey, KeyFileError> {
    let mut found: Option<IpsecKey> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let at = |problem| KeyFileError::Line {
            path: path.to_owned(),
            line: i + 1,
            problem,
        };
        if found.is_some() {
            return Err(at(LineError::SecondKey));
        }
        found = Some(parse_line(line).map_err(at)?);
    }
    found.ok_or_else(|| KeyFileError::Empty {
        path: path.to_owned(),
    })
}

fn parse_line(line: &str) -> Result<IpsecKey, LineError> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() != 4 {
        return Err(LineError::FieldCount {
            found: fields.len(),
        });
    }
    let (spi_text, per_pair) = match fields[0].strip_suffix('+') {
        Some(s) => (s, true),
        None => (fields[0], false),
    };
    let spi = spi_text
        .parse::<u8>()
        .ok()
        .filter(|s| (1..=15).contains(s))
        .ok_or_else(|| LineError::Spi {
            found: fields[0].chars().take(20).collect(),
        })?;
    if fields[1] != ALGORITHM_GCM_AES {
        return Err(LineError::Algorithm {
            found: fields[1].chars().take(40).collect(),
        });
    }
    let key = decode_hex(fields[2])?;
    if ![20, 28, 36].contains(&key.len()) {
        return Err(LineError::KeyLength {
            digits: fields[2].len(),
            bytes: key.len(),
        });
    }
    let icv_bits = fields[3]
        .parse::<u32>()
        .ok()
        .filter(|b| [64, 96, 128].contains(b))
        .ok_or_else(|| LineError::Icv {
            found: fields[3].chars().take(20).collect(),
        })?;
    Ok(IpsecKey {
        spi,
        per_pair,
        icv_bits,
        key,
    })
}

fn decode_hex(s: &str) -> Result<Zeroizing<Vec<u8>>, LineError> {
    let s = s.strip_prefix("0x").unwrap_or(s);
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let bytes = s.as_bytes();
    if let Some(position) = bytes.iter().position(|&c| nibble(c).is_none()) {
        return Err(LineError::KeyHex {
            position: position + 1,
        });
    }
    if !bytes.len().is_multiple_of(2) {
        return Err(LineError::KeyLength {
            digits: bytes.len(),
            bytes: bytes.len() / 2,
        });
    }
    let mut out = Zeroizing::new(Vec::with_capacity(bytes.len() / 2));
    for pair in bytes.chunks_exact(2) {
        out.push((nibble(pair[0]).unwrap_or(0) << 4) | nibble(pair[1]).unwrap_or(0));
    }
    Ok(out)
}

/// Reads and parses a key file; refuses one readable by group or others.
pub fn load(path: &Path) -> Result<IpsecKey, KeyFileError> {
    let read_err = |e: std::io::Error| KeyFileError::Read {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let mut f = File::open(path).map_err(read_err)?;
    let mode = f.metadata().map_err(read_err)?.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::Permissions {
            path: path.to_owned(),
            mode,
        });
    }
    let mut text = Zeroizing::new(String::new());
    f.by_ref()
        .take(MAX_FILE)
        .read_to_string(&mut text)
        .map_err(read_err)?;
    parse(path, &text)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;

    use super::*;

    const HEX40: &str = "0123456789abcdef0123456789abcdef01234567";

    fn line_err(text: &str) -> (usize, LineError) {
        match parse(Path::new("k"), text).unwrap_err() {
            KeyFileError::Line { line, problem, .. } => (line, problem),
            e => panic!("{e}"),
        }
    }

    #[test]
    fn parses_cilium_lines() {
        let k = parse(
            Path::new("k"),
            &format!("3+ rfc4106(gcm(aes)) {HEX40} 128\n"),
        )
        .unwrap();
        assert_eq!(
            (k.spi, k.per_pair, k.icv_bits, k.aes_bits()),
            (3, true, 128, 128)
        );
        assert_eq!(k.expose()[..2], [0x01, 0x23]);
        let text = format!(
            "# cluster key\n\n15 rfc4106(gcm(aes)) {HEX40}{} 96 # comment\n",
            "ab".repeat(16)
        );
        let k = parse(Path::new("k"), &text).unwrap();
        assert_eq!(
            (k.spi, k.per_pair, k.aes_bits(), k.icv_bits),
            (15, false, 256, 96)
        );
        let dbg = format!("{k:?}");
        assert!(
            dbg.contains("key_bytes: 36") && !dbg.contains("ab"),
            "{dbg}"
        );
    }

    #[test]
    fn bad_input_names_line_field_and_fix_without_key_material() {
        let secret = "deadbeefdeadbeefdeadbeefdeadbeefdeadbe";
        let cases: Vec<(String, &str)> = vec![
            (
                format!("0 rfc4106(gcm(aes)) {HEX40} 128"),
                "field 1 (SPI) \"0\" is not a number from 1 to 15",
            ),
            (
                format!("16+ rfc4106(gcm(aes)) {HEX40} 128"),
                "field 1 (SPI) \"16+\"",
            ),
            (format!("x rfc4106(gcm(aes)) {HEX40} 128"), "field 1 (SPI)"),
            (
                format!("3 cbc(aes) {HEX40} 128"),
                "field 2 (algorithm) \"cbc(aes)\" is not supported; use rfc4106(gcm(aes))",
            ),
            (
                format!("3 rfc4106(gcm(aes)) {secret} 128"),
                "field 3 (key) has 38 hex digits (19 bytes)",
            ),
            (
                format!("3 rfc4106(gcm(aes)) {secret}zz 128"),
                "field 3 (key) is not hex: character 39",
            ),
            (
                format!("3 rfc4106(gcm(aes)) {secret}a 128"),
                "field 3 (key) has 39 hex digits",
            ),
            (
                format!("3 rfc4106(gcm(aes)) {HEX40} 100"),
                "field 4 (ICV bits) \"100\" is not 64, 96 or 128",
            ),
            (
                format!("3 hmac(sha256) {HEX40} cbc(aes) {HEX40}"),
                "5 fields, expected 4",
            ),
            (
                format!("3 rfc4106(gcm(aes)) {HEX40}"),
                "3 fields, expected 4",
            ),
        ];
        for (text, want) in cases {
            let (line, e) = line_err(&format!("# header\n{text}\n"));
            let msg = e.to_string();
            assert_eq!(line, 2, "{msg}");
            assert!(msg.contains(want), "{text}: {msg}");
            assert!(
                !msg.contains(secret) && !msg.contains(HEX40),
                "key material in: {msg}"
            );
        }
        let two = format!("3 rfc4106(gcm(aes)) {HEX40} 128\n4 rfc4106(gcm(aes)) {HEX40} 128\n");
        assert_eq!(line_err(&two), (2, LineError::SecondKey));
        let e = parse(Path::new("/etc/k"), "# nothing\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/etc/k: no key line; expect"), "{e}");
    }

    #[test]
    fn load_refuses_group_readable_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ipsec.keys");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .unwrap();
        writeln!(f, "7+ rfc4106(gcm(aes)) {HEX40} 128").unwrap();
        assert_eq!(load(&path).unwrap().spi, 7);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(e.contains("mode 0640") && e.contains("chmod 600"), "{e}");
        let e = load(&dir.path().join("missing")).unwrap_err().to_string();
        assert!(e.contains("cannot read"), "{e}");
    }
}
