//! `bench demo`: a small flash sale a newcomer can watch on the dashboard. A sale that
//! starts in a few seconds, a thousand buyers who fetch their sale tokens and buy at the
//! start (some retrying, some trying twice), then the outcome: sold, persisted, oversold,
//! lost.

use std::time::Duration;

use crate::flash_sale::{FlashSale, System};
use crate::loadgen::Pace;
use crate::target::Target;

#[derive(Debug, Clone)]
pub struct Demo {
    pub buyers: u64,
    pub stock: i64,
    pub starts_in: Duration,
}

impl Demo {
    /// Run it; `Ok(true)` when every invariant held.
    pub async fn run(&self, target: &Target) -> anyhow::Result<bool> {
        let starts_at = chrono::Utc::now() + chrono::Duration::from_std(self.starts_in)?;
        let promotion_id = target
            .create_sale("Demo flash sale", self.stock, 1, starts_at)
            .await?;
        println!(
            "sale #{promotion_id}: {} units, {} buyers, starts at {} — watch it on {}/admin/",
            self.stock,
            self.buyers,
            starts_at.format("%H:%M:%S"),
            target.base
        );
        let wait = (starts_at - chrono::Utc::now()).to_std().unwrap_or_default();
        println!("waiting {:.0} s for the start…", wait.as_secs_f64().ceil());
        tokio::time::sleep(wait).await;
        let sale = FlashSale {
            users: self.buyers,
            stock: self.stock,
            per_user_limit: 1,
            connections: 32,
            pace: Pace::Fixed(self.buyers as f64 / 2.0),
            // Every buyer tries about twice: 10 % retries of a request id, 10 % new tries.
            duration: Duration::from_secs(4),
            retry_fraction: 0.1,
            again_fraction: 0.1,
            seed: 1,
            max_requests: 0,
            drain_timeout: Duration::from_secs(120),
            verify: true,
            app_retries: Some(Duration::from_secs(30)),
        };
        let report = sale
            .run(target, "demo", &System::Gateway, Some(promotion_id))
            .await?;
        let v = report
            .verification
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("the demo sale was not verified"))?;
        println!(
            "requests {} · sold {} of {} · persisted {} · oversold {} · lost {} · duplicated {} · over the per-buyer limit {}",
            report.requests, v.accepted, self.stock, v.persisted, v.oversold, v.lost, v.duplicated, v.users_over_limit
        );
        println!("{}", v.summary());
        Ok(v.ok())
    }
}
