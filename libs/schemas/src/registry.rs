//! The schema registry client: the Confluent-compatible API (Apicurio's `/apis/ccompat/v7` here,
//! Confluent Schema Registry or Karapace elsewhere), through `schema_registry_converter` where
//! it has the call and plain HTTP for the rest (compatibility config, look-up without
//! registering).
//!
//! Subjects follow TopicNameStrategy: `<topic>-value`.

use std::fmt;
use std::time::Duration;

use clap::Args;
use eddy_service::config::Secret;
use schema_registry_converter::async_impl::schema_registry::{
    SrSettings, get_schema_by_id, post_schema,
};
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{RawError, SchemaType, SuppliedSchema};
use serde::Deserialize;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// The compatibility level Eddy sets on every subject: a new schema must read all data written
/// with the previous one, so consumers can be upgraded before producers.
pub const COMPATIBILITY: &str = "BACKWARD";

/// Where the schema registry answers.
#[derive(Debug, Clone, Args)]
pub struct RegistryArgs {
    /// Base URL of the Confluent-compatible registry API (for Apicurio: `…/apis/ccompat/v7`).
    #[arg(
        long = "schema-registry-url",
        env = "EDDY_SCHEMA_REGISTRY_URL",
        default_value = "http://127.0.0.1:18081/apis/ccompat/v7"
    )]
    pub url: String,

    /// User name for HTTP basic authentication (e.g. a Confluent Cloud API key).
    #[arg(
        long = "schema-registry-username",
        env = "EDDY_SCHEMA_REGISTRY_USERNAME"
    )]
    pub username: Option<String>,

    /// Password for HTTP basic authentication (never logged).
    #[arg(
        long = "schema-registry-password",
        env = "EDDY_SCHEMA_REGISTRY_PASSWORD",
        hide_env_values = true
    )]
    pub password: Option<Secret>,
}

impl RegistryArgs {
    /// A registry without authentication at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        RegistryArgs {
            url: url.into(),
            username: None,
            password: None,
        }
    }
}

/// Why a registry call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RegistryError {
    #[error("schema registry at {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error(
        "the schema {schema} is not {COMPATIBILITY} compatible with what subject {subject} holds, so it was not registered: {message}"
    )]
    Incompatible {
        subject: String,
        schema: String,
        message: String,
    },
    /// `code` is the registry's error code (e.g. 40401), or the HTTP status without one.
    #[error("schema registry refused {what}: error {code}: {message}")]
    Refused {
        what: String,
        code: u32,
        message: String,
    },
    #[error(
        "schema {schema} is not registered under subject {subject}; register it with `eddy topics provision`"
    )]
    NotRegistered { subject: String, schema: String },
    #[error("schema {id} from the registry is not a usable Avro schema: {message}")]
    BadSchema { id: u32, message: String },
}

/// A schema version registered under a subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct RegisteredVersion {
    /// The registry-wide schema id that framed records carry.
    pub id: u32,
    pub version: u32,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error_code: u32,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct CompatibilityBody {
    #[serde(rename = "compatibilityLevel", alias = "compatibility")]
    level: String,
}

/// A client of one schema registry.
#[derive(Clone)]
pub struct SchemaRegistry {
    args: RegistryArgs,
    settings: SrSettings,
    http: reqwest::Client,
}

impl fmt::Debug for SchemaRegistry {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("SchemaRegistry")
            .field("url", &self.args.url)
            .finish_non_exhaustive()
    }
}

impl SchemaRegistry {
    pub fn new(args: &RegistryArgs) -> Result<Self, RegistryError> {
        let url = args.url.trim_end_matches('/').to_owned();
        let unreachable = |message: String| RegistryError::Unreachable {
            url: url.clone(),
            message,
        };
        let mut builder = SrSettings::new_builder(url.clone());
        builder.set_timeout(REQUEST_TIMEOUT);
        if let (Some(username), Some(password)) = (&args.username, &args.password) {
            builder.set_basic_authorization(username, Some(password.expose()));
        }
        // Both clients share the process's TLS configuration: loading the roots twice was
        // the longest step of a restart.
        let settings = builder
            .build_with(eddy_service::http::client_builder())
            .map_err(|error| unreachable(error.to_string()))?;
        let http = eddy_service::http::client_builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|error| unreachable(error.to_string()))?;
        Ok(SchemaRegistry {
            args: RegistryArgs {
                url,
                ..args.clone()
            },
            settings,
            http,
        })
    }

    /// The HTTP client this registry client uses: a component can share it for its own calls
    /// rather than pay for loading the TLS roots again.
    pub fn http_client(&self) -> reqwest::Client {
        self.http.clone()
    }

    /// The settings this client was made from (to make another client, e.g. on another thread).
    pub fn args(&self) -> &RegistryArgs {
        &self.args
    }

    /// Waits until the registry answers, retrying with backoff up to `timeout`.
    pub async fn wait_until_reachable(&self, timeout: Duration) -> Result<(), RegistryError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut backoff = Duration::from_millis(500);
        loop {
            // `/config` (the global compatibility level) is the cheapest call every
            // Confluent-compatible registry answers; `/subjects` lists every subject.
            match self.request(reqwest::Method::GET, "/config").send().await {
                Ok(response) if response.status().is_success() => return Ok(()),
                Ok(response) => {
                    tracing::warn!(status = %response.status(), url = %self.args.url, "waiting for the schema registry")
                }
                Err(error) => {
                    tracing::warn!(error = %error, url = %self.args.url, "waiting for the schema registry")
                }
            }
            if tokio::time::Instant::now() + backoff > deadline {
                return Err(RegistryError::Unreachable {
                    url: self.args.url.clone(),
                    message: format!("no answer within {timeout:?}"),
                });
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// The version of `subject` that holds exactly `schema` (JSON text), if any, without
    /// registering anything.
    pub async fn lookup(
        &self,
        subject: &str,
        schema: &str,
    ) -> Result<Option<RegisteredVersion>, RegistryError> {
        let body = serde_json::json!({ "schema": schema, "schemaType": "AVRO" });
        let response = self
            .request(reqwest::Method::POST, &format!("/subjects/{subject}"))
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .body(body.to_string())
            .send()
            .await
            .map_err(|error| self.unreachable(&error))?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        self.parse(response, &format!("looking up a schema in {subject}"))
            .await
            .map(Some)
    }

    /// Registers `schema` (JSON text) under `subject`, which checks it against the subject's
    /// compatibility level; returns its id. Registering a schema the subject already holds
    /// changes nothing and returns the same id.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        let supplied = SuppliedSchema::new(None, SchemaType::Avro, schema.to_owned());
        post_schema(&self.settings, subject.to_owned(), supplied)
            .await
            .map(|registered| registered.id)
            .map_err(|error| match registry_answer(&error) {
                Some((409, message)) => RegistryError::Incompatible {
                    subject: subject.to_owned(),
                    schema: schema_name(schema),
                    message,
                },
                Some((code, message)) => RegistryError::Refused {
                    what: format!("registering a schema under {subject}"),
                    code,
                    message,
                },
                None => RegistryError::Unreachable {
                    url: self.args.url.clone(),
                    message: error.to_string(),
                },
            })
    }

    /// The compatibility level set on `subject` itself (`None`: the subject has none and the
    /// registry-wide default applies).
    pub async fn compatibility(&self, subject: &str) -> Result<Option<String>, RegistryError> {
        let response = self
            .request(reqwest::Method::GET, &format!("/config/{subject}"))
            .send()
            .await
            .map_err(|error| self.unreachable(&error))?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let body: CompatibilityBody = self
            .parse(response, &format!("reading the compatibility of {subject}"))
            .await?;
        Ok(Some(body.level))
    }

    /// Sets `subject`'s compatibility level (the subject need not exist yet).
    pub async fn set_compatibility(&self, subject: &str, level: &str) -> Result<(), RegistryError> {
        let body = serde_json::json!({ "compatibility": level });
        let response = self
            .request(reqwest::Method::PUT, &format!("/config/{subject}"))
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .body(body.to_string())
            .send()
            .await
            .map_err(|error| self.unreachable(&error))?;
        let _: CompatibilityBody = self
            .parse(response, &format!("setting the compatibility of {subject}"))
            .await?;
        Ok(())
    }

    /// The schema (JSON text) registered under `id`.
    pub async fn schema_by_id(&self, id: u32) -> Result<String, RegistryError> {
        get_schema_by_id(id, &self.settings)
            .await
            .map(|registered| registered.schema)
            .map_err(|error| match registry_answer(&error) {
                Some((code, message)) => RegistryError::Refused {
                    what: format!("fetching schema {id}"),
                    code,
                    message,
                },
                None => RegistryError::Unreachable {
                    url: self.args.url.clone(),
                    message: error.to_string(),
                },
            })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self
            .http
            .request(method, format!("{}{path}", self.args.url))
            .header(reqwest::header::ACCEPT, CONTENT_TYPE);
        match (&self.args.username, &self.args.password) {
            (Some(username), Some(password)) => {
                request.basic_auth(username, Some(password.expose()))
            }
            _ => request,
        }
    }

    async fn parse<T: for<'de> Deserialize<'de>>(
        &self,
        response: reqwest::Response,
        what: &str,
    ) -> Result<T, RegistryError> {
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|error| self.unreachable(&error))?;
        if !status.is_success() {
            let body: Option<ErrorBody> = serde_json::from_str(&text).ok();
            return Err(RegistryError::Refused {
                what: what.to_owned(),
                code: body
                    .as_ref()
                    .map_or(u32::from(status.as_u16()), |body| body.error_code),
                message: body.map_or(text, |body| body.message),
            });
        }
        serde_json::from_str(&text).map_err(|error| RegistryError::Refused {
            what: what.to_owned(),
            code: u32::from(status.as_u16()),
            message: format!("unexpected answer {text:?}: {error}"),
        })
    }

    fn unreachable(&self, error: &reqwest::Error) -> RegistryError {
        RegistryError::Unreachable {
            url: self.args.url.clone(),
            message: error.to_string(),
        }
    }
}

/// The registry's own error code and message behind a `schema_registry_converter` error, when
/// the registry answered at all.
fn registry_answer(error: &SRCError) -> Option<(u32, String)> {
    let raw = std::error::Error::source(error)?.downcast_ref::<RawError>()?;
    Some((raw.error_code, raw.message.clone()))
}

/// The full name of an Avro schema given as JSON text, for messages.
fn schema_name(schema: &str) -> String {
    serde_json::from_str::<serde_json::Value>(schema)
        .ok()
        .and_then(|value| {
            let name = value.get("name")?.as_str()?.to_owned();
            Some(match value.get("namespace").and_then(|ns| ns.as_str()) {
                Some(namespace) if !name.contains('.') => format!("{namespace}.{name}"),
                _ => name,
            })
        })
        .unwrap_or_else(|| "(unnamed)".to_owned())
}
