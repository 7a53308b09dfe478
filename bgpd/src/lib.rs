//! BGP-4 speaker: wire codec, sans-IO FSM, RIBs, policy, speaker I/O.

pub mod fsm;
pub mod wire;
