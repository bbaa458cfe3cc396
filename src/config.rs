//! Service configuration: TOML under `config/`, each key overridable by an
//! environment variable `DELTABOOK_<SECTION>_<KEY>` and then by
//! `--set section.key=value` flags, in that order.

use std::path::Path;

use anyhow::{bail, Context, Result};
use deltabook_dataflows::query::{Table, TableSet};
use deltabook_dataflows::runner::ClusterOptions;
use serde::Deserialize;

/// Most timely workers a run may ask for.
pub const MAX_WORKERS: usize = 256;

/// Kafka topics and batching.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers.
    pub brokers: String,
    /// Trade events topic.
    pub trades_topic: String,
    /// Its partition count.
    pub trades_partitions: i32,
    /// Lot-method map topic (key = scope, value = method, tombstone removes).
    pub methods_topic: String,
    /// Its partition count.
    pub methods_partitions: i32,
    /// Corrections topic.
    pub corrections_topic: String,
    /// Its partition count.
    pub corrections_partitions: i32,
    /// Dead-letter topic.
    pub dlq_topic: String,
    /// Its partition count.
    pub dlq_partitions: i32,
    /// Price ticks topic (key = security_id).
    pub prices_topic: String,
    /// Its partition count.
    pub prices_partitions: i32,
    /// Custodian statements topic (key = position key).
    pub custodian_topic: String,
    /// Its partition count.
    pub custodian_partitions: i32,
    /// Break events topic (key = position key).
    pub breaks_topic: String,
    /// Its partition count.
    pub breaks_partitions: i32,
    /// Conflated valuations topic (key = position key).
    pub valuations_topic: String,
    /// Its partition count.
    pub valuations_partitions: i32,
    /// Longest wait for more messages before an engine timestamp is cut.
    pub batch_linger_ms: u64,
    /// Most messages per engine timestamp.
    pub batch_max_messages: usize,
    /// Largest message fetched.
    pub message_max_bytes: usize,
}

/// PostgreSQL connection and writes.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// libpq-style connection string.
    pub url: String,
    /// Rows per multi-row statement.
    pub write_batch_rows: usize,
    /// Advisory lock key held by the writing engine.
    pub lock_key: i64,
}

/// Engine limits.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Timely worker threads.
    pub workers: usize,
    /// Computed but uncommitted timestamps before consumption pauses.
    pub max_uncommitted_timestamps: usize,
    /// A custodian break needs |internal - custodian| above this (a
    /// decimal string, `digits[.digits]`).
    pub break_tolerance: String,
}

impl EngineConfig {
    /// `break_tolerance` as a decimal (checked by [`Config::load`]).
    pub fn tolerance(&self) -> deltabook_dataflows::decimal::Dec8 {
        deltabook_dataflows::decimal::Dec8::parse(&self.break_tolerance).unwrap_or_default()
    }
}

/// Retry policy (exponential backoff with jitter).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// First backoff.
    pub initial_backoff_ms: u64,
    /// Backoff ceiling.
    pub max_backoff_ms: u64,
    /// Consecutive failed commits after which `/health` reports unhealthy
    /// (the commit is still retried: nothing is dropped).
    pub max_attempts: u32,
}

/// HTTP endpoint for `/metrics`, `/health`, `/ready`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// `host:port` to listen on.
    pub listen: String,
}

/// Live SQL queries (`POST /query` on the HTTP endpoint).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueriesConfig {
    /// Tables shared with queries, comma-separated (`trades` keeps a second
    /// copy of every live trade; `corrections` keeps all of history).
    pub tables: String,
    /// Most live queries at once.
    pub max_subscribers: usize,
    /// Most updates queued for one subscriber; a subscriber that falls
    /// this far behind is cut off.
    pub subscriber_queue_updates: usize,
    /// `AS KNOWN AT` is answered from memory for the last this many engine
    /// timestamps (the shared traces keep every change in them); older
    /// times are answered from the event store.
    #[serde(default = "default_history_timestamps")]
    pub history_timestamps: u64,
}

fn default_history_timestamps() -> u64 {
    10_000
}

impl QueriesConfig {
    /// The shared tables.
    pub fn table_set(&self) -> Result<TableSet> {
        let mut set = TableSet::NONE;
        for name in self
            .tables
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
        {
            let table =
                Table::named(name).with_context(|| format!("queries.tables: no table {name:?}"))?;
            set = set.with(table);
        }
        Ok(set)
    }
}

/// Outbox publishers.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublisherConfig {
    /// Rows read per round.
    pub batch_rows: i64,
    /// Pause between empty rounds.
    pub poll_interval_ms: u64,
    /// Conflation window of `position-valuations`: at most one message per
    /// position per this many milliseconds.
    pub valuation_interval_ms: u64,
}

/// The whole service configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Kafka.
    pub kafka: KafkaConfig,
    /// PostgreSQL.
    pub postgres: PostgresConfig,
    /// Engine.
    pub engine: EngineConfig,
    /// Retries.
    pub retry: RetryConfig,
    /// HTTP.
    pub http: HttpConfig,
    /// Publishers.
    pub publisher: PublisherConfig,
    /// Live queries.
    pub queries: QueriesConfig,
    /// Running as one process of a cluster.
    #[serde(default)]
    pub cluster: ClusterConfig,
}

/// `deltabook run` as N processes x `engine.workers` workers (timely's
/// own networking): a hosts file of `host:port` lines, one per process,
/// and this process's index in it. Process 0 is the service (writer lock,
/// committer, publishers, HTTP); the others run workers only.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The hosts file; empty: a single process.
    #[serde(default)]
    pub hosts_file: String,
    /// This process's index in the hosts file, from 0.
    #[serde(default)]
    pub process: usize,
}

/// Process `process` of the cluster in the timely hostfile `path`: one
/// `host:port` per process, in process order (blank lines and `#`
/// comments skipped), with `process` checked to be one of them.
pub fn cluster_options(path: &Path, process: usize) -> Result<ClusterOptions> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the hosts file {}", path.display()))?;
    let addresses: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    anyhow::ensure!(
        process < addresses.len(),
        "process {process} is not below the {} hosts of {}",
        addresses.len(),
        path.display()
    );
    Ok(ClusterOptions { process, addresses })
}

impl ClusterConfig {
    /// This process's place in the cluster; `None` for a single process.
    pub fn options(&self) -> Result<Option<ClusterOptions>> {
        if self.hosts_file.is_empty() {
            return Ok(None);
        }
        cluster_options(Path::new(&self.hosts_file), self.process).map(Some)
    }

    /// Processes in the cluster (1 for a single process).
    pub fn processes(&self) -> Result<usize> {
        Ok(self.options()?.map_or(1, |c| c.addresses.len()))
    }
}

/// `config/default.toml`, compiled into the binary: the configuration used
/// when no `--config` is given, wherever the binary runs.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

impl Config {
    /// Reads `path` (the compiled-in defaults when `None`; a named file that
    /// is missing is an error), applies `DELTABOOK_*` environment overrides,
    /// then `sets` (`section.key=value`), and checks the result.
    pub fn load(path: Option<&Path>, sets: &[String]) -> Result<Config> {
        let (text, origin) = match path {
            Some(path) => (
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?,
                path.display().to_string(),
            ),
            None => (
                DEFAULT_TOML.to_string(),
                "the built-in defaults".to_string(),
            ),
        };
        let mut table: toml::Table = text.parse().with_context(|| format!("parsing {origin}"))?;
        let sections: Vec<String> = table.keys().cloned().collect();
        for section in sections {
            let Some(toml::Value::Table(keys)) = table.get_mut(&section) else {
                continue;
            };
            for (key, value) in keys.iter_mut() {
                let var = format!(
                    "DELTABOOK_{}_{}",
                    section.to_uppercase(),
                    key.to_uppercase()
                );
                if let Ok(text) = std::env::var(&var) {
                    *value =
                        typed_like(value, &text).with_context(|| format!("environment {var}"))?;
                }
            }
        }
        for set in sets {
            let Some((path, text)) = set.split_once('=') else {
                bail!("--set {set:?}: expected section.key=value")
            };
            let Some((section, key)) = path.split_once('.') else {
                bail!("--set {set:?}: expected section.key=value")
            };
            let Some(value) = table.get_mut(section).and_then(|s| s.get_mut(key)) else {
                bail!("--set {set:?}: no key {key} in section [{section}]")
            };
            *value = typed_like(value, text).with_context(|| format!("--set {set}"))?;
        }
        let config: Config = toml::Value::Table(table)
            .try_into()
            .context("configuration")?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        anyhow::ensure!(
            self.kafka.trades_partitions >= 1,
            "kafka.trades_partitions must be >= 1"
        );
        anyhow::ensure!(
            self.kafka.corrections_partitions >= 1,
            "kafka.corrections_partitions must be >= 1"
        );
        for (name, n) in [
            ("kafka.prices_partitions", self.kafka.prices_partitions),
            (
                "kafka.custodian_partitions",
                self.kafka.custodian_partitions,
            ),
            ("kafka.breaks_partitions", self.kafka.breaks_partitions),
            (
                "kafka.valuations_partitions",
                self.kafka.valuations_partitions,
            ),
        ] {
            anyhow::ensure!(n >= 1, "{name} must be >= 1");
        }
        anyhow::ensure!(
            deltabook_dataflows::decimal::Dec8::parse(&self.engine.break_tolerance).is_ok(),
            "engine.break_tolerance {:?} is not a decimal digits[.digits] with at most 8 places",
            self.engine.break_tolerance
        );
        anyhow::ensure!(
            self.kafka.batch_max_messages >= 1,
            "kafka.batch_max_messages must be >= 1"
        );
        anyhow::ensure!(
            (1..=MAX_WORKERS).contains(&self.engine.workers),
            "engine.workers must be between 1 and {MAX_WORKERS}"
        );
        anyhow::ensure!(
            self.engine.max_uncommitted_timestamps >= 1,
            "engine.max_uncommitted_timestamps must be >= 1"
        );
        anyhow::ensure!(
            self.postgres.write_batch_rows >= 1,
            "postgres.write_batch_rows must be >= 1"
        );
        self.queries.table_set()?;
        self.cluster.options()?;
        anyhow::ensure!(
            self.queries.subscriber_queue_updates >= 1,
            "queries.subscriber_queue_updates must be >= 1"
        );
        Ok(())
    }
}

/// Parses `text` as the same TOML type as `like`.
fn typed_like(like: &toml::Value, text: &str) -> Result<toml::Value> {
    Ok(match like {
        toml::Value::Integer(_) => {
            toml::Value::Integer(text.trim().parse().context("expected an integer")?)
        }
        toml::Value::Boolean(_) => {
            toml::Value::Boolean(text.trim().parse().context("expected true or false")?)
        }
        toml::Value::Float(_) => {
            toml::Value::Float(text.trim().parse().context("expected a number")?)
        }
        _ => toml::Value::String(text.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_loads_and_sets_override() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml");
        let config = Config::load(
            Some(&path),
            &[
                "kafka.trades_partitions=4".into(),
                "postgres.url=host=x".into(),
            ],
        )
        .unwrap();
        assert_eq!(config.kafka.trades_partitions, 4);
        assert_eq!(config.postgres.url, "host=x");
        assert_eq!(config.kafka.trades_topic, "trade-events");
        assert!(Config::load(Some(&path), &["kafka.nope=1".into()]).is_err());
        assert!(Config::load(Some(&path), &["kafka.trades_partitions=x".into()]).is_err());
        assert!(Config::load(Some(&path), &["engine.workers=0".into()]).is_err());
        assert!(Config::load(Some(&path), &["engine.workers=257".into()]).is_err());
        assert!(Config::load(Some(&path), &["engine.break_tolerance=-1".into()]).is_err());
        let tolerant = Config::load(Some(&path), &["engine.break_tolerance=0.5".into()]).unwrap();
        assert_eq!(tolerant.engine.tolerance().to_string(), "0.5");
        let built_in = Config::load(None, &[]).unwrap();
        assert_eq!(built_in.kafka.trades_topic, "trade-events");
        assert!(Config::load(Some(Path::new("/no/such/file.toml")), &[])
            .unwrap_err()
            .to_string()
            .contains("/no/such/file.toml"));
    }
}
