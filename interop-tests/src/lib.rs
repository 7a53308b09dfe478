//! The network-namespace lab for ironmesh's interop tests and demo.
//!
//! A [`Lab`] makes hosts (network namespaces with unique names), links them with veth pairs or
//! bridges, and runs real daemons in them: BIRD 2, FRR, GoBGP, etcd and wireguard-go, each with
//! generated config, a readiness wait and typed queries. Dropping the lab (also on panic) kills
//! every process by PID, deletes every namespace and temp dir, and prints daemon logs if the test
//! failed. Namespaces left by a killed test run are swept by the next `Lab::new`.

pub mod bfd;
pub mod bgpd;
pub mod bird;
pub mod cmd;
pub mod cni;
pub mod datapath_lab;
pub mod error;
pub mod etcd;
pub mod etcd_auth;
pub mod etcd_lab;
pub mod frr;
pub mod gobgp;
pub mod lab;
pub mod mesh;
pub mod node1;
pub mod pki;
pub mod process;
pub mod route;
pub mod scrape;
mod sys;
pub mod tcp;
pub mod wireguard;

pub use bfd::BfdTimers;
pub use bgpd::{Bgpd, BgpdConfig, BgpdPeer};
pub use bird::{Bird, BirdConfig, BirdPeer};
pub use error::{LabError, Result};
pub use etcd::{EtcdCluster, EtcdTls};
pub use etcd_lab::EtcdLab;
pub use frr::{Frr, FrrConfig, FrrNeighbor};
pub use gobgp::{Gobgp, GobgpConfig, GobgpNeighbor};
pub use lab::{Host, Lab, Link, PingStats};
pub use process::Process;
pub use route::{BgpRoute, Origin};
pub use wireguard::WgDevice;
