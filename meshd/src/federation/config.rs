//! Checks a mesh configuration before anything connects: names and IDs unique, one identity
//! layout, PodCIDRs that do not overlap between clusters (unless explicitly allowed).

use std::fmt;

use common::{ClusterId, ClusterName, IdentityLayout};
use ipnet::IpNet;

use crate::ipam::overlaps;
use crate::kvstore::KvConfig;

/// What the mesh must know about one cluster (the local one or a remote).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterInfo {
    pub name: ClusterName,
    pub id: ClusterId,
    /// The split of identity bits, set at install; must be the same across the mesh.
    pub layout: IdentityLayout,
    /// The cluster's PodCIDR pools.
    pub pod_cidrs: Vec<IpNet>,
}

/// A remote cluster as configured: who it is and how to reach its etcd (read-only user).
#[derive(Debug, Clone)]
pub struct RemoteCluster {
    pub info: ClusterInfo,
    pub etcd: KvConfig,
}

/// Two PodCIDRs of different clusters that overlap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CidrOverlap {
    pub a: (ClusterName, IpNet),
    pub b: (ClusterName, IpNet),
}

impl fmt::Display for CidrOverlap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of cluster {} overlaps {} of cluster {}",
            self.a.1, self.a.0, self.b.1, self.b.0
        )
    }
}

/// Why a remote cluster is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FederationConfigError {
    #[error(
        "remote cluster \"{remote}\" has the local cluster's name; cluster names must be unique across the mesh"
    )]
    NameIsLocal { remote: ClusterName },
    #[error(
        "remote cluster \"{name}\" is configured twice; cluster names must be unique across the mesh"
    )]
    DuplicateName { name: ClusterName },
    #[error(
        "remote cluster \"{remote}\" has cluster ID {id}, the ID of the local cluster \"{local}\"; cluster IDs must be unique across the mesh (identities carry them, so they would collide)"
    )]
    IdIsLocal {
        remote: ClusterName,
        local: ClusterName,
        id: ClusterId,
    },
    #[error(
        "remote clusters \"{first}\" and \"{second}\" both have cluster ID {id}; cluster IDs must be unique across the mesh (identities carry them, so they would collide)"
    )]
    DuplicateId {
        first: ClusterName,
        second: ClusterName,
        id: ClusterId,
    },
    #[error(
        "remote cluster \"{remote}\" uses an identity layout of {remote_bits} cluster bits but the local cluster \"{local}\" uses {local_bits}; the layout is set at install and must be the same in every cluster of the mesh"
    )]
    LayoutMismatch {
        remote: ClusterName,
        local: ClusterName,
        remote_bits: u8,
        local_bits: u8,
    },
    #[error(
        "cluster \"{cluster}\" has ID {id}, which does not fit the mesh's identity layout of {bits} cluster bits (IDs 1..={max})"
    )]
    IdOutOfLayout {
        cluster: ClusterName,
        id: ClusterId,
        bits: u8,
        max: u16,
    },
    #[error(
        "PodCIDRs overlap between clusters: {}; renumber a cluster, or allow overlapping PodCIDRs explicitly (pods in the overlapping ranges are then not reachable across clusters)",
        list(.overlaps)
    )]
    OverlappingPodCidrs { overlaps: Vec<CidrOverlap> },
}

fn list(overlaps: &[CidrOverlap]) -> String {
    overlaps
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Checks the remotes against the local cluster and each other. Returns the PodCIDR overlaps
/// found (empty, or the allowed ones when `allow_overlapping_pod_cidrs`), for the status and
/// the logs; refuses the first clash with a clear error.
pub fn check_remotes(
    local: &ClusterInfo,
    remotes: &[ClusterInfo],
    allow_overlapping_pod_cidrs: bool,
) -> Result<Vec<CidrOverlap>, FederationConfigError> {
    let layout = local.layout;
    let fits = |c: &ClusterInfo| {
        if c.id.get() > layout.max_cluster_id() {
            Err(FederationConfigError::IdOutOfLayout {
                cluster: c.name.clone(),
                id: c.id,
                bits: layout.cluster_bits(),
                max: layout.max_cluster_id(),
            })
        } else {
            Ok(())
        }
    };
    fits(local)?;
    for (i, r) in remotes.iter().enumerate() {
        if r.name == local.name {
            return Err(FederationConfigError::NameIsLocal {
                remote: r.name.clone(),
            });
        }
        if r.layout != layout {
            return Err(FederationConfigError::LayoutMismatch {
                remote: r.name.clone(),
                local: local.name.clone(),
                remote_bits: r.layout.cluster_bits(),
                local_bits: layout.cluster_bits(),
            });
        }
        fits(r)?;
        if r.id == local.id {
            return Err(FederationConfigError::IdIsLocal {
                remote: r.name.clone(),
                local: local.name.clone(),
                id: r.id,
            });
        }
        for earlier in &remotes[..i] {
            if earlier.name == r.name {
                return Err(FederationConfigError::DuplicateName {
                    name: r.name.clone(),
                });
            }
            if earlier.id == r.id {
                return Err(FederationConfigError::DuplicateId {
                    first: earlier.name.clone(),
                    second: r.name.clone(),
                    id: r.id,
                });
            }
        }
    }
    let all: Vec<&ClusterInfo> = std::iter::once(local).chain(remotes).collect();
    let mut found = Vec::new();
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            for ca in &a.pod_cidrs {
                for cb in &b.pod_cidrs {
                    if overlaps(ca, cb) {
                        found.push(CidrOverlap {
                            a: (a.name.clone(), *ca),
                            b: (b.name.clone(), *cb),
                        });
                    }
                }
            }
        }
    }
    if !found.is_empty() && !allow_overlapping_pod_cidrs {
        return Err(FederationConfigError::OverlappingPodCidrs { overlaps: found });
    }
    for o in &found {
        tracing::warn!(overlap = %o, "PodCIDRs overlap between clusters (allowed by configuration)");
    }
    Ok(found)
}

/// Checks each remote in turn against the local cluster and the remotes admitted before it
/// ([`check_remotes`], overlaps not allowed): returns the admitted remotes, and the refused
/// ones with the reason (a refused remote is neither mirrored nor read).
pub fn admit(
    local: &ClusterInfo,
    remotes: &[ClusterInfo],
) -> (Vec<ClusterInfo>, Vec<(ClusterName, FederationConfigError)>) {
    let mut admitted: Vec<ClusterInfo> = Vec::new();
    let mut refused = Vec::new();
    for r in remotes {
        let mut candidate = admitted.clone();
        candidate.push(r.clone());
        match check_remotes(local, &candidate, false) {
            Ok(_) => admitted.push(r.clone()),
            Err(e) => refused.push((r.name.clone(), e)),
        }
    }
    (admitted, refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admit_refuses_only_the_clashing_remote() {
        let local = info("red", 1, 8, &["10.1.0.0/16"]);
        let remotes = [
            info("blue", 2, 8, &["10.2.0.0/16"]),
            info("evil", 3, 8, &["10.1.128.0/17"]),
            info("green", 4, 8, &["10.4.0.0/16"]),
            info("copy", 5, 8, &["10.2.0.0/24"]),
        ];
        let (ok, refused) = admit(&local, &remotes);
        let names: Vec<&str> = ok.iter().map(|c| c.name.as_ref()).collect();
        assert_eq!(names, ["blue", "green"]);
        assert_eq!(refused.len(), 2);
        assert_eq!(refused[0].0.as_ref(), "evil");
        assert!(
            refused[0]
                .1
                .to_string()
                .contains("10.1.0.0/16 of cluster red overlaps 10.1.128.0/17 of cluster evil"),
            "{}",
            refused[0].1
        );
        assert!(
            refused[1]
                .1
                .to_string()
                .contains("of cluster blue overlaps 10.2.0.0/24 of cluster copy"),
            "{}",
            refused[1].1
        );
    }

    fn info(name: &str, id: u16, bits: u8, cidrs: &[&str]) -> ClusterInfo {
        ClusterInfo {
            name: name.parse().unwrap(),
            id: ClusterId::new(id).unwrap(),
            layout: IdentityLayout::new(bits).unwrap(),
            pod_cidrs: cidrs.iter().map(|c| c.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn a_clean_mesh_passes() {
        let local = info("red", 1, 8, &["10.1.0.0/16", "fd00:1::/48"]);
        let remotes = [
            info("green", 2, 8, &["10.2.0.0/16", "fd00:2::/48"]),
            info("blue", 3, 8, &["10.3.0.0/16"]),
        ];
        assert_eq!(check_remotes(&local, &remotes, false), Ok(vec![]));
    }

    #[test]
    fn clashing_names_and_ids_are_refused() {
        let local = info("red", 1, 8, &[]);
        let e = check_remotes(&local, &[info("red", 2, 8, &[])], false).unwrap_err();
        assert!(matches!(e, FederationConfigError::NameIsLocal { .. }));
        assert!(e.to_string().contains("\"red\""), "{e}");

        let e = check_remotes(&local, &[info("green", 1, 8, &[])], false).unwrap_err();
        assert_eq!(
            e.to_string(),
            "remote cluster \"green\" has cluster ID 1, the ID of the local cluster \"red\"; \
             cluster IDs must be unique across the mesh (identities carry them, so they would collide)"
        );

        let two = [info("green", 2, 8, &[]), info("blue", 2, 8, &[])];
        let e = check_remotes(&local, &two, false).unwrap_err();
        assert!(
            matches!(&e, FederationConfigError::DuplicateId { first, second, .. }
                if first.as_ref() == "green" && second.as_ref() == "blue"),
            "{e}"
        );
        let two = [info("green", 2, 8, &[]), info("green", 3, 8, &[])];
        assert!(matches!(
            check_remotes(&local, &two, false),
            Err(FederationConfigError::DuplicateName { .. })
        ));
    }

    #[test]
    fn layouts_must_match_and_ids_fit() {
        let local = info("red", 1, 8, &[]);
        let e = check_remotes(&local, &[info("green", 2, 9, &[])], false).unwrap_err();
        assert!(
            e.to_string()
                .contains("9 cluster bits but the local cluster \"red\" uses 8"),
            "{e}"
        );
        // ID 300 is valid with 9 bits but not in an 8-bit mesh.
        let e = check_remotes(&local, &[info("green", 300, 8, &[])], false).unwrap_err();
        assert!(
            matches!(e, FederationConfigError::IdOutOfLayout { max: 255, .. }),
            "{e}"
        );
        let local9 = info("red", 1, 9, &[]);
        assert!(check_remotes(&local9, &[info("green", 300, 9, &[])], false).is_ok());
    }

    #[test]
    fn overlapping_pod_cidrs_are_reported_and_refused_unless_allowed() {
        let local = info("red", 1, 8, &["10.0.0.0/16"]);
        let remotes = [
            info("green", 2, 8, &["10.0.128.0/17", "fd00::/48"]),
            info("blue", 3, 8, &["fd00:0:0:1::/64", "10.9.0.0/16"]),
        ];
        let e = check_remotes(&local, &remotes, false).unwrap_err();
        let FederationConfigError::OverlappingPodCidrs { overlaps } = &e else {
            panic!("{e}");
        };
        assert_eq!(overlaps.len(), 2, "{overlaps:?}");
        let msg = e.to_string();
        assert!(
            msg.contains("10.0.0.0/16 of cluster red overlaps 10.0.128.0/17 of cluster green"),
            "{msg}"
        );
        assert!(
            msg.contains("fd00::/48 of cluster green overlaps fd00:0:0:1::/64 of cluster blue"),
            "{msg}"
        );
        // Allowed: the same overlaps come back as a report.
        assert_eq!(check_remotes(&local, &remotes, true).unwrap(), *overlaps);
    }
}
