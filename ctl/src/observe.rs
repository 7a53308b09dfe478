//! `ironctl observe`: a node's flow records from meshd (`datapath.flows`), filtered as
//! `hubble observe` filters them; the last N, or followed as they come.

use std::io::{ErrorKind, Write};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use api::mesh as pb;
use clap::{Args, ValueEnum};
use common::flows::{Flow, FlowFilter, FlowVerdict};

use crate::table::{Align, Table};

#[derive(Debug, Args)]
pub struct ObserveArgs {
    /// meshd's API socket (meshd's --api).
    #[arg(
        long = "meshd",
        value_name = "PATH",
        env = "IRONMESH_MESHD_SOCKET",
        default_value = "/var/lib/ironmesh/meshd.sock"
    )]
    socket: PathBuf,
    /// Every node of every cluster, through this meshd's relay (observe.relay), merged by
    /// time; a node that does not answer is reported, the others go on.
    #[arg(long)]
    mesh: bool,
    /// Show the last N matching flows [default: 20, or 0 with --follow].
    #[arg(long, value_name = "N")]
    last: Option<u32>,
    /// Keep streaming new flows.
    #[arg(short, long)]
    follow: bool,
    /// Only flows with this verdict: FORWARDED, DROPPED, TRACED (repeatable).
    #[arg(long, value_name = "VERDICT", value_parser = FlowVerdict::parse)]
    verdict: Vec<FlowVerdict>,
    /// Only flows from this pod: [NAMESPACE/]NAME-PREFIX (namespace default when absent).
    #[arg(long, value_name = "POD")]
    from_pod: Option<String>,
    /// Only flows to this pod: [NAMESPACE/]NAME-PREFIX.
    #[arg(long, value_name = "POD")]
    to_pod: Option<String>,
    /// Only flows from or to this pod.
    #[arg(long, value_name = "POD")]
    pod: Option<String>,
    /// Only flows whose source has this label: KEY=VALUE or KEY (repeatable: all of them).
    #[arg(long, value_name = "LABEL")]
    from_label: Vec<String>,
    /// Only flows whose destination has this label.
    #[arg(long, value_name = "LABEL")]
    to_label: Vec<String>,
    /// Only this protocol: tcp, udp, icmp, icmpv6, sctp or a number.
    #[arg(long, value_name = "PROTO")]
    protocol: Option<String>,
    /// Only flows with this port at either end.
    #[arg(long, value_name = "PORT")]
    port: Option<u16>,
    /// Only flows of the last DURATION (e.g. 30s, 5m, 1h).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    since: Option<Duration>,
    /// Only flows observed in this cluster.
    #[arg(long, value_name = "CLUSTER")]
    cluster: Option<String>,
    /// Only flows observed on this node.
    #[arg(long, value_name = "NODE")]
    node: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Compact)]
    output: Output,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    /// One line per flow: time, node, source -> destination, protocol, verdict, reason.
    Compact,
    /// One JSON object per line (stable field names: common::flows::Flow).
    Json,
    /// A table (without --follow).
    Table,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?}: use a number with s, m or h (e.g. 30s, 5m, 1h)");
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(bad()),
    };
    Ok(Duration::from_secs(secs))
}

impl ObserveArgs {
    fn filter(&self) -> Result<FlowFilter, String> {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let f = FlowFilter {
            verdicts: self.verdict.clone(),
            from_pod: self.from_pod.clone(),
            to_pod: self.to_pod.clone(),
            pod: self.pod.clone(),
            from_labels: self.from_label.clone(),
            to_labels: self.to_label.clone(),
            protocol: self.protocol.clone(),
            port: self.port,
            since_ms: self
                .since
                .map(|d| now_ms.saturating_sub(d.as_millis() as u64)),
            cluster: self.cluster.clone(),
            node: self.node.clone(),
        };
        f.validate()?;
        Ok(f)
    }
}

/// The table of `flows`.
fn table(flows: &[Flow]) -> String {
    let mut t = Table::new(&[
        ("TIME", Align::Left),
        ("NODE", Align::Left),
        ("SOURCE", Align::Left),
        ("DESTINATION", Align::Left),
        ("PROTOCOL", Align::Left),
        ("VERDICT", Align::Left),
        ("REASON", Align::Left),
    ]);
    for f in flows {
        let l4 = matches!(f.protocol.as_str(), "TCP" | "UDP" | "SCTP");
        t.row(vec![
            f.time_ms.to_string(),
            format!("{}/{}", f.cluster, f.node),
            f.source.short(l4),
            f.destination.short(l4),
            f.protocol.clone(),
            f.verdict.name().to_string(),
            match &f.direction {
                Some(d) => format!("{} ({d})", f.reason),
                None => f.reason.clone(),
            },
        ]);
    }
    t.render()
}

/// Runs `observe`; the error is the message to print.
pub fn run(args: ObserveArgs) -> Result<(), String> {
    if args.follow && args.output == Output::Table {
        return Err(
            "-o table lists the last flows; use -o compact or -o json with --follow".into(),
        );
    }
    let filter = args.filter()?;
    let req = pb::FlowsRequest {
        last: args.last.unwrap_or(if args.follow { 0 } else { 20 }),
        follow: args.follow,
        filter_json: serde_json::to_string(&filter).map_err(|e| e.to_string())?,
        mesh: args.mesh,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(async {
        let mut client = crate::mesh::connect(&args.socket).await?;
        let mut stream = client
            .flows(req)
            .await
            .map_err(|s| s.message().to_string())?
            .into_inner();
        let stdout = std::io::stdout();
        let mut table_rows = Vec::new();
        loop {
            let msg = match stream.message().await {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(s) => return Err(format!("meshd: {}", s.message())),
            };
            if !msg.node_error.is_empty() {
                eprintln!("ironctl: observe: node {}", msg.node_error);
            }
            if msg.lost > 0 {
                eprintln!("ironctl: observe: {} flows lost (the node's ring overwrote them before they were sent)", msg.lost);
            }
            if msg.flow_json.is_empty() {
                continue;
            }
            let flow: Flow = serde_json::from_str(&msg.flow_json)
                .map_err(|e| format!("meshd sent a flow that is not one: {e}"))?;
            let line = match args.output {
                Output::Table => {
                    table_rows.push(flow);
                    continue;
                }
                Output::Json => msg.flow_json,
                Output::Compact => flow.compact(),
            };
            let mut out = stdout.lock();
            match writeln!(out, "{line}").and_then(|()| out.flush()) {
                Ok(()) => {}
                // `ironctl observe -f | head`: the reader went away; a normal end.
                Err(e) if e.kind() == ErrorKind::BrokenPipe => return Ok(()),
                Err(e) => return Err(format!("writing to stdout: {e}")),
            }
        }
        if args.output == Output::Table {
            print!("{}", table(&table_rows));
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_s_m_h_and_name_the_fix() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        for bad in ["", "5", "m", "5d", "-5s"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains("e.g. 30s"), "{bad}: {e}");
        }
    }
}
