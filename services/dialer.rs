//! Pooled gRPC channels to other nodes, one per address, created lazily and reused by every
//! caller (Raft transport, KV forwarding, status fan-out). A channel reconnects by itself
//! after its peer restarts; a dead peer costs at most [`CONNECT_TIMEOUT`] per call.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::services::error::{Error, Result};
use crate::services::tls::TlsMaterials;

/// How long establishing a connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Hands out shared channels by address.
pub struct Dialer {
    tls: Option<ClientTlsConfig>,
    channels: Mutex<HashMap<String, Channel>>,
}

impl Dialer {
    /// A dialer using TLS with `tls`, or plaintext when `None` (`--insecure`).
    pub fn new(tls: Option<&TlsMaterials>) -> Self {
        Self { tls: tls.map(TlsMaterials::grpc_client), channels: Mutex::default() }
    }

    /// The endpoint for `addr` (`host:port`), with this dialer's transport settings.
    pub fn endpoint(&self, addr: &str) -> Result<Endpoint> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|err| Error::InvalidArgument(format!("invalid address {addr:?}: {err}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
        if let Some(tls) = &self.tls {
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|err| Error::FailedPrecondition(format!("TLS configuration: {err}")))?;
        }
        Ok(endpoint)
    }

    /// The shared channel to `addr`.
    pub fn channel(&self, addr: &str) -> Result<Channel> {
        let mut channels = self.channels.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let channel = self.endpoint(addr)?.connect_lazy();
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }
}
