//! The targets, one per decoder of untrusted bytes.

pub mod bgp;
pub mod cni;
pub mod crypto;
pub mod mesh;
pub mod misc;
pub mod resources;

use crate::Target;

const JSON_TOKENS: &[&[u8]] = &[
    b"\"cluster\":",
    b"\"name\":",
    b"\"node\":",
    b"\"ip\":",
    b"\"labels\":",
    b"\"identity\":",
    b"\"status\":",
    b"\"metadata\":",
    b"\"10.2.1.5\"",
    b"\"::ffff:10.2.1.5\"",
    b"\"0.0.0.0/0\"",
    b"\"red\"",
    b"\"blue\"",
    b"{}",
    b"[]",
    b"16777215",
    b"16777216",
];

/// Targets that crash on any input but their seed (a panic, an abort): the driver's own test
/// (`tests/driver.rs`), listed only with IRONMESH_FUZZ_SELFTEST=1.
fn selftest() -> Vec<Target> {
    fn seeds() -> Vec<Vec<u8>> {
        vec![b"seed".to_vec()]
    }
    fn panics(data: &[u8]) -> crate::Outcome {
        assert_eq!(data, b"seed", "selftest: a mutated input");
        crate::Outcome::default()
    }
    fn aborts(data: &[u8]) -> crate::Outcome {
        if data != b"seed" {
            std::process::abort();
        }
        crate::Outcome::default()
    }
    vec![
        Target {
            name: "selftest_panic",
            decoder: "panics on any input but its seed",
            run: panics,
            seeds,
            max_len: 16,
            dictionary: &[],
        },
        Target {
            name: "selftest_abort",
            decoder: "aborts on any input but its seed",
            run: aborts,
            seeds,
            max_len: 16,
            dictionary: &[],
        },
    ]
}

pub fn all() -> Vec<Target> {
    let mut all = real();
    if std::env::var_os("IRONMESH_FUZZ_SELFTEST").is_some() {
        all.extend(selftest());
    }
    all
}

fn real() -> Vec<Target> {
    vec![
        Target {
            name: "bgp_message",
            decoder: "bgpd::wire::Message::decode_from / decode (+ re-encoding)",
            run: bgp::message,
            seeds: bgp::message_seeds,
            max_len: 8192,
            dictionary: bgp::BGP_TOKENS,
        },
        Target {
            name: "bgp_update",
            decoder: "bgpd::wire::Message::decode of UPDATE bodies (RFC 7606)",
            run: bgp::update,
            seeds: bgp::update_seeds,
            max_len: 4096 - 19,
            dictionary: bgp::BGP_TOKENS,
        },
        Target {
            name: "bgp_frames",
            decoder: "bgpd::wire::next_frame (TCP framing, any split)",
            run: bgp::frames,
            seeds: bgp::frames_seeds,
            max_len: 8192,
            dictionary: bgp::BGP_TOKENS,
        },
        Target {
            name: "bfd_packet",
            decoder: "bgpd::bfd::ControlPacket::decode",
            run: bgp::bfd,
            seeds: bgp::bfd_seeds,
            max_len: 64,
            dictionary: &[],
        },
        Target {
            name: "etcd_key",
            decoder: "meshd::schema::Key::parse_bytes",
            run: mesh::key,
            seeds: mesh::key_seeds,
            max_len: 512,
            dictionary: &[
                b"ironmesh/v1/",
                b"clusters/",
                b"mirror/",
                b"/",
                b"%2F",
                b"%",
            ],
        },
        Target {
            name: "etcd_record",
            decoder: "meshd::records::check_value, every ResourceKind (objects: resources::Stored::decode)",
            run: mesh::record,
            seeds: mesh::record_seeds,
            max_len: 4096,
            dictionary: JSON_TOKENS,
        },
        Target {
            name: "stored_object",
            decoder: "resources::Stored::decode (+ re-encoding)",
            run: resources::stored,
            seeds: resources::stored_seeds,
            max_len: 4096,
            dictionary: resources::MANIFEST_TOKENS,
        },
        Target {
            name: "manifest",
            decoder: "resources::parse_manifests + resources::decode (YAML/JSON)",
            run: resources::manifest,
            seeds: resources::manifest_seeds,
            max_len: 4096,
            dictionary: resources::MANIFEST_TOKENS,
        },
        Target {
            name: "cni_netconf",
            decoder: "cni::config::NetConf::parse, CniArgs::parse, requested_ips, result::parse_prev",
            run: cni::netconf,
            seeds: cni::netconf_seeds,
            max_len: 4096,
            dictionary: cni::CNI_TOKENS,
        },
        Target {
            name: "cni_record",
            decoder: "meshd::agent::endpoints::cni::parse (+ check_pod_cidrs), cni::endpoint::Endpoint",
            run: mesh::cni_record,
            seeds: mesh::cni_record_seeds,
            max_len: 2048,
            dictionary: cni::CNI_TOKENS,
        },
        Target {
            name: "metrics_request",
            decoder: "api::metrics::parse_head",
            run: misc::metrics_request,
            seeds: misc::metrics_seeds,
            max_len: 10 * 1024,
            dictionary: &[b"GET ", b"/metrics", b"?", b"\r\n\r\n", b"\r"],
        },
        Target {
            name: "wg_uapi",
            decoder: "crypto::wireguard::uapi::{parse_get, parse_set_response, ResponseParser}",
            run: crypto::uapi,
            seeds: crypto::uapi_seeds,
            max_len: 4096,
            dictionary: crypto::TEXT_TOKENS,
        },
        Target {
            name: "wg_genl",
            decoder: "crypto::netlink::parse_datagram + crypto::wireguard::genl::parse_device",
            run: crypto::genl,
            seeds: crypto::genl_seeds,
            max_len: 4096,
            dictionary: crypto::NETLINK_TOKENS,
        },
        Target {
            name: "netlink_reply",
            decoder: "crypto::netlink::parse_datagram + attrs",
            run: crypto::netlink_reply,
            seeds: crypto::netlink_seeds,
            max_len: 2048,
            dictionary: crypto::NETLINK_TOKENS,
        },
        Target {
            name: "xfrm_policy",
            decoder: "crypto::netlink::parse_datagram + crypto::ipsec::xfrm::decode_policy",
            run: crypto::xfrm_policy,
            seeds: crypto::xfrm_seeds,
            max_len: 2048,
            dictionary: crypto::NETLINK_TOKENS,
        },
        Target {
            name: "ipsec_keyfile",
            decoder: "crypto::ipsec::keyfile::parse",
            run: crypto::keyfile,
            seeds: crypto::keyfile_seeds,
            max_len: 1024,
            dictionary: crypto::TEXT_TOKENS,
        },
        Target {
            name: "datapath_event",
            decoder: "datapath::events::RawEvent::from_bytes + Event::try_from",
            run: misc::datapath_event,
            seeds: misc::datapath_seeds,
            max_len: 128,
            dictionary: &[],
        },
        Target {
            name: "config_toml",
            decoder: "configs::Config::from_toml",
            run: misc::config_toml,
            seeds: misc::config_seeds,
            max_len: 8192,
            dictionary: misc::CONFIG_TOKENS,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_there_are_enough() {
        let all = all();
        let mut names: Vec<&str> = all.iter().map(|t| t.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all.len());
        assert!(all.len() >= 10);
    }

    /// Seeds are what the fuzzer starts from: each must be accepted by its decoder, or the
    /// fuzzer would mutate junk.
    #[test]
    fn every_seed_is_accepted() {
        for t in all() {
            let seeds = (t.seeds)();
            assert!(!seeds.is_empty(), "{}: no seeds", t.name);
            for (i, s) in seeds.iter().enumerate() {
                assert!(
                    s.len() <= t.max_len,
                    "{} seed {i}: longer than max_len",
                    t.name
                );
                let o = (t.run)(s);
                assert!(
                    o.accepted,
                    "{} seed {i} is refused: {}",
                    t.name,
                    String::from_utf8_lossy(s)
                );
            }
        }
    }

    /// The inputs of crashes found and fixed (`fuzzing/corpus/<target>/`) stay fixed.
    #[test]
    fn regression_inputs_do_not_crash() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
        for t in all() {
            for s in crate::driver::seeds(&t, Some(&dir)) {
                (t.run)(&s);
            }
        }
    }
}
