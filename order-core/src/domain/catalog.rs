//! The catalog for normal checkout (SKUs with price and stock) and coupons (templates and
//! the grants users hold), with the rules a valid one follows.

use chrono::{DateTime, Utc};

use crate::domain::pricing::{Coupon, CouponRule, PricedSku};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sku {
    pub id: String,
    pub title: String,
    pub price_cents: i64,
    pub stock: i64,
}

impl Sku {
    pub fn priced(&self) -> PricedSku {
        PricedSku {
            sku_id: self.id.clone(),
            title: self.title.clone(),
            unit_price_cents: self.price_cents,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    #[error("{0}")]
    Invalid(&'static str),
}

/// A SKU id: 1 to 64 of `A-Z a-z 0-9 - _ .`.
pub fn valid_sku_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl Sku {
    pub fn validate(&self) -> Result<(), CatalogError> {
        if !valid_sku_id(&self.id) {
            return Err(CatalogError::Invalid("id must be 1 to 64 of A-Z a-z 0-9 - _ ."));
        }
        check_title(&self.title)?;
        check_price(self.price_cents)?;
        check_stock(self.stock)
    }
}

fn check_title(title: &str) -> Result<(), CatalogError> {
    if title.trim().is_empty() || title.chars().count() > 200 {
        return Err(CatalogError::Invalid("title must be 1 to 200 characters"));
    }
    Ok(())
}

fn check_price(price_cents: i64) -> Result<(), CatalogError> {
    if !(0..=crate::domain::promotion::MAX_PRICE_CENTS).contains(&price_cents) {
        return Err(CatalogError::Invalid("price_cents out of range"));
    }
    Ok(())
}

fn check_stock(stock: i64) -> Result<(), CatalogError> {
    if !(0..=crate::domain::promotion::MAX_STOCK).contains(&stock) {
        return Err(CatalogError::Invalid("stock out of range"));
    }
    Ok(())
}

/// A SKU edit: only the fields given are written. Checkouts change `stock` concurrently, so
/// writing back a stock value read before the edit would undo their decrements (or their
/// cancellations' returns).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SkuChanges {
    pub title: Option<String>,
    pub price_cents: Option<i64>,
    /// Sets the count outright (a stock take), whatever checkouts took meanwhile.
    pub stock: Option<i64>,
}

impl SkuChanges {
    pub fn validate(&self) -> Result<(), CatalogError> {
        if let Some(title) = &self.title {
            check_title(title)?;
        }
        if let Some(price_cents) = self.price_cents {
            check_price(price_cents)?;
        }
        if let Some(stock) = self.stock {
            check_stock(stock)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CouponTemplate {
    pub id: i64,
    pub code: String,
    pub kind: String,
    pub amount_off_cents: Option<i64>,
    pub percent_off: Option<i32>,
    pub max_discount_cents: Option<i64>,
    pub min_spend_cents: i64,
    pub valid_from: DateTime<Utc>,
    pub valid_until: DateTime<Utc>,
}

/// A new coupon template as an operator described it, not yet validated.
#[derive(Debug, Clone)]
pub struct CouponTemplateInput {
    pub code: String,
    /// `fixed` (with `amount_off_cents`) or `percent` (with `percent_off`).
    pub kind: String,
    pub amount_off_cents: Option<i64>,
    pub percent_off: Option<i32>,
    pub max_discount_cents: Option<i64>,
    pub min_spend_cents: i64,
    pub valid_from: DateTime<Utc>,
    pub valid_until: DateTime<Utc>,
}

impl CouponTemplateInput {
    pub fn validate(&self) -> Result<(), CatalogError> {
        if self.code.trim().is_empty() || self.code.chars().count() > 64 {
            return Err(CatalogError::Invalid("code must be 1 to 64 characters"));
        }
        match (self.kind.as_str(), self.amount_off_cents, self.percent_off) {
            ("fixed", Some(a), None) if a > 0 => {}
            ("percent", None, Some(p)) if (1..=100).contains(&p) => {}
            _ => {
                return Err(CatalogError::Invalid(
                    "kind fixed needs amount_off_cents > 0; kind percent needs percent_off 1..100",
                ))
            }
        }
        if self.max_discount_cents.is_some_and(|m| m <= 0) || self.min_spend_cents < 0 {
            return Err(CatalogError::Invalid(
                "max_discount_cents > 0 and min_spend_cents >= 0",
            ));
        }
        if self.valid_until <= self.valid_from {
            return Err(CatalogError::Invalid("valid_until must be after valid_from"));
        }
        Ok(())
    }
}

impl CouponTemplate {
    pub fn coupon(&self) -> Coupon {
        let rule = match (self.amount_off_cents, self.percent_off) {
            (Some(amount_off_cents), _) => CouponRule::Fixed { amount_off_cents },
            (None, percent) => CouponRule::Percent {
                percent_off: i64::from(percent.unwrap_or(0)),
                max_discount_cents: self.max_discount_cents,
            },
        };
        Coupon {
            rule,
            min_spend_cents: self.min_spend_cents,
            valid_from: self.valid_from,
            valid_until: self.valid_until,
        }
    }
}

/// Where a coupon grant stands: a checkout may redeem only an available one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantStatus {
    Available,
    Used,
    Revoked,
}

impl GrantStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            GrantStatus::Available => "available",
            GrantStatus::Used => "used",
            GrantStatus::Revoked => "revoked",
        }
    }
}

impl std::str::FromStr for GrantStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [GrantStatus::Available, GrantStatus::Used, GrantStatus::Revoked]
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| format!("unknown coupon grant status {s:?}"))
    }
}

/// A coupon a user holds: the grant and its template.
#[derive(Debug, Clone)]
pub struct HeldCoupon {
    pub grant_id: i64,
    pub status: GrantStatus,
    pub template: CouponTemplate,
}
