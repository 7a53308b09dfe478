//! The commands: ADD, DEL, CHECK, VERSION (and 1.1.0's STATUS and GC), wiring the pure
//! parts (config, IPAM, result) to the netlink edge.
//!
//! The attachment (Cilium-like routing, no bridge, no address on the host side):
//! - veth pair: `<CNI_IFNAME>` in the pod, `im<hash>` on the host (see [`host_ifname`]);
//! - pod: its address as a host prefix (/32, /128), an on-link route to the gateway (the
//!   PodCIDR's first address), a permanent neighbour entry mapping the gateway to the host
//!   veth's MAC (nothing has to answer ARP/ND for it), and a default route via the gateway;
//! - host: `<pod ip>/32 dev im<hash>`; the node forwards between pods and to the world.
//!
//! The plugin does not talk to meshd: ADD writes an endpoint record (see [`crate::endpoint`])
//! and DEL removes it; meshd watches those records (`mesh.cni_endpoints_dir`), registers the
//! endpoint and attaches the datapath programs to the host veth.

use std::collections::BTreeSet;
use std::fs::File;
use std::net::IpAddr;
use std::path::Path;

use crate::config::{self, Command, Env, NetConf, check_version};
use crate::endpoint::{self, Endpoint, host_ifname};
use crate::error::{CniError, Code, Result};
use crate::ipam::{Allocation, Ipam, Outcome};
use crate::netlink::{Link, Netlink, mac_string};
use crate::netns::{self, NetnsId};
use crate::result::{self, Attachment, CniResult, default_route, host_prefix};
use ipnet::IpNet;

/// Runs one invocation: environment through `get`, `stdin` the network configuration.
/// Returns what to print on stdout on success.
pub fn run(get: impl Fn(&str) -> Option<String>, stdin: &[u8]) -> Result<Option<String>> {
    let env = Env::from_lookup(get)?;
    match env.command {
        Command::Version => Ok(Some(result::version_json())),
        Command::Add => {
            let conf = NetConf::parse(stdin)?;
            let r = add(&env, &conf)?;
            Ok(Some(serde_json::to_string(&r).expect("result serializes")))
        }
        Command::Del => {
            let conf = NetConf::parse(stdin)?;
            del(&env, &conf).map(|()| None)
        }
        Command::Check => {
            let conf = NetConf::parse(stdin)?;
            check(&env, &conf).map(|()| None)
        }
        Command::Status => {
            let conf = NetConf::parse(stdin)?;
            status(&conf).map(|()| None)
        }
        Command::Gc => {
            let conf = NetConf::parse(stdin)?;
            gc(&conf).map(|()| None)
        }
    }
}

/// Opens the container's netns (`CNI_NETNS`), refusing anything that is not a network
/// namespace, and the plugin's own: the host's. Attaching "a pod" there would give the host
/// the pod's address and replace its default route, and DEL would then delete that route.
fn open_netns(path: &Path, code: Code) -> Result<File> {
    let (ns, id) = netns::open(path).map_err(|e| {
        CniError::new(
            code,
            format!(
                "CNI_NETNS: cannot open {} as a network namespace",
                path.display()
            ),
        )
        .with_details(e.to_string())
    })?;
    if is_host(id)? {
        return Err(host_netns_error(path));
    }
    Ok(ns)
}

fn is_host(id: NetnsId) -> Result<bool> {
    let own = NetnsId::own()
        .map_err(|e| CniError::internal("reading the plugin's own netns /proc/self/ns/net", e))?;
    Ok(id == own)
}

fn host_netns_error(path: &Path) -> CniError {
    CniError::new(
        Code::InvalidEnvironment,
        format!(
            "CNI_NETNS: {} is the plugin's own (host) network namespace, not a container's",
            path.display()
        ),
    )
    .with_details("pass the container's network namespace (e.g. /var/run/netns/<name> or /proc/<pid>/ns/net); nothing was changed")
}

fn ipam(conf: &NetConf) -> Result<Ipam> {
    Ipam::open(conf.network_dir().join("ipam"))
}

/// ADD for an attachment that exists already: the same netns gets the same attachment again
/// (idempotent); another netns is refused, since recreating the pair there would cut the
/// first one off (its veth deleted) and hand its addresses to the second.
fn refuse_other_netns(env: &Env, conf: &NetConf, netns: &Path, ns: &File) -> Result<()> {
    let Some(ep) = endpoint::read(&endpoint::path(
        &conf.network_dir(),
        &env.container_id,
        &env.ifname,
    ))?
    else {
        return Ok(());
    };
    let new = NetnsId::of(ns)
        .map_err(|e| CniError::internal(format!("CNI_NETNS: reading {}", netns.display()), e))?;
    let old = netns::open(Path::new(&ep.netns)).map(|(_, id)| id);
    if matches!(old, Ok(id) if id == new) {
        return Ok(());
    }
    let state = match old {
        Ok(_) => "a different namespace".to_string(),
        Err(e) => format!("unusable now: {e}"),
    };
    Err(CniError::new(
        Code::InvalidEnvironment,
        format!(
            "CNI_NETNS: container {} interface {} is already attached in network namespace {} ({state}), not {}",
            env.container_id,
            env.ifname,
            ep.netns,
            netns.display()
        ),
    )
    .with_details("DEL the existing attachment first, or use another CNI_CONTAINERID/CNI_IFNAME"))
}

/// ADD: allocate, attach, record. On failure, gives back what it took.
pub fn add(env: &Env, conf: &NetConf) -> Result<CniResult> {
    let netns = env
        .netns
        .as_deref()
        .expect("Env requires CNI_NETNS for ADD");
    // Everything from the runtime is checked before anything is taken or changed.
    let prev = conf
        .prev_result
        .as_ref()
        .map(result::parse_prev)
        .transpose()?;
    let requested = conf.requested_ips(env)?;
    let ns = open_netns(netns, Code::InvalidEnvironment)?;
    refuse_other_netns(env, conf, netns, &ns)?;
    let ipam = ipam(conf)?;
    let namespace = env.args.pod_namespace.as_deref();
    // The node's blocks of the pod's pool; when they are full, meshd is asked once for another.
    let mut current = conf.clone();
    let mut asked = false;
    let (allocations, fresh) = loop {
        let groups = current.groups_for(namespace)?;
        let blocks: Vec<Vec<IpNet>> = groups.iter().map(|g| g.blocks.clone()).collect();
        match ipam.allocate_groups(&blocks, &requested, &env.container_id, &env.ifname)? {
            Outcome::Done(a, fresh) => break (a, fresh),
            Outcome::Full(i) => match &groups[i].pool {
                Some(pool) if !asked => {
                    asked = true;
                    crate::grow::ask(
                        &conf.network_dir(),
                        pool,
                        &groups[i],
                        &env.container_id,
                        crate::grow::WAIT,
                    )?;
                    current = current.reload_meshd()?;
                }
                _ => return Err(crate::ipam::no_free_address(&groups[i].blocks)),
            },
        }
    };
    let conf = &current;
    let pools = conf.pod_cidrs();
    let give_back = |e: CniError| {
        if fresh {
            let _ = ipam.release(&env.container_id, &env.ifname);
        }
        e
    };
    // Never hand out an address outside the node's PodCIDRs (nor its gateway/broadcast).
    if let Some(bad) = allocations
        .iter()
        .find(|a| !pools.contains(&a.pool) || !crate::ipam::is_pod_address(a.pool, a.address))
    {
        return Err(give_back(CniError::new(
            Code::Internal,
            format!(
                "ipam: refusing {} (not a pod address of the configured PodCIDRs {pools:?})",
                bad.address
            ),
        )));
    }
    let host = Netlink::new().map_err(give_back)?;
    let attached = attach(env, conf, &host, &ns, &allocations).and_then(|a| {
        let ep = Endpoint {
            container_id: env.container_id.clone(),
            ifname: env.ifname.clone(),
            netns: netns.display().to_string(),
            host_ifname: a.host_ifname.clone(),
            addresses: allocations.iter().map(|a| a.address).collect(),
            labels: endpoint::labels(env, conf),
            pod_uid: env.args.pod_uid.clone(),
            ports: conf.runtime_config.ports.clone(),
        };
        endpoint::write(
            &endpoint::path(&conf.network_dir(), &env.container_id, &env.ifname),
            &ep,
        )?;
        Ok(a)
    });
    match attached {
        Ok(a) => Ok(result::build(conf, prev.as_ref(), &a)),
        Err(e) => {
            if let Ok(Some(l)) = host.link(&host_ifname(&env.container_id, &env.ifname)) {
                let _ = host.del_link(l.index);
            }
            Err(give_back(e))
        }
    }
}

fn attach(
    env: &Env,
    conf: &NetConf,
    host: &Netlink,
    ns: &File,
    allocations: &[Allocation],
) -> Result<Attachment> {
    let pod = Netlink::new_in(ns)?;
    let host_name = host_ifname(&env.container_id, &env.ifname);
    // A repeated ADD (or a crashed one): start the pair over; the addresses stay the same.
    if let Some(l) = host.link(&host_name)? {
        host.del_link(l.index)?;
    }
    if pod.link(&env.ifname)?.is_some() {
        return Err(CniError::new(
            Code::Internal,
            format!(
                "CNI_IFNAME: {} already exists in the container's namespace",
                env.ifname
            ),
        ));
    }
    host.add_veth(&host_name, &env.ifname, ns, conf.mtu)?;
    let missing = |name: &str| {
        CniError::new(
            Code::Internal,
            format!("veth end {name} vanished after creation"),
        )
    };
    let hl = host.link(&host_name)?.ok_or_else(|| missing(&host_name))?;
    let pl = pod.link(&env.ifname)?.ok_or_else(|| missing(&env.ifname))?;
    host.set_up(hl.index)?;
    pod.set_up(pl.index)?;
    for a in allocations {
        pod.add_addr(pl.index, host_prefix(a.address))?;
        pod.add_route(host_prefix(a.gateway), pl.index, None)?;
        pod.add_neigh(pl.index, a.gateway, &hl.mac)?;
        pod.add_route(default_route(a.address), pl.index, Some(a.gateway))?;
        host.add_route(host_prefix(a.address), hl.index, None)?;
    }
    Ok(Attachment {
        host_ifname: host_name,
        host_mac: mac_string(&hl.mac),
        ifname: env.ifname.clone(),
        mac: mac_string(&pl.mac),
        sandbox: env
            .netns
            .as_deref()
            .expect("ADD has a netns")
            .display()
            .to_string(),
        mtu: conf.mtu,
        allocations: allocations.to_vec(),
    })
}

/// DEL: removes the veth pair (and with it the pod side and all routes through it), the
/// allocation and the endpoint record. Whatever is already gone is skipped.
///
/// A `CNI_NETNS` that is the plugin's own (host) namespace changes nothing: ADD never
/// attaches there, and deleting "its" veth could take host routes with it.
pub fn del(env: &Env, conf: &NetConf) -> Result<()> {
    if let Some(path) = env.netns.as_deref()
        && let Ok((_, id)) = netns::open(path)
        && is_host(id)?
    {
        eprintln!(
            "ironmesh-cni: DEL: {}; left everything as it is",
            host_netns_error(path).msg
        );
        return Ok(());
    }
    release(conf, &env.container_id, &env.ifname)
}

fn release(conf: &NetConf, container_id: &str, ifname: &str) -> Result<()> {
    let host = Netlink::new()?;
    if let Some(l) = host.link(&host_ifname(container_id, ifname))? {
        host.del_link(l.index)?;
    }
    ipam(conf)?.release(container_id, ifname)?;
    endpoint::remove(&endpoint::path(&conf.network_dir(), container_id, ifname))
}

fn check_failed(msg: String) -> CniError {
    CniError::new(Code::CheckFailed, msg)
}

/// CHECK: the attachment is as ADD made it.
pub fn check(env: &Env, conf: &NetConf) -> Result<()> {
    let netns = env
        .netns
        .as_deref()
        .expect("Env requires CNI_NETNS for CHECK");
    let ns = open_netns(netns, Code::UnknownContainer)?;
    let held: Vec<IpAddr> = ipam(conf)?.lookup(&env.container_id, &env.ifname)?;
    if held.is_empty() {
        return Err(check_failed(format!(
            "ipam: no address is allocated to container {} interface {}",
            env.container_id, env.ifname
        )));
    }
    if let Some(prev) = &conf.prev_result {
        // The chain's final result: other plugins' addresses may be there too, ours must.
        let prev: CniResult = result::parse_prev(prev)?;
        let listed: BTreeSet<IpAddr> = prev.ips.iter().map(|i| i.address.addr()).collect();
        let missing: Vec<&IpAddr> = held.iter().filter(|a| !listed.contains(a)).collect();
        if !missing.is_empty() {
            return Err(check_failed(format!(
                "prevResult.ips: {listed:?} lacks {missing:?}, which the allocation holds"
            )));
        }
    }
    let host = Netlink::new()?;
    let pod = Netlink::new_in(&ns)?;
    let host_name = host_ifname(&env.container_id, &env.ifname);
    let expect_link = |l: Option<Link>, name: &str, side: &str| -> Result<Link> {
        let l = l.ok_or_else(|| check_failed(format!("{side} interface {name} is missing")))?;
        if !l.veth || !l.up {
            return Err(check_failed(format!(
                "{side} interface {name} is not an up veth"
            )));
        }
        Ok(l)
    };
    let hl = expect_link(host.link(&host_name)?, &host_name, "host")?;
    let pl = expect_link(pod.link(&env.ifname)?, &env.ifname, "container")?;
    let addrs = pod.addrs(pl.index)?;
    let pod_routes = pod.routes()?;
    let host_routes = host.routes()?;
    // Every address held is a pod address of one of the node's blocks, with its routes.
    let blocks = conf.pod_cidrs();
    for ip in held.iter().copied() {
        let Some(pool) = blocks
            .iter()
            .copied()
            .find(|b| crate::ipam::is_pod_address(*b, ip))
        else {
            return Err(check_failed(format!(
                "ipam: {ip} is not a pod address of this node's PodCIDRs {blocks:?}"
            )));
        };
        let gw = crate::ipam::gateway(pool);
        if !addrs.contains(&host_prefix(ip)) {
            return Err(check_failed(format!(
                "address {} is missing on {} in the container",
                host_prefix(ip),
                env.ifname
            )));
        }
        let has = |routes: &[crate::netlink::Route], dst, gw, oif| {
            routes
                .iter()
                .any(|r| r.dst == dst && r.gateway == gw && r.oif == Some(oif))
        };
        if !has(&pod_routes, host_prefix(gw), None, pl.index) {
            return Err(check_failed(format!(
                "container route {gw} dev {} is missing",
                env.ifname
            )));
        }
        if !has(&pod_routes, default_route(ip), Some(gw), pl.index) {
            return Err(check_failed(format!(
                "container default route via {gw} dev {} is missing",
                env.ifname
            )));
        }
        if !has(&host_routes, host_prefix(ip), None, hl.index) {
            return Err(check_failed(format!(
                "host route {} dev {host_name} is missing",
                host_prefix(ip)
            )));
        }
    }
    Ok(())
}

/// STATUS (1.1.0): ready when the data dir is usable.
pub fn status(conf: &NetConf) -> Result<()> {
    check_version(&conf.cni_version)?;
    ipam(conf).map(drop).map_err(|e| {
        CniError::new(Code::NotAvailable, "ipam: data dir is not usable")
            .with_details(e.to_string())
    })
}

/// GC (1.1.0): frees every attachment of this network not in `cni.dev/valid-attachments`.
/// Without that list nothing is known to be stale, so nothing is freed (and the runtime is
/// told why). A failure to free one attachment does not stop the others (spec "GC").
pub fn gc(conf: &NetConf) -> Result<()> {
    let Some(valid) = &conf.valid_attachments else {
        return Err(CniError::new(
            Code::InvalidNetworkConfig,
            "cni.dev/valid-attachments: missing, so GC freed nothing",
        )
        .with_details(
            "GC frees the attachments not in the runtime's list of valid ones; \
             send the list (an empty list frees every attachment of the network)",
        ));
    };
    let valid: BTreeSet<(&str, &str)> = valid
        .iter()
        .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
        .collect();
    let stale: BTreeSet<(String, String)> = ipam(conf)?
        .owners()?
        .into_iter()
        .map(|o| (o.container_id, o.ifname))
        .filter(|(id, ifname)| {
            config::valid_container_id(id)
                && config::valid_ifname(ifname)
                && !valid.contains(&(id.as_str(), ifname.as_str()))
        })
        .collect();
    let mut failed = Vec::new();
    for (id, ifname) in stale {
        if let Err(e) = release(conf, &id, &ifname) {
            failed.push(format!("{id}/{ifname}: {e}"));
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(CniError::new(
            Code::Io,
            format!("GC: could not free {} stale attachment(s)", failed.len()),
        )
        .with_details(failed.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gc_without_valid_attachments_frees_nothing_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let conf = NetConf::parse(
            serde_json::json!({
                "cniVersion": "1.1.0", "name": "mesh", "type": "ironmesh-cni",
                "dataDir": dir.path(),
                "ipam": {"type": "ironmesh", "podCIDR": "10.244.1.0/24"}
            })
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        let ipam = ipam(&conf).unwrap();
        ipam.allocate(&conf.pod_cidrs(), "live", "eth0").unwrap();
        let e = gc(&conf).unwrap_err();
        assert_eq!(e.code, Code::InvalidNetworkConfig);
        assert!(
            e.msg.starts_with("cni.dev/valid-attachments: missing"),
            "{e}"
        );
        assert_eq!(ipam.lookup("live", "eth0").unwrap().len(), 1);
    }
}
