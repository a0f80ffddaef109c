//! Refresh tokens: the opaque `dgr1_` strings that name a session and carry a 256-bit secret,
//! and how each rotation derives the next secret from the one presented.
//!
//! The secret's last 4 bytes are the token's generation (the session's rotations when it was
//! issued), so a rotation can be written without reading the session first: the write is
//! conditioned on exactly that generation and the secret's hash. The other 224 bits are
//! random (at login) or an HMAC output (at each rotation); the stored hash covers all 256, so
//! the generation cannot be changed without making the token unknown. Tokens of earlier
//! releases have random bytes there: their generation reads wrong, their first rotation's
//! condition fails, and the session as it stands tells the right one (one more write, once).

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretBox, SecretString};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Prefix that makes refresh tokens recognisable to secret scanners and humans.
const REFRESH_PREFIX: &str = "dgr1_";
const SECRET_LEN: usize = 32;
/// The secret's bytes before the generation.
const DERIVED_LEN: usize = SECRET_LEN - 4;
const RAW_LEN: usize = 16 + 16 + SECRET_LEN;
/// base64url without padding of `RAW_LEN` bytes.
const ENCODED_LEN: usize = 86;

/// SHA-256 of a refresh secret: the only form the sessions table holds.
pub type SecretHash = [u8; 32];

/// The random value a rotation draws and stores with the session. With the previous token it
/// derives the current one again (so a retry gets the same successor); without that token it
/// is worthless, so it may sit in the table in the clear.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RotationNonce([u8; 32]);

impl RotationNonce {
    /// A fresh nonce for a rotation about to be written.
    pub fn random() -> Self {
        Self(rand::random())
    }

    /// A stored nonce; `None` unless exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        Some(Self(bytes.try_into().ok()?))
    }

    /// The bytes to store.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// A decoded refresh token: which session it names, and its 256-bit secret.
pub struct RefreshToken {
    /// The session's user.
    pub user_id: Uuid,
    /// The session (refresh-token family).
    pub session_id: Uuid,
    secret: SecretBox<[u8; SECRET_LEN]>,
}

impl RefreshToken {
    /// A new session's first token (generation 0), with a fresh random secret.
    pub fn generate(user_id: Uuid, session_id: Uuid) -> Self {
        let random: [u8; DERIVED_LEN] = rand::random();
        Self::with_secret(user_id, session_id, with_generation(&random, 0))
    }

    fn with_secret(user_id: Uuid, session_id: Uuid, secret: [u8; SECRET_LEN]) -> Self {
        Self {
            user_id,
            session_id,
            secret: SecretBox::new(Box::new(secret)),
        }
    }

    /// The generation this token says it was issued at: the session's rotations then, for a
    /// token of this release (modulo 2³²); arbitrary for one of an earlier release. Only a
    /// guess until the stored hash confirms it.
    pub fn generation(&self) -> u64 {
        let mut tail = [0u8; 4];
        tail.copy_from_slice(&self.secret.expose_secret()[DERIVED_LEN..]);
        u64::from(u32::from_be_bytes(tail))
    }

    /// The SHA-256 of the secret: the only form ever stored. The secret has 256 bits of
    /// entropy, so a fast hash is enough; a slow one would only cost us CPU.
    pub fn secret_hash(&self) -> SecretHash {
        Sha256::digest(self.secret.expose_secret()).into()
    }

    /// The token that replaces this one at rotation number `generation`: the first 28 bytes of
    /// HMAC-SHA256(key = this secret, nonce ‖ generation), then `generation`. Deterministic, so
    /// every concurrent refresh with this token derives the one successor the winning rotation
    /// stored; keyed by this secret, so the stored hashes and nonce alone cannot mint it.
    pub fn successor(&self, nonce: &RotationNonce, generation: u64) -> anyhow::Result<Self> {
        let mac = self.mac(nonce, generation)?;
        let secret = with_generation(&mac[..DERIVED_LEN], generation);
        Ok(Self::with_secret(self.user_id, self.session_id, secret))
    }

    /// The successor as earlier releases derived it (the whole HMAC, no generation): what a
    /// rotation written by one of them made, for a retry within the grace after an upgrade.
    pub fn earlier_successor(
        &self,
        nonce: &RotationNonce,
        generation: u64,
    ) -> anyhow::Result<Self> {
        let secret = self.mac(nonce, generation)?;
        Ok(Self::with_secret(self.user_id, self.session_id, secret))
    }

    fn mac(&self, nonce: &RotationNonce, generation: u64) -> anyhow::Result<[u8; SECRET_LEN]> {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.secret.expose_secret())
            .map_err(|e| anyhow::anyhow!("HMAC refused a {SECRET_LEN}-byte key: {e}"))?;
        mac.update(nonce.as_bytes());
        mac.update(&generation.to_be_bytes());
        Ok(mac.finalize().into_bytes().into())
    }

    /// The string handed to the client.
    pub fn encode(&self) -> SecretString {
        let mut raw = [0u8; RAW_LEN];
        raw[..16].copy_from_slice(self.user_id.as_bytes());
        raw[16..32].copy_from_slice(self.session_id.as_bytes());
        raw[32..].copy_from_slice(self.secret.expose_secret());
        SecretString::from(format!("{REFRESH_PREFIX}{}", URL_SAFE_NO_PAD.encode(raw)))
    }

    /// Parses a client's token; `None` for anything that is not exactly one of ours.
    pub fn decode(text: &str) -> Option<Self> {
        let body = text.strip_prefix(REFRESH_PREFIX)?;
        // Bound the work before decoding.
        if body.len() != ENCODED_LEN {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(body).ok()?;
        let raw: [u8; RAW_LEN] = raw.try_into().ok()?;
        let mut secret = [0u8; SECRET_LEN];
        secret.copy_from_slice(&raw[32..]);
        Some(Self {
            user_id: Uuid::from_slice(&raw[..16]).ok()?,
            session_id: Uuid::from_slice(&raw[16..32]).ok()?,
            secret: SecretBox::new(Box::new(secret)),
        })
    }
}

/// `derived` (the first [`DERIVED_LEN`] bytes) followed by `generation`'s low 32 bits.
fn with_generation(derived: &[u8], generation: u64) -> [u8; SECRET_LEN] {
    let mut secret = [0u8; SECRET_LEN];
    secret[..DERIVED_LEN].copy_from_slice(&derived[..DERIVED_LEN]);
    // Modulo 2³²: a session past four billion rotations only loses the one-write rotation.
    let low = (generation & u64::from(u32::MAX)) as u32;
    secret[DERIVED_LEN..].copy_from_slice(&low.to_be_bytes());
    secret
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(token: &RefreshToken) -> RefreshToken {
        RefreshToken::decode(token.encode().expose_secret()).unwrap()
    }

    #[test]
    fn refresh_tokens_round_trip_and_hash_stably() {
        let token = RefreshToken::generate(Uuid::new_v4(), Uuid::new_v4());
        let encoded = token.encode();
        assert!(encoded.expose_secret().starts_with("dgr1_"));
        assert_eq!(
            encoded.expose_secret().len(),
            REFRESH_PREFIX.len() + ENCODED_LEN
        );
        let decoded = round_trip(&token);
        assert_eq!(decoded.user_id, token.user_id);
        assert_eq!(decoded.session_id, token.session_id);
        assert_eq!(decoded.secret_hash(), token.secret_hash());
        let other = RefreshToken::generate(token.user_id, token.session_id);
        assert_ne!(other.secret_hash(), token.secret_hash());
    }

    #[test]
    fn the_successor_depends_on_the_secret_the_nonce_and_the_generation() {
        let token = RefreshToken::generate(Uuid::new_v4(), Uuid::new_v4());
        let nonce = RotationNonce::random();
        let successor = token.successor(&nonce, 1).unwrap();

        let again = round_trip(&token).successor(&nonce, 1).unwrap();
        let other_nonce = token.successor(&RotationNonce::random(), 1).unwrap();
        let other_generation = token.successor(&nonce, 2).unwrap();
        let other_secret = RefreshToken::generate(token.user_id, token.session_id)
            .successor(&nonce, 1)
            .unwrap();

        assert_eq!(again.secret_hash(), successor.secret_hash(), "re-derivable");
        assert_eq!(successor.session_id, token.session_id);
        for different in [other_nonce, other_generation, other_secret] {
            assert_ne!(different.secret_hash(), successor.secret_hash());
        }
        assert_ne!(successor.secret_hash(), token.secret_hash());
    }

    #[test]
    fn tokens_carry_their_generation() {
        let token = RefreshToken::generate(Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(token.generation(), 0);
        let nonce = RotationNonce::random();
        let next = token.successor(&nonce, 1).unwrap();
        assert_eq!((next.generation(), round_trip(&next).generation()), (1, 1));
        let far = next.successor(&nonce, 7_000_000_000).unwrap();
        assert_eq!(far.generation(), 7_000_000_000 % (1 << 32), "modulo 2³²");
        // An earlier release's successor: the whole HMAC, related to the new one only by it.
        let earlier = token.earlier_successor(&nonce, 1).unwrap();
        assert_ne!(earlier.secret_hash(), next.secret_hash());
        assert_eq!(
            earlier.secret.expose_secret()[..DERIVED_LEN],
            next.secret.expose_secret()[..DERIVED_LEN]
        );
    }

    #[test]
    fn nonces_are_exactly_32_bytes() {
        let nonce = RotationNonce::random();
        assert_eq!(RotationNonce::from_slice(nonce.as_bytes()), Some(nonce));
        assert_eq!(RotationNonce::from_slice(&[0; 31]), None);
        assert_eq!(RotationNonce::from_slice(&[0; 33]), None);
    }

    proptest! {
        #[test]
        fn refresh_token_decoding_never_panics(text in any::<String>()) {
            let _ = RefreshToken::decode(&text);
            let _ = RefreshToken::decode(&format!("dgr1_{text}"));
        }

        /// Bodies of exactly the right length get past the length check into base64 and the
        /// ids: any of them decodes to a token that encodes back to itself, or is refused.
        #[test]
        fn right_length_bodies_decode_canonically_or_not_at_all(
            body in prop_oneof!["[A-Za-z0-9_-]{86}", "[A-Za-z0-9_=+/-]{86}"],
        ) {
            let text = format!("{REFRESH_PREFIX}{body}");
            if let Some(token) = RefreshToken::decode(&text) {
                let encoded = token.encode();
                prop_assert_eq!(encoded.expose_secret(), text.as_str());
            }
        }

        #[test]
        fn any_raw_token_round_trips(raw in prop::collection::vec(any::<u8>(), RAW_LEN)) {
            let text = format!("{REFRESH_PREFIX}{}", URL_SAFE_NO_PAD.encode(&raw));
            let token = RefreshToken::decode(&text);
            prop_assert!(token.is_some(), "{text} refused");
            let token = token.unwrap_or_else(|| unreachable!());
            prop_assert_eq!(token.user_id.as_bytes(), &raw[..16]);
            prop_assert_eq!(token.session_id.as_bytes(), &raw[16..32]);
            prop_assert_eq!(round_trip(&token).secret_hash(), token.secret_hash());
            let encoded = token.encode();
            prop_assert_eq!(encoded.expose_secret(), text.as_str());
        }
    }
}
