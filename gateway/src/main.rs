//! The gateway binary: parse the command line, load settings, then serve until SIGTERM (or
//! apply migrations and exit).

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use gateway::settings::Settings;
use gateway::startup::Application;
use order_core::runtime::cli::{ConfigArgs, ServiceCommand, ENVIRONMENT_HELP};
use order_core::runtime::shutdown::Shutdown;

/// glibc's allocator showed up at about a seventh of the gateway's CPU on the sold-out path
/// (`malloc`, `free`, `malloc_consolidate` in a profile); every request allocates a little.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The seckill HTTP gateway: flash-sale orders, checkout, payments, the admin API and the
/// live sale dashboard.
#[derive(Debug, Parser)]
#[command(name = "gateway", version, after_help = ENVIRONMENT_HELP)]
struct Cli {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(subcommand)]
    command: Option<ServiceCommand>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings: Settings = cli.config.source()?.load().context("load gateway settings")?;
    order_core::runtime::telemetry::init(&settings.log);
    let timeout = Duration::from_secs(settings.startup.dependency_timeout_secs);
    let database = settings.database.clone();
    order_core::runtime::cli::dispatch(cli.command, &database, timeout, || async move {
        let shutdown = Shutdown::new();
        shutdown.trigger_on_os_signal();
        let app = Application::build(settings).await?;
        tracing::info!(port = app.port(), "gateway listening");
        app.run_until_stopped(shutdown.subscribe()).await?;
        tracing::info!("gateway stopped");
        Ok(())
    })
    .await
}
