//! Username and password rules, checked before any work is done, with every violation
//! reported at once so a client can fix its form in one round trip.

use std::{collections::HashSet, sync::LazyLock};

use common::status::Violation;

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

/// Checks a new password: length, and not one of the most common breached passwords.
pub fn new_password(password: &str) -> Result<(), Violation> {
    password_length(password)?;
    if COMMON_PASSWORDS.contains(&password.to_lowercase()) {
        return Err(Violation::new(
            "password",
            "is one of the most commonly used passwords; choose another",
        ));
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

/// Validates a registration and returns the folded username, or every violation found.
pub fn registration(username: &str, password: &str) -> Result<String, Vec<Violation>> {
    match (self::username(username), new_password(password)) {
        (Ok(folded), Ok(())) => Ok(folded),
        (username, password) => Err([username.err(), password.err()]
            .into_iter()
            .flatten()
            .collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
        assert!(new_password("ééééééé").is_err(), "7 characters, 14 bytes");
        assert!(new_password("éééééééé").is_ok(), "8 characters");
        assert!(new_password(&"é".repeat(256)).is_ok());
        assert!(new_password(&"é".repeat(257)).is_err());
    }

    #[test]
    fn password_violations_say_nothing_about_the_password() {
        // Violations are logged: they must not carry the password's length (or anything else).
        for password in ["seven77", &"p".repeat(300), "password123"] {
            let violation = new_password(password).unwrap_err();
            let text = format!("{violation:?}");
            let length = password.chars().count().to_string();
            assert!(!text.contains("got"), "{text}");
            assert!(!text.contains(&length), "{text}");
            assert!(!text.contains(password), "{text}");
        }
    }

    #[test]
    fn common_passwords_are_refused_whatever_their_case() {
        assert!(new_password("password123").is_err());
        assert!(new_password("PassWord123").is_err());
        assert!(new_password("correct horse battery staple").is_ok());
    }

    #[test]
    fn registration_reports_every_violation() {
        let violations = registration("x", "short").unwrap_err();
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
        fn validation_never_panics(raw in any::<String>()) {
            let _ = registration(&raw, &raw);
        }
    }
}
