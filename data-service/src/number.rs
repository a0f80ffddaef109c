//! DynamoDB numbers: strict parsing, DynamoDB's range and precision, and a canonical form in
//! which equal values are equal whatever their spelling (so number sets can reject "1" and
//! "1.0" as duplicates, as DynamoDB does).

use std::{cmp::Ordering, fmt};

/// Significant digits and adjusted-exponent range of a DynamoDB number: magnitudes from 1E-130 up
/// to 9.9999999999999999999999999999999999999E+125, or zero.
const MAX_DIGITS: usize = 38;
const MIN_EXPONENT: i64 = -130;
const MAX_EXPONENT: i64 = 125;
/// The largest exponent we accept as written (`1e9999`). Any value in range can be spelled with
/// a smaller one, and Java's BigDecimal, which DynamoDB's parser resembles, refuses exponents
/// that overflow an `int` even for zero, so `0e99999999999` is refused here too.
const MAX_WRITTEN_EXPONENT: i64 = 9999;

/// A number in canonical form, equal for equal values whatever their spelling: its magnitude is
/// `d₁.d₂…dₙ × 10^exponent`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Decimal {
    negative: bool,
    /// Significant digits, without leading or trailing zeros; empty for zero.
    digits: Vec<u8>,
    /// The exponent of the first significant digit (0 for zero).
    exponent: i64,
}

/// Why a string is not a DynamoDB number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberError {
    /// Not `-?digits(.digits)?([eE][+-]?digits)?`.
    Syntax,
    /// A written exponent beyond ±9999.
    Exponent,
    /// Magnitude above DynamoDB's maximum.
    Overflow,
    /// Non-zero magnitude below DynamoDB's minimum.
    Underflow,
    /// More significant digits than DynamoDB keeps.
    Precision(usize),
}

impl NumberError {
    /// A message telling the client what a DynamoDB number looks like.
    pub fn describe(self) -> String {
        match self {
            Self::Syntax => "must be a decimal number: an optional '-', digits, an optional \
                             fraction ('.' and digits) and an optional exponent ('e' or 'E', an \
                             optional sign, digits), like -12.5e3"
                .to_owned(),
            Self::Exponent => format!(
                "has an exponent beyond ±{MAX_WRITTEN_EXPONENT}; write the number with a smaller one"
            ),
            Self::Overflow => "is too large; DynamoDB numbers go up to \
                               9.9999999999999999999999999999999999999E+125 in magnitude"
                .to_owned(),
            Self::Underflow => "is too small; non-zero DynamoDB numbers are at least 1E-130 \
                                in magnitude"
                .to_owned(),
            Self::Precision(digits) => {
                format!("has {digits} significant digits; DynamoDB keeps at most {MAX_DIGITS}")
            }
        }
    }
}

impl Decimal {
    /// How many significant digits the number has (0 for zero).
    pub fn significant_digits(&self) -> usize {
        self.digits.len()
    }

    /// Parses `-?digits(.digits)?([eE][+-]?digits)?` and checks DynamoDB's range and precision.
    /// A leading '+', a bare '.5' or '5.', whitespace, NaN and Infinity are refused: stricter
    /// than DynamoDB's parser, never looser.
    pub fn parse(number: &str) -> Result<Self, NumberError> {
        let bytes = number.as_bytes();
        let (negative, rest) = match bytes.strip_prefix(b"-") {
            Some(rest) => (true, rest),
            None => (false, bytes),
        };
        let (integer, rest) = split_digits(rest);
        if integer.is_empty() {
            return Err(NumberError::Syntax);
        }
        let (fraction, rest) = match rest.strip_prefix(b".") {
            Some(rest) => match split_digits(rest) {
                ([], _) => return Err(NumberError::Syntax),
                split => split,
            },
            None => (&[][..], rest),
        };
        let exponent = match rest.split_first() {
            None => 0,
            Some((b'e' | b'E', rest)) => parse_exponent(rest)?,
            Some(_) => return Err(NumberError::Syntax),
        };
        Self::normalize(negative, integer, fraction, exponent)
    }

    fn normalize(
        negative: bool,
        integer: &[u8],
        fraction: &[u8],
        exponent: i64,
    ) -> Result<Self, NumberError> {
        let mantissa: Vec<u8> = integer.iter().chain(fraction).copied().collect();
        let Some(first) = mantissa.iter().position(|&d| d != b'0') else {
            return Ok(Self {
                negative: false,
                digits: Vec::new(),
                exponent: 0,
            });
        };
        let last = mantissa.iter().rposition(|&d| d != b'0').unwrap_or(first);
        let digits = mantissa[first..=last].to_vec();
        // The first significant digit is (integer.len() - 1 - first) places left of the point.
        let exponent = i64::try_from(integer.len())
            .unwrap_or(i64::MAX)
            .saturating_sub(1)
            .saturating_sub(i64::try_from(first).unwrap_or(i64::MAX))
            .saturating_add(exponent);
        if exponent > MAX_EXPONENT {
            return Err(NumberError::Overflow);
        }
        if exponent < MIN_EXPONENT {
            return Err(NumberError::Underflow);
        }
        if digits.len() > MAX_DIGITS {
            return Err(NumberError::Precision(digits.len()));
        }
        Ok(Self {
            negative,
            digits,
            exponent,
        })
    }
}

impl Decimal {
    /// -1, 0 or 1.
    fn signum(&self) -> i8 {
        match (self.digits.is_empty(), self.negative) {
            (true, _) => 0,
            (false, true) => -1,
            (false, false) => 1,
        }
    }
}

/// Numbers ordered by value, as DynamoDB compares them in conditions: how the service judges a
/// stored number the way a condition on it was judged.
impl Ord for Decimal {
    fn cmp(&self, other: &Self) -> Ordering {
        let by_sign = self.signum().cmp(&other.signum());
        if by_sign != Ordering::Equal || self.signum() == 0 {
            return by_sign;
        }
        // Canonical digits (no leading or trailing zeros) compare like the magnitudes.
        let magnitude = self
            .exponent
            .cmp(&other.exponent)
            .then_with(|| self.digits.cmp(&other.digits));
        if self.negative {
            magnitude.reverse()
        } else {
            magnitude
        }
    }
}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Scientific notation with no redundant digits (`-1.5E3`), the same for every spelling of a
/// number, so messages can show why two members are equal.
impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some((first, rest)) = self.digits.split_first() else {
            return f.write_str("0");
        };
        let sign = if self.negative { "-" } else { "" };
        let first = char::from(*first);
        let rest = String::from_utf8_lossy(rest);
        let point = if rest.is_empty() { "" } else { "." };
        write!(f, "{sign}{first}{point}{rest}E{}", self.exponent)
    }
}

/// Splits off the leading ASCII digits.
fn split_digits(bytes: &[u8]) -> (&[u8], &[u8]) {
    let end = bytes
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(bytes.len());
    bytes.split_at(end)
}

/// An exponent's optional sign and digits, at most [`MAX_WRITTEN_EXPONENT`] in magnitude.
fn parse_exponent(bytes: &[u8]) -> Result<i64, NumberError> {
    let (negative, digits) = match bytes.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, bytes),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(NumberError::Syntax);
    }
    let magnitude = digits.iter().fold(0_i64, |acc, d| {
        acc.saturating_mul(10).saturating_add(i64::from(d - b'0'))
    });
    if magnitude > MAX_WRITTEN_EXPONENT {
        return Err(NumberError::Exponent);
    }
    Ok(if negative { -magnitude } else { magnitude })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn d(number: &str) -> Decimal {
        Decimal::parse(number).unwrap_or_else(|e| panic!("{number}: {e:?}"))
    }

    #[test]
    fn numbers_order_by_value_whatever_their_spelling() {
        let ascending = [
            "-1e10",
            "-12.5",
            "-12",
            "-1.5",
            "-1",
            "-0.001",
            "0",
            "1e-130",
            "0.5",
            "1",
            "1.5",
            "2",
            "10",
            "18446744073709551614",
            "18446744073709551615",
            "1.8446744073709551616e19",
            "9.9e125",
        ];
        for pair in ascending.windows(2) {
            assert!(d(pair[0]) < d(pair[1]), "{} < {}", pair[0], pair[1]);
        }
        assert_eq!(d("1.50").cmp(&d("15e-1")), Ordering::Equal);
        assert_eq!(d("-0").cmp(&d("0.000")), Ordering::Equal);
    }

    proptest! {
        #[test]
        fn ordering_agrees_with_integer_ordering(a in any::<i64>(), b in any::<i64>(), scale in 0_u32..4) {
            let spell = |n: i64| format!("{n}{}", ".0".repeat(usize::from(scale > 0)));
            prop_assert_eq!(d(&spell(a)).cmp(&d(&format!("{b}e0"))), a.cmp(&b));
        }
    }
}
