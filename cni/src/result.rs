//! The ADD result (spec "Success" result) and the VERSION output.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::config::{CURRENT_VERSION, Dns, NetConf, SUPPORTED_VERSIONS};
use crate::error::{CniError, Code, Result};
use crate::ipam::Allocation;

/// Fields of a result entry this plugin does not interpret (1.1.0's `socketPath`, `pciID`,
/// route `mtu`/`advmss`/`priority`/`table`/`scope`, whatever later versions add): kept, so
/// a `prevResult` from an earlier plugin of a chain passes through unchanged.
pub type Extra = BTreeMap<String, serde_json::Value>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The netns path for interfaces inside the container; absent for host interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// Only in 0.4.0 results ("4" or "6").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub address: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniResult {
    pub cni_version: String,
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
}

/// What ADD made, as input to the result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub host_ifname: String,
    pub host_mac: String,
    pub ifname: String,
    pub mac: String,
    pub sandbox: String,
    pub mtu: Option<u32>,
    pub allocations: Vec<Allocation>,
}

/// The host prefix length of an address's family (/32 or /128): pods get host routes only.
pub fn host_prefix(ip: IpAddr) -> IpNet {
    IpNet::new(ip, if ip.is_ipv4() { 32 } else { 128 }).expect("full-length prefix is valid")
}

/// The default route of an address's family.
pub fn default_route(ip: IpAddr) -> IpNet {
    if ip.is_ipv4() {
        "0.0.0.0/0".parse().expect("valid")
    } else {
        "::/0".parse().expect("valid")
    }
}

/// Reads `prevResult` (what the plugins before this one in a chain returned) without
/// trusting it: it must be a result, and every `ips[].interface` must index its
/// `interfaces`.
pub fn parse_prev(prev: &serde_json::Value) -> Result<CniResult> {
    let r: CniResult = serde_json::from_value(prev.clone()).map_err(|e| {
        CniError::new(Code::Decode, "prevResult: not a CNI result").with_details(e.to_string())
    })?;
    for (i, ip) in r.ips.iter().enumerate() {
        if let Some(n) = ip.interface
            && n >= r.interfaces.len()
        {
            return Err(CniError::new(
                Code::Decode,
                format!(
                    "prevResult.ips[{i}].interface: {n} is not an index of prevResult.interfaces ({} entries)",
                    r.interfaces.len()
                ),
            ));
        }
    }
    Ok(r)
}

fn union<T: Clone + PartialEq>(first: &[T], then: &[T]) -> Vec<T> {
    let mut out = first.to_vec();
    for t in then {
        if !out.contains(t) {
            out.push(t.clone());
        }
    }
    out
}

/// The earlier plugins' DNS with ours added: their nameservers, search domains and options
/// first, then ours not already there; their domain unless they set none.
fn merge_dns(prev: &Dns, ours: &Dns) -> Dns {
    Dns {
        nameservers: union(&prev.nameservers, &ours.nameservers),
        domain: prev.domain.clone().or_else(|| ours.domain.clone()),
        search: union(&prev.search, &ours.search),
        options: union(&prev.options, &ours.options),
    }
}

/// Builds the spec result: the `prev` result's interfaces, IPs, routes and DNS as they are
/// (a chain: CNI spec "ADD"), then ours: the host veth and the pod's interface appended to
/// `interfaces`, one IP per pool on the pod's interface (as a host address, /32 or /128,
/// its `interface` the index in the merged list), a default route per family.
pub fn build(conf: &NetConf, prev: Option<&CniResult>, a: &Attachment) -> CniResult {
    let legacy = conf.legacy_result();
    let mut interfaces = prev.map(|p| p.interfaces.clone()).unwrap_or_default();
    let pod_index = interfaces.len() + 1;
    interfaces.push(Interface {
        name: a.host_ifname.clone(),
        mac: a.host_mac.clone(),
        mtu: None,
        sandbox: None,
        extra: Extra::new(),
    });
    interfaces.push(Interface {
        name: a.ifname.clone(),
        mac: a.mac.clone(),
        mtu: if legacy { None } else { a.mtu },
        sandbox: Some(a.sandbox.clone()),
        extra: Extra::new(),
    });
    let mut ips = prev.map(|p| p.ips.clone()).unwrap_or_default();
    ips.extend(a.allocations.iter().map(|al| IpConfig {
        version: legacy.then(|| if al.address.is_ipv4() { "4" } else { "6" }.into()),
        address: host_prefix(al.address),
        gateway: Some(al.gateway),
        interface: Some(pod_index),
        extra: Extra::new(),
    }));
    let mut routes = prev.map(|p| p.routes.clone()).unwrap_or_default();
    routes.extend(a.allocations.iter().map(|al| Route {
        dst: default_route(al.address),
        gw: Some(al.gateway),
        extra: Extra::new(),
    }));
    let dns = match prev {
        Some(p) => merge_dns(&p.dns, &conf.dns),
        None => conf.dns.clone(),
    };
    CniResult {
        cni_version: conf.cni_version.clone(),
        interfaces,
        ips,
        routes,
        dns,
    }
}

/// VERSION output (spec "VERSION").
pub fn version_json() -> String {
    serde_json::json!({
        "cniVersion": CURRENT_VERSION,
        "supportedVersions": SUPPORTED_VERSIONS,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::gateway;

    fn conf(version: &str) -> NetConf {
        NetConf::parse(
            format!(
                r#"{{"cniVersion":"{version}","name":"mesh","type":"ironmesh-cni",
                "ipam":{{"type":"ironmesh","podCIDR":"10.244.1.0/24","podCIDRv6":"fd00:244:1::/64"}},
                "dns":{{"nameservers":["10.96.0.10"],"search":["svc.cluster.local"]}}}}"#
            )
            .as_bytes(),
        )
        .unwrap()
    }

    fn attachment() -> Attachment {
        let pools: Vec<IpNet> = conf("1.1.0").pod_cidrs();
        Attachment {
            host_ifname: "im0123456789a".into(),
            host_mac: "aa:bb:cc:dd:ee:01".into(),
            ifname: "eth0".into(),
            mac: "aa:bb:cc:dd:ee:02".into(),
            sandbox: "/var/run/netns/pod".into(),
            mtu: Some(1450),
            allocations: pools
                .iter()
                .map(|p| Allocation {
                    pool: *p,
                    address: if p.addr().is_ipv4() {
                        "10.244.1.2".parse().unwrap()
                    } else {
                        "fd00:244:1::2".parse().unwrap()
                    },
                    gateway: gateway(*p),
                })
                .collect(),
        }
    }

    #[test]
    fn result_matches_the_spec_shape() {
        let r = build(&conf("1.1.0"), None, &attachment());
        let json: serde_json::Value = serde_json::to_value(&r).unwrap();
        let want = serde_json::json!({
            "cniVersion": "1.1.0",
            "interfaces": [
                {"name": "im0123456789a", "mac": "aa:bb:cc:dd:ee:01"},
                {"name": "eth0", "mac": "aa:bb:cc:dd:ee:02", "mtu": 1450, "sandbox": "/var/run/netns/pod"}
            ],
            "ips": [
                {"address": "10.244.1.2/32", "gateway": "10.244.1.1", "interface": 1},
                {"address": "fd00:244:1::2/128", "gateway": "fd00:244:1::1", "interface": 1}
            ],
            "routes": [
                {"dst": "0.0.0.0/0", "gw": "10.244.1.1"},
                {"dst": "::/0", "gw": "fd00:244:1::1"}
            ],
            "dns": {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]}
        });
        assert_eq!(json, want);
        // And it reads back (CHECK gets it as prevResult).
        let back: CniResult = serde_json::from_value(json).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn legacy_result_has_ip_versions() {
        let r = build(&conf("0.4.0"), None, &attachment());
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["cniVersion"], "0.4.0");
        assert_eq!(json["ips"][0]["version"], "4");
        assert_eq!(json["ips"][1]["version"], "6");
    }

    #[test]
    fn version_output() {
        let v: serde_json::Value = serde_json::from_str(&version_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"cniVersion": "1.1.0", "supportedVersions": ["0.4.0", "1.0.0", "1.1.0"]})
        );
    }

    #[test]
    fn a_chained_result_keeps_the_previous_one_and_indexes_ours_after_it() {
        let prev = parse_prev(&serde_json::json!({
            "cniVersion": "1.1.0",
            "interfaces": [{"name": "bond0", "sandbox": "/var/run/netns/pod", "socketPath": "/s"}],
            "ips": [{"address": "192.168.5.2/24", "interface": 0}],
            "routes": [{"dst": "192.168.6.0/24", "gw": "192.168.5.1", "priority": 10}],
            "dns": {"nameservers": ["192.168.5.53", "10.96.0.10"], "options": ["ndots:2"]}
        }))
        .unwrap();
        let r = build(&conf("1.1.0"), Some(&prev), &attachment());
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(
            json["interfaces"][0],
            serde_json::json!({"name": "bond0", "sandbox": "/var/run/netns/pod", "socketPath": "/s"})
        );
        assert_eq!(json["interfaces"][1]["name"], "im0123456789a");
        assert_eq!(json["interfaces"][2]["name"], "eth0");
        assert_eq!(
            json["ips"][0],
            serde_json::json!({"address": "192.168.5.2/24", "interface": 0})
        );
        assert_eq!(json["ips"][1]["interface"], 2);
        assert_eq!(json["ips"][2]["interface"], 2);
        assert_eq!(
            json["routes"][0],
            serde_json::json!({"dst": "192.168.6.0/24", "gw": "192.168.5.1", "priority": 10})
        );
        assert_eq!(json["routes"].as_array().unwrap().len(), 3);
        assert_eq!(
            json["dns"],
            serde_json::json!({
                "nameservers": ["192.168.5.53", "10.96.0.10"],
                "search": ["svc.cluster.local"],
                "options": ["ndots:2"]
            })
        );
        // Without a previous result: exactly the unchained one.
        let alone = build(&conf("1.1.0"), None, &attachment());
        assert_eq!(alone.interfaces.len(), 2);
        assert_eq!(alone.ips[0].interface, Some(1));
    }

    #[test]
    fn a_prev_result_is_checked_before_use() {
        let e = parse_prev(&serde_json::json!({"cniVersion": "1.1.0", "ips": "x"})).unwrap_err();
        assert_eq!(e.code, Code::Decode);
        assert!(e.msg.contains("prevResult"), "{e}");
        let e = parse_prev(&serde_json::json!({
            "cniVersion": "1.1.0",
            "interfaces": [{"name": "a"}],
            "ips": [{"address": "10.0.0.2/24", "interface": 1}]
        }))
        .unwrap_err();
        assert!(e.msg.starts_with("prevResult.ips[0].interface: 1"), "{e}");
    }
}
