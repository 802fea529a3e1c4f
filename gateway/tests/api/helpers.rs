//! Spawning the gateway for a test.

use gateway::settings::Settings;
use gateway::startup::Application;
use order_core::settings::SettingsSource;
use order_core::shutdown::Shutdown;
use order_core::test_support::{fresh_database, local_source};
use tokio::task::JoinHandle;

#[derive(Debug)]
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub shutdown: Shutdown,
    pub handle: JoinHandle<anyhow::Result<()>>,
}

impl TestApp {
    /// The gateway on the local stack, with a database of its own.
    pub async fn spawn() -> Self {
        Self::spawn_with(local_source()).await
    }

    pub async fn spawn_with(source: SettingsSource) -> Self {
        let mut settings: Settings = source
            .with_var("APP_GATEWAY__PORT", "0")
            .load()
            .expect("test settings");
        settings.database = fresh_database(&settings.database).await.expect("fresh database");
        let app = Application::build(settings).await.expect("build the gateway");
        let address = format!("http://127.0.0.1:{}", app.port());
        let shutdown = Shutdown::new();
        let handle = tokio::spawn(app.run_until_stopped(shutdown.subscribe()));
        Self {
            address,
            client: reqwest::Client::new(),
            shutdown,
            handle,
        }
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("request reaches the gateway")
    }
}
