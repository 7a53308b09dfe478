//! Quick ns/packet through the programs with BPF_PROG_TEST_RUN.
//! Not the benchmark (`scripts/bench datapath`); a first number.
//!
//! Caveat found here: with `repeat = N` the kernel runs the program N times
//! on the *same* skb without restoring it, so after the first run a
//! translated packet is no longer addressed to the VIP and the other N-1
//! runs time the "not a service" path (`bpftool prog run ... repeat N` has
//! the same trap). So the NAT cases are timed as the mean of the kernel's
//! own duration over many single runs (each on a fresh copy); the
//! `repeat` figure is printed beside it for the untouched-packet case.
//! Run as root: `cargo run --release -p ironmesh-datapath --example prog_run [SERVICES]`.

use std::net::{IpAddr, Ipv4Addr};

use ironmesh_datapath::lb::{BackendState, Proto};
use ironmesh_datapath::pin::PinRoot;
use ironmesh_datapath::{Backend, Datapath, Program, Service};

const REPEAT: u32 = 1_000_000;
const SINGLE_RUNS: u32 = 200_000;

/// Ethernet + IPv4 + TCP SYN, checksums left 0 (the programs do not check them).
fn tcp4(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    let mut p = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
    p.extend_from_slice(&[0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xfa, 0xf0, 0, 0, 0, 0]);
    p
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u32 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1000);
    let root = PinRoot::new(format!("/sys/fs/bpf/ironmesh-bench-{}", std::process::id()))?;
    let result = (|| -> Result<(), Box<dyn std::error::Error>> {
        let mut dp = Datapath::load(&root)?;
        for i in 0..n {
            let vip = Ipv4Addr::from(0xc612_0000 + i); // 198.18.0.0/15 (benchmarking range)
            dp.upsert_service(&Service {
                id: i + 1,
                vip: IpAddr::V4(vip),
                port: 80,
                proto: Proto::Tcp,
                maglev: i == 0, // one Maglev table; the rest pick at random
                backends: (0..3)
                    .map(|b| Backend {
                        id: i * 3 + b + 1,
                        ip: IpAddr::V4(Ipv4Addr::from(0x0a01_0000 + i * 3 + b)),
                        port: 8080,
                        state: BackendState::Active,
                    })
                    .collect(),
            })?;
        }
        let client = Ipv4Addr::new(10, 0, 0, 5);
        let vip0 = Ipv4Addr::from(0xc612_0000);
        let cases = [
            (
                "not a service",
                Program::PodEgress,
                tcp4(client, 40000, Ipv4Addr::new(10, 9, 9, 9), 80),
            ),
            (
                "service, Maglev, established (CT hit)",
                Program::PodEgress,
                tcp4(client, 40001, vip0, 80),
            ),
            (
                "service, random, established (CT hit)",
                Program::PodEgress,
                tcp4(client, 40002, Ipv4Addr::from(0xc612_0000 + n - 1), 80),
            ),
            ("reply, reverse NAT", Program::PodIngress, Vec::new()),
        ];
        println!("{n} services");
        let mut reply = Vec::new();
        for (name, prog, pkt) in cases {
            let pkt = if pkt.is_empty() { reply.clone() } else { pkt };
            let first = dp.run(prog, &pkt, 1)?; // creates the CT entry
            if name.starts_with("service, Maglev") {
                let d = &first.packet[30..34];
                reply = tcp4(Ipv4Addr::new(d[0], d[1], d[2], d[3]), 8080, client, 40001);
            }
            let mut total = 0u128;
            for _ in 0..SINGLE_RUNS {
                total += dp.run(prog, &pkt, 1)?.duration.as_nanos();
            }
            let repeated = dp.run(prog, &pkt, REPEAT)?;
            println!(
                "{name:42} verdict {} {:>5} ns/packet (single runs; repeat={REPEAT}: {} ns)",
                first.verdict,
                total / u128::from(SINGLE_RUNS),
                repeated.duration.as_nanos()
            );
        }
        Ok(())
    })();
    if let Ok(entries) = std::fs::read_dir(root.path()) {
        for e in entries.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let _ = std::fs::remove_dir(root.path());
    result
}
