//! The signing key ring: PASERK `k4.secret` keys, the newest signing, all published.
//! Rotation: append a key, wait one access-token lifetime, then drop the oldest.

use std::{fmt, path::Path};

use anyhow::{Context, bail};
use common::tokens::{self, VerifyingKeys};
use pasetors::{
    keys::{AsymmetricKeyPair, AsymmetricPublicKey, AsymmetricSecretKey, Generate},
    version4::V4,
};
use secrecy::{ExposeSecret, SecretString};

use crate::config::Settings;

/// One Ed25519 key of the ring.
pub struct SigningKey {
    /// PASERK id (`k4.pid.…`) of the public key.
    pub kid: String,
    /// PASERK `k4.public.…`.
    pub public_paserk: String,
    /// The footer every token signed by this key carries, serialised once.
    pub footer: Vec<u8>,
    secret: AsymmetricSecretKey<V4>,
    public: AsymmetricPublicKey<V4>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    fn from_secret(secret: AsymmetricSecretKey<V4>) -> anyhow::Result<Self> {
        let public = AsymmetricPublicKey::<V4>::try_from(&secret)
            .map_err(|e| anyhow::anyhow!("deriving the public key: {e}"))?;
        let kid = tokens::key_id(&public);
        let footer = serde_json::to_vec(&tokens::Footer { kid: kid.clone() })?;
        Ok(Self {
            public_paserk: tokens::paserk(&public),
            kid,
            footer,
            secret,
            public,
        })
    }

    /// The secret key, for signing only.
    pub fn secret(&self) -> &AsymmetricSecretKey<V4> {
        &self.secret
    }
}

/// All signing keys, oldest first; the last one signs.
#[derive(Debug)]
pub struct KeyRing {
    keys: Vec<SigningKey>,
    verifying: VerifyingKeys,
}

impl KeyRing {
    /// Parses PASERK `k4.secret` keys separated by whitespace or commas; `#` starts a comment
    /// that runs to the end of the line. Duplicates are refused: they would hide a rotation
    /// mistake.
    pub fn parse(text: &SecretString) -> anyhow::Result<Self> {
        let mut keys: Vec<SigningKey> = Vec::new();
        let words = text
            .expose_secret()
            .lines()
            .map(|line| line.split('#').next().unwrap_or_default())
            .flat_map(|line| line.split(|c: char| c == ',' || c.is_whitespace()))
            .filter(|word| !word.is_empty());
        for (index, word) in words.enumerate() {
            let secret = AsymmetricSecretKey::<V4>::try_from(word).map_err(|_| {
                anyhow::anyhow!("signing key #{} is not a PASERK k4.secret", index + 1)
            })?;
            let key = SigningKey::from_secret(secret)?;
            if keys.iter().any(|k| k.kid == key.kid) {
                bail!("signing key {} is listed twice", key.kid);
            }
            keys.push(key);
        }
        Self::of(keys)
    }

    fn of(keys: Vec<SigningKey>) -> anyhow::Result<Self> {
        if keys.is_empty() {
            bail!("no signing key found");
        }
        let mut verifying = VerifyingKeys::default();
        for key in &keys {
            verifying.insert(key.public.clone());
        }
        Ok(Self { keys, verifying })
    }

    /// A ring of one freshly generated key.
    pub fn generate() -> anyhow::Result<Self> {
        let pair = AsymmetricKeyPair::<V4>::generate()
            .map_err(|e| anyhow::anyhow!("generating a signing key: {e}"))?;
        Self::of(vec![SigningKey::from_secret(pair.secret)?])
    }

    /// The ring the settings describe: the keys file, else the keys variable, else (only when
    /// explicitly allowed, for local development) a generated key, announced loudly.
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Self> {
        match (&settings.signing_keys_file, &settings.signing_keys) {
            (Some(_), Some(_)) => {
                bail!("set either --signing-keys-file or DYNAGATE_SIGNING_KEYS, not both")
            }
            (Some(path), None) => Self::load(path),
            (None, Some(keys)) => Self::parse(keys).context("DYNAGATE_SIGNING_KEYS"),
            (None, None) if settings.dev_ephemeral_signing_key => {
                let ring = Self::generate()?;
                tracing::warn!(
                    kid = %ring.active().kid,
                    "NO SIGNING KEY CONFIGURED: generated a throw-away key for local development. \
                     Tokens will not survive a restart and other replicas will not accept them. \
                     Never run like this in production: use --signing-keys-file."
                );
                Ok(ring)
            }
            (None, None) => bail!(
                "no signing key: set --signing-keys-file or DYNAGATE_SIGNING_KEYS \
                 (`auth-service generate-signing-key` makes one), or --dev-ephemeral-signing-key locally"
            ),
        }
    }

    /// The ring in a keys file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = common::secrets::from_file(path)?;
        Self::parse(&text).with_context(|| format!("signing keys in {}", path.display()))
    }

    /// The key that signs new tokens.
    pub fn active(&self) -> &SigningKey {
        // `parse` and `generate` never build an empty ring.
        &self.keys[self.keys.len() - 1]
    }

    /// Every key, oldest first.
    pub fn keys(&self) -> &[SigningKey] {
        &self.keys
    }

    /// The public half of the ring, for verifying our own tokens.
    pub fn verifying_keys(&self) -> &VerifyingKeys {
        &self.verifying
    }

    /// The kids of the ring, oldest first.
    pub fn kids(&self) -> Vec<&str> {
        self.keys.iter().map(|key| key.kid.as_str()).collect()
    }
}

/// A new signing key as PASERK `k4.secret`, and its kid.
pub fn generate_paserk() -> anyhow::Result<(SecretString, String)> {
    let pair = AsymmetricKeyPair::<V4>::generate()
        .map_err(|e| anyhow::anyhow!("generating a signing key: {e}"))?;
    let key = SigningKey::from_secret(pair.secret)?;
    Ok((SecretString::from(tokens::paserk(&key.secret)), key.kid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_key_signs_and_every_key_is_published() {
        let (first, first_kid) = generate_paserk().unwrap();
        let (second, second_kid) = generate_paserk().unwrap();
        let text = format!(
            "# old key\n{}\n\n{} # new key\n",
            first.expose_secret(),
            second.expose_secret()
        );
        let ring = KeyRing::parse(&SecretString::from(text)).unwrap();
        assert_eq!(ring.active().kid, second_kid);
        let kids: Vec<_> = ring.keys().iter().map(|k| k.kid.as_str()).collect();
        assert_eq!(kids, [first_kid.as_str(), second_kid.as_str()]);
        assert_eq!(ring.verifying_keys().len(), 2);
    }

    #[test]
    fn kids_are_paserk_ids_and_footers_name_them() {
        let ring = KeyRing::generate().unwrap();
        let key = ring.active();
        assert!(key.kid.starts_with("k4.pid."), "{}", key.kid);
        assert!(key.public_paserk.starts_with("k4.public."));
        assert_eq!(
            key.footer,
            format!(r#"{{"kid":"{}"}}"#, key.kid).into_bytes()
        );
    }

    #[test]
    fn garbage_duplicates_and_empty_rings_are_refused() {
        assert!(KeyRing::parse(&SecretString::from("k4.secret.nope")).is_err());
        assert!(KeyRing::parse(&SecretString::from("# nothing\n")).is_err());
        let (key, _) = generate_paserk().unwrap();
        let twice = format!("{0},{0}", key.expose_secret());
        assert!(KeyRing::parse(&SecretString::from(twice)).is_err());
    }

    #[test]
    fn debug_output_never_shows_the_secret() {
        let (key, _) = generate_paserk().unwrap();
        let ring = KeyRing::parse(&key).unwrap();
        let printed = format!("{ring:?}");
        let body = key.expose_secret().trim_start_matches("k4.secret.");
        assert!(!printed.contains(body));
    }
}
