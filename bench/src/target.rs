//! The system under test as the bench sees it: the gateway's URL, the admin key and JWT
//! secret to act as operators and apps, and the database and Redis it checks afterwards.
//! Read from the same layered config as the services (`APP_*`, `DATABASE_URL`, …), so a
//! bench pointed at a deployment uses that deployment's settings.

use anyhow::Context;
use hyper::header::HeaderValue;
use order_core::runtime::settings::{
    require_secret, DatabaseSettings, RedisSettings, SettingsError, SettingsSource, Validate,
};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, Deserialize)]
struct BenchSettings {
    auth: AuthSecrets,
    database: DatabaseSettings,
    redis: RedisSettings,
    writer: WriterPace,
}

#[derive(Debug, Deserialize)]
struct AuthSecrets {
    jwt_secret: SecretString,
    admin_key: SecretString,
    #[serde(default)]
    jwt_issuer: Option<String>,
}

/// What the bench checks the order writer against (invariant 5).
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct WriterPace {
    pub max_rows_per_sec: f64,
    pub batch_size: u32,
}

impl Validate for BenchSettings {
    fn validate(&self) -> Result<(), SettingsError> {
        require_secret("auth.jwt_secret", &self.auth.jwt_secret, 32)?;
        require_secret("auth.admin_key", &self.auth.admin_key, 16)?;
        self.database.validate()?;
        self.redis.validate()
    }
}

#[derive(Debug)]
pub struct Target {
    /// `http://host:port` of the gateway the bench administers through.
    pub base: String,
    /// Every gateway of the deployment (`base` first): the sale's traffic is spread over them.
    pub gateways: Vec<String>,
    pub database: DatabaseSettings,
    pub redis: RedisSettings,
    pub writer: WriterPace,
    admin_key: SecretString,
    jwt_secret: SecretString,
    jwt_issuer: Option<String>,
    http: reqwest::Client,
}

impl Target {
    /// The deployment at `base`, with settings from the process environment.
    pub fn from_env(base: &str) -> anyhow::Result<Self> {
        let settings: BenchSettings = SettingsSource::from_process_env()?
            .load()
            .context("load the bench settings (auth, database, redis, writer)")?;
        Ok(Self::new(
            base,
            settings.auth.admin_key,
            settings.auth.jwt_secret,
            settings.auth.jwt_issuer,
            settings.database,
            settings.redis,
            settings.writer,
        ))
    }

    pub fn new(
        base: &str,
        admin_key: SecretString,
        jwt_secret: SecretString,
        jwt_issuer: Option<String>,
        database: DatabaseSettings,
        redis: RedisSettings,
        writer: WriterPace,
    ) -> Self {
        let base = base.trim_end_matches('/').to_owned();
        Self {
            gateways: vec![base.clone()],
            base,
            database,
            redis,
            writer,
            admin_key,
            jwt_secret,
            jwt_issuer,
            http: reqwest::Client::new(),
        }
    }

    /// The same deployment with several gateways behind a load balancer (`base` stays the
    /// administering one; it need not be among them).
    pub fn with_gateways(mut self, gateways: Vec<String>) -> Self {
        if !gateways.is_empty() {
            self.gateways = gateways
                .into_iter()
                .map(|g| g.trim_end_matches('/').to_owned())
                .collect();
        }
        self
    }

    pub fn jwt_secret(&self) -> &SecretString {
        &self.jwt_secret
    }

    async fn admin(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(self.admin_key.expose_secret())
            .json(&body)
            .send()
            .await
            .with_context(|| format!("POST {path}"))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        anyhow::ensure!(status.is_success(), "POST {path}: {status} {body}");
        Ok(body)
    }

    /// An operator's admin call on gateway `gateway` (modulo the deployment's), as the
    /// dashboard makes it; the reply, or an error naming the status and body.
    pub async fn operate(
        &self,
        gateway: usize,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let base = &self.gateways[gateway % self.gateways.len()];
        let mut request = self
            .http
            .request(method.clone(), format!("{base}{path}"))
            .bearer_auth(self.admin_key.expose_secret());
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.with_context(|| format!("{method} {path}"))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        anyhow::ensure!(status.is_success(), "{method} {path}: {status} {body}");
        Ok(body)
    }

    /// A sale running from now for an hour; returns its id.
    pub async fn create_promotion(&self, stock: i64, per_user_limit: u32) -> anyhow::Result<i64> {
        let now = chrono::Utc::now();
        let body = self
            .admin(
                "/admin/promotions",
                json!({
                    "sku_id": "bench", "title": "bench flash sale", "price_cents": 100,
                    "stock": stock, "per_user_limit": per_user_limit,
                    "starts_at": (now - chrono::Duration::seconds(2)).to_rfc3339(),
                    "ends_at": (now + chrono::Duration::hours(1)).to_rfc3339(),
                }),
            )
            .await
            .context("create the promotion")?;
        body["id"].as_i64().context("the promotion has no id")
    }

    /// A catalog item for normal checkout.
    pub async fn create_sku(&self, id: &str, stock: i64) -> anyhow::Result<()> {
        self.admin(
            "/admin/skus",
            json!({ "id": id, "title": "bench item", "price_cents": 1000, "stock": stock }),
        )
        .await
        .context("create the checkout item")
        .map(|_| ())
    }

    /// `Authorization` values for `users`, as the platform's login service would issue them.
    pub fn tokens(&self, users: std::ops::RangeInclusive<u64>) -> anyhow::Result<Vec<HeaderValue>> {
        mint_tokens(&self.jwt_secret, self.jwt_issuer.as_deref(), users)
    }
}

/// `Bearer <HS256 JWT>` for each user (`sub` = the user id), valid for a day.
pub fn mint_tokens(
    secret: &SecretString,
    issuer: Option<&str>,
    users: std::ops::RangeInclusive<u64>,
) -> anyhow::Result<Vec<HeaderValue>> {
    let key = jsonwebtoken::EncodingKey::from_secret(secret.expose_secret().as_bytes());
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    let exp = chrono::Utc::now().timestamp() + 24 * 3600;
    users
        .map(|user| {
            let mut claims = json!({ "sub": user.to_string(), "exp": exp });
            if let Some(iss) = issuer {
                claims["iss"] = json!(iss);
            }
            let token = jsonwebtoken::encode(&header, &claims, &key).context("sign a token")?;
            HeaderValue::from_str(&format!("Bearer {token}")).context("token header")
        })
        .collect()
}
