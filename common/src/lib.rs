//! Domain types shared by every ironmesh crate.
//!
//! Every type here validates on construction (and on deserialization), so a
//! value that exists is a valid value.

mod asn;
pub mod community;
pub mod flows;
mod identity;
mod labels;
mod name;
pub mod podcidrs;
pub mod port;
mod service;

pub use asn::{Asn, AsnParseError};
pub use community::{Community, LargeCommunity};
pub use identity::{
    ClusterId, Identity, IdentityError, IdentityKind, IdentityLayout, ReservedIdentity,
};
pub use labels::{LabelError, Labels};
pub use name::{ClusterName, NameError, NodeName};
pub use port::{ContainerPort, PortProtocol};
pub use service::{ServiceKey, ServiceKeyError};
