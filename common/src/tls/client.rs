//! TLS on a client channel: the CA it trusts and the certificate it presents for mTLS.

use std::path::Path;

use anyhow::bail;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use super::{HANDSHAKE_TIMEOUT, read, read_pem};

/// Settings of a client channel to a TLS server: the CA to trust and an optional client
/// certificate for mTLS. The data-service builds one from `--auth-ca`,
/// `--auth-client-cert` and `--auth-client-key`.
#[derive(Clone, Debug, Default)]
pub struct ClientTls {
    config: Option<ClientTlsConfig>,
}

impl ClientTls {
    /// Trusts the PEM CA certificates in `ca` (and only those); presents `cert`/`key` when
    /// both are given. Without `ca` only `http://` (plaintext) URLs are accepted.
    pub fn load(
        ca: Option<&Path>,
        cert: Option<&Path>,
        key: Option<&Path>,
        flags: [&str; 3],
    ) -> anyhow::Result<Self> {
        let [ca_flag, cert_flag, key_flag] = flags;
        let identity = match (cert, key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(Identity::from_pem(
                read_pem(cert, cert_flag)?,
                read(key, key_flag)?,
            )),
            _ => bail!("{cert_flag} and {key_flag} go together"),
        };
        let Some(ca) = ca else {
            if identity.is_some() {
                bail!("{cert_flag} needs {ca_flag}");
            }
            return Ok(Self::default());
        };
        let mut config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read_pem(ca, ca_flag)?))
            .timeout(HANDSHAKE_TIMEOUT);
        if let Some(identity) = identity {
            config = config.identity(identity);
        }
        Ok(Self {
            config: Some(config),
        })
    }

    /// Applies the configuration to `endpoint`. A plaintext URL with a CA configured is an
    /// error (the operator meant TLS), and so is an `https://` URL without one (no system
    /// roots are built in, so every handshake would fail later, less clearly).
    pub fn apply(&self, endpoint: Endpoint) -> anyhow::Result<Endpoint> {
        let https = endpoint.uri().scheme_str() == Some("https");
        match (&self.config, https) {
            (Some(config), true) => Ok(endpoint.tls_config(config.clone())?),
            (Some(_), false) => bail!(
                "{} is not https:// although a CA to trust for it is configured",
                endpoint.uri()
            ),
            (None, true) => bail!(
                "{} is https:// but no CA to trust for it is configured",
                endpoint.uri()
            ),
            (None, false) => Ok(endpoint),
        }
    }
}
