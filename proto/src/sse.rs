//! An incremental Server-Sent Events parser and encoder.
//!
//! The parser follows the WHATWG event-stream rules that matter for Aniate: lines end in `\n`,
//! `\r\n` or `\r` (also when a chunk boundary splits `\r\n`), `:` lines are comments, `data:`
//! lines accumulate, a blank line dispatches. It is fed bytes as they arrive and never holds
//! more than its limit, so a hostile peer cannot make it buffer without bound.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field; `None` means the default type, `message`.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// The stream broke the parser's size limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseTooLarge {
    pub limit: usize,
}

impl std::fmt::Display for SseTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "server-sent event larger than {} bytes", self.limit)
    }
}

impl std::error::Error for SseTooLarge {}

/// Default bound on one event (its pending line plus accumulated data): 8 MiB.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 8 << 20;

/// Feeds on bytes, yields [`SseEvent`]s.
#[derive(Debug)]
pub struct SseParser {
    /// Bytes of the current, unfinished line.
    line: Vec<u8>,
    /// The previous chunk ended in `\r`; a `\n` starting the next one belongs to it.
    skip_lf: bool,
    event: Option<String>,
    data: String,
    has_data: bool,
    max_event_bytes: usize,
}

impl Default for SseParser {
    fn default() -> Self {
        SseParser::with_limit(DEFAULT_MAX_EVENT_BYTES)
    }
}

impl SseParser {
    pub fn with_limit(max_event_bytes: usize) -> SseParser {
        SseParser {
            line: Vec::new(),
            skip_lf: false,
            event: None,
            data: String::new(),
            has_data: false,
            max_event_bytes,
        }
    }

    /// Feeds a chunk and returns the events it completed, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, SseTooLarge> {
        let mut events = Vec::new();
        let mut rest = chunk;
        if self.skip_lf {
            self.skip_lf = false;
            if let [b'\n', tail @ ..] = rest {
                rest = tail;
            }
        }
        while let Some(end) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.line.extend_from_slice(&rest[..end]);
            self.check_size()?;
            if rest[end] == b'\r' {
                match rest.get(end + 1) {
                    Some(b'\n') => rest = &rest[end + 2..],
                    Some(_) => rest = &rest[end + 1..],
                    None => {
                        self.skip_lf = true;
                        rest = &[];
                    }
                }
            } else {
                rest = &rest[end + 1..];
            }
            let line = std::mem::take(&mut self.line);
            if let Some(event) = self.process_line(&line) {
                events.push(event);
            }
        }
        self.line.extend_from_slice(rest);
        self.check_size()?;
        Ok(events)
    }

    fn check_size(&self) -> Result<(), SseTooLarge> {
        if self.line.len() + self.data.len() > self.max_event_bytes {
            return Err(SseTooLarge { limit: self.max_event_bytes });
        }
        Ok(())
    }

    fn process_line(&mut self, line: &[u8]) -> Option<SseEvent> {
        if line.is_empty() {
            if !self.has_data {
                self.event = None;
                return None;
            }
            self.has_data = false;
            return Some(SseEvent { event: self.event.take(), data: std::mem::take(&mut self.data) });
        }
        if line[0] == b':' {
            return None;
        }
        let line = String::from_utf8_lossy(line);
        let (field, value) = match line.find(':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(' ').unwrap_or(value))
            }
            None => (&line[..], ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            // `id` and `retry` mean nothing to Aniate; unknown fields are ignored per the spec.
            _ => {}
        }
        None
    }
}

/// Encodes one event. Newlines in `data` become several `data:` lines, which the parser joins
/// back.
pub fn encode(event: &str, data: &str) -> String {
    let mut out = String::with_capacity(event.len() + data.len() + 16);
    out.push_str("event: ");
    out.push_str(event);
    out.push('\n');
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut parser = SseParser::default();
        chunks.iter().flat_map(|chunk| parser.push(chunk).unwrap()).collect()
    }

    fn ev(event: Option<&str>, data: &str) -> SseEvent {
        SseEvent { event: event.map(str::to_owned), data: data.to_owned() }
    }

    #[test]
    fn parses_openai_style_stream() {
        let events = parse_all(&[b"data: {\"a\":1}\n\ndata: [DONE]\n\n"]);
        assert_eq!(events, vec![ev(None, "{\"a\":1}"), ev(None, "[DONE]")]);
    }

    #[test]
    fn every_line_ending_and_split_point_gives_the_same_events() {
        let text = "event: delta\ndata: one\ndata: two\n\n: comment\nevent: done\ndata:x\n\n";
        let expected = vec![ev(Some("delta"), "one\ntwo"), ev(Some("done"), "x")];
        for ending in ["\n", "\r\n", "\r"] {
            let wire = text.replace('\n', ending);
            let bytes = wire.as_bytes();
            for split in 0..=bytes.len() {
                let (a, b) = bytes.split_at(split);
                assert_eq!(parse_all(&[a, b]), expected, "ending {ending:?} split at {split}");
            }
        }
    }

    #[test]
    fn blank_lines_without_data_dispatch_nothing() {
        assert_eq!(parse_all(&[b"\n\nevent: x\n\n\n"]), vec![]);
    }

    #[test]
    fn encode_then_parse_round_trips_multiline_data() {
        let wire = encode("delta", "a\nb\n");
        assert_eq!(parse_all(&[wire.as_bytes()]), vec![ev(Some("delta"), "a\nb\n")]);
    }

    #[test]
    fn an_endless_line_hits_the_limit() {
        let mut parser = SseParser::with_limit(64);
        assert!(parser.push(&[b'a'; 40]).is_ok());
        assert_eq!(parser.push(&[b'a'; 40]), Err(SseTooLarge { limit: 64 }));
    }

    #[test]
    fn invalid_utf8_is_replaced_not_fatal() {
        let events = parse_all(&[b"data: \xff\xfe ok\n\n"]);
        assert_eq!(events.len(), 1);
        assert!(events[0].data.ends_with(" ok"));
    }
}

#[cfg(test)]
mod fuzz {
    //! Property tests: any bytes, split anywhere, never panic the parser, never make it hold
    //! more than its limit, and encoded events always come back whole.

    use proptest::prelude::*;

    use super::*;

    proptest! {
        // PROPTEST_CASES=N runs more (docs/reliability.md has the long runs).
        #![proptest_config(ProptestConfig::with_cases(std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(512)))]

        #[test]
        fn arbitrary_bytes_never_panic_or_exceed_the_limit(chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 0..20)) {
            let mut parser = SseParser::with_limit(1024);
            for chunk in &chunks {
                if parser.push(chunk).is_err() {
                    break;
                }
                prop_assert!(parser.line.len() + parser.data.len() <= 1024);
            }
        }

        #[test]
        fn encoded_events_round_trip_at_any_split(name in "[a-z]{1,10}", data in "[^\r]{0,200}", split in 0usize..400) {
            let wire = encode(&name, &data);
            let bytes = wire.as_bytes();
            let split = split.min(bytes.len());
            let mut parser = SseParser::default();
            let mut events = parser.push(&bytes[..split]).unwrap();
            events.extend(parser.push(&bytes[split..]).unwrap());
            prop_assert_eq!(events, vec![SseEvent { event: Some(name), data }]);
        }
    }
}
