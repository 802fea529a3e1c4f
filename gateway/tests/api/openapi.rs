//! `/openapi.json`: it documents exactly the routes the gateway serves, every schema
//! reference resolves, and it reads back as an OpenAPI document.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::TestApp;

fn refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref") {
                out.push(r.clone());
            }
            map.values().for_each(|v| refs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn the_spec_documents_every_route_and_its_references_resolve() {
    let app = TestApp::spawn().await;
    let response = app.get("/openapi.json").await;
    assert_eq!(response.status(), 200);
    let spec: Value = response.json().await.expect("json");
    assert!(
        spec["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{}",
        spec["openapi"]
    );

    let mut documented = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for method in ["get", "post", "put", "patch", "delete"] {
            if let Some(op) = item.get(method) {
                documented.insert((method.to_owned(), path.clone()));
                let responses = op["responses"].as_object().expect("responses");
                assert!(
                    responses.keys().any(|code| code.starts_with('2')),
                    "{method} {path} documents no success response"
                );
            }
        }
    }
    let served: BTreeSet<(String, String)> = gateway::routes::route_table()
        .into_iter()
        .map(|(m, p)| (m.to_owned(), p.to_owned()))
        .collect();
    let missing: Vec<_> = served.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&served).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "undocumented: {missing:?}; not served: {extra:?}"
    );

    let schemas = spec["components"]["schemas"].as_object().expect("schemas");
    let mut all = Vec::new();
    refs(&spec, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("unexpected $ref {r}"));
        assert!(schemas.contains_key(name), "dangling $ref {r}");
    }
    assert!(spec["components"]["securitySchemes"]["user_jwt"].is_object());
    assert!(spec["components"]["securitySchemes"]["admin_key"].is_object());
    serde_json::from_value::<utoipa::openapi::OpenApi>(spec).expect("reads back as an OpenAPI document");
}

/// The spec states the limits the server enforces, so a client generated from it sends what
/// the server accepts: positive ids, the request-id pattern, quantity bounds; and no admin
/// route claims that checkout may be busy.
#[tokio::test]
async fn the_spec_states_the_limits_the_server_enforces() {
    let app = TestApp::spawn().await;
    let spec: Value = app.get("/openapi.json").await.json().await.expect("json");
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("operation") {
            for param in op["parameters"].as_array().into_iter().flatten() {
                if param["in"] == "path" && param["schema"]["type"] == "integer" {
                    assert_eq!(param["schema"]["minimum"], 1, "{method} {path}: {param}");
                }
            }
            let text = op["responses"].to_string();
            if path.starts_with("/admin") {
                assert!(!text.contains("checkout is busy"), "{method} {path}");
            }
            let api = path.starts_with("/api")
                || path.starts_with("/admin/promotions")
                || path.starts_with("/admin/skus");
            if api && op["responses"].get("503").is_some() {
                assert!(
                    op["responses"].get("500").is_some(),
                    "{method} {path} documents no 500"
                );
            }
        }
    }
    let order = &spec["components"]["schemas"]["SeckillOrderRequest"]["properties"];
    assert_eq!(
        (
            order["quantity"]["minimum"].as_i64(),
            order["quantity"]["maximum"].as_i64()
        ),
        (Some(1), Some(100))
    );
    let pattern = order["request_id"]["pattern"].as_str().expect("a pattern");
    for (request_id, accepted) in [("req-1.a_B", true), ("", false), ("has space", false)] {
        let (status, body) = {
            let id = app.create_promotion(5, 1, chrono::Duration::seconds(-1)).await["id"]
                .as_i64()
                .expect("id");
            app.place(id, 1, request_id, 1).await
        };
        assert_eq!(
            status == 202,
            accepted,
            "{request_id:?} under {pattern}: {status} {body}"
        );
    }
}

/// Where the spec and the server disagreed, schemathesis found it: a coupon body that mixes
/// the two kinds' fields (the spec allowed it, the server refuses it), and integers written
/// as `100.0` (JSON Schema integers, refused by serde). Each kind is now a closed variant of
/// the spec, and integral numbers are read as the integers they are.
#[tokio::test]
async fn each_coupon_kind_takes_only_its_fields_and_integral_numbers_are_integers() {
    let app = TestApp::spawn().await;
    let spec: Value = app.get("/openapi.json").await.json().await.expect("json");
    let kinds = spec["components"]["schemas"]["CouponTemplateInput"]["oneOf"]
        .as_array()
        .expect("one variant per kind");
    assert_eq!(kinds.len(), 2);
    for kind in kinds {
        assert_eq!(kind["additionalProperties"], false, "{kind}");
    }

    let now = chrono::Utc::now();
    let coupon = |extra: Value| {
        let mut body = json!({ "code": format!("C{}", extra.to_string().len()), "kind": "fixed",
                               "amount_off_cents": 100.0, "valid_from": now,
                               "valid_until": now + chrono::Duration::days(1) });
        body.as_object_mut()
            .expect("object")
            .extend(extra.as_object().expect("object").clone());
        body
    };
    let mixed = app
        .admin(Method::POST, "/admin/coupons")
        .json(&coupon(json!({ "percent_off": 10 })))
        .send()
        .await
        .expect("mixed coupon");
    assert_eq!(mixed.status(), 422, "a fixed coupon with percent_off");
    let created = app
        .admin(Method::POST, "/admin/coupons")
        .json(&coupon(json!({})))
        .send()
        .await
        .expect("coupon");
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.expect("json");
    assert_eq!(created["amount_off_cents"], 100);

    let sku = app
        .admin(Method::POST, "/admin/skus")
        .json(&json!({ "id": "floaty", "title": "Float", "price_cents": 1e3, "stock": 5.0 }))
        .send()
        .await
        .expect("sku");
    assert_eq!(sku.status(), 201);
    let half = app
        .admin(Method::POST, "/admin/skus")
        .json(&json!({ "id": "halfy", "title": "Half", "price_cents": 10.5, "stock": 5 }))
        .send()
        .await
        .expect("sku");
    assert_eq!(half.status(), 422, "10.5 is not an integer");
}
