//! Kafka clients configured the clickpath way, and topic administration.

use crate::config::{BusConfig, TopicsConfig};
use crate::metrics::{Metrics, StagePartition};
use crate::stall::FetchInfo;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaResult;
use rdkafka::producer::FutureProducer;
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A change of partition ownership seen in a rebalance callback, replayed to the stage by the run loop.
/// Partitions are `(topic, partition)`: a stage may read several topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebalanceEvent {
    /// These partitions were assigned.
    Assigned(Vec<(String, i32)>),
    /// These partitions were revoked.
    Revoked(Vec<(String, i32)>),
}

fn topic_partitions(tpl: &rdkafka::TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

/// Consumer context: records rebalances for the run loop, exports lag from librdkafka statistics and keeps
/// each partition's last reported fetch state (for the stall check, [`crate::stall`]).
pub struct StageContext {
    stage: String,
    metrics: Metrics,
    pending: Arc<Mutex<Vec<RebalanceEvent>>>,
    fetch: Mutex<BTreeMap<(String, i32), FetchInfo>>,
}

impl StageContext {
    /// A context for `stage` reporting into `metrics`.
    pub fn new(stage: &str, metrics: Metrics) -> Self {
        StageContext {
            stage: stage.to_string(),
            metrics,
            pending: Arc::default(),
            fetch: Mutex::default(),
        }
    }

    /// What the last statistics said of `topic`/`partition`'s fetcher, if they covered it.
    pub fn fetch_info(&self, topic: &str, partition: i32) -> Option<FetchInfo> {
        self.fetch
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(topic.to_string(), partition))
            .cloned()
    }

    /// Takes the rebalances seen since the last call.
    pub fn take_rebalances(&self) -> Vec<RebalanceEvent> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl ClientContext for StageContext {
    fn stats(&self, statistics: Statistics) {
        let mut fetch = BTreeMap::new();
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                if *partition >= 0 {
                    fetch.insert(
                        (topic.clone(), *partition),
                        FetchInfo {
                            state: p.fetch_state.clone(),
                            stable: p.ls_offset,
                        },
                    );
                }
                if *partition < 0 || p.consumer_lag < 0 {
                    continue;
                }
                self.metrics
                    .consumer_lag
                    .get_or_create(&StagePartition {
                        stage: self.stage.clone(),
                        topic: topic.clone(),
                        partition: *partition,
                    })
                    .set(p.consumer_lag);
            }
        }
        *self.fetch.lock().unwrap_or_else(|p| p.into_inner()) = fetch;
    }
}

impl ConsumerContext for StageContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let event = match rebalance {
            Rebalance::Assign(tpl) => RebalanceEvent::Assigned(topic_partitions(tpl)),
            Rebalance::Revoke(tpl) => RebalanceEvent::Revoked(topic_partitions(tpl)),
            Rebalance::Error(e) => {
                tracing::warn!(stage = %self.stage, error = %e, "Rebalance failed.");
                return;
            }
        };
        tracing::info!(stage = %self.stage, ?event, "Partitions rebalanced.");
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(event);
    }
}

/// Base client settings shared by every client: brokers plus `kafka.properties`.
pub fn base_client_config(cfg: &BusConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.kafka.brokers);
    for (k, v) in &cfg.kafka.properties {
        c.set(k, v);
    }
    c
}

/// Waits up to `kafka.connect_timeout_ms` for a broker at `kafka.brokers` to answer a metadata
/// request; an error that says which address was tried, where it is configured and how to start a
/// local broker. Run once before a command's clients start, so an unreachable bus is one clear
/// message rather than every client's own retries and timeouts.
pub fn check_reachable(cfg: &BusConfig) -> Result<(), String> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let total = std::time::Duration::from_millis(cfg.kafka.connect_timeout_ms.max(1));
    let started = std::time::Instant::now();
    let consumer: BaseConsumer = consumer_client_config(cfg)
        .set("log_level", "0")
        .create()
        .map_err(|e| {
            format!(
                "cannot create a Kafka client for kafka.brokers = {:?}: {e}",
                cfg.kafka.brokers
            )
        })?;
    let mut last = String::new();
    let mut logged: Option<std::time::Instant> = None;
    while started.elapsed() < total {
        let wait = (total - started.elapsed()).min(std::time::Duration::from_secs(5));
        match consumer.fetch_metadata(None, wait) {
            Ok(_) => return Ok(()),
            Err(e) => {
                last = e.to_string();
                if logged.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(5)) {
                    tracing::info!(brokers = %cfg.kafka.brokers, error = %e, "Waiting for a Kafka broker.");
                    logged = Some(std::time::Instant::now());
                }
                // A refused connection fails at once: pause rather than spin.
                std::thread::sleep(
                    total
                        .saturating_sub(started.elapsed())
                        .min(std::time::Duration::from_millis(250)),
                );
            }
        }
    }
    Err(format!(
        "no Kafka broker answered at {:?} (kafka.brokers) within {:.0} s ({last}). Is one running there? \
         For a local broker run `scripts/kafka.sh up` and point clickpath at it with \
         CLICKPATH__KAFKA__BROKERS=$(scripts/kafka.sh bootstrap); `clickpath demo` needs no broker at all. \
         kafka.connect_timeout_ms sets how long to wait.",
        cfg.kafka.brokers,
        total.as_secs_f64()
    ))
}

/// Base settings of any consumer: [`base_client_config`] plus `kafka.consumer_properties`. A consumer with
/// settings of its own sets them after this.
pub fn consumer_client_config(cfg: &BusConfig) -> ClientConfig {
    let mut c = base_client_config(cfg);
    for (k, v) in &cfg.kafka.consumer_properties {
        c.set(k, v);
    }
    c
}

/// Consumer settings: cooperative-sticky group, manual offset store, auto commit of stored offsets.
pub fn consumer_config(cfg: &BusConfig, stage: &str) -> ClientConfig {
    let mut c = base_client_config(cfg);
    c.set("group.id", format!("{}.{}", cfg.kafka.group_prefix, stage))
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        // Offsets are stored only after the outputs they caused were delivered (at-least-once).
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("statistics.interval.ms", "5000")
        .set("enable.partition.eof", "false")
        // The memory bound of input fetched ahead of processing; with it, lag grows on the broker.
        .set(
            "queued.max.messages.kbytes",
            cfg.runtime.input_buffer_kbytes.to_string(),
        );
    // User properties win over our defaults; consumer-only ones last.
    for (k, v) in cfg
        .kafka
        .properties
        .iter()
        .chain(&cfg.kafka.consumer_properties)
    {
        c.set(k, v);
    }
    c
}

/// Consumer settings for a stage that reads `input_topics` topics. With more than one, the group uses the range
/// assignor: with equal partition counts and subscriptions it gives partition `p` of every input topic to the
/// same member (co-partitioning, which a stage's per-partition state relies on); the cooperative-sticky
/// assignor balances topic-partitions independently and does not. A different `partition.assignment.strategy`
/// in `kafka.properties` is overridden for such a stage, with a warning.
pub fn stage_consumer_config(cfg: &BusConfig, stage: &str, input_topics: usize) -> ClientConfig {
    let mut c = consumer_config(cfg, stage);
    if input_topics > 1 {
        let key = "partition.assignment.strategy";
        if let Some(user) = cfg
            .kafka
            .properties
            .get(key)
            .filter(|v| v.trim() != "range")
        {
            tracing::warn!(
                stage,
                configured = %user,
                "Stage reads several co-partitioned topics: using the range assignor instead of kafka.properties' {key}."
            );
        }
        c.set(key, "range");
    }
    c
}

/// Producer settings: idempotent, all acks, a 1 ms linger for batching.
pub fn producer_config(cfg: &BusConfig) -> ClientConfig {
    let mut c = base_client_config(cfg);
    c.set("enable.idempotence", "true")
        // The Java clients' partitioner, so keys land where Java producers and the query API expect them.
        .set("partitioner", "murmur2_random")
        .set("acks", "all")
        // Every hop waits for it once (BENCHMARKS.md, latency): 5 ms gave a 27 ms median event-to-prediction
        // latency at 200 events/s, 1 ms gives 7 ms with the same maximum rate; 0 gives 2.4 ms but
        // collapses under load (tiny produce requests).
        .set("linger.ms", "1")
        .set("compression.type", "lz4")
        .set("message.timeout.ms", "60000");
    for (k, v) in cfg
        .kafka
        .properties
        .iter()
        .chain(&cfg.kafka.producer_properties)
    {
        c.set(k, v);
    }
    c
}

/// A producer for `cfg`.
pub fn create_producer(cfg: &BusConfig) -> KafkaResult<FutureProducer> {
    producer_config(cfg).create()
}

/// Creates every topic of `topics` that does not exist yet; returns the names it created.
pub async fn create_topics(cfg: &BusConfig, topics: &TopicsConfig) -> anyhow::Result<Vec<String>> {
    let admin: AdminClient<DefaultClientContext> = base_client_config(cfg).create()?;
    let names: Vec<&str> = topics.all().into_iter().map(|(_, n)| n).collect();
    let new_topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|n| {
            NewTopic::new(
                n,
                topics.partitions,
                TopicReplication::Fixed(topics.replication_factor),
            )
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin.create_topics(new_topics.iter(), &opts).await?;
    let mut created = Vec::new();
    let mut problems = Vec::new();
    for r in results {
        match r {
            Ok(name) => created.push(name),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => problems.push(format!("{name}: {code}")),
        }
    }
    if !problems.is_empty() {
        anyhow::bail!("could not create topics: {}", problems.join("; "));
    }
    Ok(created)
}

/// A consumed record's headers as (name, value), in order. rdkafka 0.39 panics on a header name
/// that is not UTF-8 (`BorrowedHeaders::try_get`, `to_str().unwrap()`), which any producer can
/// send: such a header is caught and left out (the others are kept), so the record is processed,
/// or dead-lettered, instead of stopping the stage. The panic hook still prints each one.
pub fn record_headers<M: rdkafka::Message>(msg: &M) -> Vec<(&str, Option<&[u8]>)> {
    use rdkafka::message::Headers;
    let Some(headers) = msg.headers() else {
        return Vec::new();
    };
    (0..headers.count())
        .filter_map(|i| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| headers.try_get(i)))
                .ok()
                .flatten()
                .map(|h| (h.key, h.value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_with_several_inputs_use_the_range_assignor() {
        let mut cfg = BusConfig::default();
        let strategy = |c: &ClientConfig| c.get("partition.assignment.strategy").map(String::from);
        assert_eq!(
            strategy(&stage_consumer_config(&cfg, "windower", 1)).as_deref(),
            Some("cooperative-sticky")
        );
        assert_eq!(
            strategy(&stage_consumer_config(&cfg, "detector", 2)).as_deref(),
            Some("range")
        );
        // A user's strategy is kept for one-topic stages and overridden where co-partitioning needs range.
        cfg.kafka
            .properties
            .insert("partition.assignment.strategy".into(), "roundrobin".into());
        assert_eq!(
            strategy(&stage_consumer_config(&cfg, "windower", 1)).as_deref(),
            Some("roundrobin")
        );
        assert_eq!(
            strategy(&stage_consumer_config(&cfg, "detector", 2)).as_deref(),
            Some("range")
        );
    }

    #[test]
    fn consumer_and_producer_properties_reach_only_their_clients() {
        let env = vec![
            (
                "CLICKPATH__KAFKA__CONSUMER_PROPERTIES__SESSION.TIMEOUT.MS".to_string(),
                "6000".to_string(),
            ),
            (
                "CLICKPATH__KAFKA__PRODUCER_PROPERTIES__LINGER.MS".to_string(),
                "0".to_string(),
            ),
            (
                "CLICKPATH__KAFKA__PROPERTIES__CLIENT.ID".to_string(),
                "shared".to_string(),
            ),
        ];
        let cfg: BusConfig =
            crate::config::parse_checked(crate::config::layered_value("", None, env).unwrap())
                .unwrap();
        assert_eq!(cfg.kafka.consumer_properties["session.timeout.ms"], "6000");
        assert_eq!(cfg.kafka.producer_properties["linger.ms"], "0");
        let consumer = consumer_config(&cfg, "windower");
        let producer = producer_config(&cfg);
        assert_eq!(consumer.get("session.timeout.ms"), Some("6000"));
        assert_eq!(producer.get("session.timeout.ms"), None);
        assert_eq!(producer.get("linger.ms"), Some("0"));
        assert_eq!(consumer.get("linger.ms"), None);
        assert_eq!(consumer.get("client.id"), Some("shared"));
        assert_eq!(producer.get("client.id"), Some("shared"));
        // Free-form in files too.
        let cfg: BusConfig = crate::config::parse_checked(
            crate::config::layered_toml(
                "",
                "[kafka.consumer_properties]\n\"fetch.wait.max.ms\" = \"10\"\n",
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(cfg.kafka.consumer_properties["fetch.wait.max.ms"], "10");
    }
}
