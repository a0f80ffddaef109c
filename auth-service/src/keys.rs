//! The signing key ring: PASERK `k4.secret` keys, all published, the newest *active* one
//! signing. A key becomes active at its activation time: its `not-before=` stamp in the file,
//! and never sooner than `--signing-key-activation-secs` after a reload first brought it to
//! this replica. So a new key is published by every replica before any replica signs with it.
//! Rotation: append a key, wait until it is active plus one access-token lifetime, then drop
//! the old one.

mod activation;

use std::{fmt, path::Path};

use anyhow::{Context, bail};
use common::tokens::{self, VerifyingKeys};
use pasetors::{
    keys::{AsymmetricKeyPair, AsymmetricPublicKey, AsymmetricSecretKey, Generate},
    version4::V4,
};
use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;

use self::activation::{Activation, parse_words};
pub use self::activation::{NOT_BEFORE, stamped_line};
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
    activation: Activation,
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
            activation: Activation::default(),
        })
    }

    /// The secret key, for signing only.
    pub fn secret(&self) -> &AsymmetricSecretKey<V4> {
        &self.secret
    }

    /// When the key may start signing; `None`: it always could.
    pub fn activates_at(&self) -> Option<OffsetDateTime> {
        self.activation.at()
    }
}

/// All signing keys, oldest first; the last active one signs.
#[derive(Debug)]
pub struct KeyRing {
    keys: Vec<SigningKey>,
    verifying: VerifyingKeys,
}

impl KeyRing {
    /// Parses PASERK `k4.secret` keys separated by whitespace or commas, each optionally
    /// followed by `not-before=<RFC 3339 time>`; `#` starts a comment that runs to the end of
    /// the line. Duplicates are refused: they would hide a rotation mistake.
    pub fn parse(text: &SecretString) -> anyhow::Result<Self> {
        let mut keys: Vec<SigningKey> = Vec::new();
        for (index, (word, not_before)) in
            parse_words(text.expose_secret())?.into_iter().enumerate()
        {
            let secret = AsymmetricSecretKey::<V4>::try_from(word).map_err(|_| {
                anyhow::anyhow!("signing key #{} is not a PASERK k4.secret", index + 1)
            })?;
            let mut key = SigningKey::from_secret(secret)?;
            if keys.iter().any(|k| k.kid == key.kid) {
                bail!("signing key {} is listed twice", key.kid);
            }
            key.activation = Activation::stamped(not_before);
            keys.push(key);
        }
        Self::of(keys)
    }

    /// This ring as a reload installs it over `previous`: a key `previous` already had keeps
    /// the earliest time it may sign; a key new to this replica may sign no sooner than
    /// `earliest_new` (now plus `--signing-key-activation-secs`), whatever its stamp says.
    pub fn after(mut self, previous: &Self, earliest_new: OffsetDateTime) -> Self {
        for key in &mut self.keys {
            let known = previous.keys.iter().find(|old| old.kid == key.kid);
            let seen = match known {
                Some(old) => old.activation.seen_from(),
                None => Some(earliest_new),
            };
            key.activation = key.activation.seen(seen);
        }
        self
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
                    kid = %ring.keys[0].kid,
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

    /// The key that signs new tokens at `now`: the newest whose activation has passed. When
    /// none has, the oldest (the first in the file): a ring always signs; a first key that
    /// `generate-signing-key` stamped signs at once, and a file whose only key was replaced
    /// (an emergency) signs with its new key at once.
    pub fn signer(&self, now: OffsetDateTime) -> &SigningKey {
        let active = self
            .keys
            .iter()
            .rev()
            .find(|key| key.activates_at().is_none_or(|at| at <= now));
        // `parse` and `generate` never build an empty ring.
        active.unwrap_or(&self.keys[0])
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
        assert_eq!(ring.signer(OffsetDateTime::now_utc()).kid, second_kid);
        let kids: Vec<_> = ring.keys().iter().map(|k| k.kid.as_str()).collect();
        assert_eq!(kids, [first_kid.as_str(), second_kid.as_str()]);
        assert_eq!(ring.verifying_keys().len(), 2);
    }

    /// A ring of fresh keys, each stamped with its `not-before` (if any).
    fn ring(stamps: &[Option<OffsetDateTime>]) -> (KeyRing, Vec<String>) {
        let mut text = String::new();
        let mut kids = Vec::new();
        for stamp in stamps {
            let (key, kid) = generate_paserk().unwrap();
            let line = match stamp {
                Some(at) => stamped_line(&key, *at).unwrap(),
                None => key,
            };
            text.push_str(line.expose_secret());
            text.push('\n');
            kids.push(kid);
        }
        (KeyRing::parse(&SecretString::from(text)).unwrap(), kids)
    }

    fn at(unix: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(unix).unwrap()
    }

    #[test]
    fn a_stamped_key_signs_from_its_stamp_and_the_one_before_signs_until_then() {
        let (ring, kids) = ring(&[None, Some(at(2_000))]);
        assert_eq!(ring.signer(at(1_999)).kid, kids[0]);
        assert_eq!(ring.signer(at(2_000)).kid, kids[1]);
        assert_eq!(ring.verifying_keys().len(), 2, "both published all along");
    }

    #[test]
    fn a_reload_holds_back_a_new_key_and_keeps_the_bound_of_a_known_one() {
        let (before, _) = ring(&[None]);
        let text = |ring: &KeyRing| {
            // The same keys as a file would list them, plus one new key, unstamped.
            let (new, _) = generate_paserk().unwrap();
            let mut lines: Vec<String> = ring
                .keys()
                .iter()
                .map(|key| tokens::paserk(key.secret()))
                .collect();
            lines.push(new.expose_secret().to_owned());
            SecretString::from(lines.join("\n"))
        };
        let first = KeyRing::parse(&text(&before))
            .unwrap()
            .after(&before, at(1_060));
        let kids = first
            .kids()
            .iter()
            .map(|k| k.to_string())
            .collect::<Vec<_>>();
        assert_eq!(first.signer(at(1_059)).kid, kids[0], "held back");
        assert_eq!(first.signer(at(1_060)).kid, kids[1]);

        // The next reload (another key added at 1 030) keeps the second key's bound.
        let second = KeyRing::parse(&text(&first))
            .unwrap()
            .after(&first, at(1_090));
        assert_eq!(second.signer(at(1_060)).kid, kids[1]);
        assert_eq!(second.signer(at(1_089)).kid, kids[1]);
        assert_eq!(second.signer(at(1_090)).kid, second.kids()[2]);
    }

    #[test]
    fn a_stamp_already_past_does_not_shorten_the_hold_of_a_reload() {
        let (before, _) = ring(&[None]);
        let (stamped, kids) = ring(&[None, Some(at(0))]);
        // `before`'s key is not in `stamped`: both keys of `stamped` are new to this replica.
        let after = stamped.after(&before, at(1_060));
        assert_eq!(after.signer(at(1_059)).kid, kids[0], "the oldest");
        assert_eq!(after.signer(at(1_060)).kid, kids[1]);
    }

    #[test]
    fn a_ring_whose_keys_all_activate_later_signs_with_its_oldest_key() {
        // A first key stamped by generate-signing-key, and a key added before that stamp.
        let (ring, kids) = ring(&[Some(at(3_000)), Some(at(2_000))]);
        assert_eq!(ring.signer(at(1_000)).kid, kids[0]);
        assert_eq!(ring.signer(at(2_500)).kid, kids[1]);
        assert_eq!(ring.signer(at(3_000)).kid, kids[1], "the newest active one");
    }

    #[test]
    fn kids_are_paserk_ids_and_footers_name_them() {
        let ring = KeyRing::generate().unwrap();
        let key = ring.signer(OffsetDateTime::now_utc());
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
