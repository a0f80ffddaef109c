//! Converts attribute values between the API's `Value` and DynamoDB's `AttributeValue`, checking
//! client input first so every mistake is reported with its field path and DynamoDB never sees a
//! request it would reject.
//!
//! - `to_dynamo`: client input to DynamoDB, with every violation reported;
//! - `from_dynamo`: stored values back to the API;
//! - `size`: item size and value count as DynamoDB (and our bounds) count them;
//! - `report`: the capped list of violations a conversion collects.

mod from_dynamo;
mod report;
mod size;
#[cfg(test)]
mod tests;
mod to_dynamo;

use common::status::Violation;

pub use from_dynamo::{attributes_from_dynamo, value_from_dynamo};
pub use size::{MAX_ITEM_VALUES, check_item_size, check_value_count, item_size, value_count};
pub use to_dynamo::attributes_to_dynamo;

/// The stored attribute (a map) that holds an item's client attributes, so that one UpdateItem
/// can replace them all (see the layout in `store`).
pub const ATTRIBUTES_MAP: &str = "$attributes";

/// The stored attribute that holds an item's expiry in Unix seconds: the items table's TTL
/// attribute (`create-tables` and deploy/aws/dynagate.yaml name it too).
pub const EXPIRES_AT: &str = "expires_at";

/// Attribute names the service keeps for its own bookkeeping (partition, sort key, version,
/// timestamps, expiry and the map of client attributes); a client attribute of the same name
/// would overwrite them.
pub const RESERVED_ATTRIBUTES: [&str; 7] = [
    "owner",
    "key",
    "version",
    "created_at",
    "updated_at",
    EXPIRES_AT,
    ATTRIBUTES_MAP,
];

/// DynamoDB's nesting limit. A top-level attribute value is level 1 and the elements of a list or
/// map at level `n` are at level `n + 1`; no value may be deeper than level 32 (real DynamoDB
/// accepts a leaf at level 32 and rejects one at level 33).
pub const MAX_DEPTH: usize = 32;

/// The level of a client attribute: level 2, inside the item's [`ATTRIBUTES_MAP`], so at most 30
/// lists or maps can nest in it.
pub const ATTRIBUTE_LEVEL: usize = 2;

/// DynamoDB's item size limit, which counts names as well as values.
pub const MAX_ITEM_BYTES: usize = 400 * 1024;

/// Our limit on attribute names and map keys, in UTF-8 bytes. DynamoDB allows 64 KB for non-key
/// names; we keep its 255-byte limit for key-like names so names stay short enough to be quoted
/// in error paths and expressions.
pub const MAX_NAME_BYTES: usize = 255;

/// DynamoDB's limit on a sort key value, which is what an item key becomes.
pub const MAX_KEY_BYTES: usize = 1024;

/// At most this many violations are collected (plus one saying how many were left out), so a
/// hostile request cannot make us build a huge error; the same bound the status builder
/// applies to what is sent.
pub const MAX_VIOLATIONS: usize = common::status::MAX_VIOLATIONS;

/// A field path built only when a message needs it, so valid input allocates no paths.
type Path<'a> = &'a dyn Fn() -> String;

/// Checks an item key: DynamoDB refuses empty sort keys and ones over 1024 bytes.
pub fn validate_key(field: &str, key: &str) -> Result<(), Violation> {
    if key.is_empty() {
        return Err(Violation::new(field, "must not be empty"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(Violation::new(
            field,
            format!(
                "is {} bytes of UTF-8; at most {MAX_KEY_BYTES} are allowed",
                key.len()
            ),
        ));
    }
    Ok(())
}

/// A name quoted for a field path. Names over the limit (already reported) are cut short so a
/// huge name cannot blow up every path below it.
pub(crate) fn quote(name: &str) -> String {
    if name.len() <= MAX_NAME_BYTES {
        return format!("{name:?}");
    }
    let mut end = MAX_NAME_BYTES;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}", format!("{}…", &name[..end]))
}
