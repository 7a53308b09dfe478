//! Config reload (SIGHUP or the API): what changes, and what must not be touched. Sessions of
//! peers whose settings did not change stay up; adverts are diffed.

use ipnet::IpNet;

use super::config::{PeerSpec, SpeakerConfig};
use crate::rib::Advert;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReloadError {
    #[error("{field} changed ({old} -> {new}): restart bgpd to apply it; nothing was changed")]
    NeedsRestart {
        field: &'static str,
        old: String,
        new: String,
    },
}

/// The changes a new config asks for.
#[derive(Debug, Default, PartialEq)]
pub struct ReloadPlan {
    /// Peers (by name) whose settings changed: their sessions restart.
    pub restart: Vec<PeerSpec>,
    /// Peers whose only change is their import or export policy: applied without touching the
    /// session (export: Adj-RIB-Out re-evaluated; import: ROUTE-REFRESH asked of the peer).
    pub policies: Vec<PeerSpec>,
    pub add: Vec<PeerSpec>,
    /// Names of peers to remove.
    pub remove: Vec<String>,
    /// Adverts new or changed.
    pub advertise: Vec<Advert>,
    pub withdraw: Vec<IpNet>,
}

impl ReloadPlan {
    pub fn is_empty(&self) -> bool {
        *self == ReloadPlan::default()
    }

    /// Names of the peers whose sessions this plan touches.
    pub fn changed_peers(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .restart
            .iter()
            .chain(&self.add)
            .map(|p| p.name.clone())
            .chain(self.remove.iter().cloned())
            .collect();
        v.sort();
        v
    }
}

/// Same peer settings, whatever id each config gave it.
fn same(a: &PeerSpec, b: &PeerSpec) -> bool {
    PeerSpec {
        id: b.id,
        ..a.clone()
    } == *b
}

/// Same peer settings but for the policies.
fn same_but_policies(a: &PeerSpec, b: &PeerSpec) -> bool {
    PeerSpec {
        id: b.id,
        import: b.import.clone(),
        export: b.export.clone(),
        ..a.clone()
    } == *b
}

pub fn plan(old: &SpeakerConfig, new: &SpeakerConfig) -> Result<ReloadPlan, ReloadError> {
    let global = |field, o: String, n: String| {
        if o == n {
            Ok(())
        } else {
            Err(ReloadError::NeedsRestart {
                field,
                old: o,
                new: n,
            })
        }
    };
    global(
        "bgp.local_asn",
        old.local_asn.to_string(),
        new.local_asn.to_string(),
    )?;
    global(
        "bgp.router_id",
        old.router_id.to_string(),
        new.router_id.to_string(),
    )?;
    global(
        "bgp.listen",
        format!("{:?}", old.listen),
        format!("{:?}", new.listen),
    )?;
    global(
        "bgp.bmp.collectors",
        format!("{:?}", old.bmp_collectors),
        format!("{:?}", new.bmp_collectors),
    )?;
    let mut p = ReloadPlan::default();
    for n in &new.peers {
        match old.peers.iter().find(|o| o.name == n.name) {
            Some(o) if same(o, n) => {}
            Some(o) if same_but_policies(o, n) => p.policies.push(n.clone()),
            Some(_) => p.restart.push(n.clone()),
            None => p.add.push(n.clone()),
        }
    }
    for o in &old.peers {
        if !new.peers.iter().any(|n| n.name == o.name) {
            p.remove.push(o.name.clone());
        }
    }
    for a in &new.adverts {
        if !old.adverts.contains(a)
            || old.advert_pool.get(&a.prefix) != new.advert_pool.get(&a.prefix)
        {
            p.advertise.push(a.clone());
        }
    }
    for a in &old.adverts {
        if !new.adverts.iter().any(|n| n.prefix == a.prefix) {
            p.withdraw.push(a.prefix);
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(peers: &str, adverts: &str) -> SpeakerConfig {
        let toml = format!(
            "[node]\nname = \"n\"\ncluster = \"c\"\n[bgp]\nlocal_asn = 65001\nrouter_id = \"192.0.2.1\"\n{peers}\n{adverts}"
        );
        SpeakerConfig::from_config(&configs::Config::from_toml(&toml).unwrap()).unwrap()
    }

    const A: &str = "[[bgp.peers]]\nname = \"a\"\naddress = \"192.0.2.2\"\npeer_asn = 65000\nimport_policy = \"accept-all\"\nexport_policy = \"originated-only\"\n";
    const B: &str = "[[bgp.peers]]\nname = \"b\"\naddress = \"192.0.2.3\"\npeer_asn = 65000\nimport_policy = \"accept-all\"\nexport_policy = \"originated-only\"\n";
    const V1: &str = "[[bgp.adverts]]\nprefix = \"203.0.113.1/32\"\n";
    const V2: &str = "[[bgp.adverts]]\nprefix = \"203.0.113.2/32\"\n";

    #[test]
    fn unchanged_config_changes_nothing() {
        let c = cfg(&format!("{A}{B}"), V1);
        assert!(plan(&c, &c).unwrap().is_empty());
    }

    #[test]
    fn peers_are_matched_by_name_not_position() {
        // B moved before A: different ids, same settings.
        let p = plan(&cfg(&format!("{A}{B}"), ""), &cfg(&format!("{B}{A}"), "")).unwrap();
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn changed_added_and_removed_peers() {
        let b2 = B.replace("peer_asn = 65000", "peer_asn = 65009");
        let c = "[[bgp.peers]]\nname = \"c\"\naddress = \"192.0.2.4\"\npeer_asn = 65000\nimport_policy = \"accept-all\"\nexport_policy = \"originated-only\"\n";
        let p = plan(&cfg(&format!("{A}{B}"), ""), &cfg(&format!("{b2}{c}"), "")).unwrap();
        assert_eq!(p.changed_peers(), vec!["a", "b", "c"]);
        assert_eq!(p.restart[0].name, "b");
        assert_eq!(p.add[0].name, "c");
        assert_eq!(p.remove, vec!["a"]);
    }

    #[test]
    fn a_policy_change_keeps_the_session() {
        let a2 = A.replace(
            "export_policy = \"originated-only\"",
            "export_policy = \"reject-all\"",
        );
        let p = plan(&cfg(&format!("{A}{B}"), ""), &cfg(&format!("{a2}{B}"), "")).unwrap();
        assert!(p.changed_peers().is_empty(), "{p:?}");
        assert!(p.restart.is_empty());
        assert_eq!(p.policies.len(), 1);
        assert_eq!(p.policies[0].name, "a");
        // A policy change together with another change restarts the session.
        let a3 = a2.replace("peer_asn = 65000", "peer_asn = 65009");
        let p = plan(&cfg(A, ""), &cfg(&a3, "")).unwrap();
        assert_eq!(p.restart.len(), 1);
        assert!(p.policies.is_empty());
    }

    #[test]
    fn adverts_are_diffed() {
        let p = plan(&cfg(A, V1), &cfg(A, V2)).unwrap();
        assert_eq!(p.advertise.len(), 1);
        assert_eq!(p.advertise[0].prefix.to_string(), "203.0.113.2/32");
        assert_eq!(p.withdraw[0].to_string(), "203.0.113.1/32");
        assert!(p.changed_peers().is_empty());
    }

    #[test]
    fn global_changes_need_a_restart() {
        let old = cfg(A, "");
        let mut new = old.clone();
        new.local_asn = 65002;
        assert_eq!(
            plan(&old, &new).unwrap_err().to_string(),
            "bgp.local_asn changed (65001 -> 65002): restart bgpd to apply it; nothing was changed"
        );
    }
}
