//! What the store is asked to do, already validated and converted: `requests` builds these from
//! the gRPC messages, so the store depends on nothing that reads a request.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

/// The condition of a put.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precondition {
    /// Create or replace.
    None,
    /// Only create.
    IfAbsent,
    /// Only replace this version (0: only create).
    Version(u64),
}

/// Which client attributes a read returns (the bookkeeping ones always come back).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Projection {
    /// Every attribute.
    All,
    /// Only these client attributes, possibly none.
    Only(Vec<String>),
}

/// Which keys a query selects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyRange {
    /// Every key.
    All,
    /// Keys starting with the prefix.
    Prefix(String),
    /// Keys from `start` to `end`, both inclusive, either open.
    Between {
        /// Smallest key, inclusive.
        start: Option<String>,
        /// Largest key, inclusive.
        end: Option<String>,
    },
}

/// A validated PutItem.
#[derive(Clone, Debug)]
pub struct Put {
    /// The item's key.
    pub key: String,
    /// The converted client attributes.
    pub attributes: HashMap<String, AttributeValue>,
    /// Its condition.
    pub precondition: Precondition,
    /// When it expires, in Unix seconds (in the future when validated); `None`: never.
    pub expires_at: Option<i64>,
}

/// A validated UpdateItem.
#[derive(Clone, Debug)]
pub struct Update {
    /// The item's key.
    pub key: String,
    /// Attributes to set, converted.
    pub set: HashMap<String, AttributeValue>,
    /// Attribute names to remove.
    pub remove: Vec<String>,
    /// Numbers to add and sets to merge (DynamoDB ADD), converted.
    pub add: HashMap<String, AttributeValue>,
    /// Lists to append, converted.
    pub append: HashMap<String, AttributeValue>,
    /// Sets whose members to delete (DynamoDB DELETE), converted.
    pub delete_from_sets: HashMap<String, AttributeValue>,
    /// Only update the item at this version.
    pub expected: Option<u64>,
    /// A new expiry in Unix seconds; `None` keeps the stored one.
    pub expires_at: Option<i64>,
}

impl Update {
    /// The request field a too-long expression is blamed on: the one with the most entries.
    pub fn largest_field(&self) -> &'static str {
        [
            (self.set.len(), "set"),
            (self.add.len(), "add"),
            (self.append.len(), "append"),
            (self.delete_from_sets.len(), "delete_from_sets"),
            (self.remove.len(), "remove"),
        ]
        .into_iter()
        .max_by_key(|(count, _)| *count)
        .map_or("set", |(_, field)| field)
    }
}

/// A validated QueryItems.
#[derive(Clone, Debug)]
pub struct Query {
    /// The keys selected.
    pub range: KeyRange,
    /// Page size.
    pub limit: i32,
    /// Where the previous page stopped.
    pub after: Option<String>,
    /// Greatest key first.
    pub descending: bool,
    /// A strongly consistent read.
    pub consistent: bool,
    /// Count the items instead of returning them (DynamoDB `Select: COUNT`).
    pub count_only: bool,
}
