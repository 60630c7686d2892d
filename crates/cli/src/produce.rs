//! Producing click events (or deliberately broken records) to the raw topic, with optional pacing.

use clickpath_runtime::kafka::create_producer;
use clickpath_schema::ClickEvent;
use clickpath_schema::codec::Codec;
use clickpath_stages::ClickpathConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use std::time::{Duration, Instant};

/// Sends records to one topic and keeps count; deliveries are awaited in chunks so memory stays bounded.
pub struct EventProducer {
    producer: FutureProducer,
    codec: Codec,
    topic: String,
    pending: Vec<DeliveryFuture>,
    sent: u64,
    pacer: Pacer,
}

/// Spaces sends to a fixed rate (0 = as fast as possible).
pub struct Pacer {
    rate: f64,
    started: Instant,
    count: u64,
}

impl Pacer {
    /// A pacer for `rate` records per second (0 = unpaced).
    pub fn new(rate: f64) -> Self {
        Pacer {
            rate,
            started: Instant::now(),
            count: 0,
        }
    }

    /// Blocks until the next record is due.
    pub fn wait(&mut self) {
        self.count += 1;
        if self.rate <= 0.0 {
            return;
        }
        let due = Duration::from_secs_f64(self.count as f64 / self.rate);
        let elapsed = self.started.elapsed();
        if due > elapsed {
            std::thread::sleep(due - elapsed);
        }
    }
}

const CHUNK: usize = 5_000;

impl EventProducer {
    /// A producer to `topic` at `rate` records/s (0 = unpaced).
    pub fn new(
        cfg: &ClickpathConfig,
        codec: Codec,
        topic: &str,
        rate: f64,
    ) -> anyhow::Result<Self> {
        Ok(EventProducer {
            producer: create_producer(cfg)?,
            codec,
            topic: topic.to_string(),
            pending: Vec::new(),
            sent: 0,
            pacer: Pacer::new(rate),
        })
    }

    /// Encodes and sends one event keyed by its user id.
    pub fn send_event(&mut self, ev: &ClickEvent) -> anyhow::Result<()> {
        let bytes = self.codec.encode(ev)?;
        self.send_raw(ev.user_id.as_bytes(), &bytes)
    }

    /// Sends raw bytes (used for deliberately malformed records).
    pub fn send_raw(&mut self, key: &[u8], payload: &[u8]) -> anyhow::Result<()> {
        self.pacer.wait();
        let mut record = FutureRecord::to(&self.topic).key(key).payload(payload);
        loop {
            match self.producer.send_result(record) {
                Ok(f) => {
                    self.pending.push(f);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    self.producer.poll(Duration::from_millis(5));
                }
                Err((e, _)) => anyhow::bail!("cannot produce to {}: {e}", self.topic),
            }
        }
        self.sent += 1;
        if self.pending.len() >= CHUNK {
            self.await_pending()?;
        }
        Ok(())
    }

    fn await_pending(&mut self) -> anyhow::Result<()> {
        let pending = std::mem::take(&mut self.pending);
        for r in futures::executor::block_on(futures::future::join_all(pending)) {
            match r {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => anyhow::bail!("delivery to {} failed: {e}", self.topic),
                Err(_) => anyhow::bail!("delivery to {} cancelled", self.topic),
            }
        }
        Ok(())
    }

    /// Waits until everything sent so far is acknowledged.
    pub fn flush(&mut self) -> anyhow::Result<()> {
        self.await_pending()?;
        self.producer.flush(Duration::from_secs(30))?;
        Ok(())
    }

    /// Records sent so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// The codec in use.
    pub fn codec(&self) -> &Codec {
        &self.codec
    }
}
