//! Who an admin call comes from: the subject of the client certificate the admin listener
//! verified at the handshake (every connection there has one), for the audit log.

use tonic::Request;

use crate::{end_user::ClientInfo, error::AuthError};

/// The longest subject kept: a certificate our admin CA signed is not text a client typed, so
/// it is not cut to the 64 characters of `common::telemetry::typed`, but it stays bounded.
pub const MAX_SUBJECT_CHARS: usize = 256;

/// The admin behind a call: its certificate's subject and its address.
#[derive(Clone, Debug)]
pub struct Admin {
    /// The client certificate's subject, RFC 4514 style (`CN=ops, O=Example`), control
    /// characters replaced and at most [`MAX_SUBJECT_CHARS`] characters.
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
    Ok(printable(&cert.subject().to_string()))
}

/// `subject` with control characters replaced by U+FFFD, cut to [`MAX_SUBJECT_CHARS`].
fn printable(subject: &str) -> String {
    let clean = |c: char| if c.is_control() { '\u{fffd}' } else { c };
    let mut text: String = subject.chars().take(MAX_SUBJECT_CHARS).map(clean).collect();
    if subject.chars().nth(MAX_SUBJECT_CHARS).is_some() {
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subject_is_kept_whole_up_to_the_bound_and_never_carries_control_characters() {
        let long = "CN=alice@example.com, OU=Platform Operations, O=Example Corp, C=US";
        assert_eq!(printable(long), long);
        assert_eq!(printable("CN=a\nb"), "CN=a\u{fffd}b");
        let huge = "x".repeat(MAX_SUBJECT_CHARS + 10);
        assert_eq!(printable(&huge).chars().count(), MAX_SUBJECT_CHARS + 1);
    }

    #[test]
    fn garbage_is_an_internal_error_not_a_panic() {
        assert!(matches!(
            subject_of(b"not a certificate"),
            Err(AuthError::Internal(_))
        ));
    }
}
