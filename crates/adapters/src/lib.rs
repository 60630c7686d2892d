//! Readers that turn public e-commerce datasets into [`ClickEvent`]s, for `clickpath replay`.
//!
//! Supported formats ([`Format`]):
//! - **REES46** ("eCommerce behavior data from multi category store", Kaggle) CSV:
//!   `event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session`;
//! - **Retailrocket** `events.csv`: `timestamp,visitorid,event,itemid,transactionid`;
//! - **OTTO** session JSON lines: `{"session":…,"events":[{"aid":…,"ts":…,"type":…}]}`;
//! - **DIGINETICA** (CIKM Cup 2016): the `;`-separated `train-item-views.csv` and
//!   `train-purchases.csv`, and a joined CSV with an `event_type` column; the variant is
//!   detected from the header;
//! - **JSON lines** of clickpath's own [`ClickEvent`]s, as `clickpath generate --out` writes them.
//!
//! Reading streams row by row. A row that cannot be mapped yields one [`AdapterError`] item
//! naming its line, and reading continues with the next row. Columns are found by name (case,
//! `_` and quotes ignored), so reordered or camelCase headers work.
//!
//! Event ids are deterministic: `<format>:<source>:<line>` (OTTO: `otto:<source>:<line>:<n>`
//! for the n-th event of a session line), where `<source>` is the file stem, so that replaying
//! two files of one dataset never produces colliding ids (JSON lines keep their own ids). See each format's module for its
//! field mapping. This crate depends only on `clickpath-schema`; it knows nothing of Kafka.

mod csv_rows;
mod diginetica;
mod jsonl;
mod otto;
mod rees46;
mod retailrocket;
mod time;

use clickpath_schema::ClickEvent;
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::str::FromStr;

/// A public dataset format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Format {
    /// REES46 multi-category store CSV.
    Rees46,
    /// Retailrocket `events.csv`.
    Retailrocket,
    /// OTTO session JSON lines.
    Otto,
    /// DIGINETICA (CIKM Cup 2016) views, purchases or joined CSV.
    Diginetica,
    /// clickpath's own event JSON lines (`clickpath generate --out`); ids are kept as they are.
    Jsonl,
}

impl Format {
    /// All formats (the public data sets first, in the order the fuzz targets number them).
    pub const ALL: [Format; 5] = [
        Format::Rees46,
        Format::Retailrocket,
        Format::Otto,
        Format::Diginetica,
        Format::Jsonl,
    ];

    /// The lowercase name used on the command line and in event ids.
    pub fn name(self) -> &'static str {
        match self {
            Format::Rees46 => "rees46",
            Format::Retailrocket => "retailrocket",
            Format::Otto => "otto",
            Format::Diginetica => "diginetica",
            Format::Jsonl => "jsonl",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A format name that is not one of [`Format::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown format {0:?}; expected one of rees46, retailrocket, otto, diginetica, jsonl")]
pub struct UnknownFormat(pub String);

impl FromStr for Format {
    type Err = UnknownFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Format::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownFormat(s.to_string()))
    }
}

/// A problem with one row (its 1-based line number), or with the whole file (line 0).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", if *.line == 0 { .reason.clone() } else { format!("line {}: {}", .line, .reason) })]
pub struct AdapterError {
    /// 1-based line of the offending row; 0 when the file as a whole is unusable.
    pub line: u64,
    /// What is wrong.
    pub reason: String,
}

impl AdapterError {
    pub(crate) fn row(line: u64, reason: impl Into<String>) -> Self {
        AdapterError {
            line,
            reason: reason.into(),
        }
    }

    pub(crate) fn file(reason: impl Into<String>) -> Self {
        AdapterError::row(0, reason)
    }
}

/// The events of one file, in file order. Yields `Err` items for bad rows and keeps going.
pub struct Events {
    inner: Inner,
}

enum Inner {
    Rees46(rees46::Reader),
    Retailrocket(retailrocket::Reader),
    Otto(otto::Reader),
    Diginetica(diginetica::Reader),
    Jsonl(jsonl::Reader),
}

impl Iterator for Events {
    type Item = Result<ClickEvent, AdapterError>;

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.inner {
            Inner::Rees46(r) => r.next(),
            Inner::Retailrocket(r) => r.next(),
            Inner::Otto(r) => r.next(),
            Inner::Diginetica(r) => r.next(),
            Inner::Jsonl(r) => r.next(),
        }
    }
}

/// Callers move a reader to a producer thread; keep it `Send`.
const _: fn() = || {
    fn send<T: Send>() {}
    send::<Events>();
};

/// Opens `path` as `format`. Fails only if the file cannot be opened or its header does not
/// fit the format; row problems come out of the iterator.
pub fn read(format: Format, path: impl AsRef<Path>) -> Result<Events, AdapterError> {
    let path = path.as_ref();
    let file = File::open(path)
        .map_err(|e| AdapterError::file(format!("cannot open {}: {e}", path.display())))?;
    let source = path
        .file_stem()
        .map_or_else(|| "input".to_string(), |s| s.to_string_lossy().into_owned());
    from_reader(format, file, &source)
}

/// Reads `format` from any byte stream; `source` names it in event ids (e.g. a file stem).
pub fn from_reader<R: Read + Send + 'static>(
    format: Format,
    input: R,
    source: &str,
) -> Result<Events, AdapterError> {
    let input: Box<dyn Read + Send> = Box::new(input);
    let prefix = format!("{format}:{source}");
    let inner = match format {
        Format::Rees46 => Inner::Rees46(rees46::Reader::new(input, prefix)?),
        Format::Retailrocket => Inner::Retailrocket(retailrocket::Reader::new(input, prefix)?),
        Format::Otto => Inner::Otto(otto::Reader::new(input, prefix)),
        Format::Diginetica => Inner::Diginetica(diginetica::Reader::new(input, prefix)?),
        Format::Jsonl => Inner::Jsonl(jsonl::Reader::new(input)),
    };
    Ok(Events { inner })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_names_round_trip() {
        for f in Format::ALL {
            assert_eq!(f.name().parse::<Format>().unwrap(), f);
            assert_eq!(f.to_string().to_uppercase().parse::<Format>().unwrap(), f);
        }
        assert!("parquet".parse::<Format>().is_err());
    }

    #[test]
    fn errors_name_their_line() {
        assert_eq!(AdapterError::row(7, "bad").to_string(), "line 7: bad");
        assert_eq!(AdapterError::file("gone").to_string(), "gone");
    }
}
