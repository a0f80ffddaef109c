//! CreateRecoveryToken: an admin (in practice the user's backend, by its certificate) asks for
//! a recovery token to deliver out of band (`recovery`, `accounts/password_reset.rs`).

use common::{
    detached,
    proto::{
        admin::v1::{CreateRecoveryTokenRequest, CreateRecoveryTokenResponse},
        timestamp,
    },
};
use secrecy::ExposeSecret;
use tonic::Request;

use super::{Actions, Admin, AdminApi};
use crate::{error::AuthError, recovery::Issued};

impl AdminApi {
    /// The handler's body: the admin from the certificate, the token out.
    pub(super) async fn recovery_token(
        &self,
        request: Request<CreateRecoveryTokenRequest>,
    ) -> Result<CreateRecoveryTokenResponse, AuthError> {
        let admin = Admin::of(&request)?;
        let CreateRecoveryTokenRequest {
            username,
            reset_second_factor,
        } = request.into_inner();
        let issued = self
            .actions
            .create_recovery_token(&admin, username, reset_second_factor)
            .await?;
        Ok(CreateRecoveryTokenResponse {
            recovery_token: issued.token.expose_secret().to_owned(),
            expires_at: Some(timestamp(issued.expires_at)),
        })
    }
}

impl Actions {
    /// A new recovery token for the account named `typed`, the same answer whether or not it
    /// exists; audited with the admin's subject. Detached: a token stored is always audited.
    pub async fn create_recovery_token(
        &self,
        admin: &Admin,
        typed: String,
        reset_second_factor: bool,
    ) -> Result<Issued, AuthError> {
        let (accounts, admin) = (self.accounts().clone(), admin.clone());
        detached::run(async move {
            let (subject, client) = (&admin.subject, &admin.client);
            accounts
                .create_recovery_token(&typed, reset_second_factor, subject, client)
                .await
        })
        .await
    }
}
