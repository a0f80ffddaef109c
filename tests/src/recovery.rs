//! Issuing recovery tokens in-process, the library function the admin service calls, against
//! a test service's own users table and clock: how ResetPassword tests get tokens without the
//! admin listener, and how they see the issuing's DynamoDB traffic (through a recording proxy).

use std::sync::Arc;

use auth_service::{recovery::Recovery, users::UserStore};
use common::clock::Clock;

use crate::{auth::TestAuth, dynamodb_client};

/// The recovery tokens of `auth`'s users table, lasting its configured lifetime by `clock`
/// (the one the service reads), issued through `auth`'s own DynamoDB endpoint.
pub fn recovery_of(auth: &TestAuth, clock: Arc<dyn Clock>) -> Recovery {
    recovery_via(auth, &auth.endpoints.dynamodb, clock)
}

/// [`recovery_of`], its DynamoDB calls sent to `endpoint` (a proxy in front of the same
/// emulator).
pub fn recovery_via(auth: &TestAuth, endpoint: &str, clock: Arc<dyn Clock>) -> Recovery {
    let users = UserStore::new(dynamodb_client(endpoint), auth.settings.users_table.clone());
    Recovery::new(users, clock, auth.settings.recovery.token_ttl())
}
