//! The admin listener of the instance, when `--admin-listen` is set: AdminService, health
//! (probed like the public listener's) and reflection, on their own port, mTLS only.

use std::sync::Arc;

use anyhow::Context;
use common::{
    proto::admin::v1::admin_service_server::{AdminServiceServer, SERVICE_NAME},
    server::{BoundServer, Health},
};
use tonic::service::RoutesBuilder;

use super::{Builder, MAX_REQUEST_BYTES};
use crate::{
    accounts::Accounts,
    admin::{Actions, AdminApi, PageTokens},
    audit::AuditKey,
    revocations::Hub,
};

impl Builder<'_> {
    /// The admin listener, bound, or `None` when it is off. Its page tokens are sealed under
    /// a key derived from the audit key, so they open on every replica given the same one.
    pub(in crate::startup) async fn admin(
        &mut self,
        accounts: &Arc<Accounts>,
        hub: &Arc<Hub>,
    ) -> anyhow::Result<Option<BoundServer>> {
        let settings = self.settings;
        let Some(listener) = settings.admin.listener()? else {
            return Ok(None);
        };
        let audit_key = match settings.audit.configured_key()? {
            Some(key) => key,
            None => {
                tracing::warn!("no audit key: ListUsers page tokens work only on this replica");
                AuditKey::random()?
            }
        };
        let actions = Actions::new(Arc::clone(accounts), PageTokens::new(&audit_key)?);
        let (health, health_service) = Health::new(&[SERVICE_NAME]).await;
        self.probe_health(&health, hub);
        let mut routes = RoutesBuilder::default();
        routes
            .add_service(health_service)
            .add_service(AdminServiceServer::new(AdminApi::new(actions)));
        common::server::add_reflection(&mut routes, &[SERVICE_NAME])?;
        let server = BoundServer::bind(
            "auth-service admin",
            listener.addr,
            routes.routes(),
            health,
            Vec::new(),
        )
        .await
        .with_context(|| format!("binding --admin-listen {}", listener.addr))?
        .max_request_bytes(MAX_REQUEST_BYTES)
        .limits(settings.limits.clone())
        .tls(Some(listener.tls));
        Ok(Some(server))
    }
}
