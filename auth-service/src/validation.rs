//! Username and password rules, checked before any work is done, with every violation
//! reported at once so a client can fix its form in one round trip.

mod strength;

use std::{collections::HashSet, sync::LazyLock};

use common::status::Violation;
use secrecy::{ExposeSecret, SecretString};

pub use self::strength::{PasswordRules, PasswordSettings};
use crate::error::AuthError;

/// Username length bounds, in characters (all ASCII, so also bytes).
pub const USERNAME_LEN: std::ops::RangeInclusive<usize> = 3..=64;
/// Password length bounds, in Unicode scalar values (NIST SP 800-63B: at least 8, allow long).
pub const PASSWORD_LEN: std::ops::RangeInclusive<usize> = 8..=256;

static COMMON_PASSWORDS: LazyLock<HashSet<String>> = LazyLock::new(|| {
    include_str!("../data/common-passwords.txt")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_lowercase)
        .collect()
});

/// Checks a username and returns it folded to lower case, the form it is stored and compared in.
pub fn username(raw: &str) -> Result<String, Violation> {
    let length = raw.chars().count();
    if !USERNAME_LEN.contains(&length) {
        return Err(Violation::new(
            "username",
            format!(
                "must be {} to {} characters long, got {length}",
                USERNAME_LEN.start(),
                USERNAME_LEN.end()
            ),
        ));
    }
    if let Some(bad) = raw
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(Violation::new(
            "username",
            format!("may only contain ASCII letters, digits, '.', '_' and '-', found {bad:?}"),
        ));
    }
    Ok(raw.to_ascii_lowercase())
}

/// Checks a new password (Register, ChangePassword) for `username` (folded): its length, not
/// one of the most common breached passwords, not containing the username, and guessable by
/// no fewer guesses than `rules` demand (zxcvbn's score). The one rule for every new password.
/// Broken rules are `AuthError::InvalidArgument` with a `password` violation that says why and
/// never quotes the password; `AuthError::Overloaded` when too many are being scored.
pub async fn new_password(
    password: &SecretString,
    username: &str,
    rules: &PasswordRules,
) -> Result<(), AuthError> {
    let one = |violation| AuthError::InvalidArgument(vec![violation]);
    basic_password_rules(password.expose_secret(), username).map_err(one)?;
    rules.check_strength(password, username).await
}

/// The rules that cost next to nothing: length, the common list, the username.
fn basic_password_rules(password: &str, username: &str) -> Result<(), Violation> {
    password_length(password)?;
    let lower = password.to_lowercase();
    if COMMON_PASSWORDS.contains(&lower) {
        return Err(Violation::new(
            "password",
            "is one of the most commonly used passwords; choose another",
        ));
    }
    if !username.is_empty() && lower.contains(&username.to_lowercase()) {
        return Err(Violation::new("password", "must not contain the username"));
    }
    Ok(())
}

/// Checks only the length of a presented password, so absurd inputs are refused before any
/// hashing; a login never learns more than that. The violation states the rule, not the
/// length found: violations are logged, and nothing about a password may be.
pub fn password_length(password: &str) -> Result<(), Violation> {
    if PASSWORD_LEN.contains(&password.chars().count()) {
        Ok(())
    } else {
        Err(Violation::new(
            "password",
            format!(
                "must be {} to {} characters long",
                PASSWORD_LEN.start(),
                PASSWORD_LEN.end()
            ),
        ))
    }
}

/// Validates a registration and returns the folded username, or every violation found. The
/// password's strength is scored only when every other rule holds.
pub async fn registration(
    username: &str,
    password: &SecretString,
    rules: &PasswordRules,
) -> Result<String, AuthError> {
    // A malformed username still must not appear in the password (as it would be folded).
    let folded = self::username(username);
    let typed = username.to_ascii_lowercase();
    let basic = basic_password_rules(password.expose_secret(), &typed);
    match (folded, basic) {
        (Ok(folded), Ok(())) => {
            new_password(password, &folded, rules).await?;
            Ok(folded)
        }
        (username, password) => Err(AuthError::InvalidArgument(
            [username.err(), password.err()]
                .into_iter()
                .flatten()
                .collect(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rules(min_password_score: u8) -> PasswordRules {
        PasswordRules::new(&PasswordSettings { min_password_score })
    }

    fn secret(password: &str) -> SecretString {
        password.to_owned().into()
    }

    /// The violations of a new password for `username` at the default minimum score.
    async fn refused(password: &str, username: &str) -> Vec<Violation> {
        match new_password(&secret(password), username, &rules(3)).await {
            Ok(()) => Vec::new(),
            Err(AuthError::InvalidArgument(violations)) => violations,
            Err(other) => panic!("{other:?}"),
        }
    }

    #[test]
    fn usernames_are_folded_to_lower_case() {
        assert_eq!(username("Alice.Smith-01_x").unwrap(), "alice.smith-01_x");
    }

    #[test]
    fn usernames_outside_the_length_bounds_are_refused() {
        assert!(username("ab").is_err());
        assert!(username(&"a".repeat(65)).is_err());
        assert!(username("abc").is_ok());
        assert!(username(&"a".repeat(64)).is_ok());
    }

    #[test]
    fn usernames_with_other_characters_are_refused() {
        for bad in [
            "al ice",
            "alice@example",
            "ålice",
            "alice\n",
            "al/ice",
            "al+ice",
        ] {
            let violation = username(bad).unwrap_err();
            assert_eq!(violation.field, "username", "{bad:?}");
        }
    }

    #[test]
    fn password_length_counts_characters_not_bytes() {
        assert!(
            password_length("ééééééé").is_err(),
            "7 characters, 14 bytes"
        );
        assert!(password_length("éééééééé").is_ok(), "8 characters");
        assert!(password_length(&"é".repeat(256)).is_ok());
        assert!(password_length(&"é".repeat(257)).is_err());
    }

    #[tokio::test]
    async fn password_violations_say_nothing_about_the_password() {
        // Violations are logged: they must not carry the password's length (or anything else).
        for password in [
            "seven77",
            &"p".repeat(300),
            "password123",
            "alice-in-chains",
            "qwertyuiop123",
        ] {
            let violations = refused(password, "alice").await;
            assert_eq!(violations.len(), 1, "{password}");
            let text = format!("{violations:?}");
            let length = password.chars().count().to_string();
            assert!(!text.contains("got"), "{text}");
            assert!(!text.contains(&length), "{text}");
            assert!(!text.contains(password), "{text}");
        }
    }

    #[tokio::test]
    async fn common_passwords_are_refused_whatever_their_case() {
        assert!(!refused("password123", "alice").await.is_empty());
        assert!(!refused("PassWord123", "alice").await.is_empty());
        assert!(
            refused("correct horse battery staple", "alice")
                .await
                .is_empty()
        );
    }

    #[tokio::test]
    async fn passwords_containing_the_username_are_refused_whatever_their_case() {
        for password in ["my Alice.Smith password", "ALICE.SMITHqx7v!k2#pz"] {
            let violations = refused(password, "alice.smith").await;
            assert_eq!(violations.len(), 1, "{password}");
            assert_eq!(violations[0].description, "must not contain the username");
        }
    }

    #[tokio::test]
    async fn easily_guessed_passwords_are_refused_with_advice() {
        for password in [
            "qwertyuiop123",
            "Summer2024!",
            "correcthorse",
            "letmein2024",
        ] {
            let violations = refused(password, "alice").await;
            assert_eq!(violations.len(), 1, "{password}");
            let description = &violations[0].description;
            assert!(
                description.starts_with("too easy to guess: "),
                "{description}"
            );
            let advice = description.to_lowercase();
            assert!(advice.contains("add another word"), "{description}");
        }
    }

    #[tokio::test]
    async fn the_minimum_score_is_configurable() {
        let weak = secret("correcthorse");
        assert!(new_password(&weak, "alice", &rules(0)).await.is_ok());
        assert!(new_password(&weak, "alice", &rules(2)).await.is_ok());
        assert!(new_password(&weak, "alice", &rules(3)).await.is_err());
        // Score 3 but not 4: zxcvbn gives no advice, ours still says what to do.
        let fair = secret("ilovemydog");
        assert!(new_password(&fair, "alice", &rules(3)).await.is_ok());
        let Err(AuthError::InvalidArgument(violations)) =
            new_password(&fair, "alice", &rules(4)).await
        else {
            panic!("score 3 passed a minimum of 4");
        };
        assert_eq!(
            violations[0].description,
            "too easy to guess: add another word or two"
        );
    }

    #[tokio::test]
    async fn strong_passwords_of_every_length_pass() {
        let uuid = format!("pw-{}", uuid::Uuid::new_v4());
        for password in [
            "correct horse battery staple",
            "Tr0ub4dor&3",
            uuid.as_str(),
            &"Xk9#mQ2$vL7!pR4^wN8&zT3*bY6@cH1%".repeat(8),
        ] {
            assert!(refused(password, "alice").await.is_empty(), "{password}");
        }
    }

    #[tokio::test]
    async fn only_the_first_scored_characters_count() {
        // Strong only after the scored prefix: judged by its weak start.
        let padded = format!("{}Xk9#mQ2$vL7!pR4^wN8&", "a".repeat(strength::SCORED_CHARS));
        assert!(!refused(&padded, "alice").await.is_empty());
    }

    #[tokio::test]
    async fn registration_reports_every_violation() {
        let Err(AuthError::InvalidArgument(violations)) =
            registration("x", &secret("short"), &rules(3)).await
        else {
            panic!("accepted");
        };
        let fields: Vec<_> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["username", "password"]);
    }

    #[tokio::test]
    async fn registration_refuses_a_password_holding_the_name_even_a_malformed_one() {
        let Err(AuthError::InvalidArgument(violations)) =
            registration("Bad Name", &secret("my bad name is here"), &rules(3)).await
        else {
            panic!("accepted");
        };
        let fields: Vec<_> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["username", "password"]);
    }

    proptest! {
        #[test]
        fn accepted_usernames_are_lowercase_and_keep_their_length(raw in "[A-Za-z0-9._-]{3,64}") {
            let folded = username(&raw).unwrap();
            prop_assert_eq!(folded.len(), raw.len());
            prop_assert_eq!(folded.to_ascii_lowercase(), folded);
        }

        #[test]
        fn the_cheap_rules_never_panic(raw in any::<String>()) {
            let _ = username(&raw);
            let _ = basic_password_rules(&raw, &raw);
        }
    }
}
