//! The parts of one data-service instance, each built from the settings and wired to the
//! others: what the request path, the background tasks and the metrics endpoint share.

use std::{sync::Arc, time::Duration};

use common::{
    clock::Clock,
    proto::{
        auth::v1::auth_service_client::AuthServiceClient,
        data::v1::data_service_server::{DataServiceServer, SERVICE_NAME},
    },
    server::{self, BackgroundTask, Health},
    tokens::TokenVerifier,
};
use prometheus_client::registry::Registry;
use tonic::service::{Routes, RoutesBuilder};
use tonic_health::pb::health_server::{Health as HealthService, HealthServer};

use super::{auth::AuthLink, cache_sizes::cache_sizes, probe::probe};
use crate::{
    config::Settings,
    credentials::{UserClients, UserClientsConfig},
    interceptor::{AuthInterceptor, KeyRefreshService},
    keys::{KeyStore, KeyStoreConfig},
    metrics::Metrics,
    page_token::PageTokens,
    revocations::{
        Revocations, RevocationsConfig,
        watcher::{Cleanup, Watcher, WatcherConfig},
    },
    service::DataApi,
    store::ItemStore,
};

/// The instance's shared parts; cheap to clone each.
pub struct Parts {
    /// The counters every part feeds.
    pub metrics: Arc<Metrics>,
    /// The revoked sessions and the feed's freshness.
    pub revocations: Revocations,
    /// The auth-service's signing keys and the verdicts on tokens.
    pub keys: KeyStore,
    /// The per-user DynamoDB clients.
    pub clients: UserClients,
}

impl Parts {
    /// The parts `settings` describe, reaching the auth-service through `auth` and DynamoDB
    /// through clients derived from `dynamodb`; the revocations and the credential cache read `clock`.
    pub fn new(
        settings: &Settings,
        dynamodb: &aws_sdk_dynamodb::Config,
        auth: &AuthLink,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let metrics = Arc::new(Metrics::default());
        let revocations = Revocations::new(
            RevocationsConfig {
                max_staleness: settings.revocation_max_staleness(),
                index_capacity: settings.token_cache_capacity,
            },
            Arc::clone(&clock),
        )
        .counting(metrics.revocations_applied.clone());
        let keys = KeyStore::new(
            &auth.channel,
            KeyStoreConfig {
                token_cache_capacity: settings.token_cache_capacity,
                timeout: auth.timeout,
                min_on_demand_interval: Duration::from_millis(settings.unknown_kid_refresh_ms),
                withdrawal_grace: Duration::from_secs(settings.key_withdrawal_grace_secs),
            },
            Arc::clone(&metrics),
        );
        let clients = UserClients::new(
            AuthServiceClient::new(auth.channel.clone()),
            dynamodb.clone(),
            UserClientsConfig {
                items_table: settings.items_table.clone(),
                capacity: settings.credentials_cache_capacity,
                refresh_margin: Duration::from_secs(settings.credentials_refresh_margin_secs),
                auth_timeout: auth.timeout,
            },
            Arc::clone(&metrics),
            clock,
        );
        Self {
            metrics,
            revocations,
            keys,
            clients,
        }
    }

    /// What the metrics endpoint serves: the counters and the caches' sizes.
    pub fn registry(&self, settings: &Settings) -> Registry {
        let mut registry = Registry::with_prefix(common::metrics::PREFIX);
        self.metrics.register(&mut registry);
        cache_sizes(settings, &self.keys, &self.clients, &self.revocations).register(&mut registry);
        registry
    }

    /// The DataService behind its interceptor (and the key refresh for unknown kids), with
    /// health and reflection beside it.
    pub fn routes(
        &self,
        settings: &Settings,
        pages: Arc<PageTokens>,
        health: HealthServer<impl HealthService>,
    ) -> anyhow::Result<Routes> {
        let store = ItemStore::new(settings.items_table.clone(), Arc::clone(&self.metrics));
        let api = DataApi::new(
            store,
            self.clients.clone(),
            pages,
            settings.request_timeout(),
            self.revocations.clone(),
        );
        let interceptor = AuthInterceptor::new(
            TokenVerifier::new(&settings.token_issuer, &settings.token_audience)
                .with_max_lifetime(Duration::from_secs(settings.max_token_lifetime_secs)),
            self.keys.clone(),
            self.revocations.clone(),
            Arc::clone(&self.metrics),
        );
        let mut routes = RoutesBuilder::default();
        routes
            .add_service(health)
            .add_service(KeyRefreshService::new(
                DataServiceServer::with_interceptor(api, interceptor),
                self.keys.clone(),
            ));
        server::add_reflection(&mut routes, &[SERVICE_NAME])?;
        Ok(routes.routes())
    }

    /// What runs beside the server: the health probe, the auth-service prober, the key
    /// refresher and, when the feed is on, a revocation watcher per auth-service address.
    pub fn tasks(
        &self,
        settings: &Settings,
        dynamodb: aws_sdk_dynamodb::Config,
        auth: &AuthLink,
        health: &Health,
    ) -> Vec<BackgroundTask> {
        let probe = health.spawn_probe_nudged(
            Duration::from_secs(settings.health_probe_secs),
            self.revocations.freshness().turned_fresh(),
            probe(
                dynamodb,
                settings.items_table.clone(),
                auth.channel.clone(),
                self.keys.clone(),
                self.revocations.clone(),
            ),
        );
        let mut tasks = vec![
            probe,
            auth.channel
                .spawn_prober(Duration::from_millis(settings.auth_probe_ms)),
            self.keys
                .spawn_refresher(Duration::from_secs(settings.key_refresh_secs))
                .into(),
        ];
        tasks.extend(self.watchers(auth));
        tasks
    }

    /// A revocation watcher per auth-service address; none, and a warning, when the feed is
    /// off.
    fn watchers(&self, auth: &AuthLink) -> Vec<BackgroundTask> {
        if !self.revocations.freshness().is_on() {
            tracing::warn!(
                "--revocation-max-staleness 0: the revocation feed is off, and access tokens of \
                 ended sessions stay valid until they expire"
            );
            return Vec::new();
        }
        let cleanup = Arc::new(Cleanup {
            keys: self.keys.clone(),
            clients: self.clients.clone(),
        });
        let watcher = |(url, endpoint): &(String, tonic::transport::Endpoint)| {
            // A stream has no deadline; a silent one is given up by the watcher instead.
            let feed = AuthServiceClient::new(endpoint.connect_lazy());
            Watcher::new(
                url.clone(),
                feed,
                self.revocations.clone(),
                cleanup.clone(),
                WatcherConfig::default(),
            )
            .spawn()
        };
        auth.endpoints.iter().map(watcher).collect()
    }
}
