//! Password hashing with argon2id on a bounded blocking pool: a login flood queues (and past
//! the queue, is refused) instead of starving the async runtime that serves everyone else.

use std::sync::Arc;

use anyhow::Context;
use argon2::{
    Algorithm, Argon2, Params, PasswordHash, PasswordHasher as _, PasswordVerifier, Version,
};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;

use crate::{error::AuthError, metrics::Metrics};

/// The argon2id cost, as configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cost {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Iterations.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

/// The outcome of checking a password.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The password matched.
    pub matches: bool,
    /// It matched, but the stored hash uses another algorithm or cost: store a new hash.
    pub needs_rehash: bool,
}

/// Hashes and verifies passwords; cheap to clone.
#[derive(Clone)]
pub struct PasswordHasher {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("params", &self.inner.params)
            .field("free_workers", &self.inner.workers.available_permits())
            .finish_non_exhaustive()
    }
}

struct Inner {
    params: Params,
    metrics: Arc<Metrics>,
    workers: Semaphore,
    queue: Semaphore,
    /// A hash of a random password at the configured cost: unknown users are verified
    /// against it, so they cost the same time as known ones.
    dummy_hash: String,
}

impl PasswordHasher {
    /// A hasher at `cost`, computing at most `workers` hashes at once (0 = one per CPU) with
    /// at most `queue` more waiting.
    pub fn new(
        cost: Cost,
        workers: usize,
        queue: usize,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let params = Params::new(cost.memory_kib, cost.iterations, cost.parallelism, None)
            .map_err(|e| anyhow::anyhow!("invalid argon2 cost {cost:?}: {e}"))?;
        let workers = if workers == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            workers
        };
        let dummy_password: [u8; 32] = rand::random();
        let dummy_hash = argon2(&params)
            .hash_password(&dummy_password)
            .map_err(|e| anyhow::anyhow!("hashing the dummy password: {e}"))?
            .to_string();
        Ok(Self {
            inner: Arc::new(Inner {
                params,
                metrics,
                workers: Semaphore::new(workers),
                queue: Semaphore::new(workers + queue),
                dummy_hash,
            }),
        })
    }

    /// Hashes a new password into a PHC string (`$argon2id$v=19$m=…`).
    pub async fn hash(&self, password: SecretString) -> Result<String, AuthError> {
        let inner = Arc::clone(&self.inner);
        self.run(move || {
            inner.metrics.password_hashes.increment();
            argon2(&inner.params)
                .hash_password(password.expose_secret().as_bytes())
                .map(|hash| hash.to_string())
                .map_err(|e| anyhow::anyhow!("argon2 hash: {e}"))
        })
        .await
    }

    /// Checks `password` against a stored PHC string, or against the dummy hash when there is
    /// none (unknown user): the same work either way, and `matches` is then always false.
    pub async fn verify(
        &self,
        password: SecretString,
        stored: Option<String>,
    ) -> Result<Verified, AuthError> {
        let inner = Arc::clone(&self.inner);
        self.run(move || {
            inner.metrics.password_verifications.increment();
            let known = stored.is_some();
            let phc = stored.as_deref().unwrap_or(&inner.dummy_hash);
            let hash =
                PasswordHash::new(phc).context("stored password hash is not a PHC string")?;
            let matches = argon2(&inner.params)
                .verify_password(password.expose_secret().as_bytes(), &hash)
                .is_ok()
                && known;
            Ok(Verified {
                matches,
                needs_rehash: matches && !uses_params(&hash, &inner.params),
            })
        })
        .await
    }

    /// Runs CPU-heavy work on the blocking pool once a worker is free; refuses at once when
    /// the queue is full.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
    ) -> Result<T, AuthError> {
        let _queued = self.inner.queue.try_acquire().map_err(|_| {
            self.inner.metrics.hash_jobs_rejected.increment();
            AuthError::Overloaded
        })?;
        let _worker = self
            .inner
            .workers
            .acquire()
            .await
            .context("password worker pool closed")?;
        let metrics = Arc::clone(&self.inner.metrics);
        let result = tokio::task::spawn_blocking(move || {
            metrics.hash_jobs_running.increment();
            let result = work();
            metrics.hash_jobs_running.decrement();
            result
        })
        .await
        .context("password hashing task failed")?;
        Ok(result?)
    }
}

fn argon2(params: &Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
}

/// True when `hash` was made with argon2id v1.3 at exactly `params`.
fn uses_params(hash: &PasswordHash, params: &Params) -> bool {
    let same_algorithm = hash.algorithm.as_str() == Algorithm::Argon2id.as_str()
        && hash.version == Some(Version::V0x13.into());
    let same_cost = Params::try_from(hash).is_ok_and(|stored| {
        stored.m_cost() == params.m_cost()
            && stored.t_cost() == params.t_cost()
            && stored.p_cost() == params.p_cost()
    });
    same_algorithm && same_cost
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHEAP: Cost = Cost {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };

    fn secret(text: &str) -> SecretString {
        SecretString::from(text)
    }

    #[tokio::test]
    async fn a_hashed_password_verifies_and_another_does_not() {
        let hasher = PasswordHasher::new(CHEAP, 1, 8, Arc::default()).unwrap();
        let phc = hasher.hash(secret("correct horse")).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{phc}");

        let good = hasher
            .verify(secret("correct horse"), Some(phc.clone()))
            .await
            .unwrap();
        assert_eq!(
            good,
            Verified {
                matches: true,
                needs_rehash: false
            }
        );
        let bad = hasher
            .verify(secret("wrong horse"), Some(phc))
            .await
            .unwrap();
        assert!(!bad.matches);
    }

    #[tokio::test]
    async fn unknown_users_never_match_even_with_the_dummy_password_shape() {
        let hasher = PasswordHasher::new(CHEAP, 1, 8, Arc::default()).unwrap();
        let verified = hasher
            .verify(secret("anything at all"), None)
            .await
            .unwrap();
        assert!(!verified.matches);
    }

    #[tokio::test]
    async fn a_changed_cost_asks_for_a_rehash() {
        let old = PasswordHasher::new(CHEAP, 1, 8, Arc::default()).unwrap();
        let phc = old.hash(secret("correct horse")).await.unwrap();
        let new = PasswordHasher::new(
            Cost {
                memory_kib: 128,
                ..CHEAP
            },
            1,
            8,
            Arc::default(),
        )
        .unwrap();
        let verified = new
            .verify(secret("correct horse"), Some(phc))
            .await
            .unwrap();
        assert_eq!(
            verified,
            Verified {
                matches: true,
                needs_rehash: true
            }
        );
    }

    #[tokio::test]
    async fn a_full_queue_refuses_instead_of_waiting() {
        let hasher = PasswordHasher::new(CHEAP, 1, 0, Arc::default()).unwrap();
        let _busy = hasher.inner.queue.try_acquire().unwrap();
        let refused = hasher.hash(secret("correct horse")).await;
        assert!(matches!(refused, Err(AuthError::Overloaded)));
    }
}
