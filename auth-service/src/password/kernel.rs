//! argon2 computed in one memory block a worker allocates once and reuses for every hash, so
//! the service's memory is bounded by its workers instead of growing with every thread that
//! ever hashed. Reads and writes standard PHC strings (`$argon2id$v=19$m=…`).

use anyhow::{Context, anyhow, bail};
use argon2::{
    Algorithm, Argon2, Block, Params, Version,
    password_hash::phc::{Output, ParamsString, PasswordHash, Salt},
};
use subtle::ConstantTimeEq;

/// Bytes of salt in new hashes (the PHC and OWASP recommendation).
const SALT_LEN: usize = 16;
/// The largest memory cost a stored hash may ask for (1 GiB, in KiB): a hash above it is
/// corrupt, not a user to let through at any price.
const MAX_STORED_MEMORY_KIB: u32 = 1024 * 1024;

/// What checking a password against a stored hash found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checked {
    /// The password matched.
    pub matches: bool,
    /// The stored hash is argon2id v1.3 at exactly the configured cost.
    pub current_cost: bool,
}

/// One worker's argon2: the configured cost and the memory to compute it in.
pub struct Kernel {
    params: Params,
    /// Empty until the worker's first hash, then one block for the configured cost, kept: an
    /// idle service holds no argon2 memory, a busy one exactly one block per worker.
    memory: Vec<Block>,
}

impl Kernel {
    /// A kernel for `params`; its memory is allocated by its first hash.
    pub fn new(params: Params) -> Self {
        Self {
            params,
            memory: Vec::new(),
        }
    }

    /// Hashes `password` with a fresh random salt at the configured cost.
    pub fn hash(&mut self, password: &[u8]) -> anyhow::Result<String> {
        let salt: [u8; SALT_LEN] = rand::random();
        let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
        let params = self.params.clone();
        self.compute(
            Algorithm::Argon2id,
            Version::V0x13,
            &params,
            password,
            &salt,
            &mut out,
        )?;
        phc_string(&params, &salt, &out)
    }

    /// Recomputes `password` with the stored hash's own algorithm, version, cost and salt,
    /// and compares the outputs in constant time.
    pub fn verify(&mut self, password: &[u8], stored: &str) -> anyhow::Result<Checked> {
        let hash = PasswordHash::new(stored)
            .map_err(|e| anyhow!("stored password hash is not a PHC string: {e}"))?;
        let algorithm = Algorithm::new(hash.algorithm.as_str())
            .map_err(|e| anyhow!("stored password hash algorithm: {e}"))?;
        let version = match hash.version {
            Some(id) => {
                Version::try_from(id).map_err(|e| anyhow!("stored password hash version: {e}"))?
            }
            None => Version::V0x10,
        };
        let params =
            Params::try_from(&hash).map_err(|e| anyhow!("stored password hash params: {e}"))?;
        if params.m_cost() > MAX_STORED_MEMORY_KIB {
            bail!("stored password hash asks for {} KiB", params.m_cost());
        }
        let salt = hash.salt.context("stored password hash has no salt")?;
        let expected = hash.hash.context("stored password hash has no output")?;
        let mut buffer = [0u8; Output::MAX_LENGTH];
        let out = &mut buffer[..expected.len()];
        self.compute(algorithm, version, &params, password, &salt, out)?;
        Ok(Checked {
            matches: bool::from(out.ct_eq(expected.as_bytes())),
            current_cost: algorithm == Algorithm::Argon2id
                && version == Version::V0x13
                && same_cost(&params, &self.params),
        })
    }

    /// Runs argon2 in the worker's memory, or, for a stored hash that needs more than it has
    /// (made before the cost was lowered), in a temporary block: rare, and freed at once.
    fn compute(
        &mut self,
        algorithm: Algorithm,
        version: Version,
        params: &Params,
        password: &[u8],
        salt: &[u8],
        out: &mut [u8],
    ) -> anyhow::Result<()> {
        let argon2 = Argon2::new(algorithm, version, params.clone());
        let needed = params.block_count();
        let own = self.params.block_count();
        if needed <= own && self.memory.len() < own {
            self.memory = vec![Block::new(); own];
        }
        let result = if needed <= self.memory.len() {
            argon2.hash_password_into_with_memory(password, salt, out, self.memory.as_mut_slice())
        } else {
            let mut temporary = vec![Block::new(); needed];
            argon2.hash_password_into_with_memory(password, salt, out, temporary.as_mut_slice())
        };
        result.map_err(|e| anyhow!("argon2: {e}"))
    }
}

/// A PHC string at `params` that no password matches: its output is random, not computed.
/// Verifying against it costs exactly what a real verification at `params` costs.
pub fn unmatchable(params: &Params) -> anyhow::Result<String> {
    let salt: [u8; SALT_LEN] = rand::random();
    let out: [u8; Params::DEFAULT_OUTPUT_LEN] = rand::random();
    phc_string(params, &salt, &out)
}

/// Same memory, iterations and lanes, and the default output length.
fn same_cost(stored: &Params, current: &Params) -> bool {
    stored.m_cost() == current.m_cost()
        && stored.t_cost() == current.t_cost()
        && stored.p_cost() == current.p_cost()
        && stored.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN)
            == current.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN)
}

/// The PHC string of an argon2id v1.3 hash, built with the `phc` crate's own types so it
/// reads back anywhere.
fn phc_string(params: &Params, salt: &[u8], out: &[u8]) -> anyhow::Result<String> {
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).map_err(|e| anyhow!("argon2 params: {e}"))?,
        salt: Some(Salt::new(salt).map_err(|e| anyhow!("salt: {e}"))?),
        hash: Some(Output::new(out).map_err(|e| anyhow!("argon2 output: {e}"))?),
    };
    Ok(hash.to_string())
}

#[cfg(test)]
mod tests {
    use argon2::{PasswordHasher as _, PasswordVerifier as _};

    use super::*;

    fn params(memory_kib: u32, iterations: u32) -> Params {
        Params::new(memory_kib, iterations, 1, None).unwrap()
    }

    #[test]
    fn a_hash_verifies_in_the_same_reused_memory_and_another_password_does_not() {
        let mut kernel = Kernel::new(params(64, 1));
        let first = kernel.hash(b"correct horse").unwrap();
        let second = kernel.hash(b"correct horse").unwrap();
        assert_ne!(first, second, "fresh salt each time");
        assert!(first.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{first}");
        for stored in [&first, &second] {
            let good = kernel.verify(b"correct horse", stored).unwrap();
            assert_eq!(
                good,
                Checked {
                    matches: true,
                    current_cost: true
                }
            );
            assert!(!kernel.verify(b"wrong horse", stored).unwrap().matches);
        }
    }

    #[test]
    fn our_hashes_verify_with_the_argon2_crate_and_its_hashes_with_ours() {
        let mut kernel = Kernel::new(params(64, 2));
        let ours = kernel.hash(b"correct horse").unwrap();
        let reference = Argon2::new(Algorithm::Argon2id, Version::V0x13, params(64, 2));
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(reference.verify_password(b"correct horse", &parsed).is_ok());
        assert!(reference.verify_password(b"wrong horse", &parsed).is_err());

        let theirs = reference
            .hash_password(b"correct horse")
            .unwrap()
            .to_string();
        let checked = kernel.verify(b"correct horse", &theirs).unwrap();
        assert_eq!(
            checked,
            Checked {
                matches: true,
                current_cost: true
            }
        );
        assert!(!kernel.verify(b"wrong horse", &theirs).unwrap().matches);
    }

    #[test]
    fn other_costs_and_variants_verify_but_are_not_current() {
        let mut kernel = Kernel::new(params(64, 1));
        let cheaper = Kernel::new(params(32, 1)).hash(b"pw").unwrap();
        let dearer = Kernel::new(params(128, 1)).hash(b"pw").unwrap();
        let argon2i = Argon2::new(Algorithm::Argon2i, Version::V0x13, params(64, 1))
            .hash_password(b"pw")
            .unwrap()
            .to_string();
        for stored in [cheaper, dearer, argon2i] {
            let checked = kernel.verify(b"pw", &stored).unwrap();
            assert_eq!(
                checked,
                Checked {
                    matches: true,
                    current_cost: false
                },
                "{stored}"
            );
        }
        assert!(
            kernel.memory.len() == 64,
            "the dearer hash used a temporary block"
        );
    }

    #[test]
    fn nothing_matches_the_unmatchable_hash_yet_it_costs_a_full_verification() {
        let mut kernel = Kernel::new(params(64, 1));
        let unmatchable = unmatchable(&params(64, 1)).unwrap();
        let checked = kernel.verify(b"", &unmatchable).unwrap();
        assert_eq!(
            checked,
            Checked {
                matches: false,
                current_cost: true
            }
        );
    }

    #[test]
    fn corrupt_stored_hashes_are_errors_not_matches() {
        let mut kernel = Kernel::new(params(64, 1));
        let huge = "$argon2id$v=19$m=4194304,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$\
                    AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        for stored in ["", "plaintext", "$argon2id$v=19$m=64,t=1,p=1", huge] {
            assert!(kernel.verify(b"pw", stored).is_err(), "{stored}");
        }
    }
}
