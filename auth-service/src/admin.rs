//! The admin service, `dynagate.admin.v1.AdminService`: an operator's (or a trusted
//! backend's) actions on accounts, served only on the admin listener, which requires a client
//! certificate from the admin client CA at the handshake. Handlers here only translate
//! messages; the actions (`actions.rs`) decide and audit. docs/security.md ("Who may call
//! what") and docs/operations.md ("The admin listener") are the reference.

mod actions;
mod caller;
mod convert;
mod page_token;
mod recovery;

use common::proto::admin::v1::{
    CreateRecoveryTokenRequest, CreateRecoveryTokenResponse, DeleteUserRequest, DeleteUserResponse,
    DisableUserRequest, DisableUserResponse, EnableUserRequest, EnableUserResponse,
    ForceLogoutRequest, ForceLogoutResponse, GetUserRequest, GetUserResponse, ListUsersRequest,
    ListUsersResponse, UnlockUserRequest, UnlockUserResponse, admin_service_server::AdminService,
};
use tonic::{Request, Response, Status};

pub use actions::{Actions, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, UserRef};
pub use caller::Admin;
pub use page_token::PageTokens;

use convert::user_ref;

/// The `dynagate.admin.v1.AdminService` implementation.
#[derive(Clone, Debug)]
pub struct AdminApi {
    actions: Actions,
}

impl AdminApi {
    /// The service over `actions`.
    pub fn new(actions: Actions) -> Self {
        Self { actions }
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn list_users(
        &self,
        request: Request<ListUsersRequest>,
    ) -> Result<Response<ListUsersResponse>, Status> {
        let admin = Admin::of(&request)?;
        let ListUsersRequest {
            page_size,
            page_token,
        } = request.into_inner();
        let list = self
            .actions
            .list_users(&admin, page_size, &page_token)
            .await?;
        Ok(Response::new(ListUsersResponse {
            users: list.users.into_iter().map(convert::summary).collect(),
            next_page_token: list.next_page_token,
        }))
    }

    async fn get_user(
        &self,
        request: Request<GetUserRequest>,
    ) -> Result<Response<GetUserResponse>, Status> {
        let admin = Admin::of(&request)?;
        let who = user_ref(request.into_inner().user, UserRef::from)?;
        let view = self.actions.get_user(&admin, who).await?;
        let now_ms = common::clock::unix_millis(self.actions.now());
        Ok(Response::new(GetUserResponse {
            user: Some(convert::user(view, now_ms)),
        }))
    }

    async fn disable_user(
        &self,
        request: Request<DisableUserRequest>,
    ) -> Result<Response<DisableUserResponse>, Status> {
        let admin = Admin::of(&request)?;
        let who = user_ref(request.into_inner().user, UserRef::from)?;
        let (at, sessions_ended) = self.actions.disable(&admin, who).await?;
        Ok(Response::new(DisableUserResponse {
            disabled_at: convert::from_secs(at),
            sessions_ended,
        }))
    }

    async fn enable_user(
        &self,
        request: Request<EnableUserRequest>,
    ) -> Result<Response<EnableUserResponse>, Status> {
        let admin = Admin::of(&request)?;
        let who = user_ref(request.into_inner().user, UserRef::from)?;
        self.actions.enable(&admin, who).await?;
        Ok(Response::new(EnableUserResponse {}))
    }

    async fn force_logout(
        &self,
        request: Request<ForceLogoutRequest>,
    ) -> Result<Response<ForceLogoutResponse>, Status> {
        let admin = Admin::of(&request)?;
        let who = user_ref(request.into_inner().user, UserRef::from)?;
        let sessions_ended = self.actions.force_logout(&admin, who).await?;
        Ok(Response::new(ForceLogoutResponse { sessions_ended }))
    }

    async fn unlock_user(
        &self,
        request: Request<UnlockUserRequest>,
    ) -> Result<Response<UnlockUserResponse>, Status> {
        let admin = Admin::of(&request)?;
        let who = user_ref(request.into_inner().user, UserRef::from)?;
        self.actions.unlock(&admin, who).await?;
        Ok(Response::new(UnlockUserResponse {}))
    }

    async fn delete_user(
        &self,
        request: Request<DeleteUserRequest>,
    ) -> Result<Response<DeleteUserResponse>, Status> {
        let admin = Admin::of(&request)?;
        let who = user_ref(request.into_inner().user, UserRef::from)?;
        self.actions.delete(&admin, who).await?;
        Ok(Response::new(DeleteUserResponse {}))
    }

    async fn create_recovery_token(
        &self,
        request: Request<CreateRecoveryTokenRequest>,
    ) -> Result<Response<CreateRecoveryTokenResponse>, Status> {
        Ok(Response::new(self.recovery_token(request).await?))
    }
}
