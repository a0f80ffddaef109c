//! Where a WatchRevocations stream starts. A resume token is a position in the serving
//! replica's own log, so resuming from one compares no clocks: the replica replays exactly
//! what it learned of after that position. A token names the replica's run (a random
//! incarnation, new at every start); from another run, or another replica, it means nothing
//! and the replay is complete. Watchers without tokens resume by `since`, a `revoked_at` that
//! some replica's clock stamped, clamped to this replica's clock before the lookback applies.

use common::status::Violation;
use prost_types::Timestamp;

use super::{Hub, snapshot::Snapshot};
use crate::error::AuthError;

/// Hex digits of a token: the incarnation, then the position.
const TOKEN_LEN: usize = 32;

/// A position in one run's log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResumeToken {
    /// The run that issued it.
    pub incarnation: u64,
    /// The `seq` of the last entry the stream had examined (sent, or skipped as expired).
    pub seq: u64,
}

impl ResumeToken {
    /// The token's text: opaque to watchers.
    pub fn encode(&self) -> String {
        format!("{:016x}{:016x}", self.incarnation, self.seq)
    }

    /// A token from its text; `None` for anything this feed never issues.
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != TOKEN_LEN || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let (incarnation, seq) = text.split_at(TOKEN_LEN / 2);
        Some(Self {
            incarnation: u64::from_str_radix(incarnation, 16).ok()?,
            seq: u64::from_str_radix(seq, 16).ok()?,
        })
    }
}

/// What a watcher asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Start {
    /// Its resume token, if it sent one.
    pub token: Option<ResumeToken>,
    /// Its `since`, Unix milliseconds.
    pub since_ms: Option<i64>,
}

impl Start {
    /// The start a request asks for; INVALID_ARGUMENT for a `since` no date can hold or a token
    /// this feed never issues.
    pub fn from_request(since: Option<Timestamp>, resume_token: &str) -> Result<Self, AuthError> {
        let since_ms = since_millis(since)?;
        let token = match resume_token {
            "" => None,
            text => Some(ResumeToken::parse(text).ok_or_else(|| {
                AuthError::InvalidArgument(vec![Violation::new(
                    "resume_token",
                    "must be a resume_token this feed sent",
                )])
            })?),
        };
        Ok(Self { token, since_ms })
    }

    /// The replay over `snapshot`: from after which position, and from which `revoked_at`
    /// (milliseconds) on.
    pub fn replay(&self, hub: &Hub, snapshot: &Snapshot, lookback_ms: i64) -> Replay {
        match self.token {
            Some(token)
                if token.incarnation == hub.incarnation() && token.seq <= snapshot.last_seq() =>
            {
                Replay {
                    after: token.seq,
                    from_ms: None,
                }
            }
            // Another run's position, or one this run never reached: everything.
            Some(_) => Replay::default(),
            None => Replay {
                after: 0,
                from_ms: self
                    .since_ms
                    .map(|since| since.min(hub.now_ms()).saturating_sub(lookback_ms)),
            },
        }
    }
}

/// Where a replay starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Replay {
    /// The log position it starts after.
    pub after: u64,
    /// The earliest `revoked_at` it includes (all when `None`).
    pub from_ms: Option<i64>,
}

/// `since` in Unix milliseconds; INVALID_ARGUMENT for a timestamp no date can hold.
fn since_millis(since: Option<Timestamp>) -> Result<Option<i64>, AuthError> {
    let Some(since) = since else {
        return Ok(None);
    };
    let at = common::timestamp::to_time(&since).ok_or_else(|| {
        AuthError::InvalidArgument(vec![Violation::new("since", "must be a valid timestamp")])
    })?;
    Ok(Some(common::clock::unix_millis(at)))
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use common::clock::ManualClock;
    use proptest::prelude::*;
    use time::OffsetDateTime;

    use super::*;
    use crate::revocations::Revocation;

    const NOW: i64 = 1_700_000_000;

    fn hub_with(count: usize) -> Hub {
        let clock = Arc::new(ManualClock::new(
            OffsetDateTime::from_unix_timestamp(NOW).unwrap(),
        ));
        let hub = Hub::new(clock, Duration::from_secs(5));
        for n in 0..count {
            hub.add(Revocation {
                session_id: format!("s{n}"),
                user_id: None,
                revoked_at_ms: NOW * 1000,
                not_after: NOW + 60,
            });
        }
        hub
    }

    proptest! {
        #[test]
        fn tokens_round_trip(incarnation: u64, seq: u64) {
            let token = ResumeToken { incarnation, seq };
            prop_assert_eq!(ResumeToken::parse(&token.encode()), Some(token));
        }

        #[test]
        fn anything_else_is_refused(text in "\\PC{0,40}") {
            let issued = text.len() == TOKEN_LEN && text.bytes().all(|b| b.is_ascii_hexdigit());
            prop_assert_eq!(ResumeToken::parse(&text).is_some(), issued);
        }
    }

    #[test]
    fn a_token_of_this_run_resumes_exactly_after_its_position() {
        let hub = hub_with(10);
        let snapshot = hub.subscribe().snapshot;
        let token = ResumeToken {
            incarnation: hub.incarnation(),
            seq: 4,
        };
        let start = Start::from_request(None, &token.encode()).unwrap();
        let replay = start.replay(&hub, &snapshot, 15_000);
        assert_eq!(
            replay,
            Replay {
                after: 4,
                from_ms: None
            }
        );
    }

    #[test]
    fn a_token_of_another_run_or_from_beyond_the_log_replays_everything() {
        let hub = hub_with(10);
        let snapshot = hub.subscribe().snapshot;
        let since = Some(Timestamp {
            seconds: NOW,
            nanos: 0,
        });
        for token in [
            ResumeToken {
                incarnation: hub.incarnation() ^ 1,
                seq: 4,
            },
            ResumeToken {
                incarnation: hub.incarnation(),
                seq: 11,
            },
        ] {
            let start = Start::from_request(since, &token.encode()).unwrap();
            assert_eq!(start.replay(&hub, &snapshot, 15_000), Replay::default());
        }
    }

    #[test]
    fn since_from_a_clock_ahead_is_clamped_to_this_replicas_clock() {
        let hub = hub_with(0);
        let snapshot = hub.subscribe().snapshot;
        let ahead = Some(Timestamp {
            seconds: NOW + 60,
            nanos: 0,
        });
        let replay = Start::from_request(ahead, "")
            .unwrap()
            .replay(&hub, &snapshot, 15_000);
        assert_eq!(replay.from_ms, Some(NOW * 1000 - 15_000));
        let behind = Some(Timestamp {
            seconds: NOW - 60,
            nanos: 0,
        });
        let replay = Start::from_request(behind, "")
            .unwrap()
            .replay(&hub, &snapshot, 15_000);
        assert_eq!(replay.from_ms, Some((NOW - 60) * 1000 - 15_000));
    }

    #[test]
    fn malformed_tokens_and_times_are_invalid_arguments() {
        for (since, token) in [
            (None, "not a token"),
            (None, "0123456789abcdef0123456789abcdeg"),
            (
                Some(Timestamp {
                    seconds: 0,
                    nanos: -1,
                }),
                "",
            ),
        ] {
            let refused = Start::from_request(since, token);
            assert!(
                matches!(refused, Err(AuthError::InvalidArgument(_))),
                "{token:?}"
            );
        }
    }
}
