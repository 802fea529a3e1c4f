//! The writer subscription's backlog as the broker counts it: orders published to
//! seckill-orders and not yet acknowledged by any writer.
//!
//! Redis' pending set tells the same while Redis is whole, but it is lost with Redis, and the
//! Redis-loss runbook must know that every accepted order reached PostgreSQL before Redis is
//! rebuilt from it. Both pulsar-lite and Apache Pulsar export `pulsar_subscription_back_log`
//! on their Prometheus endpoint, labelled by topic and subscription; brokers refresh it every
//! few seconds, so a reading can be that old.

use std::time::Duration;

use serde::Serialize;

const SERIES: &str = "pulsar_subscription_back_log";

/// What `/status` shows: the backlog, or why it could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BacklogReading {
    /// Messages of seckill-orders the writer subscription has not acknowledged.
    pub messages: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone)]
pub struct BrokerBacklog {
    client: reqwest::Client,
    metrics_url: String,
    /// The topic as the broker may label it: the full name and the short one.
    topic_names: [String; 2],
    subscription: String,
}

impl BrokerBacklog {
    /// `metrics_url` empty: not configured (every reading says so).
    pub fn new(metrics_url: &str, full_topic: &str, subscription: &str) -> anyhow::Result<Self> {
        let short = full_topic.rsplit('/').next().unwrap_or(full_topic).to_owned();
        Ok(Self {
            // Well under the dashboard relay's own 2 s: a slow broker must not hide the rest
            // of `/status`.
            client: reqwest::Client::builder()
                .timeout(Duration::from_millis(800))
                .build()?,
            metrics_url: metrics_url.to_owned(),
            topic_names: [full_topic.to_owned(), short],
            subscription: subscription.to_owned(),
        })
    }

    pub async fn read(&self) -> BacklogReading {
        let failed = |error: String| BacklogReading {
            messages: None,
            error: Some(error),
        };
        if self.metrics_url.is_empty() {
            return failed("writer.broker_metrics_url is not set".into());
        }
        let text = match self.fetch().await {
            Ok(text) => text,
            Err(e) => return failed(format!("broker metrics unreadable: {e:#}")),
        };
        match backlog_in(&text, &self.topic_names, &self.subscription) {
            Some(messages) => BacklogReading {
                messages: Some(messages),
                error: None,
            },
            None => failed(format!(
                "the broker reports no {SERIES} for subscription {} yet",
                self.subscription
            )),
        }
    }

    async fn fetch(&self) -> anyhow::Result<String> {
        let response = self.client.get(&self.metrics_url).send().await?;
        Ok(response.error_for_status()?.text().await?)
    }
}

/// The backlog of `subscription` on the topic (any of `topic_names`, or a partition of it),
/// summed over partitions; `None` when the broker has no such series.
pub fn backlog_in(metrics: &str, topic_names: &[String], subscription: &str) -> Option<u64> {
    let mut found = None;
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix(SERIES).and_then(|r| r.strip_prefix('{')) else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once('}') else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split("\",")
                .filter_map(|pair| pair.split_once("=\""))
                .find(|(key, _)| key.trim() == name)
                .map(|(_, v)| v.trim_end_matches('"'))
        };
        let on_topic = label("topic").is_some_and(|topic| {
            topic_names.iter().any(|name| {
                topic == name
                    || topic
                        .strip_prefix(name.as_str())
                        .is_some_and(|p| p.starts_with("-partition-"))
            })
        });
        if !on_topic || label("subscription") != Some(subscription) {
            continue;
        }
        let Some(value) = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        *found.get_or_insert(0) += value.max(0.0).round() as u64;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        vec![
            "persistent://public/default/seckill-orders".into(),
            "seckill-orders".into(),
        ]
    }

    #[test]
    fn reads_the_writer_subscription_of_the_orders_topic_as_either_broker_labels_it() {
        let text = "# TYPE pulsar_subscription_back_log gauge\n\
            pulsar_subscription_back_log{cluster=\"pulsar-lite\",namespace=\"public/default\",partition=\"-1\",subscription=\"order-writer\",topic=\"seckill-orders\"} 39\n\
            pulsar_subscription_back_log{cluster=\"c\",subscription=\"other\",topic=\"seckill-orders\"} 500\n\
            pulsar_subscription_back_log{cluster=\"c\",subscription=\"order-writer\",topic=\"order-events\"} 700\n\
            pulsar_broker_msg_backlog 1239\n";
        assert_eq!(backlog_in(text, &names(), "order-writer"), Some(39));

        let pulsar = "pulsar_subscription_back_log{cluster=\"standalone\",namespace=\"public/default\",topic=\"persistent://public/default/seckill-orders-partition-0\",subscription=\"order-writer\"} 2.0\n\
            pulsar_subscription_back_log{cluster=\"standalone\",namespace=\"public/default\",topic=\"persistent://public/default/seckill-orders-partition-1\",subscription=\"order-writer\"} 3 1700000000000\n";
        assert_eq!(backlog_in(pulsar, &names(), "order-writer"), Some(5));
    }

    #[test]
    fn no_series_is_not_a_zero_backlog() {
        assert_eq!(
            backlog_in("pulsar_broker_msg_backlog 0\n", &names(), "order-writer"),
            None
        );
        assert_eq!(backlog_in("", &names(), "order-writer"), None);
    }
}
