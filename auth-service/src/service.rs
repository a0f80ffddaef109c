//! The gRPC handlers: translate messages to calls on [`Accounts`] and back, nothing more.

use std::sync::Arc;

use common::{
    proto::{
        auth::v1::{
            GetCredentialsRequest, GetCredentialsResponse, ListSigningKeysRequest,
            ListSigningKeysResponse, LoginRequest, LoginResponse, LogoutAllRequest,
            LogoutAllResponse, LogoutRequest, LogoutResponse, RefreshRequest, RefreshResponse,
            RegisterRequest, RegisterResponse, SigningKey, auth_service_server::AuthService,
        },
        timestamp,
    },
    tokens::{Principal, bearer_token},
};
use secrecy::{ExposeSecret, SecretString};
use tonic::{Request, Response, Status};

use crate::{
    accounts::Accounts, credentials::CredentialVendor, error::AuthError, policy::StsUserId,
};

/// The `dynagate.auth.v1.AuthService` implementation.
#[derive(Clone, Debug)]
pub struct AuthApi {
    accounts: Arc<Accounts>,
    vendor: Option<CredentialVendor>,
}

impl AuthApi {
    /// The API over `accounts`; GetCredentials works only with a `vendor`.
    pub fn new(accounts: Arc<Accounts>, vendor: Option<CredentialVendor>) -> Self {
        Self { accounts, vendor }
    }

    /// The caller, from the bearer access token; recorded on the request span.
    fn principal<T>(&self, request: &Request<T>) -> Result<Principal, AuthError> {
        let token = bearer_token(request.metadata())?;
        let principal = self.accounts.authenticate(token)?;
        record_user(&principal.user_id);
        Ok(principal)
    }
}

fn record_user(user_id: &str) {
    tracing::Span::current().record("user_id", user_id);
}

#[tonic::async_trait]
impl AuthService for AuthApi {
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let RegisterRequest { username, password } = request.into_inner();
        let user_id = self
            .accounts
            .register(&username, SecretString::from(password))
            .await?;
        record_user(&user_id);
        Ok(Response::new(RegisterResponse { user_id }))
    }

    async fn login(
        &self,
        request: Request<LoginRequest>,
    ) -> Result<Response<LoginResponse>, Status> {
        let LoginRequest { username, password } = request.into_inner();
        let tokens = self
            .accounts
            .login(&username, SecretString::from(password))
            .await?;
        record_user(&tokens.user_id);
        Ok(Response::new(LoginResponse {
            access_token: tokens.access.token.expose_secret().to_owned(),
            access_token_expires_at: Some(timestamp(tokens.access.expires_at)),
            refresh_token: tokens.refresh_token.expose_secret().to_owned(),
            refresh_token_expires_at: Some(timestamp(tokens.refresh_expires_at)),
            user_id: tokens.user_id,
        }))
    }

    async fn refresh(
        &self,
        request: Request<RefreshRequest>,
    ) -> Result<Response<RefreshResponse>, Status> {
        let tokens = self
            .accounts
            .refresh(&request.into_inner().refresh_token)
            .await?;
        record_user(&tokens.user_id);
        Ok(Response::new(RefreshResponse {
            access_token: tokens.access.token.expose_secret().to_owned(),
            access_token_expires_at: Some(timestamp(tokens.access.expires_at)),
            refresh_token: tokens.refresh_token.expose_secret().to_owned(),
            refresh_token_expires_at: Some(timestamp(tokens.refresh_expires_at)),
        }))
    }

    async fn logout(
        &self,
        request: Request<LogoutRequest>,
    ) -> Result<Response<LogoutResponse>, Status> {
        self.accounts
            .logout(&request.into_inner().refresh_token)
            .await?;
        Ok(Response::new(LogoutResponse {}))
    }

    async fn logout_all(
        &self,
        request: Request<LogoutAllRequest>,
    ) -> Result<Response<LogoutAllResponse>, Status> {
        let principal = self.principal(&request)?;
        let sessions_revoked = self.accounts.logout_all(&principal).await?;
        Ok(Response::new(LogoutAllResponse { sessions_revoked }))
    }

    async fn list_signing_keys(
        &self,
        _request: Request<ListSigningKeysRequest>,
    ) -> Result<Response<ListSigningKeysResponse>, Status> {
        let ring = self.accounts.tokens().ring();
        let active = &ring.active().kid;
        let keys = ring
            .keys()
            .iter()
            .map(|key| SigningKey {
                kid: key.kid.clone(),
                public_key: key.public_paserk.clone(),
                active: &key.kid == active,
            })
            .collect();
        Ok(Response::new(ListSigningKeysResponse { keys }))
    }

    async fn get_credentials(
        &self,
        request: Request<GetCredentialsRequest>,
    ) -> Result<Response<GetCredentialsResponse>, Status> {
        let vendor = self.vendor.as_ref().ok_or(AuthError::CredentialsDisabled)?;
        let principal = self.principal(&request)?;
        // Our own tokens always carry STS-safe ids; anything else is refused, not passed on.
        let user = StsUserId::new(&principal.user_id).ok_or(AuthError::SessionEnded)?;
        self.accounts.ensure_session_active(&principal).await?;
        let credentials = vendor.credentials_for(&user).await?;
        let table = &vendor.config().table;
        Ok(Response::new(GetCredentialsResponse {
            access_key_id: credentials.access_key_id.clone(),
            secret_access_key: credentials.secret_access_key.expose_secret().to_owned(),
            session_token: credentials.session_token.expose_secret().to_owned(),
            expiration: Some(timestamp(credentials.expiration)),
            region: table.region().to_owned(),
            table_name: table.table_name().to_owned(),
            partition_key: principal.user_id,
        }))
    }
}
