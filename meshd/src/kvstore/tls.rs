//! TLS options for the etcd client, from PEM files (feature `tls`).

use etcd_client::ConnectOptions;

use super::{KvError, TlsFiles};

#[cfg(feature = "tls")]
pub(super) fn apply(opts: ConnectOptions, files: &TlsFiles) -> Result<ConnectOptions, KvError> {
    use etcd_client::{Certificate, Identity, TlsOptions};
    let read = |field: &str, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| KvError::Tls {
            field: field.into(),
            detail: format!("reading {}: {e}", path.display()),
        })
    };
    let mut tls = TlsOptions::new().ca_certificate(Certificate::from_pem(read("ca", &files.ca)?));
    if let Some((cert, key)) = &files.client_cert {
        tls = tls.identity(Identity::from_pem(
            read("client_cert", cert)?,
            read("client_key", key)?,
        ));
    }
    if let Some(name) = &files.server_name {
        tls = tls.domain_name(name.clone());
    }
    Ok(opts.with_tls(tls))
}

#[cfg(not(feature = "tls"))]
pub(super) fn apply(_opts: ConnectOptions, _files: &TlsFiles) -> Result<ConnectOptions, KvError> {
    Err(KvError::Tls {
        field: "tls".into(),
        detail: "this meshd was built without TLS support; rebuild with `--features tls`".into(),
    })
}
