//! Where a watcher's revocations come from: an auth-service's WatchRevocations stream, or a
//! script in tests.

use common::proto::auth::v1::{
    WatchRevocationsRequest, WatchRevocationsResponse, auth_service_client::AuthServiceClient,
};
use futures::{StreamExt, future::BoxFuture, stream::BoxStream};
use tonic::{Status, transport::Channel};

/// A stream of revocation batches.
pub type Batches = BoxStream<'static, Result<WatchRevocationsResponse, Status>>;

/// Where revocations come from: an auth-service, or a script in tests.
pub trait Feed: Send + 'static {
    /// Opens a stream resuming where `request` says.
    fn watch(&mut self, request: WatchRevocationsRequest)
    -> BoxFuture<'_, Result<Batches, Status>>;
}

impl Feed for AuthServiceClient<Channel> {
    fn watch(
        &mut self,
        request: WatchRevocationsRequest,
    ) -> BoxFuture<'_, Result<Batches, Status>> {
        Box::pin(async move {
            let response = self.watch_revocations(request).await?;
            Ok(response.into_inner().boxed())
        })
    }
}
