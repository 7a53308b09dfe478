//! The ADD result (spec "Success" result) and the VERSION output.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::config::{CURRENT_VERSION, Dns, NetConf, SUPPORTED_VERSIONS};
use crate::ipam::Allocation;

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
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
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

/// Builds the spec result: interface 0 the host veth, interface 1 the pod's; one IP per
/// pool on interface 1 (as a host address, /32 or /128), a default route per family.
pub fn build(conf: &NetConf, a: &Attachment) -> CniResult {
    let legacy = conf.legacy_result();
    CniResult {
        cni_version: conf.cni_version.clone(),
        interfaces: vec![
            Interface {
                name: a.host_ifname.clone(),
                mac: a.host_mac.clone(),
                mtu: None,
                sandbox: None,
            },
            Interface {
                name: a.ifname.clone(),
                mac: a.mac.clone(),
                mtu: if legacy { None } else { a.mtu },
                sandbox: Some(a.sandbox.clone()),
            },
        ],
        ips: a
            .allocations
            .iter()
            .map(|al| IpConfig {
                version: legacy.then(|| if al.address.is_ipv4() { "4" } else { "6" }.into()),
                address: host_prefix(al.address),
                gateway: Some(al.gateway),
                interface: Some(1),
            })
            .collect(),
        routes: a
            .allocations
            .iter()
            .map(|al| Route {
                dst: default_route(al.address),
                gw: Some(al.gateway),
            })
            .collect(),
        dns: conf.dns.clone(),
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
        let r = build(&conf("1.1.0"), &attachment());
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
        let r = build(&conf("0.4.0"), &attachment());
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
}
