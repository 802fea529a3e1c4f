//! The catalog for operations staff: SKUs (what normal checkout sells) and coupon templates
//! with their grants to users.

use crate::domain::catalog::{
    valid_sku_id, CatalogError, CouponTemplate, CouponTemplateInput, Sku, SkuChanges,
};
use crate::postgres::{catalog as store, Error, Pool};

/// At most this many users get a coupon in one grant.
pub const MAX_GRANT: usize = 1000;

/// Why a catalog action did not happen.
#[derive(Debug, thiserror::Error)]
pub enum CatalogAdminError {
    #[error(transparent)]
    Invalid(#[from] CatalogError),
    #[error("user_ids: 1 to {MAX_GRANT} positive user ids")]
    InvalidUserIds,
    #[error("a SKU with this id exists")]
    SkuExists,
    #[error("no such SKU")]
    SkuNotFound,
    #[error("a coupon template with this code exists")]
    CodeTaken,
    #[error("no such coupon template")]
    CouponNotFound,
    #[error("catalog database call: {0}")]
    Database(#[from] Error),
}

#[derive(Debug, Clone)]
pub struct CatalogAdmin {
    db: Pool,
}

impl CatalogAdmin {
    pub fn new(db: Pool) -> Self {
        Self { db }
    }

    pub async fn add_sku(&self, sku: Sku) -> Result<Sku, CatalogAdminError> {
        sku.validate()?;
        if !store::insert_sku(&self.db, &sku).await? {
            return Err(CatalogAdminError::SkuExists);
        }
        Ok(sku)
    }

    pub async fn sku(&self, id: &str) -> Result<Sku, CatalogAdminError> {
        if !valid_sku_id(id) {
            return Err(CatalogAdminError::SkuNotFound);
        }
        store::get_sku(&self.db, id)
            .await?
            .ok_or(CatalogAdminError::SkuNotFound)
    }

    pub async fn edit_sku(&self, id: &str, changes: &SkuChanges) -> Result<Sku, CatalogAdminError> {
        if !valid_sku_id(id) {
            return Err(CatalogAdminError::SkuNotFound);
        }
        changes.validate()?;
        let sku = store::update_sku(&self.db, id, changes)
            .await?
            .ok_or(CatalogAdminError::SkuNotFound)?;
        tracing::info!(
            sku_id = %sku.id,
            title_changed = changes.title.is_some(),
            price_cents = ?changes.price_cents,
            stock = ?changes.stock,
            "SKU updated"
        );
        Ok(sku)
    }

    pub async fn add_coupon_template(
        &self,
        input: &CouponTemplateInput,
    ) -> Result<CouponTemplate, CatalogAdminError> {
        input.validate()?;
        store::insert_coupon_template(&self.db, input)
            .await?
            .ok_or(CatalogAdminError::CodeTaken)
    }

    /// One grant of the template per user id, in order; the grants' ids.
    pub async fn grant_coupon(
        &self,
        template_id: i64,
        user_ids: &[i64],
    ) -> Result<Vec<i64>, CatalogAdminError> {
        if user_ids.is_empty() || user_ids.len() > MAX_GRANT || user_ids.iter().any(|u| *u <= 0) {
            return Err(CatalogAdminError::InvalidUserIds);
        }
        store::coupon_template(&self.db, template_id)
            .await?
            .ok_or(CatalogAdminError::CouponNotFound)?;
        Ok(store::grant_coupons(&self.db, template_id, user_ids).await?)
    }
}
