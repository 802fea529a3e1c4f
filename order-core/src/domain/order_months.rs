//! Calendar months of order ids: the unit orders are partitioned, archived and dropped by.
//!
//! An order id carries the millisecond it was minted, so a UTC month is a range of ids
//! (`first_id..end_id`). The database holds one partition of `orders` and of `order_items`
//! per month; archival moves whole months out once they are older than the retention.

use std::fmt;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};

use crate::domain::ids::OrderId;

/// One UTC calendar month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OrderMonth {
    year: i32,
    /// 1 to 12.
    month: u32,
}

impl OrderMonth {
    /// The month of `year`-`month`, if `month` is 1 to 12 and the year is one chrono handles.
    pub fn new(year: i32, month: u32) -> Option<Self> {
        NaiveDate::from_ymd_opt(year, month, 1).map(|_| Self { year, month })
    }

    /// The month `at` falls in.
    pub fn of(at: DateTime<Utc>) -> Self {
        Self {
            year: at.year(),
            month: at.month(),
        }
    }

    /// The month an order id was minted in.
    pub fn of_order(id: OrderId) -> Self {
        let minted = Utc
            .timestamp_millis_opt(id.minted_at_ms())
            .single()
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        Self::of(minted)
    }

    /// The month a partition's name (`orders_y2026m01`, `order_items_y2026m01`) stands for.
    pub fn of_partition(name: &str) -> Option<Self> {
        let suffix = name.rsplit('_').next()?;
        let (year, month) = suffix.strip_prefix('y')?.split_once('m')?;
        if year.len() != 4 || month.len() != 2 {
            return None;
        }
        Self::new(year.parse().ok()?, month.parse().ok()?)
    }

    pub fn first_day(self) -> NaiveDate {
        NaiveDate::from_ymd_opt(self.year, self.month, 1).expect("validated at construction")
    }

    pub fn starts_at(self) -> DateTime<Utc> {
        self.first_day()
            .and_hms_opt(0, 0, 0)
            .expect("midnight exists")
            .and_utc()
    }

    /// `n` months later (earlier when negative).
    pub fn plus(self, n: i32) -> Self {
        let index = self.year * 12 + self.month as i32 - 1 + n;
        Self {
            year: index.div_euclid(12),
            month: index.rem_euclid(12) as u32 + 1,
        }
    }

    /// The first order id minted in this month.
    pub fn first_id(self) -> i64 {
        OrderId::first_minted_at_ms(self.starts_at().timestamp_millis())
    }

    /// The first order id minted after this month.
    pub fn end_id(self) -> i64 {
        self.plus(1).first_id()
    }

    /// `y2026m01`: the suffix of the month's partitions.
    pub fn partition_suffix(self) -> String {
        format!("y{:04}m{:02}", self.year, self.month)
    }

    /// Whether every order of this month is older than `retention_months` full months at
    /// `now`: the month ended at least that long before the start of `now`'s month.
    pub fn is_past_retention(self, now: DateTime<Utc>, retention_months: u32) -> bool {
        self.plus(1 + retention_months as i32) <= Self::of(now)
    }
}

/// `2026-01`.
impl fmt::Display for OrderMonth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().expect("a timestamp")
    }

    #[test]
    fn a_month_is_the_range_of_the_ids_minted_in_it() {
        let jan = OrderMonth::new(2026, 1).expect("valid");
        assert_eq!(jan.first_id(), 0);
        assert_eq!(jan.end_id(), jan.plus(1).first_id());
        let late_in_march = OrderId(OrderMonth::new(2026, 4).expect("valid").first_id() - 1);
        assert_eq!(OrderMonth::of_order(late_in_march).to_string(), "2026-03");
        assert_eq!(OrderMonth::of_order(OrderId(1)), jan);
    }

    #[test]
    fn months_roll_over_years_both_ways() {
        let dec = OrderMonth::new(2026, 12).expect("valid");
        assert_eq!(dec.plus(1).to_string(), "2027-01");
        assert_eq!(dec.plus(-12).to_string(), "2025-12");
        assert_eq!(dec.plus(-13).to_string(), "2025-11");
        assert_eq!(OrderMonth::new(2026, 13), None);
    }

    #[test]
    fn partition_names_give_their_month_back() {
        let m = OrderMonth::new(2027, 3).expect("valid");
        assert_eq!(
            OrderMonth::of_partition(&format!("orders_{}", m.partition_suffix())),
            Some(m)
        );
        assert_eq!(OrderMonth::of_partition("order_items_y2027m03"), Some(m));
        for bad in [
            "orders",
            "orders_y2027",
            "orders_y27m03",
            "orders_y2027m13",
            "order_items",
        ] {
            assert_eq!(OrderMonth::of_partition(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_month_is_past_retention_once_it_ended_that_many_months_ago() {
        let jan = OrderMonth::new(2026, 1).expect("valid");
        // January ended on Feb 1st; twelve full months later is Feb 1st 2027.
        assert!(!jan.is_past_retention(at("2027-01-31T23:59:59Z"), 12));
        assert!(jan.is_past_retention(at("2027-02-01T00:00:00Z"), 12));
        assert!(jan.is_past_retention(at("2026-02-01T00:00:00Z"), 0));
    }
}
