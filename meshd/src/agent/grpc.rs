//! The gRPC API of meshd (`api/proto/mesh.proto`) over the agent's shared state.

use std::path::Path;
use std::sync::Arc;

use api::mesh as pb;
use common::ServiceKey;
use tonic::{Request, Response, Status};

use super::AgentError;
use super::sinks::EncryptionStatusSource;
use super::state::Shared;
use crate::objects::{ApplyError, Objects};
use crate::policy::PolicyRecord;
use crate::schema::{Key, Resource};

#[path = "grpc_rotate.rs"]
mod rotate;

#[derive(Debug)]
pub struct MeshApi {
    shared: Arc<Shared>,
}

impl MeshApi {
    pub fn new(shared: Arc<Shared>) -> Self {
        MeshApi { shared }
    }

    fn store(&self) -> Result<crate::kvstore::KvStore, Status> {
        self.ready()?;
        self.shared
            .store()
            .ok_or_else(|| Status::unavailable("meshd has not reached its local etcd yet"))
    }

    /// Lists need the merged view: refuse (UNAVAILABLE, saying why) until etcd answered.
    fn ready(&self) -> Result<(), Status> {
        if self.shared.ready() {
            return Ok(());
        }
        let st = self.shared.status();
        Err(Status::unavailable(format!(
            "meshd has not reached its local etcd at {} yet: {}",
            st.etcd_endpoints, st.etcd_error
        )))
    }
}

/// The rollout as the API returns it.
fn rollout_response(
    shared: &Shared,
    seen: &crate::rollout::Published,
) -> pb::EncryptionRolloutStatusResponse {
    let node = |n: &crypto::rollout::NodeRollout| pb::EncryptionRolloutNode {
        node: n.node.clone(),
        mode: n.mode.to_string(),
        ready_for_strict: n.ready_for_strict,
        peers_ready: n.peers_ready as u32,
        peers_expected: n.peers_expected as u32,
        not_ready: n.not_ready.clone(),
        draining: n.draining,
    };
    match seen.status() {
        Some(st) => pb::EncryptionRolloutStatusResponse {
            cluster: shared.cluster.to_string(),
            set: true,
            desired: st.desired.to_string(),
            complete: st.complete,
            blocking: st.blocking.unwrap_or_default(),
            nodes: st.nodes.iter().map(node).collect(),
            missing: st.missing,
        },
        None => pb::EncryptionRolloutStatusResponse {
            cluster: shared.cluster.to_string(),
            set: false,
            nodes: seen.nodes.iter().map(node).collect(),
            ..Default::default()
        },
    }
}

#[tonic::async_trait]
impl pb::mesh_server::Mesh for MeshApi {
    async fn status(
        &self,
        _: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        Ok(Response::new(self.shared.status()))
    }

    async fn list_nodes(
        &self,
        _: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        self.ready()?;
        Ok(Response::new(pb::ListNodesResponse {
            nodes: self.shared.nodes(),
        }))
    }

    async fn list_identities(
        &self,
        _: Request<pb::ListIdentitiesRequest>,
    ) -> Result<Response<pb::ListIdentitiesResponse>, Status> {
        self.ready()?;
        Ok(Response::new(pb::ListIdentitiesResponse {
            identities: self.shared.identities(),
        }))
    }

    async fn list_services(
        &self,
        _: Request<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ListServicesResponse>, Status> {
        self.ready()?;
        Ok(Response::new(pb::ListServicesResponse {
            services: self.shared.services(),
        }))
    }

    async fn encryption_status(
        &self,
        _: Request<pb::EncryptionStatusRequest>,
    ) -> Result<Response<pb::EncryptionStatusResponse>, Status> {
        let Some(src) = self.shared.encryption() else {
            return Ok(Response::new(pb::EncryptionStatusResponse {
                node: self.shared.node.to_string(),
                enabled: false,
                reason: self.shared.encryption_off(),
                mode: "off".into(),
                ..Default::default()
            }));
        };
        let st = tokio::task::spawn_blocking(move || src.status())
            .await
            .map_err(|e| Status::internal(format!("encryption status task failed: {e}")))?;
        Ok(Response::new(st))
    }

    async fn set_encryption_rollout(
        &self,
        req: Request<pb::SetEncryptionRolloutRequest>,
    ) -> Result<Response<pb::EncryptionRolloutStatusResponse>, Status> {
        let to = req.into_inner().to;
        let mode: crypto::rollout::EncryptionMode = to
            .parse()
            .map_err(|e| Status::invalid_argument(format!("--to: {e}")))?;
        if !matches!(
            self.shared.encryption(),
            Some(EncryptionStatusSource::WireGuard(_))
        ) {
            return Err(Status::failed_precondition(format!(
                "node {} runs no WireGuard encryption ({}); the rollout moves nodes whose meshd runs \
                 the WireGuard worker: set [encryption] mode (the starting mode) and the WireGuard backend",
                self.shared.node,
                self.shared.encryption_off()
            )));
        }
        let store = self.store()?;
        let value = crate::rollout::DesiredValue {
            mode,
            set_at_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            set_by: self.shared.node.to_string(),
        };
        let key = Key::cluster(&self.shared.cluster, Resource::EncryptionDesired).to_string();
        let bytes = serde_json::to_vec(&value)
            .map_err(|e| Status::internal(format!("encoding the desired mode: {e}")))?;
        store
            .put(&key, bytes, None)
            .await
            .map_err(|e| Status::unavailable(format!("writing {key}: {e}")))?;
        tracing::info!(%mode, "encryption rollout: desired mode set");
        let mut seen = self.shared.rollout().unwrap_or_default();
        seen.desired = Some(value);
        Ok(Response::new(rollout_response(&self.shared, &seen)))
    }

    async fn encryption_rollout_status(
        &self,
        _: Request<pb::EncryptionRolloutStatusRequest>,
    ) -> Result<Response<pb::EncryptionRolloutStatusResponse>, Status> {
        self.ready()?;
        let seen = self.shared.rollout().unwrap_or_default();
        Ok(Response::new(rollout_response(&self.shared, &seen)))
    }

    async fn rotate_key(
        &self,
        _: Request<pb::RotateKeyRequest>,
    ) -> Result<Response<pb::RotateKeyResponse>, Status> {
        let src = match self.shared.encryption() {
            Some(EncryptionStatusSource::WireGuard(w)) => w,
            Some(EncryptionStatusSource::Ipsec(_)) => {
                return Err(Status::failed_precondition(
                    "this node encrypts with IPsec, whose keys meshd does not generate: rotate by \
                     adding a key line with the next SPI to encryption.ipsec.key_file on every \
                     node (meshd reloads it within a second; see docs/encryption.md, SPI rotation)",
                ));
            }
            None => {
                return Err(Status::failed_precondition(format!(
                    "no WireGuard encryption runs on this node, so there is no key to rotate: {}",
                    self.shared.encryption_off()
                )));
            }
        };
        rotate::rotate_key(src).await.map(Response::new)
    }

    async fn apply_policy(
        &self,
        req: Request<pb::ApplyPolicyRequest>,
    ) -> Result<Response<pb::ApplyPolicyResponse>, Status> {
        let p = PolicyRecord::parse(req.into_inner().json.as_bytes())
            .map_err(|e| Status::invalid_argument(format!("the policy: {e}")))?;
        let key = p
            .key(&self.shared.cluster)
            .map_err(|e| Status::invalid_argument(format!("the policy: {e}")))?;
        self.store()?
            .put(&key, p.encode(), None)
            .await
            .map_err(|e| Status::unavailable(format!("writing {key}: {e}")))?;
        tracing::info!(key, "policy applied");
        Ok(Response::new(pb::ApplyPolicyResponse { key }))
    }

    async fn list_policies(
        &self,
        _: Request<pb::ListPoliciesRequest>,
    ) -> Result<Response<pb::ListPoliciesResponse>, Status> {
        self.ready()?;
        Ok(Response::new(pb::ListPoliciesResponse {
            policies: self.shared.policies(),
        }))
    }

    async fn delete_policy(
        &self,
        req: Request<pb::DeletePolicyRequest>,
    ) -> Result<Response<pb::DeletePolicyResponse>, Status> {
        let r = req.into_inner();
        let k = ServiceKey::new(&r.namespace, &r.name)
            .map_err(|e| Status::invalid_argument(format!("the policy name: {e}")))?;
        let key = Key::cluster(&self.shared.cluster, Resource::Policy(k)).to_string();
        let deleted = self
            .store()?
            .delete(&key)
            .await
            .map_err(|e| Status::unavailable(format!("deleting {key}: {e}")))?;
        tracing::info!(key, deleted, "policy delete");
        Ok(Response::new(pb::DeletePolicyResponse { deleted }))
    }

    async fn apply(
        &self,
        req: Request<pb::ApplyRequest>,
    ) -> Result<Response<pb::ApplyResponse>, Status> {
        let r = req.into_inner();
        let out = self
            .objects()?
            .apply(&r.manifest, r.dry_run)
            .await
            .map_err(object_status)?;
        Ok(Response::new(pb::ApplyResponse {
            results: out
                .into_iter()
                .map(|o| pb::ApplyResult {
                    kind: o.kind.name().into(),
                    namespace: o.namespace,
                    name: o.name,
                    action: o.action.into(),
                    warning: o.warning,
                })
                .collect(),
        }))
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let r = req.into_inner();
        let ns = (!r.all_namespaces).then(|| non_empty(&r.namespace).unwrap_or("default"));
        if matches!(r.kind.as_str(), "po" | "pod" | "pods" | "ep" | "endpoints") {
            self.ready()?;
            return Ok(Response::new(pb::GetResponse {
                objects_json: self
                    .shared
                    .pods(ns)
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
                events_json: Vec::new(),
            }));
        }
        let kind = kind_arg(&r.kind)?;
        let objs = self
            .objects()?
            .get(kind, ns, non_empty(&r.name))
            .await
            .map_err(object_status)?;
        let mut events_json = Vec::new();
        if let ([one], Some(_)) = (objs.as_slice(), non_empty(&r.name)) {
            let o = &one.object;
            let name = crate::schema::ObjectName::new(
                o.kind(),
                o.kind().namespaced().then(|| o.namespace()),
                &o.meta.name,
            )
            .map_err(Status::invalid_argument)?;
            let events = crate::events::list(&self.store()?, &self.shared.cluster, &name)
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
            events_json = events
                .iter()
                .map(|e| serde_json::to_string(e).expect("serializes"))
                .collect();
        }
        Ok(Response::new(pb::GetResponse {
            objects_json: objs
                .iter()
                .map(|s| String::from_utf8_lossy(&s.encode()).into_owned())
                .collect(),
            events_json,
        }))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let r = req.into_inner();
        let kind = kind_arg(&r.kind)?;
        let deleted = self
            .objects()?
            .delete(kind, non_empty(&r.namespace), &r.name)
            .await
            .map_err(object_status)?;
        Ok(Response::new(pb::DeleteResponse {
            deleted: !deleted.is_empty(),
            deleted_objects: deleted,
        }))
    }

    type FlowsStream = super::flows::FlowStream;

    async fn flows(
        &self,
        req: Request<pb::FlowsRequest>,
    ) -> Result<Response<Self::FlowsStream>, Status> {
        let r = req.into_inner();
        let filter = super::flows::parse_filter(&r.filter_json)?;
        if r.mesh {
            let observe = self.shared.observe();
            if !observe.relay {
                return Err(Status::failed_precondition(format!(
                    "node {} is no relay: set observe.relay = true (or observe this node without --mesh)",
                    self.shared.node
                )));
            }
            self.ready()?;
            let nodes = self.shared.node_records();
            let targets = super::flows::relay_targets(&nodes, observe.port);
            return Ok(Response::new(super::flows::relay(
                targets, r.last, r.follow, filter,
            )));
        }
        let store = self.shared.flows().ok_or_else(|| {
            Status::failed_precondition(format!(
                "node {} keeps no flow records: set datapath.flows (with datapath.load = true)",
                self.shared.node
            ))
        })?;
        Ok(Response::new(super::flows::stream_node(
            store,
            r.last as usize,
            r.follow,
            filter,
        )))
    }
}

impl MeshApi {
    fn objects(&self) -> Result<Objects, Status> {
        Ok(Objects::new(
            self.store()?,
            self.shared.cluster.clone(),
            self.shared.service_cidrs.clone(),
        )
        .with_pod_pools(self.shared.pod_pools.clone())
        .with_events(self.shared.events()))
    }
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

fn kind_arg(k: &str) -> Result<resources::Kind, Status> {
    resources::Kind::from_cli(k).ok_or_else(|| {
        Status::invalid_argument(format!(
            "the server doesn't have a resource type {k:?}; ironmesh serves namespaces (ns), services (svc), networkpolicies (netpol), ippools, bgpadvertisements (bgpadv) and pods (po, read-only: they come from the CNI)"
        ))
    })
}

fn object_status(e: ApplyError) -> Status {
    match e {
        ApplyError::Invalid(m) => Status::invalid_argument(m),
        ApplyError::NotFound(m) => Status::not_found(format!("{m} not found")),
        ApplyError::Allocation(m) => Status::resource_exhausted(m),
        ApplyError::Kv(k) => Status::unavailable(format!("etcd: {k}")),
    }
}

/// Binds the API on the Unix socket `path` now (so a bad path fails at start) and returns
/// the server, which serves until `shutdown` completes.
pub fn serve(
    shared: Arc<Shared>,
    path: &Path,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<impl Future<Output = Result<(), tonic::transport::Error>> + Send + 'static, AgentError>
{
    let incoming = api::unix::bind(path).map_err(|source| AgentError::Api {
        path: path.to_path_buf(),
        source,
    })?;
    tracing::info!(socket = %path.display(), "API listening");
    let svc = pb::mesh_server::MeshServer::new(MeshApi::new(shared));
    Ok(tonic::transport::Server::builder()
        .add_service(svc)
        .serve_with_incoming_shutdown(incoming, shutdown))
}
