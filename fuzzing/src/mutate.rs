//! Byte-level mutations, as AFL and libFuzzer stack them: bit and byte flips, interesting
//! values (boundaries, lengths of the input and of what follows) in both byte orders, small
//! arithmetic, inserted, deleted and duplicated ranges, dictionary tokens, numbers in text
//! replaced by edge cases, and splices with another corpus entry.

/// xorshift64*: small, fast, reproducible from the seed the driver prints.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Tokens for text formats (JSON, YAML, TOML, HTTP, key files, UAPI) every target may get.
pub const COMMON_TOKENS: &[&[u8]] = &[
    b"\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b",",
    b"\n",
    b"\r\n",
    b"\\u0000",
    b"\\ud800",
    b"null",
    b"true",
    b"false",
    b"-",
    b"=",
    b"/",
    b".",
    b"::",
    b"#",
    b"\x00",
    b"\xff",
    b"\xc3\xa9",
    b"\xf0\x9f\x92\xa9",
];

/// Numbers written in text, at the edges of the integer types and float range.
const NUMBERS: &[&[u8]] = &[
    b"0",
    b"-0",
    b"1",
    b"-1",
    b"127",
    b"128",
    b"255",
    b"256",
    b"32",
    b"33",
    b"128",
    b"129",
    b"65535",
    b"65536",
    b"2147483647",
    b"2147483648",
    b"4294967295",
    b"4294967296",
    b"9223372036854775807",
    b"9223372036854775808",
    b"18446744073709551615",
    b"18446744073709551616",
    b"-9223372036854775809",
    b"1e308",
    b"1e309",
    b"1.5",
    b"99999999999999999999999999999999",
];

const INTERESTING_8: &[u8] = &[
    0, 1, 2, 3, 4, 0x10, 0x20, 0x3f, 0x40, 0x7f, 0x80, 0x81, 0xfe, 0xff,
];
const INTERESTING_16: &[u16] = &[
    0, 1, 16, 18, 19, 20, 24, 26, 29, 64, 0xff, 0x100, 0x3fff, 0x4000, 0x7fff, 0x8000, 0xfff,
    0x1000, 0xffff,
];
const INTERESTING_32: &[u32] = &[
    0,
    1,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    1_000_000_000,
    999_999_999,
    0x0001_0000,
];

/// Mutates `data` in place with 1 to 8 stacked mutations; `other` is another corpus entry for
/// splices; `dict` the target's own tokens. The result is at most `max_len` bytes.
pub fn mutate(rng: &mut Rng, data: &mut Vec<u8>, other: &[u8], dict: &[&[u8]], max_len: usize) {
    let n = 1 << rng.below(4);
    for _ in 0..n {
        one(rng, data, other, dict);
    }
    data.truncate(max_len);
}

fn one(rng: &mut Rng, data: &mut Vec<u8>, other: &[u8], dict: &[&[u8]]) {
    if data.is_empty() {
        let len = 1 + rng.below(8);
        data.extend((0..len).map(|_| rng.next_u64() as u8));
        return;
    }
    let len = data.len();
    match rng.below(16) {
        // A bit.
        0 => {
            let i = rng.below(len);
            data[i] ^= 1 << rng.below(8);
        }
        // A random byte.
        1 => {
            let i = rng.below(len);
            data[i] = rng.next_u64() as u8;
        }
        // An interesting byte.
        2 => {
            let i = rng.below(len);
            data[i] = *rng.pick(INTERESTING_8);
        }
        // An interesting 16/32-bit value, or a length, in either byte order.
        3 | 4 => {
            let width = if rng.chance(2) { 2 } else { 4 };
            if len < width {
                return;
            }
            let at = rng.below(len - width + 1);
            let v: u32 = match rng.below(4) {
                0 if width == 2 => u32::from(*rng.pick(INTERESTING_16)),
                0 => *rng.pick(INTERESTING_32),
                // The input's length, or the length of what follows the field (± 1): what a
                // length field holds.
                1 => len as u32,
                2 => (len - at - width) as u32,
                _ => ((len - at) as u32)
                    .wrapping_add(rng.below(3) as u32)
                    .wrapping_sub(1),
            };
            let bytes = if rng.chance(2) {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            };
            let bytes = if width == 2 {
                if rng.chance(2) {
                    [bytes[2], bytes[3]]
                } else {
                    [bytes[0], bytes[1]]
                }
                .to_vec()
            } else {
                bytes.to_vec()
            };
            data[at..at + width].copy_from_slice(&bytes);
        }
        // Small arithmetic on a byte.
        5 => {
            let i = rng.below(len);
            let d = 1 + rng.below(16) as u8;
            data[i] = if rng.chance(2) {
                data[i].wrapping_add(d)
            } else {
                data[i].wrapping_sub(d)
            };
        }
        // Delete a range.
        6 => {
            let at = rng.below(len);
            let n = 1 + rng.below((len - at).min(16));
            data.drain(at..at + n);
        }
        // Insert random bytes, or one byte repeated.
        7 => {
            let at = rng.below(len + 1);
            let n = 1 + rng.below(16);
            let b = rng.next_u64() as u8;
            let ins: Vec<u8> = if rng.chance(2) {
                vec![b; n]
            } else {
                (0..n).map(|_| rng.next_u64() as u8).collect()
            };
            data.splice(at..at, ins);
        }
        // Duplicate a range (repeats a record, an attribute, a line).
        8 => {
            let at = rng.below(len);
            let n = 1 + rng.below((len - at).min(64));
            let chunk = data[at..at + n].to_vec();
            let to = rng.below(len + 1);
            data.splice(to..to, chunk);
        }
        // A token: the target's or a common one, inserted or overwriting.
        9 | 10 => {
            let tok: &[u8] = if !dict.is_empty() && rng.chance(2) {
                dict[rng.below(dict.len())]
            } else {
                COMMON_TOKENS[rng.below(COMMON_TOKENS.len())]
            };
            let at = rng.below(len + 1);
            if rng.chance(2) || at + tok.len() > len {
                data.splice(at..at, tok.iter().copied());
            } else {
                data[at..at + tok.len()].copy_from_slice(tok);
            }
        }
        // A number in text replaced by an edge case.
        11 => {
            let digits: Vec<usize> = (0..len).filter(|&i| data[i].is_ascii_digit()).collect();
            if digits.is_empty() {
                return;
            }
            let start = *rng.pick(&digits);
            let mut end = start;
            while end < len && data[end].is_ascii_digit() {
                end += 1;
            }
            let start = (0..start)
                .rev()
                .take_while(|&i| data[i].is_ascii_digit())
                .last()
                .unwrap_or(start);
            let num = *rng.pick(NUMBERS);
            data.splice(start..end, num.iter().copied());
        }
        // Splice: our head, the other's tail.
        12 => {
            if other.is_empty() {
                return;
            }
            let at = rng.below(len + 1);
            let from = rng.below(other.len());
            data.truncate(at);
            data.extend_from_slice(&other[from..]);
        }
        // Insert a chunk of the other entry.
        13 => {
            if other.is_empty() {
                return;
            }
            let from = rng.below(other.len());
            let n = 1 + rng.below((other.len() - from).min(64));
            let at = rng.below(len + 1);
            data.splice(at..at, other[from..from + n].iter().copied());
        }
        // Swap two bytes.
        14 => {
            let (a, b) = (rng.below(len), rng.below(len));
            data.swap(a, b);
        }
        // Cut the tail (truncated messages).
        _ => {
            let at = rng.below(len);
            data.truncate(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_stay_within_the_length_and_change_the_input() {
        let mut rng = Rng::new(7);
        let seed = b"{\"a\": 12, \"b\": [1, 2, 3]}".to_vec();
        let mut changed = 0;
        for _ in 0..10_000 {
            let mut d = seed.clone();
            mutate(&mut rng, &mut d, b"other input", &[b"tok"], 40);
            assert!(d.len() <= 40);
            changed += usize::from(d != seed);
        }
        assert!(changed > 9_000, "only {changed} of 10000 mutated");
    }
}
