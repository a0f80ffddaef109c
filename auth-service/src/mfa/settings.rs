//! The TOTP settings: the key that seals TOTP secrets at rest. Like the signing keys it comes
//! from a file or the environment, never a flag (whose value `ps` shows).

use std::path::PathBuf;

use anyhow::Context;
use secrecy::SecretString;

use super::seal::Sealer;

/// Where the TOTP key comes from.
#[derive(clap::Args, Clone, Debug)]
pub struct MfaSettings {
    /// File holding the PASERK `k4.local` key that encrypts users' TOTP secrets at rest; every
    /// replica needs the same one, and changing it makes every enrolled secret unreadable
    /// (those users then need a recovery code). Any fresh k4.local key will do, e.g. from
    /// `data-service generate-page-token-key` (use a different key from the page tokens').
    /// Alternatively the key itself may be given in the environment variable
    /// DYNAGATE_TOTP_KEY — never as a flag. Without a key, the TOTP RPCs answer UNIMPLEMENTED.
    #[arg(long, env = "DYNAGATE_TOTP_KEY_FILE")]
    pub totp_key_file: Option<PathBuf>,

    /// The TOTP key from DYNAGATE_TOTP_KEY (environment only).
    #[arg(skip = common::secrets::from_env("DYNAGATE_TOTP_KEY"))]
    pub totp_key: Option<SecretString>,

    /// LOCAL DEVELOPMENT ONLY: generate a throw-away TOTP key when none is configured.
    /// Enrolled secrets stop opening at every restart.
    #[arg(long, env = "DYNAGATE_DEV_EPHEMERAL_TOTP_KEY")]
    pub dev_ephemeral_totp_key: bool,
}

impl MfaSettings {
    /// The sealer the settings describe, or `None` when no key is configured (TOTP off).
    pub fn sealer(&self) -> anyhow::Result<Option<Sealer>> {
        match (&self.totp_key_file, &self.totp_key) {
            (Some(_), Some(_)) => {
                anyhow::bail!("set either --totp-key-file or DYNAGATE_TOTP_KEY, not both")
            }
            (Some(path), None) => {
                let key = common::secrets::from_file(path)?;
                let sealer = Sealer::from_paserk(&key)
                    .with_context(|| format!("the TOTP key in {}", path.display()))?;
                Ok(Some(sealer))
            }
            (None, Some(key)) => Ok(Some(Sealer::from_paserk(key).context("DYNAGATE_TOTP_KEY")?)),
            (None, None) if self.dev_ephemeral_totp_key => {
                tracing::warn!(
                    "NO TOTP KEY CONFIGURED: generated a throw-away key for local development. \
                     Enrolled TOTP secrets will not survive a restart or work across replicas."
                );
                Ok(Some(Sealer::generate()?))
            }
            (None, None) => {
                tracing::warn!(
                    "no --totp-key-file or DYNAGATE_TOTP_KEY: TOTP MFA is disabled \
                     (EnrollTotp, ConfirmTotp and DisableTotp answer UNIMPLEMENTED)"
                );
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        mfa: MfaSettings,
    }

    #[test]
    fn the_totp_key_is_never_a_flag() {
        let refused = Cli::try_parse_from(["auth-service", "--totp-key", "k4.local.x"]);
        let kind = refused.err().map(|error| error.kind());
        assert_eq!(kind, Some(clap::error::ErrorKind::UnknownArgument));
        assert!(Cli::try_parse_from(["auth-service", "--totp-key-file", "key"]).is_ok());
    }

    #[test]
    fn no_key_means_no_totp_unless_a_throwaway_key_is_asked_for() {
        let mut settings = Cli::parse_from(["auth-service"]).mfa;
        settings.totp_key = None;
        assert!(settings.sealer().unwrap().is_none());
        settings.dev_ephemeral_totp_key = true;
        assert!(settings.sealer().unwrap().is_some());
        settings.totp_key = Some(SecretString::from("k4.secret.wrong-kind"));
        assert!(settings.sealer().is_err(), "a key that is not k4.local");
        settings.totp_key_file = Some("key".into());
        assert!(settings.sealer().is_err(), "a file and a variable");
    }
}
