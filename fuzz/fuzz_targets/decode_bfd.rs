//! Any bytes into the BFD Control packet decoder: no panic, and whatever decodes re-encodes
//! to bytes that decode to the same packet.
#![no_main]

use ironmesh_bgpd::bfd::ControlPacket;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = ControlPacket::decode(data) {
        let again = ControlPacket::decode(&p.encode()).expect("re-encoded packet decodes");
        assert_eq!(again, p);
    }
});
