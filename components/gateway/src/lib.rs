//! The gateway: one address for every Eddy API on one machine (`scripts/up` runs it; on
//! Kubernetes the chart's Ingress does the same job). Each endpoint goes to the component that
//! serves it, chosen by the endpoint's name (`/conversations.*` → communication, `/sources.*` →
//! source-api, ...; any other `/<name>.*` to a component named `<name>`, as for components made
//! by `scripts/new-component`); requests take turns over the component's instances, and an
//! instance that does not answer is skipped for the next one. Bodies and headers pass through
//! unchanged: the components check the tokens.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use clap::Parser;
use eddy_api::ApiError;
use eddy_service::{ComponentConfig, ComponentInfo, Runtime, ServiceArgs, ServiceError};

pub const COMPONENT: ComponentInfo = ComponentInfo::new("eddy-gateway", env!("CARGO_PKG_VERSION"));

/// Which component serves an endpoint, by the endpoint's first name.
const ROUTES: &[(&str, &str)] = &[
    ("conversations", "communication"),
    ("messages", "communication"),
    ("metadata", "communication"),
    ("sources", "source-api"),
    ("channels", "admin"),
    ("tags", "admin"),
    ("webhooks", "admin"),
];

#[derive(Debug, Parser)]
#[command(version, about = "One address for every Eddy API on one machine")]
pub struct Config {
    #[command(flatten)]
    pub service: ServiceArgs,
    /// Where the gateway listens.
    #[arg(long, env = "EDDY_HTTP_ADDRESS", default_value = "127.0.0.1:8080")]
    pub http_address: SocketAddr,
    /// The instances of each component: `communication=http://127.0.0.1:18100,http://127.0.0.1:18101;admin=...`.
    #[arg(long, env = "EDDY_GATEWAY_BACKENDS", value_parser = parse_backends)]
    pub backends: Backends,
    /// Largest request body passed on, in bytes.
    #[arg(long, env = "EDDY_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
}

impl ComponentConfig for Config {
    fn service(&self) -> &ServiceArgs {
        &self.service
    }
}

/// Component name → its instances' base URLs.
#[derive(Debug, Clone, Default)]
pub struct Backends(pub Vec<(String, Vec<String>)>);

fn parse_backends(text: &str) -> Result<Backends, String> {
    let mut backends = Vec::new();
    for entry in text
        .split(';')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
    {
        let (component, urls) = entry
            .split_once('=')
            .ok_or_else(|| format!("'{entry}' is not <component>=<url>[,<url>...]"))?;
        let urls: Vec<String> = urls
            .split(',')
            .map(|url| url.trim().trim_end_matches('/').to_owned())
            .filter(|url| !url.is_empty())
            .collect();
        if urls.is_empty() {
            return Err(format!("component {component} has no instance URL"));
        }
        for url in &urls {
            if !url.starts_with("http://") && !url.starts_with("https://") {
                return Err(format!("'{url}' is not an http(s) URL"));
            }
        }
        backends.push((component.trim().to_owned(), urls));
    }
    Ok(Backends(backends))
}

struct Gateway {
    backends: Backends,
    turns: Vec<AtomicUsize>,
    client: reqwest::Client,
    max_body_bytes: usize,
}

pub async fn start(config: Config, runtime: Runtime) -> Result<(), String> {
    let gateway = Arc::new(Gateway {
        turns: config
            .backends
            .0
            .iter()
            .map(|_| AtomicUsize::new(0))
            .collect(),
        backends: config.backends,
        client: eddy_service::http::client_builder()
            .build()
            .map_err(|error| format!("the HTTP client: {error}"))?,
        max_body_bytes: config.max_body_bytes,
    });
    // Every path (the shared server's own fallback answers only what no route takes).
    let router = Router::new()
        .route("/{*path}", any(pass_on))
        .with_state(gateway);
    eddy_api::serve(&runtime, config.http_address, router)
        .await
        .map_err(|error: ServiceError| error.to_string())?;
    Ok(())
}

/// The component serving endpoints named `name` (`/<name>.*`): the one in [`ROUTES`], else a
/// backend called `name` (components made by `scripts/new-component` serve `/<name>.*`).
fn component_for<'a>(name: &str, backends: &'a Backends) -> Option<&'a str> {
    ROUTES
        .iter()
        .find(|(prefix, _)| *prefix == name)
        .map(|(_, component)| *component)
        .or_else(|| {
            backends
                .0
                .iter()
                .find(|(backend, _)| backend == name)
                .map(|(backend, _)| backend.as_str())
        })
}

async fn pass_on(State(gateway): State<Arc<Gateway>>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let name = path
        .trim_start_matches('/')
        .split('.')
        .next()
        .unwrap_or_default();
    let Some(component) = component_for(name, &gateway.backends) else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_endpoint",
            format!("there is no endpoint {path}"),
        )
        .into_response();
    };
    let Some(index) = gateway
        .backends
        .0
        .iter()
        .position(|(name, _)| name == component)
    else {
        return ApiError::unavailable(
            "no_backend",
            format!("{component} is not running behind this gateway"),
        )
        .into_response();
    };
    let instances = &gateway.backends.0[index].1;
    let (parts, body) = match eddy_api::read_body(request, gateway.max_body_bytes).await {
        Ok(read) => (read.parts, read.body),
        Err(error) => return error.into_response(),
    };
    let first = gateway.turns[index].fetch_add(1, Ordering::Relaxed);
    for attempt in 0..instances.len() {
        let base = &instances[(first + attempt) % instances.len()];
        let path_and_query = parts
            .uri
            .path_and_query()
            .map_or(path.as_str(), |value| value.as_str());
        let mut outgoing = gateway
            .client
            .request(parts.method.clone(), format!("{base}{path_and_query}"))
            .body(body.clone());
        for (name, value) in &parts.headers {
            if name != header::HOST && name != header::CONTENT_LENGTH {
                outgoing = outgoing.header(name, value);
            }
        }
        match outgoing.send().await {
            Ok(answer) => return eddy_streams::query::relay(answer).await,
            // Not answering: try the next instance.
            Err(error) => {
                tracing::warn!(instance = %base, error = %error, "instance did not answer")
            }
        }
    }
    ApiError::unavailable(
        "no_instance_answered",
        format!("no instance of {component} answered"),
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_parse_and_bad_ones_say_why() {
        let backends = parse_backends("communication=http://a:1,http://b:2/; admin=http://c:3")
            .expect("valid");
        assert_eq!(backends.0[0].1, ["http://a:1", "http://b:2"]);
        assert_eq!(backends.0[1].0, "admin");
        assert!(parse_backends("communication").is_err());
        assert!(parse_backends("admin=ftp://x").is_err());
        assert!(parse_backends("admin=").is_err());
    }

    #[test]
    fn endpoints_go_to_their_component_or_the_backend_named_like_them() {
        let backends =
            parse_backends("communication=http://a:1;order-tracker=http://b:2").expect("valid");
        assert_eq!(
            component_for("conversations", &backends),
            Some("communication")
        );
        assert_eq!(component_for("tags", &backends), Some("admin"));
        assert_eq!(
            component_for("order-tracker", &backends),
            Some("order-tracker")
        );
        assert_eq!(component_for("unknown", &backends), None);
    }
}
