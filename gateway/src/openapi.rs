//! The OpenAPI 3 document, generated from the handlers' annotations and served at
//! `/openapi.json`. A test checks it lists every route the router serves.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "seckill gateway", description = "Flash-sale gateway: seckill, checkout, payments, admin"),
    paths(crate::routes::dashboard::page, crate::routes::dashboard::pipeline, crate::routes::health::healthz, crate::routes::health::readyz, crate::routes::health::metrics, crate::routes::health::openapi, crate::routes::seckill::place_seckill_order, crate::routes::sale_tokens::get_challenge, crate::routes::sale_tokens::issue_sale_token, crate::routes::orders::get_order, crate::routes::promotions::get_promotion, crate::routes::checkout::list_orders, crate::routes::checkout::pay, crate::routes::checkout::cancel, crate::routes::checkout::request_refund, crate::routes::checkout::preview, crate::routes::checkout::place, crate::routes::checkout::my_coupons, crate::routes::payments::payment_callback, crate::routes::admin::create_promotion, crate::routes::admin::list_promotions, crate::routes::admin::get_promotion, crate::routes::admin::patch_promotion, crate::routes::admin::delete_promotion, crate::routes::admin::pause_promotion, crate::routes::admin::resume_promotion, crate::routes::admin::add_stock, crate::routes::admin::warmup_promotion, crate::routes::admin::promotion_stats, crate::routes::admin::reconcile_promotion, crate::routes::catalog::create_sku, crate::routes::catalog::get_sku, crate::routes::catalog::patch_sku, crate::routes::catalog::create_coupon, crate::routes::catalog::grant_coupon, crate::routes::catalog::approve_refund, crate::routes::catalog::complete_order),
    modifiers(&Security, &ClosedVariants)
)]
struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "user_jwt",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "admin_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                "Bearer <admin key>",
            ))),
        );
    }
}

/// Bodies that are internally tagged enums refusing unknown fields. utoipa marks a struct
/// with `deny_unknown_fields` as closed (`additionalProperties: false`) but not the variants
/// of such an enum, so without this the spec would allow fields the server refuses.
const CLOSED_TAGGED_BODIES: [&str; 2] = ["CouponTemplateInput", "Challenge"];

struct ClosedVariants;

impl Modify for ClosedVariants {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::{AdditionalProperties, Schema};
        use utoipa::openapi::RefOr;
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        for name in CLOSED_TAGGED_BODIES {
            let Some(RefOr::T(Schema::OneOf(one_of))) = components.schemas.get_mut(name) else {
                continue;
            };
            for variant in &mut one_of.items {
                if let RefOr::T(Schema::Object(object)) = variant {
                    object.additional_properties = Some(Box::new(AdditionalProperties::FreeForm(false)));
                }
            }
        }
    }
}

pub fn spec() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
