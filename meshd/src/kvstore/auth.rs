//! etcd users and roles for one cluster's etcd (etcd v3 auth, as etcd 3.4 serves it): each
//! cluster's meshd user writes only its own cluster's prefix (and the local mirrors), and each
//! remote cluster gets a read-only user for this cluster's prefix, so a cluster can never write
//! another cluster's keys.
//!
//! | user | role | permissions |
//! |---|---|---|
//! | `root` | `root` | everything (etcd requires it before `auth enable`) |
//! | `<cluster>` (meshd) | `ironmesh-<cluster>` | read `ironmesh/`; readwrite `ironmesh/v1/clusters/<cluster>/` and `ironmesh/v1/mirror/` |
//! | `<remote>-reader` | `ironmesh-<cluster>-read` | read `ironmesh/v1/clusters/<cluster>/` |
//!
//! [`provision`] is idempotent: users and roles that exist are kept, permissions are granted
//! again; it reports what it created and what it found (`ironctl mesh provision` prints that).
//! An existing user's password is changed only when the plan says so
//! ([`AuthPlan::rotate_passwords`]): etcd cannot tell whether a password differs (it never
//! returns one), so rotation is explicit and every existing user it covers is reported
//! `rotated`, on every run. Root's password is never changed (provisioning logs in with it).

use common::ClusterName;
use etcd_client::Permission;

use super::{KvError, KvStore};
use crate::schema::{ROOT, Scope, VERSION};

/// What to create in one cluster's etcd.
#[derive(Clone)]
pub struct AuthPlan {
    pub cluster: ClusterName,
    pub root_password: String,
    /// This cluster's meshd password (user name: the cluster name).
    pub meshd_password: String,
    /// Remote clusters that read this cluster: (remote, password of `<remote>-reader`).
    pub readers: Vec<(ClusterName, String)>,
    /// Set the passwords above on the meshd and reader users that exist already (new users
    /// always get them).
    pub rotate_passwords: bool,
}

impl std::fmt::Debug for AuthPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthPlan")
            .field("cluster", &self.cluster)
            .field("rotate_passwords", &self.rotate_passwords)
            .field(
                "readers",
                &self.readers.iter().map(|(r, _)| r).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// The user name of this cluster's meshd.
pub fn meshd_user(cluster: &ClusterName) -> String {
    cluster.to_string()
}

/// The user name a remote cluster reads this cluster's etcd with.
pub fn reader_user(remote: &ClusterName) -> String {
    format!("{remote}-reader")
}

fn exists(e: &etcd_client::Error) -> bool {
    e.to_string().contains("already exists")
}

/// Whether [`provision`] made a user or role or found it there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Unchanged,
    /// An existing user's password was set from the plan.
    Rotated,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Unchanged => "unchanged",
            Outcome::Rotated => "rotated",
        }
    }
}

/// One user or role [`provision`] saw to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provisioned {
    /// `user` or `role`.
    pub kind: &'static str,
    pub name: String,
    pub outcome: Outcome,
}

/// Creates the users and roles of `plan` and enables auth. `store` must connect without auth
/// (before the first run) or as root. Returns each user and role, created or found.
pub async fn provision(store: &KvStore, plan: &AuthPlan) -> Result<Vec<Provisioned>, KvError> {
    let mut c = store.client();
    let op = |what: &str| format!("auth provisioning: {what}");
    let mut done: Vec<Provisioned> = Vec::new();
    macro_rules! tolerate {
        ($what:expr, $call:expr) => {
            match $call.await {
                Ok(_) => true,
                Err(e) if exists(&e) => false,
                Err(e) => return Err(KvError::from_etcd(&op($what), e)),
            }
        };
    }
    macro_rules! made {
        ($kind:expr, $name:expr, $what:expr, $call:expr) => {{
            let created = tolerate!($what, $call);
            done.push(Provisioned {
                kind: $kind,
                name: $name.to_string(),
                outcome: if created {
                    Outcome::Created
                } else {
                    Outcome::Unchanged
                },
            });
        }};
    }
    // A meshd or reader user: created with its password, or found (and, when rotating, given
    // the password of the plan).
    macro_rules! user {
        ($name:expr, $password:expr, $what:expr) => {{
            let name: String = $name;
            let created = tolerate!($what, c.user_add(name.clone(), $password.clone(), None));
            let outcome = if created {
                Outcome::Created
            } else if plan.rotate_passwords {
                if let Err(e) = c
                    .user_change_password(name.clone(), $password.clone())
                    .await
                {
                    return Err(KvError::from_etcd(&op("change a user's password"), e)
                        .denied_on("", Some("root")));
                }
                Outcome::Rotated
            } else {
                Outcome::Unchanged
            };
            done.push(Provisioned {
                kind: "user",
                name: name.clone(),
                outcome,
            });
            name
        }};
    }
    let own = Scope::Cluster(plan.cluster.clone()).prefix();
    let mirrors = format!("{ROOT}{VERSION}/mirror/");
    made!(
        "user",
        "root",
        "add user root",
        c.user_add("root", plan.root_password.clone(), None)
    );
    made!("role", "root", "add role root", c.role_add("root"));
    tolerate!("grant root", c.user_grant_role("root", "root"));

    let rw = format!("ironmesh-{}", plan.cluster);
    made!("role", rw, "add the meshd role", c.role_add(rw.clone()));
    for perm in [
        Permission::read(ROOT).with_prefix(),
        Permission::read_write(own.clone()).with_prefix(),
        Permission::read_write(mirrors).with_prefix(),
    ] {
        tolerate!(
            "grant the meshd role",
            c.role_grant_permission(rw.clone(), perm)
        );
    }
    let user = user!(
        meshd_user(&plan.cluster),
        plan.meshd_password,
        "add the meshd user"
    );
    tolerate!("grant the meshd user", c.user_grant_role(user, rw));

    let ro = format!("ironmesh-{}-read", plan.cluster);
    made!("role", ro, "add the read-only role", c.role_add(ro.clone()));
    tolerate!(
        "grant the read-only role",
        c.role_grant_permission(ro.clone(), Permission::read(own).with_prefix())
    );
    for (remote, password) in &plan.readers {
        let u = user!(reader_user(remote), password, "add a reader user");
        tolerate!("grant a reader user", c.user_grant_role(u, ro.clone()));
    }
    match c.auth_enable().await {
        Ok(_) => Ok(done),
        Err(e) => Err(KvError::from_etcd(&op("enable auth"), e)),
    }
}
