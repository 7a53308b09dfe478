//! Any byte stream, arriving in pieces, into the TCP framing (`wire::next_frame`): no panic;
//! every frame split off starts with the marker and has the length its header says, within
//! 19..=max; the frames are the stream's first octets, in order; an error or a wait consumes
//! nothing. The first byte picks the maximum length and the piece size.
#![no_main]

use bytes::BytesMut;
use ironmesh_bgpd::wire::{MARKER, MAX_EXTENDED_MESSAGE_LEN, MAX_MESSAGE_LEN, next_frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, stream)) = data.split_first() else {
        return;
    };
    let max = if flags & 1 != 0 {
        MAX_EXTENDED_MESSAGE_LEN
    } else {
        MAX_MESSAGE_LEN
    };
    let piece = usize::from(flags >> 1).max(1);
    let mut buf = BytesMut::new();
    let mut framed = Vec::new();
    for chunk in stream.chunks(piece) {
        buf.extend_from_slice(chunk);
        loop {
            let before = buf.len();
            match next_frame(&mut buf, max) {
                Ok(Some(f)) => {
                    assert_eq!(f[..16], MARKER);
                    let len = usize::from(u16::from_be_bytes([f[16], f[17]]));
                    assert_eq!(f.len(), len);
                    assert!((19..=max).contains(&len));
                    framed.extend_from_slice(&f);
                }
                Ok(None) => {
                    assert_eq!(buf.len(), before);
                    break;
                }
                Err(_) => {
                    assert_eq!(buf.len(), before);
                    return;
                }
            }
        }
        assert_eq!(framed[..], stream[..framed.len()]);
    }
});
