//! `bench`: measurements behind the performance claims, each against a baseline measured in
//! the same run (see BENCHMARKS.md).
//!
//! - `redis-conn`: the reserve script through one multiplexed connection vs a deadpool pool.
//! - `db-insert`: order inserts batched as the writer does vs one row per transaction.
//! - `checkout-latency`: normal checkout latency at a steady rate (see `isolation.sh`).
//! - `trivial-server`: the ceiling, a handler that does nothing, for HTTP comparisons.
//! - `mint-tokens`: user JWTs for load generators.

mod checkout_latency;
mod db_insert;
mod redis_conn;

use std::io::Write;
use std::net::SocketAddr;

use anyhow::Context;
use clap::{Parser, Subcommand};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

#[derive(Parser, Debug)]
#[command(about = "seckill benches")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// EVALSHA of lua/reserve.lua: multiplexed connection vs deadpool-redis pool.
    RedisConn(redis_conn::Args),
    /// Order inserts: the writer's batched statement vs one row per transaction.
    DbInsert(db_insert::Args),
    /// Normal checkout latency at a steady open-loop rate, over HTTP.
    CheckoutLatency(checkout_latency::Args),
    /// Serve a handler that does nothing but answer like the seckill endpoint.
    TrivialServer {
        #[arg(long, default_value = "127.0.0.1:18090")]
        addr: SocketAddr,
    },
    /// Write `count` user tokens (sub = 1..=count), one per line, signed with the configured
    /// JWT secret (APP_AUTH__JWT_SECRET or config/local.toml).
    MintTokens {
        #[arg(long)]
        count: u64,
        #[arg(long)]
        out: std::path::PathBuf,
    },
}

#[derive(Debug, Deserialize)]
struct AuthOnly {
    auth: AuthSecret,
}

#[derive(Debug, Deserialize)]
struct AuthSecret {
    jwt_secret: SecretString,
}

impl order_core::settings::Validate for AuthOnly {
    fn validate(&self) -> Result<(), order_core::settings::SettingsError> {
        order_core::settings::require_secret("auth.jwt_secret", &self.auth.jwt_secret, 32)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::RedisConn(args) => redis_conn::run(args).await,
        Command::DbInsert(args) => db_insert::run(args).await,
        Command::CheckoutLatency(args) => checkout_latency::run(args).await,
        Command::TrivialServer { addr } => trivial_server(addr).await,
        Command::MintTokens { count, out } => mint_tokens(count, &out),
    }
}

async fn trivial_server(addr: SocketAddr) -> anyhow::Result<()> {
    use axum::http::StatusCode;
    use axum::routing::any;
    let app = axum::Router::new().fallback(any(|| async {
        (StatusCode::ACCEPTED, r#"{"order_id":"1","status":"queued"}"#)
    }));
    let listener = tokio::net::TcpListener::bind(addr).await.context("bind")?;
    eprintln!("trivial server on {addr}");
    axum::serve(listener, app).await.context("serve")
}

fn mint_tokens(count: u64, out: &std::path::Path) -> anyhow::Result<()> {
    let settings: AuthOnly = order_core::settings::SettingsSource::from_process_env()?
        .load()
        .context("load the JWT secret")?;
    let key = jsonwebtoken::EncodingKey::from_secret(settings.auth.jwt_secret.expose_secret().as_bytes());
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    let exp = chrono::Utc::now().timestamp() + 24 * 3600;
    let mut file = std::io::BufWriter::new(std::fs::File::create(out).context("create the token file")?);
    for user in 1..=count {
        let claims = serde_json::json!({ "sub": user.to_string(), "exp": exp });
        writeln!(file, "{}", jsonwebtoken::encode(&header, &claims, &key)?)?;
    }
    file.flush()?;
    Ok(())
}
