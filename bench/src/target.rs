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
    #[serde(default)]
    payments: Option<PaymentSecrets>,
    database: DatabaseSettings,
    redis: RedisSettings,
    writer: WriterPace,
}

/// The payment provider's side: `seed-day` signs callbacks as the provider does.
#[derive(Debug, Deserialize)]
struct PaymentSecrets {
    #[serde(default)]
    callback_secret: Option<SecretString>,
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
    /// The deployment's processes, for CPU time per request (`BENCH_PROCESSES`).
    pub processes: crate::cpu::Processes,
    /// Redis shards of the sales the bench creates (`shards` of the admin API).
    pub shards: i64,
    /// Signs payment callbacks as the provider would (`seed-day`).
    callback_secret: Option<SecretString>,
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
        let mut target = Self::new(
            base,
            settings.auth.admin_key,
            settings.auth.jwt_secret,
            settings.auth.jwt_issuer,
            settings.database,
            settings.redis,
            settings.writer,
        );
        target.processes = crate::cpu::Processes::from_env()?;
        target.callback_secret = settings.payments.and_then(|p| p.callback_secret);
        Ok(target)
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
            processes: crate::cpu::Processes::default(),
            shards: 1,
            callback_secret: None,
            admin_key,
            jwt_secret,
            jwt_issuer,
            // A gateway closes a keep-alive connection idle for its header read timeout
            // (10 s); reusing one it just closed fails the admin call, so none is kept long.
            http: reqwest::Client::builder()
                .pool_idle_timeout(std::time::Duration::from_secs(2))
                .build()
                .unwrap_or_default(),
        }
    }

    /// Sales created from now on spread their stock over `shards` Redis shards.
    pub fn with_shards(mut self, shards: i64) -> Self {
        self.shards = shards;
        self
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

    pub fn callback_secret(&self) -> Option<&SecretString> {
        self.callback_secret.as_ref()
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
        let starts_at = chrono::Utc::now() - chrono::Duration::seconds(2);
        self.create_sale("bench flash sale", stock, per_user_limit, starts_at)
            .await
    }

    /// A sale from `starts_at` for an hour, with the admin API's defaults otherwise (sale
    /// tokens required, no challenge); returns its id.
    pub async fn create_sale(
        &self,
        title: &str,
        stock: i64,
        per_user_limit: u32,
        starts_at: chrono::DateTime<chrono::Utc>,
    ) -> anyhow::Result<i64> {
        let body = self
            .admin(
                "/admin/promotions",
                json!({
                    "sku_id": "bench", "title": title, "price_cents": 100,
                    "stock": stock, "per_user_limit": per_user_limit, "shards": self.shards,
                    "starts_at": starts_at.to_rfc3339(),
                    "ends_at": (starts_at + chrono::Duration::hours(1)).to_rfc3339(),
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

    /// The sale tokens of `users` (in order), fetched as apps fetch theirs while the countdown
    /// runs: the sale's challenge, answered, then the token; spread over the deployment's
    /// gateways, 128 at a time. `None` when the sale does not require tokens.
    pub async fn sale_tokens(
        &self,
        promotion_id: i64,
        users: std::ops::RangeInclusive<u64>,
    ) -> anyhow::Result<Option<Vec<HeaderValue>>> {
        use futures::StreamExt;
        let sale: Value = self
            .http
            .get(format!("{}/api/promotions/{promotion_id}", self.base))
            .send()
            .await
            .context("read the sale")?
            .json()
            .await
            .context("the sale as JSON")?;
        if sale["requires_token"] != Value::Bool(true) {
            return Ok(None);
        }
        let auths = self.tokens(users)?;
        let spinner = crate::progress::spinner("sale tokens");
        let fetched: Vec<anyhow::Result<HeaderValue>> = futures::stream::iter(auths.into_iter().enumerate())
            .map(|(i, auth)| {
                let base = self.gateways[i % self.gateways.len()].clone();
                let http = self.http.clone();
                async move {
                    let token = fetch_sale_token(&http, &base, &auth, promotion_id).await?;
                    HeaderValue::from_str(&token).context("a sale token header")
                }
            })
            .buffered(128)
            .collect()
            .await;
        spinner.finish_and_clear();
        fetched.into_iter().collect::<anyhow::Result<Vec<_>>>().map(Some)
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

/// One app getting its sale token: ask for the challenge, answer it (a proof-of-work puzzle is
/// solved here, as a phone would), and ask for the token. A sale behind an external verifier
/// (a captcha) cannot be answered by a bench.
pub async fn fetch_sale_token(
    http: &reqwest::Client,
    base: &str,
    auth: &HeaderValue,
    promotion_id: i64,
) -> anyhow::Result<String> {
    let auth = auth.to_str().context("an Authorization header")?;
    let challenge = with_app_retries(|| {
        http.get(format!("{base}/api/seckill/{promotion_id}/challenge"))
            .header("Authorization", auth)
    })
    .await
    .context("ask for the challenge")?;
    let answer = match challenge["kind"].as_str() {
        Some("none") => json!({}),
        Some("proof_of_work") => {
            let puzzle = challenge["puzzle"].as_str().context("a puzzle")?;
            let nonce =
                order_core::domain::sale_access::solve_puzzle(puzzle).context("an unsolvable puzzle")?;
            json!({ "puzzle": puzzle, "solution": nonce.to_string() })
        }
        other => anyhow::bail!("a challenge the bench cannot answer: {other:?}"),
    };
    let body = with_app_retries(|| {
        http.post(format!("{base}/api/seckill/{promotion_id}/token"))
            .header("Authorization", auth)
            .json(&answer)
    })
    .await
    .context("ask for a sale token")?;
    body["token"]
        .as_str()
        .map(str::to_owned)
        .context("a token in the answer")
}

/// Send like an app: a 429 or 503 is tried again after its Retry-After (up to ten times);
/// anything else that is not a success is an error naming the status and body.
async fn with_app_retries(request: impl Fn() -> reqwest::RequestBuilder) -> anyhow::Result<Value> {
    for _ in 0..10 {
        let response = request().send().await?;
        let status = response.status();
        let wait = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .unwrap_or(1);
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        if status.as_u16() != 429 && status.as_u16() != 503 {
            anyhow::bail!("{status} {body}");
        }
        tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
    }
    anyhow::bail!("still refused after ten tries")
}
