//! Admin messages to and from the actions' types.

use common::{
    proto::{
        admin::v1::{self as proto},
        timestamp,
    },
    status::Violation,
};
use time::OffsetDateTime;

use super::actions::{UserRef, UserView};
use crate::{error::AuthError, users::User};

/// The user a request names: its `user` oneof, which must be set.
pub fn user_ref<O>(
    oneof: Option<O>,
    split: impl FnOnce(O) -> UserRef,
) -> Result<UserRef, AuthError> {
    oneof.map(split).ok_or_else(|| {
        AuthError::InvalidArgument(vec![Violation::new(
            "user",
            "name the user by user_id or username",
        )])
    })
}

/// Implements `From<…> for UserRef` for each request's generated oneof.
macro_rules! user_oneof {
    ($($module:ident),*) => {$(
        impl From<proto::$module::User> for UserRef {
            fn from(user: proto::$module::User) -> Self {
                match user {
                    proto::$module::User::UserId(id) => Self::Id(id),
                    proto::$module::User::Username(name) => Self::Name(name),
                }
            }
        }
    )*};
}

user_oneof!(
    get_user_request,
    disable_user_request,
    enable_user_request,
    force_logout_request,
    unlock_user_request,
    delete_user_request
);

/// GetUser's description of an account.
pub fn user(view: UserView, now_ms: i64) -> proto::User {
    let UserView {
        user,
        active_sessions,
        lockout,
    } = view;
    let locked_until = lockout
        .and_then(|state| state.locked_until_ms)
        .filter(|&until| until > now_ms)
        .and_then(from_millis);
    proto::User {
        user_id: user.user_id.clone(),
        username: user.username.clone(),
        created_at: from_secs(user.created_at),
        active_sessions: u32::try_from(active_sessions).unwrap_or(u32::MAX),
        totp_enabled: user.totp.active.is_some(),
        locked_until,
        failed_attempts: lockout.map_or(0, |state| state.count),
        disabled_at: user.disabled_at.and_then(from_secs),
        deletion_requested_at: user
            .deletion
            .as_ref()
            .and_then(|record| from_millis(record.requested_at)),
    }
}

/// ListUsers' summary of an account.
pub fn summary(user: User) -> proto::UserSummary {
    proto::UserSummary {
        created_at: from_secs(user.created_at),
        totp_enabled: user.totp.active.is_some(),
        disabled_at: user.disabled_at.and_then(from_secs),
        deletion_requested_at: user
            .deletion
            .as_ref()
            .and_then(|record| from_millis(record.requested_at)),
        user_id: user.user_id,
        username: user.username,
    }
}

/// A timestamp from Unix seconds; `None` out of range.
pub fn from_secs(secs: i64) -> Option<prost_types::Timestamp> {
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .map(timestamp)
}

fn from_millis(ms: i64) -> Option<prost_types::Timestamp> {
    let nanos = i128::from(ms).saturating_mul(1_000_000);
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .map(timestamp)
}
