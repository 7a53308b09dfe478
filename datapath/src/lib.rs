//! The eBPF datapath: C programs (`bpf/*.bpf.c`, compiled by build.rs with
//! clang for the BPF target), the map layouts shared with them (mirrors of
//! `bpf/ironmesh.h`: [`ipcache`], [`lb`], [`policy`], [`events`]), Maglev table
//! computation ([`maglev`]), the aya loader with typed map handles
//! ([`loader`]) and the bpffs pin root ([`pin`]).

pub mod events;
pub mod ipcache;
pub mod lb;
mod links;
pub mod loader;
pub mod maglev;
pub mod pin;
mod pod;
pub mod policy;
mod policy_maps;

pub use events::{Event, EventReader};
pub use lb::Scope;
pub use loader::{Backend, Datapath, DatapathError, Program, RunOutput, Service};
pub use policy::{Config, Endpoint, EndpointPolicy, PolicyMode, Routing};

/// Path of the shared C header, for build scripts and tests.
pub const HEADER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/bpf/ironmesh.h");
