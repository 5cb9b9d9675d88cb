//! `eddy-admin` as a real process against the real local Kafka and schema registry: tags,
//! channels and webhook subscriptions through the HTTP API, the webhook URL policy, auth before
//! any work, body limits, errors that name the field, rejected requests writing nothing, two
//! instances answering identically, and readiness only once the tables caught up.

use std::time::{Duration, Instant};

use eddy_schemas::catalog::{CHANNELS, TAGS, WEBHOOK_SUBSCRIPTIONS};
use eddy_schemas::provision::provision;
use eddy_schemas::writer::{OutgoingRecord, Placement, RecordWriter};
use eddy_schemas::{
    AvroSerde, Catalog, CatalogArgs, Channel, ConnectionState, RegistryArgs, SchemaRegistry, Tag,
    TagColor, WebhookSubscription, ids,
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
        // Only the topics the admin service reads: quicker to provision.
        catalog
            .topics
            .retain(|topic| [CHANNELS, TAGS, WEBHOOK_SUBSCRIPTIONS].contains(&topic.dataset));
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

    fn admin_topics(&self) -> Vec<String> {
        [CHANNELS, TAGS, WEBHOOK_SUBSCRIPTIONS]
            .iter()
            .map(|dataset| self.topic(dataset))
            .collect()
    }

    /// Starts an admin instance with `extra` settings on top of the test defaults.
    fn start_admin(&self, extra: &[(&str, &str)]) -> Admin {
        let http_port = free_port();
        let admin_port = free_port();
        let mut command = ComponentCommand::for_program(
            &self.namespace,
            &format!("eddy-admin-{http_port}"),
            env!("CARGO_BIN_EXE_eddy-admin"),
        )
        .env("EDDY_ADMIN_ADDRESS", format!("127.0.0.1:{admin_port}"))
        .env("EDDY_HTTP_ADDRESS", format!("127.0.0.1:{http_port}"))
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
    for table in ["channels", "tags", "webhook-subscriptions"] {
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
