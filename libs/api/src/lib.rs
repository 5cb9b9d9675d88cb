//! The HTTP API conventions every Eddy component shares, so all endpoints behave alike:
//!
//! - [`server`]: `EDDY_HTTP_ADDRESS`, the system token, the body limit, and serving a router
//!   with auth, JSON 404/405, request metrics and graceful shutdown;
//! - [`error`]: one error shape, `{"message": ..., "code": ...}`, with the right status;
//! - [`body`]: reading a request body within the limit (413) and parsing JSON that names the
//!   field it could not use (400);
//! - [`auth`]: `Authorization: Bearer <token>` checks in constant time (401 before any work);
//! - [`page`]: `{data, pagination_data: {previous_cursor, next_cursor, total}}`, page sizes and
//!   opaque cursors;
//! - [`time`]: ISO-8601 UTC timestamps with milliseconds;
//! - [`views`]: the JSON shapes of records (channels, tags) shared by components.
//!
//! The API follows Airy Core's documented contract: `POST` JSON endpoints named
//! `/things.action`, snake_case fields.

pub mod auth;
pub mod body;
pub mod error;
pub mod page;
pub mod platform;
pub mod server;
pub mod time;
pub mod views;

pub use body::{ReadBody, parse_json, read_body};
pub use error::ApiError;
pub use page::{Page, PageRequest, PaginationData};
pub use server::{ApiArgs, serve};
