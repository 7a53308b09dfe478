//! The CNI plugin (`ironmesh-cni`) driven exactly as a container runtime calls it.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::error::{LabError, Result, io_err};
use crate::lab::Host;

/// Runs the plugin once in `node`'s netns for pod `pod` (container id and pod name `id`):
/// `CNI_COMMAND=command` and the rest of the CNI environment, `conf` on stdin.
fn run(
    command: &str,
    cni: &Path,
    node: &Host,
    pod: &Host,
    id: &str,
    conf: &serde_json::Value,
) -> Result<Output> {
    run_in(command, cni, node, pod, id, "default", conf)
}

/// [`run`] for a pod of Kubernetes namespace `namespace` (`K8S_POD_NAMESPACE`).
fn run_in(
    command: &str,
    cni: &Path,
    node: &Host,
    pod: &Host,
    id: &str,
    namespace: &str,
    conf: &serde_json::Value,
) -> Result<Output> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", node.netns()])
        .arg(cni)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", format!("/var/run/netns/{}", pod.netns()))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/opt/cni/bin")
        .env(
            "CNI_ARGS",
            format!("K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={id}"),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io_err("starting the CNI plugin"))?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(conf.to_string().as_bytes())
        .map_err(io_err("writing the CNI config"))?;
    child
        .wait_with_output()
        .map_err(io_err("waiting for the CNI plugin"))
}

/// One CNI ADD in `node`'s netns for pod `pod` (container id and pod name `id`): the CNI
/// environment, `conf` on stdin. Returns the pod's IPv4 address and the host-side veth.
pub fn add(
    cni: &Path,
    node: &Host,
    pod: &Host,
    id: &str,
    conf: &serde_json::Value,
) -> Result<(Ipv4Addr, String)> {
    add_in(cni, node, pod, id, "default", conf)
}

/// [`add`] for a pod of Kubernetes namespace `namespace`.
pub fn add_in(
    cni: &Path,
    node: &Host,
    pod: &Host,
    id: &str,
    namespace: &str,
    conf: &serde_json::Value,
) -> Result<(Ipv4Addr, String)> {
    let out = run_in("ADD", cni, node, pod, id, namespace, conf)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let bad = |what: &str| {
        LabError::Invalid(format!(
            "CNI ADD {id}: {what}: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    };
    if !out.status.success() {
        return Err(bad("failed"));
    }
    let r: serde_json::Value = serde_json::from_str(&stdout).map_err(|_| bad("not JSON"))?;
    let ip = r["ips"][0]["address"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| bad("no IPv4 address in the result"))?;
    let host_if = r["interfaces"]
        .as_array()
        .and_then(|l| l.iter().find(|i| i.get("sandbox").is_none()))
        .and_then(|i| i["name"].as_str())
        .ok_or_else(|| bad("no host-side interface in the result"))?;
    Ok((ip, host_if.to_string()))
}

/// One CNI DEL in `node`'s netns for pod `pod` (container id `id`), as a runtime calls it.
pub fn del(cni: &Path, node: &Host, pod: &Host, id: &str, conf: &serde_json::Value) -> Result<()> {
    let out = run("DEL", cni, node, pod, id, conf)?;
    if !out.status.success() {
        return Err(LabError::Invalid(format!(
            "CNI DEL {id}: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

/// The network config a runtime hands the plugin: the `ironmesh` IPAM on `pod_cidr`, the
/// plugin's state under `data_dir`, the pod's `labels` (`runtimeConfig.labels`).
pub fn conf(
    data_dir: &Path,
    pod_cidr: &str,
    mtu: u32,
    labels: &[(&str, &str)],
) -> serde_json::Value {
    let labels: serde_json::Map<String, serde_json::Value> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
        .collect();
    serde_json::json!({
        "cniVersion": "1.1.0",
        "name": "mesh",
        "type": "ironmesh-cni",
        "dataDir": data_dir,
        "mtu": mtu,
        "ipam": {"type": "ironmesh", "podCIDR": pod_cidr},
        "runtimeConfig": {"labels": labels},
    })
}

/// [`conf`] without a PodCIDR: the plugin takes the node's PodCIDRs from the file meshd
/// writes into `<data_dir>/mesh/` (no copy of the PodCIDR by hand).
pub fn conf_from_meshd(data_dir: &Path, mtu: u32, labels: &[(&str, &str)]) -> serde_json::Value {
    let mut c = conf(data_dir, "", mtu, labels);
    c["ipam"] = serde_json::json!({"type": "ironmesh"});
    c
}
