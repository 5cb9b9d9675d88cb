//! `eddy-admin`, the admin API of Eddy: channels (`/channels.*`), tags (`/tags.*`) and webhook
//! subscriptions (`/webhooks.*`), following Airy Core's contract (`POST` JSON endpoints named
//! `/things.action`, snake_case fields, ISO-8601 UTC timestamps with milliseconds). The contract
//! is `openapi.json`, served at `GET /openapi.json`.
//!
//! Its state is four small compacted topics (channels, tags, webhook subscriptions, webhook
//! dead letters), each read whole into memory on every instance ([`tables`]), so any instance
//! answers those requests identically and instances scale without routing. A change is written
//! to its topic and answered once the instance's own table shows it. The webhook delivery log
//! is too large for that: it is a streams application ([`delivery_log`]) whose partitions the
//! instances share, and a list asks every instance for its part. The instance is ready (`/ready`
//! on the admin address) once the tables have caught up with their topics and the streams
//! application runs; until then the endpoints answer 503.
//!
//! - [`config`]: the settings ([`Config`]);
//! - [`channels`], [`tags`], [`webhooks`], [`deliveries`]: the endpoints;
//! - [`delivery_log`]: the stores of webhook delivery attempts;
//! - [`destination`]: which webhook URLs are accepted (no loopback or private networks unless
//!   allowed);
//! - [`request`]: the body and trace of a request.

pub mod channels;
pub mod config;
pub mod deliveries;
pub mod delivery_log;
pub mod destination;
pub mod request;
pub mod tables;
pub mod tags;
pub mod webhooks;

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::response::Response;
use axum::routing::{get, post};
use eddy_api::ApiError;
use eddy_api::server::{openapi_json, with_system_token};
use eddy_schemas::catalog::{
    CHANNELS, TAGS, WEBHOOK_DEAD_LETTERS, WEBHOOK_DELIVERIES, WEBHOOK_EVENTS, WEBHOOK_SUBSCRIPTIONS,
};
use eddy_schemas::codec::CodecError;
use eddy_schemas::writer::{RecordWriter, WriteError};
use eddy_schemas::{
    AvroSerde, Catalog, Channel, SchemaRegistry, Tag, WebhookEvent, WebhookSubscription,
};
use eddy_service::admin::ReadinessCondition;
use eddy_service::shutdown::Shutdown;
use eddy_service::{ComponentInfo, Runtime, ServiceError};
use eddy_streams::service::supervise;
use eddy_streams::{StreamsApp, Topology};
use eddy_webhooks::SecretKey;

pub use config::Config;
use deliveries::{DeliveryLog, EventsTopic};
use delivery_log::DeliveryLogBuilder;
use destination::DestinationPolicy;
use tables::{EndOffsets, TableSettings, TopicTable};

/// This component, as logs and the `eddy-producer` header name it.
pub const COMPONENT: ComponentInfo = ComponentInfo::new("eddy-admin", env!("CARGO_PKG_VERSION"));

/// The API contract: every endpoint, request and answer.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// The longest tag, channel or subscription name accepted, in characters.
pub const MAX_NAME_CHARS: usize = 100;

/// How long asking the other instances for their part of a list may take.
const FAN_OUT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What can stop the admin service from starting.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("connecting: {0}")]
    Connect(String),
    #[error("topic {0} is not in the catalog")]
    NotInCatalog(&'static str),
    #[error("the schema of topic {topic}: {source}")]
    Schema {
        topic: String,
        #[source]
        source: CodecError,
    },
    #[error(transparent)]
    Writer(#[from] WriteError),
    #[error("reading topic {topic}: {message}")]
    Table { topic: String, message: String },
    #[error("starting the delivery log view: {0}")]
    Streams(String),
}

/// What every request handler shares.
#[derive(Debug)]
pub struct AdminState {
    max_body_bytes: usize,
    destination_policy: DestinationPolicy,
    secret_key: SecretKey,
    /// Set once Kafka and the registry answered and the tables started reading.
    tables: OnceLock<Tables>,
}

/// The tables of the admin service, the delivery log view and the events topic.
#[derive(Debug)]
pub struct Tables {
    pub channels: TopicTable<Channel>,
    pub tags: TopicTable<Tag>,
    pub webhook_subscriptions: TopicTable<WebhookSubscription>,
    /// Dead-lettered webhook events by event id (read only).
    pub dead_letters: TopicTable<WebhookEvent>,
    /// Where the dead-letters topic ends, to read it to the end before a redelivery.
    pub dead_letter_ends: EndOffsets,
    pub delivery_log: DeliveryLog,
    pub events: EventsTopic,
}

impl AdminState {
    pub fn new(config: &Config) -> Self {
        AdminState {
            max_body_bytes: config.api.max_body_bytes,
            destination_policy: config.destination_policy(),
            secret_key: SecretKey::new(config.secret_key.expose().as_bytes()),
            tables: OnceLock::new(),
        }
    }

    /// The tables, or a 503 (`starting`) while Kafka or the schema registry is not reached yet.
    pub fn tables(&self) -> Result<&Tables, ApiError> {
        self.tables.get().ok_or_else(|| {
            ApiError::unavailable(
                "starting",
                "the admin service is still connecting to Kafka and the schema registry; retry shortly",
            )
        })
    }
}

/// The readiness condition of each table, named after it.
struct TableReadiness {
    channels: ReadinessCondition,
    tags: ReadinessCondition,
    webhook_subscriptions: ReadinessCondition,
    dead_letters: ReadinessCondition,
}

/// Starts the admin service: serves the API at once (503 until the tables are loaded), then
/// connects to Kafka and the registry, loads the tables and starts the delivery log view in the
/// background, turning ready when every table has caught up and the view runs.
pub async fn start(config: Config, runtime: Runtime) -> Result<(), AdminError> {
    let readiness = TableReadiness {
        channels: runtime.readiness.condition("channels"),
        tags: runtime.readiness.condition("tags"),
        webhook_subscriptions: runtime.readiness.condition("webhook-subscriptions"),
        dead_letters: runtime.readiness.condition("webhook-dead-letters"),
    };
    // Registered now so the instance is not ready before the view starts; `supervise` takes
    // the condition over once it has.
    runtime.readiness.condition("streams");
    let state = Arc::new(AdminState::new(&config));
    let router = router(Arc::clone(&state), &config.api.system_token);
    eddy_api::serve(&runtime, config.api.http_address, router).await?;
    let shutdown = runtime.shutdown.clone();
    shutdown.spawn(
        "load-tables",
        load_tables(config, runtime, state, readiness),
    );
    Ok(())
}

/// The API: every endpoint behind the system token but `GET /openapi.json`.
pub fn router(state: Arc<AdminState>, system_token: &eddy_service::config::Secret) -> Router {
    let endpoints = Router::new()
        .route("/channels.list", post(channels::list))
        .route("/channels.info", post(channels::info))
        .route("/channels.update", post(channels::update))
        .route("/tags.create", post(tags::create))
        .route("/tags.list", post(tags::list))
        .route("/tags.update", post(tags::update))
        .route("/tags.delete", post(tags::delete))
        .route("/webhooks.subscribe", post(webhooks::subscribe))
        .route("/webhooks.update", post(webhooks::update))
        .route("/webhooks.unsubscribe", post(webhooks::unsubscribe))
        .route("/webhooks.info", post(webhooks::info))
        .route("/webhooks.list", post(webhooks::list))
        .route("/webhooks.rotate-secret", post(webhooks::rotate_secret))
        .route(deliveries::LIST_PATH, post(deliveries::list))
        .route("/webhooks.redeliver", post(deliveries::redeliver))
        .with_state(state);
    Router::new()
        .route("/openapi.json", get(openapi))
        .merge(with_system_token(endpoints, system_token))
}

async fn openapi() -> Response {
    openapi_json(OPENAPI)
}

/// Waits for Kafka and the registry, opens the tables, starts the delivery log view, and marks
/// each table ready once it caught up.
async fn load_tables(
    config: Config,
    runtime: Runtime,
    state: Arc<AdminState>,
    readiness: TableReadiness,
) -> Result<(), AdminError> {
    let component = runtime.component;
    let shutdown = runtime.shutdown.clone();
    let stop = shutdown.token();
    let registry =
        match eddy_api::platform::connect(&runtime, &config.kafka, &config.registry).await {
            Ok(registry) => registry,
            // Told to stop before Kafka or the registry answered: nothing to load.
            Err(_) if stop.is_cancelled() => return Ok(()),
            Err(message) => return Err(AdminError::Connect(message)),
        };

    let catalog = Catalog::new(&config.catalog);
    let topic = |dataset: &'static str| {
        catalog
            .name(dataset)
            .map(str::to_owned)
            .ok_or(AdminError::NotInCatalog(dataset))
    };
    let (channels_topic, tags_topic, subscriptions_topic) = (
        topic(CHANNELS)?,
        topic(TAGS)?,
        topic(WEBHOOK_SUBSCRIPTIONS)?,
    );
    let (events_topic, deliveries_topic, dead_letters_topic) = (
        topic(WEBHOOK_EVENTS)?,
        topic(WEBHOOK_DELIVERIES)?,
        topic(WEBHOOK_DEAD_LETTERS)?,
    );
    let writer = RecordWriter::new(
        &config.kafka,
        component.name,
        &[
            &channels_topic,
            &tags_topic,
            &subscriptions_topic,
            &events_topic,
        ],
    )
    .await?;
    let settings = TableSettings {
        kafka: &config.kafka,
        writer: &writer,
        component,
    };
    let tables = Tables {
        channels: TopicTable::open(
            "channels",
            &channels_topic,
            value_serde(&registry, &channels_topic).await?,
            &settings,
        )
        .await?,
        tags: TopicTable::open(
            "tags",
            &tags_topic,
            value_serde(&registry, &tags_topic).await?,
            &settings,
        )
        .await?,
        webhook_subscriptions: TopicTable::open(
            "webhook subscriptions",
            &subscriptions_topic,
            value_serde(&registry, &subscriptions_topic).await?,
            &settings,
        )
        .await?,
        dead_letters: TopicTable::open(
            "webhook dead letters",
            &dead_letters_topic,
            value_serde(&registry, &dead_letters_topic).await?,
            &settings,
        )
        .await?,
        dead_letter_ends: EndOffsets::new(
            &config.kafka,
            &format!("{}-dead-letter-offsets", component.name),
            &dead_letters_topic,
        )?,
        delivery_log: start_delivery_log(
            &config,
            &runtime,
            &deliveries_topic,
            value_serde(&registry, &deliveries_topic).await?,
        )
        .await?,
        events: EventsTopic {
            serde: value_serde(&registry, &events_topic).await?,
            topic: events_topic,
            writer: writer.clone(),
            component,
        },
    };
    let tables = state.tables.get_or_init(|| tables);

    watch_caught_up(&shutdown, tables.channels.table(), readiness.channels);
    watch_caught_up(&shutdown, tables.tags.table(), readiness.tags);
    watch_caught_up(
        &shutdown,
        tables.webhook_subscriptions.table(),
        readiness.webhook_subscriptions,
    );
    watch_caught_up(
        &shutdown,
        tables.dead_letters.table(),
        readiness.dead_letters,
    );
    // The readers run on threads of their own: stop them with the component.
    stop.cancelled().await;
    tables.channels.table().stop();
    tables.tags.table().stop();
    tables.webhook_subscriptions.table().stop();
    tables.dead_letters.table().stop();
    Ok(())
}

/// Starts the delivery log view (see [`delivery_log`]) under the component's supervision:
/// readiness condition `streams` holds while it runs, and shutdown commits and closes it.
async fn start_delivery_log(
    config: &Config,
    runtime: &Runtime,
    deliveries_topic: &str,
    serde: AvroSerde<eddy_schemas::WebhookDelivery>,
) -> Result<DeliveryLog, AdminError> {
    let mut topology = Topology::new(config.application_id());
    let (input, stores) = delivery_log::declare(&mut topology, deliveries_topic, serde);
    topology.processor({
        let stores = stores.clone();
        move |_partition| DeliveryLogBuilder {
            input: input.clone(),
            stores: stores.clone(),
        }
    });
    // The three stores must agree after a crash (the counts follow the other two): exactly-once
    // unless EDDY_PROCESSING_GUARANTEE says otherwise.
    let mut streams_config = config
        .streams
        .config_exactly_once_by_default(config.kafka.clone())
        .for_component(runtime);
    streams_config.advertised_address = Some(config.advertised_address());
    let app = StreamsApp::start(streams_config, topology)
        .await
        .map_err(|error| AdminError::Streams(error.to_string()))?;
    let queries = app.queries();
    supervise(app, runtime);
    // Made here, not before the API serves: loading the TLS roots takes a moment.
    let client = eddy_service::http::client_builder()
        .timeout(FAN_OUT_TIMEOUT)
        .build()
        .map_err(|error| AdminError::Streams(format!("the HTTP client: {error}")))?;
    Ok(DeliveryLog {
        queries,
        stores,
        client,
    })
}

/// The value serde of `topic`, whose schema provisioning registered.
async fn value_serde<T: eddy_schemas::Entity>(
    registry: &SchemaRegistry,
    topic: &str,
) -> Result<AvroSerde<T>, AdminError> {
    AvroSerde::for_topic(registry, topic)
        .await
        .map_err(|source| AdminError::Schema {
            topic: topic.to_owned(),
            source,
        })
}

/// Sets `condition` once `table` has caught up with its topic.
fn watch_caught_up<T>(
    shutdown: &Shutdown,
    table: &eddy_streams::GlobalTable<String, T>,
    condition: ReadinessCondition,
) where
    T: Clone + Send + Sync + 'static,
{
    let mut caught_up = table.caught_up_changes();
    let stop = shutdown.token();
    shutdown.spawn(format!("readiness-{}", table.topic()), async move {
        tokio::select! {
            () = stop.cancelled() => {}
            reached = caught_up.wait_for(|caught_up| *caught_up) => {
                if reached.is_ok() {
                    condition.set(true);
                }
            }
        }
        Ok::<(), String>(())
    });
}

/// A name (of a tag, channel or subscription) without surrounding whitespace: not empty and at
/// most [`MAX_NAME_CHARS`] characters, or a 400 naming `field`.
pub fn check_name(field: &str, name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(ApiError::bad_field(field, "must not be empty"));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::bad_field(
            field,
            format!("longer than {MAX_NAME_CHARS} characters"),
        ));
    }
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;

    /// Every `$ref` in `value`.
    fn references<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(reference)) = map.get("$ref") {
                    found.push(reference);
                }
                map.values().for_each(|inner| references(inner, found));
            }
            Value::Array(items) => items.iter().for_each(|inner| references(inner, found)),
            _ => {}
        }
    }

    #[test]
    fn the_openapi_document_covers_every_endpoint_and_its_references_resolve() {
        let document: Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
        assert_eq!(document["openapi"], "3.1.0");
        let paths: BTreeSet<&str> = document["paths"]
            .as_object()
            .expect("paths")
            .keys()
            .map(String::as_str)
            .collect();
        let served = BTreeSet::from([
            "/channels.list",
            "/channels.info",
            "/channels.update",
            "/tags.create",
            "/tags.list",
            "/tags.update",
            "/tags.delete",
            "/webhooks.subscribe",
            "/webhooks.update",
            "/webhooks.unsubscribe",
            "/webhooks.info",
            "/webhooks.list",
            "/webhooks.rotate-secret",
            "/webhooks.deliveries.list",
            "/webhooks.redeliver",
            "/openapi.json",
        ]);
        assert_eq!(paths, served);
        for path in served.iter().filter(|path| **path != "/openapi.json") {
            let responses = &document["paths"][path]["post"]["responses"];
            for status in ["400", "401", "413", "503"] {
                assert!(responses[status].is_object(), "{path} lacks {status}");
            }
        }
        let mut found = Vec::new();
        references(&document, &mut found);
        assert!(found.len() > 50, "{}", found.len());
        for reference in found {
            let pointer = reference.strip_prefix('#').expect("a local reference");
            assert!(document.pointer(pointer).is_some(), "{reference} resolves");
        }
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(check_name("name", "  VIP ").ok().as_deref(), Some("VIP"));
        assert!(check_name("name", " \t ").is_err());
        assert!(check_name("name", &"é".repeat(MAX_NAME_CHARS)).is_ok());
        let error = check_name("name", &"é".repeat(MAX_NAME_CHARS + 1)).expect_err("too long");
        assert_eq!(error.message, "name: longer than 100 characters");
    }
}
