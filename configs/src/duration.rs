//! Durations written as in `rotate_every = "24h"`: whole numbers with a unit (`ms`, `s`, `m`,
//! `h`, `d`), several allowed in order (`"1h30m"`, `"1s500ms"`).

use std::ops::RangeInclusive;
use std::time::Duration;

use crate::error::Errors;

/// Parses `"90s"`, `"30m"`, `"24h"`, `"7d"`, `"1h30m"`; the error says what is wrong.
pub(crate) fn parse(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("is empty; write e.g. \"24h\", \"30m\" or \"7d\"".into());
    }
    let mut total: u64 = 0; // milliseconds
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!(
                "{text:?} is not a duration; write a number and a unit (s, m, h, d), e.g. \"24h\""
            ));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("{text:?}: the number is too large"))?;
        let unit = rest[digits..].chars().next().ok_or_else(|| {
            format!("{text:?} has no unit; add one of s, m, h, d (e.g. \"{n}h\")")
        })?;
        let millis_unit = rest[digits..].starts_with("ms");
        let ms = match unit {
            'm' if millis_unit => 1,
            's' => 1000,
            'm' => 60_000,
            'h' => 3_600_000,
            'd' => 86_400_000,
            other => {
                return Err(format!(
                    "{text:?}: {other:?} is not a unit; use s, m, h or d"
                ));
            }
        };
        total = n
            .checked_mul(ms)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("{text:?} is too long"))?;
        rest = &rest[digits + if millis_unit { 2 } else { unit.len_utf8() }..];
    }
    Ok(Duration::from_millis(total))
}

/// A duration field: parsed, then held to `range`. Errors name `field`; a value below the
/// range says why the floor exists (`why_min`), and every range error ends with `fix`.
pub(crate) fn field(
    errs: &mut Errors,
    field: &str,
    text: &str,
    range: RangeInclusive<Duration>,
    why_min: &str,
    fix: &str,
) -> Option<Duration> {
    let d = match parse(text) {
        Ok(d) => d,
        Err(e) => {
            errs.push(field, e);
            return None;
        }
    };
    if d < *range.start() {
        let min = format(*range.start());
        errs.push(
            field,
            format!("{text:?} is too short: at least {min} ({why_min}); {fix}"),
        );
        return None;
    }
    if d > *range.end() {
        let max = format(*range.end());
        errs.push(field, format!("{text:?} is too long: at most {max}; {fix}"));
        return None;
    }
    Some(d)
}

/// Formats a duration back into the largest exact units (`86400 s` → `"1d"`, `90 s` →
/// `"1m30s"`, `1.25 s` → `"1s250ms"`); below a millisecond is dropped.
pub fn format(d: Duration) -> String {
    let mut ms = d.as_millis() as u64;
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, len) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ] {
        if ms >= len {
            out.push_str(&format!("{}{unit}", ms / len));
            ms %= len;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_compounds() {
        for (t, secs) in [
            ("90s", 90),
            ("30m", 1800),
            ("24h", 86_400),
            ("7d", 604_800),
            ("1h30m", 5400),
            (" 10s ", 10),
        ] {
            assert_eq!(parse(t), Ok(Duration::from_secs(secs)), "{t}");
        }
        assert_eq!(format(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format(Duration::from_secs(86_400)), "1d");
        assert_eq!(parse("800ms"), Ok(Duration::from_millis(800)));
        assert_eq!(parse("1s250ms"), Ok(Duration::from_millis(1250)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)), "m is minutes");
        assert_eq!(format(Duration::from_millis(1250)), "1s250ms");
        assert_eq!(format(Duration::from_millis(100)), "100ms");
    }

    #[test]
    fn refuses_garbage_with_a_hint() {
        for (t, needle) in [
            ("", "is empty"),
            ("24", "has no unit"),
            ("h", "is not a duration"),
            ("5w", "is not a unit"),
            ("-5s", "is not a duration"),
            ("99999999999999999999s", "too large"),
            ("999999999999999999d", "too long"),
        ] {
            let e = parse(t).unwrap_err();
            assert!(e.contains(needle), "{t}: {e}");
        }
    }
}
