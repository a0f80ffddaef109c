//! What the admin service does to accounts, each action an audit event naming the admin's
//! certificate subject. Every action runs detached from its call (`common::detached`): one
//! cancelled between its writes (disabled but sessions not yet ended) would leave exactly the
//! half-done state an admin acts to prevent. Sessions end through the same final path as the
//! user's own LogoutAll, between two bumps of the credentials epoch.

use std::{future::Future, sync::Arc};

use common::{detached, status::Violation};
use uuid::Uuid;

use super::{Admin, page_token::PageTokens};
use crate::{
    accounts::Accounts,
    audit::{Event, Outcome, Record},
    erasure::Target,
    error::AuthError,
    lockout::State,
    users::{EpochOwner, User, UserStore},
    validation,
};

/// Users per ListUsers page when the request leaves it 0.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// The most users per ListUsers page.
pub const MAX_PAGE_SIZE: u32 = 500;

/// A user as an admin names it.
#[derive(Clone, Debug)]
pub enum UserRef {
    /// By user id.
    Id(String),
    /// By username, as typed.
    Name(String),
}

/// One account with what other tables say about it (GetUser).
#[derive(Debug)]
pub struct UserView {
    /// The user item.
    pub user: User,
    /// Its live sessions.
    pub active_sessions: usize,
    /// What counts against its username in the lockout, if anything.
    pub lockout: Option<State>,
}

/// A page of ListUsers.
#[derive(Debug)]
pub struct UserList {
    /// The users.
    pub users: Vec<User>,
    /// The token of the next page; empty when there is none.
    pub next_page_token: String,
}

/// The admin's actions over the accounts.
#[derive(Clone, Debug)]
pub struct Actions {
    accounts: Arc<Accounts>,
    pages: Arc<PageTokens>,
}

impl Actions {
    /// Actions on `accounts`; ListUsers' page tokens sealed by `pages`.
    pub fn new(accounts: Arc<Accounts>, pages: PageTokens) -> Self {
        Self {
            accounts,
            pages: Arc::new(pages),
        }
    }

    /// The account flows, for the actions beside this file (`recovery.rs`).
    pub(super) fn accounts(&self) -> &Arc<Accounts> {
        &self.accounts
    }

    /// The time on the clock the lockout reads.
    pub fn now(&self) -> time::OffsetDateTime {
        self.accounts.clock().now()
    }

    /// One page of users after `page_token`'s position.
    pub async fn list_users(
        &self,
        admin: &Admin,
        page_size: u32,
        page_token: &str,
    ) -> Result<UserList, AuthError> {
        let result = self.page(page_size, page_token).await;
        let outcome = if result.is_ok() {
            Outcome::Succeeded
        } else {
            Outcome::Failed
        };
        audit(admin, Event::AdminListUsers, outcome).log();
        result
    }

    async fn page(&self, page_size: u32, page_token: &str) -> Result<UserList, AuthError> {
        let size = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            1..=MAX_PAGE_SIZE => page_size,
            _ => return Err(invalid("page_size", "must be at most 500")),
        };
        let after = match page_token {
            "" => None,
            token => Some(self.pages.open(token)?),
        };
        let page = self.accounts.users().page(size, after.as_deref()).await?;
        let next = page.resume_after.map(|name| self.pages.seal(&name));
        Ok(UserList {
            users: page.users,
            next_page_token: next.transpose()?.unwrap_or_default(),
        })
    }

    /// The account `who` names, with its sessions and lockout.
    pub async fn get_user(&self, admin: &Admin, who: UserRef) -> Result<UserView, AuthError> {
        let accounts = Arc::clone(&self.accounts);
        self.act(admin, Event::AdminGetUser, who, move |user| async move {
            let active_sessions = accounts.families().list(&user.user_id).await?.len();
            let lockout = accounts.lockout().standing(&user.username).await?;
            Ok(UserView {
                user,
                active_sessions,
                lockout,
            })
        })
        .await
    }

    /// Disables the account and ends its sessions: when it was disabled, and how many
    /// sessions this call ended.
    pub async fn disable(&self, admin: &Admin, who: UserRef) -> Result<(i64, u32), AuthError> {
        let accounts = Arc::clone(&self.accounts);
        self.act(
            admin,
            Event::AdminDisableUser,
            who,
            move |user| async move {
                // Sessions end before the mark and again after it: a process dying after
                // the mark (Refresh does not read the user item) leaves at most the sessions
                // of logins that raced the call, not every session the user had.
                let before = end_sessions(&accounts, &user).await?;
                let now = accounts.clock().now().unix_timestamp();
                let users = accounts.users();
                let at = users.disable(&user.username, &user.user_id, now).await?;
                let at = at.ok_or(AuthError::UserNotFound)?;
                // From the write on no login or credentials; a login that started its session
                // before it re-reads the user and ends that session, or this pass ends it.
                let after = end_sessions(&accounts, &user).await?;
                Ok((at, before + after))
            },
        )
        .await
    }

    /// Lets a disabled account log in again.
    pub async fn enable(&self, admin: &Admin, who: UserRef) -> Result<(), AuthError> {
        let accounts = Arc::clone(&self.accounts);
        self.act(admin, Event::AdminEnableUser, who, move |user| async move {
            let users = accounts.users();
            match users.enable(&user.username, &user.user_id).await? {
                true => Ok(()),
                false => Err(AuthError::UserNotFound),
            }
        })
        .await
    }

    /// Ends every session of the account; how many this call ended.
    pub async fn force_logout(&self, admin: &Admin, who: UserRef) -> Result<u32, AuthError> {
        let accounts = Arc::clone(&self.accounts);
        self.act(
            admin,
            Event::AdminForceLogout,
            who,
            move |user| async move { end_sessions(&accounts, &user).await },
        )
        .await
    }

    /// Clears the lockout of the account's username.
    pub async fn unlock(&self, admin: &Admin, who: UserRef) -> Result<(), AuthError> {
        let accounts = Arc::clone(&self.accounts);
        self.act(admin, Event::AdminUnlockUser, who, move |user| async move {
            accounts.lockout().forget(&user.username).await
        })
        .await
    }

    /// Erases the account like DeleteAccount: unusable and every session ended when this
    /// answers, the erasure carried on in the background.
    pub async fn delete(&self, admin: &Admin, who: UserRef) -> Result<(), AuthError> {
        let accounts = Arc::clone(&self.accounts);
        self.act(admin, Event::AdminDeleteUser, who, move |user| async move {
            let erasure = accounts.erasure();
            let target = Target {
                username: user.username,
                user_id: user.user_id,
            };
            // SessionEnded: the name went to someone else meanwhile.
            let wrote = erasure.request(&target).await.map_err(|error| match error {
                AuthError::SessionEnded => AuthError::UserNotFound,
                other => other,
            })?;
            let ended = erasure.end_sessions(&target).await?;
            tracing::info!(user_id = %target.user_id, wrote, sessions_ended = ended, "account deletion requested by an admin");
            erasure.start(target);
            Ok(())
        })
        .await
    }

    /// Finds `who`, runs `work` on it, and audits the outcome as `event`: all detached from
    /// the call.
    async fn act<T, W, F>(
        &self,
        admin: &Admin,
        event: Event,
        who: UserRef,
        work: W,
    ) -> Result<T, AuthError>
    where
        W: FnOnce(User) -> F + Send + 'static,
        F: Future<Output = Result<T, AuthError>> + Send + 'static,
        T: Send + 'static,
    {
        let (users, admin) = (self.accounts.users().clone(), admin.clone());
        detached::run(async move {
            let user = match resolve(&users, &who).await {
                Ok(user) => user,
                Err(error) => {
                    audit(&admin, event, Outcome::Failed).log();
                    return Err(error);
                }
            };
            let (user_id, username) = (user.user_id.clone(), user.username.clone());
            let result = work(user).await;
            let outcome = if result.is_ok() {
                Outcome::Succeeded
            } else {
                Outcome::Failed
            };
            audit(&admin, event, outcome)
                .user(&user_id)
                .username(&username)
                .log();
            result
        })
        .await
    }
}

/// The account `who` names; NOT_FOUND when there is none, INVALID_ARGUMENT for a malformed id
/// or name.
async fn resolve(users: &UserStore, who: &UserRef) -> Result<User, AuthError> {
    let (username, user_id) = match who {
        UserRef::Name(typed) => {
            let folded = validation::username(typed)
                .map_err(|violation| AuthError::InvalidArgument(vec![violation]))?;
            (folded, None)
        }
        UserRef::Id(id) => {
            let id = Uuid::parse_str(id)
                .map_err(|_| invalid("user_id", "must be a user id (a UUID)"))?
                .to_string();
            let username = users.username_of(&id).await?;
            (username.ok_or(AuthError::UserNotFound)?, Some(id))
        }
    };
    let user = users.find(&username).await?;
    user.filter(|user| user_id.is_none_or(|id| user.user_id == id))
        .ok_or(AuthError::UserNotFound)
}

/// Ends every session of `user` through the final path, between two bumps of its
/// credentials epoch (like LogoutAll); how many this call ended.
async fn end_sessions(accounts: &Accounts, user: &User) -> Result<u32, AuthError> {
    let families = accounts.families();
    let owner = EpochOwner {
        username: Some(&user.username),
        user_id: &user.user_id,
    };
    let ended = families
        .epochs()
        .around(owner, families.end_all(&user.user_id))
        .await?;
    Ok(u32::try_from(ended).unwrap_or(u32::MAX))
}

/// The audit line of an admin's `event`.
fn audit(admin: &Admin, event: Event, outcome: Outcome) -> Record<'_> {
    Record::new(event, outcome, &admin.client).admin(&admin.subject)
}

fn invalid(field: &str, description: &str) -> AuthError {
    AuthError::InvalidArgument(vec![Violation::new(field, description)])
}
