//! Recovery tokens: the opaque `dgrec1_` strings a trusted backend hands a user out of band.
//! One carries a 256-bit random secret and names the account it is for (its folded username,
//! which is no secret: the user asked for it), like a refresh token names its session. Only a
//! SHA-256 of the secret is stored.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use secrecy::{ExposeSecret, SecretBox, SecretString};
use sha2::{Digest, Sha256};

use crate::validation;

/// Prefix that makes recovery tokens recognisable to secret scanners and humans.
const PREFIX: &str = "dgrec1_";
/// Random bytes per token: 256 bits.
const SECRET_LEN: usize = 32;
/// Separates these hashes from any other SHA-256 use.
const PURPOSE: &[u8] = b"dynagate.auth.recovery-token\0";
/// The longest body we decode: base64url of the secret and the longest username.
const MAX_BODY: usize = (SECRET_LEN + *validation::USERNAME_LEN.end()).div_ceil(3) * 4;

/// A decoded recovery token: whose account, and its secret.
pub struct RecoveryToken {
    /// The folded username of the account it resets.
    pub username: String,
    secret: SecretBox<[u8; SECRET_LEN]>,
}

impl RecoveryToken {
    /// A new token for `username` (folded), with a fresh random secret.
    pub fn generate(username: &str) -> Self {
        Self {
            username: username.to_owned(),
            secret: SecretBox::new(Box::new(rand::random())),
        }
    }

    /// The only form ever stored: SHA-256 of the secret (domain-separated), base64url. The
    /// secret has 256 bits of entropy, so no guess list covers it and a fast unkeyed hash is
    /// enough: a key would protect nothing more, and would be one more secret to rotate.
    pub fn stored_hash(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(PURPOSE);
        hasher.update(self.secret.expose_secret());
        URL_SAFE_NO_PAD.encode(hasher.finalize())
    }

    /// The string handed to the backend: the prefix, then base64url of secret ‖ username.
    pub fn encode(&self) -> SecretString {
        let mut raw = Vec::with_capacity(SECRET_LEN + self.username.len());
        raw.extend_from_slice(self.secret.expose_secret());
        raw.extend_from_slice(self.username.as_bytes());
        SecretString::from(format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(raw)))
    }

    /// Parses a presented token; `None` for anything that is not exactly one of ours (the
    /// work bounded before decoding, the username valid and folded).
    pub fn decode(text: &str) -> Option<Self> {
        let body = text.strip_prefix(PREFIX)?;
        if body.len() > MAX_BODY {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(body).ok()?;
        if raw.len() <= SECRET_LEN {
            return None;
        }
        let (secret, username) = raw.split_at(SECRET_LEN);
        let username = std::str::from_utf8(username).ok()?;
        if validation::username(username).ok()? != username {
            return None;
        }
        let secret: [u8; SECRET_LEN] = secret.try_into().ok()?;
        Some(Self {
            username: username.to_owned(),
            secret: SecretBox::new(Box::new(secret)),
        })
    }
}

impl std::fmt::Debug for RecoveryToken {
    /// The username only: the secret never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecoveryToken")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_token_round_trips_and_keeps_its_hash() {
        let token = RecoveryToken::generate("alice");
        let text = token.encode();
        assert!(text.expose_secret().starts_with(PREFIX));
        let decoded = RecoveryToken::decode(text.expose_secret()).expect("decodes");
        assert_eq!(decoded.username, "alice");
        assert_eq!(decoded.stored_hash(), token.stored_hash());
        assert_ne!(
            RecoveryToken::generate("alice").stored_hash(),
            token.stored_hash()
        );
    }

    #[test]
    fn the_longest_username_fits_and_one_more_byte_does_not() {
        let name = "a".repeat(*validation::USERNAME_LEN.end());
        let text = RecoveryToken::generate(&name).encode();
        assert!(RecoveryToken::decode(text.expose_secret()).is_some());
        let mut raw = vec![7u8; SECRET_LEN];
        raw.extend_from_slice(format!("{name}a").as_bytes());
        let longer = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(raw));
        assert!(RecoveryToken::decode(&longer).is_none());
    }

    #[test]
    fn tokens_naming_no_valid_folded_username_are_refused() {
        for name in ["", "ab", "Alice", "al ice", "al/ice"] {
            let mut raw = vec![7u8; SECRET_LEN];
            raw.extend_from_slice(name.as_bytes());
            let text = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(raw));
            assert!(RecoveryToken::decode(&text).is_none(), "{name:?}");
        }
        let refresh_like = format!("dgr1_{}", "A".repeat(86));
        assert!(RecoveryToken::decode(&refresh_like).is_none());
    }

    proptest! {
        #[test]
        fn decoding_any_text_never_panics(text in "\\PC{0,300}") {
            let _ = RecoveryToken::decode(&text);
            let _ = RecoveryToken::decode(&format!("{PREFIX}{text}"));
        }

        #[test]
        fn every_valid_username_round_trips(name in "[a-z0-9._-]{3,64}") {
            let token = RecoveryToken::generate(&name);
            let decoded = RecoveryToken::decode(token.encode().expose_secret()).unwrap();
            prop_assert_eq!(&decoded.username, &name);
            prop_assert_eq!(decoded.stored_hash(), token.stored_hash());
        }
    }
}
