//! Retailrocket `events.csv`.
//!
//! Mapping: `timestamp` (ms since the epoch) to `event_time`; `visitorid` to `user_id`; `event`
//! `view` to `PRODUCT_VIEW`, `addtocart` to `ADD_TO_CART`, `transaction` to `PURCHASE`;
//! `itemid` to `item_id`; `transactionid` to `order_id`. The data has no sessions, prices or
//! categories (those are in separate item-property files this reader does not join).

use crate::AdapterError;
use crate::csv_rows::{CsvRows, Row, field, optional};
use clickpath_schema::{ClickEvent, EventType};
use std::io::Read;

const FORMAT: &str = "Retailrocket";

struct Columns {
    timestamp: usize,
    visitor: usize,
    event: usize,
    item: usize,
    transaction: Option<usize>,
}

pub(crate) struct Reader {
    rows: CsvRows,
    cols: Columns,
    prefix: String,
}

impl Reader {
    pub fn new(input: Box<dyn Read + Send>, prefix: String) -> Result<Self, AdapterError> {
        let (h, rows) = CsvRows::open(input, Some(b','))?;
        let cols = Columns {
            timestamp: h.require("timestamp", FORMAT)?,
            visitor: h.require("visitorid", FORMAT)?,
            event: h.require("event", FORMAT)?,
            item: h.require("itemid", FORMAT)?,
            transaction: h.find("transactionid"),
        };
        Ok(Reader { rows, cols, prefix })
    }

    pub fn next(&mut self) -> Option<Result<ClickEvent, AdapterError>> {
        let (line, rec) = match self.rows.next_row()? {
            Ok(row) => row,
            Err(e) => return Some(Err(e)),
        };
        Some(map(&self.cols, &self.prefix, line, rec).map_err(|r| AdapterError::row(line, r)))
    }
}

fn map(c: &Columns, prefix: &str, line: u64, rec: &Row) -> Result<ClickEvent, String> {
    let ts = field(rec, c.timestamp, "timestamp")?;
    let time: i64 = ts
        .parse()
        .map_err(|_| format!("timestamp {ts:?} is not an integer"))?;
    let event_type = match field(rec, c.event, "event")? {
        "view" => EventType::ProductView,
        "addtocart" => EventType::AddToCart,
        "transaction" => EventType::Purchase,
        other => return Err(format!("unknown event {other:?}")),
    };
    let visitor = field(rec, c.visitor, "visitorid")?;
    if visitor.is_empty() {
        return Err("visitorid is empty".into());
    }
    let item = field(rec, c.item, "itemid")?;
    if item.is_empty() {
        return Err("itemid is empty".into());
    }
    let mut e = ClickEvent::new(format!("{prefix}:{line}"), visitor, event_type, time);
    e.item_id = Some(item.to_string());
    if event_type == EventType::Purchase {
        e.order_id = optional(rec, c.transaction).map(str::to_string);
    }
    Ok(e)
}
