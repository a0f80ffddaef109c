//! The gRPC handlers: translate messages to calls on [`Accounts`] and back, nothing more.

use std::sync::Arc;

use common::proto::auth::v1::{
    ChangePasswordRequest, ChangePasswordResponse, ConfirmTotpRequest, ConfirmTotpResponse,
    DeleteAccountRequest, DeleteAccountResponse, DisableTotpRequest, DisableTotpResponse,
    EnrollTotpRequest, EnrollTotpResponse, GetCredentialsRequest, GetCredentialsResponse,
    ListSessionsRequest, ListSessionsResponse, ListSigningKeysRequest, ListSigningKeysResponse,
    LoginRequest, LoginResponse, LogoutAllRequest, LogoutAllResponse, LogoutRequest,
    LogoutResponse, RefreshRequest, RefreshResponse, RegisterRequest, RegisterResponse,
    ResetPasswordRequest, ResetPasswordResponse, RevokeSessionRequest, RevokeSessionResponse,
    WatchRevocationsRequest, WatchRevocationsResponse, auth_service_server::AuthService,
};
use secrecy::{ExposeSecret, SecretString};
use tonic::{Request, Response, Status};

mod caller;
mod convert;
mod credentials;
mod recovery;
use caller::record_user;

use crate::{
    accounts::{Accounts, LoginAttempt, PasswordChange},
    credentials::CredentialVendor,
    end_user::TrustedProxies,
    mfa::SecondFactor,
    throttle::AddressLimiter,
};

/// The `dynagate.auth.v1.AuthService` implementation.
#[derive(Clone, Debug)]
pub struct AuthApi {
    accounts: Arc<Accounts>,
    vendor: Option<CredentialVendor>,
    trusted_proxies: TrustedProxies,
    limiter: AddressLimiter,
}

impl AuthApi {
    /// The API over `accounts`; GetCredentials works only with a `vendor`. Login and Register
    /// are throttled per end-user address by `limiter`, and so are Refresh and Logout calls
    /// that fail; the address is taken from `x-forwarded-for` only when the peer is one of the
    /// `trusted_proxies`.
    pub fn new(
        accounts: Arc<Accounts>,
        vendor: Option<CredentialVendor>,
        trusted_proxies: TrustedProxies,
        limiter: AddressLimiter,
    ) -> Self {
        Self {
            accounts,
            vendor,
            trusted_proxies,
            limiter,
        }
    }
}

#[tonic::async_trait]
impl AuthService for AuthApi {
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let client = self.admit(&request)?;
        let RegisterRequest { username, password } = request.into_inner();
        let user_id = self
            .accounts
            .register(&username, SecretString::from(password), &client)
            .await?;
        record_user(&user_id);
        Ok(Response::new(RegisterResponse { user_id }))
    }

    async fn login(
        &self,
        request: Request<LoginRequest>,
    ) -> Result<Response<LoginResponse>, Status> {
        let client = self.admit(&request)?;
        let LoginRequest {
            username,
            password,
            totp_code,
            recovery_code,
        } = request.into_inner();
        let tokens = self
            .accounts
            .login(LoginAttempt {
                username,
                password: SecretString::from(password),
                second_factor: SecondFactor::new(totp_code, recovery_code),
                client,
            })
            .await?;
        record_user(&tokens.user_id);
        Ok(Response::new(convert::login_response(tokens)))
    }

    async fn refresh(
        &self,
        request: Request<RefreshRequest>,
    ) -> Result<Response<RefreshResponse>, Status> {
        let client = self.client(&request);
        let charge = self.limiter.check_failures(&client)?;
        let refreshed = self
            .accounts
            .refresh(&request.into_inner().refresh_token, &client)
            .await;
        charge.settle(&refreshed);
        let tokens = refreshed?;
        record_user(&tokens.user_id);
        Ok(Response::new(convert::refresh_response(tokens)))
    }

    async fn logout(
        &self,
        request: Request<LogoutRequest>,
    ) -> Result<Response<LogoutResponse>, Status> {
        let client = self.client(&request);
        let charge = self.limiter.check_failures(&client)?;
        let ended = self
            .accounts
            .logout(&request.into_inner().refresh_token, &client)
            .await;
        charge.settle(&ended);
        ended?;
        Ok(Response::new(LogoutResponse {}))
    }

    async fn logout_all(
        &self,
        request: Request<LogoutAllRequest>,
    ) -> Result<Response<LogoutAllResponse>, Status> {
        let (caller, client) = self.caller(&request).await?;
        let sessions_revoked = self.accounts.logout_all(&caller, &client).await?;
        Ok(Response::new(LogoutAllResponse { sessions_revoked }))
    }

    async fn list_signing_keys(
        &self,
        _request: Request<ListSigningKeysRequest>,
    ) -> Result<Response<ListSigningKeysResponse>, Status> {
        let keys = convert::signing_keys(self.accounts.tokens());
        Ok(Response::new(ListSigningKeysResponse { keys }))
    }

    async fn get_credentials(
        &self,
        request: Request<GetCredentialsRequest>,
    ) -> Result<Response<GetCredentialsResponse>, Status> {
        Ok(Response::new(self.credentials(request).await?))
    }

    async fn change_password(
        &self,
        request: Request<ChangePasswordRequest>,
    ) -> Result<Response<ChangePasswordResponse>, Status> {
        let client = self.admit(&request)?;
        let caller = self.signed_in(&request).await?;
        let ChangePasswordRequest {
            old_password,
            new_password,
        } = request.into_inner();
        let change = PasswordChange {
            old_password: SecretString::from(old_password),
            new_password: SecretString::from(new_password),
            client,
        };
        let sessions_revoked = self.accounts.change_password(&caller, change).await?;
        Ok(Response::new(ChangePasswordResponse { sessions_revoked }))
    }

    async fn enroll_totp(
        &self,
        request: Request<EnrollTotpRequest>,
    ) -> Result<Response<EnrollTotpResponse>, Status> {
        // Throttled by address like ChangePassword: the password check costs a hash.
        let client = self.admit(&request)?;
        let caller = self.signed_in(&request).await?;
        let password = SecretString::from(request.into_inner().password);
        let enrolment = self
            .accounts
            .enroll_totp(&caller, password, &client)
            .await?;
        Ok(Response::new(EnrollTotpResponse {
            secret: enrolment.secret.expose_secret().to_owned(),
            otpauth_uri: enrolment.otpauth_uri.expose_secret().to_owned(),
        }))
    }

    async fn confirm_totp(
        &self,
        request: Request<ConfirmTotpRequest>,
    ) -> Result<Response<ConfirmTotpResponse>, Status> {
        let (caller, client) = self.caller(&request).await?;
        let code = SecretString::from(request.into_inner().code);
        let codes = self.accounts.confirm_totp(&caller, code, &client).await?;
        Ok(Response::new(ConfirmTotpResponse {
            recovery_codes: codes
                .iter()
                .map(|code| code.expose_secret().to_owned())
                .collect(),
        }))
    }

    async fn disable_totp(
        &self,
        request: Request<DisableTotpRequest>,
    ) -> Result<Response<DisableTotpResponse>, Status> {
        let (caller, client) = self.caller(&request).await?;
        let DisableTotpRequest {
            code,
            recovery_code,
        } = request.into_inner();
        self.accounts
            .disable_totp(&caller, SecondFactor::new(code, recovery_code), &client)
            .await?;
        Ok(Response::new(DisableTotpResponse {}))
    }

    type WatchRevocationsStream =
        futures::stream::BoxStream<'static, Result<WatchRevocationsResponse, Status>>;

    async fn watch_revocations(
        &self,
        request: Request<WatchRevocationsRequest>,
    ) -> Result<Response<Self::WatchRevocationsStream>, Status> {
        let stream = self
            .accounts
            .revocations()
            .watch(request.into_inner())
            .await?;
        Ok(Response::new(stream))
    }

    async fn list_sessions(
        &self,
        request: Request<ListSessionsRequest>,
    ) -> Result<Response<ListSessionsResponse>, Status> {
        let caller = self.signed_in(&request).await?;
        let current = caller.principal.session_id.as_str();
        let sessions = self
            .accounts
            .list_sessions(&caller)
            .await?
            .into_iter()
            .map(|session| convert::listed(session, current))
            .collect();
        Ok(Response::new(ListSessionsResponse { sessions }))
    }

    async fn revoke_session(
        &self,
        request: Request<RevokeSessionRequest>,
    ) -> Result<Response<RevokeSessionResponse>, Status> {
        let (caller, client) = self.caller(&request).await?;
        let session_id = request.into_inner().session_id;
        self.accounts
            .revoke_session(&caller, &session_id, &client)
            .await?;
        Ok(Response::new(RevokeSessionResponse {}))
    }

    async fn delete_account(
        &self,
        request: Request<DeleteAccountRequest>,
    ) -> Result<Response<DeleteAccountResponse>, Status> {
        // Throttled by address like ChangePassword: the password check costs a hash.
        let client = self.admit(&request)?;
        let caller = self.signed_in(&request).await?;
        let deletion = convert::account_deletion(request.into_inner(), client);
        self.accounts.delete_account(&caller, deletion).await?;
        Ok(Response::new(DeleteAccountResponse {}))
    }

    async fn reset_password(
        &self,
        request: Request<ResetPasswordRequest>,
    ) -> Result<Response<ResetPasswordResponse>, Status> {
        Ok(Response::new(self.reset(request).await?))
    }
}
