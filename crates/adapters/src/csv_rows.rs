//! Delimited text with a header line: column lookup by name and rows with exact line numbers.
//!
//! Rows are read one physical line at a time, so a line number is always the line in the file
//! (blank lines and CRLF endings included) and a bad line never disturbs the next one. Fields
//! may be quoted (`"a,b"`, `""` for a quote) but may not span lines; none of the supported
//! datasets does that.

use crate::AdapterError;
use std::io::{BufRead, BufReader, Read};

/// The header line, with names normalised for lookup (lowercase, no `_`, no quotes).
#[derive(Debug, Clone)]
pub(crate) struct Header {
    names: Vec<String>,
    raw: String,
}

fn normalise(name: &str) -> String {
    name.trim()
        .trim_start_matches('\u{feff}')
        .trim_matches('"')
        .chars()
        .filter(|c| *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

impl Header {
    fn parse(line: &str, delimiter: u8) -> Self {
        let raw = line.trim_end_matches(['\r', '\n']).to_string();
        let names = raw.split(char::from(delimiter)).map(normalise).collect();
        Header { names, raw }
    }

    /// Index of a column, by its normalised name (`user_id`, `userId` and `userid` all match).
    pub fn find(&self, name: &str) -> Option<usize> {
        let want = normalise(name);
        self.names.iter().position(|n| *n == want)
    }

    /// Index of a column the format cannot do without.
    pub fn require(&self, name: &str, format: &str) -> Result<usize, AdapterError> {
        self.find(name).ok_or_else(|| {
            AdapterError::file(format!(
                "the {format} header has no column {name:?}: {:?}",
                self.raw
            ))
        })
    }
}

/// One parsed row: its fields, unquoted, stored back to back.
#[derive(Debug, Default)]
pub(crate) struct Row {
    text: String,
    ends: Vec<usize>,
}

impl Row {
    /// Field `i`, if the row has it.
    pub fn get(&self, i: usize) -> Option<&str> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        self.text.get(start..end)
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Splits `line` (no line terminator) into this row.
    pub fn parse(&mut self, line: &str, delimiter: char) -> Result<(), String> {
        self.text.clear();
        self.ends.clear();
        if !line.contains('"') {
            for f in line.split(delimiter) {
                self.text.push_str(f);
                self.ends.push(self.text.len());
            }
            return Ok(());
        }
        let mut chars = line.chars().peekable();
        loop {
            // One field per iteration.
            if chars.peek() == Some(&'"') {
                chars.next();
                loop {
                    match chars.next() {
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            self.text.push('"');
                        }
                        Some('"') => break,
                        Some(c) => self.text.push(c),
                        None => return Err("unterminated quoted field".into()),
                    }
                }
                match chars.next() {
                    None => {
                        self.ends.push(self.text.len());
                        return Ok(());
                    }
                    Some(c) if c == delimiter => self.ends.push(self.text.len()),
                    Some(c) => return Err(format!("unexpected {c:?} after a quoted field")),
                }
            } else {
                loop {
                    match chars.next() {
                        None => {
                            self.ends.push(self.text.len());
                            return Ok(());
                        }
                        Some(c) if c == delimiter => {
                            self.ends.push(self.text.len());
                            break;
                        }
                        Some(c) => self.text.push(c),
                    }
                }
            }
        }
    }
}

/// A trimmed field, or an error naming the missing column.
pub(crate) fn field<'r>(row: &'r Row, index: usize, name: &str) -> Result<&'r str, String> {
    row.get(index)
        .map(str::trim)
        .ok_or_else(|| format!("the row has {} fields, no {name:?}", row.len()))
}

/// A field that may be absent or empty.
pub(crate) fn optional(row: &Row, index: Option<usize>) -> Option<&str> {
    index
        .and_then(|i| row.get(i))
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// Rows after the header, each with its 1-based physical line number.
pub(crate) struct CsvRows {
    input: BufReader<Box<dyn Read + Send>>,
    delimiter: char,
    line: u64,
    buf: Vec<u8>,
    row: Row,
    done: bool,
}

impl CsvRows {
    /// Reads the header line; `delimiter` `None` picks `;` when the header contains one, else `,`.
    pub fn open(
        input: Box<dyn Read + Send>,
        delimiter: Option<u8>,
    ) -> Result<(Header, CsvRows), AdapterError> {
        let mut input = BufReader::new(input);
        let mut first = Vec::new();
        input
            .read_until(b'\n', &mut first)
            .map_err(|e| AdapterError::file(format!("cannot read the header: {e}")))?;
        let first = String::from_utf8(first)
            .map_err(|_| AdapterError::file("the header is not UTF-8 text"))?;
        if first.trim().is_empty() {
            return Err(AdapterError::file("the file is empty or has no header"));
        }
        let delimiter = delimiter.unwrap_or(if first.contains(';') { b';' } else { b',' });
        let header = Header::parse(&first, delimiter);
        Ok((
            header,
            CsvRows {
                input,
                delimiter: char::from(delimiter),
                line: 1,
                buf: Vec::new(),
                row: Row::default(),
                done: false,
            },
        ))
    }

    /// The next non-blank row and its line number. An unreadable line is an error item and
    /// reading goes on after it; a failing input ends the rows after one error.
    pub fn next_row(&mut self) -> Option<Result<(u64, &Row), AdapterError>> {
        loop {
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
            let Ok(text) = std::str::from_utf8(&self.buf) else {
                return Some(Err(AdapterError::row(
                    self.line,
                    "the line is not UTF-8 text",
                )));
            };
            let text = text.trim_end_matches(['\r', '\n']);
            if text.trim().is_empty() {
                continue;
            }
            return Some(match self.row.parse(text, self.delimiter) {
                Ok(()) => Ok((self.line, &self.row)),
                Err(reason) => Err(AdapterError::row(self.line, reason)),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fields(line: &str) -> Result<Vec<String>, String> {
        let mut row = Row::default();
        row.parse(line, ',')?;
        Ok((0..row.len())
            .map(|i| row.get(i).unwrap().to_string())
            .collect())
    }

    #[test]
    fn quoting() {
        assert_eq!(fields("a,,b").unwrap(), ["a", "", "b"]);
        assert_eq!(
            fields(r#""a,b","say ""hi""",c"#).unwrap(),
            ["a,b", r#"say "hi""#, "c"]
        );
        assert_eq!(fields(r#"x,"""#).unwrap(), ["x", ""]);
        assert!(fields(r#""open"#).is_err());
        assert!(fields(r#""a"b"#).is_err());
    }

    proptest! {
        /// Reference model: the csv crate agrees on every single-line record it writes.
        #[test]
        fn agrees_with_the_csv_crate(record in proptest::collection::vec("[a-z ,;\"é0-9.]{0,8}", 1..8)) {
            let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::Any(b'\n')).from_writer(Vec::new());
            w.write_record(&record).unwrap();
            let bytes = w.into_inner().unwrap();
            let line = std::str::from_utf8(&bytes).unwrap().trim_end_matches('\n');
            let mut r = csv::ReaderBuilder::new().has_headers(false).from_reader(line.as_bytes());
            let mut want = csv::StringRecord::new();
            // A lone empty field is written as `""`, so reading always yields the record.
            prop_assert!(r.read_record(&mut want).unwrap());
            let want: Vec<String> = want.iter().map(str::to_string).collect();
            prop_assert_eq!(fields(line).unwrap(), want);
        }
    }
}
