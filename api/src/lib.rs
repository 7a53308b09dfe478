//! The gRPC API of bgpd and meshd.
