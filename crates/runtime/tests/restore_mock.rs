//! The changelog restore on librdkafka's mock cluster: every record reaches the stage, and the
//! restore reports that it is alive (the run loop beats its liveness with it).

use clickpath_runtime::changelog::restore;
use clickpath_runtime::config::BusConfig;
use clickpath_runtime::{Context, Stage, StageError};
use clickpath_schema::ClickEvent;
use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use std::cell::Cell;
use std::time::Duration;

/// Keeps what it is given back.
#[derive(Default)]
struct Remembers {
    restored: Vec<(i32, Vec<u8>, Option<Vec<u8>>)>,
}

impl Stage for Remembers {
    type Input = ClickEvent;
    fn name(&self) -> &'static str {
        "remembers"
    }
    fn process(&mut self, _: ClickEvent, _: &mut Context<'_>) -> Result<(), StageError> {
        Ok(())
    }
    fn is_stateful(&self) -> bool {
        true
    }
    fn restore(
        &mut self,
        partition: i32,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<(), StageError> {
        self.restored
            .push((partition, key.to_vec(), value.map(<[u8]>::to_vec)));
        Ok(())
    }
}

#[test]
fn a_restore_reads_every_record_from_the_low_watermark_and_says_it_is_alive() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("changelog", 2, 1).unwrap();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", mock.bootstrap_servers())
        .create()
        .unwrap();
    for (p, key, value) in [(0, "a", "1"), (1, "b", "2"), (0, "a", "3")] {
        producer
            .send(
                BaseRecord::to("changelog")
                    .partition(p)
                    .key(key)
                    .payload(value),
            )
            .unwrap();
    }
    producer.flush(Duration::from_secs(5)).unwrap();

    let mut cfg = BusConfig::default();
    cfg.kafka.brokers = mock.bootstrap_servers();
    let mut stage = Remembers::default();
    let beats = Cell::new(0);
    let stats = restore(&cfg, "changelog", &[0, 1], &mut stage, None, &|| {
        beats.set(beats.get() + 1)
    })
    .unwrap();
    assert_eq!(stats.records, 3);
    let mut got = stage.restored.clone();
    got.sort();
    assert_eq!(
        got,
        vec![
            (0, b"a".to_vec(), Some(b"1".to_vec())),
            (0, b"a".to_vec(), Some(b"3".to_vec())),
            (1, b"b".to_vec(), Some(b"2".to_vec())),
        ]
    );
    assert!(beats.get() >= 1, "the restore never said it was alive");
}
