//! The gateway binary: load settings, start, serve until SIGTERM.

use anyhow::Context;
use gateway::settings::Settings;
use gateway::startup::Application;
use order_core::runtime::settings::SettingsSource;
use order_core::runtime::shutdown::Shutdown;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings: Settings = SettingsSource::from_process_env()?
        .load()
        .context("load gateway settings")?;
    order_core::runtime::telemetry::init(&settings.log);
    let shutdown = Shutdown::new();
    shutdown.trigger_on_os_signal();
    let app = Application::build(settings).await?;
    tracing::info!(port = app.port(), "gateway listening");
    app.run_until_stopped(shutdown.subscribe()).await?;
    tracing::info!("gateway stopped");
    Ok(())
}
