//! Reading stored items back, in either layout (see the module docs of `store`). Stored items
//! are untrusted: the owner can write anything into their partition with the credentials
//! GetCredentials hands out, so every bookkeeping attribute is checked here and read with a
//! documented default, with checked arithmetic throughout.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use time::OffsetDateTime;

use super::{StoredItem, expiry};
use crate::{
    convert::{self, ATTRIBUTES_MAP, EXPIRES_AT},
    error::DataError,
    number::Decimal,
};

/// The earliest and latest instants a protobuf `Timestamp` may hold (0001-01-01T00:00:00Z and
/// 9999-12-31T23:59:59.999999999Z), in Unix seconds.
const MIN_TIMESTAMP_SECONDS: i64 = -62_135_596_800;
const MAX_TIMESTAMP_SECONDS: i64 = 253_402_300_799;

/// Longest key or attribute path quoted in a DATA_LOSS message.
const MAX_DETAIL_BYTES: usize = 1024;

/// A stored `version` as the service reads it: an integer in 1..=u64::MAX, written as plain
/// decimal digits. Anything else was not written by the service.
pub fn version(value: Option<&AttributeValue>) -> Option<u64> {
    let digits = value?.as_n().ok()?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok().filter(|&version| version >= 1)
}

/// A stored `created_at` / `updated_at`: Unix milliseconds, as plain decimal digits with an
/// optional '-', within what a protobuf `Timestamp` can carry.
pub fn millis(value: Option<&AttributeValue>) -> Option<i64> {
    let millis = integer(value?)?;
    let seconds = millis.div_euclid(1000);
    (MIN_TIMESTAMP_SECONDS..=MAX_TIMESTAMP_SECONDS)
        .contains(&seconds)
        .then_some(millis)
}

/// A stored number written as plain decimal digits with an optional '-', that fits an i64.
pub fn integer(value: &AttributeValue) -> Option<i64> {
    let text = value.as_n().ok()?;
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<i64>().ok()
}

/// [`millis`] as a point in time.
fn instant(value: Option<&AttributeValue>) -> Option<OffsetDateTime> {
    common::clock::from_unix_millis(millis(value)?)
}

/// A stored `expires_at` (Unix seconds) as a point in time, when it is whole seconds a
/// protobuf `Timestamp` can hold; anything else reads as unset.
fn expiry_instant(value: Option<&AttributeValue>) -> Option<OffsetDateTime> {
    let millis = integer(value?)?.checked_mul(1000)?;
    instant(Some(&AttributeValue::N(millis.to_string())))
}

/// Reads a stored item (from a read, or returned by a write): defaults for malformed
/// bookkeeping, and DATA_LOSS naming the item when an attribute cannot be carried by the API.
pub fn item(raw: &HashMap<String, AttributeValue>) -> Result<StoredItem, DataError> {
    let Some(key) = raw.get("key").and_then(|k| k.as_s().ok()) else {
        // The table's sort key is a string, so DynamoDB never returns such an item.
        return Err(DataError::DataLoss(
            "a stored item has no string key".to_owned(),
        ));
    };
    let attributes = client_attributes(raw).map_err(|unreadable| {
        DataError::DataLoss(format!(
            "item {} cannot be read: {}; delete or replace it",
            clip(&format!("{key:?}")),
            clip(&unreadable)
        ))
    })?;
    Ok(StoredItem {
        key: key.clone(),
        attributes,
        version: version(raw.get("version")).unwrap_or(0),
        created_at: instant(raw.get("created_at")),
        updated_at: instant(raw.get("updated_at")),
        expires_at: expiry_instant(raw.get(EXPIRES_AT)),
    })
}

/// The client attributes: those at the top level (the older layout) and the entries of the
/// attribute map, which win a name both hold. Reserved names are never client attributes,
/// wherever they are stored.
fn client_attributes(
    raw: &HashMap<String, AttributeValue>,
) -> Result<HashMap<String, common::proto::data::v1::Value>, String> {
    let mut attributes = convert::attributes_from_dynamo(raw)?;
    if let Some(AttributeValue::M(map)) = raw.get(ATTRIBUTES_MAP) {
        let inside = convert::attributes_from_dynamo(map)
            .map_err(|unreadable| format!("in {ATTRIBUTES_MAP}: {unreadable}"))?;
        attributes.extend(inside);
    }
    Ok(attributes)
}

/// At most [`MAX_DETAIL_BYTES`] of `text`, so a message naming a stored key or attribute path
/// (both chosen by whoever wrote the item) fits in a status header.
fn clip(text: &str) -> String {
    if text.len() <= MAX_DETAIL_BYTES {
        return text.to_owned();
    }
    let mut end = MAX_DETAIL_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// [`item`] for the item a write returned: the write has happened, and the message says so.
pub fn written(raw: &HashMap<String, AttributeValue>, what: &str) -> Result<StoredItem, DataError> {
    item(raw).map_err(|error| match error {
        DataError::DataLoss(detail) => {
            DataError::DataLoss(format!("the item was {what}, but {detail}"))
        }
        other => other,
    })
}

/// What a write found stored before it: the raw version (for the condition that the item is
/// still as found) and what it means.
#[derive(Clone, Debug, PartialEq)]
pub struct Stamp {
    raw_version: Option<AttributeValue>,
    created_at: Option<i64>,
    raw_expires_at: Option<AttributeValue>,
}

impl Stamp {
    /// The stamp of a stored item (or of its projection to `version`, `created_at` and
    /// `expires_at`).
    pub fn of(raw: &HashMap<String, AttributeValue>) -> Self {
        Self {
            raw_version: raw.get("version").cloned(),
            created_at: millis(raw.get("created_at")),
            raw_expires_at: raw.get(EXPIRES_AT).cloned(),
        }
    }

    /// Whether the item has expired at `now_s` (and is absent to the client).
    pub fn expired(&self, now_s: i64) -> bool {
        expiry::expired(self.raw_expires_at.as_ref(), now_s)
    }

    /// The stored expiry as written when it is a number, for a condition that it has not
    /// changed.
    pub fn raw_expires_at(&self) -> Option<&str> {
        self.raw_expires_at
            .as_ref()?
            .as_n()
            .ok()
            .map(String::as_str)
    }

    /// The stored version, if the service could have written it.
    pub fn version(&self) -> Option<u64> {
        version(self.raw_version.as_ref())
    }

    /// The version a write replacing this one gets, if the stored one is valid and can grow.
    pub fn next_version(&self) -> Option<u64> {
        self.version()?.checked_add(1)
    }

    /// Whether the condition of an unconditional update lets this version be bumped: missing,
    /// or any number from 1 to u64::MAX - 1 (a fraction too: DynamoDB compares it as such).
    pub fn bumpable(&self) -> bool {
        let Some(raw) = &self.raw_version else {
            return true;
        };
        let (Ok(number), Ok(one), Ok(largest)) = (
            raw.as_n().map(|n| Decimal::parse(n)),
            Decimal::parse("1"),
            Decimal::parse(&(u64::MAX - 1).to_string()),
        ) else {
            return false;
        };
        number.is_ok_and(|number| one <= number && number <= largest)
    }

    /// The stored version, whatever its type and value.
    pub fn raw_version(&self) -> Option<&AttributeValue> {
        self.raw_version.as_ref()
    }

    /// The stored version as written when it is a number (whatever its value), for a
    /// condition that it has not changed.
    pub fn raw_number(&self) -> Option<&str> {
        self.raw_version.as_ref()?.as_n().ok().map(String::as_str)
    }

    /// The stored creation time, if valid.
    pub fn created_at(&self) -> Option<i64> {
        self.created_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(number: &str) -> AttributeValue {
        AttributeValue::N(number.to_owned())
    }

    fn raw(pairs: Vec<(&str, AttributeValue)>) -> HashMap<String, AttributeValue> {
        let mut item: HashMap<String, AttributeValue> = pairs
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .collect();
        item.insert("owner".into(), AttributeValue::S("user".into()));
        item.insert("key".into(), AttributeValue::S("k".into()));
        item
    }

    #[test]
    fn only_plain_integers_from_1_to_u64_max_are_versions() {
        for valid in ["1", "42", "007", "18446744073709551615"] {
            assert!(version(Some(&n(valid))).is_some(), "{valid}");
        }
        for invalid in [
            "0",
            "-1",
            "+1",
            "1.0",
            "1.5",
            "1e3",
            "18446744073709551616",
            "99999999999999999999999999999999999999",
            "",
        ] {
            assert_eq!(version(Some(&n(invalid))), None, "{invalid}");
        }
        assert_eq!(version(Some(&AttributeValue::S("1".into()))), None);
        assert_eq!(version(None), None);
    }

    #[test]
    fn timestamps_are_millis_a_protobuf_timestamp_can_hold() {
        assert_eq!(millis(Some(&n("1700000000123"))), Some(1_700_000_000_123));
        assert_eq!(millis(Some(&n("-1000"))), Some(-1000));
        assert_eq!(
            millis(Some(&n("253402300799999"))),
            Some(253_402_300_799_999)
        );
        assert_eq!(
            millis(Some(&n("-62135596800000"))),
            Some(-62_135_596_800_000)
        );
        for invalid in [
            "253402300800000",
            "-62135596800001",
            "99999999999999999999",
            "99999999999999999999999999999999999999",
            "-9223372036854775808",
            "1.5",
            "1e3",
            "-",
            "--1",
        ] {
            assert_eq!(millis(Some(&n(invalid))), None, "{invalid}");
        }
        let item = item(&raw(vec![("created_at", n("9223372036854775807"))])).unwrap();
        assert_eq!(item.created_at, None);
    }

    #[test]
    fn only_whole_seconds_in_timestamp_range_read_as_an_expiry() {
        let at = expiry_instant(Some(&n("1700000000"))).unwrap();
        assert_eq!(at.unix_timestamp(), 1_700_000_000);
        for unreadable in [
            n("1.5"),
            n("1e3"),
            n("253402300800"),
            n("9223372036854775807"),
            AttributeValue::S("1".into()),
        ] {
            assert_eq!(expiry_instant(Some(&unreadable)), None, "{unreadable:?}");
        }
    }

    #[test]
    fn malformed_bookkeeping_reads_as_the_defaults() {
        let read = item(&raw(vec![
            ("version", AttributeValue::S("7".into())),
            ("created_at", n("1e100")),
            ("updated_at", AttributeValue::Bool(true)),
            ("color", AttributeValue::S("red".into())),
        ]))
        .unwrap();
        assert_eq!(
            (read.version, read.created_at, read.updated_at),
            (0, None, None)
        );
        assert_eq!(read.attributes.len(), 1);

        let valid = item(&raw(vec![
            ("version", n("3")),
            ("created_at", n("1700000000123")),
        ]))
        .unwrap();
        assert_eq!(valid.version, 3);
        let created = valid.created_at.unwrap();
        assert_eq!(created.unix_timestamp(), 1_700_000_000);
        assert_eq!(created.millisecond(), 123);
    }

    #[test]
    fn details_in_messages_are_clipped() {
        assert_eq!(clip("short"), "short");
        let long = "é".repeat(MAX_DETAIL_BYTES);
        let clipped = clip(&long);
        assert!(clipped.len() <= MAX_DETAIL_BYTES + "…".len());
        assert!(clipped.ends_with('…'));
    }

    #[test]
    fn client_attributes_come_from_the_map_and_the_top_level_and_the_map_wins() {
        let map = AttributeValue::M(HashMap::from([
            ("color".to_owned(), AttributeValue::S("map".into())),
            ("size".to_owned(), n("2")),
            ("version".to_owned(), n("99")),
        ]));
        let read = item(&raw(vec![
            ("version", n("3")),
            ("color", AttributeValue::S("top".into())),
            ("legacy", AttributeValue::Bool(true)),
            (ATTRIBUTES_MAP, map),
        ]))
        .unwrap();
        let mut names: Vec<&str> = read.attributes.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            ["color", "legacy", "size"],
            "reserved names stay out"
        );
        assert_eq!(
            read.attributes["color"].kind,
            Some(common::proto::data::v1::value::Kind::StringValue(
                "map".into()
            ))
        );
        assert_eq!(read.version, 3);

        // A map attribute of another type is not the layout's map: it is left out.
        let odd = item(&raw(vec![(ATTRIBUTES_MAP, AttributeValue::S("x".into()))])).unwrap();
        assert!(odd.attributes.is_empty());
    }

    // An attribute of a type the SDK does not know cannot be built here (the SDK's `Unknown`
    // variant is private); tests/tests/data_untrusted.rs makes DynamoDB's answer carry one.
    #[test]
    fn data_loss_in_a_written_item_says_the_write_happened() {
        let keyless = HashMap::from([("version".to_owned(), n("1"))]);
        assert!(matches!(item(&keyless), Err(DataError::DataLoss(_))));
        match written(&keyless, "deleted") {
            Err(DataError::DataLoss(message)) => {
                assert!(
                    message.starts_with("the item was deleted, but"),
                    "{message}"
                );
            }
            other => panic!("expected DATA_LOSS, got {other:?}"),
        }
    }

    #[test]
    fn stamps_keep_the_raw_version_for_the_write_condition() {
        let stamp = Stamp::of(&raw(vec![("version", n("1e100"))]));
        assert_eq!((stamp.version(), stamp.raw_number()), (None, Some("1e100")));
        let largest = Stamp::of(&raw(vec![("version", n("18446744073709551615"))]));
        assert_eq!(largest.version(), Some(u64::MAX));
        assert_eq!(largest.next_version(), None);
        let text = Stamp::of(&raw(vec![("version", AttributeValue::S("1".into()))]));
        assert_eq!((text.version(), text.raw_number()), (None, None));
        let fine = Stamp::of(&raw(vec![("version", n("4")), ("created_at", n("5"))]));
        assert_eq!((fine.next_version(), fine.created_at()), (Some(5), Some(5)));
    }
}
