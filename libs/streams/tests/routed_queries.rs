//! Interactive queries across instances: two instances of one application split the
//! partitions, each advertises its address in the membership topic, and a query sent to either
//! instance is answered by the key's owner (forwarded when needed) with the same result. An
//! instance leaving or joining moves partitions, and answers stay correct.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use eddy_streams::query::{fan_out, forward};
use eddy_streams::{
    AppState, InputRecord, InputTopic, JsonSerde, KeyOwner, Processor, ProcessorContext,
    ProcessorError, Queries, StoreDefinition, StreamsApp, StreamsConfig, StringSerde, Topology,
};
use eddy_testkit::{TestNamespace, TopicSpec, poll_until};

const DEADLINE: Duration = Duration::from_secs(60);
const KEYS: usize = 50;
const PER_KEY: u64 = 4;

struct Counter {
    input: InputTopic<String, String>,
    counts: StoreDefinition<String, u64>,
}

impl Processor for Counter {
    fn process(
        &mut self,
        record: &InputRecord<'_>,
        context: &mut ProcessorContext<'_>,
    ) -> Result<(), ProcessorError> {
        let (key, _) = self.input.decode(record)?;
        let count = context.get(&self.counts, &key)?.unwrap_or(0) + 1;
        context.put(&self.counts, &key, &count)
    }
}

struct QueryApi {
    queries: Queries,
    counts: StoreDefinition<String, u64>,
    client: reqwest::Client,
}

async fn count(
    State(api): State<Arc<QueryApi>>,
    Path(key): Path<String>,
    request: Request,
) -> Response {
    match api.queries.owner_of(&api.counts, &key) {
        Ok(KeyOwner::Local) => match api.queries.get(&api.counts, &key) {
            Ok(Some(count)) => axum::Json(serde_json::json!({
                "key": key,
                "count": count,
                "served_by": api.queries.instance_id(),
            }))
            .into_response(),
            Ok(None) => axum::http::StatusCode::NOT_FOUND.into_response(),
            Err(error) => error.into_response(),
        },
        Ok(KeyOwner::Remote { address, .. }) => {
            forward(&api.client, api.queries.instance_id(), &address, request).await
        }
        Err(error) => error.into_response(),
    }
}

/// The whole table: a forwarded request answers from local partitions, any other fans out to
/// every instance and merges.
async fn all_counts(State(api): State<Arc<QueryApi>>, headers: axum::http::HeaderMap) -> Response {
    if Queries::is_forwarded(&headers) {
        return match api.queries.local_prefix(&api.counts, b"", usize::MAX) {
            Ok(entries) => {
                axum::Json(entries.into_iter().collect::<BTreeMap<String, u64>>()).into_response()
            }
            Err(error) => error.into_response(),
        };
    }
    match fan_out(&api.client, &api.queries, "/counts").await {
        Ok(parts) => {
            let mut merged = serde_json::Map::new();
            for part in parts {
                if let serde_json::Value::Object(entries) = part {
                    merged.extend(entries);
                }
            }
            axum::Json(serde_json::Value::Object(merged)).into_response()
        }
        Err(response) => response,
    }
}

struct Instance {
    app: StreamsApp,
    address: String,
    server: tokio::task::JoinHandle<()>,
}

async fn start_instance(namespace: &TestNamespace, input: &str, instance_id: &str) -> Instance {
    let mut topology = Topology::new(namespace.group("counter"));
    let input = topology.input(input, StringSerde, StringSerde);
    let counts = topology.store("counts", StringSerde, JsonSerde::<u64>::new());
    topology.processor({
        let counts = counts.clone();
        move |_| Counter {
            input: input.clone(),
            counts: counts.clone(),
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    let mut config = StreamsConfig::new(namespace.kafka(), namespace.state_dir(instance_id));
    config.instance_id = Some(instance_id.to_owned());
    config.advertised_address = Some(address.clone());
    config.commit_interval = Duration::from_millis(100);
    let app = StreamsApp::start(config, topology).await.expect("start");
    let api = Arc::new(QueryApi {
        queries: app.queries(),
        counts,
        client: reqwest::Client::new(),
    });
    let router = Router::new()
        .route("/counts", get(all_counts))
        .route("/counts/{key}", get(count))
        .with_state(api);
    let server = tokio::spawn(async move {
        axum::serve(listener, router).await.expect("query server");
    });
    Instance {
        app,
        address,
        server,
    }
}

/// Waits until every key answers `PER_KEY` from every instance, the answers agree, and the keys
/// are served by `servers` distinct instances (ownership has settled); returns which instance
/// served each key.
async fn wait_for_consistent_answers(
    instances: &[&Instance],
    servers: usize,
) -> BTreeMap<String, String> {
    let client = reqwest::Client::new();
    poll_until(
        "every key answered identically by every instance",
        DEADLINE,
        || {
            let client = client.clone();
            let addresses: Vec<String> = instances
                .iter()
                .map(|instance| instance.address.clone())
                .collect();
            async move {
                let mut served_by = BTreeMap::new();
                for key in (0..KEYS).map(|index| format!("key-{index}")) {
                    let mut answers = BTreeSet::new();
                    for address in &addresses {
                        let response = client
                            .get(format!("http://{address}/counts/{key}"))
                            .send()
                            .await
                            .ok()?;
                        if response.status() != 200 {
                            return None;
                        }
                        let body: serde_json::Value = response.json().await.ok()?;
                        if body["count"] != PER_KEY {
                            return None;
                        }
                        answers.insert(body.to_string());
                    }
                    if answers.len() != 1 {
                        return None;
                    }
                    let answer: serde_json::Value = serde_json::from_str(answers.first()?).ok()?;
                    served_by.insert(key, answer["served_by"].as_str()?.to_owned());
                }
                let distinct: BTreeSet<&String> = served_by.values().collect();
                (distinct.len() == servers).then_some(served_by)
            }
        },
    )
    .await
}

#[tokio::test]
async fn two_instances_answer_every_key_identically_through_joins_and_leaves() {
    let namespace = TestNamespace::new("streams-routing");
    let input = namespace.create_topic("events", TopicSpec::new(4)).await;
    let producer = namespace.producer();
    for round in 0..PER_KEY {
        for key in 0..KEYS {
            eddy_testkit::records::produce_with(
                &producer,
                &input,
                &format!("key-{key}"),
                round.to_string().as_bytes(),
                &[],
            )
            .await;
        }
    }

    let first = start_instance(&namespace, &input, "instance-a").await;
    let second = start_instance(&namespace, &input, "instance-b").await;
    for instance in [&first, &second] {
        assert_eq!(
            instance
                .app
                .wait_for_state(AppState::Running, DEADLINE)
                .await,
            AppState::Running
        );
    }
    let served_by = wait_for_consistent_answers(&[&first, &second], 2).await;
    let servers: BTreeSet<&String> = served_by.values().collect();
    assert_eq!(
        servers,
        BTreeSet::from([&"instance-a".to_owned(), &"instance-b".to_owned()]),
        "both instances own keys"
    );

    // The whole table, fanned out from either instance, has every key once with its count.
    for instance in [&first, &second] {
        let all: BTreeMap<String, u64> =
            reqwest::get(format!("http://{}/counts", instance.address))
                .await
                .expect("list")
                .json()
                .await
                .expect("json");
        assert_eq!(all.len(), KEYS, "{all:?}");
        assert!(all.values().all(|count| *count == PER_KEY), "{all:?}");
    }

    // One leaves: the other takes every partition over (restoring them) and answers alone.
    second.server.abort();
    second.app.stop().await.expect("clean stop");
    let served_by = wait_for_consistent_answers(&[&first], 1).await;
    assert!(
        served_by.values().all(|server| server == "instance-a"),
        "{served_by:?}"
    );

    // A new one joins: partitions split again, answers stay identical everywhere.
    let third = start_instance(&namespace, &input, "instance-c").await;
    assert_eq!(
        third.app.wait_for_state(AppState::Running, DEADLINE).await,
        AppState::Running
    );
    let served_by = wait_for_consistent_answers(&[&first, &third], 2).await;
    assert!(
        served_by.values().any(|server| server == "instance-c"),
        "{served_by:?}"
    );

    for instance in [first, third] {
        instance.server.abort();
        instance.app.stop().await.expect("clean stop");
    }
}
