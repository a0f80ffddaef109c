//! TransactWriteItems: 1 to 100 ops on distinct keys, each checked like the single-item call it
//! mirrors (its violations named `ops[i].put.…`, `ops[i].update.…`, …), within
//! `MAX_WRITE_BYTES` in all, and an optional client token DynamoDB accepts.

use std::collections::HashMap;

use common::{
    proto::data::v1::{ConditionCheck, TransactWriteItemsRequest, transact_op::Op},
    status::Violation,
};

use super::{
    batch_write::{distinct, prefixed, total_bytes},
    check, put, update,
};
use crate::{
    convert,
    error::DataError,
    store::{MAX_TRANSACT_OPS, Precondition, TransactOp, Transaction},
};

/// DynamoDB's limit on a ClientRequestToken's length.
pub const MAX_CLIENT_TOKEN: usize = 36;

/// Checks TransactWriteItems.
pub fn transact(request: &TransactWriteItemsRequest) -> Result<Transaction, DataError> {
    let count = request.ops.len();
    if count == 0 || count > MAX_TRANSACT_OPS {
        return Err(DataError::invalid(
            "ops",
            format!("name 1 to {MAX_TRANSACT_OPS} ops, got {count}"),
        ));
    }
    let (mut violations, mut seen, mut ops, mut bytes) =
        (Vec::new(), HashMap::new(), Vec::new(), 0);
    for (i, op) in request.ops.iter().enumerate() {
        let Some(op) = &op.op else {
            violations.push(Violation::new(
                format!("ops[{i}]"),
                "set one of put, update, delete and condition_check",
            ));
            continue;
        };
        let (path, key) = match op {
            Op::Put(put) => (format!("ops[{i}].put"), &put.key),
            Op::Update(update) => (format!("ops[{i}].update"), &update.key),
            Op::Delete(delete) => (format!("ops[{i}].delete"), &delete.key),
            Op::ConditionCheck(check) => (format!("ops[{i}].condition_check"), &check.key),
        };
        distinct(&mut seen, key, format!("{path}.key"), &mut violations);
        if let Some(op) = prefixed(&path, checked(op), &mut violations) {
            bytes += size(&op);
            ops.push(op);
        }
    }
    total_bytes("ops", bytes, &mut violations);
    let token = client_token(&request.client_token, &mut violations);
    check(violations)?;
    Ok(Transaction { ops, token })
}

/// One op, checked.
fn checked(op: &Op) -> Result<TransactOp, DataError> {
    match op {
        Op::Put(request) => put(request).map(TransactOp::Put),
        Op::Update(request) => update(request).map(TransactOp::Update),
        Op::Delete(request) => {
            super::key(&request.key)?;
            Ok(TransactOp::Delete {
                key: request.key.clone(),
                expected: request.expected_version,
            })
        }
        Op::ConditionCheck(request) => condition_check(request),
    }
}

/// A condition check: a key, and exactly one of `if_absent` and `expected_version`.
fn condition_check(request: &ConditionCheck) -> Result<TransactOp, DataError> {
    let mut violations = Vec::new();
    violations.extend(convert::validate_key("key", &request.key).err());
    let precondition = match (request.if_absent, request.expected_version) {
        (true, None) => Precondition::IfAbsent,
        (false, Some(version)) => Precondition::Version(version),
        _ => {
            violations.push(Violation::new(
                "if_absent",
                "set exactly one of if_absent and expected_version",
            ));
            Precondition::None
        }
    };
    check(violations)?;
    Ok(TransactOp::Check {
        key: request.key.clone(),
        precondition,
    })
}

/// The bytes an op writes, as DynamoDB counts items.
fn size(op: &TransactOp) -> usize {
    match op {
        TransactOp::Put(put) => convert::item_size(&put.key, &put.attributes),
        TransactOp::Update(update) => [
            &update.set,
            &update.add,
            &update.append,
            &update.delete_from_sets,
        ]
        .into_iter()
        .map(|values| convert::item_size(&update.key, values))
        .sum(),
        TransactOp::Delete { key, .. } | TransactOp::Check { key, .. } => key.len(),
    }
}

/// The client token: none when empty, else 1 to 36 letters, digits, `-` and `_`.
fn client_token(token: &str, violations: &mut Vec<Violation>) -> Option<String> {
    if token.is_empty() {
        return None;
    }
    let charset = (token.bytes()).all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if token.len() > MAX_CLIENT_TOKEN || !charset {
        violations.push(Violation::new(
            "client_token",
            format!(
                "must be 1 to {MAX_CLIENT_TOKEN} letters, digits, '-' and '_' (a UUID fits), \
                 or empty"
            ),
        ));
        return None;
    }
    Some(token.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::proto::data::v1::{DeleteItemRequest, PutItemRequest, TransactOp as Wire};

    fn op(op: Op) -> Wire {
        Wire { op: Some(op) }
    }

    fn fields(error: DataError) -> Vec<String> {
        match error {
            DataError::InvalidArgument(found) => found.into_iter().map(|v| v.field).collect(),
            other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
        }
    }

    #[test]
    fn a_key_twice_an_empty_op_and_a_bad_token_are_each_named() {
        let put = PutItemRequest {
            key: "a".into(),
            ..Default::default()
        };
        let request = TransactWriteItemsRequest {
            ops: vec![
                op(Op::Put(put)),
                Wire { op: None },
                op(Op::Delete(DeleteItemRequest {
                    key: "a".into(),
                    expected_version: None,
                })),
                op(Op::ConditionCheck(ConditionCheck {
                    key: "b".into(),
                    if_absent: true,
                    expected_version: Some(1),
                })),
            ],
            client_token: "not a token!".into(),
        };
        let found = fields(transact(&request).unwrap_err());
        assert_eq!(
            found,
            [
                "ops[1]",
                "ops[2].delete.key",
                "ops[3].condition_check.if_absent",
                "client_token"
            ]
        );
        let mut ok = TransactWriteItemsRequest {
            ops: vec![op(Op::Delete(DeleteItemRequest {
                key: "a".into(),
                expected_version: None,
            }))],
            client_token: "0b7a8c2e-5f6d-4e3b-9a1c-2d4e6f8a0b1c".into(),
        };
        assert!(transact(&ok).is_ok());
        ok.client_token = "x".repeat(37);
        assert_eq!(fields(transact(&ok).unwrap_err()), ["client_token"]);
        ok.ops.clear();
        assert_eq!(fields(transact(&ok).unwrap_err()), ["ops"]);
    }
}
