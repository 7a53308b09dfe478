//! Any byte stream, arriving in pieces, into the TCP framing (`wire::next_frame`): no panic;
//! every frame split off starts with the marker and has the length its header says, within
//! 19..=max; the frames are the stream's first octets, in order; an error or a wait consumes
//! nothing. The first byte picks the maximum length and the piece size.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ironmesh_fuzzing::targets::bgp::frames(data);
});
