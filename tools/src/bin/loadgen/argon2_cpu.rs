//! One argon2id verify at the service's default cost, timed on this thread's CPU clock: the
//! yardstick for the service's CPU per login.

use std::time::Duration;

use anyhow::Context;
use argon2::{
    Algorithm, Argon2, Block, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version,
};
use rustix::time::{ClockId, clock_gettime};

/// The auth-service's default argon2 cost (m=19456 KiB, t=2, p=1).
pub const MEMORY_KIB: u32 = 19_456;
/// Its iterations.
pub const ITERATIONS: u32 = 2;
const PASSWORD: &[u8] = b"bench password";

/// CPU time of one argon2id verify at the service's default cost on this thread (median of
/// `rounds`): with the crate's `verify_password`, which allocates (and page-faults) its memory
/// each time, and recomputed into memory allocated once, as the service's workers do.
pub fn verify_cpu(rounds: usize) -> anyhow::Result<(Duration, Duration)> {
    let params = Params::new(MEMORY_KIB, ITERATIONS, 1, None)
        .map_err(|e| anyhow::anyhow!("argon2 params: {e}"))?;
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let phc = argon2
        .hash_password(PASSWORD)
        .map_err(|e| anyhow::anyhow!("argon2 hash: {e}"))?
        .to_string();
    let hash = PasswordHash::new(&phc).map_err(|e| anyhow::anyhow!("PHC: {e}"))?;
    let salt = hash.salt.context("salt")?;
    let mut memory = vec![Block::new(); params.block_count()];
    let mut out = [0u8; 32];
    let allocating = median_cpu(rounds, || {
        argon2
            .verify_password(PASSWORD, &hash)
            .map_err(|e| anyhow::anyhow!("argon2 verify: {e}"))
    })?;
    let reused = median_cpu(rounds, || {
        argon2
            .hash_password_into_with_memory(PASSWORD, &salt, &mut out, memory.as_mut_slice())
            .map_err(|e| anyhow::anyhow!("argon2: {e}"))
    })?;
    Ok((allocating, reused))
}

fn median_cpu(
    rounds: usize,
    mut work: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Duration> {
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let start = thread_cpu();
        work()?;
        samples.push(thread_cpu().saturating_sub(start));
    }
    samples.sort();
    samples.get(rounds / 2).copied().context("no samples")
}

fn thread_cpu() -> Duration {
    let now = clock_gettime(ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(now.tv_sec).unwrap_or(0),
        u32::try_from(now.tv_nsec).unwrap_or(0),
    )
}
