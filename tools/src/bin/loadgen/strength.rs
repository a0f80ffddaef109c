//! What checking a new password's strength costs on hostile input: zxcvbn as the crate runs
//! it (on the first 100 characters) against the service's bounded check (the first 16, see
//! `auth_service::validation`), on a 256-character password built from zxcvbn's l33t table,
//! the slowest kind of input we found.

use std::time::{Duration, Instant};

use anyhow::Context;
use auth_service::validation::{self, PasswordRules, PasswordSettings};
use secrecy::SecretString;

/// Symbols zxcvbn's l33t matcher substitutes, each one more substitution set to try.
const LEET: &str = "4@8({[<369!1|70$5+%2";
const ROUNDS: usize = 5;

/// Median wall time of zxcvbn as the crate runs it and of the service's check, over a few
/// rounds, as `12.3 ms`.
pub async fn measure() -> anyhow::Result<(String, String)> {
    let hostile: String = LEET.chars().cycle().take(256).collect();
    let unbounded = {
        let hostile = hostile.clone();
        tokio::task::spawn_blocking(move || {
            median(|| {
                zxcvbn::zxcvbn(&hostile, &["bench-user"]);
            })
        })
        .await?
    };
    let rules = PasswordRules::new(&PasswordSettings {
        min_password_score: 3,
    });
    let password = SecretString::from(hostile);
    let mut samples = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let start = Instant::now();
        // Strong by zxcvbn's measure: the whole check runs, and it is accepted.
        validation::new_password(&password, "bench-user", &rules)
            .await
            .context("the hostile password should pass")?;
        samples.push(start.elapsed());
    }
    samples.sort_unstable();
    Ok((
        crate::report::millis(unbounded),
        crate::report::millis(samples[ROUNDS / 2]),
    ))
}

fn median(mut work: impl FnMut()) -> Duration {
    let mut samples: Vec<Duration> = (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            work();
            start.elapsed()
        })
        .collect();
    samples.sort_unstable();
    samples[ROUNDS / 2]
}
