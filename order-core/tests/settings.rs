//! The layered configuration: files, APP_ variables, URL short forms and key-naming errors.

use std::collections::HashMap;

use order_core::runtime::settings::{
    DatabaseSettings, Environment, PulsarSettings, RedisSettings, ServerSettings, SettingsError,
    SettingsSource, Validate,
};
use order_core::test_support::workspace_root;
use secrecy::ExposeSecret;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Sample {
    gateway: ServerSettings,
    redis: RedisSettings,
    database: DatabaseSettings,
    pulsar: PulsarSettings,
}

impl Validate for Sample {
    fn validate(&self) -> Result<(), SettingsError> {
        self.redis.validate()?;
        self.database.validate()?;
        self.pulsar.validate()
    }
}

fn source(environment: Environment, vars: &[(&str, &str)]) -> SettingsSource {
    let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    SettingsSource::new(workspace_root().join("config"), environment, vars)
}

#[test]
fn local_file_overrides_base() {
    let s: Sample = source(Environment::Local, &[])
        .load()
        .expect("local settings load");
    assert_eq!(s.redis.url.expose_secret(), "redis://127.0.0.1:16379");
    assert_eq!(s.gateway.port, 8080, "from base.toml");
    assert_eq!(
        s.pulsar.topic("seckill-orders"),
        "persistent://public/default/seckill-orders"
    );
}

#[test]
fn app_variables_override_files() {
    let s: Sample = source(
        Environment::Local,
        &[("APP_GATEWAY__PORT", "9123"), ("APP_PULSAR__TENANT", "shop")],
    )
    .load()
    .expect("settings load");
    assert_eq!(s.gateway.port, 9123);
    assert_eq!(s.pulsar.tenant, "shop");
}

#[test]
fn url_short_forms_apply_but_app_variables_win() {
    let s: Sample = source(
        Environment::Local,
        &[
            ("REDIS_URL", "redis://10.0.0.1:7000"),
            ("DATABASE_URL", "postgres://u:p@db.internal:5432/shop"),
            ("APP_DATABASE__URL", "postgres://u:p@db2.internal:5432/shop"),
        ],
    )
    .load()
    .expect("settings load");
    assert_eq!(s.redis.url.expose_secret(), "redis://10.0.0.1:7000");
    assert_eq!(
        s.database.url.expose_secret(),
        "postgres://u:p@db2.internal:5432/shop"
    );
}

#[test]
fn a_wrongly_typed_value_names_its_key() {
    let err = source(Environment::Local, &[("APP_GATEWAY__PORT", "eighty")])
        .load::<Sample>()
        .expect_err("a non-numeric port must be rejected");
    assert!(
        err.to_string().contains("gateway.port"),
        "error should name the key: {err}"
    );
}

#[test]
fn a_semantically_invalid_value_names_its_key() {
    let err = source(Environment::Local, &[("APP_PULSAR__URL", "http://broker:6650")])
        .load::<Sample>()
        .expect_err("a non-pulsar URL must be rejected");
    assert!(
        err.to_string().contains("pulsar.url"),
        "error should name the key: {err}"
    );
    let err = source(Environment::Local, &[("APP_DATABASE__URL", "mysql://x")])
        .load::<Sample>()
        .expect_err("a non-postgres URL must be rejected");
    assert!(
        err.to_string().contains("database.url"),
        "error should name the key: {err}"
    );
}

#[test]
fn production_keeps_secrets_out_of_files() {
    // production.toml sets no URLs with passwords and no auth secrets; base values apply.
    let s: Sample = source(Environment::Production, &[])
        .load()
        .expect("production settings load");
    assert_eq!(s.gateway.host, "0.0.0.0");
    assert_eq!(s.pulsar.namespace, "orders");
}

#[test]
fn unknown_environment_is_rejected() {
    let err = "staging"
        .parse::<Environment>()
        .expect_err("only local and production exist");
    assert!(err.to_string().contains("APP_ENVIRONMENT"));
}

#[test]
fn database_name_can_be_swapped() {
    let s: Sample = source(
        Environment::Local,
        &[("DATABASE_URL", "postgres://u:p@h:5432/shop?sslmode=disable")],
    )
    .load()
    .expect("settings load");
    let other = s.database.with_database_name("test_1");
    assert_eq!(
        other.url.expose_secret(),
        "postgres://u:p@h:5432/test_1?sslmode=disable"
    );
}
