//! Optional TLS (rustls with ring) on both gRPC servers, on the data-service's channel to the
//! auth-service, and in the `health-check` subcommand.
//!
//! - A server with `--tls-cert` and `--tls-key` speaks only TLS (1.2 or 1.3) on its one port.
//! - With a client CA (the auth-service's `--tls-client-ca`) every call needs a client
//!   certificate that CA signed. A certificate from anyone else fails the handshake; a client
//!   with none is answered UNAUTHENTICATED on every RPC except `grpc.health.v1.Health`, so the
//!   container's `health-check` (which has no client certificate) still works.
//! - The `health-check` subcommand pins the server's own certificate: it accepts exactly the
//!   first certificate of `--tls-cert` (and checks the handshake signature with it), so it
//!   needs no CA and no host name and trusts nothing else.

use std::{
    fs,
    future::Future,
    path::{Path, PathBuf},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use anyhow::{Context as _, bail};
use clap::Args;
use rustls::{
    DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::WebPkiSupportedAlgorithms,
    pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject},
};
use tonic::transport::{
    Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig,
    server::{TcpConnectInfo, TlsConnectInfo},
};
use tower::{Layer, Service};

/// How long a client may take to finish the TLS handshake before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The path prefix of the health service, open to clients without a certificate.
const HEALTH_PATH: &str = "/grpc.health.v1.Health/";

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

    /// The tonic configuration.
    pub fn config(&self) -> ServerTlsConfig {
        self.config.clone()
    }

    /// The layer that refuses calls without a client certificate when one is required.
    pub fn client_cert_layer(tls: Option<&Self>) -> ClientCertLayer {
        ClientCertLayer {
            required: tls.is_some_and(|tls| tls.require_client_cert),
        }
    }
}

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

/// An endpoint for the `health-check` subcommand: plaintext without TLS; with TLS, pinned to
/// the server's own certificate (the first in `settings.tls_cert`), whatever name it carries.
pub fn health_check_endpoint(
    addr: std::net::SocketAddr,
    settings: &ServerTlsSettings,
) -> anyhow::Result<Endpoint> {
    let Some((cert, _)) = settings.paths()? else {
        return Ok(Endpoint::from_shared(format!("http://{addr}"))?);
    };
    let pem = read_pem(cert, "--tls-cert")?;
    let pinned = CertificateDer::pem_slice_iter(&pem)
        .next()
        .context("--tls-cert holds no certificate")?
        .context("--tls-cert")?;
    let verifier = PinnedCert {
        cert: pinned,
        algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
    };
    let endpoint = Endpoint::from_shared(format!("https://{addr}"))?.tls_config_with_verifier(
        ClientTlsConfig::new()
            .domain_name("localhost")
            .timeout(HANDSHAKE_TIMEOUT),
        Arc::new(verifier),
    )?;
    Ok(endpoint)
}

/// Accepts exactly one certificate: the server's own.
#[derive(Debug)]
struct PinnedCert {
    cert: CertificateDer<'static>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the server presents a certificate other than --tls-cert".to_owned(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

fn read(path: &Path, flag: &str) -> anyhow::Result<Vec<u8>> {
    fs::read(path).with_context(|| format!("{flag} {}", path.display()))
}

/// Reads a PEM file, refusing one without a PEM block (a DER file given by mistake).
fn read_pem(path: &Path, flag: &str) -> anyhow::Result<Vec<u8>> {
    let pem = read(path, flag)?;
    if CertificateDer::pem_slice_iter(&pem).next().is_none() {
        bail!("{flag} {}: no PEM certificate in it", path.display());
    }
    Ok(pem)
}

/// Refuses every call that came without a verified client certificate, except health checks,
/// when required (the auth-service's `--tls-client-ca`); otherwise passes everything.
#[derive(Clone, Copy, Debug)]
pub struct ClientCertLayer {
    required: bool,
}

impl<S> Layer<S> for ClientCertLayer {
    type Service = ClientCert<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ClientCert {
            inner,
            required: self.required,
        }
    }
}

/// The service [`ClientCertLayer`] builds.
#[derive(Clone, Debug)]
pub struct ClientCert<S> {
    inner: S,
    required: bool,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B, R> Service<http::Request<B>> for ClientCert<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::Either<S::Future, BoxFuture<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let refused = self.required
            && !request.uri().path().starts_with(HEALTH_PATH)
            && request
                .extensions()
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(TlsConnectInfo::peer_certs)
                .is_none_or(|certs| certs.is_empty());
        if refused {
            let response =
                tonic::Status::unauthenticated("this server requires a client certificate (mTLS)")
                    .into_http();
            futures::future::Either::Right(Box::pin(async move { Ok(response) }))
        } else {
            futures::future::Either::Left(self.inner.call(request))
        }
    }
}
