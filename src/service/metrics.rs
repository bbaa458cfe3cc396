//! Prometheus metrics of the service.

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// Every metric the service exports on `/metrics`.
#[derive(Clone)]
pub struct Metrics {
    /// The registry `/metrics` encodes.
    pub registry: Registry,
    /// Trade events consumed.
    pub trades_consumed: IntCounter,
    /// Engine timestamps committed to PostgreSQL.
    pub timestamps_committed: IntCounter,
    /// Correction events committed.
    pub corrections_emitted: IntCounter,
    /// Dead letters committed.
    pub dead_letters: IntCounter,
    /// Correction / dead-letter messages published to Kafka, by topic.
    pub published: IntCounterVec,
    /// Retries by operation.
    pub retries: IntCounterVec,
    /// Consumer lag per partition (high watermark - next offset).
    pub consumer_lag: IntGaugeVec,
    /// Engine timestamps closed but not yet committed.
    pub frontier_lag: IntGauge,
    /// Seconds from the first message of a batch to its commit.
    pub batch_latency: Histogram,
    /// Seconds one PostgreSQL commit took.
    pub commit_latency: Histogram,
    /// Seconds from commit to the publisher's delivery acknowledgement.
    pub publish_latency: Histogram,
    /// Open custodian breaks by kind.
    pub open_breaks: IntGaugeVec,
    /// Seconds since the oldest open break was opened.
    pub oldest_open_break_seconds: IntGauge,
    /// Open sequence gaps.
    pub open_gaps: IntGauge,
    /// Seconds since the oldest open gap's row was written.
    pub oldest_open_gap_seconds: IntGauge,
    /// Live SQL queries attached to the engine.
    pub queries_attached: IntGauge,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> prometheus::Result<Metrics> {
        let registry = Registry::new_custom(Some("deltabook".into()), None)?;
        let buckets = vec![
            0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
        ];
        let m = Metrics {
            trades_consumed: IntCounter::new("trades_consumed_total", "Trade events consumed")?,
            timestamps_committed: IntCounter::new(
                "timestamps_committed_total",
                "Engine timestamps committed",
            )?,
            corrections_emitted: IntCounter::new(
                "corrections_emitted_total",
                "Correction events committed",
            )?,
            dead_letters: IntCounter::new("dead_letters_total", "Rejected events committed")?,
            published: IntCounterVec::new(
                Opts::new("published_total", "Messages published by the outbox"),
                &["topic"],
            )?,
            retries: IntCounterVec::new(
                Opts::new("retries_total", "Retries by operation"),
                &["operation"],
            )?,
            consumer_lag: IntGaugeVec::new(
                Opts::new("consumer_lag", "High watermark minus next offset"),
                &["topic", "partition"],
            )?,
            frontier_lag: IntGauge::new(
                "frontier_lag_timestamps",
                "Engine timestamps closed but not yet committed",
            )?,
            batch_latency: Histogram::with_opts(
                HistogramOpts::new(
                    "batch_latency_seconds",
                    "First message of a batch to its commit",
                )
                .buckets(buckets.clone()),
            )?,
            commit_latency: Histogram::with_opts(
                HistogramOpts::new("commit_latency_seconds", "One PostgreSQL commit")
                    .buckets(buckets.clone()),
            )?,
            publish_latency: Histogram::with_opts(
                HistogramOpts::new("publish_latency_seconds", "Commit to Kafka acknowledgement")
                    .buckets(buckets),
            )?,
            open_breaks: IntGaugeVec::new(
                Opts::new("open_breaks", "Open custodian breaks by kind"),
                &["kind"],
            )?,
            oldest_open_break_seconds: IntGauge::new(
                "oldest_open_break_seconds",
                "Seconds since the oldest open break was opened",
            )?,
            open_gaps: IntGauge::new("open_gaps", "Open per-account sequence gaps")?,
            oldest_open_gap_seconds: IntGauge::new(
                "oldest_open_gap_seconds",
                "Seconds since the oldest open gap was last written",
            )?,
            queries_attached: IntGauge::new(
                "queries_attached",
                "Live SQL queries attached to the engine",
            )?,
            registry,
        };
        m.registry.register(Box::new(m.trades_consumed.clone()))?;
        m.registry
            .register(Box::new(m.timestamps_committed.clone()))?;
        m.registry
            .register(Box::new(m.corrections_emitted.clone()))?;
        m.registry.register(Box::new(m.dead_letters.clone()))?;
        m.registry.register(Box::new(m.published.clone()))?;
        m.registry.register(Box::new(m.retries.clone()))?;
        m.registry.register(Box::new(m.consumer_lag.clone()))?;
        m.registry.register(Box::new(m.frontier_lag.clone()))?;
        m.registry.register(Box::new(m.batch_latency.clone()))?;
        m.registry.register(Box::new(m.commit_latency.clone()))?;
        m.registry.register(Box::new(m.publish_latency.clone()))?;
        m.registry.register(Box::new(m.open_breaks.clone()))?;
        m.registry
            .register(Box::new(m.oldest_open_break_seconds.clone()))?;
        m.registry.register(Box::new(m.open_gaps.clone()))?;
        m.registry
            .register(Box::new(m.oldest_open_gap_seconds.clone()))?;
        m.registry.register(Box::new(m.queries_attached.clone()))?;
        Ok(m)
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        use prometheus::Encoder;
        let mut buffer = Vec::new();
        let encoder = prometheus::TextEncoder::new();
        if encoder
            .encode(&self.registry.gather(), &mut buffer)
            .is_err()
        {
            return String::new();
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}
