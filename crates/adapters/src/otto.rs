//! OTTO session JSON lines: `{"session":12899779,"events":[{"aid":59625,"ts":1661724000278,
//! "type":"clicks"}]}`.
//!
//! Mapping: `session` to both `user_id` and `session_id` (OTTO has no user ids); `aid` to
//! `item_id`; `type` `clicks` to `PRODUCT_VIEW`, `carts` to `ADD_TO_CART`, `orders` to
//! `PURCHASE`. `ts` is in milliseconds in the official release (checked on the fixture:
//! `1659304800025` is 2022-08-01); values below 10^11 are taken as seconds, as in some
//! re-packaged copies. Orders get `order_id = "<session>:<ts>"`: items ordered at the same
//! moment of a session form one order. A line that is not a session is one error item; an
//! event with an unknown type is one error item and its siblings still come out.

use crate::AdapterError;
use clickpath_schema::{ClickEvent, EventType};
use serde::Deserialize;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};

/// Timestamps below this are seconds (10^11 ms is in 1973; 10^11 s is in the year 5138).
const SECONDS_BELOW: i64 = 100_000_000_000;

#[derive(Deserialize)]
struct Session {
    session: u64,
    events: Vec<Event>,
}

#[derive(Deserialize)]
struct Event {
    aid: u64,
    ts: i64,
    #[serde(rename = "type")]
    kind: String,
}

pub(crate) struct Reader {
    input: BufReader<Box<dyn Read + Send>>,
    prefix: String,
    line: u64,
    buf: Vec<u8>,
    ready: VecDeque<Result<ClickEvent, AdapterError>>,
    done: bool,
}

impl Reader {
    pub fn new(input: Box<dyn Read + Send>, prefix: String) -> Self {
        Reader {
            input: BufReader::new(input),
            prefix,
            line: 0,
            buf: Vec::new(),
            ready: VecDeque::new(),
            done: false,
        }
    }

    pub fn next(&mut self) -> Option<Result<ClickEvent, AdapterError>> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Some(item);
            }
            if self.done {
                return None;
            }
            self.buf.clear();
            match self.input.read_until(b'\n', &mut self.buf) {
                Ok(0) => {
                    self.done = true;
                    return None;
                }
                Ok(_) => self.line += 1,
                Err(e) => {
                    self.done = true;
                    return Some(Err(AdapterError::row(self.line + 1, e.to_string())));
                }
            }
            if self.buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let session: Session = match serde_json::from_slice(&self.buf) {
                Ok(s) => s,
                Err(e) => {
                    let reason = format!("not an OTTO session: {e}");
                    return Some(Err(AdapterError::row(self.line, reason)));
                }
            };
            for (n, ev) in session.events.into_iter().enumerate() {
                let item = map(&self.prefix, self.line, n, session.session, ev)
                    .map_err(|r| AdapterError::row(self.line, r));
                self.ready.push_back(item);
            }
        }
    }
}

fn map(prefix: &str, line: u64, n: usize, session: u64, ev: Event) -> Result<ClickEvent, String> {
    let event_type = match ev.kind.as_str() {
        "clicks" => EventType::ProductView,
        "carts" => EventType::AddToCart,
        "orders" => EventType::Purchase,
        other => return Err(format!("event {n}: unknown type {other:?}")),
    };
    let ts = if ev.ts.abs() < SECONDS_BELOW {
        ev.ts.saturating_mul(1000)
    } else {
        ev.ts
    };
    let session = session.to_string();
    let mut e = ClickEvent::new(
        format!("{prefix}:{line}:{n}"),
        session.clone(),
        event_type,
        ts,
    );
    e.item_id = Some(ev.aid.to_string());
    if event_type == EventType::Purchase {
        e.order_id = Some(format!("{session}:{ts}"));
    }
    e.session_id = Some(session);
    Ok(e)
}
