//! `RotateKey`: rotates on the encryption worker's state, then waits (bounded) until the node
//! record carries the new key, so the answer says whether peers can see it yet.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use api::mesh as pb;
use tonic::Status;

use crate::agent::sinks::wireguard::EncryptionStatusSource;
use crate::agent::sinks::wireguard::rotation::RotationError;

/// How long the answer waits for the record write.
const PUBLISH_WAIT: Duration = Duration::from_secs(5);

pub(super) async fn rotate_key(
    src: EncryptionStatusSource,
) -> Result<pb::RotateKeyResponse, Status> {
    let mut published = src.published();
    let node = src.node();
    let r = tokio::task::spawn_blocking(move || src.rotate())
        .await
        .map_err(|e| Status::internal(format!("key rotation task failed: {e}")))?
        .map_err(|e| match e {
            RotationError::Loading | RotationError::NoDevice { .. } => {
                Status::unavailable(e.to_string())
            }
            RotationError::Failed(_) => Status::internal(e.to_string()),
        })?;
    let want = Some(r.public_key.clone());
    let written = tokio::time::timeout(PUBLISH_WAIT, published.wait_for(|k| *k == want))
        .await
        .is_ok_and(|w| w.is_ok());
    Ok(pb::RotateKeyResponse {
        node,
        public_key: r.public_key,
        previous_public_key: r.previous,
        rotated_at_unix_ms: r
            .at
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        published: written,
        published_after_ms: if written {
            SystemTime::now()
                .duration_since(r.at)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0)
        } else {
            0
        },
        note: if written {
            String::new()
        } else {
            format!(
                "the device uses the new key, but the node record did not carry it within {}s \
                 (etcd unreachable?); meshd keeps retrying, and peers reach this node again once \
                 it is written",
                PUBLISH_WAIT.as_secs()
            )
        },
    })
}
