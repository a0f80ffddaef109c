//! Building and running the service: settings and AWS clients in, a bound server out.

use std::{future::Future, net::SocketAddr, sync::Arc};

use aws_config::SdkConfig;
use common::{
    clock::{Clock, SystemClock},
    proto::auth::v1::auth_service_server::{AuthServiceServer, SERVICE_NAME},
    server::{BoundServer, Health},
    tls::ServerTls,
};
use futures::FutureExt as _;
use tonic::service::RoutesBuilder;

use crate::{
    config::Settings,
    keys::KeyRing,
    lockout::AttemptsTable,
    metrics::Metrics,
    revocations::{Hub, RevocationTable},
    sessions::SessionStore,
    users::UserStore,
};

mod builder;
mod cache_sizes;
use builder::Builder;

/// The AWS clients the service uses; tests build them against emulators.
#[derive(Clone, Debug)]
pub struct AwsClients {
    /// DynamoDB, for the users and sessions tables.
    pub dynamodb: aws_sdk_dynamodb::Client,
    /// STS, for users' temporary credentials.
    pub sts: aws_sdk_sts::Client,
}

impl AwsClients {
    /// Clients from a loaded AWS configuration.
    pub fn from_sdk_config(config: &SdkConfig) -> Self {
        Self {
            dynamodb: aws_sdk_dynamodb::Client::new(config),
            sts: aws_sdk_sts::Client::new(config),
        }
    }
}

/// A bound, ready-to-run auth-service.
pub struct Application {
    server: BoundServer,
    /// The admin listener, when `--admin-listen` is set.
    admin: Option<BoundServer>,
    metrics: Arc<Metrics>,
    revocations: Arc<Hub>,
}

impl Application {
    /// Loads keys, builds the stores and binds the listener (port 0 picks a free port).
    pub async fn build(settings: &Settings, aws: AwsClients) -> anyhow::Result<Self> {
        Self::build_with_clock(settings, aws, Arc::new(SystemClock)).await
    }

    /// [`Application::build`] with time-dependent rules (lockouts, one-time codes) reading
    /// `clock`: tests move time instead of sleeping.
    pub async fn build_with_clock(
        settings: &Settings,
        aws: AwsClients,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        let ring = KeyRing::from_settings(settings)?;
        let vending = settings.vending()?;
        let tls = ServerTls::load(&settings.tls, settings.tls_client_ca.as_deref())?;
        let mut parts = Builder::new(settings, aws, clock);
        let accounts = parts.accounts(ring, vending.as_ref())?;
        let hub = Arc::clone(accounts.revocations().hub());
        let vendor = parts.vendor(vending);
        let (health, health_service) = Health::new(&[SERVICE_NAME]).await;
        parts.probe_health(&health, &hub);
        let admin = parts.admin(&accounts, &hub).await?;
        let api = parts.api(accounts, vendor, &hub);
        let mut routes = RoutesBuilder::default();
        routes
            .add_service(health_service)
            .add_service(AuthServiceServer::new(api));
        parts.serve(routes, health, tls, hub, admin).await
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The admin listener's address actually bound, when it is on.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(BoundServer::local_addr)
    }

    /// The metrics endpoint's address actually bound.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.server.metrics_addr()
    }

    /// The instance's counters.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// The replica's revocation hub (its log and open watches).
    pub fn revocations(&self) -> Arc<Hub> {
        Arc::clone(&self.revocations)
    }

    /// Serves until `shutdown` resolves, then ends every WatchRevocations stream (they would
    /// never finish by themselves), drains in-flight calls and logs what password hashing did
    /// (peak concurrency, queue, rejected and skipped jobs).
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        let hub = self.revocations;
        let shutdown = async move {
            shutdown.await;
            hub.close();
        }
        .shared();
        let public = self.server.run_until_stopped(shutdown.clone());
        let stopped = match self.admin {
            // Both listeners drain on the one shutdown; either failing stops the process.
            Some(admin) => tokio::try_join!(public, admin.run_until_stopped(shutdown)).map(|_| ()),
            None => public.await,
        };
        self.metrics.log_hashing_stats();
        Ok(stopped?)
    }
}

/// Creates the users, sessions, login-attempts and revocations tables if missing.
pub async fn create_tables(settings: &Settings, aws: &AwsClients) -> anyhow::Result<()> {
    UserStore::new(aws.dynamodb.clone(), settings.users_table.clone())
        .create_table()
        .await
        .map_err(anyhow::Error::msg)?;
    SessionStore::new(aws.dynamodb.clone(), settings.sessions_table.clone())
        .create_table()
        .await
        .map_err(anyhow::Error::msg)?;
    AttemptsTable::new(
        aws.dynamodb.clone(),
        settings.lockout.attempts_table.clone(),
    )
    .create_table()
    .await
    .map_err(anyhow::Error::msg)?;
    RevocationTable::new(aws.dynamodb.clone(), settings.revocations.table.clone())
        .create_table()
        .await
        .map_err(anyhow::Error::msg)?;
    Ok(())
}
