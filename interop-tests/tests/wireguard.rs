//! Two hosts ping each other through userspace WireGuard (wireguard-go).

use std::time::Duration;

use interop_tests::*;

#[test]
fn wireguard_go_ping_through_tunnel() -> Result<()> {
    let lab = Lab::new("wg")?;
    let a = lab.host("a")?;
    let b = lab.host("b")?;
    lab.link(&a, &["192.0.2.1/24"], &b, &["192.0.2.2/24"])?;
    let wa = WgDevice::start(&a, 51820)?;
    let wb = WgDevice::start(&b, 51820)?;
    wa.up("10.99.0.1/24")?;
    wb.up("10.99.0.2/24")?;
    wa.set_peer(&wb.public_key, Some("192.0.2.2:51820"), &["10.99.0.2/32"])?;
    wb.set_peer(&wa.public_key, Some("192.0.2.1:51820"), &["10.99.0.1/32"])?;

    let stats = a.ping("10.99.0.2", 10, Duration::from_millis(100))?;
    assert!(stats.received >= 9, "ping through the tunnel: {stats:?}");

    // Traffic really went through WireGuard: both sides completed a handshake with each other.
    let hs = wa.latest_handshakes()?;
    assert_eq!(hs.len(), 1);
    assert_eq!(hs[0].0, wb.public_key);
    assert!(hs[0].1 > 0, "no handshake recorded: {hs:?}");

    // And with the peer removed on b, the tunnel carries nothing.
    b.exec("wg", &["set", &wb.ifname, "peer", &wa.public_key, "remove"])?;
    let stats = a.ping("10.99.0.2", 5, Duration::from_millis(100))?;
    assert_eq!(stats.received, 0, "{stats:?}");
    Ok(())
}
