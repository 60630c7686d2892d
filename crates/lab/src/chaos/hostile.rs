//! Hostile input: records built to break a consumer (truncated Avro, wrong magic byte, unknown schema
//! ids, lying lengths, invalid UTF-8, oversized strings, maps and records, NaN and negative amounts,
//! absurd timestamps, empty keys and ids), interleaved with valid records, produced to the raw topic of
//! a real broker and run through the cleaning stage in this process.
//!
//! The check: the stage never stops, every hostile record is in the dead-letter topic (found by its
//! source partition and offset) with a reason and the error kind its case expects, and every valid
//! record reaches the clean topic.

use super::{ReadRecord, TopicReader};
use clickpath_cli::pipeline::{join_stages, spawn_stages};
use clickpath_runtime::deadletter::{self, headers};
use clickpath_runtime::kafka::create_producer;
use clickpath_schema::codec::Codec;
use clickpath_schema::{ClickEvent, DeadLetter, EventType};
use clickpath_stages::ClickpathConfig;
use clickpath_stages::StageName;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureRecord, Producer};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

/// What the pipeline must do with one record.
#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    /// A valid event: it reaches the clean topic.
    Valid {
        /// Its event id.
        event_id: String,
    },
    /// A hostile record: it reaches the dead-letter topic with one of `kinds` as its error kind.
    Dead {
        /// The hostile case, e.g. `nan_price`.
        case: &'static str,
        /// Acceptable `error_kind`s.
        kinds: &'static [&'static str],
    },
}

/// One record to produce.
#[derive(Debug, Clone)]
pub struct HostileRecord {
    /// Kafka key (may be empty).
    pub key: Vec<u8>,
    /// Kafka value.
    pub payload: Vec<u8>,
    /// What must happen to it.
    pub expect: Expect,
}

/// How many records and of what mix.
#[derive(Debug, Clone)]
pub struct HostileOptions {
    /// Hostile records to make.
    pub hostile: usize,
    /// One valid record after every this many hostile ones (1 = half the records are valid).
    pub hostile_per_valid: usize,
    /// Random seed.
    pub seed: u64,
    /// The processing clock the records are built around (ms since the epoch).
    pub now_ms: i64,
    /// The stage's `runtime.max_record_bytes`: `oversized_record` cases are one KiB larger.
    pub max_record_bytes: usize,
    /// The stage's `cleaning.validation.max_field_len`.
    pub max_field_len: usize,
    /// The stage's `cleaning.validation.max_extras`.
    pub max_extras: usize,
}

impl HostileOptions {
    /// `hostile` records with the limits of `cfg`, one valid record per four hostile ones.
    pub fn for_config(cfg: &ClickpathConfig, hostile: usize, seed: u64) -> Self {
        HostileOptions {
            hostile,
            hostile_per_valid: 4,
            seed,
            now_ms: clickpath_runtime::runner::now_ms(),
            max_record_bytes: cfg.runtime.max_record_bytes,
            max_field_len: cfg.cleaning.validation.max_field_len,
            max_extras: cfg.cleaning.validation.max_extras,
        }
    }
}

/// Every hostile case with its expected error kinds and relative weight.
pub const CASES: &[(&str, &[&str], u32)] = &[
    ("truncated_avro", &["truncated_body", "bad_body"], 10),
    ("truncated_header", &["truncated_header"], 3),
    ("empty_payload", &["empty"], 2),
    ("wrong_magic", &["wrong_magic"], 6),
    ("json_instead_of_avro", &["wrong_magic"], 3),
    ("unknown_schema_id", &["unknown_schema_id"], 6),
    ("wrong_record_type", &["wrong_record"], 3),
    ("huge_string_length", &["truncated_body", "bad_body"], 5),
    ("negative_string_length", &["bad_body", "truncated_body"], 4),
    ("trailing_garbage", &["bad_body"], 3),
    ("invalid_utf8", &["bad_body"], 6),
    ("oversized_string", &["oversized"], 6),
    ("oversized_map_entries", &["oversized"], 4),
    ("oversized_map_value", &["oversized"], 3),
    ("oversized_record", &["oversized_record"], 1),
    ("nan_price", &["bad_value"], 5),
    ("negative_price", &["bad_value"], 5),
    ("infinite_order_value", &["bad_value"], 3),
    ("bad_quantity", &["bad_value"], 3),
    ("far_future_time", &["bad_time"], 5),
    ("far_past_time", &["bad_time"], 5),
    ("empty_key_and_user", &["missing_field"], 5),
    ("blank_event_id", &["missing_field"], 3),
    ("payment_without_details", &["missing_field"], 2),
];

fn kinds_of(case: &str) -> &'static [&'static str] {
    CASES
        .iter()
        .find(|(c, _, _)| *c == case)
        .map(|(_, k, _)| *k)
        .unwrap_or(&[])
}

/// Avro's zig-zag varint of `n`.
fn varint(n: i64) -> Vec<u8> {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    let mut out = Vec::new();
    loop {
        let b = (z & 0x7f) as u8;
        z >>= 7;
        if z == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

struct Maker<'a> {
    rng: StdRng,
    codec: &'a Codec,
    opts: &'a HostileOptions,
    n: usize,
}

impl Maker<'_> {
    /// A plausible, valid event (with some legal oddities) for user `u{n % 997}`.
    fn event(&mut self, id: String) -> ClickEvent {
        let user = format!("u{}", self.rng.random_range(0..997));
        let t = self.opts.now_ms - self.rng.random_range(0..3_600_000);
        let kind = [
            EventType::PageView,
            EventType::ProductView,
            EventType::Search,
            EventType::AddToCart,
        ][self.rng.random_range(0..4)];
        let mut ev = ClickEvent::new(id, user, kind, t);
        ev.item_id = Some(format!("item-{}", self.rng.random_range(0..5000)));
        ev.price = Some(f64::from(self.rng.random_range(0..100_000)) / 100.0);
        ev.quantity = Some(self.rng.random_range(1..5));
        ev.device = Some("mobile".into());
        ev.referrer = Some("https://example.com/".into());
        ev
    }

    fn encode(&self, ev: &ClickEvent) -> Vec<u8> {
        self.codec
            .encode(ev)
            .expect("a ClickEvent always encodes with its own schema")
    }

    fn valid(&mut self) -> HostileRecord {
        let id = format!("valid-{}-{}", self.opts.seed, self.n);
        self.n += 1;
        let mut ev = self.event(id.clone());
        // Near misses: legal values right at the limits, which must not be rejected.
        match self.rng.random_range(0..8) {
            0 => ev.referrer = Some("r".repeat(self.opts.max_field_len)),
            1 => {
                for i in 0..self.opts.max_extras {
                    ev.extras.insert(format!("k{i}"), "v".into());
                }
            }
            2 => ev.price = Some(0.0),
            3 => ev.search_query = Some("größe 42 — 靴 👟".into()),
            4 => ev.event_time = self.opts.now_ms + 3_600_000,
            5 => ev.category = Some(" /Shoes//Running ".into()),
            _ => {}
        }
        HostileRecord {
            key: ev.user_id.clone().into_bytes(),
            payload: self.encode(&ev),
            expect: Expect::Valid { event_id: id },
        }
    }

    fn hostile(&mut self, case: &'static str) -> HostileRecord {
        let id = format!("hostile-{}-{}", self.opts.seed, self.n);
        self.n += 1;
        let mut ev = self.event(id);
        let mut key = ev.user_id.clone().into_bytes();
        let payload = match self.wire_payload(case, &mut ev) {
            Some(bytes) => bytes,
            None => {
                self.bad_field(case, &mut ev, &mut key);
                self.encode(&ev)
            }
        };
        HostileRecord {
            key,
            payload,
            expect: Expect::Dead {
                case,
                kinds: kinds_of(case),
            },
        }
    }

    /// A record broken on the wire (framing, Avro encoding, bytes): `None` for the cases that are
    /// well-encoded events with bad field values.
    fn wire_payload(&mut self, case: &'static str, ev: &mut ClickEvent) -> Option<Vec<u8>> {
        Some(match case {
            "truncated_avro" => {
                let full = self.encode(ev);
                let cut = self.rng.random_range(5..full.len());
                full[..cut].to_vec()
            }
            "truncated_header" => {
                let full = self.encode(ev);
                full[..self.rng.random_range(1..5)].to_vec()
            }
            "empty_payload" => Vec::new(),
            "wrong_magic" => {
                let mut b = self.encode(ev);
                b[0] = self.rng.random_range(1..=255);
                b
            }
            "json_instead_of_avro" => format!(
                "{{\"event_id\":\"{}\",\"user_id\":\"{}\",\"event_type\":\"PAGE_VIEW\"}}",
                ev.event_id, ev.user_id
            )
            .into_bytes(),
            "unknown_schema_id" => {
                let mut b = self.encode(ev);
                let id: u32 = self.rng.random_range(1_000..u32::MAX);
                b[1..5].copy_from_slice(&id.to_be_bytes());
                b
            }
            "wrong_record_type" => {
                let dl = DeadLetter {
                    source_topic: "elsewhere".into(),
                    source_partition: 0,
                    source_offset: self.n as i64,
                    key: None,
                    payload: vec![1, 2, 3],
                    error_kind: "x".into(),
                    reason: "a dead letter sent to the raw topic".into(),
                    stage: "test".into(),
                    failed_at: self.opts.now_ms,
                };
                self.codec.encode(&dl).expect("DeadLetter encodes")
            }
            "huge_string_length" | "negative_string_length" => {
                // The body starts with event_id's length; replace it with a lie.
                let full = self.encode(ev);
                let len = varint(ev.event_id.len() as i64).len();
                let lie = if case == "huge_string_length" {
                    self.rng.random_range(1i64 << 20..1i64 << 60)
                } else {
                    -self.rng.random_range(1i64..1i64 << 40)
                };
                let mut b = full[..5].to_vec();
                b.extend(varint(lie));
                b.extend(&full[5 + len..]);
                b
            }
            "trailing_garbage" => {
                let mut b = self.encode(ev);
                b.extend(std::iter::repeat_n(0xAB, self.rng.random_range(1..64)));
                b
            }
            "invalid_utf8" => {
                let marker = "\u{1}MARK\u{1}";
                ev.referrer = Some(format!("https://{marker}/"));
                let mut b = self.encode(ev);
                let at = b
                    .windows(marker.len())
                    .position(|w| w == marker.as_bytes())
                    .expect("the marker is in the encoding");
                let bad: [&[u8]; 3] = [&[0xC3, 0x28], &[0xFF, 0xFE], &[0xED, 0xA0]];
                let pick = bad[self.rng.random_range(0..bad.len())];
                b[at + 1..at + 1 + pick.len()].copy_from_slice(pick);
                b
            }
            _ => return None,
        })
    }

    /// Sets the field values of a field-level hostile `case` on `ev` (and its `key`).
    fn bad_field(&mut self, case: &'static str, ev: &mut ClickEvent, key: &mut Vec<u8>) {
        let max = self.opts.max_field_len;
        match case {
            "oversized_string" => {
                let long = "x".repeat(max + self.rng.random_range(1..4096));
                match self.rng.random_range(0..4) {
                    0 => ev.referrer = Some(long),
                    1 => ev.search_query = Some(long),
                    2 => ev.item_id = Some(long),
                    _ => ev.user_id = long,
                }
            }
            "oversized_map_entries" => {
                let n = self.opts.max_extras + self.rng.random_range(1..200);
                for i in 0..n {
                    ev.extras.insert(format!("key{i}"), format!("value{i}"));
                }
            }
            "oversized_map_value" => {
                ev.extras.insert("note".into(), "y".repeat(max + 1));
            }
            "oversized_record" => {
                ev.extras
                    .insert("blob".into(), "z".repeat(self.opts.max_record_bytes + 1024));
            }
            "nan_price" => {
                ev.price = Some(f64::NAN);
            }
            "negative_price" => {
                ev.price = Some(-f64::from(self.rng.random_range(1..1_000_000)) / 100.0);
            }
            "infinite_order_value" => {
                ev.event_type = EventType::Purchase;
                ev.order_value = Some(if self.rng.random_bool(0.5) {
                    f64::INFINITY
                } else {
                    f64::NEG_INFINITY
                });
            }
            "bad_quantity" => {
                ev.quantity = Some([0, -1, i32::MIN][self.rng.random_range(0..3)]);
            }
            "far_future_time" => {
                ev.event_time = [
                    i64::MAX,
                    self.opts.now_ms + 10 * 365 * 86_400_000,
                    self.opts.now_ms + 2 * 86_400_000,
                ][self.rng.random_range(0..3)];
            }
            "far_past_time" => {
                ev.event_time = [i64::MIN, -1, 0, 631_152_000_000][self.rng.random_range(0..4)];
            }
            "empty_key_and_user" => {
                key.clear();
                ev.user_id = ["", " ", "\t\n"][self.rng.random_range(0..3)].into();
            }
            "blank_event_id" => {
                ev.event_id = ["", "   "][self.rng.random_range(0..2)].into();
            }
            "payment_without_details" => {
                ev.event_type = EventType::PaymentAttempt;
                ev.payment = None;
            }
            other => unreachable!("unknown hostile case {other}"),
        }
    }
}

/// Makes `opts.hostile` hostile records (cases drawn by weight) with valid ones interleaved.
pub fn generate(opts: &HostileOptions, codec: &Codec) -> Vec<HostileRecord> {
    let mut m = Maker {
        rng: StdRng::seed_from_u64(opts.seed),
        codec,
        opts,
        n: 0,
    };
    let total: u32 = CASES.iter().map(|c| c.2).sum();
    let per_valid = opts.hostile_per_valid.max(1);
    let mut out = Vec::with_capacity(opts.hostile + opts.hostile / per_valid + 1);
    for i in 0..opts.hostile {
        // Every case at least once, then by weight.
        let case = match CASES.get(i) {
            Some(c) => c.0,
            None => {
                let mut pick = m.rng.random_range(0..total);
                let mut chosen = CASES[0].0;
                for (c, _, w) in CASES {
                    if pick < *w {
                        chosen = c;
                        break;
                    }
                    pick -= w;
                }
                chosen
            }
        };
        out.push(m.hostile(case));
        if (i + 1) % per_valid == 0 {
            out.push(m.valid());
        }
    }
    out
}

/// What one hostile-input run found.
#[derive(Debug, Default, Clone)]
pub struct HostileReport {
    /// Records produced (hostile + valid).
    pub produced: usize,
    /// Valid records among them.
    pub valid: usize,
    /// Per case: (records, dead-lettered with an expected kind).
    pub cases: BTreeMap<&'static str, (usize, usize)>,
    /// Dead letters per error kind.
    pub kinds: BTreeMap<String, usize>,
    /// Hostile records with no dead letter (samples: case@partition/offset).
    pub missing_dead_letters: Vec<String>,
    /// Count of hostile records with no dead letter.
    pub missing_dead_letter_count: usize,
    /// Dead letters with a kind the case does not expect, an empty reason or headers that disagree.
    pub wrong_dead_letters: Vec<String>,
    /// Valid records that never reached the clean topic.
    pub valid_missing: usize,
    /// Valid records that were dead-lettered (samples).
    pub valid_dead_lettered: Vec<String>,
    /// Clean records that are not a valid input (a hostile record let through).
    pub unexpected_clean: usize,
    /// Extra copies of dead letters or clean records (0 without crashes).
    pub duplicates: usize,
    /// The stage's error, if it stopped.
    pub stage_error: Option<String>,
    /// Seconds from the first send until the stage had read every record.
    pub seconds: f64,
}

impl HostileReport {
    /// Every failed check, one line each; empty means the run passed.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if let Some(e) = &self.stage_error {
            p.push(format!("the cleaning stage stopped: {e}"));
        }
        if self.missing_dead_letter_count > 0 {
            p.push(format!(
                "{} hostile records have no dead letter, e.g. {:?}",
                self.missing_dead_letter_count, self.missing_dead_letters
            ));
        }
        if !self.wrong_dead_letters.is_empty() {
            p.push(format!(
                "dead letters with the wrong kind or reason: {:?}",
                self.wrong_dead_letters
            ));
        }
        if self.valid_missing > 0 {
            p.push(format!(
                "{} valid records never reached the clean topic",
                self.valid_missing
            ));
        }
        if !self.valid_dead_lettered.is_empty() {
            p.push(format!(
                "valid records were dead-lettered: {:?}",
                self.valid_dead_lettered
            ));
        }
        if self.unexpected_clean > 0 {
            p.push(format!(
                "{} records in the clean topic are not valid inputs",
                self.unexpected_clean
            ));
        }
        p
    }

    /// A plain-text summary (RELIABILITY.md quotes it).
    pub fn render(&self) -> String {
        let mut s = format!(
            "hostile input: {} records ({} hostile, {} valid) through the cleaning stage in {:.1} s\n",
            self.produced,
            self.produced - self.valid,
            self.valid,
            self.seconds
        );
        s += &format!("stage crashes: {}\n", u8::from(self.stage_error.is_some()));
        s += &format!(
            "valid records in the clean topic: {} of {}; hostile records let through: {}\n",
            self.valid - self.valid_missing,
            self.valid,
            self.unexpected_clean
        );
        s += &format!("duplicates: {}\n", self.duplicates);
        s += "case                        records  dead-lettered\n";
        for (case, (n, ok)) in &self.cases {
            s += &format!("{case:<28}{n:>7}  {ok:>13}\n");
        }
        s += "error kind                  dead letters\n";
        for (kind, n) in &self.kinds {
            s += &format!("{kind:<28}{n:>12}\n");
        }
        s += &super::verdict(&self.problems());
        s
    }
}

/// Produces `records` to the raw topic of `cfg` (topics are created) while the cleaning stage runs in
/// this process, then checks the dead-letter and clean topics. `timeout` bounds each wait.
pub fn run_hostile(
    cfg: &ClickpathConfig,
    records: &[HostileRecord],
    timeout: Duration,
) -> anyhow::Result<HostileReport> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(clickpath_runtime::kafka::create_topics(cfg, &cfg.topics))?;
    let env = cfg.runner_env(Codec::embedded());
    let stages = spawn_stages(&[StageName::Cleaning], cfg, &env, true)?;

    let started = Instant::now();
    let positions = produce_recording_positions(cfg, records)?;

    let mut report = HostileReport {
        produced: records.len(),
        ..HostileReport::default()
    };
    let deadline = Instant::now() + timeout;
    let produced = records.len() as u64;
    while env.metrics.records_in_total("cleaning", &cfg.topics.raw) < produced
        && Instant::now() < deadline
        && !env.shutdown.is_triggered()
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    report.seconds = started.elapsed().as_secs_f64();
    env.shutdown.trigger();
    if let Err(e) = join_stages(stages) {
        report.stage_error = Some(format!("{e:#}"));
    }

    // What should be where.
    let mut dead_expected: HashMap<(i32, i64), (&'static str, &'static [&'static str])> =
        HashMap::new();
    let mut valid_at: HashMap<(i32, i64), &str> = HashMap::new();
    let mut valid_ids: HashSet<&str> = HashSet::new();
    for (r, pos) in records.iter().zip(&positions) {
        match &r.expect {
            Expect::Dead { case, kinds } => {
                dead_expected.insert(*pos, (case, kinds));
                report.cases.entry(case).or_default().0 += 1;
            }
            Expect::Valid { event_id } => {
                valid_at.insert(*pos, event_id);
                valid_ids.insert(event_id);
            }
        }
    }
    report.valid = valid_ids.len();
    let want_dead = dead_expected.len();

    let codec = &env.codec;
    let dead = TopicReader::new(cfg, &cfg.topics.dead_letters)?.read_until(
        Duration::from_secs(5),
        timeout,
        |n| n >= want_dead,
    );
    let mut seen: HashSet<(i32, i64)> = HashSet::new();
    for rec in &dead {
        check_dead_letter(
            codec,
            rec,
            &cfg.topics.raw,
            &dead_expected,
            &valid_at,
            &mut seen,
            &mut report,
        );
    }
    let missing: Vec<_> = dead_expected
        .iter()
        .filter(|(pos, _)| !seen.contains(pos))
        .collect();
    report.missing_dead_letter_count = missing.len();
    report.missing_dead_letters = missing
        .iter()
        .take(10)
        .map(|((p, o), (case, _))| format!("{case}@{p}/{o}"))
        .collect();

    check_clean(cfg, codec, &valid_ids, timeout, &mut report)?;
    Ok(report)
}

/// Produces `records` to the raw topic in order; returns where each one landed.
fn produce_recording_positions(
    cfg: &ClickpathConfig,
    records: &[HostileRecord],
) -> anyhow::Result<Vec<(i32, i64)>> {
    let producer = create_producer(cfg)?;
    let mut positions: Vec<(i32, i64)> = Vec::with_capacity(records.len());
    for chunk in records.chunks(5_000) {
        let mut pending = Vec::with_capacity(chunk.len());
        for r in chunk {
            let mut rec = FutureRecord::to(&cfg.topics.raw)
                .key(&r.key[..])
                .payload(&r.payload[..]);
            loop {
                match producer.send_result(rec) {
                    Ok(f) => {
                        pending.push(f);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        rec = back;
                        producer.poll(Duration::from_millis(5));
                    }
                    Err((e, _)) => anyhow::bail!("cannot produce to {}: {e}", cfg.topics.raw),
                }
            }
        }
        for r in futures::executor::block_on(futures::future::join_all(pending)) {
            match r {
                Ok(Ok(d)) => positions.push((d.partition, d.offset)),
                Ok(Err((e, _))) => anyhow::bail!("delivery to {} failed: {e}", cfg.topics.raw),
                Err(_) => anyhow::bail!("delivery to {} cancelled", cfg.topics.raw),
            }
        }
    }
    producer.flush(Duration::from_secs(30))?;
    Ok(positions)
}

/// Every valid record must be in the clean topic exactly once, and nothing else.
fn check_clean(
    cfg: &ClickpathConfig,
    codec: &Codec,
    valid_ids: &HashSet<&str>,
    timeout: Duration,
    report: &mut HostileReport,
) -> anyhow::Result<()> {
    let want_clean = valid_ids.len();
    let clean = TopicReader::new(cfg, &cfg.topics.clean)?.read_until(
        Duration::from_secs(5),
        timeout,
        |n| n >= want_clean,
    );
    let mut clean_ids: HashSet<String> = HashSet::new();
    for rec in &clean {
        match codec.decode::<ClickEvent>(&rec.payload) {
            Ok(ev) if valid_ids.contains(ev.event_id.as_str()) => {
                if !clean_ids.insert(ev.event_id) {
                    report.duplicates += 1;
                }
            }
            _ => report.unexpected_clean += 1,
        }
    }
    report.valid_missing = valid_ids.len() - clean_ids.len();
    Ok(())
}

fn check_dead_letter(
    codec: &Codec,
    rec: &ReadRecord,
    raw_topic: &str,
    dead_expected: &HashMap<(i32, i64), (&'static str, &'static [&'static str])>,
    valid_at: &HashMap<(i32, i64), &str>,
    seen: &mut HashSet<(i32, i64)>,
    report: &mut HostileReport,
) {
    let header = |name: &str| {
        rec.headers
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let dl: DeadLetter = match deadletter::read(codec, Some(&rec.key), &rec.payload, header) {
        Ok(d) => d,
        Err(e) => {
            report
                .wrong_dead_letters
                .push(format!("an undecodable dead letter: {e}"));
            return;
        }
    };
    *report.kinds.entry(dl.error_kind.clone()).or_default() += 1;
    let pos = (dl.source_partition, dl.source_offset);
    if dl.source_topic != raw_topic {
        report
            .wrong_dead_letters
            .push(format!("dead letter from topic {}", dl.source_topic));
        return;
    }
    if let Some(id) = valid_at.get(&pos) {
        report
            .valid_dead_lettered
            .push(format!("{id}: {} ({})", dl.error_kind, dl.reason));
        return;
    }
    let Some((case, kinds)) = dead_expected.get(&pos) else {
        report
            .wrong_dead_letters
            .push(format!("dead letter for unknown record {pos:?}"));
        return;
    };
    if !seen.insert(pos) {
        report.duplicates += 1;
        return;
    }
    let ok = kinds.contains(&dl.error_kind.as_str())
        && !dl.reason.trim().is_empty()
        && header(headers::ERROR_KIND) == Some(dl.error_kind.as_str())
        && header(headers::ERROR_REASON) == Some(dl.reason.as_str())
        && dl.stage == "cleaning";
    if ok {
        report.cases.entry(case).or_default().1 += 1;
    } else if report.wrong_dead_letters.len() < 20 {
        report.wrong_dead_letters.push(format!(
            "{case}@{}/{}: kind {} (expected one of {kinds:?}), reason {:?}",
            pos.0, pos.1, dl.error_kind, dl.reason
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clickpath_core::validate::{ValidationConfig, validate_and_normalise};

    /// Without a broker: every generated record, decoded and validated as the cleaning stage would,
    /// lands where its expectation says.
    #[test]
    fn every_case_fails_the_way_it_claims_and_valid_records_pass() {
        let cfg = ClickpathConfig::default();
        let codec = Codec::embedded();
        let opts = HostileOptions::for_config(&cfg, 3_000, 9);
        let records = generate(&opts, &codec);
        let vcfg = ValidationConfig::default();
        let mut cases_seen = HashSet::new();
        for r in &records {
            let outcome: Result<(), String> = if r.payload.len() > cfg.runtime.max_record_bytes {
                Err("oversized_record".into())
            } else {
                match codec.decode::<ClickEvent>(&r.payload) {
                    Err(e) => Err(e.kind().into()),
                    Ok(mut ev) => validate_and_normalise(&mut ev, &vcfg, opts.now_ms)
                        .map_err(|rj| rj.kind.as_str().into()),
                }
            };
            match (&r.expect, outcome) {
                (Expect::Valid { .. }, Ok(())) => {}
                (Expect::Dead { case, kinds }, Err(kind)) => {
                    assert!(kinds.contains(&kind.as_str()), "{case} failed as {kind}");
                    cases_seen.insert(*case);
                }
                (e, o) => panic!("{e:?} came out as {o:?}"),
            }
        }
        assert_eq!(cases_seen.len(), CASES.len(), "every case is generated");
        let valid = records
            .iter()
            .filter(|r| matches!(r.expect, Expect::Valid { .. }))
            .count();
        assert_eq!(valid, 3_000 / 4);
    }

    #[test]
    fn varint_matches_avro() {
        assert_eq!(varint(0), [0]);
        assert_eq!(varint(-1), [1]);
        assert_eq!(varint(1), [2]);
        assert_eq!(varint(64), [0x80, 0x01]);
    }
}
