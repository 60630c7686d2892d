//! W3C Trace Context (`traceparent`) carried from each input record to every output it causes.
//!
//! A record read with a valid `traceparent` header continues that trace: its outputs carry the same
//! trace id and flags with a span id of their own (this stage's hop). A record without one (or with a
//! malformed one) starts a trace. So a trace follows an event from the raw topic through every stage
//! to its session, prediction and alert, on the per-stage topics as in the chain. Format:
//! `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>` (<https://www.w3.org/TR/trace-context/>).

use std::fmt;

/// The header's name.
pub const TRACEPARENT: &str = "traceparent";

/// The vendor-specific companion header, passed on unchanged with the trace it belongs to (the
/// specification asks every participant to forward it).
pub const TRACESTATE: &str = "tracestate";

/// The trace headers a record's outputs carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceHeaders {
    /// `traceparent` value (this hop's).
    pub traceparent: String,
    /// `tracestate` value of the input record, when it had one with a valid `traceparent`.
    pub tracestate: Option<String>,
}

impl TraceHeaders {
    /// Appends the headers to `headers`.
    pub fn push_onto(&self, headers: &mut Vec<(&'static str, String)>) {
        headers.push((TRACEPARENT, self.traceparent.clone()));
        if let Some(state) = &self.tracestate {
            headers.push((TRACESTATE, state.clone()));
        }
    }
}

/// One `traceparent` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// Trace id (never 0).
    pub trace_id: u128,
    /// Id of the span that sent the record (never 0).
    pub span_id: u64,
    /// Trace flags (bit 0: sampled).
    pub flags: u8,
}

/// The `sampled` trace flag.
pub const SAMPLED: u8 = 0x01;

fn nonzero_u64() -> u64 {
    loop {
        let v: u64 = rand::random();
        if v != 0 {
            return v;
        }
    }
}

impl TraceParent {
    /// A new trace, not sampled: no span of it is recorded (the hops' span ids are not exported),
    /// so a downstream parent-based sampler should not record one because of it.
    pub fn start() -> Self {
        let trace_id = loop {
            let v: u128 = rand::random();
            if v != 0 {
                break v;
            }
        };
        TraceParent {
            trace_id,
            span_id: nonzero_u64(),
            flags: 0,
        }
    }

    /// This hop's context: the same trace and sampled flag, a new span id. Flags this version does
    /// not know are cleared, as version `00` asks.
    pub fn child(&self) -> Self {
        TraceParent {
            span_id: nonzero_u64(),
            flags: self.flags & SAMPLED,
            ..*self
        }
    }

    /// Parses a header value. Version `00` must be exactly four fields; a later version may add
    /// fields after them (read as `00`, as the specification asks); `ff` and all-zero ids are invalid.
    pub fn parse(value: &str) -> Option<Self> {
        let mut fields = value.split('-');
        let (version, trace, span, flags) = (
            fields.next()?,
            fields.next()?,
            fields.next()?,
            fields.next()?,
        );
        let hex = |s: &str, len: usize| {
            s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        if !hex(version, 2)
            || version == "ff"
            || !hex(trace, 32)
            || !hex(span, 16)
            || !hex(flags, 2)
        {
            return None;
        }
        if version == "00" && fields.next().is_some() {
            return None;
        }
        let parsed = TraceParent {
            trace_id: u128::from_str_radix(trace, 16).ok()?,
            span_id: u64::from_str_radix(span, 16).ok()?,
            flags: u8::from_str_radix(flags, 16).ok()?,
        };
        (parsed.trace_id != 0 && parsed.span_id != 0).then_some(parsed)
    }

    /// A record's header bytes parsed (`None`: no header, or not a valid one).
    pub fn from_header(header: Option<&[u8]>) -> Option<Self> {
        header
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(TraceParent::parse)
    }

    /// The context of a record's outputs, from the record's header bytes (`None`: no header): the
    /// child of a valid one, else a new trace.
    pub fn for_input(header: Option<&[u8]>) -> Self {
        TraceParent::from_header(header).map_or_else(TraceParent::start, |p| p.child())
    }

    /// The trace headers of a record's outputs, from its `traceparent` and `tracestate` header
    /// bytes: the child of a valid `traceparent` (with its `tracestate`), a new trace when there is
    /// none and `start`, else `None`.
    pub fn headers_for_input(
        traceparent: Option<&[u8]>,
        tracestate: Option<&[u8]>,
        start: bool,
    ) -> Option<TraceHeaders> {
        match TraceParent::from_header(traceparent) {
            Some(p) => Some(TraceHeaders {
                traceparent: p.child().to_header(),
                tracestate: tracestate
                    .and_then(|b| std::str::from_utf8(b).ok())
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            }),
            None if start => Some(TraceHeaders {
                traceparent: TraceParent::start().to_header(),
                tracestate: None,
            }),
            None => None,
        }
    }
}

impl TraceParent {
    /// The header value, `00-<trace id>-<span id>-<flags>` in lower-case hex (as [`fmt::Display`],
    /// without the formatting machinery: it runs for every record).
    pub fn to_header(&self) -> String {
        fn hex(out: &mut Vec<u8>, value: u128, digits: u32) {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            for i in (0..digits).rev() {
                out.push(HEX[((value >> (4 * i)) & 0xf) as usize]);
            }
        }
        let mut out = Vec::with_capacity(55);
        out.extend_from_slice(b"00-");
        hex(&mut out, self.trace_id, 32);
        out.push(b'-');
        hex(&mut out, u128::from(self.span_id), 16);
        out.push(b'-');
        hex(&mut out, u128::from(self.flags), 2);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_header())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_specifications_example_round_trips() {
        let p = TraceParent::parse(EXAMPLE).unwrap();
        assert_eq!(p.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!((p.span_id, p.flags), (0x00f067aa0ba902b7, 1));
        assert_eq!(p.to_string(), EXAMPLE);
        assert_eq!(p.to_header(), EXAMPLE);
        let small = TraceParent {
            trace_id: 1,
            span_id: 2,
            flags: 0,
        };
        assert_eq!(
            small.to_header(),
            "00-00000000000000000000000000000001-0000000000000002-00"
        );
    }

    #[test]
    fn malformed_values_are_refused() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
        // A later version may carry more fields; the first four are read.
        assert!(TraceParent::parse(&format!("01{}-more", &EXAMPLE[2..])).is_some());
    }

    #[test]
    fn an_input_continues_its_trace_or_starts_one() {
        let parent = TraceParent::parse(EXAMPLE).unwrap();
        let hop = TraceParent::for_input(Some(EXAMPLE.as_bytes()));
        assert_eq!((hop.trace_id, hop.flags), (parent.trace_id, parent.flags));
        assert_ne!(hop.span_id, parent.span_id);
        for header in [None, Some(&b"garbage"[..]), Some(&[0xff, 0xfe][..])] {
            let started = TraceParent::for_input(header);
            assert_ne!(started.trace_id, parent.trace_id);
            assert_eq!(started.flags, 0, "started traces are not sampled");
            assert!(TraceParent::parse(&started.to_string()).is_some());
        }
        assert_ne!(TraceParent::start().trace_id, TraceParent::start().trace_id);
        // Unknown flags are not passed on.
        let odd =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff").unwrap();
        assert_eq!(odd.child().flags, SAMPLED);
    }

    #[test]
    fn tracestate_goes_with_its_trace_only() {
        let with =
            TraceParent::headers_for_input(Some(EXAMPLE.as_bytes()), Some(b"vendor=abc"), false)
                .unwrap();
        assert_eq!(with.tracestate.as_deref(), Some("vendor=abc"));
        let mut headers = Vec::new();
        with.push_onto(&mut headers);
        assert_eq!(headers.len(), 2);
        // No valid traceparent: no tracestate; a trace is started only when asked.
        assert_eq!(
            TraceParent::headers_for_input(None, Some(b"vendor=abc"), false),
            None
        );
        let started =
            TraceParent::headers_for_input(Some(b"bad"), Some(b"vendor=abc"), true).unwrap();
        assert_eq!(started.tracestate, None);
    }
}
