//! `ironctl apply | get | delete | describe`: Kubernetes-shaped resources through meshd's API,
//! with kubectl's feel (its messages, columns and `-o wide|yaml|json|name`). meshd checks
//! everything; this side reads files and prints.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use api::mesh as pb;
use clap::{Args, ValueEnum};
use resources::{Kind, Spec, Stored};
use serde_json::Value;

use crate::mesh::{call, connect};
use crate::table::{Align, Table};

#[derive(Debug, Args)]
pub struct Socket {
    /// meshd's API socket (meshd's --api; by default <node.state_dir>/meshd.sock).
    #[arg(
        long = "meshd",
        value_name = "PATH",
        env = "IRONMESH_MESHD_SOCKET",
        default_value = "/var/lib/ironmesh/meshd.sock"
    )]
    socket: PathBuf,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// A manifest file, a directory of them (*.yaml, *.yml, *.json), or - for stdin.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<String>,
    /// Check everything and print what would happen; write nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    socket: Socket,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GetOutput {
    Wide,
    Yaml,
    Json,
    Name,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// svc, netpol, ns, ippool, bgpadv, pods (and their long names).
    kind: String,
    /// One object's name (default: all of the kind).
    name: Option<String>,
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    /// Every namespace.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    #[arg(short = 'o', long, value_enum)]
    output: Option<GetOutput>,
    #[command(flatten)]
    socket: Socket,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Delete the objects a manifest names.
    #[arg(short = 'f', long = "filename")]
    files: Vec<String>,
    /// KIND NAME...
    args: Vec<String>,
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    #[command(flatten)]
    socket: Socket,
}

#[derive(Debug, Args)]
pub struct DescribeArgs {
    kind: String,
    name: String,
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    #[command(flatten)]
    socket: Socket,
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

/// The manifests named by `-f`: files, the manifests of a directory (sorted), or stdin.
fn read_manifests(files: &[String]) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for f in files {
        if f == "-" {
            let mut s = String::new();
            std::io::stdin()
                .take(resources::MAX_MANIFEST_BYTES as u64 + 1)
                .read_to_string(&mut s)
                .map_err(|e| format!("reading stdin: {e}"))?;
            out.push(("stdin".into(), s));
            continue;
        }
        let p = Path::new(f);
        let paths: Vec<PathBuf> = if p.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| format!("reading directory {f}: {e}"))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    matches!(
                        p.extension().and_then(|e| e.to_str()),
                        Some("yaml" | "yml" | "json")
                    )
                })
                .collect();
            v.sort();
            if v.is_empty() {
                return Err(format!(
                    "{f}: the directory holds no .yaml, .yml or .json file"
                ));
            }
            v
        } else {
            vec![p.to_path_buf()]
        };
        for p in paths {
            let meta = std::fs::metadata(&p)
                .map_err(|e| format!("the path {:?} does not exist or cannot be read: {e}", p))?;
            if meta.len() > resources::MAX_MANIFEST_BYTES as u64 {
                return Err(format!(
                    "{}: {} bytes, more than the {} one apply takes; split it",
                    p.display(),
                    meta.len(),
                    resources::MAX_MANIFEST_BYTES
                ));
            }
            let text =
                std::fs::read_to_string(&p).map_err(|e| format!("reading {}: {e}", p.display()))?;
            out.push((p.display().to_string(), text));
        }
    }
    Ok(out)
}

pub fn apply(args: ApplyArgs) -> Result<(), String> {
    let manifests = read_manifests(&args.files)?;
    runtime()?.block_on(async {
        let mut c = connect(&args.socket.socket).await?;
        // Every file is checked by meshd before any is written: a dry run of each first.
        for (name, text) in &manifests {
            call(c.apply(pb::ApplyRequest {
                manifest: text.clone(),
                dry_run: true,
            }))
            .await
            .map_err(|e| format!("error: {name}: {e}"))?;
        }
        for (name, text) in &manifests {
            let r = call(c.apply(pb::ApplyRequest {
                manifest: text.clone(),
                dry_run: args.dry_run,
            }))
            .await
            .map_err(|e| format!("error: {name}: {e}"))?;
            for o in r.results {
                let kind = Kind::ALL
                    .into_iter()
                    .find(|k| k.name() == o.kind)
                    .map(Kind::singular)
                    .unwrap_or(&o.kind);
                let dry = if args.dry_run { " (dry run)" } else { "" };
                println!("{kind}/{} {}{dry}", o.name, o.action);
                if !o.warning.is_empty() {
                    eprintln!("Warning: {kind}/{}: {}", o.name, o.warning);
                }
            }
        }
        Ok(())
    })
}

async fn get_objects(
    socket: &Path,
    kind: &str,
    namespace: &str,
    all: bool,
    name: Option<&str>,
) -> Result<Vec<Value>, String> {
    Ok(get_with_events(socket, kind, namespace, all, name).await?.0)
}

/// The objects, and for one named object its events.
async fn get_with_events(
    socket: &Path,
    kind: &str,
    namespace: &str,
    all: bool,
    name: Option<&str>,
) -> Result<(Vec<Value>, Vec<Value>), String> {
    let mut c = connect(socket).await?;
    let r = call(c.get(pb::GetRequest {
        kind: kind.into(),
        namespace: namespace.into(),
        name: name.unwrap_or_default().into(),
        all_namespaces: all,
    }))
    .await?;
    let parse = |list: &[String], what: &str| -> Result<Vec<Value>, String> {
        list.iter()
            .map(|s| {
                serde_json::from_str(s).map_err(|e| format!("meshd sent an unreadable {what}: {e}"))
            })
            .collect()
    };
    Ok((
        parse(&r.objects_json, "object")?,
        parse(&r.events_json, "event")?,
    ))
}

/// kubectl describe's Events section: Type, Reason, Age ("2m (x3 over 5m)"), From, Message.
fn events_section(events: &[Value], now: u64) -> String {
    if events.is_empty() {
        return format!("{:<25}<none>\n", "Events:");
    }
    let mut t = Table::new(&[
        ("Type", Align::Left),
        ("Reason", Align::Left),
        ("Age", Align::Left),
        ("From", Align::Left),
        ("Message", Align::Left),
    ]);
    let field = |e: &Value, k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    for e in events {
        let count = e.get("count").and_then(Value::as_u64).unwrap_or(1);
        let last = age(&field(e, "lastTimestamp"), now);
        let when = if count > 1 {
            format!(
                "{last} (x{count} over {})",
                age(&field(e, "firstTimestamp"), now)
            )
        } else {
            last
        };
        t.row(vec![
            field(e, "type"),
            field(e, "reason"),
            when,
            format!("meshd/{}", field(e, "source")),
            field(e, "message"),
        ]);
    }
    let body: String = t.render().lines().map(|l| format!("  {l}\n")).collect();
    format!("Events:\n{body}")
}

pub fn get(args: GetArgs) -> Result<(), String> {
    let objs = runtime()?.block_on(get_objects(
        &args.socket.socket,
        &args.kind,
        &args.namespace,
        args.all_namespaces,
        args.name.as_deref(),
    ))?;
    let pods = matches!(
        args.kind.as_str(),
        "po" | "pod" | "pods" | "ep" | "endpoints"
    );
    match args.output {
        Some(GetOutput::Json) => {
            let v = if args.name.is_some() && objs.len() == 1 {
                objs[0].clone()
            } else {
                serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objs})
            };
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        }
        Some(GetOutput::Yaml) => {
            let v = if args.name.is_some() && objs.len() == 1 {
                objs[0].clone()
            } else {
                serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objs})
            };
            print!("{}", resources::to_yaml(&v));
        }
        Some(GetOutput::Name) => {
            for o in &objs {
                let kind = kind_of(o).map(Kind::singular).unwrap_or("pod");
                println!("{kind}/{}", str_at(o, "/metadata/name"));
            }
        }
        out => {
            if objs.is_empty() {
                if args.all_namespaces {
                    eprintln!("No resources found");
                } else {
                    eprintln!("No resources found in {} namespace.", args.namespace);
                }
                return Ok(());
            }
            let wide = out == Some(GetOutput::Wide);
            let now = now_secs();
            let text = if pods {
                pods_table(&objs, args.all_namespaces)
            } else {
                table(&objs, args.all_namespaces, wide, now)
            };
            print!("{text}");
        }
    }
    Ok(())
}

fn kind_of(o: &Value) -> Option<Kind> {
    let k = o.get("kind")?.as_str()?;
    Kind::ALL.into_iter().find(|x| x.name() == k)
}

fn str_at<'a>(o: &'a Value, ptr: &str) -> &'a str {
    o.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Seconds since the epoch of an RFC 3339 UTC time as meshd writes it.
fn parse_rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[10] != b'T' {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (hh, mm, ss) = (n(11..13)?, n(14..16)?, n(17..19)?);
    // days_from_civil (Howard Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
}

/// kubectl's AGE: `45s`, `12m`, `5h`, `3d`.
fn age(created: &str, now: u64) -> String {
    let Some(t) = parse_rfc3339(created) else {
        return "<unknown>".into();
    };
    let s = now.saturating_sub(t);
    match s {
        0..120 => format!("{s}s"),
        120..7200 => format!("{}m", s / 60),
        7200..172_800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

fn decode(o: &Value) -> Option<Stored> {
    Stored::decode(&serde_json::to_vec(o).ok()?).ok()
}

fn ports_of(spec: &resources::ServiceSpec) -> String {
    let v: Vec<String> = spec
        .ports
        .iter()
        .map(|p| match p.node_port {
            Some(np) => format!("{}:{np}/{}", p.port, p.protocol.as_str()),
            None => format!("{}/{}", p.port, p.protocol.as_str()),
        })
        .collect();
    if v.is_empty() {
        "<none>".into()
    } else {
        v.join(",")
    }
}

fn external_ip(spec: &resources::ServiceSpec, s: &Stored) -> String {
    let st: resources::ServiceStatus = s.status_as();
    let mut ips: Vec<String> = st
        .load_balancer
        .ingress
        .iter()
        .map(|i| i.ip.to_string())
        .collect();
    ips.extend(spec.external_ips.iter().map(ToString::to_string));
    if ips.is_empty() {
        if spec.type_ == resources::ServiceType::LoadBalancer {
            "<pending>".into()
        } else {
            "<none>".into()
        }
    } else {
        ips.join(",")
    }
}

fn table(objs: &[Value], all_ns: bool, wide: bool, now: u64) -> String {
    let Some(kind) = objs.first().and_then(kind_of) else {
        return String::new();
    };
    let stored: Vec<Stored> = objs.iter().filter_map(decode).collect();
    let mut headers: Vec<(&'static str, Align)> = Vec::new();
    if all_ns && kind.namespaced() {
        headers.push(("NAMESPACE", Align::Left));
    }
    headers.push(("NAME", Align::Left));
    match kind {
        Kind::Service => {
            headers.extend([
                ("TYPE", Align::Left),
                ("CLUSTER-IP", Align::Left),
                ("EXTERNAL-IP", Align::Left),
                ("PORT(S)", Align::Left),
                ("AGE", Align::Left),
            ]);
            if wide {
                headers.push(("SELECTOR", Align::Left));
            }
        }
        Kind::NetworkPolicy => {
            headers.extend([("POD-SELECTOR", Align::Left), ("AGE", Align::Left)])
        }
        Kind::Namespace => headers.extend([("STATUS", Align::Left), ("AGE", Align::Left)]),
        Kind::IpPool => {
            headers.extend([
                ("TYPE", Align::Left),
                ("CIDRS", Align::Left),
                ("USED", Align::Right),
                ("TOTAL", Align::Right),
                ("DISABLED", Align::Left),
                ("AGE", Align::Left),
            ]);
        }
        Kind::BgpAdvertisement => {
            headers.extend([("ADVERTISES", Align::Left), ("AGE", Align::Left)])
        }
    }
    let mut t = Table::new(&headers);
    for s in &stored {
        let o = &s.object;
        let mut row = Vec::new();
        if all_ns && kind.namespaced() {
            row.push(o.namespace().to_string());
        }
        row.push(o.meta.name.clone());
        let a = age(&o.meta.creation_timestamp, now);
        match &o.spec {
            Spec::Service(spec) => {
                let cip = if spec.headless {
                    "None".into()
                } else {
                    spec.cluster_ips
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                };
                row.extend([
                    spec.type_.as_str().to_string(),
                    cip,
                    external_ip(spec, s),
                    ports_of(spec),
                    a,
                ]);
                if wide {
                    row.push(match &spec.selector {
                        Some(sel) => sel
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(","),
                        None => "<none>".into(),
                    });
                }
            }
            Spec::NetworkPolicy(p) => row.extend([p.pod_selector.to_display(), a]),
            Spec::Namespace => row.extend(["Active".to_string(), a]),
            Spec::IpPool(p) => row.extend([
                pool_type(p).to_string(),
                p.cidrs
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                s.status
                    .get("used")
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                s.status
                    .get("total")
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                p.disabled.to_string(),
                a,
            ]),
            Spec::BgpAdvertisement(b) => row.extend([
                b.advertisements
                    .iter()
                    .map(advertisement_summary)
                    .collect::<Vec<_>>()
                    .join(", "),
                a,
            ]),
        }
        t.row(row);
    }
    t.render()
}

fn labels_text(l: Option<&serde_json::Map<String, Value>>, skip: &[&str]) -> String {
    let v: Vec<String> = l
        .into_iter()
        .flatten()
        .filter(|(k, _)| !skip.contains(&k.as_str()))
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    if v.is_empty() {
        "<none>".into()
    } else {
        v.join(",")
    }
}

const POD_INTERNAL_LABELS: [&str; 2] = ["io.kubernetes.pod.namespace", "io.ironmesh.cluster"];

fn pods_table(objs: &[Value], all_ns: bool) -> String {
    let mut headers = Vec::new();
    if all_ns {
        headers.push(("NAMESPACE", Align::Left));
    }
    headers.extend([
        ("NAME", Align::Left),
        ("IP", Align::Left),
        ("NODE", Align::Left),
        ("CLUSTER", Align::Left),
        ("IDENTITY", Align::Right),
        ("LABELS", Align::Left),
    ]);
    let mut t = Table::new(&headers);
    for o in objs {
        let mut row = Vec::new();
        if all_ns {
            row.push(str_at(o, "/metadata/namespace").to_string());
        }
        row.extend([
            str_at(o, "/metadata/name").to_string(),
            str_at(o, "/status/podIP").to_string(),
            str_at(o, "/spec/nodeName").to_string(),
            str_at(o, "/cluster").to_string(),
            o.get("identity")
                .map(ToString::to_string)
                .unwrap_or_default(),
            labels_text(
                o.pointer("/metadata/labels").and_then(Value::as_object),
                &POD_INTERNAL_LABELS,
            ),
        ]);
        t.row(row);
    }
    t.render()
}

pub fn delete(args: DeleteArgs) -> Result<(), String> {
    let mut targets: Vec<(String, String, String)> = Vec::new();
    for (name, text) in read_manifests(&args.files)? {
        let docs = resources::parse_manifests(&text).map_err(|e| format!("error: {name}: {e}"))?;
        for d in docs {
            let o = resources::decode(&d).map_err(|e| format!("error: {name}: {e}"))?;
            targets.push((
                o.kind().plural().to_string(),
                o.namespace().to_string(),
                o.meta.name.clone(),
            ));
        }
    }
    if let Some((kind, names)) = args.args.split_first() {
        if names.is_empty() {
            return Err(format!(
                "error: resource(s) were provided, but no name was specified: ironctl delete {kind} NAME"
            ));
        }
        for n in names {
            targets.push((kind.clone(), args.namespace.clone(), n.clone()));
        }
    }
    if targets.is_empty() {
        return Err("error: must provide one or more resources by -f FILE or KIND NAME".into());
    }
    runtime()?.block_on(async {
        let mut c = connect(&args.socket.socket).await?;
        let mut failed = Vec::new();
        for (kind, ns, name) in targets {
            match call(c.delete(pb::DeleteRequest {
                kind: kind.clone(),
                namespace: ns,
                name: name.clone(),
            }))
            .await
            {
                Ok(r) => {
                    for d in r.deleted_objects {
                        println!("{d} deleted");
                    }
                }
                Err(e) => failed.push(format!("Error from server (NotFound): {e}")),
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(failed.join("\n"))
        }
    })
}

pub fn describe(args: DescribeArgs) -> Result<(), String> {
    let rt = runtime()?;
    let (objs, events) = rt.block_on(get_with_events(
        &args.socket.socket,
        &args.kind,
        &args.namespace,
        false,
        Some(&args.name),
    ))?;
    let s = objs
        .first()
        .and_then(decode)
        .ok_or_else(|| format!("{} {:?} could not be read", args.kind, args.name))?;
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{:<25}{v}\n", format!("{k}:")));
    let o = &s.object;
    line("Name", o.meta.name.clone());
    if o.kind().namespaced() {
        line("Namespace", o.namespace().to_string());
    }
    let kv = |m: &BTreeMap<String, String>| {
        if m.is_empty() {
            "<none>".to_string()
        } else {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        }
    };
    line("Labels", kv(&o.meta.labels));
    line("Annotations", kv(&o.meta.annotations));
    match &o.spec {
        Spec::Service(spec) => {
            line(
                "Selector",
                spec.selector
                    .as_ref()
                    .map(kv)
                    .unwrap_or_else(|| "<none>".into()),
            );
            line("Type", spec.type_.as_str().into());
            let ips: Vec<String> = spec.cluster_ips.iter().map(ToString::to_string).collect();
            line("IP Family Policy", format!("{:?}", spec.ip_family_policy));
            line(
                "IPs",
                if spec.headless {
                    "None".into()
                } else {
                    ips.join(",")
                },
            );
            line("LoadBalancer Ingress", external_ip(spec, &s));
            // The backends meshd serves now (this cluster's record, merged if global).
            let services = rt.block_on(async {
                let mut c = connect(&args.socket.socket).await?;
                call(c.list_services(pb::ListServicesRequest {})).await
            })?;
            // This node's record: the local one, the only one with selected backends.
            let rec = services.services.iter().find(|x| {
                x.namespace == o.namespace()
                    && x.name == o.meta.name
                    && !x.selected_backends.is_empty()
            });
            for p in &spec.ports {
                line(
                    "Port",
                    format!(
                        "{}  {}/{}",
                        p.name.clone().unwrap_or_else(|| "<unset>".into()),
                        p.port,
                        p.protocol.as_str()
                    ),
                );
                line(
                    "TargetPort",
                    format!("{}/{}", p.target_port, p.protocol.as_str()),
                );
                if let Some(np) = p.node_port {
                    line(
                        "NodePort",
                        format!(
                            "{}  {np}/{}",
                            p.name.clone().unwrap_or_else(|| "<unset>".into()),
                            p.protocol.as_str()
                        ),
                    );
                }
                let eps: Vec<String> = rec
                    .map(|r| {
                        r.selected_backends
                            .iter()
                            .filter(|b| {
                                b.port_name.is_empty() || Some(&b.port_name) == p.name.as_ref()
                            })
                            .map(|b| {
                                let at = if b.cluster.is_empty() {
                                    String::new()
                                } else {
                                    format!(" ({}/{})", b.cluster, b.node)
                                };
                                format!("{}:{}{at}", b.ip, b.port)
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                line(
                    "Endpoints",
                    if eps.is_empty() {
                        "<none>".into()
                    } else {
                        eps.join(",")
                    },
                );
            }
            line("Session Affinity", format!("{:?}", spec.session_affinity));
            if spec.type_ != resources::ServiceType::ClusterIP {
                line(
                    "External Traffic Policy",
                    format!("{:?}", spec.external_traffic_policy),
                );
            }
            line(
                "Internal Traffic Policy",
                format!("{:?}", spec.internal_traffic_policy),
            );
            if spec.global {
                line(
                    "Global",
                    format!("yes, affinity {:?}", spec.affinity).to_lowercase(),
                );
            }
            conditions(&mut out, &s);
        }
        Spec::NetworkPolicy(p) => {
            line("Created on", o.meta.creation_timestamp.clone());
            line("PodSelector", p.pod_selector.to_display());
            let pods = rt.block_on(get_objects(
                &args.socket.socket,
                "pods",
                o.namespace(),
                false,
                None,
            ))?;
            let selected: Vec<String> = pods
                .iter()
                .filter(|pod| {
                    let l = pod.pointer("/metadata/labels").and_then(Value::as_object);
                    p.pod_selector
                        .matches(|k| l.and_then(|l| l.get(k)).and_then(Value::as_str))
                        && str_at(pod, "/cluster")
                            == str_at(pod, "/metadata/labels/io.ironmesh.cluster")
                })
                .map(|pod| {
                    format!(
                        "{} ({})",
                        str_at(pod, "/status/podIP"),
                        str_at(pod, "/spec/nodeName")
                    )
                })
                .collect();
            line(
                "Selected pods",
                if selected.is_empty() {
                    "<none>".into()
                } else {
                    selected.join(", ")
                },
            );
            let types: Vec<String> = p
                .effective_types()
                .iter()
                .map(|t| format!("{t:?}"))
                .collect();
            line("Policy Types", types.join(", "));
            out.push_str(&format!(
                "{:<25}{}\n{:<25}{}\n",
                "Allowing ingress rules:",
                p.ingress.len(),
                "Allowing egress rules:",
                p.egress.len()
            ));
        }
        Spec::Namespace => line("Status", "Active".into()),
        Spec::IpPool(p) => {
            line("Type", pool_type(p).into());
            if p.type_ == resources::PoolType::PodCidr {
                let m = p.masks();
                line(
                    "Node Mask Size",
                    format!("IPv4 /{}, IPv6 /{}", m.ipv4, m.ipv6),
                );
                let nodes = s.status.get("nodes").and_then(|n| n.as_object());
                line(
                    "Node Blocks",
                    match nodes {
                        Some(n) if !n.is_empty() => n
                            .iter()
                            .map(|(node, b)| {
                                let blocks: Vec<&str> = b
                                    .as_array()
                                    .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
                                    .unwrap_or_default();
                                format!("{node}: {}", blocks.join(" "))
                            })
                            .collect::<Vec<_>>()
                            .join("; "),
                        _ => "<none>".into(),
                    },
                );
            }
            line(
                "CIDRs",
                p.cidrs
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            );
            line(
                "Service Selector",
                p.service_selector
                    .as_ref()
                    .map(|s| s.to_display())
                    .unwrap_or_else(|| "<all>".into()),
            );
            line(
                "Namespace Selector",
                p.namespace_selector
                    .as_ref()
                    .map(|s| s.to_display())
                    .unwrap_or_else(|| "<all>".into()),
            );
            line("Disabled", p.disabled.to_string());
            line(
                "Used",
                format!(
                    "{} of {}",
                    s.status
                        .get("used")
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                    s.status
                        .get("total")
                        .map(ToString::to_string)
                        .unwrap_or_default()
                ),
            );
        }
        Spec::BgpAdvertisement(b) => {
            let services =
                rt.block_on(get_objects(&args.socket.socket, "services", "", true, None))?;
            for (i, adv) in b.advertisements.iter().enumerate() {
                out.push_str(&format!("Advertisement {i}:\n"));
                let mut sub =
                    |k: &str, v: String| out.push_str(&format!("  {:<23}{v}\n", format!("{k}:")));
                sub("Type", advertisement_summary(adv));
                let at = &adv.attributes;
                let list = |v: Vec<String>| {
                    if v.is_empty() {
                        "<none>".to_string()
                    } else {
                        v.join(" ")
                    }
                };
                sub(
                    "Communities",
                    list(at.communities.iter().map(ToString::to_string).collect()),
                );
                sub(
                    "Large Communities",
                    list(
                        at.large_communities
                            .iter()
                            .map(ToString::to_string)
                            .collect(),
                    ),
                );
                sub(
                    "Local Preference",
                    at.local_preference
                        .map_or("<unset>".into(), |l| l.to_string()),
                );
                if let resources::AdvertisementType::Service { selector } = &adv.type_ {
                    sub("Selector", selector.to_display());
                    let chosen: Vec<String> = services
                        .iter()
                        .filter_map(decode)
                        .filter(|svc| {
                            let m = &svc.object.meta;
                            adv.selects_service(
                                m.namespace.as_deref().unwrap_or(""),
                                &m.name,
                                |k| m.labels.get(k).map(String::as_str),
                            )
                        })
                        .map(|svc| {
                            format!(
                                "{}/{} ({})",
                                svc.object.namespace(),
                                svc.object.meta.name,
                                match &svc.object.spec {
                                    Spec::Service(spec) => external_ip(spec, &svc),
                                    _ => String::new(),
                                }
                            )
                        })
                        .collect();
                    sub("Selected services", list(chosen));
                }
            }
        }
    }
    out.push_str(&events_section(&events, now_secs()));
    print!("{out}");
    Ok(())
}

/// `PodCIDR` or `Service(app=web)`: one advertisement in a line.
fn pool_type(p: &resources::IpPoolSpec) -> &'static str {
    match p.type_ {
        resources::PoolType::LoadBalancer => "LoadBalancer",
        resources::PoolType::PodCidr => "PodCIDR",
    }
}

fn advertisement_summary(a: &resources::Advertisement) -> String {
    match &a.type_ {
        resources::AdvertisementType::PodCidr => "PodCIDR".into(),
        resources::AdvertisementType::Service { selector } => {
            format!("Service({})", selector.to_display())
        }
    }
}

fn conditions(out: &mut String, s: &Stored) {
    let conds: Vec<resources::Condition> = s
        .status
        .get("conditions")
        .and_then(|c| serde_json::from_value(c.clone()).ok())
        .unwrap_or_default();
    if conds.is_empty() {
        out.push_str("Conditions:              <none>\n");
        return;
    }
    let mut t = Table::new(&[
        ("  Type", Align::Left),
        ("Status", Align::Left),
        ("Reason", Align::Left),
        ("Message", Align::Left),
    ]);
    for c in conds {
        t.row(vec![
            format!("  {}", c.type_),
            c.status,
            c.reason,
            c.message,
        ]);
    }
    out.push_str("Conditions:\n");
    out.push_str(&t.render());
}

#[cfg(test)]
mod tests {

    #[test]
    fn events_are_listed_as_kubectl_describe_does() {
        assert_eq!(events_section(&[], 0), format!("{:<25}<none>\n", "Events:"));
        let e = serde_json::json!({"type": "Warning", "reason": "PoolExhausted",
            "message": "every address of IPPool red-public is taken", "source": "n1",
            "count": 3, "firstTimestamp": "1970-01-01T00:00:00Z",
            "lastTimestamp": "1970-01-01T00:04:00Z"});
        let out = events_section(&[e], 300);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "Events:");
        assert!(lines[1].starts_with("  Type "), "{out}");
        assert!(
            lines[2].contains("Warning")
                && lines[2].contains("PoolExhausted")
                && lines[2].contains("60s (x3 over 5m)")
                && lines[2].contains("meshd/n1")
                && lines[2].ends_with("every address of IPPool red-public is taken"),
            "{out}"
        );
    }

    use super::*;

    #[test]
    fn ages_read_like_kubectl() {
        let t = parse_rfc3339("2026-12-07T13:45:00Z").unwrap();
        assert_eq!(t, 1_796_651_100);
        assert_eq!(age("2026-12-07T13:45:00Z", t + 5), "5s");
        assert_eq!(age("2026-12-07T13:45:00Z", t + 600), "10m");
        assert_eq!(age("2026-12-07T13:45:00Z", t + 3 * 3600), "3h");
        assert_eq!(age("2026-12-07T13:45:00Z", t + 3 * 86_400), "3d");
        assert_eq!(age("garbage", t), "<unknown>");
    }

    #[test]
    fn services_print_like_kubectl_get_svc() {
        let doc = serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "shop", "creationTimestamp": "2026-12-07T13:45:00Z"},
            "spec": {"type": "LoadBalancer", "selector": {"app": "web"}, "clusterIP": "10.96.0.10",
                     "ports": [{"port": 80, "targetPort": 8080}, ]},
            "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.1"}]}}
        });
        let pending = serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "api", "namespace": "shop", "creationTimestamp": "2026-12-07T13:45:00Z"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.11", "ports": [{"port": 443, "nodePort": 30443}]}
        });
        let out = table(&[doc, pending], true, true, 1_796_651_160);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            [
                "NAMESPACE",
                "NAME",
                "TYPE",
                "CLUSTER-IP",
                "EXTERNAL-IP",
                "PORT(S)",
                "AGE",
                "SELECTOR"
            ]
        );
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            [
                "shop",
                "web",
                "LoadBalancer",
                "10.96.0.10",
                "203.0.113.1",
                "80/TCP",
                "60s",
                "app=web"
            ]
        );
        assert_eq!(
            lines[2].split_whitespace().collect::<Vec<_>>(),
            [
                "shop",
                "api",
                "LoadBalancer",
                "10.96.0.11",
                "<pending>",
                "443:30443/TCP",
                "60s",
                "<none>"
            ]
        );
    }
}
