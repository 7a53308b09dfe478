//! Any bytes into the message decoder: no panic, and whatever decodes
//! re-encodes to a stable form. The first byte picks the session context.
#![no_main]

use bytes::{Bytes, BytesMut};
use ironmesh_bgpd::wire::{Context, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let ctx = Context {
        four_octet_as: flags & 1 != 0,
        extended_message: flags & 2 != 0,
    };
    // Framing over a stream buffer.
    let mut buf = BytesMut::from(rest);
    while let Ok(Some(m)) = Message::decode_from(&mut buf, &ctx) {
        check_stable(&m, &ctx);
    }
    // One frame.
    if let Ok(m) = Message::decode(Bytes::copy_from_slice(rest), &ctx) {
        check_stable(&m, &ctx);
    }
});

/// decode(encode(m)) encodes to the same bytes as m.
fn check_stable(m: &Message, ctx: &Context) {
    let first = m.to_bytes(ctx).expect("decoded message re-encodes");
    let again = Message::decode(first.clone(), ctx).expect("re-encoded message decodes");
    assert_eq!(again.to_bytes(ctx).expect("encodes"), first);
}
