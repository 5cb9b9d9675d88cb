//! The request side of every endpoint: the JSON body, read within the configured limit (413)
//! and parsed into the endpoint's request type (400 naming the field), and the caller's trace
//! (`traceparent`), which the records a request writes continue; and its headers, for a
//! request asked of every instance in turn (the token and trace go along).

use std::sync::Arc;

use axum::extract::{FromRequest, Request};
use axum::http::HeaderMap;
use eddy_api::{ApiError, parse_json, read_body};
use eddy_service::envelope::TraceContext;
use serde::de::DeserializeOwned;

use crate::AdminState;

/// A parsed request body of type `T`, the caller's trace, if it sent one, and the headers.
#[derive(Debug)]
pub struct ApiRequest<T> {
    pub body: T,
    pub trace: Option<TraceContext>,
    pub headers: HeaderMap,
}

impl<T: DeserializeOwned> FromRequest<Arc<AdminState>> for ApiRequest<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &Arc<AdminState>) -> Result<Self, ApiError> {
        let read = read_body(request, state.max_body_bytes).await?;
        let trace = read.caller_trace();
        let body = parse_json(&read.body)?;
        Ok(ApiRequest {
            body,
            trace,
            headers: read.parts.headers,
        })
    }
}
