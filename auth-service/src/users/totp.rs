//! A user's TOTP state in the users item. Every change is one conditional update, so replicas
//! racing on one user agree: a code's step is spent by raising `totp_last_step` only if it is
//! still lower, a recovery code by deleting its hash only if it is still there, and both only
//! while the secret they were checked against is still the one in force.
//!
//! | attribute        | type | meaning                                                      |
//! |------------------|------|--------------------------------------------------------------|
//! | `totp_pending`   | S    | sealed secret of an enrolment awaiting confirmation          |
//! | `totp_secret`    | S    | sealed secret in force: present means TOTP is on             |
//! | `totp_last_step` | N    | last 30-second step a code was accepted for                  |
//! | `recovery_codes` | SS   | hashes of the unused recovery codes                          |

use std::collections::HashMap;

use aws_sdk_dynamodb::{
    operation::update_item::builders::UpdateItemFluentBuilder, types::AttributeValue,
};

use super::UserStore;
use crate::error::{AuthError, conditional};

/// The TOTP part of a user item. The secrets stay sealed (`mfa::seal`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredTotp {
    /// The sealed secret of an unconfirmed enrolment.
    pub pending: Option<String>,
    /// The sealed secret in force; `None` when TOTP is off.
    pub active: Option<String>,
    /// The last step a code was accepted for (0 when none was).
    pub last_step: i64,
}

impl StoredTotp {
    /// Read from a user item; `Err` names an attribute of the wrong type.
    pub(super) fn from_item(item: &HashMap<String, AttributeValue>) -> Result<Self, String> {
        let text = |name: &str| match item.get(name) {
            None => Ok(None),
            Some(AttributeValue::S(value)) => Ok(Some(value.clone())),
            Some(_) => Err(format!("{name} is not a string")),
        };
        let last_step = match item.get("totp_last_step") {
            None => 0,
            Some(AttributeValue::N(value)) => value
                .parse()
                .map_err(|_| "totp_last_step is not an integer".to_owned())?,
            Some(_) => return Err("totp_last_step is not a number".to_owned()),
        };
        Ok(Self {
            pending: text("totp_pending")?,
            active: text("totp_secret")?,
            last_step,
        })
    }
}

/// What a code proved, as the store spends it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Proof {
    /// A TOTP code of this step.
    Step(i64),
    /// The recovery code with this stored form (`mfa::recovery`).
    RecoveryCode(String),
}

impl UserStore {
    /// Stores a new pending secret, replacing any earlier one, unless TOTP is on. Returns
    /// whether it was stored.
    pub async fn set_pending_totp(&self, username: &str, sealed: &str) -> Result<bool, AuthError> {
        let result = self
            .update(username)
            .update_expression("SET totp_pending = :pending")
            .condition_expression(
                "attribute_exists(username) AND attribute_not_exists(totp_secret)",
            )
            .expression_attribute_values(":pending", AttributeValue::S(sealed.to_owned()))
            .send()
            .await;
        conditional("store a pending TOTP secret", result)
    }

    /// Turns TOTP on with the pending secret `pending` (only if it is still the pending one
    /// and TOTP is still off), spending `step`, the confirmation code's, and storing the
    /// recovery code hashes. Returns whether it was turned on.
    pub async fn activate_totp(
        &self,
        username: &str,
        pending: &str,
        step: i64,
        recovery_hashes: &[String],
    ) -> Result<bool, AuthError> {
        let result = self
            .update(username)
            .update_expression(
                "SET totp_secret = :pending, totp_last_step = :step, recovery_codes = :codes \
                 REMOVE totp_pending",
            )
            .condition_expression("totp_pending = :pending AND attribute_not_exists(totp_secret)")
            .expression_attribute_values(":pending", AttributeValue::S(pending.to_owned()))
            .expression_attribute_values(":step", AttributeValue::N(step.to_string()))
            .expression_attribute_values(":codes", AttributeValue::Ss(recovery_hashes.to_vec()))
            .send()
            .await;
        conditional("turn TOTP on", result)
    }

    /// Spends `proof` against the secret `active`: true for exactly one of any number of
    /// concurrent callers with the same step or recovery code, false for a replay.
    pub async fn spend_totp_proof(
        &self,
        username: &str,
        active: &str,
        proof: &Proof,
    ) -> Result<bool, AuthError> {
        let update = with_proof(self.update(username), active, proof);
        let update = match proof {
            Proof::Step(_) => update.update_expression("SET totp_last_step = :step"),
            Proof::RecoveryCode(hash) => update
                .update_expression("DELETE recovery_codes :codes")
                .expression_attribute_values(":codes", AttributeValue::Ss(vec![hash.to_owned()])),
        };
        let result = update.send().await;
        conditional("spend a second factor", result)
    }

    /// Turns TOTP off, spending `proof` against the secret `active`; false when the proof was
    /// already spent or the secret changed meanwhile.
    pub async fn remove_totp(
        &self,
        username: &str,
        active: &str,
        proof: &Proof,
    ) -> Result<bool, AuthError> {
        let result = with_proof(self.update(username), active, proof)
            .update_expression("REMOVE totp_secret, totp_last_step, recovery_codes, totp_pending")
            .send()
            .await;
        conditional("turn TOTP off", result)
    }

    fn update(&self, username: &str) -> UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("username", AttributeValue::S(username.to_owned()))
    }
}

/// The condition under which `proof` is still unspent for the secret `active` (and `:step`,
/// which an update may use too).
fn with_proof(
    update: UpdateItemFluentBuilder,
    active: &str,
    proof: &Proof,
) -> UpdateItemFluentBuilder {
    let update =
        update.expression_attribute_values(":active", AttributeValue::S(active.to_owned()));
    match proof {
        Proof::Step(step) => update
            .condition_expression(
                "totp_secret = :active AND \
                 (attribute_not_exists(totp_last_step) OR totp_last_step < :step)",
            )
            .expression_attribute_values(":step", AttributeValue::N(step.to_string())),
        Proof::RecoveryCode(hash) => update
            .condition_expression("totp_secret = :active AND contains(recovery_codes, :code)")
            .expression_attribute_values(":code", AttributeValue::S(hash.to_owned())),
    }
}
