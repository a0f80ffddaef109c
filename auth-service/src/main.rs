//! `auth-service`: settings → telemetry → build → run until SIGTERM → export the last spans.

use std::{process::ExitCode, time::Duration};

use auth_service::{
    config::{Cli, Command},
    keys,
    mfa::seal::Sealer,
    startup::{self, Application, AwsClients},
};
use secrecy::ExposeSecret;

/// The service's name: in its logs and as the `service.name` of its spans.
const NAME: &str = "auth-service";

#[tokio::main]
async fn main() -> ExitCode {
    let cli: Cli = common::cli::parse();
    let result = match common::telemetry::init(NAME, "info", &cli.settings.tracing) {
        Ok(telemetry) => {
            let result = run(cli).await;
            telemetry.shutdown().await;
            result
        }
        Err(error) => Err(error),
    };
    common::server::exit_code(NAME, result)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = cli.settings;
    match cli.command.unwrap_or(Command::Serve) {
        Command::GenerateSigningKey => {
            let (key, kid) = keys::generate_paserk()?;
            let activation = Duration::from_secs(settings.signing_key_activation_secs);
            let not_before = time::OffsetDateTime::now_utc() + activation;
            println!("{}", keys::stamped_line(&key, not_before)?.expose_secret());
            eprintln!(
                "kid: {kid} (append the line to every replica's keys file now: it signs from \
                 its not-before)"
            );
            Ok(())
        }
        Command::GenerateTotpKey => {
            println!("{}", Sealer::generate_paserk()?.expose_secret());
            Ok(())
        }
        Command::HashUsername => {
            let key = settings.audit.configured_key()?.ok_or_else(|| {
                anyhow::anyhow!("no --audit-key-file or DYNAGATE_AUDIT_KEY to hash under")
            })?;
            for name in std::io::stdin().lines() {
                println!("{}", key.username_hash(&name?.to_lowercase()));
            }
            Ok(())
        }
        Command::HealthCheck => {
            common::health_check::check(
                settings.listen_addr,
                &settings.tls,
                common::health_check::HEALTH_CHECK_TIMEOUT,
            )
            .await
        }
        Command::CreateTables => {
            let sdk = common::aws::load_sdk_config(&settings.aws).await;
            startup::create_tables(&settings, &AwsClients::from_sdk_config(&sdk)).await
        }
        Command::Serve => {
            let sdk = common::aws::load_sdk_config(&settings.aws).await;
            let app = Application::build(&settings, AwsClients::from_sdk_config(&sdk)).await?;
            app.run_until_stopped(common::server::shutdown_signal())
                .await
        }
    }
}
