//! Issuing tokens: PASETO v4.public access tokens signed by the key ring. Refresh tokens live
//! in `refresh_token.rs`.

use std::{sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use common::{
    clock::{Clock, SystemClock},
    tokens::{Principal, SESSION_CLAIM, TokenError, TokenVerifier},
};
use pasetors::version4::PublicToken;
use secrecy::SecretString;
use serde::Serialize;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use uuid::Uuid;

use crate::keys::{KeyRing, SigningKey};

/// A freshly signed access token.
#[derive(Debug)]
pub struct AccessToken {
    /// The PASETO string; a bearer credential.
    pub token: SecretString,
    /// Its `exp`.
    pub expires_at: OffsetDateTime,
}

/// Signs access tokens, and verifies the ones we issued (LogoutAll, GetCredentials). Clones
/// share one key ring, which [`TokenIssuer::replace_ring`] swaps while the service runs.
#[derive(Clone, Debug)]
pub struct TokenIssuer {
    ring: Arc<ArcSwap<KeyRing>>,
    verifier: TokenVerifier,
    issuer: String,
    audience: String,
    lifetime: Duration,
    /// How long a key a reload brings is published before it may sign.
    activation: Duration,
    /// Which key is active when (the tokens' own times are the system's: verifiers check them).
    clock: Arc<dyn Clock>,
}

/// The claims of DESIGN.md §2, plus `sid`, in the order they are written.
#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: &'a str,
    nbf: &'a str,
    iat: &'a str,
    jti: &'a str,
    sid: &'a str,
}

impl TokenIssuer {
    /// An issuer signing with the ring's active key, tokens living `lifetime` (and refused
    /// when they claim longer), a new key of a reload held back for no time
    /// ([`TokenIssuer::with_activation`]).
    pub fn new(ring: KeyRing, issuer: &str, audience: &str, lifetime: Duration) -> Self {
        Self {
            ring: Arc::new(ArcSwap::from_pointee(ring)),
            verifier: TokenVerifier::new(issuer, audience).with_max_lifetime(lifetime),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            lifetime,
            activation: Duration::ZERO,
            clock: Arc::new(SystemClock),
        }
    }

    /// Holds a key a reload brings back from signing for `activation` (it is published at
    /// once), reading the time from `clock`.
    pub fn with_activation(mut self, activation: Duration, clock: Arc<dyn Clock>) -> Self {
        self.activation = activation;
        self.clock = clock;
        self
    }

    /// The key ring as of now, for publishing.
    pub fn ring(&self) -> Arc<KeyRing> {
        self.ring.load_full()
    }

    /// The key of `ring` that signs now.
    pub fn signer<'a>(&self, ring: &'a KeyRing) -> &'a SigningKey {
        ring.signer(self.clock.now())
    }

    /// Publishes `ring` (from a reload) at once and verifies with its keys only: a key removed
    /// from the ring no longer verifies anything. A key new to this replica signs no sooner
    /// than the activation delay from now; the keys the replica had keep their times.
    pub fn replace_ring(&self, ring: KeyRing) {
        let earliest_new = self.clock.now() + self.activation;
        let ring = ring.after(&self.ring.load(), earliest_new);
        self.ring.store(Arc::new(ring));
    }

    /// Signs an access token for `user_id` in session `session_id`.
    pub fn issue(&self, user_id: &str, session_id: &str) -> anyhow::Result<AccessToken> {
        // PASETO recommends whole seconds; truncating keeps exp exactly as reported.
        let now = OffsetDateTime::now_utc().replace_nanosecond(0)?;
        let expires_at = now + self.lifetime;
        let (now_text, exp_text) = (now.format(&Rfc3339)?, expires_at.format(&Rfc3339)?);
        let token_id = Uuid::new_v4().to_string();
        debug_assert_eq!(SESSION_CLAIM, "sid");
        let claims = serde_json::to_vec(&Claims {
            iss: &self.issuer,
            sub: user_id,
            aud: &self.audience,
            exp: &exp_text,
            nbf: &now_text,
            iat: &now_text,
            jti: &token_id,
            sid: session_id,
        })?;
        let ring = self.ring.load();
        let key = self.signer(&ring);
        let token = PublicToken::sign(key.secret(), &claims, Some(&key.footer), None)
            .map_err(|e| anyhow::anyhow!("signing an access token: {e}"))?;
        Ok(AccessToken {
            token: SecretString::from(token),
            expires_at,
        })
    }

    /// Verifies a token we issued, with our own public keys.
    pub fn verify(&self, token: &str) -> Result<Principal, TokenError> {
        self.verifier
            .verify(self.ring.load().verifying_keys(), token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use secrecy::ExposeSecret;

    fn issuer(lifetime: Duration) -> TokenIssuer {
        TokenIssuer::new(
            KeyRing::generate().unwrap(),
            "dynagate-auth",
            "dynagate",
            lifetime,
        )
    }

    #[test]
    fn issued_tokens_verify_with_the_published_keys() {
        let issuer = issuer(Duration::from_secs(900));
        let issued = issuer.issue("user-1", "session-1").unwrap();
        let principal = issuer.verify(issued.token.expose_secret()).unwrap();
        assert_eq!(principal.user_id, "user-1");
        assert_eq!(principal.session_id, "session-1");
        assert_eq!(principal.expires_at, issued.expires_at);
        let lifetime = issued.expires_at - OffsetDateTime::now_utc();
        assert!(
            lifetime <= time::Duration::seconds(900) && lifetime > time::Duration::seconds(890)
        );
    }

    #[test]
    fn another_issuers_tokens_are_rejected() {
        let ours = issuer(Duration::from_secs(900));
        let theirs = issuer(Duration::from_secs(900));
        let foreign = theirs.issue("user-1", "session-1").unwrap();
        assert!(matches!(
            ours.verify(foreign.token.expose_secret()),
            Err(TokenError::UnknownKey { .. })
        ));
    }

    proptest! {
        #[test]
        fn access_tokens_round_trip_any_subject(user in "[a-z0-9-]{1,64}", session in "[a-z0-9-]{1,64}") {
            let issuer = issuer(Duration::from_secs(60));
            let issued = issuer.issue(&user, &session).unwrap();
            let principal = issuer.verify(issued.token.expose_secret()).unwrap();
            prop_assert_eq!(principal.user_id, user);
            prop_assert_eq!(principal.session_id, session);
        }

        #[test]
        fn any_changed_character_breaks_an_access_token(position in any::<prop::sample::Index>(), replacement in "[A-Za-z0-9_-]") {
            let issuer = issuer(Duration::from_secs(60));
            let token = issuer.issue("user-1", "session-1").unwrap().token.expose_secret().to_owned();
            let index = position.index(token.len());
            prop_assume!(token.as_bytes()[index] != replacement.as_bytes()[0]);
            let mut tampered = token.into_bytes();
            tampered[index] = replacement.as_bytes()[0];
            let tampered = String::from_utf8(tampered).unwrap();
            prop_assert!(issuer.verify(&tampered).is_err());
        }
    }
}
