//! Lists: `{"data": [...], "pagination_data": {"previous_cursor", "next_cursor", "total"}}`.
//!
//! Cursors are opaque: the position of an item in the list's order (keyset pagination), not an
//! offset, so pages are as cheap deep in a list as at its start and there is no cap on how far
//! one can page (Airy Core's offsets stopped at 2,000 hits). A cursor is `v1.` plus base64url
//! JSON; anything else is a 400 naming `cursor`, never a 500. `previous_cursor` leads to the
//! page before (null on the first page), `next_cursor` to the page after (null on the last).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::ApiError;

pub const DEFAULT_PAGE_SIZE: usize = 20;
pub const MAX_PAGE_SIZE: usize = 100;
const CURSOR_PREFIX: &str = "v1.";

/// The paging fields of a list request.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PageRequest {
    pub cursor: Option<String>,
    pub page_size: Option<i64>,
}

impl PageRequest {
    /// The page size, 1–100, default 20.
    pub fn size(&self) -> Result<usize, ApiError> {
        page_size(self.page_size)
    }

    /// The decoded cursor, if one was given.
    pub fn position<T: DeserializeOwned>(&self) -> Result<Option<T>, ApiError> {
        self.cursor.as_deref().map(decode_cursor).transpose()
    }
}

/// Checks a requested page size: 1–100, default 20.
pub fn page_size(requested: Option<i64>) -> Result<usize, ApiError> {
    match requested {
        None => Ok(DEFAULT_PAGE_SIZE),
        Some(size) if (1..=MAX_PAGE_SIZE as i64).contains(&size) => Ok(size as usize),
        Some(size) => Err(ApiError::bad_field(
            "page_size",
            format!("{size} is out of range: use 1 to {MAX_PAGE_SIZE}"),
        )),
    }
}

/// One page of a list.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub pagination_data: PaginationData,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PaginationData {
    pub previous_cursor: Option<String>,
    pub next_cursor: Option<String>,
    pub total: u64,
}

/// An opaque cursor for `position`.
pub fn encode_cursor<T: Serialize>(position: &T) -> String {
    let json = serde_json::to_vec(position).unwrap_or_default();
    format!("{CURSOR_PREFIX}{}", URL_SAFE_NO_PAD.encode(json))
}

/// The position of a cursor made by [`encode_cursor`]; 400 naming `cursor` otherwise.
pub fn decode_cursor<T: DeserializeOwned>(cursor: &str) -> Result<T, ApiError> {
    let invalid = || {
        ApiError::bad_field(
            "cursor",
            "not a cursor this API returned (use previous_cursor or next_cursor from a list answer)",
        )
    };
    let encoded = cursor.strip_prefix(CURSOR_PREFIX).ok_or_else(invalid)?;
    let json = URL_SAFE_NO_PAD.decode(encoded).map_err(|_| invalid())?;
    serde_json::from_slice(&json).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Position {
        at: i64,
        id: String,
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_a_400_about_the_cursor() {
        let position = Position {
            at: 5,
            id: "x".to_owned(),
        };
        let cursor = encode_cursor(&position);
        assert_eq!(decode_cursor::<Position>(&cursor).ok(), Some(position));
        for garbage in ["20", "v1.!!!", "v1.e30", ""] {
            let error = decode_cursor::<Position>(garbage).expect_err(garbage);
            assert_eq!(error.status, axum::http::StatusCode::BAD_REQUEST);
            assert!(error.message.starts_with("cursor:"), "{}", error.message);
        }
    }

    #[test]
    fn page_sizes_are_one_to_a_hundred() {
        assert_eq!(page_size(None).ok(), Some(20));
        assert_eq!(page_size(Some(100)).ok(), Some(100));
        assert!(page_size(Some(0)).is_err());
        assert!(page_size(Some(101)).is_err());
    }
}
