//! Capabilities advertisement (RFC 5492) and the capabilities we type.

use bytes::{BufMut, Bytes, BytesMut};

use super::cursor::Reader;
use super::{Afi, EncodeError, Safi};

/// Capability codes (IANA).
pub mod cap_code {
    pub const MULTIPROTOCOL: u8 = 1;
    pub const ROUTE_REFRESH: u8 = 2;
    pub const EXTENDED_NEXT_HOP: u8 = 5;
    pub const EXTENDED_MESSAGE: u8 = 6;
    pub const GRACEFUL_RESTART: u8 = 64;
    pub const FOUR_OCTET_AS: u8 = 65;
    pub const ADD_PATH: u8 = 69;
    pub const ENHANCED_ROUTE_REFRESH: u8 = 70;
    pub const LONG_LIVED_GRACEFUL_RESTART: u8 = 71;
}

/// Extended next hop tuple (RFC 8950 §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ExtNextHopEntry {
    pub nlri_afi: Afi,
    /// Two octets on the wire.
    pub nlri_safi: u16,
    pub next_hop_afi: Afi,
}

/// Per-family graceful restart state (RFC 4724 §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GrFamily {
    pub afi: Afi,
    pub safi: Safi,
    /// F bit: forwarding state preserved.
    pub forwarding: bool,
}

/// Graceful restart capability (RFC 4724 §3, RFC 8538 §2).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct GracefulRestart {
    /// R bit: the sender has restarted.
    pub restart_state: bool,
    /// N bit (RFC 8538): graceful NOTIFICATION supported.
    pub notification: bool,
    /// Restart time in seconds (12 bits).
    pub restart_time: u16,
    pub families: Vec<GrFamily>,
}

/// Per-family long-lived graceful restart (RFC 9494 §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LlgrFamily {
    pub afi: Afi,
    pub safi: Safi,
    pub forwarding: bool,
    /// Long-lived stale time in seconds (24 bits).
    pub stale_time: u32,
}

/// ADD-PATH Send/Receive field (RFC 7911 §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddPathMode {
    Receive = 1,
    Send = 2,
    Both = 3,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AddPathFamily {
    pub afi: Afi,
    pub safi: Safi,
    pub mode: AddPathMode,
}

/// A capability (RFC 5492 §4). A known code with a malformed value is kept
/// as [`Capability::Unknown`], i.e. treated as not received.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Capability {
    /// RFC 4760 §8.
    Multiprotocol {
        afi: Afi,
        safi: Safi,
    },
    /// RFC 2918.
    RouteRefresh,
    /// RFC 8950.
    ExtendedNextHop(Vec<ExtNextHopEntry>),
    /// RFC 8654.
    ExtendedMessage,
    /// RFC 4724.
    GracefulRestart(GracefulRestart),
    /// RFC 6793.
    FourOctetAs(u32),
    /// RFC 7911.
    AddPath(Vec<AddPathFamily>),
    /// RFC 7313.
    EnhancedRouteRefresh,
    /// RFC 9494.
    LongLivedGracefulRestart(Vec<LlgrFamily>),
    Unknown {
        code: u8,
        value: Bytes,
    },
}

const GR_R: u16 = 0x8000;
const GR_N: u16 = 0x4000;
const F_BIT: u8 = 0x80;

impl Capability {
    pub fn code(&self) -> u8 {
        use Capability::*;
        match self {
            Multiprotocol { .. } => cap_code::MULTIPROTOCOL,
            RouteRefresh => cap_code::ROUTE_REFRESH,
            ExtendedNextHop(_) => cap_code::EXTENDED_NEXT_HOP,
            ExtendedMessage => cap_code::EXTENDED_MESSAGE,
            GracefulRestart(_) => cap_code::GRACEFUL_RESTART,
            FourOctetAs(_) => cap_code::FOUR_OCTET_AS,
            AddPath(_) => cap_code::ADD_PATH,
            EnhancedRouteRefresh => cap_code::ENHANCED_ROUTE_REFRESH,
            LongLivedGracefulRestart(_) => cap_code::LONG_LIVED_GRACEFUL_RESTART,
            Unknown { code, .. } => *code,
        }
    }

    /// Decodes one capability value.
    pub(crate) fn decode(code: u8, value: &Bytes) -> Capability {
        Self::decode_known(code, value).unwrap_or_else(|| Capability::Unknown {
            code,
            value: value.clone(),
        })
    }

    fn decode_known(code: u8, value: &[u8]) -> Option<Capability> {
        let mut r = Reader::new(value);
        let cap = match code {
            cap_code::MULTIPROTOCOL => {
                let afi = Afi(r.u16()?);
                let _reserved = r.u8()?;
                Capability::Multiprotocol {
                    afi,
                    safi: Safi(r.u8()?),
                }
            }
            cap_code::ROUTE_REFRESH => Capability::RouteRefresh,
            cap_code::ENHANCED_ROUTE_REFRESH => Capability::EnhancedRouteRefresh,
            cap_code::EXTENDED_MESSAGE => Capability::ExtendedMessage,
            cap_code::FOUR_OCTET_AS => Capability::FourOctetAs(r.u32()?),
            cap_code::EXTENDED_NEXT_HOP => Capability::ExtendedNextHop(entries(&mut r, 6, |r| {
                Some(ExtNextHopEntry {
                    nlri_afi: Afi(r.u16()?),
                    nlri_safi: r.u16()?,
                    next_hop_afi: Afi(r.u16()?),
                })
            })?),
            cap_code::GRACEFUL_RESTART => {
                let flags_time = r.u16()?;
                let families = entries(&mut r, 4, |r| {
                    Some(GrFamily {
                        afi: Afi(r.u16()?),
                        safi: Safi(r.u8()?),
                        forwarding: r.u8()? & F_BIT != 0,
                    })
                })?;
                Capability::GracefulRestart(GracefulRestart {
                    restart_state: flags_time & GR_R != 0,
                    notification: flags_time & GR_N != 0,
                    restart_time: flags_time & 0x0fff,
                    families,
                })
            }
            cap_code::ADD_PATH => Capability::AddPath(entries(&mut r, 4, |r| {
                let afi = Afi(r.u16()?);
                let safi = Safi(r.u8()?);
                // RFC 7911 §4: other values: capability not received.
                let mode = match r.u8()? {
                    1 => AddPathMode::Receive,
                    2 => AddPathMode::Send,
                    3 => AddPathMode::Both,
                    _ => return None,
                };
                Some(AddPathFamily { afi, safi, mode })
            })?),
            cap_code::LONG_LIVED_GRACEFUL_RESTART => {
                Capability::LongLivedGracefulRestart(entries(&mut r, 7, |r| {
                    Some(LlgrFamily {
                        afi: Afi(r.u16()?),
                        safi: Safi(r.u8()?),
                        forwarding: r.u8()? & F_BIT != 0,
                        stale_time: r.u24()?,
                    })
                })?)
            }
            _ => return None,
        };
        r.is_empty().then_some(cap)
    }

    /// Appends code, length and value (RFC 5492 §4).
    pub(crate) fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        let start = out.len();
        out.put_u8(self.code());
        out.put_u8(0);
        match self {
            Capability::Multiprotocol { afi, safi } => {
                out.put_u16(afi.0);
                out.put_u8(0);
                out.put_u8(safi.0);
            }
            Capability::RouteRefresh
            | Capability::EnhancedRouteRefresh
            | Capability::ExtendedMessage => {}
            Capability::FourOctetAs(asn) => out.put_u32(*asn),
            Capability::ExtendedNextHop(v) => {
                for e in v {
                    out.put_u16(e.nlri_afi.0);
                    out.put_u16(e.nlri_safi);
                    out.put_u16(e.next_hop_afi.0);
                }
            }
            Capability::GracefulRestart(gr) => {
                let mut ft = gr.restart_time & 0x0fff;
                if gr.restart_state {
                    ft |= GR_R;
                }
                if gr.notification {
                    ft |= GR_N;
                }
                out.put_u16(ft);
                for f in &gr.families {
                    out.put_u16(f.afi.0);
                    out.put_u8(f.safi.0);
                    out.put_u8(if f.forwarding { F_BIT } else { 0 });
                }
            }
            Capability::AddPath(v) => {
                for f in v {
                    out.put_u16(f.afi.0);
                    out.put_u8(f.safi.0);
                    out.put_u8(f.mode as u8);
                }
            }
            Capability::LongLivedGracefulRestart(v) => {
                for f in v {
                    out.put_u16(f.afi.0);
                    out.put_u8(f.safi.0);
                    out.put_u8(if f.forwarding { F_BIT } else { 0 });
                    out.put_slice(&f.stale_time.to_be_bytes()[1..]);
                }
            }
            Capability::Unknown { value, .. } => out.put_slice(value),
        }
        let len = out.len() - start - 2;
        if len > 255 {
            out.truncate(start);
            return Err(EncodeError::CapabilityTooLong(len));
        }
        out[start + 1] = len as u8;
        Ok(())
    }
}

/// Reads fixed-size entries until the value is consumed.
fn entries<T>(
    r: &mut Reader<'_>,
    size: usize,
    mut f: impl FnMut(&mut Reader<'_>) -> Option<T>,
) -> Option<Vec<T>> {
    if !r.remaining().is_multiple_of(size) {
        return None;
    }
    let mut v = Vec::with_capacity(r.remaining() / size);
    while !r.is_empty() {
        v.push(f(r)?);
    }
    Some(v)
}
