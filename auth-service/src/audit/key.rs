//! The audit key: what a username that may not be an account's becomes in the audit log. A
//! name typed into a login form is sometimes the password, typed into the wrong field, so the
//! log never holds such a name; it holds HMAC-SHA256(audit key, folded name), cut to 128 bits.
//! Keyed, so a reader of the logs cannot hash a dictionary and look the guesses up; stable
//! under one key, so repeated guesses of one name correlate across lines, replicas and
//! restarts. Like the TOTP key it comes from a file or the environment, never a flag.

use std::{fmt, fmt::Write as _, path::PathBuf, sync::Arc};

use anyhow::Context;
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

/// The fewest characters an audit key may have: 32 random bytes, base64-encoded, have 44.
pub const MIN_KEY_LEN: usize = 32;

/// Bytes of the HMAC kept in a `username_hash`: 128 bits, shown as 32 hex digits.
const HASH_BYTES: usize = 16;

/// Where the audit key comes from.
#[derive(clap::Args, Clone, Debug)]
pub struct AuditSettings {
    /// File holding the audit key: any secret text of at least 32 characters (whitespace
    /// around it is ignored), e.g. from `head -c 32 /dev/urandom | base64`. The audit log
    /// shows a username that is not known to be an account's (a failed login's, a lock's) only
    /// as its HMAC under this key (`username_hash`), so a password typed as a username never
    /// reaches the log. Give every replica the same key, and keep it, so hashes correlate
    /// across replicas and restarts (`auth-service hash-username` finds a name's hash).
    /// Alternatively the key itself may be given in the environment variable
    /// DYNAGATE_AUDIT_KEY — never as a flag. Without a key, each process draws a random one
    /// and warns: hashes then correlate only within that process.
    #[arg(long, env = "DYNAGATE_AUDIT_KEY_FILE")]
    pub audit_key_file: Option<PathBuf>,

    /// The audit key from DYNAGATE_AUDIT_KEY (environment only).
    #[arg(skip = common::secrets::from_env("DYNAGATE_AUDIT_KEY"))]
    pub audit_key: Option<SecretString>,
}

impl AuditSettings {
    /// The key the settings describe; without one, a random key for this process (and a
    /// warning).
    pub fn key(&self) -> anyhow::Result<AuditKey> {
        match self.configured_key()? {
            Some(key) => Ok(key),
            None => {
                tracing::warn!(
                    "no --audit-key-file or DYNAGATE_AUDIT_KEY: the audit log's username hashes \
                     use a random key of this process, and correlate only within it"
                );
                AuditKey::random()
            }
        }
    }

    /// The configured key, if any.
    pub fn configured_key(&self) -> anyhow::Result<Option<AuditKey>> {
        match (&self.audit_key_file, &self.audit_key) {
            (Some(_), Some(_)) => {
                anyhow::bail!("set either --audit-key-file or DYNAGATE_AUDIT_KEY, not both")
            }
            (Some(path), None) => {
                let key = common::secrets::from_file(path)?;
                let key = AuditKey::from_text(&key)
                    .with_context(|| format!("the audit key in {}", path.display()))?;
                Ok(Some(key))
            }
            (None, Some(key)) => Ok(Some(
                AuditKey::from_text(key).context("DYNAGATE_AUDIT_KEY")?,
            )),
            (None, None) => Ok(None),
        }
    }
}

/// The HMAC key of `username_hash`; cheap to clone.
#[derive(Clone)]
pub struct AuditKey(Arc<Hmac<Sha256>>);

impl fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuditKey(..)")
    }
}

impl AuditKey {
    /// A key from its text (trimmed), which must have at least [`MIN_KEY_LEN`] characters.
    pub fn from_text(text: &SecretString) -> anyhow::Result<Self> {
        let key = text.expose_secret().trim();
        if key.chars().count() < MIN_KEY_LEN {
            anyhow::bail!("an audit key needs at least {MIN_KEY_LEN} characters");
        }
        Self::from_bytes(key.as_bytes())
    }

    /// A random key, for a process that was given none.
    pub fn random() -> anyhow::Result<Self> {
        let bytes: [u8; 32] = rand::random();
        Self::from_bytes(&bytes)
    }

    fn from_bytes(key: &[u8]) -> anyhow::Result<Self> {
        let mac = Hmac::<Sha256>::new_from_slice(key)
            .map_err(|error| anyhow::anyhow!("HMAC refused the audit key: {error}"))?;
        Ok(Self(Arc::new(mac)))
    }

    /// A 32-byte key for `purpose` derived from the audit key, so a secret every replica must
    /// share (the admin service's page tokens) needs no key of its own. The 0xFF bytes keep it
    /// apart from every `username_hash`: a name as typed is a Rust string, always UTF-8, in
    /// which 0xFF never occurs, so no typed name can make the log show part of this key.
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        let mut mac = Hmac::clone(&self.0);
        mac.update(b"\xffderive\xff");
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The `username_hash` of a username as typed, folded as logins fold it: 32 hex digits.
    pub fn username_hash(&self, folded: &str) -> String {
        let mut mac = Hmac::clone(&self.0);
        mac.update(folded.as_bytes());
        let digest = mac.finalize().into_bytes();
        digest[..HASH_BYTES]
            .iter()
            .fold(String::with_capacity(2 * HASH_BYTES), |mut hex, byte| {
                let _ = write!(hex, "{byte:02x}");
                hex
            })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        audit: AuditSettings,
    }

    fn key(text: &str) -> AuditKey {
        AuditKey::from_text(&SecretString::from(text)).unwrap()
    }

    #[test]
    fn one_key_hashes_one_name_alike_and_two_names_apart() {
        let key = key("an audit key of at least 32 chars");
        let hash = key.username_hash("alice");
        assert_eq!(hash, key.username_hash("alice"));
        assert_ne!(hash, key.username_hash("alice2"));
        assert_eq!(hash.len(), 32);
        assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn the_hash_is_keyed() {
        let one = key("an audit key of at least 32 chars");
        let other = key("another audit key of 32 chars or more");
        assert_ne!(one.username_hash("alice"), other.username_hash("alice"));
        assert_ne!(
            AuditKey::random().unwrap().username_hash("alice"),
            AuditKey::random().unwrap().username_hash("alice")
        );
        // Whitespace around the key in its file is not part of it.
        let padded = key("  an audit key of at least 32 chars\n");
        assert_eq!(padded.username_hash("alice"), one.username_hash("alice"));
    }

    #[test]
    fn the_hash_is_hmac_sha256_cut_to_128_bits() {
        // The same construction, computed here directly.
        let text = "k".repeat(40);
        let mut mac = Hmac::<Sha256>::new_from_slice(text.as_bytes()).unwrap();
        mac.update(b"what do ya want for nothing?");
        let full = mac.finalize().into_bytes();
        let expected: String = full[..16].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            key(&text).username_hash("what do ya want for nothing?"),
            expected
        );
    }

    #[test]
    fn a_short_key_is_refused_and_the_key_is_never_a_flag() {
        assert!(AuditKey::from_text(&SecretString::from("short")).is_err());
        let refused = Cli::try_parse_from(["auth-service", "--audit-key", "x".repeat(40).as_str()]);
        let kind = refused.err().map(|error| error.kind());
        assert_eq!(kind, Some(clap::error::ErrorKind::UnknownArgument));
        let mut settings = Cli::parse_from(["auth-service"]).audit;
        settings.audit_key = None;
        assert!(settings.configured_key().unwrap().is_none());
        assert!(settings.key().is_ok(), "a random key when none is given");
        settings.audit_key = Some(SecretString::from("x".repeat(40)));
        settings.audit_key_file = Some("key".into());
        assert!(settings.key().is_err(), "a file and a variable");
    }
}
