//! RFC 6238 time-based one-time codes the way authenticator apps expect them: a 160-bit secret,
//! HMAC-SHA1, 6 digits, 30-second steps; a code is accepted one step either side of now. Which
//! steps were already used is the store's business (`users/totp.rs`): this only does the maths.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use secrecy::{ExposeSecret, SecretBox, SecretString};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;
use totp_rs::{Algorithm, Builder, Secret, Totp};

/// Seconds per step.
pub const STEP_SECS: i64 = 30;
/// Digits per code.
pub const DIGITS: usize = 6;
/// Steps accepted either side of the current one: clock drift and typing time.
pub const SKEW_STEPS: i64 = 1;
/// 160 bits: RFC 4226's recommended length, and what apps are built for.
const SECRET_BYTES: usize = 20;
/// The issuer apps show next to the code.
pub const ISSUER: &str = "Dynagate";

/// What stays unencoded in an otpauth label: RFC 3986's unreserved characters.
const LABEL: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A TOTP secret: 20 random bytes, handled in the base32 form apps take.
pub struct TotpSecret {
    bytes: SecretBox<[u8; SECRET_BYTES]>,
}

impl std::fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpSecret(..)")
    }
}

impl TotpSecret {
    /// A new random secret.
    pub fn generate() -> Self {
        Self {
            bytes: SecretBox::new(Box::new(rand::random())),
        }
    }

    /// The secret in base32 (RFC 4648, no padding), if `text` is one of ours.
    pub fn from_base32(text: &str) -> Option<Self> {
        let decoded = Secret::try_from_base32(text).ok()?;
        let bytes: [u8; SECRET_BYTES] = decoded.as_bytes().try_into().ok()?;
        Some(Self {
            bytes: SecretBox::new(Box::new(bytes)),
        })
    }

    /// Base32 (RFC 4648, upper case, no padding: 32 characters), as apps take it.
    pub fn base32(&self) -> SecretString {
        SecretString::from(self.secret().to_base32())
    }

    /// The `otpauth://` URI of this secret for `username` (for a QR code): it carries the secret.
    pub fn otpauth_uri(&self, username: &str) -> SecretString {
        let label = utf8_percent_encode(username, LABEL);
        let issuer = utf8_percent_encode(ISSUER, LABEL);
        SecretString::from(format!(
            "otpauth://totp/{issuer}:{label}?secret={}&issuer={issuer}",
            self.base32().expose_secret()
        ))
    }

    /// The step `code` belongs to, if it is a code of this secret for a step within
    /// [`SKEW_STEPS`] of `now` and later than `after` (the last step already used). Spaces
    /// in the code, as apps display it ("123 456"), are ignored.
    pub fn matching_step(&self, code: &str, now: OffsetDateTime, after: i64) -> Option<i64> {
        let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
        if code.len() != DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let totp = self.totp()?;
        let current = now.unix_timestamp().div_euclid(STEP_SECS);
        (current - SKEW_STEPS..=current + SKEW_STEPS)
            .filter(|&step| step > after)
            .find(|&step| {
                let expected = code_at(&totp, step);
                expected
                    .is_some_and(|expected| bool::from(expected.as_bytes().ct_eq(code.as_bytes())))
            })
    }

    /// The code of `step` (for tests of this module).
    #[cfg(test)]
    fn code(&self, step: i64) -> Option<String> {
        code_at(&self.totp()?, step)
    }

    fn secret(&self) -> Secret {
        Secret::new_stack(*self.bytes.expose_secret())
    }

    fn totp(&self) -> Option<Totp> {
        let built = Builder::new()
            .with_algorithm(Algorithm::SHA1)
            .with_digits(DIGITS as u8)
            .with_step_duration(STEP_SECS as u64)
            .with_secret(self.secret())
            .build();
        // Cannot fail for these constants and a 160-bit secret; refuse the code if it ever did.
        built
            .inspect_err(|error| tracing::error!(%error, "building a TOTP generator"))
            .ok()
    }
}

/// The code for `step`; none for steps before 1970.
fn code_at(totp: &Totp, step: i64) -> Option<String> {
    let time = u64::try_from(step.checked_mul(STEP_SECS)?).ok()?;
    Some(totp.generate(time).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(unix: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(unix).unwrap()
    }

    /// RFC 6238 appendix B's SHA1 secret ("12345678901234567890"), its 8-digit vectors cut to
    /// the 6 digits apps show.
    #[test]
    fn codes_match_the_rfc_test_vectors() {
        let secret = TotpSecret::from_base32("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").unwrap();
        for (time, code) in [
            (59, "287082"),
            (1_111_111_109, "081804"),
            (1_111_111_111, "050471"),
            (1_234_567_890, "005924"),
            (2_000_000_000, "279037"),
        ] {
            assert_eq!(secret.code(time / STEP_SECS).unwrap(), code, "at {time}");
        }
    }

    #[test]
    fn a_code_is_accepted_one_step_either_side_and_only_after_the_last_used_step() {
        let secret = TotpSecret::generate();
        let now = at(1_800_000_015);
        let current = 1_800_000_015 / STEP_SECS;
        for offset in [-1, 0, 1] {
            let code = secret.code(current + offset).unwrap();
            assert_eq!(secret.matching_step(&code, now, 0), Some(current + offset));
            assert_eq!(secret.matching_step(&code, now, current + offset), None);
        }
        for offset in [-2, 2] {
            let code = secret.code(current + offset).unwrap();
            assert_eq!(
                secret.matching_step(&code, now, 0),
                None,
                "{offset} steps off"
            );
        }
    }

    #[test]
    fn malformed_codes_match_nothing() {
        let secret = TotpSecret::generate();
        let now = at(1_800_000_015);
        let code = secret.code(1_800_000_015 / STEP_SECS).unwrap();
        let spaced = format!("{} {}", &code[..3], &code[3..]);
        assert!(secret.matching_step(&spaced, now, 0).is_some());
        for bad in ["", "12345", "1234567", "+12345", "12345a", "１２３４５６"] {
            assert_eq!(secret.matching_step(bad, now, 0), None, "{bad:?}");
        }
    }

    #[test]
    fn secrets_are_160_bits_in_32_base32_characters() {
        let secret = TotpSecret::generate();
        let text = secret.base32();
        assert_eq!(text.expose_secret().len(), 32);
        let again = TotpSecret::from_base32(text.expose_secret()).unwrap();
        assert_eq!(again.bytes.expose_secret(), secret.bytes.expose_secret());
        assert!(
            TotpSecret::from_base32("GEZDGNBVGY3TQOJQ").is_none(),
            "80 bits"
        );
    }

    #[test]
    fn the_uri_names_issuer_and_user_and_encodes_them() {
        let secret = TotpSecret::from_base32("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").unwrap();
        assert_eq!(
            secret.otpauth_uri("alice.b-c_d").expose_secret(),
            "otpauth://totp/Dynagate:alice.b-c_d?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Dynagate"
        );
        let odd = secret.otpauth_uri("a b:c?d&e");
        assert!(
            odd.expose_secret()
                .starts_with("otpauth://totp/Dynagate:a%20b%3Ac%3Fd%26e?secret=")
        );
    }
}
