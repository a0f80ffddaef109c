//! Password hashing with argon2id on a fixed set of low-priority worker threads, each reusing
//! one memory block (allocated by its first hash, then kept): a login flood, cancelled or not, queues (and past the queue
//! is refused) instead of starving the runtime or growing memory, and login time does not
//! reveal whether an account exists or how old its hash is.

mod kernel;
mod pool;
mod timing;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::anyhow;
use argon2::Params;
use secrecy::{ExposeSecret, SecretString};

pub use self::pool::{HashSched, PoolSize, Priority};
use self::{kernel::Kernel, pool::Pool, timing::CostClock};
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

/// Hashes and verifies passwords; cheap to clone. The worker threads stop once every clone
/// is dropped.
#[derive(Clone)]
pub struct PasswordHasher {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("cost", &self.inner.cost)
            .field("pool", &self.inner.size)
            .finish_non_exhaustive()
    }
}

struct Inner {
    cost: Cost,
    size: PoolSize,
    pool: Pool<Kernel>,
    metrics: Arc<Metrics>,
    /// How long a current-cost computation takes, to pad cheaper verifications up to.
    clock: Arc<CostClock>,
    /// A hash at the current cost that nothing matches: unknown users are verified against
    /// it, so they cost the same time as known ones.
    unmatchable: Arc<str>,
}

impl PasswordHasher {
    /// A hasher at `cost` on `workers` threads (0 = one per CPU) running at `priority`, with
    /// at most `queue` more checks waiting.
    pub fn new(
        cost: Cost,
        workers: usize,
        queue: usize,
        priority: Priority,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let params = Params::new(cost.memory_kib, cost.iterations, cost.parallelism, None)
            .map_err(|e| anyhow!("invalid argon2 cost {cost:?}: {e}"))?;
        let workers = if workers == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            workers
        };
        let size = PoolSize {
            workers,
            queue,
            priority,
        };
        let unmatchable: Arc<str> = kernel::unmatchable(&params)?.into();
        let clock = Arc::new(CostClock::default());
        let pool = Pool::start(size, Arc::clone(&metrics), move || {
            Kernel::new(params.clone())
        })?;
        Ok(Self {
            inner: Arc::new(Inner {
                cost,
                size,
                pool,
                metrics,
                clock,
                unmatchable,
            }),
        })
    }

    /// Hashes a new password into a PHC string (`$argon2id$v=19$m=…`).
    pub async fn hash(&self, password: SecretString) -> Result<String, AuthError> {
        let inner = Arc::clone(&self.inner);
        self.inner
            .pool
            .run(move |kernel| {
                inner.metrics.password_hashes.increment();
                let started = Instant::now();
                let hash = kernel.hash(password.expose_secret().as_bytes())?;
                inner.clock.record(started.elapsed());
                Ok(hash)
            })
            .await
    }

    /// Checks `password` against a stored PHC string, or against the unmatchable hash when
    /// there is none (unknown user): the same work and time either way, and `matches` is
    /// then always false.
    pub async fn verify(
        &self,
        password: SecretString,
        stored: Option<String>,
    ) -> Result<Verified, AuthError> {
        let inner = Arc::clone(&self.inner);
        self.inner
            .pool
            .run(move |kernel| {
                inner.metrics.password_verifications.increment();
                inner.calibrate(kernel);
                let known = stored.is_some();
                let phc = stored.as_deref().unwrap_or(&inner.unmatchable);
                let started = Instant::now();
                let checked = kernel.verify(password.expose_secret().as_bytes(), phc)?;
                let took = started.elapsed();
                if checked.current_cost {
                    inner.clock.record(took);
                } else {
                    inner.pad(took);
                }
                let matches = checked.matches && known;
                Ok(Verified {
                    matches,
                    needs_rehash: matches && !checked.current_cost,
                })
            })
            .await
    }
}

impl Inner {
    /// Seeds the time a current-cost verification takes, once, before the first verification
    /// that may need padding (not at startup: an idle service then holds no argon2 memory).
    fn calibrate(&self, kernel: &mut Kernel) {
        if !self.clock.estimate().is_zero() {
            return;
        }
        let started = Instant::now();
        match kernel.verify(b"calibration", &self.unmatchable) {
            Ok(_) => self.clock.record(started.elapsed()),
            Err(error) => tracing::error!(%error, "calibrating the password hashing time failed"),
        }
    }

    /// Holds the worker (this runs on it) until a verification at another cost that took
    /// `took` has lasted as long as one at the current cost.
    fn pad(&self, took: Duration) {
        let padding = self.clock.padding(took);
        if !padding.is_zero() {
            self.metrics.password_verifications_padded.increment();
            std::thread::sleep(padding);
        }
    }
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

    fn hasher(cost: Cost) -> (PasswordHasher, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::default());
        let hasher = PasswordHasher::new(cost, 1, 8, Priority::SAME, Arc::clone(&metrics)).unwrap();
        (hasher, metrics)
    }

    #[tokio::test]
    async fn a_hashed_password_verifies_and_another_does_not() {
        let (hasher, _) = hasher(CHEAP);
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
        let (hasher, metrics) = hasher(CHEAP);
        let verified = hasher
            .verify(secret("anything at all"), None)
            .await
            .unwrap();
        assert!(!verified.matches);
        assert_eq!(metrics.password_verifications.get(), 1);
    }

    #[tokio::test]
    async fn a_changed_cost_asks_for_a_rehash() {
        let (old, _) = hasher(CHEAP);
        let phc = old.hash(secret("correct horse")).await.unwrap();
        let (new, _) = hasher(Cost {
            memory_kib: 128,
            ..CHEAP
        });
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
    async fn only_a_verification_at_an_older_cost_is_padded_to_the_current_one() {
        let (old, _) = hasher(CHEAP);
        let old_hash = old.hash(secret("correct horse")).await.unwrap();
        let (new, metrics) = hasher(Cost {
            memory_kib: 256,
            ..CHEAP
        });
        let new_hash = new.hash(secret("correct horse")).await.unwrap();
        // However fast this machine is, a current-cost check now "takes" 50 ms.
        new.inner.clock.set(Duration::from_millis(50));

        new.verify(secret("wrong"), Some(new_hash)).await.unwrap();
        new.verify(secret("wrong"), None).await.unwrap();
        let unpadded = metrics.password_verifications_padded.get();
        new.verify(secret("wrong"), Some(old_hash)).await.unwrap();

        assert_eq!(unpadded, 0, "current-cost verifications are not padded");
        assert_eq!(metrics.password_verifications_padded.get(), 1);
    }
}
