//! The network-namespace lab: hosts, links and real peers.
