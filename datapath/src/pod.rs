//! `aya::Pod` for the map mirrors, so typed map handles can copy them to
//! and from the kernel as bytes.
#![allow(unsafe_code)] // `Pod` is an unsafe marker trait; see the SAFETY note.

use aya::Pod;

use crate::events::RawEvent;
use crate::ipcache::IpcacheValue;
use crate::lb::{BackendSlotKey, BackendValue, CtKey, CtValue, SvcKey, SvcValue};
use crate::policy::{DpConfig, EndpointInfo, EndpointKey, PolicyKey, PolicyValue};

/// Each type's size equals the sum of its fields' sizes (no padding bytes).
macro_rules! no_padding {
    ($t:ty: $($f:ty),+) => {
        const _: () = assert!(std::mem::size_of::<$t>() == 0 $(+ std::mem::size_of::<$f>())+);
    };
}
no_padding!(IpcacheValue: u32, [u8; 4], u8, u8, [u8; 2]);
no_padding!(SvcKey: [u8; 16], u16, u8, u8, u8, [u8; 3]);
no_padding!(SvcValue: u32, u16, u16);
no_padding!(BackendSlotKey: u32, u32);
no_padding!(BackendValue: [u8; 16], u16, u8, u8);
no_padding!(CtKey: [u8; 16], [u8; 16], u16, u16, u8, u8, u8, u8);
no_padding!(CtValue: [u8; 16], u16, u8, u8, u32, u32, u32, u64);
no_padding!(RawEvent: u64, u32, u32, [u8; 16], [u8; 16], u16, u16, u8, u8, u8, u8, u32, u32, u32, u8, [u8; 3], [u8; 4], u32);
no_padding!(EndpointKey: [u8; 16], u8, [u8; 3]);
no_padding!(EndpointInfo: u32, u32, u32, u32);
no_padding!(PolicyKey: u32, u16, u8, u8);
no_padding!(PolicyValue: u8, [u8; 3]);
no_padding!(DpConfig: u8, u8, u16, u32);

// SAFETY: every type is `#[repr(C)]`, `Copy`, made only of integers and
// integer arrays (any bit pattern is a valid value) and has no padding
// (checked above), so viewing it as bytes and building it from kernel bytes
// of its exact size (aya checks the map's key/value sizes) is sound.
unsafe impl Pod for IpcacheValue {}
unsafe impl Pod for SvcKey {}
unsafe impl Pod for SvcValue {}
unsafe impl Pod for BackendSlotKey {}
unsafe impl Pod for BackendValue {}
unsafe impl Pod for CtKey {}
unsafe impl Pod for CtValue {}
unsafe impl Pod for RawEvent {}
unsafe impl Pod for EndpointKey {}
unsafe impl Pod for EndpointInfo {}
unsafe impl Pod for PolicyKey {}
unsafe impl Pod for PolicyValue {}
unsafe impl Pod for DpConfig {}
