//! ResetPassword's handler: throttled by address like the other calls that cost a hash, and
//! charged to the address's failure budget when the token is refused (like a refused refresh
//! token), so one address cannot spray tokens.

use common::proto::auth::v1::{ResetPasswordRequest, ResetPasswordResponse};
use secrecy::SecretString;
use tonic::Request;

use super::AuthApi;
use crate::{accounts::PasswordReset, error::AuthError, mfa::SecondFactor};

impl AuthApi {
    /// Redeems the request's recovery token (see `Accounts::reset_password`).
    pub(super) async fn reset(
        &self,
        request: Request<ResetPasswordRequest>,
    ) -> Result<ResetPasswordResponse, AuthError> {
        let client = self.admit(&request)?;
        let charge = self.limiter.check_failures(&client)?;
        let ResetPasswordRequest {
            recovery_token,
            new_password,
            totp_code,
            recovery_code,
        } = request.into_inner();
        let reset = PasswordReset {
            recovery_token: SecretString::from(recovery_token),
            new_password: SecretString::from(new_password),
            second_factor: SecondFactor::new(totp_code, recovery_code),
            client,
        };
        let reset = self.accounts.reset_password(reset).await;
        charge.settle(&reset);
        reset.map(|()| ResetPasswordResponse {})
    }
}
