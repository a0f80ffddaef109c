//! `auth-service`: settings → telemetry → build → run until SIGTERM.

use std::process::ExitCode;

use auth_service::{
    config::{Cli, Command},
    keys,
    startup::{self, Application, AwsClients},
};
use clap::Parser;
use secrecy::ExposeSecret;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    common::telemetry::init("info");
    common::server::exit_code("auth-service", run(cli).await)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = cli.settings;
    match cli.command.unwrap_or(Command::Serve) {
        Command::GenerateSigningKey => {
            let (key, kid) = keys::generate_paserk()?;
            println!("{}", key.expose_secret());
            eprintln!("kid: {kid}");
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
