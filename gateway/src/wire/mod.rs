//! The HTTP wire: request and response bodies, their JSON shape and their OpenAPI schemas.
//!
//! Architecture invariant: only the gateway knows HTTP and JSON bodies. The domain types in
//! order-core derive neither `Serialize`/`Deserialize` for a body nor `ToSchema`; each body
//! here maps onto a domain type (`From` one way, `into_domain` the other), and its schema
//! carries the same limits the server enforces, so a client generated from the spec sends
//! what the server accepts. Schema names stay those of the domain (`#[schema(as = …)]`).

pub mod catalog;
pub mod checkout;
pub mod promotions;
pub mod reports;

use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;

/// The OpenAPI shape of an order id: `OrderId` serialises as a decimal string, because a
/// 64-bit id is too large for JavaScript numbers.
#[derive(Debug)]
pub struct OrderIdSchema;

impl utoipa::PartialSchema for OrderIdSchema {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^[0-9]{1,19}$"))
            .description(Some(
                "A 64-bit order id as a decimal string (too large for JavaScript numbers)",
            ))
            .into()
    }
}

impl utoipa::ToSchema for OrderIdSchema {
    fn name() -> std::borrow::Cow<'static, str> {
        "OrderId".into()
    }
}

/// The OpenAPI shape of a user id: a positive 64-bit integer.
#[derive(Debug)]
pub struct UserIdSchema;

impl utoipa::PartialSchema for UserIdSchema {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::Int64,
            )))
            .minimum(Some(1))
            .into()
    }
}

impl utoipa::ToSchema for UserIdSchema {
    fn name() -> std::borrow::Cow<'static, str> {
        "UserId".into()
    }
}
