//! Login: the password (and, when the account has one, the second factor) checked under the
//! username's lockout, then a session started, unless the password changed meanwhile.
//!
//! An honest login below the session cap makes five DynamoDB calls: the lockout's count (one
//! conditional UpdateItem), the user read, the session write, the user item's check and count
//! (`users/logins.rs`, which also tells the cap it need not look: `family/cap.rs`), and the
//! lockout's reset, sent beside the session's writes. Four would need two of them merged, and
//! each is on a different item or must come at a different moment: the count before the
//! password work, the reset only after it succeeded (and the lockout's storage is its own
//! table), the user read before the work, the session written after it, and the check after
//! the session is written (else a password change could miss the session).

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use super::{Accounts, SessionTokens};
use crate::{
    audit::{Event, Outcome, Record},
    end_user::ClientInfo,
    error::AuthError,
    mfa::SecondFactor,
    password::Verified,
    users::User,
    validation,
};

/// A login as the client asked for it.
#[derive(Debug)]
pub struct LoginAttempt {
    /// The username as typed.
    pub username: String,
    /// The password.
    pub password: SecretString,
    /// A TOTP or recovery code, if given.
    pub second_factor: SecondFactor,
    /// Who is asking.
    pub client: ClientInfo,
}

impl Accounts {
    /// Checks credentials and starts a session. Unknown users and wrong passwords cost the
    /// same argon2 work and fail with the same error. The attempt is counted against the
    /// username before any of that work, and only a complete success (password and, when the
    /// account has one, second factor) clears the count.
    pub async fn login(&self, attempt: LoginAttempt) -> Result<SessionTokens, AuthError> {
        let LoginAttempt {
            username: typed,
            password,
            second_factor,
            client,
        } = attempt;
        validation::password_length(password.expose_secret())
            .map_err(|violation| AuthError::InvalidArgument(vec![violation]))?;
        // Counted by what was typed, folded, so unknown and malformed names lock alike.
        let folded = typed.to_lowercase();
        // What was typed may be the password, in the wrong field: the log gets its keyed hash,
        // and the name itself only once it is known to be an account's.
        let hash = self.audit_key.username_hash(&folded);
        let audit = |event, outcome| Record::new(event, outcome, &client).username_hash(&hash);
        let refused = || audit(Event::Login, Outcome::Refused).log();
        let counted = self.count_attempt(&folded, &client, refused).await?;
        let (account, verified) = self.find_and_verify(&typed, &password).await?;
        let Some((user, username)) = account else {
            audit(Event::Login, Outcome::Failed).log();
            return Err(AuthError::InvalidCredentials);
        };
        let audit = |event, outcome| audit(event, outcome).username(&username);
        if !verified.matches {
            audit(Event::Login, Outcome::Failed).log();
            return Err(AuthError::InvalidCredentials);
        }
        if let Err(error) = self.mfa.check(&user, &second_factor, &client).await {
            let event = match error {
                AuthError::MfaRequired => Event::MfaRequired,
                _ => Event::Login,
            };
            audit(event, Outcome::Failed).user(&user.user_id).log();
            return Err(error);
        }
        // A complete success: the count is reset whatever happens to the session, so the
        // reset need not wait for it.
        let start = async {
            if verified.needs_rehash {
                self.rehash(&username, &user.password_hash, password).await;
            }
            self.start_login_session(&user, &username, &client, audit)
                .await
        };
        let ((), started) = tokio::join!(counted.succeeded(), start);
        started
    }

    /// The account `typed` names, if any, and whether `password` is its password. A
    /// malformed username cannot exist: it is verified against the dummy hash like any
    /// unknown user, so both cost the same.
    async fn find_and_verify(
        &self,
        typed: &str,
        password: &SecretString,
    ) -> Result<(Option<(User, String)>, Verified), AuthError> {
        let username = validation::username(typed).ok();
        // An account being deleted or disabled is no account: verified against the dummy
        // hash, like any.
        let user = match &username {
            Some(username) => self.users.find(username).await?.filter(User::usable),
            None => None,
        };
        let stored_hash = user.as_ref().map(|u| u.password_hash.clone());
        let verified = self.hasher.verify(password.clone(), stored_hash).await?;
        Ok((user.zip(username), verified))
    }

    /// Starts the session of a checked login, and keeps it only if the password was not
    /// changed meanwhile (nor the account disabled or marked for deletion); audited with
    /// `audit`.
    async fn start_login_session<'a>(
        &self,
        user: &'a User,
        username: &str,
        client: &ClientInfo,
        audit: impl Fn(Event, Outcome) -> Record<'a>,
    ) -> Result<SessionTokens, AuthError> {
        let tokens = match self.start_session(user, username, client).await {
            Ok(tokens) => tokens,
            Err(error) => {
                if matches!(error, AuthError::InvalidCredentials) {
                    audit(Event::Login, Outcome::Failed)
                        .user(&user.user_id)
                        .log();
                }
                return Err(error);
            }
        };
        audit(Event::Login, Outcome::Succeeded)
            .user(&user.user_id)
            .session(&tokens.session_id)
            .log();
        Ok(tokens)
    }

    /// Stores the password again at the configured cost. Failure only delays the upgrade to
    /// the next login, so it is logged and not returned.
    async fn rehash(&self, username: &str, old_hash: &str, password: SecretString) {
        let outcome = match self.hasher.hash(password).await {
            Ok(new_hash) => self
                .users
                .replace_hash(
                    username,
                    old_hash,
                    &new_hash,
                    self.clock.now().unix_timestamp(),
                )
                .await
                .map(|_| ()),
            Err(error) => Err(error),
        };
        match outcome {
            Ok(()) => tracing::info!("password rehashed at the configured cost"),
            Err(error) => {
                tracing::warn!(%error, "password rehash failed; will retry at next login")
            }
        }
    }

    async fn start_session(
        &self,
        user: &User,
        username: &str,
        client: &ClientInfo,
    ) -> Result<SessionTokens, AuthError> {
        let user_id = &user.user_id;
        let user_uuid = Uuid::parse_str(user_id)
            .with_context(|| format!("stored user id {user_id:?} is not a UUID"))?;
        let check = self.users.login_check(user);
        let issued = self
            .families
            .start(user_uuid, username, client, check)
            .await?;
        self.session_tokens(issued)
    }
}
