//! ListUsers' opaque page tokens: the username to resume after, sealed with PASETO v4.local
//! under a key derived from the audit key (so every replica given the same audit key opens
//! every replica's tokens) and bound by implicit assertion to ListUsers, so no token made for
//! anything else opens here. A token that does not open is INVALID_ARGUMENT, never a scan from
//! a position the client chose.

use common::status::Violation;
use pasetors::{
    Local,
    keys::SymmetricKey,
    token::UntrustedToken,
    version4::{LocalToken, V4},
};

use crate::{audit::AuditKey, error::AuthError};

/// Longest page token accepted: a 256-character username seals to well under 1 KB.
const MAX_TOKEN_LEN: usize = 1024;
/// The implicit assertion: what the tokens are for.
const ASSERTION: &[u8] = b"dynagate.admin.v1.AdminService/ListUsers";
/// The purpose the key is derived for.
const KEY_PURPOSE: &str = "admin page tokens";

/// Seals and opens ListUsers page tokens.
pub struct PageTokens {
    key: SymmetricKey<V4>,
}

impl std::fmt::Debug for PageTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageTokens").finish_non_exhaustive()
    }
}

impl PageTokens {
    /// Tokens under the key derived from `audit_key`.
    pub fn new(audit_key: &AuditKey) -> anyhow::Result<Self> {
        let key = SymmetricKey::<V4>::from(&audit_key.derive(KEY_PURPOSE))
            .map_err(|error| anyhow::anyhow!("the page-token key: {error}"))?;
        Ok(Self { key })
    }

    /// A token that resumes a listing after `username`.
    pub fn seal(&self, username: &str) -> Result<String, AuthError> {
        LocalToken::encrypt(&self.key, username.as_bytes(), None, Some(ASSERTION))
            .map_err(|error| AuthError::Internal(anyhow::anyhow!("sealing a page token: {error}")))
    }

    /// The username a token resumes after, if we sealed it for ListUsers.
    pub fn open(&self, token: &str) -> Result<String, AuthError> {
        let invalid = || {
            AuthError::InvalidArgument(vec![Violation::new(
                "page_token",
                "not a page token of ListUsers",
            )])
        };
        if token.len() > MAX_TOKEN_LEN {
            return Err(invalid());
        }
        let untrusted = UntrustedToken::<Local, V4>::try_from(token).map_err(|_| invalid())?;
        let trusted = LocalToken::decrypt(&self.key, &untrusted, None, Some(ASSERTION))
            .map_err(|_| invalid())?;
        Ok(trusted.payload().to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> PageTokens {
        PageTokens::new(&AuditKey::random().unwrap()).unwrap()
    }

    #[test]
    fn a_sealed_username_opens_again() {
        let tokens = tokens();
        let token = tokens.seal("alice").unwrap();
        assert_eq!(tokens.open(&token).unwrap(), "alice");
    }

    #[test]
    fn another_key_a_changed_byte_or_garbage_is_invalid_argument() {
        let (ours, theirs) = (tokens(), tokens());
        let token = theirs.seal("alice").unwrap();
        let mut flipped = ours.seal("alice").unwrap().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        for bad in [token.as_str(), flipped.as_str(), "v4.local.garbage", "x"] {
            assert!(
                matches!(ours.open(bad), Err(AuthError::InvalidArgument(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            ours.open(&"a".repeat(MAX_TOKEN_LEN + 1)),
            Err(AuthError::InvalidArgument(_))
        ));
    }
}
