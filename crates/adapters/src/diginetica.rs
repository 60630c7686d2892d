//! DIGINETICA (CIKM Cup 2016 track 2) files, told apart by their header:
//! - item views, `;`-separated: `sessionId;userId;itemId;timeframe;eventdate` (the released
//!   camelCase header, or the snake_case one of the SR-GNN sample);
//! - purchases, `;`-separated: `sessionId;userId;timeframe;eventdate;ordernumber;itemId`;
//! - a joined CSV with an event type column:
//!   `session_id,user_id,timeframe,eventdate,event_type,item_id,ordernumber` (`view|purchase`).
//!
//! Mapping: the event time is `eventdate` (midnight UTC) plus `timeframe` milliseconds (the time
//! since the session started); `itemId` to `item_id`; `sessionId` to `session_id`; `userId` to
//! `user_id`, or `session:<sessionId>` for anonymous sessions (empty or `NA`; a float-formatted
//! id like `18278.0` becomes `18278`); views are `PRODUCT_VIEW`, purchases `PURCHASE` with
//! `order_id = ordernumber`. The data has no prices.

use crate::AdapterError;
use crate::csv_rows::{CsvRows, Row, field, optional};
use crate::time::parse_date_ms;
use clickpath_schema::{ClickEvent, EventType};
use std::io::Read;

const FORMAT: &str = "DIGINETICA";

/// Which DIGINETICA file this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Views,
    Purchases,
    /// Views and purchases with an explicit `event_type`.
    Joined(usize),
}

struct Columns {
    variant: Variant,
    session: usize,
    item: usize,
    timeframe: usize,
    eventdate: usize,
    user: Option<usize>,
    order: Option<usize>,
}

pub(crate) struct Reader {
    rows: CsvRows,
    cols: Columns,
    prefix: String,
}

impl Reader {
    pub fn new(input: Box<dyn Read + Send>, prefix: String) -> Result<Self, AdapterError> {
        let (h, rows) = CsvRows::open(input, None)?;
        let order = h.find("ordernumber");
        let variant = match (h.find("event_type"), order) {
            (Some(i), _) => Variant::Joined(i),
            (None, Some(_)) => Variant::Purchases,
            (None, None) => Variant::Views,
        };
        let cols = Columns {
            variant,
            session: h.require("session_id", FORMAT)?,
            item: h.require("item_id", FORMAT)?,
            timeframe: h.require("timeframe", FORMAT)?,
            eventdate: h.require("eventdate", FORMAT)?,
            user: h.find("user_id"),
            order,
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

/// The user id, or the session standing in for an anonymous user.
fn user_id(raw: Option<&str>, session: &str) -> String {
    match raw {
        None | Some("NA") => format!("session:{session}"),
        Some(id) => id.strip_suffix(".0").unwrap_or(id).to_string(),
    }
}

fn map(c: &Columns, prefix: &str, line: u64, rec: &Row) -> Result<ClickEvent, String> {
    let session = field(rec, c.session, "sessionId")?;
    if session.is_empty() {
        return Err("sessionId is empty".into());
    }
    let item = field(rec, c.item, "itemId")?;
    if item.is_empty() {
        return Err("itemId is empty".into());
    }
    let tf = field(rec, c.timeframe, "timeframe")?;
    let timeframe: i64 = tf
        .parse()
        .map_err(|_| format!("timeframe {tf:?} is not an integer"))?;
    let day = parse_date_ms(field(rec, c.eventdate, "eventdate")?)?;
    let event_type = match c.variant {
        Variant::Views => EventType::ProductView,
        Variant::Purchases => EventType::Purchase,
        Variant::Joined(i) => match field(rec, i, "event_type")? {
            "view" => EventType::ProductView,
            "purchase" => EventType::Purchase,
            other => return Err(format!("unknown event_type {other:?}")),
        },
    };
    let user = user_id(optional(rec, c.user), session);
    let mut e = ClickEvent::new(
        format!("{prefix}:{line}"),
        user,
        event_type,
        day.saturating_add(timeframe),
    );
    e.session_id = Some(session.to_string());
    e.item_id = Some(item.to_string());
    if event_type == EventType::Purchase {
        e.order_id = optional(rec, c.order).map(str::to_string);
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anonymous_and_float_formatted_users() {
        assert_eq!(user_id(None, "7"), "session:7");
        assert_eq!(user_id(Some("NA"), "7"), "session:7");
        assert_eq!(user_id(Some("18278.0"), "7"), "18278");
        assert_eq!(user_id(Some("42"), "7"), "42");
    }
}
