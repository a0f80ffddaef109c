//! Who an admin call comes from: the subject of the client certificate the admin listener
//! verified at the handshake (every connection there has one), for the audit log.

use tonic::Request;

use crate::{end_user::ClientInfo, error::AuthError};

/// The admin behind a call: its certificate's subject and its address.
#[derive(Clone, Debug)]
pub struct Admin {
    /// The client certificate's subject, RFC 4514 style (`CN=ops, O=Example`).
    pub subject: String,
    /// The peer's address (no proxy is trusted on the admin listener).
    pub client: ClientInfo,
}

impl Admin {
    /// The admin of `request`. A call without a verified certificate cannot reach a handler
    /// (the handshake requires one), so its absence is a bug, failed closed.
    pub fn of<T>(request: &Request<T>) -> Result<Self, AuthError> {
        let certs = request.peer_certs().ok_or_else(|| {
            AuthError::Internal(anyhow::anyhow!(
                "an admin call without a client certificate"
            ))
        })?;
        let leaf = certs.first().ok_or_else(|| {
            AuthError::Internal(anyhow::anyhow!(
                "an admin call with an empty certificate chain"
            ))
        })?;
        let subject = subject_of(leaf.as_ref())?;
        let client = ClientInfo {
            addr: request.remote_addr().map(|addr| addr.ip()),
            user_agent: None,
        };
        Ok(Self { subject, client })
    }
}

/// The subject of a DER certificate, as text.
fn subject_of(der: &[u8]) -> Result<String, AuthError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|error| {
        AuthError::Internal(anyhow::anyhow!(
            "a verified client certificate does not parse: {error}"
        ))
    })?;
    Ok(cert.subject().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_internal_error_not_a_panic() {
        assert!(matches!(
            subject_of(b"not a certificate"),
            Err(AuthError::Internal(_))
        ));
    }
}
