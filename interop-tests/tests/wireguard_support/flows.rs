//! Traffic and evidence for the rotation tests: ping flows at 100/s, a paced iperf3 TCP
//! stream, and an underlay capture that catches pod packets leaving a node in clear.

use std::collections::BTreeSet;
use std::time::Duration;

use interop_tests::cmd::wait_for;
use interop_tests::*;

/// A ping flow of `count` pings at 10 ms, each reply awaited up to 1 s.
pub fn ping_flow(from: &Host, to: &str, count: u32) -> Result<Process> {
    spawn_ping(from, to, count, &[])
}

/// [`ping_flow`] that logs only the summary (`-q`): no icmp_seq lines for [`missing_seqs`].
pub fn quiet_ping_flow(from: &Host, to: &str, count: u32) -> Result<Process> {
    spawn_ping(from, to, count, &["-q"])
}

fn spawn_ping(from: &Host, to: &str, count: u32, extra: &[&str]) -> Result<Process> {
    let count = count.to_string();
    // -D: each reply line carries its arrival time, to place lost pings in time.
    let mut args = vec!["-n", "-D"];
    args.extend_from_slice(extra);
    args.extend(["-c", &count, "-i", "0.01", "-W", "1", to]);
    let args: Vec<String> = args.into_iter().map(String::from).collect();
    from.spawn(&format!("ping-{to}"), "ping", &args)
}

/// The icmp_seq numbers that got no reply.
pub fn missing_seqs(p: &Process, sent: u32) -> Vec<u32> {
    let log = std::fs::read_to_string(p.log_path()).unwrap_or_default();
    let got: BTreeSet<u32> = log
        .split("icmp_seq=")
        .skip(1)
        .filter_map(|r| r.split_whitespace().next()?.parse().ok())
        .collect();
    (1..=sent).filter(|s| !got.contains(s)).collect()
}

/// Each missing seq with the arrival time (unix ms) of the last reply before it, to set
/// losses against the events of a test: `380 (after 17:08:11.290 = 1765040891290)`.
pub fn missing_near(p: &Process, missing: &[u32]) -> String {
    let log = std::fs::read_to_string(p.log_path()).unwrap_or_default();
    let at: std::collections::BTreeMap<u32, u64> = log
        .lines()
        .filter_map(|l| {
            let t: f64 = l.strip_prefix('[')?.split(']').next()?.parse().ok()?;
            let seq = l.split("icmp_seq=").nth(1)?.split_whitespace().next()?;
            Some((seq.parse().ok()?, (t * 1000.0) as u64))
        })
        .collect();
    missing
        .iter()
        .map(|s| match at.range(..s).next_back() {
            Some((prev, ms)) => format!("{s} (reply {prev} arrived at unix ms {ms})"),
            None => format!("{s} (no earlier reply)"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// (sent, received) from a finished ping's summary.
pub fn ping_result(p: &Process) -> (u32, u32) {
    ping_counts(&ping_summary(p))
}

/// A finished ping's summary line (`N packets transmitted, M received, ...`).
pub fn ping_summary(p: &Process) -> String {
    let log = p.log_tail(4096);
    log.lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no ping summary: {log}"))
        .to_string()
}

/// (sent, received) from a ping summary line.
pub fn ping_counts(line: &str) -> (u32, u32) {
    let nums: Vec<u32> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    (nums[0], nums[1])
}

/// Waits for the iperf3 `client` and the `pings` (flows of `flow_seconds`) to end, up to 20 s
/// more than the flows last.
pub fn wait_flows_end(client: &Process, pings: &[Process], flow_seconds: u32) -> Result<()> {
    wait_for(
        "the flows to end",
        Duration::from_secs(u64::from(flow_seconds) + 20),
        Duration::from_millis(200),
        |_| Ok((!client.is_running() && pings.iter().all(|p| !p.is_running())).then_some(())),
    )
}

/// An iperf3 server in `pod` (one test) and a paced client from `from` for `seconds`.
pub fn iperf_pair(
    server_pod: &Host,
    from: &Host,
    to_ip: &str,
    seconds: u32,
    rate: &str,
) -> Result<(Process, Process)> {
    let server = server_pod.spawn(
        "iperf3-server",
        "iperf3",
        &["-s", "-1", "-p", "5201"].map(String::from),
    )?;
    wait_for(
        "iperf3 server",
        Duration::from_secs(5),
        Duration::from_millis(50),
        |_| {
            let ss = server_pod.exec("ss", &["-ltnH"])?;
            Ok((server.is_running() && ss.contains(":5201")).then_some(()))
        },
    )?;
    let client = from.spawn(
        "iperf3-client",
        "iperf3",
        &[
            "-c",
            to_ip,
            "-p",
            "5201",
            "-t",
            &seconds.to_string(),
            "-b",
            rate,
            // Paced by the kernel, not in 128 KiB bursts (see `wireguard_rollout`).
            "--fq-rate",
            rate,
            "-i",
            "0.1",
            "--json",
        ]
        .map(String::from),
    )?;
    Ok((server, client))
}

/// From iperf3's JSON: the longest run of intervals without a byte (s), bytes, retransmits.
pub fn iperf_stall(json: &str) -> (f64, u64, u64) {
    let start = json.find('{').expect("iperf3 JSON");
    let v: serde_json::Value = serde_json::from_str(&json[start..]).expect("iperf3 JSON");
    let (mut longest, mut run, mut total) = (0.0f64, 0.0, 0);
    for i in v["intervals"].as_array().expect("intervals") {
        let bytes = i["sum"]["bytes"].as_u64().unwrap();
        total += bytes;
        if bytes == 0 {
            run += i["sum"]["seconds"].as_f64().unwrap();
            longest = longest.max(run);
        } else {
            run = 0.0;
        }
    }
    let retransmits = v["end"]["sum_sent"]["retransmits"].as_u64().unwrap_or(0);
    (longest, total, retransmits)
}

/// tcpdump on a node's underlay interface, keeping only packets whose *outer* IPv4 header
/// names a pod address: pod traffic in clear. Tunnelled pod traffic is UDP between node
/// addresses and does not match.
pub struct PlaintextCapture {
    pub proc: Process,
    pub file: std::path::PathBuf,
    host: Host,
}

impl PlaintextCapture {
    pub fn start(host: &Host, ifname: &str, pods: &str) -> Result<Self> {
        let file = host.path(&format!("plain-{ifname}.pcap"));
        let proc = host.spawn(
            &format!("tcpdump-{ifname}"),
            "tcpdump",
            &[
                "-i",
                ifname,
                "-n",
                "-U",
                "-Z",
                "root",
                "-w",
                &file.display().to_string(),
                "ip",
                "and",
                "net",
                pods,
            ]
            .map(String::from),
        )?;
        let log = proc.log_path().to_owned();
        wait_for(
            "tcpdump listening",
            Duration::from_secs(5),
            Duration::from_millis(50),
            |_| {
                let l = std::fs::read_to_string(&log).unwrap_or_default();
                Ok(l.contains("listening on").then_some(()))
            },
        )?;
        Ok(Self {
            proc,
            file,
            host: host.clone(),
        })
    }

    /// Stops the capture; returns the captured packets, one summary line each.
    pub fn finish(&self) -> Vec<String> {
        self.proc.terminate();
        let out = self
            .host
            .exec("tcpdump", &["-n", "-r", &self.file.display().to_string()])
            .unwrap_or_default();
        out.lines().map(str::to_string).collect()
    }
}
