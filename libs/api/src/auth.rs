//! Bearer tokens: `Authorization: Bearer <token>`, compared in constant time. Every API but
//! ingest takes the system token (a configured secret); ingest takes a source's token, which
//! is stored only as its SHA-256 hash ([`token_hash`]).

use axum::http::{HeaderMap, header};
use sha2::{Digest, Sha256};

use crate::ApiError;

/// The bearer token of a request, or 401 naming what is missing.
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing Authorization header (Bearer token)"))?;
    let text = value
        .to_str()
        .map_err(|_| ApiError::unauthorized("the Authorization header is not text"))?;
    match text.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(ApiError::unauthorized(
            "the Authorization header is not 'Bearer <token>'",
        )),
    }
}

/// Hex SHA-256 of a token: what is stored in place of the token.
pub fn token_hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// True if `presented` equals `expected`, in time independent of where they differ (the
/// digests are compared, so lengths leak nothing either).
pub fn tokens_match(presented: &str, expected: &str) -> bool {
    let presented = Sha256::digest(presented.as_bytes());
    let expected = Sha256::digest(expected.as_bytes());
    presented
        .iter()
        .zip(expected.iter())
        .fold(0u8, |difference, (a, b)| difference | (a ^ b))
        == 0
}

/// True if `presented` hashes to `expected_hash` (hex), in constant time.
pub fn token_matches_hash(presented: &str, expected_hash: &str) -> bool {
    let presented = token_hash(presented);
    presented.len() == expected_hash.len()
        && presented
            .bytes()
            .zip(expected_hash.bytes())
            .fold(0u8, |difference, (a, b)| difference | (a ^ b))
            == 0
}

/// Checks the system token: Ok, or 401.
pub fn require_token(headers: &HeaderMap, expected: &str) -> Result<(), ApiError> {
    let token = bearer_token(headers)?;
    if tokens_match(token, expected) {
        Ok(())
    } else {
        Err(ApiError::unauthorized("the bearer token is not valid"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn bearer_tokens_are_checked() {
        let mut headers = HeaderMap::new();
        assert!(require_token(&headers, "s3cret").is_err());
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer wrong"),
        );
        assert!(require_token(&headers, "s3cret").is_err());
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic s3cret"),
        );
        assert!(require_token(&headers, "s3cret").is_err());
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer s3cret"),
        );
        assert!(require_token(&headers, "s3cret").is_ok());
        assert!(token_matches_hash("abc", &token_hash("abc")));
        assert!(!token_matches_hash("abd", &token_hash("abc")));
    }
}
