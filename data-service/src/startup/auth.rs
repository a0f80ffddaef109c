//! The way to the auth-service: every `--auth-url` address as a configured endpoint (TLS
//! applied), and the channel that spreads unary calls over them.

use std::time::Duration;

use anyhow::Context;
use common::tls::ClientTls;
use tonic::transport::Endpoint;

use crate::{auth_channel::AuthChannel, config::Settings};

/// The auth-service replicas as this service reaches them.
pub struct AuthLink {
    /// Each address with its URL (for logs); a revocation watcher streams from each.
    pub endpoints: Vec<(String, Endpoint)>,
    /// Unary calls (credentials, keys, health), spread over the replicas.
    pub channel: AuthChannel,
    /// Longest one unary call may take (`--auth-timeout-ms`).
    pub timeout: Duration,
}

impl AuthLink {
    /// The endpoints and channel `settings` describe.
    pub fn new(settings: &Settings) -> anyhow::Result<Self> {
        let timeout = Duration::from_millis(settings.auth_timeout_ms);
        let tls = ClientTls::load(
            settings.auth_ca.as_deref(),
            settings.auth_client_cert.as_deref(),
            settings.auth_client_key.as_deref(),
            ["--auth-ca", "--auth-client-cert", "--auth-client-key"],
        )?;
        let endpoints = auth_endpoints(&settings.auth_url, timeout, &tls)?;
        let channel = AuthChannel::new(&endpoints, timeout);
        Ok(Self {
            endpoints,
            channel,
            timeout,
        })
    }
}

/// The auth-service addresses, each with its URL (for logs), parsed and configured, with
/// `tls` applied: every channel to the auth-service (the [`AuthChannel`] and each
/// revocation watcher's) is built from these.
fn auth_endpoints(
    urls: &[String],
    timeout: Duration,
    tls: &ClientTls,
) -> anyhow::Result<Vec<(String, Endpoint)>> {
    let urls: Vec<&String> = urls.iter().filter(|url| !url.trim().is_empty()).collect();
    anyhow::ensure!(!urls.is_empty(), "--auth-url names no auth-service");
    urls.into_iter()
        .map(|url| {
            let endpoint = Endpoint::from_shared(url.trim().to_owned())
                .with_context(|| format!("--auth-url {url:?}"))?
                .connect_timeout(timeout)
                .tcp_nodelay(true);
            let endpoint = tls
                .apply(endpoint)
                .with_context(|| format!("--auth-url {url:?}"))?;
            Ok((url.trim().to_owned(), endpoint))
        })
        .collect()
}
