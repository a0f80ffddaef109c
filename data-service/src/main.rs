//! `data-service`: settings → telemetry → build → run until SIGTERM → export the last spans.

use std::process::ExitCode;

use data_service::{
    config::{Cli, Command},
    page_token::PageTokens,
    startup::{self, Application},
};
use secrecy::ExposeSecret;

/// The service's name: in its logs and as the `service.name` of its spans.
const NAME: &str = "data-service";

/// mimalloc rather than glibc malloc: the AWS SDK and the gRPC stack allocate a great deal
/// per request, and mimalloc's thread-local free lists make that cheaper (docs/performance.md
/// has the measured difference). The auth-service keeps glibc: its idle memory stays lower
/// that way.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        Command::GeneratePageTokenKey => {
            println!("{}", PageTokens::generate_paserk()?.expose_secret());
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
            startup::create_tables(&settings, aws_sdk_dynamodb::Config::from(&sdk)).await
        }
        Command::Serve => {
            let sdk = common::aws::load_sdk_config(&settings.aws).await;
            let app = Application::build(&settings, aws_sdk_dynamodb::Config::from(&sdk)).await?;
            app.run_until_stopped(common::server::shutdown_signal())
                .await
        }
    }
}
