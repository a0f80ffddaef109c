//! Remembered verdicts on access tokens, so the hot path skips the Ed25519 check: tokens that
//! verified (until they expire, and only while no signing key was withdrawn since), and tokens
//! that failed (briefly, so a flood of one forged token costs one verification, not one each).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use common::tokens::Principal;
use moka::{Expiry, sync::Cache};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

/// How long a refused token is refused without looking at it again. Short: a token refused
/// for a claim that time fixes (`nbf` a moment ahead of our clock) must recover quickly.
pub const REFUSAL_TTL: Duration = Duration::from_secs(10);

/// Refused tokens remembered at most (32 bytes each, plus the cache's own overhead).
pub const REFUSED_CAPACITY: u64 = 10_000;

/// A token that passed verification with the key set of `generation`. The principal is shared:
/// a cache hit hands out a reference, not a copy of its strings.
#[derive(Clone, Debug)]
struct Verified {
    principal: Arc<Principal>,
    generation: u64,
}

/// Forgets a verified token when it expires.
struct UntilExpiry;

impl Expiry<Arc<str>, Verified> for UntilExpiry {
    fn expire_after_create(
        &self,
        _token: &Arc<str>,
        entry: &Verified,
        _now: Instant,
    ) -> Option<Duration> {
        let left = entry.principal.expires_at - OffsetDateTime::now_utc();
        Some(Duration::try_from(left).unwrap_or_default())
    }
}

/// The verdicts, bounded in size and time.
pub struct TokenCache {
    verified: Cache<Arc<str>, Verified>,
    /// SHA-256 of recently refused tokens: 32 bytes each, whatever the token's size.
    refused: Cache<[u8; 32], ()>,
    /// Tokens verified under an older key-set generation than this are no longer trusted.
    trusted_since: AtomicU64,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("verified", &self.verified.entry_count())
            .field("refused", &self.refused.entry_count())
            .field("trusted_since", &self.trusted_since.load(Ordering::Acquire))
            .finish()
    }
}

impl TokenCache {
    /// At most `verified_capacity` verified and `refused_capacity` refused tokens.
    pub fn new(verified_capacity: u64, refused_capacity: u64) -> Self {
        Self {
            verified: Cache::builder()
                .max_capacity(verified_capacity)
                .expire_after(UntilExpiry)
                .build(),
            refused: Cache::builder()
                .max_capacity(refused_capacity)
                .time_to_live(REFUSAL_TTL)
                .build(),
            trusted_since: AtomicU64::new(0),
        }
    }

    /// The principal of a token verified earlier, not expired, and verified with keys that
    /// have all been published since.
    pub fn verified(&self, token: &str) -> Option<Arc<Principal>> {
        let entry = self.verified.get(token)?;
        self.still_trusted(token, &entry).then_some(entry.principal)
    }

    /// Verified and refused tokens held (approximate, as moka counts).
    pub fn len(&self) -> (u64, u64) {
        self.verified.run_pending_tasks();
        self.refused.run_pending_tasks();
        (self.verified.entry_count(), self.refused.entry_count())
    }

    /// Whether [`TokenCache::verified`] knows the token.
    pub fn is_verified(&self, token: &str) -> bool {
        self.verified(token).is_some()
    }

    fn still_trusted(&self, token: &str, entry: &Verified) -> bool {
        let trusted = entry.generation >= self.trusted_since.load(Ordering::Acquire);
        if !trusted {
            self.verified.invalidate(token);
        }
        trusted
    }

    /// Remembers a token that passed verification with the key set of `generation`; the
    /// returned key is shared with whoever may need to forget the token later.
    pub fn remember(&self, token: &str, principal: Arc<Principal>, generation: u64) -> Arc<str> {
        let entry = Verified {
            principal,
            generation,
        };
        let key: Arc<str> = Arc::from(token);
        self.verified.insert(Arc::clone(&key), entry);
        key
    }

    /// Forgets a verified token (its session ended).
    pub fn forget(&self, token: &str) {
        self.verified.invalidate(token);
    }

    /// True for a token refused within the last [`REFUSAL_TTL`].
    pub fn is_refused(&self, token: &str) -> bool {
        self.refused.contains_key(&digest(token))
    }

    /// Remembers a token that failed verification (bad signature, or a claim check).
    pub fn remember_refusal(&self, token: &str) {
        self.refused.insert(digest(token), ());
    }

    /// A key was withdrawn in key-set `generation`: no token verified before it is trusted
    /// again, including one whose verification was still running while the keys changed.
    pub fn withdraw_before(&self, generation: u64) {
        self.trusted_since.fetch_max(generation, Ordering::AcqRel);
        self.verified.invalidate_all();
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn principal() -> Arc<Principal> {
        Arc::new(Principal {
            user_id: "alice".into(),
            session_id: "s1".into(),
            token_id: "t1".into(),
            expires_at: OffsetDateTime::now_utc() + time::Duration::minutes(5),
        })
    }

    #[test]
    fn verified_tokens_are_remembered() {
        let cache = TokenCache::new(10, 10);
        let alice = principal();
        cache.remember("token", alice.clone(), 1);
        assert_eq!(cache.verified("token"), Some(alice));
        assert!(cache.is_verified("token"));
        assert!(!cache.is_verified("other"));
        cache.forget("token");
        assert!(!cache.is_verified("token"));
    }

    #[test]
    fn a_token_verified_while_a_key_was_withdrawn_is_not_trusted() {
        let cache = TokenCache::new(10, 10);
        // Verification started with key set 1; the withdrawal (set 2) lands before the
        // verdict is stored.
        cache.withdraw_before(2);
        cache.remember("verified-with-old-keys", principal(), 1);
        assert_eq!(cache.verified("verified-with-old-keys"), None);
        assert!(!cache.is_verified("verified-with-old-keys"));
        cache.remember("verified-with-new-keys", principal(), 2);
        assert!(cache.is_verified("verified-with-new-keys"));
    }

    #[test]
    fn a_withdrawal_forgets_earlier_tokens_and_never_goes_back() {
        let cache = TokenCache::new(10, 10);
        cache.remember("token", principal(), 1);
        cache.withdraw_before(3);
        cache.withdraw_before(2);
        assert_eq!(cache.verified("token"), None);
        cache.remember("late", principal(), 2);
        assert!(
            !cache.is_verified("late"),
            "generation 2 is before the withdrawal in 3"
        );
    }

    #[test]
    fn refusals_are_remembered_by_digest() {
        let cache = TokenCache::new(10, 10);
        assert!(!cache.is_refused("forged"));
        cache.remember_refusal("forged");
        assert!(cache.is_refused("forged"));
        assert!(!cache.is_refused("forged2"));
    }

    proptest! {
        #[test]
        fn verdicts_are_kept_for_exactly_the_token_given(token in any::<String>(), other in any::<String>()) {
            prop_assume!(token != other);
            let cache = TokenCache::new(10, 10);
            prop_assert!(cache.verified(&token).is_none());
            prop_assert!(!cache.is_refused(&token));
            let alice = principal();
            cache.remember(&token, alice.clone(), 1);
            cache.remember_refusal(&other);
            prop_assert_eq!(cache.verified(&token), Some(alice));
            prop_assert!(cache.verified(&other).is_none());
            prop_assert!(cache.is_refused(&other));
            prop_assert!(!cache.is_refused(&token));
        }
    }
}
