//! Building and running the service: settings and a DynamoDB base configuration in, a bound
//! server out.

mod cache_sizes;

use prometheus_client::registry::Registry;
use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use common::{
    clock::SystemClock,
    proto::{
        auth::v1::auth_service_client::AuthServiceClient,
        data::v1::data_service_server::{DataServiceServer, SERVICE_NAME},
    },
    server::{self, BoundServer, Health},
    tls::{ClientTls, ServerTls},
    tokens::TokenVerifier,
};
use tonic::{service::RoutesBuilder, transport::Endpoint};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use self::cache_sizes::cache_sizes;
use crate::{
    auth_channel::AuthChannel,
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

/// The largest request a valid call can need: a 400 KB item of at most 20,000 values stays
/// well under it with protobuf's few bytes of framing per value.
const MAX_REQUEST_BYTES: usize = 1024 * 1024;

/// A bound, ready-to-run data-service.
pub struct Application {
    server: BoundServer,
    metrics: Arc<Metrics>,
}

impl Application {
    /// Wires everything and binds the listener (port 0 picks a free port). `dynamodb` is the
    /// base configuration (endpoint, region, timeouts, HTTP client) every per-user client
    /// derives from; its own credentials serve only the health probe.
    pub async fn build(
        settings: &Settings,
        dynamodb: aws_sdk_dynamodb::Config,
    ) -> anyhow::Result<Self> {
        settings.check_auth_transport()?;
        let metrics = Arc::new(Metrics::default());
        let mut registry = Registry::with_prefix(common::metrics::PREFIX);
        metrics.register(&mut registry);
        let pages = Arc::new(page_tokens(settings)?);
        let auth_timeout = Duration::from_millis(settings.auth_timeout_ms);
        let auth_tls = ClientTls::load(
            settings.auth_ca.as_deref(),
            settings.auth_client_cert.as_deref(),
            settings.auth_client_key.as_deref(),
            ["--auth-ca", "--auth-client-cert", "--auth-client-key"],
        )?;
        let tls = ServerTls::load(&settings.tls, None)?;
        let endpoints = auth_endpoints(&settings.auth_url, auth_timeout, &auth_tls)?;
        let channel = AuthChannel::new(&endpoints, auth_timeout);
        let auth = AuthServiceClient::new(channel.clone());
        let revocations = Revocations::new(
            RevocationsConfig {
                max_staleness: settings.revocation_max_staleness(),
                index_capacity: settings.token_cache_capacity,
            },
            Arc::new(SystemClock),
        )
        .counting(metrics.revocations_applied.clone());

        let keys = KeyStore::new(
            &channel,
            KeyStoreConfig {
                token_cache_capacity: settings.token_cache_capacity,
                timeout: auth_timeout,
                min_on_demand_interval: Duration::from_millis(settings.unknown_kid_refresh_ms),
                withdrawal_grace: Duration::from_secs(settings.key_withdrawal_grace_secs),
            },
            Arc::clone(&metrics),
        );
        let clients = UserClients::new(
            auth,
            dynamodb.clone(),
            UserClientsConfig {
                items_table: settings.items_table.clone(),
                capacity: settings.credentials_cache_capacity,
                refresh_margin: Duration::from_secs(settings.credentials_refresh_margin_secs),
                auth_timeout,
            },
            Arc::clone(&metrics),
        );
        let store = ItemStore::new(settings.items_table.clone(), Arc::clone(&metrics));
        let cleanup = Arc::new(Cleanup {
            keys: keys.clone(),
            clients: clients.clone(),
        });
        cache_sizes(settings, &keys, &clients, &revocations).register(&mut registry);
        let api = DataApi::new(store, clients, pages, settings.request_timeout());
        let interceptor = AuthInterceptor::new(
            TokenVerifier::new(&settings.token_issuer, &settings.token_audience)
                .with_max_lifetime(Duration::from_secs(settings.max_token_lifetime_secs)),
            keys.clone(),
            revocations.clone(),
            Arc::clone(&metrics),
        );

        let (health, health_service) = Health::new(&[SERVICE_NAME]).await;
        let probe = health.spawn_probe_nudged(
            Duration::from_secs(settings.health_probe_secs),
            revocations.freshness().turned_fresh(),
            probe(
                dynamodb,
                settings.items_table.clone(),
                channel.clone(),
                keys.clone(),
                revocations.clone(),
            ),
        );
        let mut tasks = vec![
            probe,
            channel.spawn_prober(Duration::from_millis(settings.auth_probe_ms)),
            keys.spawn_refresher(Duration::from_secs(settings.key_refresh_secs))
                .into(),
        ];
        if revocations.freshness().is_on() {
            for (url, endpoint) in &endpoints {
                // A stream has no deadline; a silent one is given up by the watcher instead.
                let feed = AuthServiceClient::new(endpoint.connect_lazy());
                let watcher = Watcher::new(
                    url.clone(),
                    feed,
                    revocations.clone(),
                    cleanup.clone(),
                    WatcherConfig::default(),
                );
                tasks.push(watcher.spawn());
            }
        } else {
            tracing::warn!(
                "--revocation-max-staleness 0: the revocation feed is off, and access tokens of \
                 ended sessions stay valid until they expire"
            );
        }

        let mut routes = RoutesBuilder::default();
        routes
            .add_service(health_service)
            .add_service(KeyRefreshService::new(
                DataServiceServer::with_interceptor(api, interceptor),
                keys,
            ));
        server::add_reflection(&mut routes, &[SERVICE_NAME])?;

        let server = BoundServer::bind(
            "data-service",
            settings.listen_addr,
            routes.routes(),
            health,
            tasks,
        )
        .await
        .with_context(|| format!("binding {}", settings.listen_addr))?
        .max_request_bytes(MAX_REQUEST_BYTES)
        .limits(settings.limits.clone())
        .tls(tls)
        .metrics(settings.metrics_addr, registry)
        .await
        .with_context(|| format!("binding the metrics endpoint {}", settings.metrics_addr))?;
        Ok(Self { server, metrics })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The metrics endpoint's address actually bound.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.server.metrics_addr()
    }

    /// The instance's counters.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// Serves until `shutdown` resolves, then drains in-flight calls.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        Ok(self.server.run_until_stopped(shutdown).await?)
    }
}

/// The page-token key from the settings, or (only when allowed) a throw-away one.
fn page_tokens(settings: &Settings) -> anyhow::Result<PageTokens> {
    match (&settings.page_token_key_file, &settings.page_token_key) {
        (Some(_), Some(_)) => {
            anyhow::bail!("set either --page-token-key-file or DYNAGATE_PAGE_TOKEN_KEY, not both")
        }
        (Some(path), None) => {
            let key = common::secrets::from_file(path)?;
            PageTokens::from_paserk(&key)
                .with_context(|| format!("the page-token key in {}", path.display()))
        }
        (None, Some(key)) => PageTokens::from_paserk(key).context("DYNAGATE_PAGE_TOKEN_KEY"),
        (None, None) if settings.dev_ephemeral_page_token_key => {
            tracing::warn!(
                "NO PAGE-TOKEN KEY CONFIGURED: generated a throw-away key for local development. \
                 Page tokens will not survive a restart or work across replicas."
            );
            PageTokens::generate()
        }
        (None, None) => anyhow::bail!(
            "no page-token key: set --page-token-key-file or DYNAGATE_PAGE_TOKEN_KEY \
             (`data-service generate-page-token-key` makes one), or --dev-ephemeral-page-token-key locally"
        ),
    }
}

/// The auth-service addresses, each with its URL (for logs), parsed and configured, with
/// `tls` applied: every channel to the auth-service (the [`AuthChannel`] and each
/// revocation watcher's) is built from these.
fn auth_endpoints(
    urls: &[String],
    timeout: Duration,
    tls: &ClientTls,
) -> anyhow::Result<Vec<(String, Endpoint)>> {
    let urls: Vec<&String> = urls.iter().filter(|url| !url.trim().is_empty()).collect();
    anyhow::ensure!(!urls.is_empty(), "--auth-url names no auth-service");
    urls.into_iter()
        .map(|url| {
            let endpoint = Endpoint::from_shared(url.trim().to_owned())
                .with_context(|| format!("--auth-url {url:?}"))?
                .connect_timeout(timeout)
                .tcp_nodelay(true);
            let endpoint = tls
                .apply(endpoint)
                .with_context(|| format!("--auth-url {url:?}"))?;
            Ok((url.trim().to_owned(), endpoint))
        })
        .collect()
}

/// The health probe: the revocation feed is current, the items table answers, an
/// auth-service is SERVING, and we hold keys.
fn probe(
    dynamodb: aws_sdk_dynamodb::Config,
    table: String,
    auth: AuthChannel,
    keys: KeyStore,
    revocations: Revocations,
) -> impl Fn() -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + 'static
{
    let client = aws_sdk_dynamodb::Client::from_conf(dynamodb);
    let tables = vec![table];
    move || {
        let (client, tables, keys) = (client.clone(), tables.clone(), keys.clone());
        let mut health = HealthClient::new(auth.clone());
        let fresh = revocations.freshness().is_fresh();
        Box::pin(async move {
            if !fresh {
                return Err(
                    "no recent word from the revocation feed of any auth-service".to_owned(),
                );
            }
            common::dynamo::probe_tables(&client, &tables).await?;
            let mut request = tonic::Request::new(HealthCheckRequest {
                service: "dynagate.auth.v1.AuthService".to_owned(),
            });
            request.set_timeout(Duration::from_secs(2));
            let status = health
                .check(request)
                .await
                .map_err(|s| format!("auth-service health: {} {}", s.code(), s.message()))?
                .into_inner()
                .status;
            if status != ServingStatus::Serving as i32 {
                return Err("auth-service is not SERVING".to_owned());
            }
            if keys.current().keys.is_empty() {
                return Err("no signing keys from the auth-service yet".to_owned());
            }
            Ok(())
        })
    }
}

/// Creates the items table if missing.
pub async fn create_tables(
    settings: &Settings,
    dynamodb: aws_sdk_dynamodb::Config,
) -> anyhow::Result<()> {
    let client = aws_sdk_dynamodb::Client::from_conf(dynamodb);
    ItemStore::new(settings.items_table.clone(), Arc::default())
        .create_table(&client)
        .await
        .map_err(anyhow::Error::msg)
}
