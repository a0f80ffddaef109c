//! Opaque page tokens for QueryItems: PASETO v4.local (encrypted and authenticated with a
//! server key), bound by implicit assertion to the caller and the query. A token made for one
//! user or one query fails to open for any other, so it cannot carry a caller anywhere else.

use anyhow::Context;
use pasetors::{
    Local,
    keys::{Generate, SymmetricKey},
    token::UntrustedToken,
    version4::{LocalToken, V4},
};
use secrecy::{ExposeSecret, SecretString};

use crate::error::DataError;

/// Longest page token accepted: a 1024-byte key encrypts to about 1.5 KB.
const MAX_TOKEN_LEN: usize = 2048;

/// What a page token is bound to: the caller and every field that shapes the result set.
#[derive(Clone, Copy, Debug)]
pub struct QueryShape<'a> {
    /// The caller's user id.
    pub owner: &'a str,
    /// `key_prefix`.
    pub prefix: &'a str,
    /// `start_key`.
    pub start: &'a str,
    /// `end_key`.
    pub end: &'a str,
    /// `descending`.
    pub descending: bool,
}

impl QueryShape<'_> {
    /// The implicit assertion: length-prefixed fields, so no two shapes collide.
    fn assertion(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for field in [self.owner, self.prefix, self.start, self.end] {
            out.extend_from_slice(&(field.len() as u64).to_be_bytes());
            out.extend_from_slice(field.as_bytes());
        }
        out.push(u8::from(self.descending));
        out
    }
}

/// Seals and opens page tokens with one key.
pub struct PageTokens {
    key: SymmetricKey<V4>,
}

impl std::fmt::Debug for PageTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageTokens").finish_non_exhaustive()
    }
}

impl PageTokens {
    /// From a PASERK `k4.local` key.
    pub fn from_paserk(key: &SecretString) -> anyhow::Result<Self> {
        let key = SymmetricKey::<V4>::try_from(key.expose_secret().trim())
            .map_err(|_| anyhow::anyhow!("the page-token key is not a PASERK k4.local"))?;
        Ok(Self { key })
    }

    /// With a random key (local development and tests).
    pub fn generate() -> anyhow::Result<Self> {
        let key = SymmetricKey::<V4>::generate().map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Self { key })
    }

    /// A new key as PASERK `k4.local`.
    pub fn generate_paserk() -> anyhow::Result<SecretString> {
        let key = SymmetricKey::<V4>::generate().map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(SecretString::from(common::tokens::paserk(&key)))
    }

    /// A token that resumes `shape` after `last_key`.
    pub fn seal(&self, shape: &QueryShape<'_>, last_key: &str) -> Result<String, DataError> {
        LocalToken::encrypt(
            &self.key,
            last_key.as_bytes(),
            None,
            Some(&shape.assertion()),
        )
        .map_err(|e| anyhow::anyhow!("sealing a page token: {e}"))
        .context("page token")
        .map_err(DataError::Internal)
    }

    /// The last key a token resumes after, if it was sealed by us for exactly `shape`.
    pub fn open(&self, shape: &QueryShape<'_>, token: &str) -> Result<String, DataError> {
        let invalid =
            || DataError::invalid("page_token", "not a page token of this query and caller");
        if token.len() > MAX_TOKEN_LEN {
            return Err(invalid());
        }
        let untrusted = UntrustedToken::<Local, V4>::try_from(token).map_err(|_| invalid())?;
        let trusted = LocalToken::decrypt(&self.key, &untrusted, None, Some(&shape.assertion()))
            .map_err(|_| invalid())?;
        Ok(trusted.payload().to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn shape<'a>(owner: &'a str, prefix: &'a str) -> QueryShape<'a> {
        QueryShape {
            owner,
            prefix,
            start: "",
            end: "",
            descending: false,
        }
    }

    #[test]
    fn a_token_opens_for_its_own_query_and_caller_only() {
        let tokens = PageTokens::generate().unwrap();
        let token = tokens
            .seal(&shape("alice", "notes/"), "notes/0042")
            .unwrap();

        assert_eq!(
            tokens.open(&shape("alice", "notes/"), &token).unwrap(),
            "notes/0042"
        );
        assert!(
            tokens.open(&shape("bob", "notes/"), &token).is_err(),
            "another caller"
        );
        assert!(
            tokens.open(&shape("alice", "photos/"), &token).is_err(),
            "another query"
        );
        let descending = QueryShape {
            descending: true,
            ..shape("alice", "notes/")
        };
        assert!(
            tokens.open(&descending, &token).is_err(),
            "another direction"
        );
    }

    #[test]
    fn shapes_that_concatenate_alike_do_not_collide() {
        let tokens = PageTokens::generate().unwrap();
        let one = QueryShape {
            start: "ab",
            end: "c",
            ..shape("u", "")
        };
        let other = QueryShape {
            start: "a",
            end: "bc",
            ..shape("u", "")
        };
        let token = tokens.seal(&one, "k").unwrap();
        assert!(tokens.open(&other, &token).is_err());
    }

    #[test]
    fn forged_and_foreign_tokens_are_invalid_arguments() {
        let ours = PageTokens::generate().unwrap();
        let theirs = PageTokens::generate().unwrap();
        let foreign = theirs.seal(&shape("alice", ""), "k").unwrap();
        for bad in [
            foreign.as_str(),
            "",
            "v4.local.AAAA",
            "garbage",
            &"v4.local.".repeat(500),
        ] {
            let error = ours.open(&shape("alice", ""), bad).unwrap_err();
            assert!(matches!(error, DataError::InvalidArgument(_)), "{bad:.30}");
        }
    }

    #[test]
    fn keys_round_trip_through_paserk() {
        let paserk = PageTokens::generate_paserk().unwrap();
        assert!(paserk.expose_secret().starts_with("k4.local."));
        let tokens = PageTokens::from_paserk(&paserk).unwrap();
        let again = PageTokens::from_paserk(&paserk).unwrap();
        let token = tokens.seal(&shape("u", ""), "k").unwrap();
        assert_eq!(again.open(&shape("u", ""), &token).unwrap(), "k");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn any_sealed_key_opens_to_itself(
            owner in ".{0,40}",
            prefix in ".{0,20}",
            start in ".{0,20}",
            end in ".{0,20}",
            descending in any::<bool>(),
            // Item keys are never empty (DynamoDB refuses empty key attributes).
            last_key in ".{1,200}",
        ) {
            let tokens = PageTokens::generate().unwrap();
            let shape = QueryShape { owner: &owner, prefix: &prefix, start: &start, end: &end, descending };
            let token = tokens.seal(&shape, &last_key).unwrap();
            prop_assert!(token.len() <= MAX_TOKEN_LEN);
            prop_assert_eq!(tokens.open(&shape, &token).unwrap(), last_key);
        }

        #[test]
        fn garbage_never_opens_and_is_an_invalid_argument(
            token in prop_oneof![any::<String>(), "v4\\.local\\.[A-Za-z0-9_-]{0,300}"],
        ) {
            let tokens = PageTokens::generate().unwrap();
            let error = tokens.open(&shape("alice", ""), &token).unwrap_err();
            prop_assert!(matches!(error, DataError::InvalidArgument(_)), "{:?}", error);
        }

        #[test]
        fn any_changed_byte_breaks_a_token(position in any::<prop::sample::Index>(), flip in 1_u8..=255) {
            let tokens = PageTokens::generate().unwrap();
            let token = tokens.seal(&shape("alice", "notes/"), "notes/0042").unwrap();
            let mut tampered = token.into_bytes();
            let at = position.index(tampered.len());
            tampered[at] ^= flip;
            let tampered = String::from_utf8_lossy(&tampered).into_owned();
            prop_assert!(tokens.open(&shape("alice", "notes/"), &tampered).is_err());
        }
    }
}
