//! Item expiry: `expires_at` holds Unix seconds (the items table's TTL attribute). DynamoDB
//! deletes expired items late (often days) and dynalite never, so every read and every write
//! condition judges expiry itself, the same way in both places: an item is expired when its
//! `expires_at` is a number not greater than the current Unix second. Anything else stored
//! there (no attribute, a string, …) means "does not expire", as it does to DynamoDB's TTL.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use super::{n, s};
use crate::number::Decimal;

/// The condition (and filter) that an item has not expired, over the placeholders
/// [`live_values`] defines and `#e` (see `expressions::names`).
pub const LIVE: &str =
    "(attribute_not_exists(#e) OR NOT attribute_type(#e, :number) OR #e > :now_s)";

/// The current Unix second, which expiry is judged by.
pub fn now_seconds() -> i64 {
    super::now_millis().div_euclid(1000)
}

/// The values [`LIVE`] uses, at `now_s`.
pub fn live_values(now_s: i64) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (":number".to_owned(), s("N")),
        (":now_s".to_owned(), n(now_s)),
    ])
}

/// Whether a stored `expires_at` says the item has expired at `now_s`: a number (compared as
/// DynamoDB compares numbers, fractions and exponents included) not greater than `now_s`.
pub fn expired(value: Option<&AttributeValue>, now_s: i64) -> bool {
    let Some(Ok(stored)) = value
        .and_then(|value| value.as_n().ok())
        .map(|number| Decimal::parse(number))
    else {
        return false;
    };
    Decimal::parse(&now_s.to_string()).is_ok_and(|now| stored <= now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_up_to_now_are_expired_and_anything_else_is_not() {
        let now = 1_700_000_000;
        for gone in [
            "1700000000",
            "1699999999",
            "1.5",
            "-5",
            "1e3",
            "1699999999.999",
        ] {
            assert!(expired(Some(&n(gone)), now), "{gone}");
        }
        for live in ["1700000001", "1700000000.5", "1e100"] {
            assert!(!expired(Some(&n(live)), now), "{live}");
        }
        assert!(!expired(None, now));
        assert!(!expired(Some(&s("1")), now));
        assert!(!expired(Some(&AttributeValue::Ns(vec!["1".into()])), now));
    }
}
