//! `ironctl monitor`: the datapath's drop, policy-verdict and trace events as they happen, like
//! `hubble observe`, read from the `events` ring buffer pinned under the pin root.
//!
//! Identities are named by labels: the CNI plugin's endpoint records (`<dataDir>/<network>/
//! endpoints/*.json`) give each local pod's addresses and labels, the pinned `endpoints` map
//! gives each local address its identity; an identity's labels are those its local pods share
//! (without the pod name, which is not part of an identity).
//! An event whose address is a recorded pod teaches ironctl that pod's identity too. Reserved
//! identities show as `reserved:<name>`. When meshd's API answers (`--meshd`), every identity of
//! every cluster is named by the labels meshd stores for it, so pods of other nodes and other
//! clusters are named too; the records stay the fallback.
//!
//! The ring buffer has one consumer position, shared by every reader: two monitors (or a monitor
//! and another consumer) running at once each see part of the events.

mod labeler;
mod open;
mod render;
#[cfg(test)]
mod tests;

use std::io::{self, ErrorKind, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use datapath::Event;
use datapath::events::{EventError, EventKind};
use datapath::pin::{DEFAULT_PIN_ROOT, PinRoot};

use labeler::Labeler;
use open::{open_endpoints_map, open_reader};
use render::{json_event, text_line};

/// Longest single wait on the ring buffer while following without `--timeout`.
const FOLLOW_POLL: Duration = Duration::from_secs(60);
/// An identity without labels re-reads the endpoint records (and asks meshd) at most this often.
const REFRESH_EVERY: Duration = Duration::from_secs(2);
/// How long one question to meshd may take (the monitor waits for it).
const MESHD_LIMIT: Duration = Duration::from_secs(2);
/// After meshd did not answer, it is asked again only after this long (each try may block).
const MESHD_RETRY: Duration = Duration::from_secs(30);
/// meshd's API socket when `--meshd` is not given (as `ironctl mesh`).
const DEFAULT_MESHD_SOCKET: &str = "/var/lib/ironmesh/meshd.sock";

#[derive(Debug, Args)]
pub struct MonitorArgs {
    /// The datapath's pin root on bpffs (where the agent pinned its maps).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_ROOT)]
    pin_root: PathBuf,
    /// The CNI plugin's endpoint records, to name identities by labels: a data dir
    /// (`<DIR>/<network>/endpoints/*.json`), a network dir or an endpoints dir.
    /// [default: /var/lib/ironmesh/cni]
    #[arg(long, value_name = "DIR")]
    endpoints: Option<PathBuf>,
    /// meshd's API socket, to name every identity (other nodes', other clusters') by the
    /// labels meshd stores; without an answer, identities are named from the records only.
    /// [default: /var/lib/ironmesh/meshd.sock]
    #[arg(long, value_name = "PATH", env = "IRONMESH_MESHD_SOCKET")]
    meshd: Option<PathBuf>,
    /// Only these events (repeat the option or separate with commas); default: all.
    #[arg(long = "type", value_enum, value_name = "TYPE", value_delimiter = ',')]
    types: Vec<EventType>,
    /// Stop after N events (after filtering).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// Stop after SECS (e.g. 5 or 0.5) without an event to show; default: follow forever.
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    timeout: Option<Duration>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EventType {
    /// Dropped packets (policy, no backend, tunnel, conntrack).
    Drop,
    /// Policy verdicts for new flows under an enforced policy.
    Verdict,
    /// Routing traces (to/from overlay, FIB redirect), when the datapath's trace flag is on.
    Trace,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    /// One hubble-like line per event.
    Text,
    /// One JSON object per line (stable field names).
    Json,
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{s:?}: use 0 or more seconds"))
}

/// Runs `monitor`; the error is the message to print.
pub fn run(args: MonitorArgs) -> Result<(), String> {
    let root = PinRoot::new(&args.pin_root).map_err(|e| format!("--pin-root: {e}"))?;
    let mut reader = open_reader(&root)?;
    let (records_dir, explicit) = match &args.endpoints {
        Some(d) => (d.clone(), true),
        None => (PathBuf::from(cni::config::DEFAULT_DATA_DIR), false),
    };
    if explicit && !records_dir.is_dir() {
        return Err(format!(
            "--endpoints {}: not a directory (the CNI plugin's dataDir, e.g. {})",
            records_dir.display(),
            cni::config::DEFAULT_DATA_DIR
        ));
    }
    let mut labels = Labeler::new(records_dir, open_endpoints_map(&root));
    labels.meshd = Some(match args.meshd {
        Some(p) => (p, true),
        None => (PathBuf::from(DEFAULT_MESHD_SOCKET), false),
    });
    labels.refresh();

    let json = args.output == Output::Json;
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let mut shown = 0u64;
    let mut last_shown = Instant::now();
    while args.count.is_none_or(|n| shown < n) {
        let wait = match args.timeout {
            Some(t) => {
                let left = t.saturating_sub(last_shown.elapsed());
                if left.is_zero() {
                    eprintln!(
                        "ironctl: monitor: no event for {}, stopping ({shown} shown)",
                        human_secs(t)
                    );
                    break;
                }
                left
            }
            None => FOLLOW_POLL,
        };
        let event = match reader.next_timeout(wait) {
            Ok(None) => continue,
            Ok(Some(e)) => e,
            Err(e @ (EventError::Short { .. } | EventError::Family(_))) => {
                eprintln!("ironctl: monitor: skipping a record: {e}");
                continue;
            }
            Err(e) => {
                return Err(format!(
                    "reading events under {}: {e}",
                    root.path().display()
                ));
            }
        };
        if !matches_types(&args.types, &event) {
            continue;
        }
        labels.learn(&event);
        let line = if json {
            serde_json::to_string(&json_event(&event, &labels))
                .map_err(|e| format!("encoding JSON: {e}"))?
        } else {
            text_line(&event, &labels)
        };
        match writeln!(out, "{line}").and_then(|()| out.flush()) {
            Ok(()) => {}
            // `ironctl monitor | head`: the reader went away; that is a normal end.
            Err(e) if e.kind() == ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(format!("writing to stdout: {e}")),
        }
        shown += 1;
        last_shown = Instant::now();
    }
    Ok(())
}

fn human_secs(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

/// Whether `e` is of one of `types` (all types when empty).
pub fn matches_types(types: &[EventType], e: &Event) -> bool {
    types.is_empty()
        || types.iter().any(|t| {
            matches!(
                (t, e.kind),
                (EventType::Drop, EventKind::Drop(_))
                    | (EventType::Verdict, EventKind::PolicyVerdict(_))
                    | (EventType::Trace, EventKind::Trace(_))
            )
        })
}
