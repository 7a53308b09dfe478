//! AS_PATH and AS4_PATH values (RFC 4271 §4.3, RFC 5065 §3, RFC 6793).

use bytes::{BufMut, BytesMut};

use super::AS_TRANS;
use super::cursor::Reader;

/// Path segment types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AsSegmentType {
    Set = 1,
    Sequence = 2,
    /// RFC 5065 §3.
    ConfedSequence = 3,
    ConfedSet = 4,
}

impl AsSegmentType {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Set,
            2 => Self::Sequence,
            3 => Self::ConfedSequence,
            4 => Self::ConfedSet,
            _ => return None,
        })
    }

    pub fn is_confed(self) -> bool {
        matches!(self, Self::ConfedSequence | Self::ConfedSet)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AsSegment {
    pub kind: AsSegmentType,
    pub asns: Vec<u32>,
}

/// An AS path: a list of segments (empty for iBGP-originated routes).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct AsPath {
    pub segments: Vec<AsSegment>,
}

impl AsPath {
    /// A path of one AS_SEQUENCE.
    pub fn from_sequence(asns: impl Into<Vec<u32>>) -> Self {
        let asns = asns.into();
        if asns.is_empty() {
            return AsPath::default();
        }
        AsPath {
            segments: vec![AsSegment {
                kind: AsSegmentType::Sequence,
                asns,
            }],
        }
    }

    /// Path length for route selection (RFC 4271 §9.1.2.2, RFC 5065 §5.3).
    pub fn path_len(&self) -> usize {
        self.segments
            .iter()
            .map(|s| match s.kind {
                AsSegmentType::Sequence => s.asns.len(),
                AsSegmentType::Set => 1,
                _ => 0,
            })
            .sum()
    }

    /// Whether any ASN needs 4 octets.
    pub fn has_four_octet_asn(&self) -> bool {
        self.segments
            .iter()
            .flat_map(|s| &s.asns)
            .any(|&a| a > 0xffff)
    }

    /// RFC 6793 §4.2.2: the AS4_PATH to send: confed segments removed.
    pub(crate) fn without_confed(&self) -> AsPath {
        AsPath {
            segments: self
                .segments
                .iter()
                .filter(|s| !s.kind.is_confed())
                .cloned()
                .collect(),
        }
    }

    /// RFC 6793 §4.2.3: rebuilds the 4-octet path from this (2-octet)
    /// AS_PATH and a received AS4_PATH.
    pub fn merge_as4_path(&self, as4: &AsPath) -> AsPath {
        let (n, n4) = (self.path_len(), as4.path_len());
        if n < n4 {
            return self.clone();
        }
        // Keep the leading n - n4 ASes of AS_PATH, then AS4_PATH.
        let mut need = n - n4;
        let mut segments = Vec::new();
        for seg in &self.segments {
            if need == 0 {
                break;
            }
            match seg.kind {
                AsSegmentType::Sequence => {
                    let take = need.min(seg.asns.len());
                    segments.push(AsSegment {
                        kind: seg.kind,
                        asns: seg.asns[..take].to_vec(),
                    });
                    need -= take;
                }
                AsSegmentType::Set => {
                    segments.push(seg.clone());
                    need -= 1;
                }
                _ => segments.push(seg.clone()),
            }
        }
        segments.extend(as4.segments.iter().cloned());
        AsPath { segments }
    }

    /// RFC 7606 §7.2: None when malformed (bad segment type, zero-length
    /// or overrunning segment).
    pub(crate) fn decode(value: &[u8], four_octet: bool) -> Option<AsPath> {
        let mut r = Reader::new(value);
        let mut segments = Vec::new();
        let width = if four_octet { 4 } else { 2 };
        while !r.is_empty() {
            let kind = AsSegmentType::from_u8(r.u8()?)?;
            let count = r.u8()? as usize;
            if count == 0 {
                return None;
            }
            let raw = r.take(count * width)?;
            let asns = if four_octet {
                raw.chunks_exact(4)
                    .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                    .collect()
            } else {
                raw.chunks_exact(2)
                    .map(|c| u16::from_be_bytes([c[0], c[1]]) as u32)
                    .collect()
            };
            segments.push(AsSegment { kind, asns });
        }
        Some(AsPath { segments })
    }

    /// Encodes segments; more than 255 ASNs are split, and in 2-octet mode
    /// large ASNs become AS_TRANS (RFC 6793 §4.2.2).
    pub(crate) fn encode(&self, out: &mut BytesMut, four_octet: bool) {
        for seg in &self.segments {
            for chunk in seg.asns.chunks(255) {
                out.put_u8(seg.kind as u8);
                out.put_u8(chunk.len() as u8);
                for &asn in chunk {
                    if four_octet {
                        out.put_u32(asn);
                    } else {
                        out.put_u16(u16::try_from(asn).unwrap_or(AS_TRANS));
                    }
                }
            }
        }
    }
}
