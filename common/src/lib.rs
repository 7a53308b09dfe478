//! Domain types shared by every ironmesh crate.
