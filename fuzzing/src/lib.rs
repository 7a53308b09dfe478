//! Fuzz targets for every decoder of untrusted bytes, runnable on stable Rust.
//!
//! Each [`Target`] is a `fn(&[u8]) -> Outcome` that feeds the bytes to a real decoder (and
//! checks what it can about the result: re-encoding, canonical forms, secrets kept out of
//! errors) plus a seed corpus made by the real encoders or examples. [`driver`] mutates the
//! seeds for a bounded time and catches panics (`scripts/fuzz`); the cargo-fuzz targets in
//! `fuzz/` (nightly) cover the BGP and UAPI decoders with libFuzzer.
//!
//! The driver is not coverage-guided (stable Rust has no instrumentation runtime without
//! cargo-fuzz or cargo-afl): it keeps a mutated input when the decoder's [`Outcome`] is one it
//! has not seen before (accepted, or a new kind of error), which steers it past the first
//! checks of a decoder without instrumentation.

pub mod driver;
pub mod mutate;
pub mod targets;

use std::fmt::Display;

/// What a target made of an input: a signature of the decoder's answers (which steps
/// accepted it, and the kind of each error, digits and quoted text left out). The driver keeps
/// inputs that give a signature it has not seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Outcome {
    pub signature: u64,
    /// Whether the last decoder fed accepted the input.
    pub accepted: bool,
}

impl Default for Outcome {
    fn default() -> Self {
        Outcome {
            signature: FNV_OFFSET,
            accepted: false,
        }
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0100_0000_01b3;

fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// The kind of an error message: the first words of its first and last lines, without
/// numbers and quoted text (so "line 3 column 7" and "line 9 column 1" are one kind, and the
/// quoted source of a TOML or YAML error does not count).
pub fn error_kind(msg: &str) -> String {
    let first = msg.lines().next().unwrap_or("");
    let last = msg.lines().last().unwrap_or("");
    let mut out = words(first);
    if last != first {
        out.push('|');
        out.push_str(&words(last));
    }
    out
}

fn words(line: &str) -> String {
    // Quoted text (Debug-escaped or not) is input: left out.
    let mut bare = String::new();
    let mut quoted = None;
    let mut escaped = false;
    for c in line.chars() {
        if let Some(q) = quoted {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quoted = None;
            }
            continue;
        }
        match c {
            '"' | '`' => quoted = Some(c),
            c => bare.push(c),
        }
    }
    // Words of letters only: names, addresses, numbers and field paths (`name:`, input again)
    // are left out.
    let mut out = String::new();
    for w in bare
        .split_whitespace()
        .filter(|w| !w.ends_with(':'))
        .map(|w| w.trim_end_matches([',', '.', ';', ')']))
        .filter(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_alphabetic()))
        .take(8)
    {
        out.push_str(w);
        out.push(' ');
    }
    out
}

impl Outcome {
    /// Mixes in one step's answer.
    pub fn step<T, E: Display>(&mut self, what: &str, r: &Result<T, E>) {
        self.signature = fnv(self.signature, what.as_bytes());
        match r {
            Ok(_) => {
                self.signature = fnv(self.signature, b"+ok");
                self.accepted = true;
            }
            Err(e) => {
                self.signature = fnv(self.signature, error_kind(&e.to_string()).as_bytes());
                self.accepted = false;
            }
        }
    }

    /// Mixes in a fact of few possible values (an enum variant, a count class).
    pub fn note(&mut self, fact: impl std::fmt::Debug) {
        self.signature = fnv(self.signature, format!("{fact:?}").as_bytes());
    }

    /// Mixes in an `Option` step (None: rejected).
    pub fn step_opt<T>(&mut self, what: &str, o: &Option<T>) {
        let r: Result<(), &str> = if o.is_some() { Ok(()) } else { Err("none") };
        self.step(what, &r);
    }
}

/// One fuzz target.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub name: &'static str,
    /// The decoder(s) it feeds, as `crate::path` (for `--list` and the docs).
    pub decoder: &'static str,
    pub run: fn(&[u8]) -> Outcome,
    /// Valid inputs made by the real encoders or examples.
    pub seeds: fn() -> Vec<Vec<u8>>,
    /// Inputs are cut to this length.
    pub max_len: usize,
    /// Tokens the mutator inserts (besides the common ones).
    pub dictionary: &'static [&'static [u8]],
}

/// Every target, in `--list` order.
pub fn all() -> Vec<Target> {
    targets::all()
}

/// The target named `name`.
pub fn find(name: &str) -> Option<Target> {
    all().into_iter().find(|t| t.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_kinds_leave_out_numbers_and_quotes() {
        assert_eq!(
            error_kind("expected value at line 3 column 7"),
            error_kind("expected value at line 9 column 12")
        );
        assert_eq!(
            error_kind("unknown variant `abc`, expected one of `tcp`"),
            error_kind("unknown variant `xyz`, expected one of `tcp`")
        );
        assert_ne!(error_kind("missing field"), error_kind("invalid type"));
        // Debug-quoted input with escaped quotes inside.
        assert_eq!(
            error_kind(r#"key "a\"b c" is malformed"#),
            error_kind(r#"key "x" is malformed"#)
        );
        assert_eq!(
            error_kind(
                "TOML parse error at line 1, column 4\n  |\n1 | a b\n  |    ^\nexpected `.`, `=`"
            ),
            error_kind(
                "TOML parse error at line 7, column 1\n  |\n7 | xyz\n  |  ^\nexpected `.`, `=`"
            )
        );
    }
}
