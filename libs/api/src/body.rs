//! Request bodies: read within the configured limit (413 beyond it, checked against
//! `Content-Length` before reading), and parsed as JSON into a request type whose errors name
//! the field (`page_size: invalid type: string "x", expected u32`). An empty body reads as `{}`,
//! so endpoints whose fields are all optional accept no body at all, as Airy Core's do.

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use eddy_service::envelope::{TRACEPARENT_HEADER, TraceContext};
use serde::de::DeserializeOwned;

use crate::ApiError;

/// A request read whole: its head and its body.
#[derive(Debug)]
pub struct ReadBody {
    pub parts: Parts,
    pub body: Bytes,
}

impl ReadBody {
    /// The trace the caller sent (`traceparent`), which the records this request writes
    /// continue.
    pub fn caller_trace(&self) -> Option<TraceContext> {
        caller_trace(&self.parts.headers)
    }
}

/// The W3C trace context in `headers`, if the caller sent a valid one.
pub fn caller_trace(headers: &HeaderMap) -> Option<TraceContext> {
    headers
        .get(TRACEPARENT_HEADER)
        .and_then(|value| value.to_str().ok())
        .and_then(TraceContext::parse)
}

/// Reads `request`'s body, refusing more than `limit` bytes.
pub async fn read_body(request: Request, limit: usize) -> Result<ReadBody, ApiError> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(ApiError::payload_too_large(limit));
    }
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::payload_too_large(limit))?;
    Ok(ReadBody { parts, body })
}

/// Parses a JSON body into `T`; the error names the field that did not fit.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let text: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    let mut deserializer = serde_json::Deserializer::from_slice(text);
    match serde_path_to_error::deserialize::<_, T>(&mut deserializer) {
        Ok(value) => deserializer
            .end()
            .map(|()| value)
            .map_err(|error| ApiError::bad_request(format!("the body is not valid JSON: {error}"))),
        Err(error) => {
            let path = error.path().to_string();
            let inner = error.into_inner();
            if inner.is_syntax() || inner.is_eof() {
                Err(ApiError::bad_request(format!(
                    "the body is not valid JSON: {inner}"
                )))
            } else if path == "." {
                // A missing field is reported at the level that lacks it.
                Err(ApiError::bad_request(strip_position(&inner.to_string())))
            } else {
                Err(ApiError::bad_field(
                    &path,
                    strip_position(&inner.to_string()),
                ))
            }
        }
    }
}

/// serde_json appends " at line 1 column 17"; the field path says more.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(position) => message[..position].to_owned(),
        None => message.to_owned(),
    }
}

/// The body as bytes again (for forwarding to the instance that owns the key).
pub fn body_bytes(read: &ReadBody) -> Bytes {
    read.body.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Request {
        conversation_id: String,
        page_size: Option<u32>,
    }

    #[test]
    fn errors_name_the_field() {
        let error = parse_json::<Request>(br#"{"conversation_id": "c", "page_size": "x"}"#)
            .expect_err("bad type");
        assert_eq!(error.status, axum::http::StatusCode::BAD_REQUEST);
        assert!(
            error.message.starts_with("page_size: invalid type"),
            "{}",
            error.message
        );
        let error = parse_json::<Request>(br#"{"page_size": 2}"#).expect_err("missing");
        assert_eq!(error.message, "missing field `conversation_id`");
        let error = parse_json::<Request>(br#"{"conversation_id": "c", "pagesize": 2}"#)
            .expect_err("unknown");
        assert!(
            error.message.contains("unknown field `pagesize`"),
            "{}",
            error.message
        );
        let error = parse_json::<Request>(b"{not json").expect_err("syntax");
        assert!(
            error.message.starts_with("the body is not valid JSON"),
            "{}",
            error.message
        );
    }

    #[test]
    fn an_empty_body_is_an_empty_object() {
        #[derive(serde::Deserialize)]
        struct Optional {
            cursor: Option<String>,
        }
        let parsed = parse_json::<Optional>(b"").expect("empty body");
        assert!(parsed.cursor.is_none());
    }
}
