//! A login's last write: one conditional UpdateItem on the user item, sent once the login's
//! session is written, that both checks the account is still the one whose password was
//! verified and counts the login, and so tells the session cap whether it must look.
//!
//! | attribute    | type | meaning                                                          |
//! |--------------|------|------------------------------------------------------------------|
//! | `logins`     | N    | logins confirmed so far (absent: 0)                              |
//! | `cap_live`   | N    | live sessions the last recorded cap Query left                   |
//! | `cap_logins` | N    | the `logins` that Query's own login was counted as               |
//!
//! The check is the condition of the write: the same `user_id`, the same `password_version`
//! as the login read before verifying, no deletion record, not disabled. A ChangePassword or
//! ResetPassword stores its hash (counting `password_version`) and then ends the sessions it
//! lists; a login that verified the old password and wrote its session after that listing
//! fails this condition, because its write comes after the change's, and its session is
//! ended. No other writer of the user item conditions on these three attributes, so counting
//! logins breaks none of them. How the cap uses the count is in `family/cap.rs`.

use aws_sdk_dynamodb::types::ReturnValue;
use common::dynamo::attrs::{self, Item, number, string};

use super::{User, UserStore};
use crate::error::{AuthError, conditional};

const LOGINS: &str = "logins";
const CAP_LIVE: &str = "cap_live";
const CAP_LOGINS: &str = "cap_logins";

/// What a login checks once its session is written, and against which user item.
#[derive(Clone, Debug)]
pub struct LoginCheck {
    users: UserStore,
    username: String,
    user_id: String,
    password_version: u64,
}

/// A confirmed login: its number and the cap's last record, as the write left the item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Confirmed {
    /// `logins` after this login's increment: the login's number.
    pub logins: u64,
    /// The last recorded cap Query, if any (absent, or unreadable: none).
    pub record: Option<CapRecord>,
}

/// What a cap Query left, and the number of the login that ran it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CapRecord {
    /// Live sessions after its revocations.
    pub live: u64,
    /// The number of its login.
    pub logins: u64,
}

impl Confirmed {
    /// An upper bound on the user's live sessions among those whose login was counted up to
    /// this one: the record's, plus one for each login counted since. `None` without a
    /// usable record.
    pub fn live_bound(&self) -> Option<u64> {
        let record = self.record?;
        let since = self.logins.checked_sub(record.logins)?;
        record.live.checked_add(since)
    }

    fn from_item(item: &Item) -> Result<Self, AuthError> {
        let logins = attrs::get_number(item, LOGINS)
            .ok()
            .flatten()
            .ok_or_else(|| AuthError::Internal(anyhow::anyhow!("user item: bad {LOGINS}")))?;
        // A record that does not read is no record: the cap then looks for itself.
        let read = |name: &str| attrs::get_number::<u64>(item, name).ok().flatten();
        let record = read(CAP_LIVE)
            .zip(read(CAP_LOGINS))
            .map(|(live, logins)| CapRecord { live, logins });
        Ok(Self { logins, record })
    }
}

impl UserStore {
    /// The check of a login that verified `user`'s password as read.
    pub fn login_check(&self, user: &User) -> LoginCheck {
        LoginCheck {
            users: self.clone(),
            username: user.username.clone(),
            user_id: user.user_id.clone(),
            password_version: user.password_version,
        }
    }
}

impl LoginCheck {
    /// The user the login is for.
    pub fn user_id(&self) -> &str {
        &self.user_id
    }

    /// Counts the login if the account is as its check expects; `None` when it is not (the
    /// password changed, the account was disabled, is being deleted or is gone).
    pub async fn confirm(&self) -> Result<Option<Confirmed>, AuthError> {
        // `password_version` is absent until the first change.
        let version = if self.password_version == 0 {
            "(attribute_not_exists(password_version) OR password_version = :version)"
        } else {
            "password_version = :version"
        };
        let result = self
            .users
            .client
            .update_item()
            .table_name(&self.users.table)
            .key("username", string(&self.username))
            .update_expression("ADD #logins :one")
            .condition_expression(format!(
                "user_id = :user_id AND attribute_not_exists(deletion_requested_at) \
                 AND attribute_not_exists(disabled_at) AND {version}"
            ))
            .expression_attribute_names("#logins", LOGINS)
            .expression_attribute_values(":one", number(1))
            .expression_attribute_values(":user_id", string(&self.user_id))
            .expression_attribute_values(":version", number(self.password_version))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(output) => Confirmed::from_item(&output.attributes.unwrap_or_default()).map(Some),
            Err(error) if common::aws::condition_failed(&error) => Ok(None),
            Err(error) => Err(AuthError::aws("confirm a login", error)),
        }
    }

    /// Records that the cap Query of login number `logins` left `live` live sessions, unless
    /// a later login's Query is recorded already. Returns whether it was recorded.
    pub async fn record_cap(&self, live: u64, logins: u64) -> Result<bool, AuthError> {
        let update = self
            .users
            .client
            .update_item()
            .table_name(&self.users.table)
            .key("username", string(&self.username))
            .update_expression("SET #live = :live, #at = :logins")
            // Never on another user's item (a name erased and taken again), nor creating one.
            .condition_expression(
                "user_id = :user_id AND (attribute_not_exists(#at) OR #at < :logins)",
            )
            .expression_attribute_names("#live", CAP_LIVE)
            .expression_attribute_names("#at", CAP_LOGINS)
            .expression_attribute_values(":live", number(live))
            .expression_attribute_values(":logins", number(logins))
            .expression_attribute_values(":user_id", string(&self.user_id));
        conditional("record the session cap", update.send().await)
    }
}

/// The attributes a new user starts with: no logins yet, so no live session.
pub(super) fn fresh() -> [(&'static str, aws_sdk_dynamodb::types::AttributeValue); 2] {
    [(CAP_LIVE, number(0)), (CAP_LOGINS, number(0))]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn confirmed(item: &[(&str, &str)]) -> Confirmed {
        let item: Item = item
            .iter()
            .map(|(name, value)| ((*name).to_owned(), number(value)))
            .collect();
        Confirmed::from_item(&item).unwrap()
    }

    #[test]
    fn the_bound_is_the_record_plus_the_logins_since() {
        let login = confirmed(&[(LOGINS, "12"), (CAP_LIVE, "3"), (CAP_LOGINS, "10")]);
        assert_eq!(login.live_bound(), Some(5));
        let fresh = confirmed(&[(LOGINS, "1"), (CAP_LIVE, "0"), (CAP_LOGINS, "0")]);
        assert_eq!(fresh.live_bound(), Some(1));
    }

    #[test]
    fn no_record_or_one_from_the_future_gives_no_bound() {
        assert_eq!(confirmed(&[(LOGINS, "4")]).live_bound(), None);
        assert_eq!(
            confirmed(&[(LOGINS, "4"), (CAP_LIVE, "1")]).live_bound(),
            None
        );
        let ahead = confirmed(&[(LOGINS, "4"), (CAP_LIVE, "1"), (CAP_LOGINS, "9")]);
        assert_eq!(ahead.live_bound(), None);
        let negative = confirmed(&[(LOGINS, "4"), (CAP_LIVE, "-1"), (CAP_LOGINS, "2")]);
        assert_eq!(negative.live_bound(), None);
    }

    #[test]
    fn an_item_without_its_count_is_an_error() {
        assert!(Confirmed::from_item(&Item::new()).is_err());
    }
}
