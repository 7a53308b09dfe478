//! Helpers for the BPF_PROG_TEST_RUN tests: per-test pin roots on bpffs and
//! packets built and checked independently of the programs.
#![allow(dead_code)] // each test file uses a different subset

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};

use ironmesh_datapath::lb::BackendState;
use ironmesh_datapath::loader::TC_ACT_OK;
use ironmesh_datapath::pin::{PinRoot, bpffs_mounted};
use ironmesh_datapath::{Backend, Datapath, Program};

/// A pin root of its own under /sys/fs/bpf, removed (with its pins) on drop.
pub struct TestRoot(pub PinRoot);

impl TestRoot {
    pub fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = format!(
            "/sys/fs/bpf/ironmesh-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let root = PinRoot::new(path).unwrap();
        assert!(
            bpffs_mounted(root.path()).unwrap(),
            "bpffs is not mounted on /sys/fs/bpf: run scripts/setup as root"
        );
        Self(root)
    }
}

impl Drop for TestRoot {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(self.0.path()) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let _ = std::fs::remove_dir(self.0.path());
    }
}

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMP: u8 = 1;
pub const ICMPV6: u8 = 58;

const PAYLOAD: &[u8] = b"ironmesh test payload";

/// One's-complement sum of 16-bit big-endian words (odd byte padded).
fn sum16(mut acc: u32, data: &[u8]) -> u32 {
    for c in data.chunks(2) {
        acc += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

fn pseudo_sum(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> u32 {
    let mut acc = 0;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            acc = sum16(acc, &s.octets());
            acc = sum16(acc, &d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            acc = sum16(acc, &s.octets());
            acc = sum16(acc, &d.octets());
        }
        _ => panic!("mixed families"),
    }
    acc + u32::from(proto) + len as u32
}

/// An Ethernet frame with IPv4 or IPv6 and a TCP (SYN+ACK-less SYN), UDP or
/// ICMP echo header plus a payload, all checksums valid. `udp_csum = false`
/// sends UDP/IPv4 without a checksum (0).
pub fn packet(src: (IpAddr, u16), dst: (IpAddr, u16), proto: u8) -> Vec<u8> {
    build(src, dst, proto, true)
}

pub fn build(src: (IpAddr, u16), dst: (IpAddr, u16), proto: u8, udp_csum: bool) -> Vec<u8> {
    let mut l4 = match proto {
        TCP => {
            let mut h = vec![0u8; 20];
            h[0..2].copy_from_slice(&src.1.to_be_bytes());
            h[2..4].copy_from_slice(&dst.1.to_be_bytes());
            h[4..8].copy_from_slice(&0x0102_0304u32.to_be_bytes()); // seq
            h[12] = 5 << 4; // data offset
            h[13] = 0x02; // SYN
            h[14..16].copy_from_slice(&64240u16.to_be_bytes());
            h
        }
        UDP => {
            let mut h = vec![0u8; 8];
            h[0..2].copy_from_slice(&src.1.to_be_bytes());
            h[2..4].copy_from_slice(&dst.1.to_be_bytes());
            h[4..6].copy_from_slice(&((8 + PAYLOAD.len()) as u16).to_be_bytes());
            h
        }
        ICMP | ICMPV6 => {
            let mut h = vec![0u8; 8];
            h[0] = if proto == ICMP { 8 } else { 128 }; // echo request
            h[4..6].copy_from_slice(&src.1.to_be_bytes()); // identifier
            h
        }
        other => panic!("no builder for protocol {other}"),
    };
    l4.extend_from_slice(PAYLOAD);
    let csum_off = match proto {
        TCP => Some(16),
        UDP if udp_csum || src.0.is_ipv6() => Some(6),
        UDP => None,
        _ => Some(2),
    };
    if let Some(off) = csum_off {
        let base = match proto {
            ICMP => 0, // ICMPv4 has no pseudo-header
            _ => pseudo_sum(src.0, dst.0, proto, l4.len()),
        };
        let mut c = !fold(sum16(base, &l4));
        if c == 0 && proto == UDP {
            c = 0xffff;
        }
        l4[off..off + 2].copy_from_slice(&c.to_be_bytes());
    }

    let mut p = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01];
    match (src.0, dst.0) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            p.extend_from_slice(&0x0800u16.to_be_bytes());
            let mut ip = vec![0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, proto, 0, 0];
            ip[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
            let c = !fold(sum16(0, &ip));
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            p.extend_from_slice(&ip);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            p.extend_from_slice(&0x86ddu16.to_be_bytes());
            let mut ip = vec![0x60, 0, 0, 0];
            ip.extend_from_slice(&(l4.len() as u16).to_be_bytes());
            ip.extend_from_slice(&[proto, 64]);
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
            p.extend_from_slice(&ip);
        }
        _ => panic!("mixed families"),
    }
    p.extend_from_slice(&l4);
    p
}

/// What a test needs to know about a packet the program returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub src: (IpAddr, u16),
    pub dst: (IpAddr, u16),
    pub proto: u8,
    pub payload: Vec<u8>,
    /// The IPv4 header checksum verifies (always true for IPv6).
    pub ip_csum_ok: bool,
    /// The L4 checksum verifies (UDP/IPv4 checksum 0 counts as valid).
    pub l4_csum_ok: bool,
    pub l4_csum: u16,
}

pub fn parse(p: &[u8]) -> Parsed {
    let ethertype = u16::from_be_bytes([p[12], p[13]]);
    let (src, dst, proto, l4, ip_csum_ok): (IpAddr, IpAddr, u8, &[u8], bool) = match ethertype {
        0x0800 => {
            let ip = &p[14..34];
            let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
            let s: [u8; 4] = ip[12..16].try_into().unwrap();
            let d: [u8; 4] = ip[16..20].try_into().unwrap();
            (
                s.into(),
                d.into(),
                ip[9],
                &p[34..14 + total],
                fold(sum16(0, ip)) == 0xffff,
            )
        }
        0x86dd => {
            let ip = &p[14..54];
            let len = u16::from_be_bytes([ip[4], ip[5]]) as usize;
            let s: [u8; 16] = ip[8..24].try_into().unwrap();
            let d: [u8; 16] = ip[24..40].try_into().unwrap();
            (s.into(), d.into(), ip[6], &p[54..54 + len], true)
        }
        other => panic!("not IP: ethertype {other:#x}"),
    };
    let (sport, dport, hdr, csum_off) = match proto {
        TCP => (
            u16::from_be_bytes([l4[0], l4[1]]),
            u16::from_be_bytes([l4[2], l4[3]]),
            20,
            16,
        ),
        UDP => (
            u16::from_be_bytes([l4[0], l4[1]]),
            u16::from_be_bytes([l4[2], l4[3]]),
            8,
            6,
        ),
        _ => (0, 0, 8, 2),
    };
    let l4_csum = u16::from_be_bytes([l4[csum_off], l4[csum_off + 1]]);
    let base = if proto == ICMP {
        0
    } else {
        pseudo_sum(src, dst, proto, l4.len())
    };
    let l4_csum_ok =
        (proto == UDP && src.is_ipv4() && l4_csum == 0) || fold(sum16(base, l4)) == 0xffff;
    Parsed {
        src: (src, sport),
        dst: (dst, dport),
        proto,
        payload: l4[hdr..].to_vec(),
        ip_csum_ok,
        l4_csum_ok,
        l4_csum,
    }
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A backend listening on port 8080.
pub fn backend(id: u32, addr: &str, state: BackendState) -> Backend {
    Backend {
        id,
        ip: ip(addr),
        port: 8080,
        state,
    }
}

/// Runs `pkt` through `program`; asserts it passed unchanged.
pub fn assert_untouched(dp: &Datapath, program: Program, pkt: &[u8]) {
    let out = dp.run(program, pkt, 1).unwrap();
    assert_eq!(out.verdict, TC_ACT_OK, "{program:?}");
    assert_eq!(
        out.packet, pkt,
        "{program:?} changed a packet it should not"
    );
}

#[test]
fn builder_and_checker_agree() {
    for (s, d) in [("10.0.0.5", "192.0.2.10"), ("2001:db8::5", "2001:db8::10")] {
        for proto in [TCP, UDP] {
            let p = parse(&packet((ip(s), 40000), (ip(d), 80), proto));
            assert!(p.ip_csum_ok && p.l4_csum_ok, "{s} {proto}: {p:?}");
            assert_eq!(p.payload, PAYLOAD);
        }
    }
    let mut bad = packet((ip("10.0.0.5"), 40000), (ip("192.0.2.10"), 80), TCP);
    bad[14 + 19] ^= 1; // daddr changed, checksums not
    let p = parse(&bad);
    assert!(!p.ip_csum_ok && !p.l4_csum_ok);
    let icmp = parse(&packet((ip("10.0.0.5"), 7), (ip("192.0.2.10"), 0), ICMP));
    assert!(icmp.l4_csum_ok);
}
