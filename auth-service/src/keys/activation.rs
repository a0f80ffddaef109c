//! When a signing key may start signing. Two bounds, the later wins: the `not-before=` stamp
//! written after the key in the keys file (the same on every replica, and across restarts),
//! and, for a key a reload brought to a running replica, the moment of that reload plus
//! `--signing-key-activation-secs` (so a key appended without a stamp, or with one already
//! past, is still published for that long before it signs). A key without a stamp that was in
//! the file when the replica started could always sign: nothing tells it apart from an old key.

use anyhow::{Context, bail};
use secrecy::{ExposeSecret, SecretString};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

/// What introduces a key's activation stamp in the keys file.
pub const NOT_BEFORE: &str = "not-before=";

/// The earliest a key may sign.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Activation {
    /// The file's `not-before=` stamp.
    stamped: Option<OffsetDateTime>,
    /// Set when a reload first brought the key to this replica: that reload's time plus the
    /// activation delay.
    seen_from: Option<OffsetDateTime>,
}

impl Activation {
    /// A key as the file states it.
    pub(super) fn stamped(at: Option<OffsetDateTime>) -> Self {
        Self {
            stamped: at,
            seen_from: None,
        }
    }

    /// The same key, held back until `from` by this replica.
    pub(super) fn seen(self, from: Option<OffsetDateTime>) -> Self {
        Self {
            seen_from: from,
            ..self
        }
    }

    /// This replica's own bound, to carry over to the next reload.
    pub(super) fn seen_from(self) -> Option<OffsetDateTime> {
        self.seen_from
    }

    /// When the key may sign: the later bound; `None` when it always could.
    pub(super) fn at(self) -> Option<OffsetDateTime> {
        // `None` orders before any time, so the later bound wins.
        self.stamped.max(self.seen_from)
    }
}

/// The key words of a keys text (comments gone, split on whitespace and commas), each with
/// the `not-before=` stamp that follows it, if any.
pub(super) fn parse_words(text: &str) -> anyhow::Result<Vec<(&str, Option<OffsetDateTime>)>> {
    let words = text
        .lines()
        .map(|line| line.split('#').next().unwrap_or_default())
        .flat_map(|line| line.split(|c: char| c == ',' || c.is_whitespace()))
        .filter(|word| !word.is_empty());
    let mut keys: Vec<(&str, Option<OffsetDateTime>)> = Vec::new();
    for word in words {
        let Some(stamp) = word.strip_prefix(NOT_BEFORE) else {
            keys.push((word, None));
            continue;
        };
        let at = OffsetDateTime::parse(stamp, &Rfc3339)
            .with_context(|| format!("{NOT_BEFORE}{stamp:?} is not an RFC 3339 time"))?;
        match keys.last_mut() {
            Some((_, slot @ None)) => *slot = Some(at),
            Some((_, Some(_))) => {
                bail!("two {NOT_BEFORE} stamps after signing key #{}", keys.len())
            }
            None => bail!("{NOT_BEFORE}{stamp} before any signing key"),
        }
    }
    Ok(keys)
}

/// A keys-file line: `key` stamped to sign from `not_before` (whole seconds, UTC).
pub fn stamped_line(
    key: &SecretString,
    not_before: OffsetDateTime,
) -> anyhow::Result<SecretString> {
    let at = not_before
        .to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)?
        .format(&Rfc3339)?;
    Ok(SecretString::from(format!(
        "{} {NOT_BEFORE}{at}",
        key.expose_secret()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> OffsetDateTime {
        OffsetDateTime::parse(text, &Rfc3339).unwrap()
    }

    #[test]
    fn stamps_attach_to_the_key_before_them() {
        let text = "k4.secret.a not-before=2030-01-01T00:00:00Z # new\nk4.secret.b, k4.secret.c \
                    not-before=2030-01-02T00:00:00+01:00";
        let words = parse_words(text).unwrap();
        assert_eq!(
            words,
            [
                ("k4.secret.a", Some(at("2030-01-01T00:00:00Z"))),
                ("k4.secret.b", None),
                ("k4.secret.c", Some(at("2030-01-01T23:00:00Z"))),
            ]
        );
    }

    #[test]
    fn misplaced_or_malformed_stamps_are_refused() {
        for text in [
            "not-before=2030-01-01T00:00:00Z k4.secret.a",
            "k4.secret.a not-before=2030-01-01T00:00:00Z not-before=2030-01-01T00:00:00Z",
            "k4.secret.a not-before=tomorrow",
            "k4.secret.a not-before=",
        ] {
            assert!(parse_words(text).is_err(), "{text}");
        }
    }

    #[test]
    fn the_later_bound_wins_and_none_means_always() {
        let (early, late) = (at("2030-01-01T00:00:00Z"), at("2030-06-01T00:00:00Z"));
        assert_eq!(Activation::default().at(), None);
        assert_eq!(Activation::stamped(Some(early)).at(), Some(early));
        assert_eq!(
            Activation::stamped(Some(early)).seen(Some(late)).at(),
            Some(late)
        );
        assert_eq!(
            Activation::stamped(Some(late)).seen(Some(early)).at(),
            Some(late)
        );
        assert_eq!(
            Activation::stamped(None).seen(Some(early)).at(),
            Some(early)
        );
    }

    #[test]
    fn a_stamped_line_parses_back_to_its_stamp() {
        let key = SecretString::from("k4.secret.x".to_owned());
        let line = stamped_line(&key, at("2030-01-01T12:34:56.789+02:00")).unwrap();
        assert_eq!(
            line.expose_secret(),
            "k4.secret.x not-before=2030-01-01T10:34:56Z"
        );
        let words = parse_words(line.expose_secret()).unwrap();
        assert_eq!(words, [("k4.secret.x", Some(at("2030-01-01T10:34:56Z")))]);
    }
}
