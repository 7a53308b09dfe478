//! Asking meshd for another block of a pool: the node's blocks of the pod's pool are full (or
//! the node has none of that family yet). The plugin drops `pool-requests/<pool>.<family>`
//! into the network's directory and waits, bounded, until meshd removes it: it added a block
//! (published in the node record first, then in `pod-cidrs.json`), or it could not and left
//! the reason in `<request>.failed`.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::config::Group;
use crate::error::{CniError, Code, Result};

use common::podcidrs::REQUESTS_DIR;
/// How long an ADD waits for meshd (it looks every `mesh.endpoint_poll`, 200 ms by default).
pub const WAIT: Duration = Duration::from_secs(10);

/// Asks for a block of `group`'s pool and family; `Ok` once meshd added one (read
/// `pod-cidrs.json` again), else the reason as a "try again later" error.
pub fn ask(
    network_dir: &Path,
    pool: &str,
    group: &Group,
    container_id: &str,
    wait: Duration,
) -> Result<()> {
    let dir = network_dir.join(REQUESTS_DIR);
    std::fs::create_dir_all(&dir)
        .map_err(|e| CniError::io(format!("creating {}", dir.display()), e))?;
    let name = common::podcidrs::request_name(pool, group.family());
    let request = dir.join(&name);
    std::fs::write(&request, container_id)
        .map_err(|e| CniError::io(format!("writing {}", request.display()), e))?;
    let started = Instant::now();
    while request.exists() {
        if started.elapsed() >= wait {
            let _ = std::fs::remove_file(&request);
            return Err(CniError::new(
                Code::TryAgainLater,
                format!(
                    "ipam: the node's {} blocks of pool {pool} are full ({}) and meshd added none within {wait:?}",
                    group.family(),
                    blocks(group)
                ),
            )
            .with_details(format!(
                "is meshd running on this node with mesh.cni_endpoints_dir under {}?",
                network_dir.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let failed = dir.join(format!("{name}.failed"));
    if let Ok(why) = read_bounded(&failed) {
        return Err(CniError::new(
            Code::TryAgainLater,
            format!(
                "ipam: the node's {} blocks of pool {pool} are full ({}) and meshd could not add one: {why}",
                group.family(),
                blocks(group)
            ),
        ));
    }
    Ok(())
}

fn blocks(g: &Group) -> String {
    if g.blocks.is_empty() {
        return "it has none".into();
    }
    g.blocks
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A short text file (meshd's answer), at most 1 KiB of it.
fn read_bounded(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut s = String::new();
    std::fs::File::open(path)?
        .take(1024)
        .read_to_string(&mut s)?;
    Ok(s.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group() -> Group {
        Group {
            v6: false,
            blocks: vec!["10.9.0.8/29".parse().unwrap()],
            pool: Some("tenants".into()),
        }
    }

    #[test]
    fn a_request_nobody_answers_times_out_and_is_withdrawn() {
        let d = tempfile::tempdir().unwrap();
        let e = ask(
            d.path(),
            "tenants",
            &group(),
            "c1",
            Duration::from_millis(120),
        )
        .unwrap_err();
        assert_eq!(e.code, Code::TryAgainLater);
        assert!(
            e.msg
                .contains("pool tenants are full (10.9.0.8/29) and meshd added none"),
            "{}",
            e.msg
        );
        assert!(!d.path().join(REQUESTS_DIR).join("tenants.ipv4").exists());
    }

    #[test]
    fn meshd_answering_with_a_reason_fails_the_add_with_it_and_a_served_one_succeeds() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join(REQUESTS_DIR);
        let answer = |failure: Option<&'static str>| {
            let dir = dir.clone();
            std::thread::spawn(move || {
                let req = dir.join("tenants.ipv4");
                for _ in 0..200 {
                    if req.exists() {
                        if let Some(why) = failure {
                            std::fs::write(dir.join("tenants.ipv4.failed"), why).unwrap();
                        } else {
                            let _ = std::fs::remove_file(dir.join("tenants.ipv4.failed"));
                        }
                        std::fs::remove_file(&req).unwrap();
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        let t = answer(Some("pool \"tenants\": every IPv4 pool is exhausted"));
        let e = ask(d.path(), "tenants", &group(), "c1", Duration::from_secs(5)).unwrap_err();
        t.join().unwrap();
        assert!(
            e.msg
                .ends_with("could not add one: pool \"tenants\": every IPv4 pool is exhausted"),
            "{}",
            e.msg
        );
        let t = answer(None);
        ask(d.path(), "tenants", &group(), "c2", Duration::from_secs(5)).unwrap();
        t.join().unwrap();
    }
}
