//! Certificates on disk and the TLS configurations built from them. File names follow
//! CockroachDB's certs directory: `ca.crt`, `node.crt`/`node.key`, `client.<user>.crt`/`.key`.
//! Node-to-node gRPC is mutual TLS: servers require a certificate signed by the cluster CA,
//! and nodes present their node certificate as clients.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::services::error::{Error, Result};

/// The CA certificate file name.
pub const CA_CERT: &str = "ca.crt";
/// The CA key file name (kept beside the certs by default, as `cockroach cert` does with `--ca-key`).
pub const CA_KEY: &str = "ca.key";
/// The node certificate file name.
pub const NODE_CERT: &str = "node.crt";
/// The node key file name.
pub const NODE_KEY: &str = "node.key";

/// The client certificate file name of `user`.
pub fn client_cert_name(user: &str) -> String {
    format!("client.{user}.crt")
}

/// The client key file name of `user`.
pub fn client_key_name(user: &str) -> String {
    format!("client.{user}.key")
}

/// A CA and one identity (certificate and key), in PEM.
#[derive(Clone)]
pub struct TlsMaterials {
    /// The cluster CA certificate.
    pub ca_pem: Vec<u8>,
    /// This side's certificate chain.
    pub cert_pem: Vec<u8>,
    /// This side's private key.
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for TlsMaterials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.write_str("TlsMaterials { .. }")
    }
}

fn read(dir: &Path, name: &str) -> Result<Vec<u8>> {
    let path: PathBuf = dir.join(name);
    std::fs::read(&path).map_err(|err| Error::FailedPrecondition(format!("cannot read {}: {err}", path.display())))
}

impl TlsMaterials {
    /// Loads the node identity from `certs_dir`.
    pub fn load_node(certs_dir: &Path) -> Result<Self> {
        Ok(Self {
            ca_pem: read(certs_dir, CA_CERT)?,
            cert_pem: read(certs_dir, NODE_CERT)?,
            key_pem: read(certs_dir, NODE_KEY)?,
        })
    }

    /// Loads the identity a CLI command presents: `client.<user>.crt` if present, otherwise
    /// the node certificate (as on a node's own machine).
    pub fn load_client(certs_dir: &Path, user: &str) -> Result<Self> {
        if certs_dir.join(client_cert_name(user)).exists() {
            return Ok(Self {
                ca_pem: read(certs_dir, CA_CERT)?,
                cert_pem: read(certs_dir, &client_cert_name(user))?,
                key_pem: read(certs_dir, &client_key_name(user))?,
            });
        }
        if certs_dir.join(NODE_CERT).exists() {
            return Self::load_node(certs_dir);
        }
        Err(Error::FailedPrecondition(format!(
            "no client certificate for {user} in {} (expected {} or {})",
            certs_dir.display(),
            client_cert_name(user),
            NODE_CERT
        )))
    }

    /// A rustls server configuration with our certificate, no client authentication, and the
    /// given ALPN protocols (PostgreSQL and HTTP need different ones).
    pub fn rustls_server(&self, alpn: &[&[u8]]) -> Result<std::sync::Arc<rustls::ServerConfig>> {
        self.rustls_server_with(rustls::server::WebPkiClientVerifier::no_client_auth(), alpn)
    }

    /// The gRPC server configuration: our certificate, client certificates signed by the
    /// cluster CA required, HTTP/2 only. The node runs the handshake itself (with a deadline)
    /// and hands tonic the finished stream.
    pub fn grpc_server(&self) -> Result<std::sync::Arc<rustls::ServerConfig>> {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&self.ca_pem) {
            let cert = cert.map_err(|err| Error::FailedPrecondition(format!("invalid CA certificate: {err}")))?;
            roots.add(cert).map_err(|err| Error::FailedPrecondition(format!("invalid CA certificate: {err}")))?;
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            std::sync::Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .map_err(|err| Error::FailedPrecondition(format!("TLS client verifier: {err}")))?;
        self.rustls_server_with(verifier, &[b"h2"])
    }

    fn rustls_server_with(
        &self,
        verifier: std::sync::Arc<dyn rustls::server::danger::ClientCertVerifier>,
        alpn: &[&[u8]],
    ) -> Result<std::sync::Arc<rustls::ServerConfig>> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let certs = CertificateDer::pem_slice_iter(&self.cert_pem)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|err| Error::FailedPrecondition(format!("invalid certificate: {err}")))?;
        let key = PrivateKeyDer::from_pem_slice(&self.key_pem)
            .map_err(|err| Error::FailedPrecondition(format!("invalid private key: {err}")))?;
        let mut config =
            rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|err| Error::FailedPrecondition(format!("TLS configuration: {err}")))?
                .with_client_cert_verifier(verifier)
                .with_single_cert(certs, key)
                .map_err(|err| Error::FailedPrecondition(format!("TLS configuration: {err}")))?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(std::sync::Arc::new(config))
    }

    /// The gRPC client configuration: trust the cluster CA, present our certificate.
    pub fn grpc_client(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
    }
}
