//! GetCredentials' handler: the caller's own token in, temporary AWS credentials for the
//! caller's partition out.

use common::{
    proto::{
        auth::v1::{GetCredentialsRequest, GetCredentialsResponse},
        timestamp,
    },
    tokens::bearer_token,
};
use secrecy::ExposeSecret;
use tonic::Request;

use super::{AuthApi, caller::record_user};
use crate::{error::AuthError, policy::StsUserId};

impl AuthApi {
    /// Vends the caller's credentials, when vending is configured.
    pub(super) async fn credentials(
        &self,
        request: Request<GetCredentialsRequest>,
    ) -> Result<GetCredentialsResponse, AuthError> {
        let vendor = self.vendor.as_ref().ok_or(AuthError::CredentialsDisabled)?;
        let token = bearer_token(request.metadata()).map_err(AuthError::from)?;
        let (caller, generation) = self.accounts.credentials_caller(token).await?;
        let principal = caller.principal;
        record_user(&principal.user_id);
        // Our own tokens always carry STS-safe ids; anything else is refused, not passed on.
        let user = StsUserId::new(&principal.user_id).ok_or(AuthError::SessionEnded)?;
        let credentials = vendor.credentials_for(&user, generation).await?;
        let table = &vendor.config().table;
        Ok(GetCredentialsResponse {
            access_key_id: credentials.access_key_id.clone(),
            secret_access_key: credentials.secret_access_key.expose_secret().to_owned(),
            session_token: credentials.session_token.expose_secret().to_owned(),
            expiration: Some(timestamp(credentials.expiration)),
            region: table.region().to_owned(),
            table_name: table.table_name().to_owned(),
            partition_key: principal.user_id,
        })
    }
}
