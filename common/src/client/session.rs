//! A logged-in session: its tokens, and the single-flight refresh that keeps the access token
//! fresh for every call sharing it.

use std::{
    fmt,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;
use tonic::{Code, Request, Status, transport::Channel};

use super::layer::BearerLayer;
use crate::{
    clock::{Clock, SystemClock},
    proto::auth::v1::{LoginRequest, RefreshRequest, auth_service_client::AuthServiceClient},
};

/// Refresh once less than this is left (or a tenth of the token's lifetime, if shorter).
const REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// A token this close to its expiry is treated as expired (clock skew, time on the wire).
const EXPIRY_SKEW: Duration = Duration::from_secs(1);
/// After a refresh failed for a reason other than the session ending, background refreshes
/// wait this long before trying again, so an unavailable auth-service is not hammered.
const RETRY_AFTER: Duration = Duration::from_secs(2);
/// Deadline of one Refresh call.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(10);

/// A logged-in session shared by any number of clients and concurrent calls (clone it
/// freely). Holds the access and refresh tokens as secrets; `Debug` prints neither.
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

struct Inner {
    auth: AuthServiceClient<Channel>,
    clock: Arc<dyn Clock>,
    tokens: Mutex<Tokens>,
    /// Held while a Refresh is in flight: one at a time.
    refreshing: tokio::sync::Mutex<()>,
    /// A background refresh has been started and has not finished.
    background: AtomicBool,
    /// Refresh calls sent.
    refreshes: AtomicU64,
}

#[derive(Clone)]
struct Tokens {
    access: SecretString,
    /// When the auth-service says the access token expires.
    expires_at: OffsetDateTime,
    /// The same moment on our clock: receipt plus the lifetime left then.
    local_expiry: OffsetDateTime,
    /// When to start refreshing, on our clock.
    refresh_at: OffsetDateTime,
    refresh: SecretString,
    /// Bumped on every new token pair, so a waiter can tell someone else already refreshed.
    generation: u64,
    /// The auth-service said the session is over (UNAUTHENTICATED on Refresh).
    ended: bool,
    /// No background refresh before this (after a failed one).
    retry_at: OffsetDateTime,
}

impl Session {
    /// Logs in with a username and password (no second factor) on the auth-service at `auth`.
    pub async fn login(
        auth: Channel,
        username: &str,
        password: &SecretString,
    ) -> Result<Self, Status> {
        Self::login_with_clock(auth, username, password, Arc::new(SystemClock)).await
    }

    /// [`Session::login`] reading `clock` to decide when to refresh (tests move a
    /// `ManualClock` instead of waiting for expiry).
    pub async fn login_with_clock(
        auth: Channel,
        username: &str,
        password: &SecretString,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, Status> {
        let mut auth = AuthServiceClient::new(auth);
        let login = auth
            .login(LoginRequest {
                username: username.to_owned(),
                password: password.expose_secret().to_owned(),
                ..Default::default()
            })
            .await?
            .into_inner();
        let now = clock.now();
        let tokens = Tokens::new(
            login.access_token,
            login.access_token_expires_at,
            login.refresh_token,
            now,
            0,
        )?;
        Ok(Self {
            inner: Arc::new(Inner {
                auth,
                clock,
                tokens: Mutex::new(tokens),
                refreshing: tokio::sync::Mutex::new(()),
                background: AtomicBool::new(false),
                refreshes: AtomicU64::new(0),
            }),
        })
    }

    /// A tower layer putting this session's bearer token on every call.
    pub fn layer(&self) -> BearerLayer {
        BearerLayer::new(self.clone())
    }

    /// The access token to send now: the current one while it is fresh (starting a background
    /// refresh once it is due), else a refreshed one. UNAUTHENTICATED once the session ended.
    pub async fn access_token(&self) -> Result<SecretString, Status> {
        let inner = &self.inner;
        let seen = inner.snapshot();
        if seen.ended {
            return Err(ended());
        }
        let now = inner.clock.now();
        if now < seen.refresh_at {
            return Ok(seen.access);
        }
        if now + EXPIRY_SKEW < seen.local_expiry {
            if now >= seen.retry_at {
                self.refresh_in_background(seen.generation);
            }
            return Ok(seen.access);
        }
        match self.refresh_after(seen.generation).await {
            Ok(()) => {
                let fresh = inner.snapshot();
                if fresh.ended {
                    Err(ended())
                } else {
                    Ok(fresh.access)
                }
            }
            Err(status) => Err(status),
        }
    }

    /// Refreshes now unless another refresh replaced the tokens in the meantime.
    pub async fn refresh(&self) -> Result<(), Status> {
        let generation = self.inner.snapshot().generation;
        self.refresh_after(generation).await
    }

    /// How many Refresh calls this session has sent.
    pub fn refreshes(&self) -> u64 {
        self.inner.refreshes.load(Ordering::Relaxed)
    }

    /// When the current access token expires.
    pub fn access_token_expires_at(&self) -> OffsetDateTime {
        self.inner.snapshot().expires_at
    }

    fn refresh_in_background(&self, seen: u64) {
        if self.inner.background.swap(true, Ordering::AcqRel) {
            return;
        }
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move {
            if let Err(status) = inner.refresh_locked(seen).await {
                tracing::warn!(code = ?status.code(), message = status.message(), "background token refresh failed");
            }
            inner.background.store(false, Ordering::Release);
        });
    }

    /// Refreshes in a task of its own, so a caller that gives up cannot lose a rotated
    /// refresh token halfway.
    async fn refresh_after(&self, seen: u64) -> Result<(), Status> {
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move { inner.refresh_locked(seen).await })
            .await
            .map_err(|_| Status::internal("token refresh task failed"))?
    }
}

impl Inner {
    fn snapshot(&self) -> Tokens {
        self.tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn update(&self, change: impl FnOnce(&mut Tokens)) {
        change(&mut self.tokens.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// One Refresh at a time; a waiter whose tokens were replaced while it waited returns.
    async fn refresh_locked(&self, seen: u64) -> Result<(), Status> {
        let _one_at_a_time = self.refreshing.lock().await;
        let current = self.snapshot();
        if current.ended {
            return Err(ended());
        }
        if current.generation != seen {
            return Ok(());
        }
        self.refreshes.fetch_add(1, Ordering::Relaxed);
        let mut request = Request::new(RefreshRequest {
            refresh_token: current.refresh.expose_secret().to_owned(),
        });
        request.set_timeout(REFRESH_TIMEOUT);
        let result = self.auth.clone().refresh(request).await;
        let now = self.clock.now();
        match result {
            Ok(response) => {
                let response = response.into_inner();
                let tokens = Tokens::new(
                    response.access_token,
                    response.access_token_expires_at,
                    response.refresh_token,
                    now,
                    current.generation + 1,
                )?;
                self.update(|stored| *stored = tokens);
                Ok(())
            }
            Err(status) if status.code() == Code::Unauthenticated => {
                self.update(|stored| stored.ended = true);
                Err(Status::unauthenticated(format!(
                    "session ended: {}",
                    status.message()
                )))
            }
            Err(status) => {
                self.update(|stored| stored.retry_at = now + RETRY_AFTER);
                Err(status)
            }
        }
    }
}

impl Tokens {
    fn new(
        access: String,
        expires_at: Option<prost_types::Timestamp>,
        refresh: String,
        now: OffsetDateTime,
        generation: u64,
    ) -> Result<Self, Status> {
        let expires_at = expires_at
            .and_then(|at| {
                OffsetDateTime::from_unix_timestamp(at.seconds)
                    .ok()
                    .map(|t| t + Duration::from_nanos(u64::try_from(at.nanos).unwrap_or(0)))
            })
            .ok_or_else(|| Status::internal("the auth-service sent no access-token expiry"))?;
        // The lifetime left is measured on the wall clock; the deadlines are kept on `now`'s
        // clock, which is the wall clock too unless a test moves a manual one.
        let lifetime = (expires_at - OffsetDateTime::now_utc()).max(time::Duration::ZERO);
        let margin =
            (lifetime / 10_i32).min(time::Duration::try_from(REFRESH_MARGIN).unwrap_or_default());
        Ok(Self {
            access: access.into(),
            expires_at,
            local_expiry: now + lifetime,
            refresh_at: now + lifetime - margin,
            refresh: refresh.into(),
            generation,
            ended: false,
            retry_at: now,
        })
    }
}

fn ended() -> Status {
    Status::unauthenticated("session ended (revoked, logged out or expired): log in again")
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tokens = self.inner.snapshot();
        f.debug_struct("Session")
            .field("access_token", &"[REDACTED]")
            .field("refresh_token", &"[REDACTED]")
            .field("expires_at", &tokens.expires_at)
            .field("generation", &tokens.generation)
            .field("ended", &tokens.ended)
            .finish()
    }
}
