//! Reading the pipeline's output topics back: the demo's summary and the end-to-end tests' checks.

use clickpath_runtime::kafka::base_client_config;
use clickpath_schema::codec::{AvroRecord, Codec};
use clickpath_schema::{DeadLetter, FraudAlert, Prediction, SessionSummary};
use clickpath_stages::ClickpathConfig;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::time::{Duration, Instant};

/// Everything read from the output topics.
#[derive(Debug, Default, Clone)]
pub struct Collected {
    /// Session summaries.
    pub sessions: Vec<SessionSummary>,
    /// Predictions.
    pub predictions: Vec<Prediction>,
    /// Alerts.
    pub alerts: Vec<FraudAlert>,
    /// Dead letters.
    pub dead_letters: Vec<DeadLetter>,
    /// Records that did not decode (should stay 0).
    pub undecodable: u64,
}

/// Reads a set of topics from the beginning, without a consumer group.
pub struct Collector {
    consumer: BaseConsumer,
    codec: Codec,
    topics: CollectTopics,
    /// What was read so far.
    pub collected: Collected,
}

#[derive(Debug, Clone)]
struct CollectTopics {
    sessions: String,
    predictions: String,
    alerts: String,
    dead_letters: String,
}

impl Collector {
    /// Assigns every partition of the sessions, predictions, alerts and dead-letter topics from offset 0.
    pub fn new(cfg: &ClickpathConfig, codec: Codec) -> anyhow::Result<Self> {
        let mut c = base_client_config(cfg);
        c.set("group.id", format!("{}.collector", cfg.kafka.group_prefix))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "false");
        let consumer: BaseConsumer = c.create()?;
        let t = &cfg.topics;
        let topics = CollectTopics {
            sessions: t.sessions.clone(),
            predictions: t.predictions.clone(),
            alerts: t.alerts.clone(),
            dead_letters: t.dead_letters.clone(),
        };
        let mut tpl = TopicPartitionList::new();
        for topic in [
            &topics.sessions,
            &topics.predictions,
            &topics.alerts,
            &topics.dead_letters,
        ] {
            let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
            let partitions = md
                .topics()
                .first()
                .map(|t| t.partitions().len())
                .unwrap_or(0);
            if partitions == 0 {
                anyhow::bail!("topic {topic} has no partitions (does it exist?)");
            }
            for p in 0..partitions as i32 {
                tpl.add_partition_offset(topic, p, Offset::Beginning)?;
            }
        }
        consumer.assign(&tpl)?;
        Ok(Collector {
            consumer,
            codec,
            topics,
            collected: Collected::default(),
        })
    }

    /// Reads whatever is available for up to `budget`.
    pub fn poll_for(&mut self, budget: Duration) {
        let deadline = Instant::now() + budget;
        while Instant::now() < deadline {
            match self.consumer.poll(Duration::from_millis(50)) {
                None => continue,
                Some(Err(e)) => tracing::warn!(error = %e, "Collector consumer error."),
                Some(Ok(m)) => {
                    let payload = m.payload().unwrap_or_default();
                    let t = m.topic();
                    let c = &mut self.collected;
                    let ok = if t == self.topics.sessions {
                        push(&self.codec, payload, &mut c.sessions)
                    } else if t == self.topics.predictions {
                        push(&self.codec, payload, &mut c.predictions)
                    } else if t == self.topics.alerts {
                        push(&self.codec, payload, &mut c.alerts)
                    } else {
                        clickpath_runtime::deadletter::read_message(&self.codec, &m)
                            .map(|d| c.dead_letters.push(d))
                            .is_ok()
                    };
                    if !ok {
                        c.undecodable += 1;
                    }
                }
            }
        }
    }

    /// Polls until `done` holds or `timeout` passes; returns whether `done` held.
    pub fn poll_until(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&Collected) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if done(&self.collected) {
                return true;
            }
            self.poll_for(Duration::from_millis(200));
        }
        done(&self.collected)
    }
}

fn push<T: AvroRecord>(codec: &Codec, payload: &[u8], into: &mut Vec<T>) -> bool {
    match codec.decode::<T>(payload) {
        Ok(v) => {
            into.push(v);
            true
        }
        Err(_) => false,
    }
}
