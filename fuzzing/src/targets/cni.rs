//! The CNI plugin's stdin: the network configuration the runtime sends (with `prevResult` in a
//! chain), and `CNI_ARGS`.

use cni::config::{CniArgs, Env, NetConf};
use cni::ipam::{self, Allocation};
use cni::result::{self, Attachment};

use crate::Outcome;

/// `cni_netconf`: stdin into `NetConf::parse` (and `sniff_version`, which every command runs
/// first); an accepted config's static address requests (`requested_ips`, with `CNI_ARGS`
/// after a NUL byte of the input), its `prevResult` (`result::parse_prev`) and the result ADD
/// would build from them. Every requested address is a pod address of the config's PodCIDRs.
pub fn netconf(data: &[u8]) -> Outcome {
    let mut o = Outcome::default();
    let (stdin, args) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let args = std::str::from_utf8(args).unwrap_or_default();
    o.note(cni::config::sniff_version(stdin).is_some());
    o.step("CNI_ARGS", &CniArgs::parse(args));
    let r = NetConf::parse(stdin);
    o.step("netconf", &r);
    let Ok(conf) = r else {
        return o;
    };
    let env = Env::from_lookup(|k| {
        Some(
            match k {
                "CNI_COMMAND" => "ADD",
                "CNI_CONTAINERID" => "c1",
                "CNI_IFNAME" => "eth0",
                "CNI_NETNS" => "/var/run/netns/pod-1",
                "CNI_PATH" => "/opt/cni/bin",
                "CNI_ARGS" => args,
                _ => return None,
            }
            .to_string(),
        )
    });
    let pools = conf.pod_cidrs();
    let mut allocations = Vec::new();
    if let Ok(env) = &env {
        let ips = conf.requested_ips(env);
        o.step("requested ips", &ips);
        for ip in ips.unwrap_or_default() {
            let pool = *pools
                .iter()
                .find(|p| p.contains(&ip))
                .expect("a requested address is inside a PodCIDR");
            assert!(
                ipam::is_pod_address(pool, ip),
                "{ip} is not a pod address of {pool}"
            );
            allocations.push(Allocation {
                pool,
                address: ip,
                gateway: ipam::gateway(pool),
            });
        }
    }
    let prev = conf.prev_result.as_ref().map(result::parse_prev);
    if let Some(p) = &prev {
        o.step("prevResult", p);
    }
    let prev = prev.and_then(Result::ok);
    let attachment = Attachment {
        host_ifname: cni::endpoint::host_ifname("c1", "eth0"),
        host_mac: "02:00:00:00:00:01".into(),
        ifname: "eth0".into(),
        mac: "02:00:00:00:00:02".into(),
        sandbox: "/var/run/netns/pod-1".into(),
        mtu: conf.mtu,
        allocations,
    };
    let built = result::build(&conf, prev.as_ref(), &attachment);
    // What ADD prints is a result the next plugin of a chain reads as its prevResult.
    let json = serde_json::to_value(&built).expect("a result serializes");
    let again = result::parse_prev(&json);
    assert!(
        again.is_ok(),
        "the built result is no valid prevResult: {again:?}"
    );
    o.accepted = true;
    o
}

pub fn netconf_seeds() -> Vec<Vec<u8>> {
    [
        r#"{"cniVersion":"1.0.0","name":"mesh","type":"ironmesh-cni",
"ipam":{"type":"ironmesh","podCIDR":"10.244.1.7/24","podCIDRv6":"fd00:244:1::/64"},
"dns":{"nameservers":["10.96.0.10"],"search":["svc.cluster.local"]},"mtu":1450,
"runtimeConfig":{"labels":{"app":"web"},"ips":["10.244.1.5/24"]}}"#,
        "{\"cniVersion\":\"1.1.0\",\"name\":\"mesh\",\"type\":\"ironmesh-cni\",\"ipam\":{\"type\":\"ironmesh\",\"podCIDR\":\"10.244.1.0/24\"},\"args\":{\"cni\":{\"ips\":[\"10.244.1.9\"]}}}\0K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;IP=10.244.1.9",
        r#"{"cniVersion":"1.1.0","name":"mesh","type":"ironmesh-cni","dataDir":"/run/ironmesh",
"ipam":{"type":"ironmesh","podCIDRv6":"fd00:244:1::/64"},
"cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"}],
"prevResult":{"cniVersion":"1.1.0","interfaces":[{"name":"eth0","sandbox":"/var/run/netns/p"}],
"ips":[{"address":"192.168.1.5/24","interface":0}],"routes":[{"dst":"0.0.0.0/0"}],
"dns":{"nameservers":["1.1.1.1"]},"custom":{"x":1}}}"#,
        r#"{"cniVersion":"0.4.0","name":"mesh","type":"ironmesh-cni",
"ipam":{"type":"ironmesh","podCIDR":"10.244.1.0/30"}}"#,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

pub const CNI_TOKENS: &[&[u8]] = &[
    b"\"cniVersion\":",
    b"\"1.0.0\"",
    b"\"0.4.0\"",
    b"\"prevResult\":",
    b"\"interface\":",
    b"\"ips\":",
    b"\"podCIDR\":",
    b"\"podCIDRv6\":",
    b"\"10.244.1.255\"",
    b"\"10.244.1.1\"",
    b"\"fd00:244:1::\"",
    b"/32",
    b"/0",
    b"/128",
    b";IP=",
    b"K8S_POD_NAME=",
];
