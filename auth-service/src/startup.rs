//! Building and running the service: settings and AWS clients in, a bound server out.

use prometheus_client::registry::Registry;
use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use aws_config::SdkConfig;
use common::{
    proto::auth::v1::auth_service_server::{AuthServiceServer, SERVICE_NAME},
    server::{self, BoundServer, Health},
    tls::ServerTls,
};
use tonic::service::RoutesBuilder;

use common::clock::{Clock, SystemClock};

use crate::{
    accounts::{Accounts, Parts},
    audit::AuditKey,
    client::TrustedProxies,
    config::Settings,
    credentials::CredentialVendor,
    family::{Families, SessionPolicy},
    key_reload,
    keys::KeyRing,
    lockout::{AttemptsTable, Lockout},
    metrics::{Metrics, cache_sizes},
    mfa::Mfa,
    password::{Cost, PasswordHasher, Priority},
    revocations::{Hub, RevocationTable, Revocations},
    service::AuthApi,
    sessions::SessionStore,
    throttle::AddressLimiter,
    tokens::TokenIssuer,
    users::{CredentialsEpochs, UserStore},
    validation::PasswordRules,
};

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

/// The largest request any auth RPC can need: a 256-character password is at most 1 KiB of
/// UTF-8, and tokens are capped at 2 KiB.
const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// How long a health probe waits for the first load of the revocations before it reports
/// NOT_SERVING (the next probe tries again).
const REVOCATIONS_LOAD_WAIT: Duration = Duration::from_secs(2);

/// A bound, ready-to-run auth-service.
pub struct Application {
    server: BoundServer,
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
        let cost = Cost {
            memory_kib: settings.argon2_memory_kib,
            iterations: settings.argon2_iterations,
            parallelism: settings.argon2_parallelism,
        };
        let metrics = Arc::new(Metrics::default());
        let mut registry = Registry::with_prefix(common::metrics::PREFIX);
        metrics.register(&mut registry);
        let hasher = PasswordHasher::new(
            cost,
            settings.hash_workers,
            settings.hash_queue,
            Priority {
                sched: settings.hash_sched,
                nice: settings.hash_nice,
            },
            Arc::clone(&metrics),
        )?;
        let users = UserStore::new(aws.dynamodb.clone(), settings.users_table.clone());
        let sessions = SessionStore::new(aws.dynamodb.clone(), settings.sessions_table.clone());
        let tokens = TokenIssuer::new(
            ring,
            &settings.token_issuer,
            &settings.token_audience,
            Duration::from_secs(settings.access_token_ttl_secs),
        )
        .with_activation(
            Duration::from_secs(settings.signing_key_activation_secs),
            Arc::clone(&clock),
        );
        let mut tasks = Vec::new();
        if let Some(path) = &settings.signing_keys_file {
            let interval = Duration::from_secs(settings.signing_keys_reload_secs);
            let reloads = metrics.signing_key_reloads.clone();
            tasks.push(key_reload::spawn(
                path.clone(),
                tokens.clone(),
                interval,
                reloads,
            )?);
        }
        let revocations = revocations(settings, &aws, Arc::clone(&clock), &metrics)?;
        tasks.push(revocations.spawn_poller());
        let hub = Arc::clone(revocations.hub());
        let epochs = CredentialsEpochs::new(users.clone());
        let repair_tick = revocations.timing().poll;
        let families = Families::new(
            sessions,
            session_policy(settings)?,
            revocations,
            epochs,
            Arc::clone(&clock),
        );
        tasks.push(families.spawn_repairer(repair_tick));
        let audit_key = settings.audit.key()?;
        let lockout = lockout(settings, &aws, Arc::clone(&clock), &metrics, &audit_key)?;
        let mut tables = vec![
            settings.users_table.clone(),
            settings.sessions_table.clone(),
            settings.revocations.table.clone(),
        ];
        tables.extend(lockout.table_name().map(str::to_owned));
        let mfa = Mfa::new(users.clone(), settings.mfa.sealer()?, Arc::clone(&clock));
        let accounts = Arc::new(Accounts::new(Parts {
            users,
            families,
            hasher,
            tokens,
            lockout,
            mfa,
            clock: Arc::clone(&clock),
            password_rules: PasswordRules::new(&settings.passwords),
            audit_key,
        }));

        let vendor = match vending {
            Some(config) => Some(CredentialVendor::new(
                aws.sts.clone(),
                config,
                Arc::clone(&metrics),
                Arc::clone(&clock),
            )),
            None => {
                tracing::warn!("no --credentials-role-arn: GetCredentials is disabled");
                None
            }
        };

        let (health, health_service) = Health::new(&[SERVICE_NAME]).await;
        let dynamodb = aws.dynamodb.clone();
        let loading = Arc::clone(&hub);
        tasks.push(health.spawn_probe(
            Duration::from_secs(settings.health_probe_secs),
            move || {
                let (dynamodb, tables) = (dynamodb.clone(), tables.clone());
                let loading = Arc::clone(&loading);
                async move {
                    common::dynamo::probe_tables(&dynamodb, &tables).await?;
                    // Watchers must not be sent to a replica that cannot replay yet. The
                    // first load runs alongside the first probe: wait for it a little.
                    tokio::time::timeout(REVOCATIONS_LOAD_WAIT, loading.wait_loaded())
                        .await
                        .map_err(|_| "revocations not loaded yet".to_owned())
                }
            },
        ));

        let limiter = AddressLimiter::new(&settings.throttle, clock)
            .counting(metrics.rate_limited.clone())
            .counting_failures(metrics.token_failures_throttled.clone());
        cache_sizes(settings, vendor.as_ref(), &limiter, &hub).register(&mut registry);
        let mut routes = RoutesBuilder::default();
        routes
            .add_service(health_service)
            .add_service(AuthServiceServer::new(AuthApi::new(
                accounts,
                vendor,
                TrustedProxies::new(settings.trusted_proxies.clone()),
                limiter,
            )));
        server::add_reflection(&mut routes, &[SERVICE_NAME])?;

        let server = BoundServer::bind(
            "auth-service",
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
        Ok(Self {
            server,
            metrics,
            revocations: hub,
        })
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
        };
        let stopped = self.server.run_until_stopped(shutdown).await;
        self.metrics.log_hashing_stats();
        Ok(stopped?)
    }
}

/// How sessions behave, from the settings.
fn session_policy(settings: &Settings) -> anyhow::Result<SessionPolicy> {
    Ok(SessionPolicy {
        refresh_lifetime: Duration::from_secs(settings.refresh_token_ttl_secs),
        retry_grace: Duration::from_secs(settings.refresh_retry_grace_secs),
        max_per_user: usize::try_from(settings.max_sessions_per_user)?,
        access_lifetime: Duration::from_secs(settings.access_token_ttl_secs),
    })
}

/// The revocation feed the settings describe, its repairs counted in `metrics`.
fn revocations(
    settings: &Settings,
    aws: &AwsClients,
    clock: Arc<dyn Clock>,
    metrics: &Metrics,
) -> anyhow::Result<Revocations> {
    let aws_timeout = Duration::from_millis(settings.aws.aws_operation_timeout_ms);
    let table = RevocationTable::new(aws.dynamodb.clone(), settings.revocations.table.clone());
    Ok(Revocations::new(
        table,
        clock,
        settings.revocations.timing(aws_timeout)?,
        Duration::from_secs(settings.access_token_ttl_secs),
        aws_timeout,
        metrics.session_repairs.clone(),
        usize::try_from(settings.revocations.max_watchers)?,
    ))
}

/// The brute-force lockout the settings ask for (off with `--lockout-threshold 0`).
fn lockout(
    settings: &Settings,
    aws: &AwsClients,
    clock: Arc<dyn Clock>,
    metrics: &Metrics,
    audit_key: &AuditKey,
) -> anyhow::Result<Lockout> {
    let Some(rules) = settings.lockout.rules()? else {
        tracing::warn!("--lockout-threshold 0: failed logins lock nothing");
        return Ok(Lockout::disabled());
    };
    let table = AttemptsTable::new(
        aws.dynamodb.clone(),
        settings.lockout.attempts_table.clone(),
    );
    Ok(Lockout::new(
        table,
        rules,
        clock,
        metrics,
        audit_key.clone(),
    ))
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
