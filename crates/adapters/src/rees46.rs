//! REES46 multi-category store CSV.
//!
//! Mapping: `event_time` (`2019-10-01 00:00:00 UTC`) to `event_time`; `event_type` `view` to
//! `PRODUCT_VIEW`, `cart` to `ADD_TO_CART`, `remove_from_cart` to `REMOVE_FROM_CART`, `purchase`
//! to `PURCHASE`; `product_id` to `item_id`; `category_code` with `.` replaced by `/` to
//! `category` (the numeric `category_id` goes to `extras["category_id"]`); `brand`; `price`;
//! `user_id`; `user_session` to `session_id`. A purchase gets `order_value = price` and, since
//! the data has no order ids, `order_id = "<user_session>"` (a session's purchases form one
//! order). Currency is not stated by the dataset and is left empty.

use crate::AdapterError;
use crate::csv_rows::{CsvRows, Row, field, optional};
use crate::time::parse_datetime_ms;
use clickpath_schema::{ClickEvent, EventType};
use std::io::Read;

const FORMAT: &str = "REES46";

struct Columns {
    event_time: usize,
    event_type: usize,
    product_id: usize,
    user_id: usize,
    category_id: Option<usize>,
    category_code: Option<usize>,
    brand: Option<usize>,
    price: Option<usize>,
    user_session: Option<usize>,
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
            event_time: h.require("event_time", FORMAT)?,
            event_type: h.require("event_type", FORMAT)?,
            product_id: h.require("product_id", FORMAT)?,
            user_id: h.require("user_id", FORMAT)?,
            category_id: h.find("category_id"),
            category_code: h.find("category_code"),
            brand: h.find("brand"),
            price: h.find("price"),
            user_session: h.find("user_session"),
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
    let time = parse_datetime_ms(field(rec, c.event_time, "event_time")?)?;
    let kind = field(rec, c.event_type, "event_type")?;
    let event_type = match kind {
        "view" => EventType::ProductView,
        "cart" => EventType::AddToCart,
        "remove_from_cart" => EventType::RemoveFromCart,
        "purchase" => EventType::Purchase,
        other => return Err(format!("unknown event_type {other:?}")),
    };
    let user = field(rec, c.user_id, "user_id")?;
    if user.is_empty() {
        return Err("user_id is empty".into());
    }
    let item = field(rec, c.product_id, "product_id")?;
    if item.is_empty() {
        return Err("product_id is empty".into());
    }
    let mut e = ClickEvent::new(format!("{prefix}:{line}"), user, event_type, time);
    e.item_id = Some(item.to_string());
    e.session_id = optional(rec, c.user_session).map(str::to_string);
    e.category = optional(rec, c.category_code).map(|code| code.replace('.', "/"));
    e.brand = optional(rec, c.brand).map(str::to_string);
    e.price = optional(rec, c.price)
        .map(|p| {
            p.parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| format!("price {p:?} is not a number"))
        })
        .transpose()?;
    if let Some(id) = optional(rec, c.category_id) {
        e.extras.insert("category_id".into(), id.to_string());
    }
    if event_type == EventType::Purchase {
        e.order_value = e.price;
        e.order_id.clone_from(&e.session_id);
    }
    Ok(e)
}
