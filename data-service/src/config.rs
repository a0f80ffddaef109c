//! Settings: every flag has an environment fallback, and `--help` documents them all.
//! AWS region and endpoints come from the standard aws-config chain.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};
use common::aws::AwsSettings;
use secrecy::SecretString;

/// Dynagate data-service: the caller's items in DynamoDB, with the caller's own credentials.
#[derive(Parser)]
#[command(name = "data-service", version, about, long_about = None)]
pub struct Cli {
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings shared by every command.
    #[command(flatten)]
    pub settings: Settings,
}

/// The data-service commands.
#[derive(Clone, Debug, Subcommand)]
pub enum Command {
    /// Serve the gRPC API (the default).
    Serve,
    /// Create the items table if it does not exist (for local stacks), then exit.
    CreateTables,
    /// Print a new page-token key as a PASERK `k4.local`.
    GeneratePageTokenKey,
    /// Exit 0 if the server on the listen address reports SERVING within 2 s, else 1 (the
    /// container health check).
    HealthCheck,
}

/// Everything the data-service can be configured with.
#[derive(Args, Clone, Debug)]
pub struct Settings {
    /// Address the gRPC server listens on.
    #[arg(
        long,
        env = "DYNAGATE_DATA_LISTEN_ADDR",
        default_value = "127.0.0.1:50052"
    )]
    pub listen_addr: SocketAddr,

    /// Address of the Prometheus metrics endpoint (`GET /metrics`, plain HTTP).
    #[arg(
        long,
        env = "DYNAGATE_DATA_METRICS_ADDR",
        default_value = "127.0.0.1:9465"
    )]
    pub metrics_addr: SocketAddr,

    /// URLs of the auth-service replicas, comma-separated: signing keys and users' temporary
    /// credentials are asked of any (round-robin; an address whose connection fails is skipped
    /// until its health check answers SERVING), and the revocation feed is watched on each.
    #[arg(
        long,
        env = "DYNAGATE_AUTH_URL",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:50051"
    )]
    pub auth_url: Vec<String>,

    /// Seconds the data-service may go without word (a revocation or a heartbeat) from any
    /// auth-service's revocation feed before it stops trusting tokens, counted from when the
    /// replica that sent it last read the revocations table (so a replica that cannot read
    /// DynamoDB keeps it trusting nothing): data calls then answer UNAVAILABLE and health turns
    /// NOT_SERVING until a stream is back. 0 turns the feed off: tokens are then valid until
    /// they expire, even after Logout.
    #[arg(long, env = "DYNAGATE_REVOCATION_MAX_STALENESS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub revocation_max_staleness: u64,

    /// DynamoDB table of items (partition key `owner`, sort key `key`).
    #[arg(long, env = "DYNAGATE_ITEMS_TABLE", default_value = "dynagate-items")]
    pub items_table: String,

    /// `iss` that access tokens must carry.
    #[arg(long, env = "DYNAGATE_TOKEN_ISSUER", default_value = "dynagate-auth")]
    pub token_issuer: String,

    /// `aud` that access tokens must carry.
    #[arg(long, env = "DYNAGATE_TOKEN_AUDIENCE", default_value = "dynagate")]
    pub token_audience: String,

    /// Seconds between background refreshes of the auth-service's signing keys.
    #[arg(long, env = "DYNAGATE_KEY_REFRESH_SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub key_refresh_secs: u64,

    /// Least milliseconds between two refreshes caused by unknown kids, so forged kids cannot
    /// make us hammer the auth-service (at least 100).
    #[arg(long, env = "DYNAGATE_UNKNOWN_KID_REFRESH_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub unknown_kid_refresh_ms: u64,

    /// Seconds a signing key stays trusted after the last key refresh in which some
    /// --auth-url replica listed it: a key is withdrawn (and every token verified before is
    /// checked again) only when no replica has published it for this long, so a replica that
    /// lags behind a rotation or misses a refresh cannot make keys flap. A removed key stops
    /// verifying here within this plus --key-refresh-secs.
    #[arg(long, env = "DYNAGATE_KEY_WITHDRAWAL_GRACE_SECS", default_value_t = 90,
          value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub key_withdrawal_grace_secs: u64,

    /// The longest an access token may live (`exp − iat`), in seconds; 60 s more is allowed
    /// for skew. A longer-lived token is refused even when validly signed, so a leaked
    /// signing key cannot mint tokens that outlive every revocation. Keep it equal to the
    /// auth-service's --access-token-ttl-secs: raise both together (this one first).
    #[arg(long, env = "DYNAGATE_MAX_TOKEN_LIFETIME_SECS", default_value_t = 900,
          value_parser = clap::value_parser!(u64).range(10..=86_400))]
    pub max_token_lifetime_secs: u64,

    /// Verified access tokens remembered (skipping the signature check) until they expire.
    #[arg(long, env = "DYNAGATE_TOKEN_CACHE_CAPACITY", default_value_t = 100_000)]
    pub token_cache_capacity: u64,

    /// Users whose temporary credentials (and DynamoDB clients) are cached at most.
    #[arg(
        long,
        env = "DYNAGATE_CREDENTIALS_CACHE_CAPACITY",
        default_value_t = 100_000
    )]
    pub credentials_cache_capacity: u64,

    /// Cached credentials are dropped this many seconds before they expire.
    #[arg(
        long,
        env = "DYNAGATE_CREDENTIALS_REFRESH_MARGIN_SECS",
        default_value_t = 120
    )]
    pub credentials_refresh_margin_secs: u64,

    /// Longest a request may take when the caller sets no shorter deadline, in milliseconds.
    #[arg(long, env = "DYNAGATE_REQUEST_TIMEOUT_MS", default_value_t = 5000)]
    pub request_timeout_ms: u64,

    /// Timeout of calls to the auth-service, in milliseconds.
    #[arg(long, env = "DYNAGATE_AUTH_TIMEOUT_MS", default_value_t = 2000)]
    pub auth_timeout_ms: u64,

    /// Milliseconds between health checks of each --auth-url address: an address whose
    /// connection failed returns to rotation at the first check that finds it SERVING.
    #[arg(long, env = "DYNAGATE_AUTH_PROBE_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(50..=60_000))]
    pub auth_probe_ms: u64,

    /// File holding the PASERK `k4.local` key that encrypts and authenticates page tokens;
    /// every replica needs the same one (`data-service generate-page-token-key` makes one).
    /// Alternatively the key itself may be given in the environment variable
    /// DYNAGATE_PAGE_TOKEN_KEY — never as a flag, which would show it in `ps`.
    #[arg(long, env = "DYNAGATE_PAGE_TOKEN_KEY_FILE")]
    pub page_token_key_file: Option<PathBuf>,

    /// The page-token key from DYNAGATE_PAGE_TOKEN_KEY (environment only).
    #[arg(skip = common::secrets::from_env("DYNAGATE_PAGE_TOKEN_KEY"))]
    pub page_token_key: Option<SecretString>,

    /// LOCAL DEVELOPMENT ONLY: generate a throw-away page-token key when none is configured.
    #[arg(long, env = "DYNAGATE_DEV_EPHEMERAL_PAGE_TOKEN_KEY")]
    pub dev_ephemeral_page_token_key: bool,

    /// Seconds between dependency probes (items table, auth-service) that drive health.
    #[arg(long, env = "DYNAGATE_HEALTH_PROBE_SECS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub health_probe_secs: u64,

    /// TLS of the gRPC server (--tls-cert, --tls-key).
    #[command(flatten)]
    pub tls: common::tls::ServerTlsSettings,

    /// PEM CA certificate(s) to trust for the auth-service (and only those). With it every
    /// --auth-url must be https://, and an https:// one needs it.
    #[arg(long, env = "DYNAGATE_AUTH_CA")]
    pub auth_ca: Option<PathBuf>,

    /// PEM client certificate presented to the auth-service (for its --tls-client-ca), with
    /// --auth-client-key. Needs --auth-ca.
    #[arg(long, env = "DYNAGATE_AUTH_CLIENT_CERT")]
    pub auth_client_cert: Option<PathBuf>,

    /// PEM private key of --auth-client-cert.
    #[arg(long, env = "DYNAGATE_AUTH_CLIENT_KEY")]
    pub auth_client_key: Option<PathBuf>,

    /// Allow a plaintext (http://) --auth-url to an address that is not loopback. Off by
    /// default: users' access tokens and temporary AWS credentials travel on that connection.
    /// Only for a network that is private or encrypted below gRPC (a container network, a
    /// mesh with mTLS); otherwise use https:// with --auth-ca.
    #[arg(long, env = "DYNAGATE_ALLOW_PLAINTEXT_AUTH")]
    pub allow_plaintext_auth: bool,

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
}

impl Settings {
    /// The defaults, as if no flag were given; tests start here.
    pub fn defaults() -> Self {
        #[derive(Parser)]
        struct Defaults {
            #[command(flatten)]
            settings: Settings,
        }
        // Parsing no arguments cannot fail: every setting has a default or is optional.
        Defaults::parse_from(["data-service"]).settings
    }

    /// The longest the revocation feed may go unheard; zero when it is off.
    pub fn revocation_max_staleness(&self) -> Duration {
        Duration::from_secs(self.revocation_max_staleness)
    }

    /// The cap on a request's duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// Refuses a plaintext --auth-url to anything but loopback (127.0.0.0/8, ::1,
    /// `localhost`) unless --allow-plaintext-auth is given; the error says what to do.
    pub fn check_auth_transport(&self) -> anyhow::Result<()> {
        if self.allow_plaintext_auth {
            return Ok(());
        }
        let remote = self.auth_url.iter().map(|url| url.trim());
        let Some(url) = remote.clone().find(|url| plaintext_to_remote(url)) else {
            return Ok(());
        };
        anyhow::bail!(
            "--auth-url {url} is plaintext to an address that is not loopback: users' access \
             tokens and AWS credentials would cross the network unencrypted. Use https:// with \
             --auth-ca (and --auth-client-cert/--auth-client-key if the auth-service asks for \
             client certificates), or, only on a private or mesh-encrypted network, set \
             --allow-plaintext-auth (DYNAGATE_ALLOW_PLAINTEXT_AUTH=true)"
        )
    }
}

/// Whether `url` speaks plaintext to a host that is not loopback. A name other than
/// `localhost` counts as remote whatever it resolves to now: DNS can change. URLs that do not
/// parse are left to the endpoint parser, which names the problem.
fn plaintext_to_remote(url: &str) -> bool {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return false;
    };
    if uri
        .scheme_str()
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https"))
    {
        return false;
    }
    let Some(host) = uri.host() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => ip.is_loopback(),
        Ok(std::net::IpAddr::V6(ip)) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|ip| ip.is_loopback())
        }
        Err(_) => {
            let name = host.strip_suffix('.').unwrap_or(host);
            name.eq_ignore_ascii_case("localhost")
        }
    };
    !loopback
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_token_key_is_never_a_flag() {
        let refused = Cli::try_parse_from(["data-service", "--page-token-key", "k4.local.x"]);
        let kind = refused.err().map(|error| error.kind());
        assert_eq!(kind, Some(clap::error::ErrorKind::UnknownArgument));
        assert!(Cli::try_parse_from(["data-service", "--page-token-key-file", "key"]).is_ok());
    }

    #[test]
    fn auth_urls_are_a_comma_separated_list_and_one_still_works() {
        let parse = |urls: &str| {
            Cli::try_parse_from(["data-service", "--auth-url", urls])
                .map(|cli| cli.settings.auth_url)
                .ok()
        };
        assert_eq!(parse("http://a:1"), Some(vec!["http://a:1".to_owned()]));
        assert_eq!(
            parse("http://a:1,http://b:2"),
            Some(vec!["http://a:1".to_owned(), "http://b:2".to_owned()])
        );
        assert_eq!(Settings::defaults().revocation_max_staleness, 30);
    }

    fn with_auth_url(urls: &str, extra: &[&str]) -> Settings {
        let args = ["data-service", "--auth-url", urls].into_iter();
        let cli = Cli::try_parse_from(args.chain(extra.iter().copied()));
        cli.map(|cli| cli.settings).expect("valid flags")
    }

    #[test]
    fn plaintext_auth_urls_to_loopback_are_accepted() {
        for url in [
            "http://127.0.0.1:50051",
            "http://127.9.8.7:1",
            "http://[::1]:50051",
            "http://[::ffff:127.0.0.1]:50051",
            "http://localhost:50051",
            "http://LocalHost.:50051",
            "https://auth.example.com:443",
            "https://10.0.0.5:50051",
            "http://127.0.0.1:1,https://auth.internal:2",
        ] {
            let settings = with_auth_url(url, &[]);
            assert!(settings.check_auth_transport().is_ok(), "{url}");
        }
    }

    #[test]
    fn plaintext_auth_urls_to_other_hosts_are_refused_with_what_to_do() {
        for url in [
            "http://10.0.0.5:50051",
            "http://auth:50051",
            "http://[2001:db8::1]:50051",
            "http://0.0.0.0:50051",
            "http://localhost.example.com:50051",
            "http://127.0.0.1:1,http://auth.internal:2",
        ] {
            let settings = with_auth_url(url, &[]);
            let error = settings.check_auth_transport().unwrap_err().to_string();
            assert!(error.contains("--allow-plaintext-auth"), "{url}: {error}");
            assert!(error.contains("https://"), "{url}: {error}");
            assert!(error.contains("not loopback"), "{url}: {error}");
        }
    }

    #[test]
    fn allow_plaintext_auth_lifts_the_refusal() {
        let allowed = with_auth_url("http://auth:50051", &["--allow-plaintext-auth"]);
        assert!(allowed.check_auth_transport().is_ok());
        assert!(!Settings::defaults().allow_plaintext_auth);
    }
}
