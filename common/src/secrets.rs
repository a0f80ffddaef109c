//! Where secrets (signing keys, page-token keys) come from: a file, or the environment — never
//! a command-line flag, whose value every local user can read in `ps`.

use std::path::Path;

use anyhow::Context;
use secrecy::SecretString;

/// The secret in environment variable `name`, if set and not blank. For `#[arg(skip = …)]`
/// settings: clap never offers them as flags.
pub fn from_env(name: &str) -> Option<SecretString> {
    std::env::var(name)
        .ok()
        .filter(|value| !value.trim().is_empty())
        .map(SecretString::from)
}

/// The whole content of a secret file.
pub fn from_file(path: &Path) -> anyhow::Result<SecretString> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the secret in {}", path.display()))?;
    Ok(SecretString::from(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn files_are_read_whole() {
        let path = std::env::temp_dir().join(format!("dynagate-secret-{}", uuid::Uuid::new_v4()));
        std::fs::write(&path, "k4.secret.abc\n").unwrap();
        assert_eq!(from_file(&path).unwrap().expose_secret(), "k4.secret.abc\n");
        std::fs::remove_file(&path).unwrap();
        assert!(from_file(&path).is_err());
    }

    #[test]
    fn unset_and_blank_variables_are_no_secret() {
        assert!(from_env("DYNAGATE_TEST_SURELY_UNSET_SECRET").is_none());
    }
}
