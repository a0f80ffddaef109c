//! The parts of one service instance, built top-down by [`Builder`]: each step a short
//! function, the background tasks the parts start collected on the way, the server bound last.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use common::{
    clock::Clock,
    proto::auth::v1::auth_service_server::SERVICE_NAME,
    server::{BackgroundTask, BoundServer, Health},
    tls::ServerTls,
};
use prometheus_client::registry::Registry;
use tonic::service::RoutesBuilder;

mod admin;
mod erasure;
mod sessions;

use super::{Application, AwsClients, cache_sizes::cache_sizes};
use crate::{
    accounts::{Accounts, Parts},
    audit::AuditKey,
    config::Settings,
    credentials::{CredentialVendor, VendingConfig},
    end_user::TrustedProxies,
    key_reload,
    keys::KeyRing,
    lockout::{AttemptsTable, Lockout},
    metrics::{self, Metrics},
    mfa::Mfa,
    password::{Cost, PasswordHasher, Priority},
    recovery::Recovery,
    revocations::{Hub, RevocationTable, Revocations},
    service::AuthApi,
    throttle::AddressLimiter,
    tokens::TokenIssuer,
    users::UserStore,
    validation::PasswordRules,
};

/// The largest request any auth RPC can need: a 256-character password is at most 1 KiB of
/// UTF-8, and tokens are capped at 2 KiB.
const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// How long a health probe waits for the first load of the revocations before it reports
/// NOT_SERVING (the next probe tries again).
const REVOCATIONS_LOAD_WAIT: Duration = Duration::from_secs(2);

/// What the steps share: the settings, the AWS clients and the clock in; the metrics, their
/// registry, the tables the health probe checks and the background tasks out.
pub(super) struct Builder<'a> {
    settings: &'a Settings,
    aws: AwsClients,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    registry: Registry,
    tables: Vec<String>,
    tasks: Vec<BackgroundTask>,
}

impl<'a> Builder<'a> {
    /// A builder with no part built yet but the metrics.
    pub(super) fn new(settings: &'a Settings, mut aws: AwsClients, clock: Arc<dyn Clock>) -> Self {
        let metrics = Arc::new(Metrics::default());
        aws.dynamodb = metrics::counted(&aws.dynamodb, &metrics.dynamodb_calls);
        let mut registry = Registry::with_prefix(common::metrics::PREFIX);
        metrics.register(&mut registry);
        let tables = vec![
            settings.users_table.clone(),
            settings.sessions_table.clone(),
            settings.revocations.table.clone(),
        ];
        Self {
            settings,
            aws,
            clock,
            metrics,
            registry,
            tables,
            tasks: Vec::new(),
        }
    }

    /// The account flows and every part they use, signing with `ring`; erasures reach the
    /// items table of `vending`, if any.
    pub(super) fn accounts(
        &mut self,
        ring: KeyRing,
        vending: Option<&VendingConfig>,
    ) -> anyhow::Result<Arc<Accounts>> {
        let settings = self.settings;
        let hasher = self.hasher()?;
        let users = UserStore::new(self.aws.dynamodb.clone(), settings.users_table.clone());
        let tokens = self.tokens(ring)?;
        let families = self.families(&users)?;
        let audit_key = settings.audit.key()?;
        let lockout = self.lockout(&audit_key)?;
        self.tables.extend(lockout.table_name().map(str::to_owned));
        let mfa = Mfa::new(
            users.clone(),
            settings.mfa.sealer()?,
            Arc::clone(&self.clock),
        );
        let erasure = self.erasure(&users, &families, &lockout, vending);
        let recovery = Recovery::new(
            users.clone(),
            Arc::clone(&self.clock),
            settings.recovery.token_ttl(),
        );
        Ok(Arc::new(Accounts::new(Parts {
            users,
            families,
            hasher,
            tokens,
            lockout,
            mfa,
            clock: Arc::clone(&self.clock),
            password_rules: PasswordRules::new(&settings.passwords),
            audit_key,
            erasure,
            recovery,
        })))
    }

    /// Password hashing at the configured cost, on its own threads.
    fn hasher(&self) -> anyhow::Result<PasswordHasher> {
        let settings = self.settings;
        let cost = Cost {
            memory_kib: settings.argon2_memory_kib,
            iterations: settings.argon2_iterations,
            parallelism: settings.argon2_parallelism,
        };
        let priority = Priority {
            sched: settings.hash_sched,
            nice: settings.hash_nice,
        };
        let (workers, queue) = (settings.hash_workers, settings.hash_queue);
        let metrics = Arc::clone(&self.metrics);
        PasswordHasher::new(cost, workers, queue, priority, metrics)
    }

    /// The access-token issuer, its keys reloaded from the keys file when there is one.
    fn tokens(&mut self, ring: KeyRing) -> anyhow::Result<TokenIssuer> {
        let settings = self.settings;
        let lifetime = Duration::from_secs(settings.access_token_ttl_secs);
        let activation = Duration::from_secs(settings.signing_key_activation_secs);
        let tokens = TokenIssuer::new(
            ring,
            &settings.token_issuer,
            &settings.token_audience,
            lifetime,
        )
        .with_activation(activation, Arc::clone(&self.clock));
        if let Some(path) = &settings.signing_keys_file {
            let interval = Duration::from_secs(settings.signing_keys_reload_secs);
            let reloads = self.metrics.signing_key_reloads.clone();
            let reload = key_reload::spawn(path.clone(), tokens.clone(), interval, reloads)?;
            self.tasks.push(reload);
        }
        Ok(tokens)
    }

    /// The revocation feed the settings describe, its repairs counted in the metrics.
    fn revocations(&self) -> anyhow::Result<Revocations> {
        let settings = self.settings;
        let aws_timeout = Duration::from_millis(settings.aws.aws_operation_timeout_ms);
        let table = RevocationTable::new(
            self.aws.dynamodb.clone(),
            settings.revocations.table.clone(),
        );
        Ok(Revocations::new(
            table,
            Arc::clone(&self.clock),
            settings.revocations.timing(aws_timeout)?,
            Duration::from_secs(settings.access_token_ttl_secs),
            aws_timeout,
            self.metrics.session_repairs.clone(),
            usize::try_from(settings.revocations.max_watchers)?,
        ))
    }

    /// The brute-force lockout the settings ask for (off with `--lockout-threshold 0`).
    fn lockout(&self, audit_key: &AuditKey) -> anyhow::Result<Lockout> {
        let settings = self.settings;
        let Some(rules) = settings.lockout.rules()? else {
            tracing::warn!("--lockout-threshold 0: failed logins lock nothing");
            return Ok(Lockout::disabled());
        };
        let table = AttemptsTable::new(
            self.aws.dynamodb.clone(),
            settings.lockout.attempts_table.clone(),
        );
        let clock = Arc::clone(&self.clock);
        Ok(Lockout::new(
            table,
            rules,
            clock,
            &self.metrics,
            audit_key.clone(),
        ))
    }

    /// The credential vendor, when vending is configured (GetCredentials is off otherwise).
    pub(super) fn vendor(&self, vending: Option<VendingConfig>) -> Option<CredentialVendor> {
        let Some(config) = vending else {
            tracing::warn!("no --credentials-role-arn: GetCredentials is disabled");
            return None;
        };
        let metrics = Arc::clone(&self.metrics);
        Some(CredentialVendor::new(
            self.aws.sts.clone(),
            config,
            metrics,
            Arc::clone(&self.clock),
        ))
    }

    /// Probes the tables (and the first load of the revocations into `hub`) for `health`.
    pub(super) fn probe_health(&mut self, health: &Health, hub: &Arc<Hub>) {
        let (dynamodb, tables) = (self.aws.dynamodb.clone(), self.tables.clone());
        let loading = Arc::clone(hub);
        let interval = Duration::from_secs(self.settings.health_probe_secs);
        self.tasks.push(health.spawn_probe(interval, move || {
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
        }));
    }

    /// The API over `accounts`, throttled per address; the caches' sizes join the metrics.
    pub(super) fn api(
        &mut self,
        accounts: Arc<Accounts>,
        vendor: Option<CredentialVendor>,
        hub: &Arc<Hub>,
    ) -> AuthApi {
        let settings = self.settings;
        let limiter = AddressLimiter::new(&settings.throttle, Arc::clone(&self.clock))
            .counting(self.metrics.rate_limited.clone())
            .counting_failures(self.metrics.token_failures_throttled.clone());
        cache_sizes(settings, vendor.as_ref(), &limiter, hub).register(&mut self.registry);
        let proxies = TrustedProxies::new(settings.trusted_proxies.clone());
        AuthApi::new(accounts, vendor, proxies, limiter)
    }

    /// Binds the server (and the metrics endpoint) with `routes`, the tasks running beside it.
    pub(super) async fn serve(
        self,
        mut routes: RoutesBuilder,
        health: Health,
        tls: Option<ServerTls>,
        hub: Arc<Hub>,
        admin: Option<BoundServer>,
    ) -> anyhow::Result<Application> {
        let settings = self.settings;
        common::server::add_reflection(&mut routes, &[SERVICE_NAME])?;
        let server = BoundServer::bind(
            "auth-service",
            settings.listen_addr,
            routes.routes(),
            health,
            self.tasks,
        )
        .await
        .with_context(|| format!("binding {}", settings.listen_addr))?
        .max_request_bytes(MAX_REQUEST_BYTES)
        .limits(settings.limits.clone())
        .tls(tls)
        .metrics(settings.metrics_addr, self.registry)
        .await
        .with_context(|| format!("binding the metrics endpoint {}", settings.metrics_addr))?;
        Ok(Application {
            server,
            admin,
            metrics: self.metrics,
            revocations: hub,
        })
    }
}
