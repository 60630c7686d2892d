//! clickpath's own event lines: one JSON [`ClickEvent`] per line, as `clickpath generate --out`
//! writes them. Events keep their own ids (nothing is rewritten); a line that is not a click
//! event is one error item naming its line, and reading goes on.

use crate::AdapterError;
use clickpath_schema::ClickEvent;
use std::io::{BufRead, BufReader, Read};

pub(crate) struct Reader {
    input: BufReader<Box<dyn Read + Send>>,
    line: u64,
    buf: Vec<u8>,
    done: bool,
}

impl Reader {
    pub fn new(input: Box<dyn Read + Send>) -> Self {
        Reader {
            input: BufReader::new(input),
            line: 0,
            buf: Vec::new(),
            done: false,
        }
    }

    pub fn next(&mut self) -> Option<Result<ClickEvent, AdapterError>> {
        while !self.done {
            self.buf.clear();
            match self.input.read_until(b'\n', &mut self.buf) {
                Ok(0) => self.done = true,
                Ok(_) => {
                    self.line += 1;
                    if self.buf.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    return Some(serde_json::from_slice(&self.buf).map_err(|e| {
                        AdapterError::row(self.line, format!("not a click event: {e}"))
                    }));
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(AdapterError::row(self.line + 1, e.to_string())));
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use crate::{Format, from_reader};
    use clickpath_schema::{ClickEvent, EventType};

    #[test]
    fn reads_events_and_names_bad_lines() {
        let event = ClickEvent::new("e1", "u1", EventType::ProductView, 1000);
        let good = serde_json::to_string(&event).unwrap();
        let text = format!("{good}\n\nnot json\n{good}\n");
        let items: Vec<_> = from_reader(Format::Jsonl, std::io::Cursor::new(text), "t")
            .unwrap()
            .collect();
        assert_eq!(items.len(), 3, "{items:?}");
        assert_eq!(items[0].as_ref().unwrap(), &event);
        let err = items[1].as_ref().unwrap_err();
        assert_eq!(err.line, 3);
        assert!(err.reason.contains("not a click event"), "{err}");
        assert!(items[2].is_ok());
    }
}
