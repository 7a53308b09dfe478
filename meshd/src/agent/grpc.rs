//! The gRPC API of meshd (`api/proto/mesh.proto`) over the agent's shared state.

use std::path::Path;
use std::sync::Arc;

use api::mesh as pb;
use common::ServiceKey;
use tonic::{Request, Response, Status};

use super::AgentError;
use super::sinks::EncryptionStatusSource;
use super::state::Shared;
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
