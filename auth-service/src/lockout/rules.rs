//! The lockout's arithmetic, apart from storage: given what is stored for a username and the
//! time, refuse the attempt or count it. Pure, so every rule is tested without a table.

use std::time::Duration;

use common::clock::duration_millis;

/// The numbers of the lockout, from the settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rules {
    /// Failures that lock a username (≥ 1).
    pub threshold: u32,
    /// The first lock; each further failure doubles it.
    pub first_lock: Duration,
    /// The longest lock.
    pub max_lock: Duration,
    /// Time without a failure after which the count starts again.
    pub quiet: Duration,
}

/// What is stored for one username. Times are Unix milliseconds of the injected clock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// Attempts counted since the last reset: failures, plus those still being checked.
    pub count: u32,
    /// When the last attempt was counted.
    pub last_at_ms: i64,
    /// Attempts are refused until then.
    pub locked_until_ms: Option<i64>,
}

/// When an attempt can be counted without reading first: the stored state, if any, is
/// unlocked, still counting, and below `below`, so [`Rules::decide`] would count it as one
/// more failure that starts no lock. The table checks these bounds in its conditional write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clear {
    /// The stored count must be below this (threshold − 1: the attempt cannot lock).
    pub below: u32,
    /// The last attempt must be later than this (Unix ms: now − the quiet period), so the
    /// count still counts and does not start again.
    pub counting_after_ms: i64,
}

/// What to do with an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Locked: refuse it, unchecked, for this long.
    Refuse(Duration),
    /// Count it: store this state (conditionally on the one read), then check the password.
    Count(State),
}

impl State {
    /// When the count starts again: a quiet period after the last attempt or the end of the
    /// lock, whichever is later (so a lock longer than the quiet period still runs out).
    pub fn quiet_from_ms(&self) -> i64 {
        self.last_at_ms
            .max(self.locked_until_ms.unwrap_or(i64::MIN))
    }
}

impl Rules {
    /// The decision for an attempt at `now_ms`, given the `stored` state (none: never tried,
    /// or reset by a success).
    pub fn decide(&self, stored: Option<&State>, now_ms: i64) -> Decision {
        let quiet_ms = duration_millis(self.quiet);
        let state = stored
            .filter(|state| now_ms < state.quiet_from_ms().saturating_add(quiet_ms))
            .copied()
            .unwrap_or_default();
        if let Some(until) = state.locked_until_ms.filter(|&until| until > now_ms) {
            let remaining = u64::try_from(until - now_ms).unwrap_or(u64::MAX);
            return Decision::Refuse(Duration::from_millis(remaining));
        }
        let count = state.count.saturating_add(1);
        let locked_until_ms = (count >= self.threshold)
            .then(|| now_ms.saturating_add(duration_millis(self.lock_for(count))));
        Decision::Count(State {
            count,
            last_at_ms: now_ms,
            locked_until_ms,
        })
    }

    /// The bounds under which an attempt at `now_ms` is counted in one write (see [`Clear`]);
    /// `None` when every attempt may lock (a threshold of 1) and so needs a decision.
    pub fn clear(&self, now_ms: i64) -> Option<Clear> {
        (self.threshold >= 2).then(|| Clear {
            below: self.threshold - 1,
            counting_after_ms: now_ms.saturating_sub(duration_millis(self.quiet)),
        })
    }

    /// The lock `failures` failures earn: first × 2^(failures − threshold), at most the cap.
    pub fn lock_for(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(self.threshold);
        let factor = 1_u32.checked_shl(doublings).unwrap_or(u32::MAX);
        self.first_lock
            .checked_mul(factor)
            .unwrap_or(Duration::MAX)
            .min(self.max_lock)
    }

    /// When DynamoDB TTL may delete a stored `state`: once its quiet period is over it means
    /// nothing any more. Unix seconds, rounded up.
    pub fn expires_at_secs(&self, state: &State) -> i64 {
        let end_ms = state
            .quiet_from_ms()
            .saturating_add(duration_millis(self.quiet));
        end_ms.saturating_add(999).div_euclid(1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const RULES: Rules = Rules {
        threshold: 5,
        first_lock: Duration::from_secs(1),
        max_lock: Duration::from_secs(900),
        quiet: Duration::from_secs(3600),
    };
    const T0: i64 = 1_700_000_000_000;

    /// Counts `n` attempts one `gap_ms` apart from T0; returns the state and the time after.
    fn fail(rules: &Rules, n: u32, gap_ms: i64) -> (Option<State>, i64) {
        let (mut state, mut now) = (None, T0);
        for _ in 0..n {
            match rules.decide(state.as_ref(), now) {
                Decision::Count(next) => state = Some(next),
                Decision::Refuse(_) => panic!("refused at {now}"),
            }
            now += gap_ms;
        }
        (state, now)
    }

    #[test]
    fn the_threshold_th_failure_locks_for_the_first_lock() {
        let (state, _) = fail(&RULES, 4, 10);
        assert_eq!(
            state.unwrap().locked_until_ms,
            None,
            "4 failures lock nothing"
        );
        let (state, now) = fail(&RULES, 5, 10);
        let state = state.unwrap();
        assert_eq!(state.locked_until_ms, Some(now - 10 + 1000));
        assert_eq!(
            RULES.decide(Some(&state), now),
            Decision::Refuse(Duration::from_millis(990))
        );
    }

    #[test]
    fn each_failure_after_a_lock_doubles_it_up_to_the_cap() {
        assert_eq!(RULES.lock_for(5), Duration::from_secs(1));
        assert_eq!(RULES.lock_for(6), Duration::from_secs(2));
        assert_eq!(RULES.lock_for(9), Duration::from_secs(16));
        assert_eq!(RULES.lock_for(15), Duration::from_secs(900));
        assert_eq!(RULES.lock_for(u32::MAX), Duration::from_secs(900));
    }

    #[test]
    fn an_expired_lock_lets_one_attempt_in_and_locks_again_for_longer() {
        let (state, now) = fail(&RULES, 5, 0);
        let after_lock = now + 1000;
        let Decision::Count(next) = RULES.decide(state.as_ref(), after_lock) else {
            panic!("the lock has run out");
        };
        assert_eq!(next.count, 6);
        assert_eq!(next.locked_until_ms, Some(after_lock + 2000));
    }

    #[test]
    fn a_quiet_period_starts_the_count_again() {
        let (state, now) = fail(&RULES, 4, 0);
        let later = now + 3_600_000;
        assert_eq!(
            RULES.decide(state.as_ref(), later),
            Decision::Count(State {
                count: 1,
                last_at_ms: later,
                locked_until_ms: None
            })
        );
        let Decision::Count(next) = RULES.decide(state.as_ref(), later - 1) else {
            panic!("not locked");
        };
        assert_eq!(next.count, 5, "one millisecond short of quiet");
    }

    #[test]
    fn a_threshold_of_one_has_no_clear_bounds() {
        let rules = Rules {
            threshold: 1,
            ..RULES
        };
        assert_eq!(rules.clear(T0), None);
        assert_eq!(
            RULES.clear(T0),
            Some(Clear {
                below: 4,
                counting_after_ms: T0 - 3_600_000
            })
        );
    }

    #[test]
    fn a_lock_longer_than_the_quiet_period_runs_its_course() {
        let rules = Rules {
            max_lock: Duration::from_secs(7200),
            quiet: Duration::from_secs(60),
            ..RULES
        };
        let state = State {
            count: 20,
            last_at_ms: T0,
            locked_until_ms: Some(T0 + 7_200_000),
        };
        assert_eq!(rules.lock_for(20), Duration::from_secs(7200), "capped");
        let until = T0 + 7_200_000;
        assert!(matches!(
            rules.decide(Some(&state), T0 + 3_600_000),
            Decision::Refuse(_)
        ));
        assert_eq!(
            rules.expires_at_secs(&state),
            (until + 60_000).div_euclid(1000)
        );
    }

    proptest! {
        /// What the one-write count stores (the count plus one, `last_at` now, no lock, the
        /// quiet period's end as TTL) is what `decide` would, for every state the bounds let
        /// through, and none of those states is locked.
        #[test]
        fn the_clear_bounds_count_exactly_as_decide_does(
            threshold in 2_u32..20, count in 0_u32..40, last in -4_000_000_i64..10,
            locked in proptest::option::of(0_i64..2_000_000), now in 0_i64..10,
        ) {
            let rules = Rules { threshold, ..RULES };
            let now = T0 + now;
            let bounds = rules.clear(now).unwrap();
            let stored = State { count, last_at_ms: T0 + last, locked_until_ms: locked.map(|l| T0 + l) };
            let passes = |state: &State| state.locked_until_ms.is_none()
                && state.count < bounds.below
                && state.last_at_ms > bounds.counting_after_ms;
            for (stored, counted) in [(None, 1), (Some(stored), count + 1)] {
                if stored.as_ref().is_some_and(|state| !passes(state)) {
                    continue;
                }
                let expected = State { count: counted, last_at_ms: now, locked_until_ms: None };
                prop_assert_eq!(rules.decide(stored.as_ref(), now), Decision::Count(expected));
                prop_assert_eq!(
                    rules.expires_at_secs(&expected),
                    (now + duration_millis(rules.quiet) + 999).div_euclid(1000)
                );
            }
        }

        #[test]
        fn a_refusal_never_outlasts_the_cap(count in 0_u32..200, last in -10_i64..10, now in 0_i64..2_000_000) {
            let stored = State {
                count,
                last_at_ms: T0 + last,
                locked_until_ms: Some(T0 + last + i64::try_from(RULES.lock_for(count).as_millis()).unwrap()),
            };
            match RULES.decide(Some(&stored), T0 + now) {
                Decision::Refuse(wait) => prop_assert!(wait <= RULES.max_lock),
                Decision::Count(next) => prop_assert!(next.count >= 1),
            }
        }
    }
}
