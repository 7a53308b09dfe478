//! Node-to-node encryption: WireGuard and IPsec keys, peers, rotation.
