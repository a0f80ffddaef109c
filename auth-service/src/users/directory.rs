//! What the admin service reads and writes on the users table: users found by id through the
//! keys-only index `user_ids` (partition key `user_id`), every user listed a page at a time
//! (a Scan), and the `disabled_at` mark (N, Unix seconds; absent while enabled) that makes an
//! account unusable like a deletion record does, until it is removed.

use aws_sdk_dynamodb::types::{
    GlobalSecondaryIndex, KeyType, Projection, ProjectionType, ReturnValue,
};
use common::dynamo::attrs::{self, number, string};

use super::{User, UserStore};
use crate::error::{AuthError, conditional};

/// The users table's keys-only index by user id.
pub const BY_ID: &str = "user_ids";
/// The attribute of a disabled account.
pub(super) const DISABLED_AT: &str = "disabled_at";

/// A page of users and, when more may follow, the username to resume after.
#[derive(Debug)]
pub struct UserPage {
    /// The users of the page, in table order.
    pub users: Vec<User>,
    /// The last username read, when the table may hold more.
    pub resume_after: Option<String>,
}

impl UserStore {
    /// The username of the user `user_id`, if any. The index is eventually consistent: a
    /// user registered a moment ago may not be found by id yet (by name it is).
    pub async fn username_of(&self, user_id: &str) -> Result<Option<String>, AuthError> {
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(BY_ID)
            .key_condition_expression("user_id = :id")
            .expression_attribute_values(":id", string(user_id))
            .limit(1)
            .send()
            .await
            .map_err(|error| AuthError::aws("find user by id", error))?;
        let item = output.items.unwrap_or_default().into_iter().next();
        Ok(item.and_then(|item| {
            attrs::get_string(&item, "username")
                .ok()
                .flatten()
                .map(str::to_owned)
        }))
    }

    /// Up to `limit` users after `after` (a username from an earlier page), strongly
    /// consistent.
    pub async fn page(&self, limit: u32, after: Option<&str>) -> Result<UserPage, AuthError> {
        let mut scan = self
            .client
            .scan()
            .table_name(&self.table)
            .consistent_read(true)
            .limit(i32::try_from(limit).unwrap_or(i32::MAX));
        if let Some(after) = after {
            scan = scan.exclusive_start_key("username", string(after));
        }
        let output = scan
            .send()
            .await
            .map_err(|error| AuthError::aws("list users", error))?;
        let mut users = Vec::new();
        for item in output.items.unwrap_or_default() {
            let username = attrs::get_string(&item, "username")
                .ok()
                .flatten()
                .ok_or_else(|| AuthError::Internal(anyhow::anyhow!("a user item lacks username")))?
                .to_owned();
            users.push(super::parse(&username, &item)?);
        }
        let resume_after = output.last_evaluated_key.and_then(|key| {
            attrs::get_string(&key, "username")
                .ok()
                .flatten()
                .map(str::to_owned)
        });
        Ok(UserPage {
            users,
            resume_after,
        })
    }

    /// Marks `user_id`'s account (named `username`) disabled from `now` (Unix seconds), unless
    /// it already is. Returns when it was disabled (now or before); `None` when the name is no
    /// longer `user_id`'s.
    pub async fn disable(
        &self,
        username: &str,
        user_id: &str,
        now: i64,
    ) -> Result<Option<i64>, AuthError> {
        let output = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("username", string(username))
            .update_expression("SET #disabled = if_not_exists(#disabled, :now)")
            .condition_expression("user_id = :id")
            .expression_attribute_names("#disabled", DISABLED_AT)
            .expression_attribute_values(":now", number(now))
            .expression_attribute_values(":id", string(user_id))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await;
        let attributes = match output {
            Ok(output) => output.attributes.unwrap_or_default(),
            Err(error) if common::aws::condition_failed(&error) => return Ok(None),
            Err(error) => return Err(AuthError::aws("disable user", error)),
        };
        let at = attrs::get_number(&attributes, DISABLED_AT).map_err(|_| {
            AuthError::Internal(anyhow::anyhow!(
                "user item {username:?}: malformed {DISABLED_AT}"
            ))
        })?;
        Ok(Some(at.unwrap_or(now)))
    }

    /// Removes the disabled mark of `user_id`'s account; false when the name is no longer
    /// `user_id`'s. Enabling an enabled account changes nothing and succeeds.
    pub async fn enable(&self, username: &str, user_id: &str) -> Result<bool, AuthError> {
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("username", string(username))
            .update_expression("REMOVE #disabled")
            .condition_expression("user_id = :id")
            .expression_attribute_names("#disabled", DISABLED_AT)
            .expression_attribute_values(":id", string(user_id));
        conditional("enable user", update.send().await)
    }
}

/// The index `user_ids`, for `create_table`.
pub(super) fn by_id_index() -> Result<GlobalSecondaryIndex, String> {
    GlobalSecondaryIndex::builder()
        .index_name(BY_ID)
        .key_schema(common::dynamo::key_element("user_id", KeyType::Hash)?)
        .projection(
            Projection::builder()
                .projection_type(ProjectionType::KeysOnly)
                .build(),
        )
        .build()
        .map_err(|e| e.to_string())
}
