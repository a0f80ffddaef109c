//! The security audit log: one structured line per security event, under its own tracing
//! target (`audit`) so operators can route it apart from the service's other logs. A line names
//! the event, its outcome, and who — user id, username, client address, session — never a
//! password, code, token or secret. A username appears as such only when it is an account's;
//! a name as typed, which may be a password typed into the wrong field, appears only as its
//! keyed hash (`username_hash`, see [`key`]).

mod key;

pub use key::{AuditKey, AuditSettings};

use crate::end_user::ClientInfo;

/// The tracing target of every audit line (`RUST_LOG=audit=info`, or route it by target).
pub const TARGET: &str = "audit";

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A user registered.
    Register,
    /// A login: `Outcome::Succeeded`, `Failed`, or `Refused` (locked, rate limited).
    Login,
    /// A right password without the second factor it needs.
    MfaRequired,
    /// A once-valid refresh token came back: the session was revoked.
    RefreshReuse,
    /// A session was ended with its refresh token.
    Logout,
    /// Every session of a user was ended.
    LogoutAll,
    /// One session was ended by its id (RevokeSession): `Succeeded` by the call that ended it,
    /// `Failed` for a session the caller does not have.
    SessionRevoked,
    /// A TOTP secret was issued (not yet active).
    MfaEnrolled,
    /// TOTP was turned on.
    MfaConfirmed,
    /// TOTP was turned off.
    MfaDisabled,
    /// A recovery code was spent.
    RecoveryCodeUsed,
    /// A password was changed.
    PasswordChanged,
    /// A call was refused by the per-address rate limit.
    RateLimited,
    /// Attempts for a username are being refused until a lock expires.
    Locked,
    /// DeleteAccount: `Succeeded` once the account is marked for deletion (unusable), `Failed`
    /// for a wrong password or code, `Refused` while the name is locked.
    AccountDeletion,
    /// Every session of an account being deleted was ended.
    AccountSessionsEnded,
    /// A pass over an account's items partition deleted everything in it.
    AccountItemsErased,
    /// The last row of an account was deleted: the username is free.
    AccountErased,
    /// An admin listed the users (a page of them).
    AdminListUsers,
    /// An admin read one user.
    AdminGetUser,
    /// An admin disabled a user (and its sessions ended).
    AdminDisableUser,
    /// An admin enabled a user.
    AdminEnableUser,
    /// An admin ended every session of a user.
    AdminForceLogout,
    /// An admin cleared a username's lockout.
    AdminUnlockUser,
    /// An admin asked for a user's erasure.
    AdminDeleteUser,
    /// A recovery token was issued: `Succeeded` when an account took it, `Failed` when the
    /// name is no account's (the caller got a token that never works).
    RecoveryTokenIssued,
    /// ResetPassword: `Succeeded` once the new password is stored, `Failed` for a token that
    /// is not the outstanding one or a wrong second factor, `Refused` while the name is locked.
    PasswordReset,
    /// A ResetPassword with a token issued with `reset_second_factor` turned TOTP off.
    SecondFactorReset,
}

impl Event {
    /// The event's name in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Register => "register",
            Self::Login => "login",
            Self::MfaRequired => "mfa_required",
            Self::RefreshReuse => "refresh_reuse",
            Self::Logout => "logout",
            Self::LogoutAll => "logout_all",
            Self::SessionRevoked => "session_revoked",
            Self::MfaEnrolled => "mfa_enrolled",
            Self::MfaConfirmed => "mfa_confirmed",
            Self::MfaDisabled => "mfa_disabled",
            Self::RecoveryCodeUsed => "recovery_code_used",
            Self::PasswordChanged => "password_changed",
            Self::RateLimited => "rate_limited",
            Self::Locked => "locked",
            Self::AccountDeletion => "account_deletion",
            Self::AccountSessionsEnded => "account_sessions_ended",
            Self::AccountItemsErased => "account_items_erased",
            Self::AccountErased => "account_erased",
            Self::AdminListUsers => "admin_list_users",
            Self::AdminGetUser => "admin_get_user",
            Self::AdminDisableUser => "admin_disable_user",
            Self::AdminEnableUser => "admin_enable_user",
            Self::AdminForceLogout => "admin_force_logout",
            Self::AdminUnlockUser => "admin_unlock_user",
            Self::AdminDeleteUser => "admin_delete_user",
            Self::RecoveryTokenIssued => "recovery_token_issued",
            Self::PasswordReset => "password_reset",
            Self::SecondFactorReset => "second_factor_reset",
        }
    }
}

/// How it ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It was done.
    Succeeded,
    /// The caller's credentials or code were wrong.
    Failed,
    /// It was not attempted: locked out, rate limited, or a factor missing.
    Refused,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Refused => "refused",
        }
    }
}

/// One audit line, built up and then [`Record::log`]ged.
#[derive(Clone, Debug)]
pub struct Record<'a> {
    event: Event,
    outcome: Outcome,
    client: &'a ClientInfo,
    user_id: Option<&'a str>,
    username: Option<&'a str>,
    username_hash: Option<&'a str>,
    session_id: Option<&'a str>,
    admin_subject: Option<&'a str>,
}

impl<'a> Record<'a> {
    /// `event` with `outcome`, caused by `client`.
    pub fn new(event: Event, outcome: Outcome, client: &'a ClientInfo) -> Self {
        Self {
            event,
            outcome,
            client,
            user_id: None,
            username: None,
            username_hash: None,
            session_id: None,
            admin_subject: None,
        }
    }

    /// The user, when known.
    pub fn user(mut self, user_id: &'a str) -> Self {
        self.user_id = Some(user_id);
        self
    }

    /// The username of an account: one that exists (or was just created), folded. Never a
    /// name as typed that may be no account's: that goes in [`Record::username_hash`].
    pub fn username(mut self, username: &'a str) -> Self {
        self.username = Some(username);
        self
    }

    /// The [`AuditKey::username_hash`] of a name as typed, account or not, so every line
    /// about one name correlates.
    pub fn username_hash(mut self, hash: &'a str) -> Self {
        self.username_hash = Some(hash);
        self
    }

    /// The session concerned.
    pub fn session(mut self, session_id: &'a str) -> Self {
        self.session_id = Some(session_id);
        self
    }

    /// The subject of the client certificate an admin call came with (the admin listener's),
    /// logged whole: `admin::Admin` has already bounded it and replaced control characters.
    pub fn admin(mut self, subject: &'a str) -> Self {
        self.admin_subject = Some(subject);
        self
    }

    /// Writes the line. Every text field is bounded like anything a client sent
    /// (`common::telemetry::typed`), whatever the caller passed, but the admin subject, which
    /// our CA signed and `admin::Admin` bounds to 256 characters.
    pub fn log(self) {
        let bounded = |text: Option<&'a str>| text.map(common::telemetry::typed);
        tracing::info!(
            target: TARGET,
            event = self.event.as_str(),
            outcome = self.outcome.as_str(),
            user_id = bounded(self.user_id).as_deref(),
            username = bounded(self.username).as_deref(),
            username_hash = bounded(self.username_hash).as_deref(),
            client_addr = self.client.addr.map(tracing::field::display),
            session_id = bounded(self.session_id).as_deref(),
            admin_subject = self.admin_subject,
            "security event"
        );
    }
}
