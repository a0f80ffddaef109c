//! Settings: every flag has an environment fallback, and `--help` documents them all.
//! AWS region, endpoints and credentials come from the standard aws-config chain instead.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Parser};
use common::aws::AwsSettings;
use secrecy::SecretString;

use crate::password::HashSched;

mod admin;
mod command;
mod vending;

pub use admin::{AdminListener, AdminSettings};
pub use command::Command;

/// Dynagate auth-service: users, passwords, PASETO access tokens, refresh tokens.
#[derive(Parser)]
#[command(name = "auth-service", version, about, long_about = None)]
pub struct Cli {
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings shared by every command.
    #[command(flatten)]
    pub settings: Settings,
}

/// Everything the auth-service can be configured with.
#[derive(Args, Clone, Debug)]
pub struct Settings {
    /// Address the gRPC server listens on.
    #[arg(
        long,
        env = "DYNAGATE_AUTH_LISTEN_ADDR",
        default_value = "127.0.0.1:50051"
    )]
    pub listen_addr: SocketAddr,

    /// Address of the Prometheus metrics endpoint (`GET /metrics`, plain HTTP).
    #[arg(
        long,
        env = "DYNAGATE_AUTH_METRICS_ADDR",
        default_value = "127.0.0.1:9464"
    )]
    pub metrics_addr: SocketAddr,

    /// DynamoDB table of users (partition key `username`).
    #[arg(long, env = "DYNAGATE_USERS_TABLE", default_value = "dynagate-users")]
    pub users_table: String,

    /// DynamoDB table of sessions (partition key `user_id`, sort key `session_id`).
    #[arg(
        long,
        env = "DYNAGATE_SESSIONS_TABLE",
        default_value = "dynagate-sessions"
    )]
    pub sessions_table: String,

    /// `iss` claim of issued access tokens.
    #[arg(long, env = "DYNAGATE_TOKEN_ISSUER", default_value = "dynagate-auth")]
    pub token_issuer: String,

    /// `aud` claim of issued access tokens: the services meant to accept them.
    #[arg(long, env = "DYNAGATE_TOKEN_AUDIENCE", default_value = "dynagate")]
    pub token_audience: String,

    /// Access-token lifetime in seconds.
    #[arg(long, env = "DYNAGATE_ACCESS_TOKEN_TTL_SECS", default_value_t = 900,
          value_parser = clap::value_parser!(u64).range(10..=86_400))]
    pub access_token_ttl_secs: u64,

    /// Refresh-token lifetime in seconds (sliding: every refresh starts it again).
    #[arg(long, env = "DYNAGATE_REFRESH_TOKEN_TTL_SECS", default_value_t = 2_592_000,
          value_parser = clap::value_parser!(u64).range(60..=31_536_000))]
    pub refresh_token_ttl_secs: u64,

    /// Seconds during which the refresh token just rotated out may be presented again and
    /// gets the same successor (a lost response can be retried, concurrent refreshes agree);
    /// after that it counts as reuse and ends the session. At least 1: concurrent refreshes
    /// with one token rely on it.
    #[arg(long, env = "DYNAGATE_REFRESH_RETRY_GRACE_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=300))]
    pub refresh_retry_grace_secs: u64,

    /// Live sessions a user may have at once; a login beyond it ends the oldest ones. Bounds
    /// the work of LogoutAll.
    #[arg(long, env = "DYNAGATE_MAX_SESSIONS_PER_USER", default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_sessions_per_user: u32,

    /// File of PASERK `k4.secret` signing keys, one per line (`#` comments allowed). The last
    /// key signs; all are published for verification. Rotate by appending a key and sending
    /// SIGHUP (the file is also re-read when it changes). Alternatively the keys themselves may
    /// be given in the environment variable DYNAGATE_SIGNING_KEYS (separated by commas or
    /// whitespace) — never as a flag, which would show them in `ps`.
    #[arg(long, env = "DYNAGATE_SIGNING_KEYS_FILE")]
    pub signing_keys_file: Option<PathBuf>,

    /// Seconds between checks of --signing-keys-file for changes (SIGHUP reloads at once).
    #[arg(long, env = "DYNAGATE_SIGNING_KEYS_RELOAD_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub signing_keys_reload_secs: u64,

    /// Seconds a signing key that a reload brings is published (ListSigningKeys) before it
    /// may sign; the key signing before keeps signing meanwhile. Must exceed how far apart
    /// the replicas load a changed file and the verifiers' key refresh interval (the
    /// data-service's --key-refresh-secs, 60), so every replica publishes a key, and every
    /// verifier holds it, before any token names it. A key's own `not-before=` stamp in the
    /// file (what `generate-signing-key` prints: now plus this) holds it back too, and is what
    /// a replica that starts during a rollout goes by. 0: a reloaded key signs at once.
    #[arg(long, env = "DYNAGATE_SIGNING_KEY_ACTIVATION_SECS", default_value_t = 90,
          value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub signing_key_activation_secs: u64,

    /// The signing keys from DYNAGATE_SIGNING_KEYS (environment only).
    #[arg(skip = common::secrets::from_env("DYNAGATE_SIGNING_KEYS"))]
    pub signing_keys: Option<SecretString>,

    /// LOCAL DEVELOPMENT ONLY: generate a throw-away signing key when none is configured.
    /// Tokens stop verifying at every restart.
    #[arg(long, env = "DYNAGATE_DEV_EPHEMERAL_SIGNING_KEY")]
    pub dev_ephemeral_signing_key: bool,

    /// Argon2id memory cost in KiB (changing it rehashes passwords at their next login).
    #[arg(long, env = "DYNAGATE_ARGON2_MEMORY_KIB", default_value_t = 19_456)]
    pub argon2_memory_kib: u32,

    /// Argon2id iterations.
    #[arg(long, env = "DYNAGATE_ARGON2_ITERATIONS", default_value_t = 2)]
    pub argon2_iterations: u32,

    /// Argon2id lanes.
    #[arg(long, env = "DYNAGATE_ARGON2_PARALLELISM", default_value_t = 1)]
    pub argon2_parallelism: u32,

    /// Password hashing threads, each computing one hash at a time (0 = one per CPU); each
    /// keeps one argon2 memory block (--argon2-memory-kib) for its whole life.
    #[arg(long, env = "DYNAGATE_HASH_WORKERS", default_value_t = 0)]
    pub hash_workers: usize,

    /// Password checks allowed to wait for a hashing thread; beyond it, RESOURCE_EXHAUSTED.
    #[arg(long, env = "DYNAGATE_HASH_QUEUE", default_value_t = 256)]
    pub hash_queue: usize,

    /// Nice levels the hashing threads run below the gRPC runtime (Linux), so a login flood
    /// cannot starve the service's other calls. 0 keeps them equal.
    #[arg(long, env = "DYNAGATE_HASH_NICE", default_value_t = 10,
          value_parser = clap::value_parser!(i32).range(0..=19))]
    pub hash_nice: i32,

    /// Scheduling policy of the hashing threads (Linux): `idle` (SCHED_IDLE: they get a core
    /// only when no other thread on the host wants it, so a login flood leaves co-located
    /// services' latency alone, and logins wait while the host is saturated), `batch`
    /// (SCHED_BATCH at --hash-nice) or `normal` (--hash-nice alone, which ranks threads inside
    /// this process only).
    #[arg(long, env = "DYNAGATE_HASH_SCHED", value_enum, default_value_t = HashSched::Idle)]
    pub hash_sched: HashSched,

    /// IAM role assumed for users' temporary credentials (GetCredentials). Without it (and
    /// --items-table-arn), GetCredentials answers UNIMPLEMENTED.
    #[arg(long, env = "DYNAGATE_CREDENTIALS_ROLE_ARN")]
    pub credentials_role_arn: Option<String>,

    /// ARN of the items table the credentials are confined to
    /// (arn:aws:dynamodb:<region>:<account>:table/<name>).
    #[arg(long, env = "DYNAGATE_ITEMS_TABLE_ARN")]
    pub items_table_arn: Option<String>,

    /// Lifetime of temporary credentials in seconds: 900 to 3600 (role chaining caps sessions
    /// at one hour), up to 43200 with --allow-long-credentials. The default, 900, is an access
    /// token's lifetime: credentials fetched before a LogoutAll or ChangePassword stay valid
    /// until they expire (STS cannot revoke one session), so this bounds what a thief keeps.
    #[arg(
        long,
        env = "DYNAGATE_CREDENTIALS_DURATION_SECS",
        default_value_t = 900
    )]
    pub credentials_duration_secs: u64,

    /// Allow credential lifetimes up to 12 hours (only when the auth-service's own identity
    /// is not itself an assumed role, and the role's maximum session duration allows it).
    #[arg(long, env = "DYNAGATE_ALLOW_LONG_CREDENTIALS")]
    pub allow_long_credentials: bool,

    /// Cached credentials are replaced this many seconds before they expire, so callers always
    /// get at least this much lifetime (the data-service keeps its client until its own margin,
    /// 120 s by default, before expiry). With 900-second credentials, 300 means one AssumeRole
    /// per active user every 10 minutes.
    #[arg(
        long,
        env = "DYNAGATE_CREDENTIALS_REFRESH_MARGIN_SECS",
        default_value_t = 300
    )]
    pub credentials_refresh_margin_secs: u64,

    /// Users whose credentials are cached at most.
    #[arg(
        long,
        env = "DYNAGATE_CREDENTIALS_CACHE_CAPACITY",
        default_value_t = 100_000
    )]
    pub credentials_cache_capacity: u64,

    /// Networks (CIDR or single addresses, comma-separated) of proxies trusted to name the end
    /// user in `x-forwarded-for`, for throttling, the audit log and session records: the
    /// right-most entry that is not itself in these networks (as nginx's `real_ip_recursive`
    /// reads it). From any other peer the header is ignored and the peer address counts.
    /// Empty by default.
    #[arg(long, env = "DYNAGATE_TRUSTED_PROXIES", value_delimiter = ',',
          value_parser = crate::end_user::parse_network)]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// Seconds between dependency probes that drive the health status.
    #[arg(long, env = "DYNAGATE_HEALTH_PROBE_SECS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub health_probe_secs: u64,

    /// TLS of the gRPC server (--tls-cert, --tls-key).
    #[command(flatten)]
    pub tls: common::tls::ServerTlsSettings,

    /// PEM CA certificate(s): when set, every call but health checks needs a client
    /// certificate this CA signed (mTLS). Needs --tls-cert and --tls-key.
    #[arg(long, env = "DYNAGATE_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,

    /// Bounds on clients' connections: connections, streams per connection, request-body
    /// time, HTTP/2 keepalive (--max-connections and the others).
    #[command(flatten)]
    pub limits: common::limits::ConnectionLimits,

    /// AWS call timeouts and retries.
    #[command(flatten)]
    pub aws: AwsSettings,

    /// Where spans are exported (--otlp-endpoint and the others).
    #[command(flatten)]
    pub tracing: common::telemetry::TracingSettings,

    /// Brute-force lockout per username.
    #[command(flatten)]
    pub lockout: crate::lockout::LockoutSettings,

    /// TOTP: the key sealing secrets at rest.
    #[command(flatten)]
    pub mfa: crate::mfa::MfaSettings,

    /// Login and Register throttling per end-user address.
    #[command(flatten)]
    pub throttle: crate::throttle::ThrottleSettings,

    /// How strong new passwords must be.
    #[command(flatten)]
    pub passwords: crate::validation::PasswordSettings,

    /// The revocation feed (WatchRevocations).
    #[command(flatten)]
    pub revocations: crate::revocations::RevocationSettings,

    /// The audit log: the key of its username hashes.
    #[command(flatten)]
    pub audit: crate::audit::AuditSettings,

    /// Account erasure (DeleteAccount): how often replicas sweep for erasures to carry on.
    #[command(flatten)]
    pub erasure: crate::erasure::ErasureSettings,

    /// The admin listener (AdminService over mTLS): off unless --admin-listen is set.
    #[command(flatten)]
    pub admin: AdminSettings,

    /// Recovery tokens (CreateRecoveryToken, ResetPassword): how long they last.
    #[command(flatten)]
    pub recovery: crate::recovery::RecoverySettings,
}

impl Settings {
    /// The defaults, as if no flag and no environment variable were given; tests start here.
    pub fn defaults() -> Self {
        // Parsing no arguments cannot fail: every setting has a default or is optional, and
        // the command too.
        Cli::parse_from(["auth-service"]).settings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashing_threads_run_idle_unless_told_otherwise() {
        #[derive(Parser)]
        struct Flags {
            #[command(flatten)]
            settings: Settings,
        }
        let parse = |args: &[&str]| {
            Flags::try_parse_from(std::iter::once("auth-service").chain(args.iter().copied()))
                .map(|flags| flags.settings.hash_sched)
        };
        if std::env::var_os("DYNAGATE_HASH_SCHED").is_none() {
            assert_eq!(parse(&[]).unwrap(), HashSched::Idle);
        }
        assert_eq!(parse(&["--hash-sched", "batch"]).unwrap(), HashSched::Batch);
        assert_eq!(
            parse(&["--hash-sched", "normal"]).unwrap(),
            HashSched::Normal
        );
        assert!(parse(&["--hash-sched", "fifo"]).is_err());
    }

    #[test]
    fn signing_keys_are_never_a_flag() {
        let refused = Cli::try_parse_from(["auth-service", "--signing-keys", "k4.secret.x"]);
        let kind = refused.err().map(|error| error.kind());
        assert_eq!(kind, Some(clap::error::ErrorKind::UnknownArgument));
        assert!(Cli::try_parse_from(["auth-service", "--signing-keys-file", "keys"]).is_ok());
    }
}
