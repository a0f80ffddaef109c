//! QueryItems: the key selection, the page size and the page token, which is opened here and
//! only continues the same caller's same query.

use common::{proto::data::v1::QueryItemsRequest, status::Violation};

use super::check;
use crate::{
    convert::MAX_KEY_BYTES,
    error::DataError,
    page_token::{PageTokens, QueryShape},
    store::{KeyRange, Query},
};

/// Items per page when the request says 0.
pub const DEFAULT_LIMIT: u32 = 100;
/// Most items per page.
pub const MAX_LIMIT: u32 = 1000;

/// What a page token of this query is bound to.
pub fn shape<'a>(request: &'a QueryItemsRequest, owner: &'a str) -> QueryShape<'a> {
    QueryShape {
        owner,
        prefix: &request.key_prefix,
        start: &request.start_key,
        end: &request.end_key,
        descending: request.descending,
    }
}

/// Every rule of a QueryItems but its page token.
fn violations(request: &QueryItemsRequest) -> Vec<Violation> {
    let mut violations = Vec::new();
    for (field, value) in [
        ("key_prefix", &request.key_prefix),
        ("start_key", &request.start_key),
        ("end_key", &request.end_key),
    ] {
        if value.len() > MAX_KEY_BYTES {
            violations.push(Violation::new(
                field,
                format!("at most {MAX_KEY_BYTES} bytes"),
            ));
        }
    }
    let ranged = !request.start_key.is_empty() || !request.end_key.is_empty();
    if !request.key_prefix.is_empty() && ranged {
        violations.push(Violation::new(
            "key_prefix",
            "cannot be combined with start_key or end_key; use one or the other",
        ));
    }
    if !request.start_key.is_empty()
        && !request.end_key.is_empty()
        && request.start_key > request.end_key
    {
        violations.push(Violation::new(
            "end_key",
            "must not be smaller than start_key",
        ));
    }
    if request.limit > MAX_LIMIT {
        violations.push(Violation::new(
            "limit",
            format!("must be 1 to {MAX_LIMIT} (0 means {DEFAULT_LIMIT})"),
        ));
    }
    violations
}

/// The keys a valid request selects.
fn range(request: &QueryItemsRequest) -> KeyRange {
    let non_empty = |s: &String| (!s.is_empty()).then(|| s.clone());
    if !request.key_prefix.is_empty() {
        KeyRange::Prefix(request.key_prefix.clone())
    } else if !request.start_key.is_empty() || !request.end_key.is_empty() {
        KeyRange::Between {
            start: non_empty(&request.start_key),
            end: non_empty(&request.end_key),
        }
    } else {
        KeyRange::All
    }
}

/// Checks QueryItems for `owner`, opening its page token.
pub fn query(
    request: &QueryItemsRequest,
    owner: &str,
    pages: &PageTokens,
) -> Result<Query, DataError> {
    check(violations(request))?;
    let after = (!request.page_token.is_empty())
        .then(|| pages.open(&shape(request, owner), &request.page_token))
        .transpose()?;
    let limit = if request.limit == 0 {
        DEFAULT_LIMIT
    } else {
        request.limit
    };
    Ok(Query {
        range: range(request),
        // At most MAX_LIMIT, so it fits.
        limit: i32::try_from(limit).unwrap_or(100),
        after,
        descending: request.descending,
        consistent: request.consistent_read,
        count_only: request.select_count,
    })
}
