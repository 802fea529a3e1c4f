//! Spawning the gateway for a test, and talking to it like an app or an operator would.
//! (Feature `test-support`; used by this crate's tests and the consumers' end-to-end tests.)

use std::time::{SystemTime, UNIX_EPOCH};

use crate::settings::Settings;
use crate::startup::Application;
use chrono::{DateTime, Duration, Utc};
use order_core::redis::stock::StockStore;
use order_core::runtime::settings::SettingsSource;
use order_core::runtime::shutdown::Shutdown;
use order_core::test_support::{fresh_database, local_source, unique};
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

#[derive(Debug)]
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub shutdown: Shutdown,
    pub handle: JoinHandle<anyhow::Result<()>>,
    pub settings: Settings,
    /// This gateway's held long polls.
    pub order_watch: std::sync::Arc<crate::order_watch::OrderWatch>,
    /// This gateway's seckill concurrency limit.
    pub seckill_limiter: std::sync::Arc<crate::shedding::SeckillLimiter>,
}

/// Limits high enough that only tests about limits meet them.
pub fn generous_limits(source: SettingsSource) -> SettingsSource {
    source
        .with_var("APP_RATE_LIMIT__PER_IP__PER_SECOND", "1000000")
        .with_var("APP_RATE_LIMIT__PER_IP__BURST", "1000000")
        .with_var("APP_RATE_LIMIT__PER_USER__PER_SECOND", "1000")
        .with_var("APP_RATE_LIMIT__PER_USER__BURST", "1000")
}

impl TestApp {
    /// The gateway on the local stack, with a database and topic of its own.
    pub async fn spawn() -> Self {
        Self::spawn_with(generous_limits(local_source())).await
    }

    pub async fn spawn_with(source: SettingsSource) -> Self {
        let mut settings: Settings = source
            .with_var("APP_GATEWAY__PORT", "0")
            .with_var("APP_PULSAR__SECKILL_ORDERS_TOPIC", unique("seckill-orders"))
            .load()
            .expect("test settings");
        settings.database = fresh_database(&settings.database).await.expect("fresh database");
        // Archive files are named by month: each test's database gets its own directory.
        settings.archive.dir = std::env::temp_dir().join(unique("seckill-archive"));
        Self::start(settings).await
    }

    /// Another gateway of the same deployment: this one's database, Redis, topics and
    /// secrets, its own port (and its own worker-id lease). `tweak` may change its settings.
    pub async fn spawn_beside(&self, tweak: impl FnOnce(&mut Settings)) -> Self {
        let mut settings = self.settings.clone();
        settings.gateway.port = 0;
        tweak(&mut settings);
        Self::start(settings).await
    }

    async fn start(settings: Settings) -> Self {
        let app = Application::build(settings.clone())
            .await
            .expect("build the gateway");
        let address = format!("http://127.0.0.1:{}", app.port());
        let order_watch = app.order_watch();
        let seckill_limiter = app.seckill_limiter();
        let shutdown = Shutdown::new();
        let handle = tokio::spawn(app.run_until_stopped(shutdown.subscribe()));
        Self {
            address,
            // Idle connections are dropped before the gateway's header read timeout (10 s)
            // closes them: otherwise a request sent on one just as the server closes it fails
            // with an incomplete message (seen in a three-gateway test).
            client: reqwest::Client::builder()
                .pool_idle_timeout(std::time::Duration::from_secs(5))
                .build()
                .expect("an HTTP client"),
            shutdown,
            handle,
            settings,
            order_watch,
            seckill_limiter,
        }
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("request reaches the gateway")
    }

    pub fn token(&self, user_id: i64) -> String {
        token_with(
            &self.settings,
            &json!({ "sub": user_id.to_string(), "exp": now_secs() + 3600 }),
        )
    }

    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.address))
            .bearer_auth(self.settings.auth.admin_key.expose_secret())
    }

    /// A sale's admin stats; `None` when the call fails (for polling with a deadline).
    pub async fn stats(&self, promotion_id: i64) -> Option<Value> {
        self.admin(
            reqwest::Method::GET,
            &format!("/admin/promotions/{promotion_id}/stats"),
        )
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
    }

    /// A promotion through the admin API; `starts_in` may be negative (already running).
    pub async fn create_promotion(&self, stock: i64, per_user_limit: i32, starts_in: Duration) -> Value {
        let starts_at = Utc::now() + starts_in;
        self.create_promotion_at(stock, per_user_limit, starts_at, starts_at + Duration::hours(1))
            .await
    }

    pub async fn create_promotion_at(
        &self,
        stock: i64,
        per_user_limit: i32,
        starts_at: DateTime<Utc>,
        ends_at: DateTime<Utc>,
    ) -> Value {
        self.create_sale(stock, per_user_limit, 1, starts_at, ends_at)
            .await
    }

    /// A running sale (started a second ago) whose stock is spread over `shards`.
    pub async fn create_sharded_promotion(&self, stock: i64, per_user_limit: i32, shards: i64) -> Value {
        let starts_at = Utc::now() - Duration::seconds(1);
        self.create_sale(
            stock,
            per_user_limit,
            shards,
            starts_at,
            starts_at + Duration::hours(1),
        )
        .await
    }

    async fn create_sale(
        &self,
        stock: i64,
        per_user_limit: i32,
        shards: i64,
        starts_at: DateTime<Utc>,
        ends_at: DateTime<Utc>,
    ) -> Value {
        let response = self
            .admin(reqwest::Method::POST, "/admin/promotions")
            .json(&json!({
                "sku_id": "sku-phone", "title": "Phone flash sale", "price_cents": 1999,
                "stock": stock, "per_user_limit": per_user_limit, "shards": shards,
                "starts_at": starts_at, "ends_at": ends_at,
            }))
            .send()
            .await
            .expect("create promotion");
        assert_eq!(response.status(), 201, "create promotion");
        response.json().await.expect("json")
    }

    /// A valid sale token for the buyer, signed with the deployment's key as
    /// `POST /api/seckill/{id}/token` would sign it (tests of the token endpoint use the
    /// endpoint; this is for tests about everything after it).
    pub fn sale_token(&self, promotion_id: i64, user_id: i64) -> String {
        let key = order_core::domain::sale_access::SaleKey::new(
            self.settings.auth.sale_token_secret.expose_secret().as_bytes(),
        );
        let expires_ms = Utc::now().timestamp_millis() + 3_600_000;
        key.mint_token(promotion_id, user_id, expires_ms)
    }

    /// `place` as a request that can run on its own task.
    pub fn place_request(
        &self,
        promotion_id: i64,
        user_id: i64,
        request_id: &str,
        quantity: i64,
    ) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}/api/seckill/{promotion_id}/orders", self.address))
            .bearer_auth(self.token(user_id))
            .header("X-Sale-Token", self.sale_token(promotion_id, user_id))
            .json(&json!({ "quantity": quantity, "request_id": request_id }))
    }

    /// `GET path` as the app of `user_id`.
    pub async fn get_as(&self, user_id: i64, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .bearer_auth(self.token(user_id))
            .send()
            .await
            .expect("request reaches the gateway")
    }

    /// An app's order, with the buyer's sale token.
    pub async fn place(
        &self,
        promotion_id: i64,
        user_id: i64,
        request_id: &str,
        quantity: i64,
    ) -> (u16, Value) {
        let response = self
            .place_request(promotion_id, user_id, request_id, quantity)
            .send()
            .await
            .expect("request reaches the gateway");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// `place` as an app does it: an order shed as `overloaded` is sent again, same request
    /// id, after its Retry-After, until it gets another answer (at most 60 s).
    pub async fn place_as_app(
        &self,
        promotion_id: i64,
        user_id: i64,
        request_id: &str,
        quantity: i64,
    ) -> (u16, Value) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let answer = self.place(promotion_id, user_id, request_id, quantity).await;
            let shed = answer.0 == 503 && answer.1["error"]["code"] == "overloaded";
            if !shed || tokio::time::Instant::now() >= deadline {
                return answer;
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    }

    pub async fn stock_store(&self) -> StockStore {
        StockStore::new(
            order_core::redis::connect(&self.settings.redis)
                .await
                .expect("connect to Redis"),
        )
    }
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

pub fn token_with(settings: &Settings, claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(settings.auth.jwt_secret.expose_secret().as_bytes()),
    )
    .expect("sign a token")
}

pub fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no error code>")
}

impl TestApp {
    /// A SKU for normal checkout through the admin API.
    pub async fn create_sku(&self, id: &str, price_cents: i64, stock: i64) {
        let response = self
            .admin(reqwest::Method::POST, "/admin/skus")
            .json(&json!({ "id": id, "title": format!("Item {id}"), "price_cents": price_cents, "stock": stock }))
            .send()
            .await
            .expect("create SKU");
        assert_eq!(response.status(), 201, "create SKU");
    }

    /// A checkout body with a valid standard-shipping address.
    pub fn basket(items: &[(&str, i64)], coupon_id: Option<i64>, request_id: Option<&str>) -> Value {
        let items: Vec<Value> = items
            .iter()
            .map(|(sku, q)| json!({ "sku_id": sku, "quantity": q }))
            .collect();
        let mut body = json!({
            "items": items,
            "shipping": { "method": "standard", "address": {
                "name": "Li Lei", "line1": "1 Shop Street", "city": "Hangzhou", "postal_code": "310000", "phone": "13800000000"
            }},
        });
        if let Some(c) = coupon_id {
            body["coupon_id"] = json!(c);
        }
        if let Some(r) = request_id {
            body["request_id"] = json!(r);
        }
        body
    }

    /// POST `body` as `user`; returns status and JSON.
    pub async fn post_as(&self, user_id: i64, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.address))
            .bearer_auth(self.token(user_id))
            .json(body)
            .send()
            .await
            .expect("request reaches the gateway");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A payment callback as the provider sends it: raw JSON body and its signature.
    pub async fn payment_callback(&self, body: &Value, signature: Option<String>) -> (u16, Value) {
        let raw = serde_json::to_vec(body).expect("json");
        let signature = signature.unwrap_or_else(|| {
            crate::routes::payments::sign(
                self.settings.payments.callback_secret.expose_secret().as_bytes(),
                &raw,
            )
        });
        let response = self
            .client
            .post(format!("{}/api/payments/callback", self.address))
            .header("content-type", "application/json")
            .header(crate::routes::payments::SIGNATURE_HEADER, signature)
            .body(raw)
            .send()
            .await
            .expect("request reaches the gateway");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub fn pool(&self) -> order_core::postgres::Pool {
        order_core::postgres::lazy_pool(&self.settings.database).expect("pool")
    }
}

impl TestApp {
    /// Wait (up to 30 s) until `order_id` is on this deployment's seckill-orders topic, read
    /// from the start by a subscription of the test's own: the order is on its way.
    /// A subscription of the test's own on this deployment's seckill-orders topic, from its
    /// first message.
    pub async fn observe_orders_topic(&self) -> pulsar::consumer::Consumer<Vec<u8>, pulsar::TokioExecutor> {
        let client = order_core::bus::connect(&self.settings.pulsar)
            .await
            .expect("pulsar");
        client
            .consumer()
            .with_topic(
                self.settings
                    .pulsar
                    .topic(&self.settings.pulsar.seckill_orders_topic),
            )
            .with_subscription(unique("test-observer"))
            .with_options(
                pulsar::ConsumerOptions::default()
                    .with_initial_position(pulsar::consumer::InitialPosition::Earliest),
            )
            .build()
            .await
            .expect("subscribe")
    }

    /// Wait (up to 30 s) until `order_id` is on this deployment's seckill-orders topic: the
    /// order is on its way.
    pub async fn wait_for_order_on_topic(&self, order_id: order_core::domain::ids::OrderId) {
        use futures::StreamExt;
        let mut consumer = self.observe_orders_topic().await;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let msg = tokio::time::timeout_at(deadline, consumer.next())
                .await
                .unwrap_or_else(|_| panic!("order {order_id} did not reach the topic within 30 s"))
                .expect("stream open")
                .expect("message");
            let event: order_core::domain::events::SeckillOrderAccepted =
                serde_json::from_slice(&msg.payload.data).expect("event JSON");
            if event.order_id == order_id {
                return;
            }
        }
    }
}
