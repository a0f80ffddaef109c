//! Where a presented refresh secret stands in its session: the heart of the family policy.

use std::time::Duration;

use subtle::{Choice, ConstantTimeEq};
use time::OffsetDateTime;

use common::clock::{duration_millis, unix_millis};

use crate::{refresh_token::SecretHash, sessions::Session};

/// What a presented secret is to its session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// The session's current token.
    Current,
    /// The token rotated out last, again within the grace: it gets the same successor.
    RetryOfPrevious,
    /// A token the session once had, presented when it no longer may be: proven reuse.
    Reused,
    /// Not a secret this session ever had (forged), or one older than the retired hashes reach.
    Unknown,
}

/// Where `presented` stands in `session` at `now`. Hashes are compared in constant time.
pub fn standing(
    session: &Session,
    presented: &SecretHash,
    now: OffsetDateTime,
    grace: Duration,
) -> Standing {
    let matches = |hash: &SecretHash| bool::from(hash.ct_eq(presented));
    if matches(&session.token_hash) {
        return Standing::Current;
    }
    if session.previous_hash.as_ref().is_some_and(matches) {
        let elapsed_ms = unix_millis(now).saturating_sub(session.rotated_at_ms);
        let grace_ms = duration_millis(grace);
        return if elapsed_ms <= grace_ms {
            Standing::RetryOfPrevious
        } else {
            Standing::Reused
        };
    }
    let retired = session
        .retired
        .iter()
        .fold(Choice::from(0), |seen, hash| seen | hash.ct_eq(presented));
    if bool::from(retired) {
        Standing::Reused
    } else {
        Standing::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(10);

    /// A session rotated twice, the last time at `rotated_at`.
    fn session(rotated_at: OffsetDateTime) -> Session {
        Session {
            token_hash: [3; 32],
            previous_hash: Some([2; 32]),
            retired: vec![[1; 32]],
            nonce: None,
            generation: 2,
            rotated_at_ms: unix_millis(rotated_at),
            expires_at: i64::MAX,
            revoked: false,
            username: None,
        }
    }

    #[test]
    fn the_previous_token_is_a_retry_within_the_grace_and_reuse_after_it() {
        let rotated = OffsetDateTime::now_utc();
        let session = session(rotated);
        let at = |secs: i64| rotated + time::Duration::seconds(secs);
        assert_eq!(
            standing(&session, &[2; 32], at(0), GRACE),
            Standing::RetryOfPrevious
        );
        assert_eq!(
            standing(&session, &[2; 32], at(10), GRACE),
            Standing::RetryOfPrevious
        );
        assert_eq!(
            standing(&session, &[2; 32], at(11), GRACE),
            Standing::Reused
        );
        assert_eq!(
            standing(&session, &[2; 32], at(-5), GRACE),
            Standing::RetryOfPrevious,
            "another replica's clock may be ahead"
        );
        assert_eq!(
            standing(&session, &[2; 32], at(0), Duration::ZERO),
            Standing::RetryOfPrevious
        );
    }

    #[test]
    fn current_retired_and_unknown_secrets_are_told_apart() {
        let now = OffsetDateTime::now_utc();
        let session = session(now);
        assert_eq!(standing(&session, &[3; 32], now, GRACE), Standing::Current);
        assert_eq!(
            standing(&session, &[1; 32], now, GRACE),
            Standing::Reused,
            "at once"
        );
        assert_eq!(standing(&session, &[9; 32], now, GRACE), Standing::Unknown);
    }

    #[test]
    fn a_fresh_session_knows_only_its_current_token() {
        let now = OffsetDateTime::now_utc();
        let mut fresh = session(now);
        fresh.previous_hash = None;
        fresh.retired.clear();
        assert_eq!(standing(&fresh, &[2; 32], now, GRACE), Standing::Unknown);
        assert_eq!(standing(&fresh, &[3; 32], now, GRACE), Standing::Current);
    }
}
