//! Percent-escaping of one key segment: every byte outside
//! `A-Z a-z 0-9 - _ . : = ,` becomes `%XX` (uppercase hex), so '/' never
//! appears inside a segment and each value has exactly one spelling.

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'=' | b',')
}

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if unreserved(b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `%XX`; rejects bad or lowercase escapes and escaped unreserved
/// bytes (those would be a second spelling of the same value).
pub fn unescape(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or("truncated %-escape")?;
                let upper = |c: &u8| c.is_ascii_digit() || (b'A'..=b'F').contains(c);
                if !hex.iter().all(upper) {
                    return Err(format!(
                        "bad %-escape {:?}; use two uppercase hex digits",
                        String::from_utf8_lossy(hex)
                    ));
                }
                let b =
                    u8::from_str_radix(std::str::from_utf8(hex).map_err(|e| e.to_string())?, 16)
                        .map_err(|e| e.to_string())?;
                if unreserved(b) {
                    return Err(format!("{:?} must not be escaped", char::from(b)));
                }
                out.push(b);
                i += 3;
            }
            b if unreserved(b) => {
                out.push(b);
                i += 1;
            }
            b => return Err(format!("byte {b:#04x} must be %-escaped")),
        }
    }
    String::from_utf8(out).map_err(|_| "escaped bytes are not UTF-8".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn examples() {
        assert_eq!(escape("10.0.0.0/24"), "10.0.0.0%2F24");
        assert_eq!(
            escape("app=web,example.com/tier=x"),
            "app=web,example.com%2Ftier=x"
        );
        assert_eq!(escape("a%b c"), "a%25b%20c");
        assert_eq!(unescape("10.0.0.0%2F24").unwrap(), "10.0.0.0/24");
        for bad in ["%2f", "%2", "%", "a/b", "%41", "%ZZ", "%FF"] {
            assert!(unescape(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn round_trip(s in "\\PC*") {
            let e = escape(&s);
            prop_assert!(!e.contains('/'));
            prop_assert_eq!(unescape(&e).unwrap(), s);
        }
    }
}
