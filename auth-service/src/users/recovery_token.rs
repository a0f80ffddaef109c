//! A user's outstanding recovery token (`recovery`), on the user item so that redeeming it
//! and storing the new password are one conditional write: of racing resets exactly one
//! lands, and a reset cut short leaves either both changes or neither. The item is the last
//! row an erasure deletes, so the token goes with the account.
//!
//! | attribute                | type | meaning                                             |
//! |--------------------------|------|-----------------------------------------------------|
//! | `recovery_token_hash`    | S    | SHA-256 of the token's secret (base64url)           |
//! | `recovery_expires_at`    | N    | Unix seconds; the token is refused from then on     |
//! | `recovery_resets_factor` | BOOL | a reset with it turns TOTP off instead of asking it |

use aws_sdk_dynamodb::types::AttributeValue;
use common::dynamo::attrs::{self, Item, Malformed, number, string};

use super::UserStore;
use crate::error::{AuthError, conditional};

const HASH: &str = "recovery_token_hash";
const EXPIRES_AT: &str = "recovery_expires_at";
const RESETS_FACTOR: &str = "recovery_resets_factor";
/// An account that may be used: neither being deleted nor disabled (`User::usable`).
const USABLE: &str = "attribute_exists(user_id) AND attribute_not_exists(deletion_requested_at) \
                      AND attribute_not_exists(disabled_at)";

/// The outstanding recovery token of a user, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRecovery {
    /// The hash of its secret (`recovery::RecoveryToken::stored_hash`).
    pub token_hash: String,
    /// Unix seconds from which it is refused.
    pub expires_at: i64,
    /// Whether a reset with it turns the second factor off.
    pub resets_second_factor: bool,
}

impl StoredRecovery {
    /// Read from a user item; `None` when no token is outstanding.
    pub(super) fn from_item(item: &Item) -> Result<Option<Self>, Malformed> {
        let Some(token_hash) = attrs::get_string(item, HASH)? else {
            return Ok(None);
        };
        let resets_second_factor = match item.get(RESETS_FACTOR) {
            None => false,
            Some(AttributeValue::Bool(value)) => *value,
            Some(_) => return Err(Malformed),
        };
        Ok(Some(Self {
            token_hash: token_hash.to_owned(),
            expires_at: attrs::get_number(item, EXPIRES_AT)?.ok_or(Malformed)?,
            resets_second_factor,
        }))
    }
}

/// What a reset does to the second factor, and so what it requires of it still.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FactorAtReset<'a> {
    /// TOTP was off when read, and must still be: one turned on meanwhile must be proved.
    Off,
    /// TOTP was on and its code was checked against this sealed secret, still in force.
    Proved(&'a str),
    /// The token was issued to turn TOTP off: every TOTP attribute goes.
    TurnedOff,
}

/// One reset, as the store writes it.
#[derive(Clone, Copy, Debug)]
pub struct Redemption<'a> {
    /// The account's folded username.
    pub username: &'a str,
    /// Its user id, which the username must still name.
    pub user_id: &'a str,
    /// The hash of the presented token, which must still be the outstanding one.
    pub token_hash: &'a str,
    /// Unix seconds: the token must expire later.
    pub now: i64,
    /// The new password's argon2id PHC string.
    pub new_hash: &'a str,
    /// The second factor's part.
    pub factor: FactorAtReset<'a>,
}

impl UserStore {
    /// Stores a new recovery token for `username` (replacing any earlier one), unless there is
    /// no such account or it is being deleted or disabled. Returns whether it was stored: one write
    /// either way, so an unknown name costs what a known one does.
    pub async fn set_recovery_token(
        &self,
        username: &str,
        recovery: &StoredRecovery,
    ) -> Result<bool, AuthError> {
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("username", string(username))
            .update_expression("SET #hash = :hash, #expires = :expires, #resets = :resets")
            .condition_expression(USABLE)
            .expression_attribute_names("#hash", HASH)
            .expression_attribute_names("#expires", EXPIRES_AT)
            .expression_attribute_names("#resets", RESETS_FACTOR)
            .expression_attribute_values(":hash", string(&recovery.token_hash))
            .expression_attribute_values(":expires", number(recovery.expires_at))
            .expression_attribute_values(
                ":resets",
                AttributeValue::Bool(recovery.resets_second_factor),
            );
        conditional("store a recovery token", update.send().await)
    }

    /// Spends the recovery token and stores the new password in one conditional write (a new
    /// password: `password_version` counts it). Lands only while the token is the outstanding
    /// one and unexpired, the account is neither being deleted nor disabled, and the second
    /// factor is as the reset found it. Returns whether it landed.
    pub async fn redeem_recovery_token(
        &self,
        redemption: &Redemption<'_>,
    ) -> Result<bool, AuthError> {
        let (factor_condition, totp_removed) = match redemption.factor {
            FactorAtReset::Off => (" AND attribute_not_exists(totp_secret)", ""),
            FactorAtReset::Proved(_) => (" AND totp_secret = :active", ""),
            FactorAtReset::TurnedOff => (
                "",
                ", totp_secret, totp_last_step, recovery_codes, totp_pending",
            ),
        };
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("username", string(redemption.username))
            .update_expression(format!(
                "SET password_hash = :new, updated_at = :now_secs ADD password_version :one \
                 REMOVE #hash, #expires, #resets{totp_removed}"
            ))
            .condition_expression(format!(
                "{USABLE} AND user_id = :user_id AND #hash = :token AND #expires > :now_secs\
                 {factor_condition}"
            ))
            .expression_attribute_names("#hash", HASH)
            .expression_attribute_names("#expires", EXPIRES_AT)
            .expression_attribute_names("#resets", RESETS_FACTOR)
            .expression_attribute_values(":new", string(redemption.new_hash))
            .expression_attribute_values(":now_secs", number(redemption.now))
            .expression_attribute_values(":one", number(1))
            .expression_attribute_values(":user_id", string(redemption.user_id))
            .expression_attribute_values(":token", string(redemption.token_hash));
        if let FactorAtReset::Proved(active) = redemption.factor {
            update = update.expression_attribute_values(":active", string(active));
        }
        conditional("redeem a recovery token", update.send().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_item_without_a_token_has_none_and_a_token_reads_back() {
        assert_eq!(StoredRecovery::from_item(&Item::new()), Ok(None));
        let item = Item::from([
            (HASH.to_owned(), string("h")),
            (EXPIRES_AT.to_owned(), number(42)),
            (RESETS_FACTOR.to_owned(), AttributeValue::Bool(true)),
        ]);
        assert_eq!(
            StoredRecovery::from_item(&item),
            Ok(Some(StoredRecovery {
                token_hash: "h".to_owned(),
                expires_at: 42,
                resets_second_factor: true,
            }))
        );
    }

    #[test]
    fn a_token_without_an_expiry_or_of_the_wrong_type_is_malformed() {
        let no_expiry = Item::from([(HASH.to_owned(), string("h"))]);
        assert_eq!(StoredRecovery::from_item(&no_expiry), Err(Malformed));
        let wrong = Item::from([
            (HASH.to_owned(), string("h")),
            (EXPIRES_AT.to_owned(), number(42)),
            (RESETS_FACTOR.to_owned(), string("yes")),
        ]);
        assert_eq!(StoredRecovery::from_item(&wrong), Err(Malformed));
    }
}
