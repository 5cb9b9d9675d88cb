//! Envelope headers: what every record Eddy writes carries besides its key and value, so any
//! consumer can measure end-to-end lag and follow a message across components.
//!
//! | header | value |
//! |---|---|
//! | `eddy-event-time` | when the fact happened (ms since the Unix epoch, decimal) |
//! | `eddy-ingest-time` | when it entered Eddy (ms since the Unix epoch, decimal) |
//! | `eddy-producer` | the component that wrote this record, `<name>/<version>` |
//! | `traceparent` | a W3C Trace Context `traceparent` (`00-<trace id>-<span id>-<flags>`) |
//!
//! A record made at the edge (an inbound webhook, an API call) starts an envelope with
//! [`Envelope::ingested`]; a record derived from another one (a transformer's output, a
//! changelog write) carries it on with [`Envelope::derive`]: same event and ingest time, same
//! trace, a new span, and the deriving component as producer.

use std::cell::Cell;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use rdkafka::message::{Header, Headers, OwnedHeaders};

use crate::run::ComponentInfo;

pub const EVENT_TIME_HEADER: &str = "eddy-event-time";
pub const INGEST_TIME_HEADER: &str = "eddy-ingest-time";
pub const PRODUCER_HEADER: &str = "eddy-producer";
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// The envelope of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// When the fact happened, ms since the Unix epoch.
    pub event_time: i64,
    /// When it entered Eddy, ms since the Unix epoch.
    pub ingest_time: i64,
    /// `<component name>/<version>` of the writer.
    pub producer: String,
    pub trace: TraceContext,
}

impl Envelope {
    /// A record entering Eddy now, for a fact that happened at `event_time` (ms), continuing
    /// the caller's trace when it sent one (`traceparent` of the HTTP request).
    pub fn ingested(
        producer: &ComponentInfo,
        event_time: i64,
        caller_trace: Option<&TraceContext>,
    ) -> Self {
        Envelope {
            event_time,
            ingest_time: now_millis(),
            producer: producer_name(producer),
            trace: caller_trace.map_or_else(TraceContext::new_root, TraceContext::child),
        }
    }

    /// A record `producer` originates itself now (state of its own, not derived from input).
    pub fn originated(producer: &str) -> Self {
        let now = now_millis();
        Envelope {
            event_time: now,
            ingest_time: now,
            producer: producer.to_owned(),
            trace: TraceContext::new_root(),
        }
    }

    /// The envelope of a record `producer` derives from this one.
    pub fn derive(&self, producer: &str) -> Self {
        Envelope {
            event_time: self.event_time,
            ingest_time: self.ingest_time,
            producer: producer.to_owned(),
            trace: self.trace.child(),
        }
    }

    /// Reads the envelope of a consumed record. Records written outside Eddy may lack some
    /// headers: the record's timestamp (ms) stands in for the times, and a missing or invalid
    /// `traceparent` starts a new trace.
    pub fn from_headers(headers: Option<&impl Headers>, record_timestamp: Option<i64>) -> Self {
        let text = |name: &str| {
            headers.and_then(|headers| {
                headers
                    .iter()
                    .find(|header| header.key == name)
                    .and_then(|header| header.value)
                    .and_then(|value| std::str::from_utf8(value).ok())
                    .map(str::to_owned)
            })
        };
        let fallback_time = record_timestamp.unwrap_or_else(now_millis);
        let time = |name: &str| {
            text(name)
                .and_then(|value| value.parse::<i64>().ok())
                .unwrap_or(fallback_time)
        };
        Envelope {
            event_time: time(EVENT_TIME_HEADER),
            ingest_time: time(INGEST_TIME_HEADER),
            producer: text(PRODUCER_HEADER).unwrap_or_default(),
            trace: text(TRACEPARENT_HEADER)
                .and_then(|value| TraceContext::parse(&value))
                .unwrap_or_else(TraceContext::new_root),
        }
    }

    /// The envelope as Kafka headers.
    pub fn to_headers(&self) -> OwnedHeaders {
        self.append_to(OwnedHeaders::new_with_capacity(4))
    }

    /// Adds the envelope headers to `headers`.
    pub fn append_to(&self, headers: OwnedHeaders) -> OwnedHeaders {
        headers
            .insert(Header {
                key: EVENT_TIME_HEADER,
                value: Some(&self.event_time.to_string()),
            })
            .insert(Header {
                key: INGEST_TIME_HEADER,
                value: Some(&self.ingest_time.to_string()),
            })
            .insert(Header {
                key: PRODUCER_HEADER,
                value: Some(&self.producer),
            })
            .insert(Header {
                key: TRACEPARENT_HEADER,
                value: Some(&self.trace.to_string()),
            })
    }
}

/// `<name>/<version>`, as the `eddy-producer` header names a component.
pub fn producer_name(component: &ComponentInfo) -> String {
    format!("{}/{}", component.name, component.version)
}

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

/// A W3C Trace Context position: which trace, which span in it, and the trace flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub flags: u8,
}

impl TraceContext {
    /// A new trace (sampled flag set).
    pub fn new_root() -> Self {
        TraceContext {
            trace_id: random_nonzero(),
            span_id: random_nonzero(),
            flags: 0x01,
        }
    }

    /// A new span in the same trace.
    pub fn child(&self) -> Self {
        TraceContext {
            trace_id: self.trace_id,
            span_id: random_nonzero(),
            flags: self.flags,
        }
    }

    /// Parses a version-00 `traceparent`; `None` when it is malformed or has all-zero ids, as
    /// the specification requires.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version != "00" || parts.next().is_some() {
            return None;
        }
        let trace_id: [u8; 16] = decode_hex(trace)?;
        let span_id: [u8; 8] = decode_hex(span)?;
        let [flags]: [u8; 1] = decode_hex(flags)?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(TraceContext {
            trace_id,
            span_id,
            flags,
        })
    }

    /// The trace id as 32 lowercase hex digits.
    pub fn trace_id_hex(&self) -> String {
        encode_hex(&self.trace_id)
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "00-{}-{}-{:02x}",
            encode_hex(&self.trace_id),
            encode_hex(&self.span_id),
            self.flags
        )
    }
}

/// Random ids without a system call per id: a SplitMix64 generator per thread, seeded from the
/// OS once. Span and trace ids need to be unique, not unpredictable, and envelopes are made
/// for every record a topology writes.
fn random_nonzero<const N: usize>() -> [u8; N] {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(seed());
    }
    let mut bytes = [0u8; N];
    while bytes == [0u8; N] {
        for chunk in bytes.chunks_mut(8) {
            let next = STATE.with(|state| {
                let value = state.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
                state.set(value);
                let mut mixed = (value ^ (value >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                mixed ^ (mixed >> 31)
            });
            chunk.copy_from_slice(&next.to_le_bytes()[..chunk.len()]);
        }
    }
    bytes
}

fn seed() -> u64 {
    let mut seed = [0u8; 8];
    if getrandom::fill(&mut seed).is_err() {
        // Without an OS random source: the clock and the process id still keep runs apart.
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos());
        return (nanos as u64) ^ u64::from(std::process::id()).rotate_left(32);
    }
    u64::from_le_bytes(seed)
}

fn encode_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    text
}

fn decode_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N
        || !text
            .bytes()
            .all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'))
    {
        return None;
    }
    let mut bytes = [0u8; N];
    for (index, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * index..2 * index + 2], 16).ok()?;
    }
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMPONENT: ComponentInfo = ComponentInfo::new("eddy-test", "1.2.3");

    #[test]
    fn traceparent_round_trips_and_rejects_malformed_values() {
        let example = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let trace = TraceContext::parse(example).unwrap();
        assert_eq!(trace.to_string(), example);
        assert_eq!(trace.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xx",
            "00-4bf92f3577b34da6-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn derived_envelopes_keep_times_and_trace_but_not_the_span() {
        let caller = TraceContext::new_root();
        let ingested = Envelope::ingested(&COMPONENT, 1_000, Some(&caller));
        assert_eq!(ingested.trace.trace_id, caller.trace_id);
        assert_ne!(ingested.trace.span_id, caller.span_id);
        assert_eq!(ingested.producer, "eddy-test/1.2.3");
        assert!(ingested.ingest_time >= 1_000);

        let derived = ingested.derive("eddy-other/0.1.0");
        assert_eq!(derived.event_time, ingested.event_time);
        assert_eq!(derived.ingest_time, ingested.ingest_time);
        assert_eq!(derived.trace.trace_id, ingested.trace.trace_id);
        assert_ne!(derived.trace.span_id, ingested.trace.span_id);
        assert_eq!(derived.producer, "eddy-other/0.1.0");
    }

    #[test]
    fn headers_round_trip_and_missing_headers_fall_back_to_the_record_timestamp() {
        let envelope = Envelope::ingested(&COMPONENT, 42, None);
        let headers = envelope.to_headers();
        assert_eq!(Envelope::from_headers(Some(&headers), Some(7)), envelope);

        let foreign = Envelope::from_headers(None::<&OwnedHeaders>, Some(7));
        assert_eq!((foreign.event_time, foreign.ingest_time), (7, 7));
        assert_eq!(foreign.producer, "");
        assert_ne!(foreign.trace.trace_id, [0; 16]);
    }
}
