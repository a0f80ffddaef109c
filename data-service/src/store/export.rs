//! ExportItems' reads: the caller's items of a prefix in key order, one Query page at a time,
//! each resuming after the last key DynamoDB evaluated. The paging, the expiry filter and the
//! reading of untrusted items are QueryItems' (`query`); only the page's shape is fixed here.

use aws_sdk_dynamodb::Client;

use super::{ItemStore, KeyRange, Page, Query};
use crate::error::DataError;

/// Items one export page reads at most. DynamoDB also stops a page at 1 MB of items read, so a
/// page holds at most min(100 items, 1 MB) whatever the items' sizes.
pub const EXPORT_PAGE_ITEMS: i32 = 100;

impl ItemStore {
    /// The page of `owner`'s live items starting with `prefix` (all items when empty) that
    /// follows `after` (exclusive), in key order: one Query, eventually consistent. A page may
    /// hold fewer items than the limit (expired ones are left out), even none, with more to
    /// come: the export ends when `last_key` is `None`.
    pub async fn export_page(
        &self,
        db: &Client,
        owner: &str,
        prefix: &str,
        after: Option<&str>,
    ) -> Result<Page, DataError> {
        let range = if prefix.is_empty() {
            KeyRange::All
        } else {
            KeyRange::Prefix(prefix.to_owned())
        };
        let query = Query {
            range,
            limit: EXPORT_PAGE_ITEMS,
            after: after.map(str::to_owned),
            descending: false,
            consistent: false,
            count_only: false,
        };
        self.query(db, owner, &query).await
    }
}
