//! Listing a user's live sessions (neither revoked nor expired): for the session cap and
//! LogoutAll, and for ListSessions.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use common::dynamo::attrs::{self, number, string};
use time::OffsetDateTime;

use super::{
    SessionStore,
    record::{LISTED_ATTRIBUTES, integer, malformed, parse_listed},
};
use crate::{
    error::AuthError,
    sessions::{ListedSession, LiveSession},
};

impl SessionStore {
    /// The user's sessions that are neither revoked nor expired at `now`, in no order.
    pub async fn live_sessions(
        &self,
        user_id: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<LiveSession>, AuthError> {
        let mut pages = self
            .live_query(user_id, now)
            .projection_expression("session_id, created_at")
            .into_paginator()
            .items()
            .send();
        let mut live = Vec::new();
        while let Some(item) = pages.next().await {
            let item = item.map_err(|error| AuthError::aws("list sessions", error))?;
            let Some(session_id) = attrs::get_string(&item, "session_id").ok().flatten() else {
                return Err(malformed("session_id"));
            };
            live.push(LiveSession {
                created_at_ms: integer(&item, "created_at")?.unwrap_or(0),
                session_id: session_id.to_owned(),
            });
        }
        Ok(live)
    }

    /// The user's newest `limit` sessions that are neither revoked nor expired at `now`,
    /// newest first. Every page of the user's partition is read (the filter drops ended
    /// sessions server-side), keeping only the newest `limit` in memory.
    pub async fn list_live(
        &self,
        user_id: &str,
        now: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<ListedSession>, AuthError> {
        let mut pages = self
            .live_query(user_id, now)
            .projection_expression(LISTED_ATTRIBUTES)
            .into_paginator()
            .items()
            .send();
        // A min-heap of the newest `limit`: the oldest kept is the first to go.
        let mut newest = BinaryHeap::with_capacity(limit.saturating_add(1));
        while let Some(item) = pages.next().await {
            let item = item.map_err(|error| AuthError::aws("list sessions", error))?;
            newest.push(Reverse(parse_listed(&item)?));
            if newest.len() > limit {
                newest.pop();
            }
        }
        // Ascending order of `Reverse` is newest first.
        Ok(newest
            .into_sorted_vec()
            .into_iter()
            .map(|Reverse(session)| session)
            .collect())
    }

    /// The query of the user's sessions that are neither revoked nor expired at `now` (the
    /// filter runs server-side), strongly consistent.
    fn live_query(&self, user_id: &str, now: OffsetDateTime) -> QueryFluentBuilder {
        self.client
            .query()
            .table_name(&self.table)
            .key_condition_expression("user_id = :user")
            .filter_expression("attribute_not_exists(revoked_at) AND expires_at > :now")
            .expression_attribute_values(":user", string(user_id))
            .expression_attribute_values(":now", number(now.unix_timestamp()))
            .consistent_read(true)
    }
}
