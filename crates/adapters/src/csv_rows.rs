//! Delimited text with a header line: column lookup by name and rows with the line numbers they
//! start on.
//!
//! The header is the first physical line (its delimiter picks the rest's when not given); the rows
//! after it are parsed by the `csv` crate, so quoted fields may hold delimiters, doubled quotes
//! and line breaks (RFC 4180), and a row's line number is the file line it starts on (blank lines
//! and CRLF endings included). A row that is not UTF-8 is an error item and reading goes on.

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

    /// Fills this row from a record read by the `csv` crate; an error when a field is not UTF-8.
    fn fill(&mut self, record: &csv::ByteRecord) -> Result<(), String> {
        self.text.clear();
        self.ends.clear();
        for field in record {
            let field = std::str::from_utf8(field).map_err(|_| "the line is not UTF-8 text")?;
            self.text.push_str(field);
            self.ends.push(self.text.len());
        }
        Ok(())
    }

    /// Whether every field is empty or white space (a blank line).
    fn is_blank(&self) -> bool {
        self.text.trim().is_empty()
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

/// Rows after the header, each with the 1-based line number it starts on.
pub(crate) struct CsvRows {
    reader: csv::Reader<EndsWithLineBreak<BufReader<Box<dyn Read + Send>>>>,
    record: csv::ByteRecord,
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
        let reader = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .has_headers(false)
            .flexible(true)
            .from_reader(EndsWithLineBreak {
                inner: input,
                last: b'\n',
                added: false,
            });
        Ok((
            header,
            CsvRows {
                reader,
                record: csv::ByteRecord::new(),
                row: Row::default(),
                done: false,
            },
        ))
    }

    /// The file line the record just read starts on. The `csv` crate's own record position is
    /// where its read began, before the blank lines it skips; so count back from where the next
    /// read begins: past this record's line break (every record has one, [`EndsWithLineBreak`])
    /// and the line breaks inside its quoted fields.
    fn start_line(&self) -> u64 {
        let next = self.reader.position().line();
        let inside: u64 = self
            .record
            .iter()
            .map(|f| f.iter().filter(|&&b| b == b'\n').count() as u64)
            .sum();
        // + 1: the header line was read before the `csv` reader started counting.
        next.saturating_sub(inside + 1).max(1) + 1
    }

    /// The next non-blank row and its line number. A row that is not UTF-8 is an error item and
    /// reading goes on after it; a failing input ends the rows after one error.
    pub fn next_row(&mut self) -> Option<Result<(u64, &Row), AdapterError>> {
        loop {
            if self.done {
                return None;
            }
            // Lines counted from the line after the header (for an error before any record).
            let line = self.reader.position().line() + 1;
            match self.reader.read_byte_record(&mut self.record) {
                Ok(false) => {
                    self.done = true;
                    return None;
                }
                Ok(true) => {}
                Err(e) => {
                    let at = e.position().map_or(line, |p| p.line() + 1);
                    self.done = e.is_io_error();
                    return Some(Err(AdapterError::row(at, e.to_string())));
                }
            }
            let line = self.start_line();
            if let Err(reason) = self.row.fill(&self.record) {
                return Some(Err(AdapterError::row(line, reason)));
            }
            if self.row.is_blank() {
                continue;
            }
            return Some(Ok((line, &self.row)));
        }
    }
}

/// The input with a line break added at its end when it has none, so the last record ends like
/// every other (and [`CsvRows::start_line`] counts back from one).
pub(crate) struct EndsWithLineBreak<R> {
    inner: R,
    last: u8,
    added: bool,
}

impl<R: Read> Read for EndsWithLineBreak<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            self.last = buf[n - 1];
            return Ok(n);
        }
        if self.added || self.last == b'\n' || buf.is_empty() {
            return Ok(0);
        }
        self.added = true;
        buf[0] = b'\n';
        Ok(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row of `text` (after its header line) as (line, fields) or the error's text.
    fn rows(text: &str) -> Vec<Result<(u64, Vec<String>), String>> {
        let (_, mut rows) = CsvRows::open(Box::new(std::io::Cursor::new(text.to_string())), None)
            .expect("a header");
        let mut out = Vec::new();
        while let Some(r) = rows.next_row() {
            out.push(
                r.map(|(line, row)| {
                    (
                        line,
                        (0..row.len())
                            .map(|i| row.get(i).unwrap().to_string())
                            .collect(),
                    )
                })
                .map_err(|e| e.to_string()),
            );
        }
        out
    }

    fn ok(line: u64, fields: &[&str]) -> Result<(u64, Vec<String>), String> {
        Ok((line, fields.iter().map(|f| f.to_string()).collect()))
    }

    #[test]
    fn quoting() {
        assert_eq!(
            rows("h1,h2,h3\na,,b\n\"a,b\",\"say \"\"hi\"\"\",c\nx,\"\"\n"),
            [
                ok(2, &["a", "", "b"]),
                ok(3, &["a,b", "say \"hi\"", "c"]),
                ok(4, &["x", ""]),
            ]
        );
    }

    #[test]
    fn quoted_fields_may_span_lines_and_line_numbers_stay_the_files() {
        let text = "id;note;n\r\n1;\"two\nlines\";3\r\n\r\n   \n2;plain;4\n";
        assert_eq!(
            rows(text),
            [
                ok(2, &["1", "two\nlines", "3"]),
                ok(6, &["2", "plain", "4"])
            ]
        );
    }

    #[test]
    fn the_last_row_may_lack_its_line_break() {
        assert_eq!(
            rows("a,b\n\n1,\"x\ny\"\n\n2,\"p\nq\""),
            [ok(3, &["1", "x\ny"]), ok(6, &["2", "p\nq"])]
        );
        assert_eq!(rows("a,b\n1,2"), [ok(2, &["1", "2"])]);
    }

    #[test]
    fn a_row_that_is_not_utf8_is_an_error_and_reading_goes_on() {
        let mut bytes = b"a,b\n1,2\n".to_vec();
        bytes.extend(b"3,\xff\xfe\n5,6\n");
        let (_, mut r) = CsvRows::open(Box::new(std::io::Cursor::new(bytes)), None).unwrap();
        let mut got = Vec::new();
        while let Some(x) = r.next_row() {
            got.push(x.map(|(line, _)| line).map_err(|e| e.to_string()));
        }
        assert_eq!(
            got,
            [
                Ok(2),
                Err("line 3: the line is not UTF-8 text".to_string()),
                Ok(4)
            ]
        );
    }
}
