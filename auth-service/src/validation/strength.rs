//! Password strength: zxcvbn's estimate of the guesses a password needs, with a bounded cost.
//!
//! zxcvbn is slow on some inputs: its l33t matcher tries every substitution set the password's
//! symbols allow against every substring, so a password drawn from its l33t table costs ≈ 1 s
//! at 100 characters (the crate's own cap), 120 ms at 32, 50 ms at 20 and 11 ms at 16, against
//! ≈ 20–30 ms for one argon2 hash (release, this machine; docs/security.md). So only the
//! first [`SCORED_CHARS`] characters are scored — a prefix that needs few guesses makes the
//! whole password need few, and people's passphrases already score 3 or 4 on their first 16
//! characters — on a blocking thread, one password at a time, with a bounded queue: hostile
//! passwords cost less than the hash every Register pays anyway, never stall the runtime, and
//! past the queue are refused.

use std::sync::Arc;

use common::status::Violation;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;
use zxcvbn::{Score, feedback::Feedback};

use crate::error::AuthError;

/// Characters of a password that are scored. Longer passwords are judged by this prefix.
pub const SCORED_CHARS: usize = 16;
/// Passwords scored at once.
const SCORING_THREADS: usize = 1;
/// Passwords waiting to be scored at most; beyond it, `AuthError::Overloaded`.
const SCORING_QUEUE: usize = 64;

/// How strong a new password must be.
#[derive(clap::Args, Clone, Debug)]
pub struct PasswordSettings {
    /// Least zxcvbn score a new password must reach, 0 to 4: 3 needs ≈ 10^8 guesses or more, 4
    /// more than 10^10. 0 turns the strength check off (length, the common-password list and
    /// the username rule still apply).
    #[arg(long, env = "DYNAGATE_MIN_PASSWORD_SCORE", default_value_t = 3,
          value_parser = clap::value_parser!(u8).range(0..=4))]
    pub min_password_score: u8,
}

/// The configured strength rule and the bounded place passwords are scored in; cheap to
/// clone (clones share the bound).
#[derive(Clone, Debug)]
pub struct PasswordRules {
    min_score: Score,
    running: Arc<Semaphore>,
    places: Arc<Semaphore>,
}

impl PasswordRules {
    /// Rules demanding `settings.min_password_score`.
    pub fn new(settings: &PasswordSettings) -> Self {
        Self {
            // Out of range only if clap's range check was bypassed: then the strictest.
            min_score: Score::try_from(settings.min_password_score).unwrap_or(Score::Four),
            running: Arc::new(Semaphore::new(SCORING_THREADS)),
            places: Arc::new(Semaphore::new(SCORING_QUEUE)),
        }
    }

    /// Fails unless `password`'s first [`SCORED_CHARS`] characters score at least the
    /// minimum, `username` counting as a known word.
    pub(super) async fn check_strength(
        &self,
        password: &SecretString,
        username: &str,
    ) -> Result<(), AuthError> {
        if self.min_score == Score::Zero {
            return Ok(());
        }
        let _place = Arc::clone(&self.places)
            .try_acquire_owned()
            .map_err(|_| AuthError::Overloaded)?;
        let running = Arc::clone(&self.running)
            .acquire_owned()
            .await
            .map_err(|_| anyhow::anyhow!("password scoring stopped"))?;
        let prefix: SecretString = password
            .expose_secret()
            .chars()
            .take(SCORED_CHARS)
            .collect::<String>()
            .into();
        let username = username.to_owned();
        // The permit lives in the job: a cancelled call cannot start another scoring while
        // its own still runs.
        let estimate = tokio::task::spawn_blocking(move || {
            let _running = running;
            let estimate = zxcvbn::zxcvbn(prefix.expose_secret(), &[username.as_str()]);
            (estimate.score(), estimate.feedback().map(advice))
        })
        .await
        .map_err(|e| anyhow::anyhow!("password scoring failed: {e}"))?;
        match estimate {
            (score, _) if score >= self.min_score => Ok(()),
            (_, advice) => Err(AuthError::InvalidArgument(vec![Violation::new(
                "password",
                format!(
                    "too easy to guess: {}",
                    advice.unwrap_or_else(|| "add another word or two".to_owned())
                ),
            )])),
        }
    }
}

/// zxcvbn's feedback as one sentence list: its fixed texts, which never quote the password.
fn advice(feedback: &Feedback) -> String {
    let warning = feedback.warning().map(|warning| warning.to_string());
    let suggestions = feedback.suggestions().iter().map(ToString::to_string);
    let text = warning.into_iter().chain(suggestions).collect::<Vec<_>>();
    let text = text.join(" ");
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => "add another word or two".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn scoring_past_the_queue_is_shed_not_queued() {
        let rules = PasswordRules::new(&PasswordSettings {
            min_password_score: 3,
        });
        let password: SecretString = "correct horse battery staple".to_owned().into();
        let taken = Arc::clone(&rules.places)
            .try_acquire_many_owned(u32::try_from(SCORING_QUEUE).unwrap())
            .unwrap();
        let shed = rules.check_strength(&password, "alice").await;
        assert!(matches!(shed, Err(AuthError::Overloaded)), "{shed:?}");
        drop(taken);
        rules.check_strength(&password, "alice").await.unwrap();
    }
}
