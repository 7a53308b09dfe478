//! BGP-4 speaker: wire codec, sans-IO FSM, RIBs, policy, speaker I/O.

pub mod bfd;
pub mod bmp;
pub mod cli;
pub mod fib;
pub mod fsm;
pub mod mrt;
pub mod policy;
pub mod rib;
pub mod speaker;
pub mod synth;
pub mod wire;
