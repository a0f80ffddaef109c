//! The `health-check` subcommand's TLS: pinned to the server's own certificate, so it needs
//! no CA and no host name and trusts nothing else.

use std::sync::Arc;

use anyhow::Context as _;
use rustls::{
    DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::WebPkiSupportedAlgorithms,
    pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject},
};
use tonic::transport::{ClientTlsConfig, Endpoint};

use super::{HANDSHAKE_TIMEOUT, ServerTlsSettings, read_pem};

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
