//! Settings: every flag has an environment fallback, and `--help` documents them all.
//! AWS region, endpoints and credentials come from the standard aws-config chain instead.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand};
use common::aws::AwsSettings;
use secrecy::SecretString;

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

/// The auth-service commands.
#[derive(Clone, Debug, Subcommand)]
pub enum Command {
    /// Serve the gRPC API (the default).
    Serve,
    /// Create the users and sessions tables if they do not exist (for local stacks), then exit.
    CreateTables,
    /// Print a new Ed25519 signing key as a PASERK `k4.secret` (its kid goes to stderr).
    GenerateSigningKey,
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

    /// File of PASERK `k4.secret` signing keys, one per line (`#` comments allowed). The last
    /// key signs; all are published for verification. Rotate by appending a key.
    #[arg(long, env = "DYNAGATE_SIGNING_KEYS_FILE")]
    pub signing_keys_file: Option<PathBuf>,

    /// PASERK `k4.secret` signing keys separated by commas or whitespace, last one signing
    /// (alternative to --signing-keys-file).
    #[arg(long, env = "DYNAGATE_SIGNING_KEYS", hide_env_values = true, value_parser = parse_secret)]
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

    /// Password hashes computed at once (0 = one per CPU); the rest wait in the queue.
    #[arg(long, env = "DYNAGATE_HASH_WORKERS", default_value_t = 0)]
    pub hash_workers: usize,

    /// Password checks allowed to wait for a worker; beyond it, RESOURCE_EXHAUSTED.
    #[arg(long, env = "DYNAGATE_HASH_QUEUE", default_value_t = 256)]
    pub hash_queue: usize,

    /// Seconds between dependency probes that drive the health status.
    #[arg(long, env = "DYNAGATE_HEALTH_PROBE_SECS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub health_probe_secs: u64,

    /// AWS call timeouts and retries.
    #[command(flatten)]
    pub aws: AwsSettings,
}

fn parse_secret(value: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(value))
}

impl Settings {
    /// The defaults, as if no flag and no environment variable were given; tests start here.
    pub fn defaults() -> Self {
        #[derive(Parser)]
        struct Defaults {
            #[command(flatten)]
            settings: Settings,
        }
        // Parsing no arguments cannot fail: every setting has a default or is optional.
        Defaults::parse_from(["auth-service"]).settings
    }
}
