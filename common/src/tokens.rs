//! Access-token format and verification: the one place that decides whether a PASETO
//! v4.public token is trusted. The auth-service signs with the same claim names; every service
//! that accepts tokens verifies through [`TokenVerifier`].

use std::{collections::HashMap, fmt, sync::Arc, time::Duration};

use pasetors::{
    Public,
    claims::{Claims, ClaimsValidationRules},
    keys::AsymmetricPublicKey,
    paserk::{FormatAsPaserk, Id},
    public,
    token::UntrustedToken,
    version4::V4,
};
use serde::{Deserialize, Serialize};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

/// Longest token we even try to parse. A real one is about 450 bytes; the cap keeps a hostile
/// multi-megabyte header from costing base64 and JSON work.
pub const MAX_TOKEN_LEN: usize = 2048;
/// Longest footer accepted; ours is `{"kid":"k4.pid.<44 chars>"}` (59 bytes).
pub const MAX_FOOTER_LEN: usize = 128;
/// Claim carrying the session (refresh-token family) the access token was issued for.
pub const SESSION_CLAIM: &str = "sid";
/// The auth-service's default access-token lifetime (`--access-token-ttl-secs`), and what a
/// verifier accepts unless told otherwise ([`TokenVerifier::with_max_lifetime`]).
pub const DEFAULT_ACCESS_TOKEN_LIFETIME: Duration = Duration::from_secs(900);
/// Added to the configured lifetime before a token's `exp − iat` is refused as too long: room
/// for a verifier configured a little below the issuer. The same 60 s the revocation feed adds
/// to a revocation's `not_after`, so no token signed before a revocation outlives it there.
pub const LIFETIME_SLACK: Duration = Duration::from_secs(60);

/// The verified caller: who the token says, after every check passed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The user's id (`sub`); the only source of identity for handlers.
    pub user_id: String,
    /// The session the token belongs to (`sid`).
    pub session_id: String,
    /// The token's unique id (`jti`), for logs and auditing.
    pub token_id: String,
    /// When the token stops being valid (`exp`); caches must not outlive it.
    pub expires_at: OffsetDateTime,
}

/// Why a token was refused. Callers map every variant to UNAUTHENTICATED with the same
/// message, so an attacker learns nothing; the variants exist for logs and key refresh.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// No `authorization: Bearer …` metadata, or not in that form.
    #[error("missing bearer token")]
    Missing,
    /// Not a well-formed v4.public token with a valid `{"kid": …}` footer.
    #[error("malformed token")]
    Malformed,
    /// Well formed, but signed by a key we do not know (yet).
    #[error("unknown signing key {}", crate::telemetry::typed(kid))]
    UnknownKey {
        /// The PASERK id the footer names.
        kid: String,
    },
    /// Bad signature, or a claim (exp, nbf, iat, iss, aud, sub, sid, jti) failed its check.
    #[error("token rejected")]
    Rejected,
    /// Genuine, but valid for longer (`exp − iat`) than any token the issuer signs: a leaked
    /// signing key or a broken issuer, never an honest token.
    #[error("token lifetime exceeds the maximum")]
    TooLong,
}

/// The footer every Dynagate access token carries: which key signed it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Footer {
    /// PASERK id (`k4.pid.…`) of the signing key.
    pub kid: String,
}

/// The PASERK id (`k4.pid.…`) of a public key: the `kid` in token footers.
pub fn key_id(key: &AsymmetricPublicKey<V4>) -> String {
    paserk(&Id::from(key))
}

/// The PASERK form (`k4.public.…` for public keys, `k4.pid.…` for ids) of a key or id.
pub fn paserk(value: &impl FormatAsPaserk) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail, and PASERK formatting only base64-encodes bytes.
    let _ = value.fmt(&mut out);
    out
}

/// A set of public keys by kid, as published by `ListSigningKeys`.
#[derive(Clone, Default)]
pub struct VerifyingKeys {
    keys: HashMap<String, Arc<AsymmetricPublicKey<V4>>>,
}

impl fmt::Debug for VerifyingKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.keys.keys()).finish()
    }
}

/// A published key that cannot be trusted: bad PASERK, or a kid that does not match the key.
#[derive(Debug, thiserror::Error)]
#[error("invalid verifying key {kid}: {reason}")]
pub struct KeyError {
    /// The kid as published.
    pub kid: String,
    /// What was wrong.
    pub reason: &'static str,
}

impl VerifyingKeys {
    /// Adds a key under its own computed kid.
    pub fn insert(&mut self, key: AsymmetricPublicKey<V4>) {
        self.keys.insert(key_id(&key), Arc::new(key));
    }

    /// Adds a published `(kid, k4.public…)` pair, refusing it unless the kid is the key's own
    /// PASERK id, so a tampered listing cannot alias one key under another's name.
    pub fn insert_paserk(&mut self, kid: &str, public_key: &str) -> Result<(), KeyError> {
        let key = AsymmetricPublicKey::<V4>::try_from(public_key).map_err(|_| KeyError {
            kid: kid.to_owned(),
            reason: "not a k4.public PASERK",
        })?;
        if key_id(&key) != kid {
            return Err(KeyError {
                kid: kid.to_owned(),
                reason: "kid does not match the key",
            });
        }
        self.insert(key);
        Ok(())
    }

    /// The key with this kid, if known.
    pub fn get(&self, kid: &str) -> Option<&AsymmetricPublicKey<V4>> {
        self.keys.get(kid).map(Arc::as_ref)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when no key is known: every token will be refused.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The kids of all keys.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }
}

/// Verifies access tokens for one issuer and audience, no longer-lived than the issuer signs.
#[derive(Clone)]
pub struct TokenVerifier {
    rules: ClaimsValidationRules,
    /// The longest `exp − iat` accepted: the configured lifetime plus [`LIFETIME_SLACK`].
    max_lifetime: time::Duration,
}

impl fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenVerifier").finish_non_exhaustive()
    }
}

impl TokenVerifier {
    /// A verifier accepting only tokens with exactly this `iss` and `aud`, living at most
    /// [`DEFAULT_ACCESS_TOKEN_LIFETIME`] (plus the slack).
    pub fn new(issuer: &str, audience: &str) -> Self {
        let mut rules = ClaimsValidationRules::new();
        rules.validate_issuer_with(issuer);
        rules.validate_audience_with(audience);
        Self {
            rules,
            max_lifetime: max_lifetime(DEFAULT_ACCESS_TOKEN_LIFETIME),
        }
    }

    /// Accepts tokens whose `exp − iat` is at most `lifetime` plus [`LIFETIME_SLACK`]: set it
    /// to the issuer's access-token lifetime. A signing key that leaks (or an issuer that
    /// breaks) then cannot mint a token that outlives every revocation.
    pub fn with_max_lifetime(mut self, lifetime: Duration) -> Self {
        self.max_lifetime = max_lifetime(lifetime);
        self
    }

    /// Checks size, footer, signature (by kid), the time, issuer and audience claims, and the
    /// lifetime; fails closed on anything unexpected.
    pub fn verify(&self, keys: &VerifyingKeys, token: &str) -> Result<Principal, TokenError> {
        let (untrusted, kid) = parse_untrusted(token)?;
        let key = keys.get(&kid).ok_or(TokenError::UnknownKey { kid })?;
        let trusted = public::verify(key, &untrusted, &self.rules, None, None)
            .map_err(|_| TokenError::Rejected)?;
        let claims = trusted.payload_claims().ok_or(TokenError::Rejected)?;
        let principal = principal_from(claims)?;
        // pasetors has checked that iat is present, RFC 3339 and not in the future.
        let issued_at = time_claim(claims, "iat")?;
        if principal.expires_at - issued_at > self.max_lifetime {
            return Err(TokenError::TooLong);
        }
        Ok(principal)
    }
}

fn max_lifetime(lifetime: Duration) -> time::Duration {
    let most = lifetime.saturating_add(LIFETIME_SLACK);
    time::Duration::try_from(most).unwrap_or(time::Duration::MAX)
}

/// A time claim, which must be an RFC 3339 string.
fn time_claim(claims: &Claims, name: &str) -> Result<OffsetDateTime, TokenError> {
    let text = claims
        .get_claim(name)
        .and_then(|value| value.as_str())
        .ok_or(TokenError::Rejected)?;
    OffsetDateTime::parse(text, &Rfc3339).map_err(|_| TokenError::Rejected)
}

/// Splits a token into its untrusted parts and the kid of its footer, without any crypto.
pub fn parse_untrusted(token: &str) -> Result<(UntrustedToken<Public, V4>, String), TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let untrusted =
        UntrustedToken::<Public, V4>::try_from(token).map_err(|_| TokenError::Malformed)?;
    let footer = untrusted.untrusted_footer();
    if footer.is_empty() || footer.len() > MAX_FOOTER_LEN {
        return Err(TokenError::Malformed);
    }
    // pasetors' Footer::parse_bytes compiles a regex per call (≈40 µs); serde_json is ≈2.5 µs.
    let footer: Footer = serde_json::from_slice(footer).map_err(|_| TokenError::Malformed)?;
    if !footer.kid.starts_with("k4.pid.") {
        return Err(TokenError::Malformed);
    }
    Ok((untrusted, footer.kid))
}

fn principal_from(claims: &Claims) -> Result<Principal, TokenError> {
    let text = |name: &str| -> Result<String, TokenError> {
        match claims.get_claim(name).and_then(|value| value.as_str()) {
            Some(value) if !value.is_empty() => Ok(value.to_owned()),
            _ => Err(TokenError::Rejected),
        }
    };
    let expires_at = time_claim(claims, "exp")?;
    Ok(Principal {
        user_id: text("sub")?,
        session_id: text(SESSION_CLAIM)?,
        token_id: text("jti")?,
        expires_at,
    })
}

/// Extracts the token from `authorization: Bearer <token>` metadata. The scheme is matched
/// case-insensitively, as RFC 6750 allows.
pub fn bearer_token(metadata: &tonic::metadata::MetadataMap) -> Result<&str, TokenError> {
    let value = metadata
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .ok_or(TokenError::Missing)?;
    let (scheme, token) = value.split_once(' ').ok_or(TokenError::Missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(TokenError::Missing);
    }
    Ok(token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    use pasetors::{
        keys::{AsymmetricKeyPair, Generate},
        version4::PublicToken,
    };
    use proptest::prelude::*;

    const ISSUER: &str = "dynagate-auth";
    const AUDIENCE: &str = "dynagate";

    struct Signer {
        pair: AsymmetricKeyPair<V4>,
        keys: VerifyingKeys,
        footer: String,
    }

    fn signer() -> Signer {
        let pair = AsymmetricKeyPair::<V4>::generate().unwrap();
        let footer = format!(r#"{{"kid":"{}"}}"#, key_id(&pair.public));
        let mut keys = VerifyingKeys::default();
        keys.insert(pair.public.clone());
        Signer { pair, keys, footer }
    }

    fn sign(signer: &Signer, user: &str, session: &str, jti: &str) -> String {
        // What the auth-service issues: valid for its default lifetime.
        let mut claims = Claims::new_expires_in(&DEFAULT_ACCESS_TOKEN_LIFETIME).unwrap();
        claims.issuer(ISSUER).unwrap();
        claims.audience(AUDIENCE).unwrap();
        claims.subject(user).unwrap();
        claims.token_identifier(jti).unwrap();
        claims.add_additional(SESSION_CLAIM, session).unwrap();
        let claims = claims.to_string().unwrap();
        let footer = Some(signer.footer.as_bytes());
        PublicToken::sign(&signer.pair.secret, claims.as_bytes(), footer, None).unwrap()
    }

    /// A token with these raw `iat` (absent when `None`) and `exp` values, the other claims
    /// as issued: built as JSON, since pasetors' `Claims` refuses malformed times.
    fn sign_times(signer: &Signer, iat: Option<&str>, exp: &str) -> String {
        let now = rfc3339(OffsetDateTime::now_utc() - time::Duration::SECOND);
        let mut claims = serde_json::json!({
            "iss": ISSUER, "aud": AUDIENCE, "sub": "user-1", "sid": "session-1",
            "jti": "jti-1", "nbf": now, "exp": exp,
        });
        if let Some(iat) = iat {
            claims["iat"] = iat.into();
        }
        let footer = Some(signer.footer.as_bytes());
        let body = claims.to_string();
        PublicToken::sign(&signer.pair.secret, body.as_bytes(), footer, None).unwrap()
    }

    fn rfc3339(at: OffsetDateTime) -> String {
        at.format(&Rfc3339).unwrap()
    }

    #[test]
    fn a_token_living_longer_than_the_maximum_plus_slack_is_refused() {
        let signer = signer();
        let iat = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap() - time::Duration::SECOND;
        let verifier = TokenVerifier::new(ISSUER, AUDIENCE);
        let most = DEFAULT_ACCESS_TOKEN_LIFETIME + LIFETIME_SLACK;
        let at_most = sign_times(&signer, Some(&rfc3339(iat)), &rfc3339(iat + most));
        assert!(
            verifier.verify(&signer.keys, &at_most).is_ok(),
            "exactly the maximum"
        );
        let over = rfc3339(iat + most + time::Duration::SECOND);
        let one_more = sign_times(&signer, Some(&rfc3339(iat)), &over);
        assert_eq!(
            verifier.verify(&signer.keys, &one_more),
            Err(TokenError::TooLong)
        );
        let far = rfc3339(iat + time::Duration::days(3650));
        let decade = sign_times(&signer, Some(&rfc3339(iat)), &far);
        assert_eq!(
            verifier.verify(&signer.keys, &decade),
            Err(TokenError::TooLong)
        );

        let hour = Duration::from_secs(3600);
        let longer = TokenVerifier::new(ISSUER, AUDIENCE).with_max_lifetime(hour);
        assert!(
            longer.verify(&signer.keys, &one_more).is_ok(),
            "configured longer"
        );
        assert_eq!(
            longer.verify(&signer.keys, &decade),
            Err(TokenError::TooLong)
        );
    }

    #[test]
    fn a_token_without_a_readable_iat_is_refused() {
        let signer = signer();
        let verifier = TokenVerifier::new(ISSUER, AUDIENCE);
        let exp = rfc3339(OffsetDateTime::now_utc() + time::Duration::minutes(5));
        for iat in [
            None,
            Some("yesterday"),
            Some(""),
            Some("2024-13-45T00:00:00Z"),
        ] {
            let token = sign_times(&signer, iat, &exp);
            assert_eq!(
                verifier.verify(&signer.keys, &token),
                Err(TokenError::Rejected),
                "{iat:?}"
            );
        }
        let far_future = rfc3339(OffsetDateTime::now_utc() + time::Duration::minutes(1));
        let token = sign_times(&signer, Some(&far_future), &exp);
        assert_eq!(
            verifier.verify(&signer.keys, &token),
            Err(TokenError::Rejected),
            "iat ahead"
        );
    }

    /// `v4.public.` tokens built from arbitrary parts: the parser's hard cases.
    fn shaped_token() -> impl Strategy<Value = String> {
        let part = prop::collection::vec(any::<u8>(), 0..200);
        let footer = prop_oneof![
            part.clone(),
            ".{0,40}".prop_map(|kid| format!(r#"{{"kid":"k4.pid.{kid}"}}"#).into_bytes()),
            ".{0,60}".prop_map(String::into_bytes),
        ];
        (part, footer, "v4\\.public\\.|v4\\.local\\.|v3\\.public\\.|").prop_map(
            |(body, footer, header)| {
                format!(
                    "{header}{}.{}",
                    URL_SAFE_NO_PAD.encode(body),
                    URL_SAFE_NO_PAD.encode(footer)
                )
            },
        )
    }

    #[test]
    fn a_signed_token_verifies_to_its_claims() {
        let signer = signer();
        let token = sign(&signer, "user-1", "session-1", "jti-1");
        let principal = TokenVerifier::new(ISSUER, AUDIENCE)
            .verify(&signer.keys, &token)
            .unwrap();
        assert_eq!(
            (principal.user_id.as_str(), principal.session_id.as_str()),
            ("user-1", "session-1")
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn garbage_tokens_are_refused_without_a_panic(token in any::<String>()) {
            let signer = signer();
            let verdict = TokenVerifier::new(ISSUER, AUDIENCE).verify(&signer.keys, &token);
            prop_assert_eq!(verdict, Err(TokenError::Malformed));
        }

        #[test]
        fn shaped_tokens_are_refused_without_a_panic(token in shaped_token()) {
            let signer = signer();
            let verdict = TokenVerifier::new(ISSUER, AUDIENCE).verify(&signer.keys, &token);
            prop_assert!(verdict.is_err(), "{token} verified");
            // Whatever parses names a kid of the right form.
            if let Ok((_, kid)) = parse_untrusted(&token) {
                prop_assert!(kid.starts_with("k4.pid."));
            }
        }

        #[test]
        fn claims_round_trip_and_any_changed_byte_is_refused(
            user in ".{1,40}",
            session in ".{1,40}",
            position in any::<prop::sample::Index>(),
            flip in 1_u8..=255,
        ) {
            let signer = signer();
            let verifier = TokenVerifier::new(ISSUER, AUDIENCE);
            let token = sign(&signer, &user, &session, "jti");
            let principal = verifier.verify(&signer.keys, &token).unwrap();
            prop_assert_eq!(principal.user_id, user);
            prop_assert_eq!(principal.session_id, session);

            let mut tampered = token.into_bytes();
            let at = position.index(tampered.len());
            tampered[at] ^= flip;
            let tampered = String::from_utf8_lossy(&tampered).into_owned();
            prop_assert!(verifier.verify(&signer.keys, &tampered).is_err());
        }

        #[test]
        fn bearer_metadata_is_parsed_or_missing(value in "[ -~]{0,80}") {
            let mut metadata = tonic::metadata::MetadataMap::new();
            if let Ok(value) = value.parse() {
                metadata.insert("authorization", value);
            }
            match bearer_token(&metadata) {
                Ok(token) => {
                    prop_assert!(!token.is_empty());
                    prop_assert_eq!(token, token.trim());
                    prop_assert!(value.to_ascii_lowercase().starts_with("bearer "));
                }
                Err(error) => prop_assert_eq!(error, TokenError::Missing),
            }
        }
    }
}
