//! The gateway's HTTP routes.

pub(crate) mod admin;
pub(crate) mod catalog;
pub mod checkout;
mod closed_sales;
pub(crate) mod dashboard;
pub(crate) mod health;
pub(crate) mod orders;
pub mod payments;
pub(crate) mod promotions;
pub(crate) mod sale_tokens;
pub mod seckill;

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post, MethodRouter};
use axum::Router;

use crate::error::ApiError;
use crate::state::AppState;

/// Request bodies are small JSON documents; anything bigger is refused before parsing.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Routes registered together with the (method, path) pairs they serve, so the router and
/// the route table the OpenAPI test checks come from one list.
struct Routes {
    router: Router<AppState>,
    table: Vec<(&'static str, &'static str)>,
}

impl Routes {
    fn new() -> Self {
        Self {
            router: Router::new(),
            table: Vec::new(),
        }
    }

    fn at(mut self, path: &'static str, methods: Vec<(&'static str, MethodRouter<AppState>)>) -> Self {
        let mut combined = MethodRouter::new();
        for (method, handler) in methods {
            self.table.push((method, path));
            combined = combined.merge(handler);
        }
        self.router = self.router.route(path, combined);
        self
    }
}

/// App endpoints behind the per-IP limit.
fn app_routes() -> Routes {
    Routes::new()
        .at(
            "/api/seckill/{promotion_id}/orders",
            vec![("post", post(seckill::place_seckill_order))],
        )
        .at(
            "/api/seckill/{promotion_id}/challenge",
            vec![("get", get(sale_tokens::get_challenge))],
        )
        .at(
            "/api/seckill/{promotion_id}/token",
            vec![("post", post(sale_tokens::issue_sale_token))],
        )
        .at("/api/orders", vec![("get", get(checkout::list_orders))])
        .at("/api/orders/{id}", vec![("get", get(orders::get_order))])
        .at("/api/orders/{id}/pay", vec![("post", post(checkout::pay))])
        .at("/api/orders/{id}/cancel", vec![("post", post(checkout::cancel))])
        .at(
            "/api/orders/{id}/refund",
            vec![("post", post(checkout::request_refund))],
        )
        .at("/api/checkout/preview", vec![("post", post(checkout::preview))])
        .at("/api/checkout", vec![("post", post(checkout::place))])
        .at("/api/coupons", vec![("get", get(checkout::my_coupons))])
        .at(
            "/api/promotions/{id}",
            vec![("get", get(promotions::get_promotion))],
        )
}

/// Everything else: the payment provider (its few hosts are not limited per IP), admin,
/// operations.
fn other_routes() -> Routes {
    Routes::new()
        .at(
            "/api/payments/callback",
            vec![("post", post(payments::payment_callback))],
        )
        .at(
            "/admin/promotions",
            vec![
                ("post", post(admin::create_promotion)),
                ("get", get(admin::list_promotions)),
            ],
        )
        .at(
            "/admin/promotions/{id}",
            vec![
                ("get", get(admin::get_promotion)),
                ("patch", patch(admin::patch_promotion)),
                ("delete", delete(admin::delete_promotion)),
            ],
        )
        .at(
            "/admin/promotions/{id}/pause",
            vec![("post", post(admin::pause_promotion))],
        )
        .at(
            "/admin/promotions/{id}/resume",
            vec![("post", post(admin::resume_promotion))],
        )
        .at(
            "/admin/promotions/{id}/stock",
            vec![("post", post(admin::add_stock))],
        )
        .at(
            "/admin/promotions/{id}/warmup",
            vec![("post", post(admin::warmup_promotion))],
        )
        .at(
            "/admin/promotions/{id}/stats",
            vec![("get", get(admin::promotion_stats))],
        )
        .at(
            "/admin/promotions/{id}/reconcile",
            vec![("post", post(admin::reconcile_promotion))],
        )
        .at("/admin/skus", vec![("post", post(catalog::create_sku))])
        .at(
            "/admin/skus/{id}",
            vec![
                ("get", get(catalog::get_sku)),
                ("patch", patch(catalog::patch_sku)),
            ],
        )
        .at("/admin/coupons", vec![("post", post(catalog::create_coupon))])
        .at(
            "/admin/coupons/{id}/grants",
            vec![("post", post(catalog::grant_coupon))],
        )
        .at(
            "/admin/orders/{id}/refund",
            vec![("post", post(catalog::approve_refund))],
        )
        .at(
            "/admin/orders/{id}/complete",
            vec![("post", post(catalog::complete_order))],
        )
        .at("/admin/", vec![("get", get(dashboard::page))])
        .at("/admin/pipeline", vec![("get", get(dashboard::pipeline))])
        .at("/healthz", vec![("get", get(health::healthz))])
        .at("/readyz", vec![("get", get(health::readyz))])
        .at("/metrics", vec![("get", get(health::metrics))])
        .at("/openapi.json", vec![("get", get(health::openapi))])
}

/// Every (method, path template) the gateway serves.
pub fn route_table() -> Vec<(&'static str, &'static str)> {
    let mut table = app_routes().table;
    table.extend(other_routes().table);
    table
}

pub fn router(state: AppState) -> Router {
    let limited = app_routes()
        .router
        .route_layer(middleware::from_fn_with_state(state.clone(), limit_per_ip));
    Router::new()
        .merge(limited)
        .merge(other_routes().router)
        // After routing, so the route template is known (unmatched paths are not counted).
        .route_layer(middleware::from_fn_with_state(state.clone(), track_requests))
        .fallback(|| async { ApiError::not_found("not_found", "no such endpoint") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // A seckill order takes its place in the limit once its body is in…
        .layer(middleware::from_fn_with_state(
            state.clone(),
            admit_seckill_orders,
        ))
        .layer(middleware::from_fn_with_state(
            (state.body_read_timeout, MAX_BODY_BYTES),
            crate::serve::read_body_within_deadline,
        ))
        // …and one that would be shed anyway is refused before its body is read.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            shed_full_seckill_orders,
        ))
        // Before any of that, a closed sale's orders are refused from the cache.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            closed_sales::refuse_orders_for_closed_sales,
        ))
        .layer(middleware::from_fn(crate::error::log_failures))
        .layer(middleware::from_fn(crate::request_id::with_request_id))
        .with_state(state)
}

/// The sale of `POST /api/seckill/{id}/orders`, from the raw path (no routing yet); `None`
/// for every other request.
fn seckill_order_sale<'p>(method: &axum::http::Method, path: &'p str) -> Option<&'p str> {
    if method != axum::http::Method::POST {
        return None;
    }
    path.strip_prefix("/api/seckill/")?.strip_suffix("/orders")
}

/// Seckill orders over the adaptive concurrency limit get 503 `overloaded` before their body
/// is read (see `shedding`); every other route passes untouched.
async fn shed_full_seckill_orders(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match seckill_order_sale(request.method(), request.uri().path()) {
        Some(sale) if state.seckill_limiter.is_full() => {
            state.seckill_limiter.count_shed();
            overloaded(&state, sale)
        }
        _ => next.run(request).await,
    }
}

/// A seckill order's place in the limit, held until its answer; the handler marks it when it
/// reaches Redis (`shedding::WorkedOn`).
async fn admit_seckill_orders(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let Some(sale) = seckill_order_sale(request.method(), request.uri().path()) else {
        return next.run(request).await;
    };
    match state.seckill_limiter.admit() {
        Some(admitted) => {
            request.extensions_mut().insert(admitted.worked_on());
            next.run(request).await
        }
        None => {
            let sale = sale.to_owned();
            overloaded(&state, &sale)
        }
    }
}

fn overloaded(state: &AppState, sale: &str) -> Response {
    if let Some(id) = sale
        .parse::<i64>()
        .ok()
        .filter(|id| state.cache.get(*id).is_some())
    {
        state
            .counters
            .count(id, crate::sale_counters::SaleEvent::Overloaded);
    }
    metrics::counter!("seckill_orders_total", "outcome" => "overloaded").increment(1);
    ApiError::overloaded().into_response()
}

async fn limit_per_ip(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let forwarded = state
        .limits
        .trust_forwarded_for
        .then(|| {
            request
                .headers()
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .and_then(|ip| ip.trim().parse::<IpAddr>().ok())
        })
        .flatten();
    if let Some(ip) = forwarded.or(peer) {
        state.limits.check_ip(ip)?;
    }
    Ok(next.run(request).await)
}

/// `seckill_http_requests_total{route, method, status}` and
/// `seckill_http_request_duration_seconds{route, method}`, by route template (fixed
/// cardinality).
async fn track_requests(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        // `/api/orders/:id` rather than `{id}`: braces in label values trip some scrapers.
        .map_or_else(
            || "unmatched".to_owned(),
            |p| p.as_str().replace('{', ":").replace('}', ""),
        );
    let method = request.method().as_str().to_owned();
    // Normal traffic, whose latency the seckill limit protects: the app routes but seckill's,
    // long polls excepted (they wait on purpose).
    let normal = route.starts_with("/api/")
        && !route.starts_with("/api/seckill/")
        && !request.uri().query().is_some_and(|q| q.contains("wait_ms"));
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    if normal {
        state.seckill_limiter.record_normal(started.elapsed());
    }
    let status = response.status().as_u16().to_string();
    metrics::counter!("seckill_http_requests_total", "route" => route.clone(), "method" => method.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("seckill_http_request_duration_seconds", "route" => route, "method" => method)
        .record(started.elapsed().as_secs_f64());
    response
}
