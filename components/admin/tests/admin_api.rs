//! `eddy-admin` as a real process against the real local Kafka and schema registry: tags,
//! channels and webhook subscriptions through the HTTP API, the webhook URL policy, auth before
//! any work, body limits, errors that name the field, rejected requests writing nothing, two
//! instances answering identically, readiness only once the tables caught up, secret rotation,
//! the delivery log (spread over two instances) and redelivery of dead letters.

use std::time::{Duration, Instant};

use eddy_schemas::catalog::{
    CHANNELS, TAGS, WEBHOOK_DEAD_LETTERS, WEBHOOK_DELIVERIES, WEBHOOK_EVENTS, WEBHOOK_SUBSCRIPTIONS,
};
use eddy_schemas::provision::provision;
use eddy_schemas::writer::{OutgoingRecord, Placement, RecordWriter};
use eddy_schemas::{
    AvroSerde, Catalog, CatalogArgs, Channel, ConnectionState, DeliveryOutcome, Entity,
    RegistryArgs, SchemaRegistry, Tag, TagColor, WebhookDelivery, WebhookEvent,
    WebhookSubscription, ids,
};
use eddy_service::envelope::{Envelope, TraceContext};
use eddy_testkit::{ComponentCommand, ComponentProcess, TestNamespace, free_port};
use eddy_webhooks::SecretKey;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::{Value, json};

const SYSTEM_TOKEN: &str = "admin-test-system-token";
const SECRET_KEY: &str = "admin-test-installation-secret-key-0123456789";
const STARTUP: Duration = Duration::from_secs(60);
const CONVERGENCE: Duration = Duration::from_secs(30);
/// An address no policy refuses (TEST-NET-3, documentation only): nothing is ever sent to it.
const PUBLIC_HOOK: &str = "https://203.0.113.10/hooks/eddy";

/// A namespace whose admin topics exist and whose schemas are registered.
struct Provisioned {
    namespace: TestNamespace,
    catalog: Catalog,
    registry: SchemaRegistry,
}

impl Provisioned {
    async fn new(test_name: &str) -> Self {
        let namespace = TestNamespace::new(test_name);
        let mut catalog = Catalog::new(&CatalogArgs {
            namespace: namespace.prefix().to_owned(),
            partitions: 3,
            replication_factor: None,
        });
        // Only the topics the admin service reads and writes: quicker to provision.
        catalog.topics.retain(|topic| {
            [
                CHANNELS,
                TAGS,
                WEBHOOK_SUBSCRIPTIONS,
                WEBHOOK_EVENTS,
                WEBHOOK_DELIVERIES,
                WEBHOOK_DEAD_LETTERS,
            ]
            .contains(&topic.dataset)
        });
        let registry =
            SchemaRegistry::new(&RegistryArgs::new(&namespace.stack().schema_registry_url))
                .expect("registry client");
        let report = provision(&namespace.kafka(), &registry, &catalog, false)
            .await
            .expect("provisioning runs");
        assert!(report.is_clean(), "provisioning left {report:?}");
        Provisioned {
            namespace,
            catalog,
            registry,
        }
    }

    fn topic(&self, dataset: &str) -> String {
        self.catalog
            .name(dataset)
            .expect("in the catalog")
            .to_owned()
    }

    /// The topics the admin service writes.
    fn admin_topics(&self) -> Vec<String> {
        [CHANNELS, TAGS, WEBHOOK_SUBSCRIPTIONS, WEBHOOK_EVENTS]
            .iter()
            .map(|dataset| self.topic(dataset))
            .collect()
    }

    /// Starts an admin instance with `extra` settings on top of the test defaults.
    fn start_admin(&self, extra: &[(&str, &str)]) -> Admin {
        let http_port = free_port();
        let admin_port = free_port();
        let instance = format!("eddy-admin-{http_port}");
        let mut command = ComponentCommand::for_program(
            &self.namespace,
            &instance,
            env!("CARGO_BIN_EXE_eddy-admin"),
        )
        .env("EDDY_ADMIN_ADDRESS", format!("127.0.0.1:{admin_port}"))
        .env("EDDY_HTTP_ADDRESS", format!("127.0.0.1:{http_port}"))
        .env("EDDY_ADVERTISED_ADDRESS", format!("127.0.0.1:{http_port}"))
        .env("EDDY_STATE_DIR", self.namespace.state_dir(&instance))
        .env("EDDY_INSTANCE_ID", &instance)
        .env("EDDY_SYSTEM_TOKEN", SYSTEM_TOKEN)
        .env("EDDY_SECRET_KEY", SECRET_KEY)
        .env("EDDY_TOPIC_NAMESPACE", self.namespace.prefix())
        .env("EDDY_SHUTDOWN_GRACE", "5s")
        .env("EDDY_LOG", "info,eddy_admin=debug");
        for (key, value) in extra {
            command = command.env(key, value);
        }
        Admin {
            process: command.spawn(),
            api: format!("http://127.0.0.1:{http_port}"),
            admin: format!("http://127.0.0.1:{admin_port}"),
            client: reqwest::Client::new(),
        }
    }

    /// Writes `channel` to the channels topic as a connector would.
    async fn write_channel(&self, channel: &Channel) {
        let topic = self.topic(CHANNELS);
        let writer = RecordWriter::new(&self.namespace.kafka(), "admin-test", &[&topic])
            .await
            .expect("writer");
        let serde = AvroSerde::<Channel>::for_topic(&self.registry, &topic)
            .await
            .expect("channel serde");
        writer
            .send(OutgoingRecord {
                topic: &topic,
                key: &channel.id,
                value: Some(serde.encode(channel).expect("encodes")),
                placement: Placement::ByKey,
                envelope: &Envelope::originated("admin-test"),
            })
            .await
            .expect("channel written");
    }

    /// Writes `records` (key, value, what places it) to `dataset`'s topic as the webhook sender
    /// would.
    async fn write_webhook_records<T: Entity>(
        &self,
        dataset: &str,
        records: &[(String, T, String)],
    ) {
        let topic = self.topic(dataset);
        let writer = RecordWriter::new(&self.namespace.kafka(), "admin-test", &[&topic])
            .await
            .expect("writer");
        let serde = AvroSerde::<T>::for_topic(&self.registry, &topic)
            .await
            .expect("serde");
        let envelope = Envelope::originated("admin-test");
        let outgoing = records
            .iter()
            .map(|(key, value, placement)| OutgoingRecord {
                topic: &topic,
                key,
                value: Some(serde.encode(value).expect("encodes")),
                placement: Placement::By(placement),
                envelope: &envelope,
            })
            .collect();
        writer.send_all(outgoing).await.expect("records written");
    }

    /// The sum of the end offsets of every partition of each admin topic.
    fn end_offsets(&self) -> Vec<(String, i64)> {
        let consumer: BaseConsumer = self
            .namespace
            .kafka()
            .admin_config("admin-test-offsets")
            .create()
            .expect("consumer");
        self.admin_topics()
            .into_iter()
            .map(|topic| {
                let total = (0..3)
                    .map(|partition| {
                        consumer
                            .fetch_watermarks(&topic, partition, Duration::from_secs(10))
                            .expect("watermarks")
                            .1
                    })
                    .sum();
                (topic, total)
            })
            .collect()
    }

    /// Every record of `dataset`'s topic, once `done` holds for them.
    async fn records(
        &self,
        dataset: &str,
        done: impl FnMut(&[eddy_testkit::ConsumedRecord]) -> bool,
    ) -> Vec<eddy_testkit::ConsumedRecord> {
        self.namespace
            .consume_until(&self.topic(dataset), CONVERGENCE, done)
            .await
            .expect("records")
    }
}

/// One running admin instance.
struct Admin {
    process: ComponentProcess,
    api: String,
    admin: String,
    client: reqwest::Client,
}

/// An HTTP answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {}", self.text))
    }

    /// Asserts an error answer: status, code, and a message starting with `message_start`.
    fn assert_error(&self, status: u16, code: &str, message_start: &str) {
        assert_eq!(self.status, status, "{}", self.text);
        let body = self.json();
        assert_eq!(body["code"], code, "{}", self.text);
        let message = body["message"].as_str().expect("message");
        assert!(
            message.starts_with(message_start),
            "expected a message starting with {message_start:?}: {message}"
        );
    }
}

impl Admin {
    /// Waits until `/ready` answers 200.
    async fn wait_ready(&self) {
        let deadline = Instant::now() + STARTUP;
        loop {
            let ready = self.get(&format!("{}/ready", self.admin)).await;
            if ready.as_ref().is_some_and(|answer| answer.status == 200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "eddy-admin not ready after {STARTUP:?} (last: {ready:?}); output:\n{}",
                self.process.output()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls `/ready` until its answer satisfies `wanted`, and returns that answer.
    async fn wait_for_ready_answer(&self, wanted: impl Fn(&Answer) -> bool) -> Answer {
        let deadline = Instant::now() + STARTUP;
        loop {
            let ready = self.get(&format!("{}/ready", self.admin)).await;
            if let Some(answer) = ready.as_ref().filter(|answer| wanted(answer)) {
                return Answer {
                    status: answer.status,
                    headers: answer.headers.clone(),
                    text: answer.text.clone(),
                };
            }
            assert!(
                Instant::now() < deadline,
                "/ready never answered as expected (last: {ready:?}); output:\n{}",
                self.process.output()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn get(&self, url: &str) -> Option<Answer> {
        let response = self
            .client
            .get(url)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        Some(Answer {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            text: response.text().await.ok()?,
        })
    }

    /// `POST <path>` with the system token and `body`.
    async fn post(&self, path: &str, body: Value) -> Answer {
        self.post_raw(
            path,
            Some(SYSTEM_TOKEN),
            body.to_string().into_bytes(),
            None,
        )
        .await
    }

    /// `POST <path>` with any token (or none), raw body bytes and an optional `traceparent`.
    async fn post_raw(
        &self,
        path: &str,
        token: Option<&str>,
        body: Vec<u8>,
        traceparent: Option<&str>,
    ) -> Answer {
        let mut request = self
            .client
            .post(format!("{}{path}", self.api))
            .header("content-type", "application/json")
            .timeout(Duration::from_secs(20))
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(traceparent) = traceparent {
            request = request.header("traceparent", traceparent);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|error| panic!("POST {path} failed: {error}"));
        Answer {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            text: response.text().await.expect("body"),
        }
    }
}

fn channel(source: &str, source_channel_id: &str, state: ConnectionState) -> Channel {
    Channel {
        id: ids::channel_id(source, source_channel_id),
        source: source.to_owned(),
        source_channel_id: source_channel_id.to_owned(),
        connection_state: state,
        token_ref: Some("secret://channel-tokens/test".to_owned()),
        connected_at: 1_763_800_000_123,
        name: None,
        image_url: None,
        metadata: Some(r#"{"team":"support"}"#.to_owned()),
    }
}

fn ids_of(list: &Value) -> Vec<String> {
    list["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|item| item["id"].as_str().expect("id").to_owned())
        .collect()
}

fn header<'a>(record: &'a eddy_testkit::ConsumedRecord, name: &str) -> &'a str {
    record
        .headers
        .iter()
        .find(|(key, _)| key == name)
        .and_then(|(_, value)| value.as_deref())
        .map(|value| std::str::from_utf8(value).expect("UTF-8 header"))
        .unwrap_or_else(|| panic!("record without header {name}: {record:?}"))
}

#[tokio::test]
async fn tags_are_created_listed_updated_and_deleted_and_names_are_unique() {
    let fixture = Provisioned::new("admin-tags").await;
    let admin = fixture.start_admin(&[]);
    admin.wait_ready().await;

    let caller = TraceContext::new_root();
    let created = admin
        .post_raw(
            "/tags.create",
            Some(SYSTEM_TOKEN),
            json!({"name": "VIP", "color": "tag-purple"})
                .to_string()
                .into_bytes(),
            Some(&caller.to_string()),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let vip = created.json();
    assert_eq!(vip["name"], "VIP");
    assert_eq!(vip["color"], "tag-purple");
    let vip_id = vip["id"].as_str().expect("id").to_owned();
    assert!(ids::is_uuid(&vip_id), "{vip_id}");

    admin
        .post("/tags.create", json!({"name": "vip", "color": "tag-red"}))
        .await
        .assert_error(409, "conflict", "a tag named 'VIP' already exists");
    admin
        .post("/tags.create", json!({"name": "   "}))
        .await
        .assert_error(400, "invalid_request", "name: must not be empty");
    admin
        .post("/tags.create", json!({"name": "x".repeat(101)}))
        .await
        .assert_error(400, "invalid_request", "name: longer than 100 characters");
    admin
        .post(
            "/tags.create",
            json!({"name": "urgent", "color": "tag-pink"}),
        )
        .await
        .assert_error(
            400,
            "invalid_request",
            "color: 'tag-pink' is not a tag colour",
        );

    let billing = admin.post("/tags.create", json!({"name": "billing"})).await;
    assert_eq!(billing.status, 201, "{}", billing.text);
    assert_eq!(billing.json()["color"], "tag-grey", "the default colour");
    let billing_id = billing.json()["id"].as_str().expect("id").to_owned();

    // Read-your-writes: the list right after the writes shows them, sorted by name.
    let list = admin.post("/tags.list", json!({})).await;
    assert_eq!(list.status, 200, "{}", list.text);
    assert_eq!(
        list.json(),
        json!({"data": [
            {"id": billing_id, "name": "billing", "color": "tag-grey"},
            {"id": vip_id, "name": "VIP", "color": "tag-purple"},
        ]})
    );

    admin
        .post("/tags.update", json!({"id": billing_id, "name": "Vip"}))
        .await
        .assert_error(409, "conflict", "a tag named 'VIP' already exists");
    admin
        .post("/tags.update", json!({"id": billing_id}))
        .await
        .assert_error(400, "invalid_request", "nothing to update");
    admin
        .post(
            "/tags.update",
            json!({"id": "no-such-tag", "color": "tag-red"}),
        )
        .await
        .assert_error(404, "not_found", "tag no-such-tag does not exist");
    let updated = admin
        .post(
            "/tags.update",
            json!({"id": billing_id, "name": "Billing", "color": "tag-red"}),
        )
        .await;
    assert_eq!(updated.status, 204, "{}", updated.text);
    assert!(updated.text.is_empty(), "{}", updated.text);
    // Renaming a tag to another case of its own name is no conflict.
    let recased = admin
        .post("/tags.update", json!({"id": vip_id, "name": "vip"}))
        .await;
    assert_eq!(recased.status, 204, "{}", recased.text);

    let deleted = admin.post("/tags.delete", json!({"id": vip_id})).await;
    assert_eq!(deleted.status, 204, "{}", deleted.text);
    admin
        .post("/tags.delete", json!({"id": vip_id}))
        .await
        .assert_error(404, "not_found", "tag");
    assert_eq!(
        admin.post("/tags.list", json!({})).await.json(),
        json!({"data": [{"id": billing_id, "name": "Billing", "color": "tag-red"}]})
    );

    // The records: envelopes continue the caller's trace; the delete is a tombstone.
    let records = fixture
        .records(TAGS, |records| {
            records
                .iter()
                .any(|record| record.key_text() == vip_id && record.value.is_none())
        })
        .await;
    let first = records
        .iter()
        .find(|record| record.key_text() == vip_id)
        .expect("the created tag's record");
    let trace = TraceContext::parse(header(first, "traceparent")).expect("traceparent");
    assert_eq!(
        trace.trace_id, caller.trace_id,
        "the record continues the request's trace"
    );
    assert_ne!(trace.span_id, caller.span_id);
    assert!(
        header(first, "eddy-producer").starts_with("eddy-admin/"),
        "{first:?}"
    );
    header(first, "eddy-event-time");
    header(first, "eddy-ingest-time");
    let serde = AvroSerde::<Tag>::for_topic(&fixture.registry, &fixture.topic(TAGS))
        .await
        .expect("serde");
    let stored = serde
        .decode(first.value.as_deref().expect("a value"))
        .expect("a tag");
    assert_eq!(
        stored,
        Tag {
            id: vip_id.clone(),
            name: "VIP".to_owned(),
            color: TagColor::Purple
        }
    );
}

#[tokio::test]
async fn channels_are_listed_shown_and_renamed_and_disconnected_ones_are_hidden() {
    let fixture = Provisioned::new("admin-channels").await;
    let sms = channel("sms", "+4915100000001", ConnectionState::Connected);
    let whatsapp = channel("whatsapp", "+4915100000002", ConnectionState::Connected);
    let gone = channel("sms", "+4915100000003", ConnectionState::Disconnected);
    for written in [&sms, &whatsapp, &gone] {
        fixture.write_channel(written).await;
    }
    let admin = fixture.start_admin(&[]);
    admin.wait_ready().await;

    let list = admin.post("/channels.list", json!({})).await;
    assert_eq!(list.status, 200, "{}", list.text);
    let mut expected = vec![sms.id.clone(), whatsapp.id.clone()];
    expected.sort();
    assert_eq!(ids_of(&list.json()), expected, "connected channels by id");
    let only_sms = admin.post("/channels.list", json!({"source": "sms"})).await;
    assert_eq!(ids_of(&only_sms.json()), vec![sms.id.clone()]);
    // An empty body is an empty object.
    let empty_body = admin
        .post_raw("/channels.list", Some(SYSTEM_TOKEN), Vec::new(), None)
        .await;
    assert_eq!(empty_body.text, list.text);

    let info = admin
        .post("/channels.info", json!({"channel_id": sms.id}))
        .await;
    assert_eq!(info.status, 200, "{}", info.text);
    let tail: String = sms.id.chars().skip(sms.id.len() - 5).collect();
    assert_eq!(
        info.json(),
        json!({
            "id": sms.id,
            "source": "sms",
            "source_channel_id": "+4915100000001",
            "connected": true,
            "connected_at": "2025-11-22T08:26:40.123Z",
            "metadata": {"name": format!("sms {tail}"), "team": "support"},
        })
    );
    admin
        .post("/channels.info", json!({"channel_id": gone.id}))
        .await
        .assert_error(404, "not_found", &format!("channel {}", gone.id));
    admin
        .post("/channels.info", json!({"channel_id": "no-such-channel"}))
        .await
        .assert_error(404, "not_found", "channel no-such-channel");

    let updated = admin
        .post(
            "/channels.update",
            json!({"channel_id": sms.id, "name": "Support line", "image_url": "https://example.com/a.png"}),
        )
        .await;
    assert_eq!(updated.status, 200, "{}", updated.text);
    let metadata = &updated.json()["metadata"];
    assert_eq!(
        *metadata,
        json!({"name": "Support line", "image_url": "https://example.com/a.png", "team": "support"})
    );
    // Read-your-writes: the next read on this instance shows the change.
    let info = admin
        .post("/channels.info", json!({"channel_id": sms.id}))
        .await;
    assert_eq!(info.json(), updated.json());
    admin
        .post("/channels.update", json!({"channel_id": sms.id}))
        .await
        .assert_error(400, "invalid_request", "nothing to update");
    admin
        .post(
            "/channels.update",
            json!({"channel_id": sms.id, "name": ""}),
        )
        .await
        .assert_error(400, "invalid_request", "name: must not be empty");
    admin
        .post(
            "/channels.update",
            json!({"channel_id": gone.id, "name": "x"}),
        )
        .await
        .assert_error(404, "not_found", "channel");

    // The whole record was written anew, keeping what the API does not change.
    let topic = fixture.topic(CHANNELS);
    let serde = AvroSerde::<Channel>::for_topic(&fixture.registry, &topic)
        .await
        .expect("serde");
    let records = fixture
        .records(CHANNELS, |records| {
            records
                .iter()
                .filter(|record| record.key_text() == sms.id)
                .count()
                == 2
        })
        .await;
    let rewritten = records
        .iter()
        .rfind(|record| record.key_text() == sms.id)
        .expect("the update");
    let stored = serde
        .decode(rewritten.value.as_deref().expect("a value"))
        .expect("a channel");
    assert_eq!(
        stored,
        Channel {
            name: Some("Support line".to_owned()),
            image_url: Some("https://example.com/a.png".to_owned()),
            ..sms.clone()
        }
    );

    // A channel a connector connects later shows up without a restart.
    let later = channel("sms", "+4915100000004", ConnectionState::Connected);
    fixture.write_channel(&later).await;
    eddy_testkit::poll_until("the new channel to be listed", CONVERGENCE, || async {
        let list = admin.post("/channels.list", json!({})).await.json();
        ids_of(&list).contains(&later.id).then_some(())
    })
    .await;
}

#[tokio::test]
async fn webhook_secrets_are_shown_once_and_subscriptions_change_and_unsubscribe() {
    let fixture = Provisioned::new("admin-webhooks").await;
    let admin = fixture.start_admin(&[]);
    admin.wait_ready().await;

    let created = admin
        .post(
            "/webhooks.subscribe",
            json!({
                "url": PUBLIC_HOOK,
                "name": "crm",
                "events": ["message.created", "tag.updated"],
                "headers": {"X-Team": "support"},
            }),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let created = created.json();
    let id = created["id"].as_str().expect("id").to_owned();
    let secret = created["signing_secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");
    let subscribed_at = created["subscribed_at"].as_str().expect("time").to_owned();
    assert!(
        subscribed_at.len() == 24 && subscribed_at.ends_with('Z'),
        "ISO-8601 UTC with milliseconds: {subscribed_at}"
    );
    let view = json!({
        "id": id,
        "name": "crm",
        "url": PUBLIC_HOOK,
        "events": ["message.created", "tag.updated"],
        "headers": {"X-Team": "support"},
        "status": "Subscribed",
        "subscribed_at": subscribed_at,
        "max_attempts": null,
        "max_age_seconds": null,
    });
    let mut expected_created = view.clone();
    expected_created["signing_secret"] = json!(secret);
    assert_eq!(created, expected_created);

    // Never again: not in info, not in list, not in the log, not in Kafka.
    let info = admin.post("/webhooks.info", json!({"id": id})).await;
    assert_eq!(info.status, 200, "{}", info.text);
    assert_eq!(info.json(), view);
    let list = admin.post("/webhooks.list", json!({})).await;
    assert_eq!(list.json(), json!({"data": [view]}));
    for text in [&info.text, &list.text] {
        assert!(
            !text.contains("whsec_") && !text.contains("secret"),
            "{text}"
        );
    }
    assert!(
        !admin.process.output().contains(&secret),
        "the secret was logged"
    );
    let records = fixture
        .records(WEBHOOK_SUBSCRIPTIONS, |records| !records.is_empty())
        .await;
    let stored = AvroSerde::<WebhookSubscription>::for_topic(
        &fixture.registry,
        &fixture.topic(WEBHOOK_SUBSCRIPTIONS),
    )
    .await
    .expect("serde")
    .decode(records[0].value.as_deref().expect("a value"))
    .expect("a subscription");
    assert!(!records[0].value_text().contains(&secret));
    let secret_ref = stored.secret_ref.expect("a secret reference");
    assert_eq!(
        SecretKey::new(SECRET_KEY.as_bytes())
            .derive("webhook", &secret_ref)
            .expect("derives")
            .expose(),
        secret,
        "the secret is derived from the installation key and the stored reference"
    );

    // Without events: every event type.
    let second = admin
        .post(
            "/webhooks.subscribe",
            json!({"url": "http://203.0.113.11/"}),
        )
        .await;
    assert_eq!(second.status, 201, "{}", second.text);
    let second = second.json();
    assert_eq!(second["events"], json!([]));
    assert_eq!(second["name"], Value::Null);
    assert_ne!(
        second["signing_secret"],
        json!(secret),
        "a secret per subscription"
    );
    let second_id = second["id"].as_str().expect("id").to_owned();

    admin
        .post(
            "/webhooks.update",
            json!({"id": id, "events": ["message.created", "bogus"]}),
        )
        .await
        .assert_error(
            400,
            "invalid_request",
            "events[1]: 'bogus' is not an event type",
        );
    admin
        .post("/webhooks.update", json!({"id": id, "status": "Paused"}))
        .await
        .assert_error(400, "invalid_request", "status: unknown variant `Paused`");
    admin
        .post("/webhooks.update", json!({"id": id}))
        .await
        .assert_error(400, "invalid_request", "nothing to update");
    let changed = admin
        .post(
            "/webhooks.update",
            json!({"id": id, "name": "crm-2", "headers": {}, "url": "https://203.0.113.12/v2"}),
        )
        .await;
    assert_eq!(changed.status, 200, "{}", changed.text);
    let mut expected = view.clone();
    expected["name"] = json!("crm-2");
    expected["headers"] = json!({});
    expected["url"] = json!("https://203.0.113.12/v2");
    assert_eq!(changed.json(), expected);

    let unsubscribed = admin.post("/webhooks.unsubscribe", json!({"id": id})).await;
    assert_eq!(unsubscribed.status, 200, "{}", unsubscribed.text);
    expected["status"] = json!("Unsubscribed");
    assert_eq!(unsubscribed.json(), expected);
    assert_eq!(
        admin.post("/webhooks.info", json!({"id": id})).await.json(),
        expected
    );
    let list = admin.post("/webhooks.list", json!({})).await.json();
    assert_eq!(
        ids_of(&list),
        vec![id.clone(), second_id],
        "by subscribed_at, then id"
    );
    let resubscribed = admin
        .post(
            "/webhooks.update",
            json!({"id": id, "status": "Subscribed"}),
        )
        .await;
    assert_eq!(resubscribed.json()["status"], "Subscribed");

    for path in ["/webhooks.info", "/webhooks.unsubscribe"] {
        admin
            .post(path, json!({"id": "no-such-subscription"}))
            .await
            .assert_error(
                404,
                "not_found",
                "webhook subscription no-such-subscription",
            );
    }
    admin
        .post(
            "/webhooks.update",
            json!({"id": "no-such-subscription", "name": "x"}),
        )
        .await
        .assert_error(404, "not_found", "webhook subscription");
}

#[tokio::test]
async fn refused_webhook_urls_say_why_and_write_nothing() {
    let fixture = Provisioned::new("admin-webhook-refusals").await;
    let admin = fixture.start_admin(&[]);
    admin.wait_ready().await;
    let before = fixture.end_offsets();

    let refusals = [
        ("http://127.0.0.1:9000/hook", "EDDY_WEBHOOK_ALLOW_LOOPBACK"),
        ("http://localhost:9000/hook", "EDDY_WEBHOOK_ALLOW_LOOPBACK"),
        ("http://[::1]/hook", "EDDY_WEBHOOK_ALLOW_LOOPBACK"),
        (
            "http://10.1.2.3/hook",
            "EDDY_WEBHOOK_ALLOW_PRIVATE_NETWORKS",
        ),
        (
            "http://192.168.0.10/hook",
            "EDDY_WEBHOOK_ALLOW_PRIVATE_NETWORKS",
        ),
        (
            "http://169.254.169.254/latest",
            "EDDY_WEBHOOK_ALLOW_PRIVATE_NETWORKS",
        ),
        (
            "http://100.64.0.1/hook",
            "EDDY_WEBHOOK_ALLOW_PRIVATE_NETWORKS",
        ),
        (
            "http://[fd00::1]/hook",
            "EDDY_WEBHOOK_ALLOW_PRIVATE_NETWORKS",
        ),
        ("http://0.0.0.0/hook", "EDDY_WEBHOOK_ALLOW_PRIVATE_NETWORKS"),
        ("ftp://203.0.113.10/hook", "the scheme 'ftp' is not allowed"),
        ("https://no-such-host.invalid/hook", "could not be resolved"),
        ("not a url", "is not a URL"),
    ];
    for (url, reason) in refusals {
        let answer = admin.post("/webhooks.subscribe", json!({"url": url})).await;
        answer.assert_error(400, "invalid_request", "url: ");
        assert!(answer.text.contains(reason), "{url}: {}", answer.text);
    }
    admin
        .post(
            "/webhooks.subscribe",
            json!({"url": PUBLIC_HOOK, "headers": {"Content-Type": "text/plain"}}),
        )
        .await
        .assert_error(400, "invalid_request", "headers.Content-Type: ");
    admin
        .post(
            "/webhooks.subscribe",
            json!({"url": PUBLIC_HOOK, "headers": {"webhook-signature": "v1,forged"}}),
        )
        .await
        .assert_error(400, "invalid_request", "headers.webhook-signature: ");
    admin
        .post(
            "/webhooks.subscribe",
            json!({"url": PUBLIC_HOOK, "events": ["message.created", "message.sent"]}),
        )
        .await
        .assert_error(400, "invalid_request", "events[1]: ");
    admin
        .post(
            "/webhooks.subscribe",
            json!({"url": PUBLIC_HOOK, "name": ""}),
        )
        .await
        .assert_error(400, "invalid_request", "name: ");

    assert_eq!(
        fixture.end_offsets(),
        before,
        "a refused request wrote something"
    );
    let list = admin.post("/webhooks.list", json!({})).await;
    assert_eq!(list.json(), json!({"data": []}));
}

#[tokio::test]
async fn auth_comes_first_then_body_limits_then_fields_and_nothing_is_written() {
    let fixture = Provisioned::new("admin-auth").await;
    let admin = fixture.start_admin(&[("EDDY_MAX_BODY_BYTES", "1024")]);
    admin.wait_ready().await;
    let before = fixture.end_offsets();
    let good = json!({"name": "never"}).to_string().into_bytes();
    let oversized = json!({"name": "x".repeat(2048)}).to_string().into_bytes();

    // 401 before any work: not 400 for a broken body, not 413 for a large one.
    for (token, body) in [
        (None, good.clone()),
        (Some("not-the-system-token"), good.clone()),
        (Some("not-the-system-token"), b"{not json".to_vec()),
        (Some("not-the-system-token"), oversized.clone()),
        (None, oversized.clone()),
    ] {
        let answer = admin.post_raw("/tags.create", token, body, None).await;
        answer.assert_error(401, "unauthorized", "");
        assert_eq!(
            answer
                .headers
                .get("www-authenticate")
                .map(|value| value.to_str().unwrap_or_default()),
            Some("Bearer")
        );
    }

    let too_large = admin
        .post_raw("/tags.create", Some(SYSTEM_TOKEN), oversized, None)
        .await;
    too_large.assert_error(
        413,
        "payload_too_large",
        "the request body is larger than the limit of 1024 bytes",
    );

    admin
        .post_raw(
            "/tags.create",
            Some(SYSTEM_TOKEN),
            b"{not json".to_vec(),
            None,
        )
        .await
        .assert_error(400, "invalid_request", "the body is not valid JSON");
    admin
        .post("/tags.create", json!({"name": 5}))
        .await
        .assert_error(
            400,
            "invalid_request",
            "name: invalid type: integer `5`, expected a string",
        );
    admin
        .post("/tags.create", json!({"name": "ok", "colour": "tag-red"}))
        .await
        .assert_error(400, "invalid_request", "colour: unknown field `colour`");
    admin.post("/tags.create", json!({})).await.assert_error(
        400,
        "invalid_request",
        "missing field `name`",
    );
    admin
        .post("/channels.info", json!({"channel_id": ["a"]}))
        .await
        .assert_error(400, "invalid_request", "channel_id: ");
    admin
        .post("/tags.list", json!({"page_size": 5}))
        .await
        .assert_error(
            400,
            "invalid_request",
            "page_size: unknown field `page_size`",
        );
    admin
        .post("/tags.delete", json!({"id": "no-such-tag"}))
        .await
        .assert_error(404, "not_found", "tag no-such-tag does not exist");
    admin.post("/no.such", json!({})).await.assert_error(
        404,
        "unknown_endpoint",
        "there is no endpoint /no.such",
    );

    assert_eq!(
        fixture.end_offsets(),
        before,
        "a rejected request wrote something"
    );

    // The contract is public.
    let openapi = admin
        .get(&format!("{}/openapi.json", admin.api))
        .await
        .expect("openapi answers");
    assert_eq!(openapi.status, 200, "{}", openapi.text);
    let document = openapi.json();
    assert_eq!(document["openapi"], "3.1.0");
    assert!(document["paths"]["/webhooks.subscribe"].is_object());
}

#[tokio::test]
async fn two_instances_answer_identically_and_each_applies_its_own_url_policy() {
    let fixture = Provisioned::new("admin-two-instances").await;
    for source_channel_id in ["+4915100000011", "+4915100000012"] {
        fixture
            .write_channel(&channel(
                "sms",
                source_channel_id,
                ConnectionState::Connected,
            ))
            .await;
    }
    let strict = fixture.start_admin(&[]);
    let loopback = fixture.start_admin(&[("EDDY_WEBHOOK_ALLOW_LOOPBACK", "true")]);
    strict.wait_ready().await;
    loopback.wait_ready().await;

    let mut tag_ids = Vec::new();
    for (instance, name) in [(&strict, "alpha"), (&loopback, "beta"), (&strict, "gamma")] {
        let created = instance.post("/tags.create", json!({"name": name})).await;
        assert_eq!(created.status, 201, "{}", created.text);
        tag_ids.push(created.json()["id"].as_str().expect("id").to_owned());
    }
    // A name taken on one instance is taken on the other once it has read the record.
    eddy_testkit::poll_until(
        "the other instance to refuse a taken name",
        CONVERGENCE,
        || async {
            (loopback
                .post("/tags.create", json!({"name": "ALPHA"}))
                .await
                .status
                == 409)
                .then_some(())
        },
    )
    .await;

    let hook = "http://127.0.0.1:9/hook";
    strict
        .post("/webhooks.subscribe", json!({"url": hook}))
        .await
        .assert_error(
            400,
            "invalid_request",
            "url: the host 127.0.0.1 is a loopback address",
        );
    let accepted = loopback
        .post("/webhooks.subscribe", json!({"url": hook}))
        .await;
    assert_eq!(accepted.status, 201, "{}", accepted.text);
    let by_name = loopback
        .post(
            "/webhooks.subscribe",
            json!({"url": "http://localhost:9/other"}),
        )
        .await;
    assert_eq!(by_name.status, 201, "{}", by_name.text);
    loopback
        .post(
            "/webhooks.subscribe",
            json!({"url": "http://10.0.0.1/hook"}),
        )
        .await
        .assert_error(
            400,
            "invalid_request",
            "url: the host 10.0.0.1 is a private",
        );

    for path in ["/tags.list", "/channels.list", "/webhooks.list"] {
        let identical = eddy_testkit::poll_until(
            &format!("both instances to answer {path} identically"),
            CONVERGENCE,
            || async {
                let first = strict.post(path, json!({})).await;
                let second = loopback.post(path, json!({})).await;
                (first.status == 200 && first.text == second.text).then_some(first.json())
            },
        )
        .await;
        let count = identical["data"].as_array().expect("data").len();
        let expected = match path {
            "/tags.list" => 3,
            _ => 2,
        };
        assert_eq!(count, expected, "{path}: {identical}");
    }
    let listed = strict.post("/tags.list", json!({})).await.json();
    assert_eq!(ids_of(&listed), tag_ids, "alpha, beta, gamma: by name");
}

#[tokio::test]
async fn ready_only_once_every_table_caught_up() {
    let fixture = Provisioned::new("admin-ready").await;
    let tags_topic = fixture.topic(TAGS);
    let serde = AvroSerde::<Tag>::for_topic(&fixture.registry, &tags_topic)
        .await
        .expect("serde");
    // Enough records that reading them takes a while: an instance that turned ready before its
    // tables caught up would answer with a partial list (or 503 loading) below.
    let written: Vec<Tag> = (0..10_000)
        .map(|number| Tag {
            id: ids::random_id(),
            name: format!("tag {number:05}"),
            color: TagColor::Blue,
        })
        .collect();
    let writer = RecordWriter::new(&fixture.namespace.kafka(), "admin-test", &[&tags_topic])
        .await
        .expect("writer");
    let envelope = Envelope::originated("admin-test");
    let records = written
        .iter()
        .map(|tag| OutgoingRecord {
            topic: &tags_topic,
            key: &tag.id,
            value: Some(serde.encode(tag).expect("encodes")),
            placement: Placement::ByKey,
            envelope: &envelope,
        })
        .collect();
    writer.send_all(records).await.expect("tags written");
    let sms = channel("sms", "+4915100000021", ConnectionState::Connected);
    fixture.write_channel(&sms).await;

    // Kafka is reachable only through a relay the test opens later, so the instance is
    // certainly not ready before then.
    let relay_port = free_port();
    let admin = fixture.start_admin(&[(
        "EDDY_KAFKA_BOOTSTRAP_SERVERS",
        &format!("127.0.0.1:{relay_port}"),
    )]);
    let waiting = admin
        .wait_for_ready_answer(|answer| answer.status == 503)
        .await;
    let waiting_for = waiting.json()["waiting_for"].clone();
    for table in [
        "channels",
        "tags",
        "webhook-subscriptions",
        "webhook-dead-letters",
        "streams",
    ] {
        assert!(
            waiting_for
                .as_array()
                .is_some_and(|names| names.contains(&json!(table))),
            "{waiting_for}"
        );
    }
    let starting = admin.post("/tags.list", json!({})).await;
    starting.assert_error(503, "starting", "the admin service is still connecting");
    assert_eq!(
        starting
            .headers
            .get("retry-after")
            .map(|value| value.to_str().unwrap_or_default()),
        Some("1")
    );
    let still = admin
        .get(&format!("{}/ready", admin.admin))
        .await
        .expect("ready answers");
    assert_eq!(still.status, 503, "not ready without Kafka: {}", still.text);

    let bootstrap = fixture.namespace.stack().bootstrap_servers.clone();
    let relay = tokio::net::TcpListener::bind(("127.0.0.1", relay_port))
        .await
        .expect("relay port");
    tokio::spawn(async move {
        while let Ok((mut client, _)) = relay.accept().await {
            let bootstrap = bootstrap.clone();
            tokio::spawn(async move {
                if let Ok(mut broker) = tokio::net::TcpStream::connect(bootstrap.as_str()).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut broker).await;
                }
            });
        }
    });

    // The first ready answer comes with every record written before in the tables.
    admin
        .wait_for_ready_answer(|answer| answer.status == 200)
        .await;
    let tags = admin.post("/tags.list", json!({})).await;
    assert_eq!(tags.status, 200, "{}", tags.text);
    let listed = ids_of(&tags.json());
    let expected: Vec<String> = written.iter().map(|tag| tag.id.clone()).collect();
    assert_eq!(
        listed, expected,
        "ready means the table holds everything written before"
    );
    let channels = admin.post("/channels.list", json!({})).await;
    assert_eq!(ids_of(&channels.json()), vec![sms.id]);
}

/// A subscription made through `admin`: its id.
async fn subscribe(admin: &Admin, body: Value) -> String {
    let created = admin.post("/webhooks.subscribe", body).await;
    assert_eq!(created.status, 201, "{}", created.text);
    created.json()["id"].as_str().expect("id").to_owned()
}

/// Every subscription record of `id` in the subscriptions topic, once `done` holds for them.
async fn subscription_records(
    fixture: &Provisioned,
    id: &str,
    mut done: impl FnMut(&[WebhookSubscription]) -> bool,
) -> Vec<WebhookSubscription> {
    let serde = AvroSerde::<WebhookSubscription>::for_topic(
        &fixture.registry,
        &fixture.topic(WEBHOOK_SUBSCRIPTIONS),
    )
    .await
    .expect("serde");
    let decode = |records: &[eddy_testkit::ConsumedRecord]| -> Vec<WebhookSubscription> {
        records
            .iter()
            .filter(|record| record.key_text() == id)
            .filter_map(|record| record.value.as_deref())
            .map(|value| serde.decode(value).expect("a subscription"))
            .collect()
    };
    let records = fixture
        .records(WEBHOOK_SUBSCRIPTIONS, |records| done(&decode(records)))
        .await;
    decode(&records)
}

#[tokio::test]
async fn webhook_limits_are_checked_and_rotated_secrets_keep_the_old_one_for_a_day() {
    let fixture = Provisioned::new("admin-webhook-rotation").await;
    let admin = fixture.start_admin(&[]);
    admin.wait_ready().await;
    let before = fixture.end_offsets();

    for (limits, message_start) in [
        (
            json!({"max_attempts": 0}),
            "max_attempts: 0 is out of range: use 1 to 100",
        ),
        (
            json!({"max_attempts": 101}),
            "max_attempts: 101 is out of range",
        ),
        (json!({"max_attempts": "5"}), "max_attempts: invalid type"),
        (json!({"max_attempts": 2.5}), "max_attempts: "),
        (
            json!({"max_age_seconds": 59}),
            "max_age_seconds: 59 is out of range",
        ),
        (
            json!({"max_age_seconds": 2_592_001}),
            "max_age_seconds: 2592001 is out of range",
        ),
    ] {
        let mut body = limits.clone();
        body["url"] = json!(PUBLIC_HOOK);
        admin.post("/webhooks.subscribe", body).await.assert_error(
            400,
            "invalid_request",
            message_start,
        );
    }
    assert_eq!(
        fixture.end_offsets(),
        before,
        "a refused subscription wrote something"
    );

    let created = admin
        .post(
            "/webhooks.subscribe",
            json!({"url": PUBLIC_HOOK, "max_attempts": 3, "max_age_seconds": 3600}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let created = created.json();
    assert_eq!(created["max_attempts"], 3);
    assert_eq!(created["max_age_seconds"], 3600);
    let id = created["id"].as_str().expect("id").to_owned();
    let first_secret = created["signing_secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    // Without limits: null, the sender's defaults.
    let plain = admin
        .post("/webhooks.subscribe", json!({"url": PUBLIC_HOOK}))
        .await
        .json();
    assert_eq!(plain["max_attempts"], Value::Null);
    assert_eq!(plain["max_age_seconds"], Value::Null);

    admin
        .post("/webhooks.update", json!({"id": id, "max_attempts": 0}))
        .await
        .assert_error(400, "invalid_request", "max_attempts: 0 is out of range");
    admin
        .post(
            "/webhooks.update",
            json!({"id": id, "max_age_seconds": 2_592_001}),
        )
        .await
        .assert_error(400, "invalid_request", "max_age_seconds: ");
    admin
        .post("/webhooks.update", json!({"id": id, "max_attempts": null}))
        .await
        .assert_error(400, "invalid_request", "nothing to update");
    let updated = admin
        .post(
            "/webhooks.update",
            json!({"id": id, "max_attempts": 100, "max_age_seconds": 2_592_000}),
        )
        .await;
    assert_eq!(updated.status, 200, "{}", updated.text);
    assert_eq!(updated.json()["max_attempts"], 100);
    assert_eq!(updated.json()["max_age_seconds"], 2_592_000);
    let only_age = admin
        .post("/webhooks.update", json!({"id": id, "max_age_seconds": 60}))
        .await
        .json();
    assert_eq!(only_age["max_attempts"], 100, "unchanged");
    assert_eq!(only_age["max_age_seconds"], 60);
    let info = admin.post("/webhooks.info", json!({"id": id})).await.json();
    assert_eq!(info, only_age);

    let rotated_at = eddy_service::envelope::now_millis();
    let rotated = admin
        .post("/webhooks.rotate-secret", json!({"id": id}))
        .await;
    assert_eq!(rotated.status, 200, "{}", rotated.text);
    let mut rotated = rotated.json();
    let second_secret = rotated["signing_secret"]
        .as_str()
        .expect("a new secret")
        .to_owned();
    assert!(second_secret.starts_with("whsec_"), "{second_secret}");
    assert_ne!(second_secret, first_secret);
    rotated
        .as_object_mut()
        .expect("an object")
        .remove("signing_secret");
    assert_eq!(
        rotated, info,
        "the subscription, unchanged but for its secret"
    );
    let info = admin.post("/webhooks.info", json!({"id": id})).await;
    assert!(!info.text.contains("whsec_"), "{}", info.text);
    admin
        .post(
            "/webhooks.rotate-secret",
            json!({"id": "no-such-subscription"}),
        )
        .await
        .assert_error(
            404,
            "not_found",
            "webhook subscription no-such-subscription",
        );

    // The record: the new reference, and the old one beside it for 24 hours.
    let records = subscription_records(&fixture, &id, |records| {
        records
            .iter()
            .any(|record| record.previous_secret_ref.is_some())
    })
    .await;
    let original = records[0].secret_ref.clone().expect("a secret reference");
    let latest = records.last().expect("the rotation");
    let key = SecretKey::new(SECRET_KEY.as_bytes());
    let derive = |reference: &str| key.derive("webhook", reference).expect("derives").expose();
    assert_eq!(
        latest.previous_secret_ref.as_deref(),
        Some(original.as_str())
    );
    assert_eq!(derive(&original), first_secret);
    assert_eq!(
        derive(latest.secret_ref.as_deref().expect("a new reference")),
        second_secret
    );
    let expires_at = latest
        .previous_secret_expires_at
        .expect("the old secret expires");
    let day = 24 * 60 * 60 * 1000;
    assert!(
        (rotated_at + day..=eddy_service::envelope::now_millis() + day).contains(&expires_at),
        "{expires_at}"
    );
    assert_eq!(latest.max_attempts, Some(100));
    assert_eq!(latest.max_age_ms, Some(60_000));
    let output = admin.process.output();
    for secret in [&first_secret, &second_secret] {
        assert!(!output.contains(secret.as_str()), "a secret was logged");
    }
}

/// 2025-11-22T08:26:40.000Z, the time the attempts in these tests start at.
const BASE_TIME: i64 = 1_763_800_000_000;

fn attempt(
    subscription_id: &str,
    event_id: &str,
    attempt: i32,
    attempted_at: i64,
    outcome: DeliveryOutcome,
) -> WebhookDelivery {
    let failed = outcome != DeliveryOutcome::Succeeded;
    WebhookDelivery {
        event_id: event_id.to_owned(),
        subscription_id: subscription_id.to_owned(),
        event_type: "message.created".to_owned(),
        attempt,
        attempted_at,
        outcome,
        status_code: Some(if failed { 503 } else { 204 }),
        latency_ms: Some(i64::from(attempt) * 10),
        error: failed.then(|| "HTTP 503".to_owned()),
        next_attempt_at: (outcome == DeliveryOutcome::Failed).then_some(attempted_at + 5_000),
    }
}

/// Writes attempts to the deliveries topic as the sender does: key `<event id>/<attempt>`, on
/// the partition of the event (its ordering key is `ordering_keys[event id]`).
async fn write_attempts(fixture: &Provisioned, attempts: &[(WebhookDelivery, String)]) {
    let records: Vec<(String, WebhookDelivery, String)> = attempts
        .iter()
        .map(|(delivery, ordering_key)| {
            (
                format!("{}/{}", delivery.event_id, delivery.attempt),
                delivery.clone(),
                eddy_webhooks::event_placement(&delivery.subscription_id, Some(ordering_key)),
            )
        })
        .collect();
    fixture
        .write_webhook_records(WEBHOOK_DELIVERIES, &records)
        .await;
}

/// `(event id, attempt)` of each attempt in a list answer.
fn attempts_of(list: &Value) -> Vec<(String, i64)> {
    list["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|item| {
            (
                item["event_id"].as_str().expect("event_id").to_owned(),
                item["attempt"].as_i64().expect("attempt"),
            )
        })
        .collect()
}

/// `(event id, attempt)` of `attempts`, newest first.
fn newest_first(attempts: &[&WebhookDelivery]) -> Vec<(String, i64)> {
    let mut sorted = attempts.to_vec();
    sorted.sort_by_key(|delivery| std::cmp::Reverse(delivery.attempted_at));
    sorted
        .iter()
        .map(|delivery| (delivery.event_id.clone(), i64::from(delivery.attempt)))
        .collect()
}

/// Follows `next_cursor` (or `previous_cursor` backwards) from `request` to the end: every page.
async fn every_page(admin: &Admin, request: Value) -> Vec<Value> {
    let mut pages = Vec::new();
    let mut body = request.clone();
    loop {
        let page = admin.post("/webhooks.deliveries.list", body.clone()).await;
        assert_eq!(page.status, 200, "{}", page.text);
        let page = page.json();
        let next = page["pagination_data"]["next_cursor"].clone();
        pages.push(page);
        if next.is_null() {
            return pages;
        }
        assert!(pages.len() < 50, "the pages never end");
        body["cursor"] = next;
    }
}

#[tokio::test]
async fn the_delivery_log_lists_attempts_newest_first_from_every_instance() {
    let fixture = Provisioned::new("admin-deliveries").await;
    let first = fixture.start_admin(&[]);
    let second = fixture.start_admin(&[]);
    first.wait_ready().await;
    second.wait_ready().await;
    let crm = subscribe(&first, json!({"url": PUBLIC_HOOK, "name": "crm"})).await;
    let other = subscribe(&first, json!({"url": PUBLIC_HOOK, "name": "other"})).await;

    // Six events of crm over several conversations (so several partitions, owned by both
    // instances), with one to three attempts each, and two of the other subscription in between.
    let endings = [
        DeliveryOutcome::Succeeded,
        DeliveryOutcome::DeadLettered,
        DeliveryOutcome::Failed,
        DeliveryOutcome::Cancelled,
    ];
    let mut written: Vec<(WebhookDelivery, String)> = Vec::new();
    for number in 0..6_i64 {
        let event_id = format!("crm-event-{number}");
        let attempts = (number % 3) as i32 + 1;
        for number_of_attempt in 1..=attempts {
            let outcome = if number_of_attempt == attempts {
                endings[number as usize % endings.len()]
            } else {
                DeliveryOutcome::Failed
            };
            written.push((
                attempt(
                    &crm,
                    &event_id,
                    number_of_attempt,
                    BASE_TIME + number * 10_000 + i64::from(number_of_attempt) * 1_000,
                    outcome,
                ),
                format!("conversation-{number}"),
            ));
        }
    }
    for number in 0..2_i64 {
        written.push((
            attempt(
                &other,
                &format!("other-event-{number}"),
                1,
                BASE_TIME + number * 10_000 + 500,
                DeliveryOutcome::Succeeded,
            ),
            format!("conversation-{number}"),
        ));
    }
    write_attempts(&fixture, &written).await;
    let crm_attempts: Vec<&WebhookDelivery> = written
        .iter()
        .map(|(delivery, _)| delivery)
        .filter(|delivery| delivery.subscription_id == crm)
        .collect();
    assert_eq!(crm_attempts.len(), 12);

    let everything = json!({"subscription_id": crm, "page_size": 100});
    let full = eddy_testkit::poll_until("every attempt to be listed", CONVERGENCE, || async {
        let list = first
            .post("/webhooks.deliveries.list", everything.clone())
            .await;
        (list.status == 200 && list.json()["pagination_data"]["total"] == 12).then(|| list.json())
    })
    .await;
    assert_eq!(attempts_of(&full), newest_first(&crm_attempts));
    assert_eq!(
        full["pagination_data"],
        json!({"previous_cursor": null, "next_cursor": null, "total": 12})
    );
    // The shape of one attempt: the second (failed) attempt of event 2.
    let failed = full["data"]
        .as_array()
        .expect("data")
        .iter()
        .find(|item| item["event_id"] == "crm-event-2" && item["attempt"] == 2)
        .expect("attempt 2 of event 2");
    assert_eq!(
        *failed,
        json!({
            "event_id": "crm-event-2",
            "subscription_id": crm,
            "event_type": "message.created",
            "attempt": 2,
            "attempted_at": "2025-11-22T08:27:02.000Z",
            "status": "failed",
            "status_code": 503,
            "latency_ms": 20,
            "error": "HTTP 503",
            "next_attempt_at": "2025-11-22T08:27:07.000Z",
        })
    );
    // The other instance merges the same answer.
    eddy_testkit::poll_until(
        "the second instance to answer the same",
        CONVERGENCE,
        || async {
            let list = second
                .post("/webhooks.deliveries.list", everything.clone())
                .await;
            (list.status == 200 && list.json() == full).then_some(())
        },
    )
    .await;
    let others = first
        .post(
            "/webhooks.deliveries.list",
            json!({"subscription_id": other}),
        )
        .await
        .json();
    assert_eq!(
        attempts_of(&others),
        vec![
            ("other-event-1".to_owned(), 1),
            ("other-event-0".to_owned(), 1)
        ]
    );

    // Filters.
    for (status, outcome) in [
        ("succeeded", DeliveryOutcome::Succeeded),
        ("failed", DeliveryOutcome::Failed),
        ("dead_lettered", DeliveryOutcome::DeadLettered),
        ("cancelled", DeliveryOutcome::Cancelled),
    ] {
        let list = second
            .post(
                "/webhooks.deliveries.list",
                json!({"subscription_id": crm, "status": status}),
            )
            .await;
        assert_eq!(list.status, 200, "{}", list.text);
        let expected: Vec<&WebhookDelivery> = crm_attempts
            .iter()
            .copied()
            .filter(|delivery| delivery.outcome == outcome)
            .collect();
        assert!(!expected.is_empty());
        assert_eq!(
            attempts_of(&list.json()),
            newest_first(&expected),
            "{status}"
        );
        assert_eq!(
            list.json()["pagination_data"]["total"],
            expected.len(),
            "{status}"
        );
    }
    let of_event = first
        .post(
            "/webhooks.deliveries.list",
            json!({"subscription_id": crm, "event_id": "crm-event-5"}),
        )
        .await
        .json();
    assert_eq!(
        attempts_of(&of_event),
        vec![
            ("crm-event-5".to_owned(), 3),
            ("crm-event-5".to_owned(), 2),
            ("crm-event-5".to_owned(), 1)
        ]
    );
    assert_eq!(of_event["pagination_data"]["total"], 3);
    let foreign_event = first
        .post(
            "/webhooks.deliveries.list",
            json!({"subscription_id": crm, "event_id": "other-event-0"}),
        )
        .await
        .json();
    assert_eq!(
        foreign_event["data"],
        json!([]),
        "another subscription's event"
    );
    // since ≤ attempted_at < until: events 2 and 3 (08:27:00 up to 08:27:20, any offset).
    let window = first
        .post(
            "/webhooks.deliveries.list",
            json!({
                "subscription_id": crm,
                "since": "2025-11-22T09:27:00+01:00",
                "until": "2025-11-22T08:27:20.000Z",
            }),
        )
        .await;
    assert_eq!(window.status, 200, "{}", window.text);
    let expected: Vec<&WebhookDelivery> = crm_attempts
        .iter()
        .copied()
        .filter(|delivery| {
            (BASE_TIME + 20_000..BASE_TIME + 40_000).contains(&delivery.attempted_at)
        })
        .collect();
    assert_eq!(expected.len(), 4);
    assert_eq!(attempts_of(&window.json()), newest_first(&expected));
    let since_third_attempt = first
        .post(
            "/webhooks.deliveries.list",
            json!({"subscription_id": crm, "since": "2025-11-22T08:27:03.000Z", "status": "failed"}),
        )
        .await
        .json();
    let expected: Vec<&WebhookDelivery> = crm_attempts
        .iter()
        .copied()
        .filter(|delivery| {
            delivery.attempted_at >= BASE_TIME + 23_000
                && delivery.outcome == DeliveryOutcome::Failed
        })
        .collect();
    assert_eq!(attempts_of(&since_third_attempt), newest_first(&expected));

    // Pages: three of five, no attempt twice, the same order as the whole list, and back.
    let pages = every_page(&second, json!({"subscription_id": crm, "page_size": 5})).await;
    assert_eq!(pages.len(), 3);
    assert!(pages[0]["pagination_data"]["previous_cursor"].is_null());
    let paged: Vec<(String, i64)> = pages.iter().flat_map(attempts_of).collect();
    assert_eq!(paged, attempts_of(&full));
    let mut unique = paged.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 12, "an attempt on two pages");
    for page in &pages {
        assert_eq!(page["pagination_data"]["total"], 12);
    }
    let back = first
        .post(
            "/webhooks.deliveries.list",
            json!({
                "subscription_id": crm,
                "page_size": 5,
                "cursor": pages[2]["pagination_data"]["previous_cursor"],
            }),
        )
        .await
        .json();
    assert_eq!(attempts_of(&back), attempts_of(&pages[1]));
    let filtered_pages = every_page(
        &first,
        json!({"subscription_id": crm, "page_size": 2, "status": "failed"}),
    )
    .await;
    let failed_attempts: Vec<&WebhookDelivery> = crm_attempts
        .iter()
        .copied()
        .filter(|delivery| delivery.outcome == DeliveryOutcome::Failed)
        .collect();
    assert_eq!(
        filtered_pages
            .iter()
            .flat_map(attempts_of)
            .collect::<Vec<_>>(),
        newest_first(&failed_attempts)
    );

    // Refusals.
    first
        .post(
            "/webhooks.deliveries.list",
            json!({"subscription_id": "no-such-subscription"}),
        )
        .await
        .assert_error(
            404,
            "not_found",
            "webhook subscription no-such-subscription does not exist",
        );
    first
        .post(
            "/webhooks.deliveries.list",
            json!({"subscription_id": crm, "status": "FAILED"}),
        )
        .await
        .assert_error(
            400,
            "invalid_request",
            "status: 'FAILED' is not a delivery status",
        );
    first
        .post(
            "/webhooks.deliveries.list",
            json!({"subscription_id": crm, "since": "yesterday"}),
        )
        .await
        .assert_error(400, "invalid_request", "since: ");
    first
        .post(
            "/webhooks.deliveries.list",
            json!({"subscription_id": crm, "since": "2025-11-22T08:27:00Z", "until": "2025-11-22T08:27:00Z"}),
        )
        .await
        .assert_error(400, "invalid_request", "until: must be after since");
    first
        .post(
            "/webhooks.deliveries.list",
            json!({"subscription_id": crm, "page_size": 101}),
        )
        .await
        .assert_error(400, "invalid_request", "page_size: ");
    first
        .post(
            "/webhooks.deliveries.list",
            json!({"subscription_id": other, "cursor": pages[0]["pagination_data"]["next_cursor"]}),
        )
        .await
        .assert_error(400, "invalid_request", "cursor: belongs to another list");
    first
        .post(
            "/webhooks.deliveries.list",
            json!({"subscription_id": crm, "cursor": "20"}),
        )
        .await
        .assert_error(400, "invalid_request", "cursor: ");
    first
        .post("/webhooks.deliveries.list", json!({}))
        .await
        .assert_error(400, "invalid_request", "missing field `subscription_id`");
}

fn webhook_event(
    id: &str,
    subscription_id: &str,
    ordering_key: Option<&str>,
    created_at: i64,
) -> WebhookEvent {
    WebhookEvent {
        id: id.to_owned(),
        subscription_id: subscription_id.to_owned(),
        event_type: "message.created".to_owned(),
        created_at,
        ordering_key: ordering_key.map(str::to_owned),
        payload: r#"{"id":"m1"}"#.to_owned(),
        redelivery_requested_at: None,
    }
}

#[tokio::test]
async fn dead_letters_are_redelivered_as_copies_on_their_events_partition() {
    let fixture = Provisioned::new("admin-redeliver").await;
    let admin = fixture.start_admin(&[]);
    admin.wait_ready().await;
    let crm = subscribe(&admin, json!({"url": PUBLIC_HOOK})).await;
    let other = subscribe(&admin, json!({"url": PUBLIC_HOOK})).await;

    // Dead letters: three of crm (one without an ordering key) and one of the other
    // subscription; a delivered event of crm is only in the log.
    let dead = [
        webhook_event("event-b", &crm, Some("conversation-2"), BASE_TIME + 2),
        webhook_event("event-a", &crm, Some("conversation-1"), BASE_TIME + 1),
        webhook_event("event-c", &crm, None, BASE_TIME + 3),
        webhook_event("event-other", &other, Some("conversation-1"), BASE_TIME + 4),
    ];
    let placement = |event: &WebhookEvent| {
        eddy_webhooks::event_placement(&event.subscription_id, event.ordering_key.as_deref())
    };
    let records: Vec<(String, WebhookEvent, String)> = dead
        .iter()
        .map(|event| (event.id.clone(), event.clone(), placement(event)))
        .collect();
    fixture
        .write_webhook_records(WEBHOOK_DEAD_LETTERS, &records)
        .await;
    write_attempts(
        &fixture,
        &[
            (
                attempt(
                    &crm,
                    "event-a",
                    1,
                    BASE_TIME + 10,
                    DeliveryOutcome::DeadLettered,
                ),
                "conversation-1".to_owned(),
            ),
            (
                attempt(
                    &crm,
                    "event-delivered",
                    1,
                    BASE_TIME + 20,
                    DeliveryOutcome::Succeeded,
                ),
                "conversation-3".to_owned(),
            ),
        ],
    )
    .await;

    // No waiting: a redelivery reads the dead letters up to the end of their topic first.
    let one = admin
        .post(
            "/webhooks.redeliver",
            json!({"subscription_id": crm, "event_id": "event-a"}),
        )
        .await;
    assert_eq!(one.status, 202, "{}", one.text);
    let one = one.json();
    assert_eq!(one, json!({"redelivering": 1, "event_ids": ["event-a"]}));

    let serde =
        AvroSerde::<WebhookEvent>::for_topic(&fixture.registry, &fixture.topic(WEBHOOK_EVENTS))
            .await
            .expect("serde");
    let check_copy = |record: &eddy_testkit::ConsumedRecord, original: &WebhookEvent| {
        let copy = serde
            .decode(record.value.as_deref().expect("a value"))
            .expect("an event");
        let requested_at = copy.redelivery_requested_at.expect("a redelivery request");
        assert!(requested_at > BASE_TIME, "{requested_at}");
        assert_eq!(
            copy,
            WebhookEvent {
                redelivery_requested_at: Some(requested_at),
                ..original.clone()
            }
        );
        assert_eq!(
            record.partition,
            eddy_streams::partitioner::partition_for_key(placement(original).as_bytes(), 3),
            "{} on the partition of its event",
            original.id
        );
        assert!(
            header(record, "eddy-producer").starts_with("eddy-admin/"),
            "{record:?}"
        );
    };
    let written = fixture
        .records(WEBHOOK_EVENTS, |records| !records.is_empty())
        .await;
    assert_eq!(written.len(), 1);
    assert_eq!(written[0].key_text(), "event-a");
    check_copy(&written[0], &dead[1]);

    // Every dead letter of the subscription, oldest first (event-a is still dead-lettered: the
    // sender tombstones it once it takes the request).
    let all = admin
        .post("/webhooks.redeliver", json!({"subscription_id": crm}))
        .await;
    assert_eq!(all.status, 202, "{}", all.text);
    assert_eq!(
        all.json(),
        json!({"redelivering": 3, "event_ids": ["event-a", "event-b", "event-c"]})
    );
    let written = fixture
        .records(WEBHOOK_EVENTS, |records| records.len() >= 4)
        .await;
    let mut keys: Vec<String> = written.iter().map(|record| record.key_text()).collect();
    keys.sort();
    assert_eq!(keys, ["event-a", "event-a", "event-b", "event-c"]);
    for record in &written {
        let original = dead
            .iter()
            .find(|event| event.id == record.key_text())
            .expect("a dead letter of crm");
        assert_eq!(original.subscription_id, crm);
        check_copy(record, original);
    }

    // Refusals write nothing.
    let before = fixture.end_offsets();
    admin
        .post(
            "/webhooks.redeliver",
            json!({"subscription_id": crm, "event_id": "event-other"}),
        )
        .await
        .assert_error(
            404,
            "not_found",
            &format!("webhook event event-other of subscription {crm} does not exist"),
        );
    admin
        .post(
            "/webhooks.redeliver",
            json!({"subscription_id": crm, "event_id": "no-such-event"}),
        )
        .await
        .assert_error(404, "not_found", "webhook event no-such-event");
    eddy_testkit::poll_until(
        "a delivered event to be refused as not dead-lettered",
        CONVERGENCE,
        || async {
            let answer = admin
                .post(
                    "/webhooks.redeliver",
                    json!({"subscription_id": crm, "event_id": "event-delivered"}),
                )
                .await;
            match answer.status {
                404 => None,
                _ => Some(answer),
            }
        },
    )
    .await
    .assert_error(
        409,
        "conflict",
        "webhook event event-delivered is not dead-lettered",
    );
    admin
        .post(
            "/webhooks.redeliver",
            json!({"subscription_id": "no-such-subscription"}),
        )
        .await
        .assert_error(
            404,
            "not_found",
            "webhook subscription no-such-subscription",
        );
    admin
        .post("/webhooks.redeliver", json!({"event_id": "event-a"}))
        .await
        .assert_error(400, "invalid_request", "missing field `subscription_id`");
    let unsubscribed = admin
        .post("/webhooks.unsubscribe", json!({"id": crm}))
        .await;
    assert_eq!(unsubscribed.status, 200, "{}", unsubscribed.text);
    let refused = admin
        .post("/webhooks.redeliver", json!({"subscription_id": crm}))
        .await;
    refused.assert_error(
        409,
        "conflict",
        &format!("webhook subscription {crm} is unsubscribed"),
    );
    assert!(
        refused.text.contains("subscribe it again first"),
        "{}",
        refused.text
    );
    let events_topic = fixture.topic(WEBHOOK_EVENTS);
    let events_written = |offsets: &[(String, i64)]| {
        offsets
            .iter()
            .find(|(topic, _)| *topic == events_topic)
            .map(|(_, total)| *total)
    };
    assert_eq!(
        events_written(&fixture.end_offsets()),
        events_written(&before),
        "a refused redelivery wrote an event"
    );
}
