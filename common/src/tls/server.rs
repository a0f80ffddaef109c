//! A server's own TLS: the `--tls-cert`/`--tls-key` flags and the configuration read from
//! them at startup, requiring client certificates when a client CA is given.

use std::path::{Path, PathBuf};

use anyhow::bail;
use clap::Args;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use super::{ClientCertLayer, HANDSHAKE_TIMEOUT, read, read_pem};

/// The certificate and key a gRPC server presents: both or neither.
#[derive(Args, Clone, Debug, Default)]
pub struct ServerTlsSettings {
    /// PEM certificate chain (the server's certificate first) the gRPC server presents. With
    /// --tls-key the port speaks only TLS; without both it speaks plaintext h2c.
    #[arg(long, env = "DYNAGATE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(long, env = "DYNAGATE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
}

impl ServerTlsSettings {
    /// The certificate and key paths, `None` without TLS; an error when only one is set.
    pub fn paths(&self) -> anyhow::Result<Option<(&Path, &Path)>> {
        match (&self.tls_cert, &self.tls_key) {
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => Ok(Some((cert, key))),
            _ => bail!("--tls-cert and --tls-key go together"),
        }
    }
}

/// A server's TLS, read and checked at startup.
#[derive(Clone)]
pub struct ServerTls {
    config: ServerTlsConfig,
    require_client_cert: bool,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("require_client_cert", &self.require_client_cert)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// The server's TLS from `settings`, requiring client certificates signed by `client_ca`
    /// when given: `None` when TLS is off. Unreadable or unusable files are an error here, at
    /// startup, not at the first connection.
    pub fn load(
        settings: &ServerTlsSettings,
        client_ca: Option<&Path>,
    ) -> anyhow::Result<Option<Self>> {
        let Some((cert, key)) = settings.paths()? else {
            if client_ca.is_some() {
                bail!("--tls-client-ca needs --tls-cert and --tls-key");
            }
            return Ok(None);
        };
        let identity = Identity::from_pem(read_pem(cert, "--tls-cert")?, read(key, "--tls-key")?);
        let mut config = ServerTlsConfig::new()
            .identity(identity)
            .timeout(HANDSHAKE_TIMEOUT);
        if let Some(ca) = client_ca {
            // Optional at the handshake so the health service stays reachable; every other
            // call is refused without a certificate by [`ClientCertLayer`]. A certificate that
            // does not chain to the CA still fails the handshake.
            config = config
                .client_ca_root(Certificate::from_pem(read_pem(ca, "--tls-client-ca")?))
                .client_auth_optional(true);
        }
        // Builds the rustls acceptor once now, so a bad key or certificate stops startup.
        tonic::transport::Server::builder()
            .tls_config(config.clone())
            .map_err(|error| anyhow::anyhow!("--tls-cert/--tls-key: {error}"))?;
        Ok(Some(Self {
            config,
            require_client_cert: client_ca.is_some(),
        }))
    }

    /// TLS that requires a client certificate signed by `client_ca` at the handshake itself:
    /// a client without one, or with one from another CA, never gets a connection. For a
    /// listener with nothing open to anonymous clients (the auth-service's admin listener);
    /// `flags` names the three files' flags in errors (certificate, key, client CA).
    pub fn require_client_certs(
        cert: &Path,
        key: &Path,
        client_ca: &Path,
        flags: [&str; 3],
    ) -> anyhow::Result<Self> {
        let [cert_flag, key_flag, ca_flag] = flags;
        let identity = Identity::from_pem(read_pem(cert, cert_flag)?, read(key, key_flag)?);
        let config = ServerTlsConfig::new()
            .identity(identity)
            .timeout(HANDSHAKE_TIMEOUT)
            .client_ca_root(Certificate::from_pem(read_pem(client_ca, ca_flag)?))
            .client_auth_optional(false);
        tonic::transport::Server::builder()
            .tls_config(config.clone())
            .map_err(|error| anyhow::anyhow!("{cert_flag}/{key_flag}: {error}"))?;
        Ok(Self {
            config,
            // Refused at the handshake already: the layer has nothing left to refuse.
            require_client_cert: false,
        })
    }

    /// The tonic configuration.
    pub fn config(&self) -> ServerTlsConfig {
        self.config.clone()
    }

    /// The layer that refuses calls without a client certificate when one is required.
    pub fn client_cert_layer(tls: Option<&Self>) -> ClientCertLayer {
        ClientCertLayer::new(tls.is_some_and(|tls| tls.require_client_cert))
    }
}
