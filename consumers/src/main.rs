//! The consumers binary: parse the command line, load settings, then run the workers until
//! SIGTERM (or apply migrations and exit).

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use consumers::settings::Settings;
use consumers::startup::Application;
use order_core::runtime::cli::{ConfigArgs, ServiceCommand, ENVIRONMENT_HELP};
use order_core::runtime::shutdown::Shutdown;

/// The same allocator as the gateway (see there).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The seckill consumers: the order writer (seckill-orders → PostgreSQL at a paced rate), the
/// recovery sweeper, the payment-timeout canceller and the post-payment workers, with health
/// and status on their own port.
#[derive(Debug, Parser)]
#[command(name = "consumers", version, after_help = ENVIRONMENT_HELP)]
struct Cli {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(subcommand)]
    command: Option<ServiceCommand>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings: Settings = cli.config.source()?.load().context("load consumers settings")?;
    order_core::runtime::telemetry::init(&settings.log);
    let timeout = Duration::from_secs(settings.startup.dependency_timeout_secs);
    let database = settings.database.clone();
    order_core::runtime::cli::dispatch(cli.command, &database, timeout, || async move {
        let shutdown = Shutdown::new();
        shutdown.trigger_on_os_signal();
        let app = Application::build(settings).await?;
        tracing::info!(port = app.port(), "consumers running; health on this port");
        app.run_until_stopped(shutdown.subscribe()).await?;
        tracing::info!("consumers stopped");
        Ok(())
    })
    .await
}
