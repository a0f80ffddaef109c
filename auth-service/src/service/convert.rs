//! Messages built from what the accounts return (tokens, sessions, signing keys), and the
//! requests the accounts take built from messages.

use common::proto::{
    auth::v1::{DeleteAccountRequest, LoginResponse, RefreshResponse, Session, SigningKey},
    timestamp,
};
use secrecy::{ExposeSecret, SecretString};

use crate::{
    accounts::{AccountDeletion, SessionTokens},
    end_user::ClientInfo,
    mfa::SecondFactor,
    sessions::ListedSession,
    tokens::TokenIssuer,
};

/// A DeleteAccount as the accounts take it.
pub(super) fn account_deletion(
    request: DeleteAccountRequest,
    client: ClientInfo,
) -> AccountDeletion {
    let DeleteAccountRequest {
        password,
        totp_code,
        recovery_code,
    } = request;
    AccountDeletion {
        password: SecretString::from(password),
        second_factor: SecondFactor::new(totp_code, recovery_code),
        client,
    }
}

/// A successful Login's answer.
pub(super) fn login_response(tokens: SessionTokens) -> LoginResponse {
    LoginResponse {
        access_token: tokens.access.token.expose_secret().to_owned(),
        access_token_expires_at: Some(timestamp(tokens.access.expires_at)),
        refresh_token: tokens.refresh_token.expose_secret().to_owned(),
        refresh_token_expires_at: Some(timestamp(tokens.refresh_expires_at)),
        user_id: tokens.user_id,
    }
}

/// A successful Refresh's answer.
pub(super) fn refresh_response(tokens: SessionTokens) -> RefreshResponse {
    RefreshResponse {
        access_token: tokens.access.token.expose_secret().to_owned(),
        access_token_expires_at: Some(timestamp(tokens.access.expires_at)),
        refresh_token: tokens.refresh_token.expose_secret().to_owned(),
        refresh_token_expires_at: Some(timestamp(tokens.refresh_expires_at)),
    }
}

/// The published signing keys, the one signing now marked active.
pub(super) fn signing_keys(tokens: &TokenIssuer) -> Vec<SigningKey> {
    let ring = tokens.ring();
    let active = &tokens.signer(&ring).kid;
    ring.keys()
        .iter()
        .map(|key| SigningKey {
            kid: key.kid.clone(),
            public_key: key.public_paserk.clone(),
            active: &key.kid == active,
        })
        .collect()
}

/// A live session as ListSessions reports it; `current` names the caller's own.
pub(super) fn listed(session: ListedSession, current: &str) -> Session {
    let at_millis = |millis| common::clock::from_unix_millis(millis).map(timestamp);
    Session {
        created_at: at_millis(session.created_at_ms),
        // Rotation 0 is the login itself: never refreshed.
        last_refreshed_at: (session.generation > 0)
            .then(|| at_millis(session.rotated_at_ms))
            .flatten(),
        expires_at: time::OffsetDateTime::from_unix_timestamp(session.expires_at)
            .ok()
            .map(timestamp),
        current: session.session_id == current,
        session_id: session.session_id,
        client_addr: session.client_addr,
        user_agent: session.user_agent,
    }
}
