//! TOTP secrets at rest: sealed as PASETO v4.local (XChaCha20 + BLAKE2b-MAC) under a server
//! key, the user id as implicit assertion, so a sealed secret copied into another user's item
//! does not open. Whoever reads the users table learns nothing of the secrets.

use anyhow::Context;
use pasetors::{
    Local,
    keys::{Generate, SymmetricKey},
    token::UntrustedToken,
    version4::{LocalToken, V4},
};
use secrecy::{ExposeSecret, SecretString};

use super::totp::TotpSecret;
use crate::error::AuthError;

/// Separates this use of the key from any other, should the key ever be shared by mistake.
const PURPOSE: &[u8] = b"dynagate.auth.totp-secret\0";

/// Seals and opens TOTP secrets with one key.
pub struct Sealer {
    key: SymmetricKey<V4>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer").finish_non_exhaustive()
    }
}

impl Sealer {
    /// From a PASERK `k4.local` key.
    pub fn from_paserk(key: &SecretString) -> anyhow::Result<Self> {
        let key = SymmetricKey::<V4>::try_from(key.expose_secret().trim())
            .map_err(|_| anyhow::anyhow!("the TOTP key is not a PASERK k4.local"))?;
        Ok(Self { key })
    }

    /// A new key as PASERK `k4.local`, for `--totp-key-file` (`auth-service generate-totp-key`).
    pub fn generate_paserk() -> anyhow::Result<SecretString> {
        let key = SymmetricKey::<V4>::generate().map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(SecretString::from(common::tokens::paserk(&key)))
    }

    /// With a random key (local development only: sealed secrets die with the process).
    pub fn generate() -> anyhow::Result<Self> {
        let key = SymmetricKey::<V4>::generate().map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Self { key })
    }

    /// `secret`, sealed for `user_id`.
    pub fn seal(&self, user_id: &str, secret: &TotpSecret) -> Result<String, AuthError> {
        let plain = secret.base32();
        LocalToken::encrypt(
            &self.key,
            plain.expose_secret().as_bytes(),
            None,
            Some(&assertion(user_id)),
        )
        .map_err(|e| anyhow::anyhow!("sealing a TOTP secret: {e}"))
        .map_err(AuthError::Internal)
    }

    /// The secret `sealed` holds, if it was sealed under this key for `user_id`. Anything
    /// else is our own data gone wrong (another key configured, a tampered item): internal.
    pub fn open(&self, user_id: &str, sealed: &str) -> Result<TotpSecret, AuthError> {
        let untrusted = UntrustedToken::<Local, V4>::try_from(sealed).map_err(|_| {
            anyhow::anyhow!("the stored TOTP secret of user {user_id} is no v4.local token")
        })?;
        let trusted = LocalToken::decrypt(&self.key, &untrusted, None, Some(&assertion(user_id)))
            .map_err(|_| {
            anyhow::anyhow!(
                "the stored TOTP secret of user {user_id} does not open with the configured \
                     TOTP key (another key, or the item was altered)"
            )
        })?;
        TotpSecret::from_base32(trusted.payload())
            .context("a sealed TOTP secret holds no secret")
            .map_err(AuthError::Internal)
    }
}

/// The implicit assertion: the purpose, then the user id.
fn assertion(user_id: &str) -> Vec<u8> {
    [PURPOSE, user_id.as_bytes()].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_secret_opens_for_its_user_under_its_key_only() {
        let sealer = Sealer::generate().unwrap();
        let secret = TotpSecret::generate();
        let sealed = sealer.seal("alice", &secret).unwrap();

        assert!(sealed.starts_with("v4.local."));
        assert!(!sealed.contains(secret.base32().expose_secret()));
        let opened = sealer.open("alice", &sealed).unwrap();
        assert_eq!(
            opened.base32().expose_secret(),
            secret.base32().expose_secret()
        );
        assert!(sealer.open("bob", &sealed).is_err(), "another user");
        let other = Sealer::generate().unwrap();
        assert!(other.open("alice", &sealed).is_err(), "another key");
        assert!(sealer.open("alice", "v4.local.garbage").is_err());
    }

    #[test]
    fn keys_are_paserk_k4_local() {
        let key = SecretString::from(common::tokens::paserk(
            &SymmetricKey::<V4>::generate().unwrap(),
        ));
        assert!(Sealer::from_paserk(&key).is_ok());
        assert!(Sealer::from_paserk(&SecretString::from("k4.secret.x")).is_err());
    }
}
