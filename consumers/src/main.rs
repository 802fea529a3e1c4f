//! The consumers binary: load settings, start the workers, run until SIGTERM.

use anyhow::Context;
use consumers::settings::Settings;
use consumers::startup::Application;
use order_core::runtime::settings::SettingsSource;
use order_core::runtime::shutdown::Shutdown;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings: Settings = SettingsSource::from_process_env()?
        .load()
        .context("load consumers settings")?;
    order_core::runtime::telemetry::init(&settings.log);
    let shutdown = Shutdown::new();
    shutdown.trigger_on_os_signal();
    let app = Application::build(settings).await?;
    tracing::info!(port = app.port(), "consumers running; health on this port");
    app.run_until_stopped(shutdown.subscribe()).await?;
    tracing::info!("consumers stopped");
    Ok(())
}
