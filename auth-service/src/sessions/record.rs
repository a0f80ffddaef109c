//! The session record: what one item of the sessions table says, and the rotation that
//! changes it.

use aws_sdk_dynamodb::types::AttributeValue;
use common::dynamo::attrs::{self, Item};
use time::OffsetDateTime;

use crate::{
    error::AuthError,
    refresh_token::{RotationNonce, SecretHash},
};

/// Retired secret hashes kept per session: reuse of a token up to this many rotations older
/// than the previous one is recognised (and ends the session); older ones are merely unknown.
pub const RETIRED_KEPT: usize = 32;

/// Why a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevokeReason {
    /// The user logged out of this session.
    Logout,
    /// The user logged out of every session.
    LogoutAll,
    /// A rotated refresh token was presented again: the family may be stolen.
    ReuseDetected,
    /// A newer login pushed the user past the per-user session cap.
    SessionLimit,
    /// The user changed the password from another session.
    PasswordChanged,
    /// The user ended this session by its id (RevokeSession), from it or from another one.
    RevokeSession,
}

impl RevokeReason {
    const ALL: [Self; 6] = [
        Self::Logout,
        Self::LogoutAll,
        Self::ReuseDetected,
        Self::SessionLimit,
        Self::PasswordChanged,
        Self::RevokeSession,
    ];

    /// The reason as stored (`revoked_reason`, and the revocation record's `reason`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Logout => "logout",
            Self::LogoutAll => "logout_all",
            Self::ReuseDetected => "reuse_detected",
            Self::SessionLimit => "session_limit",
            Self::PasswordChanged => "password_changed",
            Self::RevokeSession => "revoke_session",
        }
    }

    /// The reason stored as `text`; `None` for anything else (a newer version's reason).
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|reason| reason.as_str() == text)
    }
}

/// What the store knows about a session.
#[derive(Clone, Debug)]
pub struct Session {
    /// SHA-256 of the current refresh token's secret.
    pub token_hash: SecretHash,
    /// SHA-256 of the secret rotated out last.
    pub previous_hash: Option<SecretHash>,
    /// SHA-256 of secrets rotated out (the ring `r0` … `r32`, which holds the previous one
    /// too, and an earlier release's list `retired`), in no order.
    pub retired: Vec<SecretHash>,
    /// The last rotation's nonce: derives the current secret from the previous one.
    pub nonce: Option<RotationNonce>,
    /// Rotations so far.
    pub generation: u64,
    /// Unix milliseconds of the last rotation.
    pub rotated_at_ms: i64,
    /// Unix seconds after which the current refresh token is dead.
    pub expires_at: i64,
    /// The session has been ended.
    pub revoked: bool,
    /// The (folded) username the session was started for; absent on sessions started before
    /// it was recorded.
    pub username: Option<String>,
}

impl Session {
    /// True while the session may be refreshed or used.
    pub fn is_active(&self, now: OffsetDateTime) -> bool {
        !self.revoked && now.unix_timestamp() < self.expires_at
    }
}

/// Slots of the ring of rotated-out hashes: the previous one and [`RETIRED_KEPT`] before it.
pub const RING_SLOTS: u64 = RETIRED_KEPT as u64 + 1;

/// The attribute holding the hash of the secret of `generation` once it is rotated out:
/// `r0` … `r32`, the ring's slot `generation mod 33`.
pub(super) fn ring_slot(generation: u64) -> String {
    format!("r{}", generation % RING_SLOTS)
}

/// The ring slot an attribute name is, if it is one.
fn is_ring_slot(name: &str) -> bool {
    name.strip_prefix('r')
        .and_then(|slot| slot.parse::<u64>().ok())
        .is_some_and(|slot| slot < RING_SLOTS && name == ring_slot(slot))
}

/// One rotation of a session: the secret of generation `from_generation` (its hash
/// `from_hash`) gives way to the next one (`to_hash`), written only if the session is still
/// exactly there, not ended and not expired at `at_ms`. It needs no read of the session: the
/// presented token carries everything (see `refresh_token`).
#[derive(Clone, Debug)]
pub struct Rotation {
    /// The presented secret's hash: the current one, if the token is.
    pub from_hash: SecretHash,
    /// The generation the presented token carries.
    pub from_generation: u64,
    /// The successor's hash.
    pub to_hash: SecretHash,
    /// The nonce the successor was derived with.
    pub nonce: RotationNonce,
    /// Unix milliseconds of the rotation.
    pub at_ms: i64,
    /// Unix seconds after which the successor is dead.
    pub expires_at: i64,
}

/// A session that is neither revoked nor expired, as the session cap sees it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct LiveSession {
    /// Unix milliseconds; first, so that sessions order by age.
    pub created_at_ms: i64,
    /// The session id, breaking ties.
    pub session_id: String,
}

/// A live session as ListSessions shows it. Orders by age, like [`LiveSession`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ListedSession {
    /// Unix milliseconds of the login; first, so that sessions order by age.
    pub created_at_ms: i64,
    /// The session id, breaking ties.
    pub session_id: String,
    /// Rotations so far: 0 if the refresh token was never used.
    pub generation: u64,
    /// Unix milliseconds of the last rotation.
    pub rotated_at_ms: i64,
    /// Unix seconds after which the current refresh token is dead.
    pub expires_at: i64,
    /// The end user's address at login; empty for sessions started before it was recorded.
    pub client_addr: String,
    /// The login's user agent; empty if it sent none or started before it was recorded.
    pub user_agent: String,
}

/// The attributes [`parse_listed`] reads, for a query's projection.
pub(super) const LISTED_ATTRIBUTES: &str =
    "session_id, created_at, generation, rotated_at, expires_at, client_addr, user_agent";

/// Reads a session for ListSessions.
pub(super) fn parse_listed(item: &Item) -> Result<ListedSession, AuthError> {
    let text = |name: &str| {
        let text = attrs::get_string(item, name).map_err(|_| malformed(name))?;
        Ok::<_, AuthError>(text.unwrap_or_default().to_owned())
    };
    let session_id = text("session_id")?;
    if session_id.is_empty() {
        return Err(malformed("session_id"));
    }
    Ok(ListedSession {
        created_at_ms: integer(item, "created_at")?.unwrap_or(0),
        session_id,
        generation: integer(item, "generation")?.ok_or_else(|| malformed("generation"))?,
        rotated_at_ms: integer(item, "rotated_at")?.unwrap_or(0),
        expires_at: integer(item, "expires_at")?.ok_or_else(|| malformed("expires_at"))?,
        client_addr: text("client_addr")?,
        user_agent: text("user_agent")?,
    })
}

pub(super) fn malformed(attribute: &str) -> AuthError {
    AuthError::Internal(anyhow::anyhow!(
        "session item has a missing or malformed {attribute}"
    ))
}

/// The number `name` of a session item, if it has one.
pub(super) fn integer<T: std::str::FromStr>(
    item: &Item,
    name: &str,
) -> Result<Option<T>, AuthError> {
    attrs::get_number(item, name).map_err(|_| malformed(name))
}

fn hash_of(value: &AttributeValue, name: &str) -> Result<SecretHash, AuthError> {
    match value {
        AttributeValue::B(blob) => blob.as_ref().try_into().map_err(|_| malformed(name)),
        _ => Err(malformed(name)),
    }
}

/// Reads a stored session. Attributes a session gains only at its first rotation
/// (`previous_hash`, `nonce`, `retired`) may be absent; anything present must be well-formed.
pub(super) fn parse_session(item: &Item) -> Result<Session, AuthError> {
    let required = |name: &str| item.get(name).ok_or_else(|| malformed(name));
    let optional_hash = |name: &str| item.get(name).map(|v| hash_of(v, name)).transpose();
    // Sessions rotated by earlier releases keep their older hashes in the list `retired`.
    let mut retired: Vec<SecretHash> = match item.get("retired") {
        None => Vec::new(),
        Some(AttributeValue::L(list)) => list
            .iter()
            .map(|value| hash_of(value, "retired"))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(malformed("retired")),
    };
    for (name, value) in item.iter().filter(|(name, _)| is_ring_slot(name)) {
        retired.push(hash_of(value, name)?);
    }
    let nonce = match item.get("nonce") {
        None => None,
        Some(AttributeValue::B(blob)) => {
            Some(RotationNonce::from_slice(blob.as_ref()).ok_or_else(|| malformed("nonce"))?)
        }
        Some(_) => return Err(malformed("nonce")),
    };
    Ok(Session {
        token_hash: hash_of(required("token_hash")?, "token_hash")?,
        previous_hash: optional_hash("previous_hash")?,
        retired,
        nonce,
        generation: integer(item, "generation")?.ok_or_else(|| malformed("generation"))?,
        rotated_at_ms: integer(item, "rotated_at")?.unwrap_or(0),
        expires_at: integer(item, "expires_at")?.ok_or_else(|| malformed("expires_at"))?,
        revoked: item.contains_key("revoked_at"),
        username: attrs::get_string(item, "username")
            .map_err(|_| malformed("username"))?
            .map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use common::dynamo::attrs::{blob, number};

    use super::*;

    #[test]
    fn reasons_read_back_as_stored() {
        for reason in RevokeReason::ALL {
            assert_eq!(RevokeReason::parse(reason.as_str()), Some(reason));
        }
        assert_eq!(RevokeReason::parse("a reason from the future"), None);
    }

    #[test]
    fn ring_slots_are_r0_to_r32() {
        assert_eq!(ring_slot(0), "r0");
        assert_eq!(ring_slot(32), "r32");
        assert_eq!(ring_slot(33), "r0");
        assert_eq!(ring_slot(u64::MAX), format!("r{}", u64::MAX % 33));
        for name in ["r0", "r7", "r32"] {
            assert!(is_ring_slot(name), "{name}");
        }
        for name in ["r33", "r07", "r", "rotated_at", "retired", "r-1", "r+1"] {
            assert!(!is_ring_slot(name), "{name}");
        }
    }

    #[test]
    fn stored_sessions_parse_and_malformed_ones_are_refused() {
        let mut item = HashMap::from([
            ("token_hash".to_owned(), blob(&[7; 32])),
            ("previous_hash".to_owned(), blob(&[6; 32])),
            (
                "retired".to_owned(),
                AttributeValue::L(vec![blob(&[5; 32])]),
            ),
            ("nonce".to_owned(), blob(&[9; 32])),
            ("generation".to_owned(), number(2)),
            ("rotated_at".to_owned(), number(1_700_000_000_123_i64)),
            ("expires_at".to_owned(), number(1_700_000_000)),
        ]);
        item.insert("r3".to_owned(), blob(&[4; 32]));
        let parsed = parse_session(&item).unwrap();
        assert_eq!(parsed.previous_hash, Some([6; 32]));
        assert_eq!(
            parsed.retired,
            vec![[5; 32], [4; 32]],
            "the list, then the ring"
        );
        assert_eq!(parsed.generation, 2);
        assert_eq!(parsed.rotated_at_ms, 1_700_000_000_123);
        assert!(!parsed.revoked);

        item.insert("r4".to_owned(), blob(&[4; 31]));
        assert!(parse_session(&item).is_err(), "ring hashes are 32 bytes");
        item.remove("r4");
        item.insert("previous_hash".to_owned(), blob(&[6; 31]));
        assert!(parse_session(&item).is_err(), "hashes are 32 bytes");
        item.remove("previous_hash");
        item.insert("generation".to_owned(), AttributeValue::S("2".into()));
        assert!(parse_session(&item).is_err(), "numbers are numbers");
    }
}
