//! UPDATE bodies behind a valid header, decoded with 2- and 4-octet AS
//! contexts: no panic, stable re-encoding.
#![no_main]

use bytes::Bytes;
use ironmesh_bgpd::wire::{Context, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() > 4096 - 19 {
        return;
    }
    let mut frame = vec![0xff; 16];
    frame.extend_from_slice(&((19 + data.len()) as u16).to_be_bytes());
    frame.push(2);
    frame.extend_from_slice(data);
    let frame = Bytes::from(frame);
    for four_octet_as in [false, true] {
        let ctx = Context {
            four_octet_as,
            extended_message: false,
        };
        if let Ok(m) = Message::decode(frame.clone(), &ctx) {
            let first = m.to_bytes(&ctx).expect("decoded UPDATE re-encodes");
            let again = Message::decode(first.clone(), &ctx).expect("re-encoded UPDATE decodes");
            assert_eq!(again.to_bytes(&ctx).expect("encodes"), first);
        }
    }
});
