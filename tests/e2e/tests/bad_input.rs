//! Bad input end to end, with the real binaries: every bad request to the communication
//! service and to the source-api answers with the one error shape `{"message", "code"}` and the
//! right status (400 naming the field, 404 naming the id, 409, 413 over the configured body
//! limit, 401 before any work), and leaves no record in Kafka: the end offsets of every
//! catalog topic are the same before and after the bad requests.
//!
//! Every case is checked and reported (`PASS`/`FAIL` on stderr); the test fails at the end
//! listing every failed case with its request, what was expected and what came back.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use eddy_e2e_tests::{
    ActionEndpoint, Answer, Api, Component, Core, DEADLINE, Platform, START_TIMEOUT, SYSTEM_TOKEN,
    check_openapi, contact_message, openapi_document, poll_answer,
};
use eddy_schemas::{catalog, ids};
use serde_json::{Value, json};

/// The body limit of the extra instance of the component under test.
const BODY_LIMIT: usize = 4096;
const BODY_LIMIT_TEXT: &str = "4096";
/// How long the catalog topics must keep their end offsets to count as settled.
const QUIET: Duration = Duration::from_secs(3);

/// Every catalog dataset: the topics a rejected request must not write to.
const CATALOG_DATASETS: [&str; 10] = [
    catalog::MESSAGES,
    catalog::CHANNELS,
    catalog::METADATA,
    catalog::READ_RECEIPTS,
    catalog::SOURCES,
    catalog::TAGS,
    catalog::WEBHOOK_SUBSCRIPTIONS,
    catalog::WEBHOOK_EVENTS,
    catalog::WEBHOOK_DELIVERIES,
    catalog::WEBHOOK_DEAD_LETTERS,
];

// ---------------------------------------------------------------------------------------------
// Shared steps

/// Sends `size` bytes to `path` as a chunked body (no `Content-Length`, so the limit can only
/// be found while reading), with the system token; not recorded.
async fn chunked(component: &Component, path: &str, size: usize) -> Answer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = format!("127.0.0.1:{}", component.settings.http_port);
    let mut stream = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connect");
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {SYSTEM_TOKEN}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    let chunk = "x".repeat(1024);
    for _ in 0..size.div_ceil(chunk.len()) {
        request.extend_from_slice(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes());
    }
    request.extend_from_slice(b"0\r\n\r\n");
    // The server may answer and close before reading everything: a failed write is fine.
    let _ = stream.write_all(&request).await;
    let mut response = Vec::new();
    let read =
        tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response).into_owned();
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return Answer {
            status: 0,
            headers: Default::default(),
            body: Value::String(format!("no HTTP answer ({read:?}): {text}")),
        };
    };
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let mut headers = axum::http::HeaderMap::new();
    for line in lines {
        if let Some((name, value)) = line.split_once(':')
            && let (Ok(name), Ok(value)) = (
                axum::http::HeaderName::from_bytes(name.trim().as_bytes()),
                axum::http::HeaderValue::from_str(value.trim()),
            )
        {
            headers.append(name, value);
        }
    }
    let body = if headers
        .get("transfer-encoding")
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"chunked"))
    {
        decode_chunked(body)
    } else {
        body.to_owned()
    };
    let body =
        serde_json::from_str(&body).unwrap_or_else(|_| Value::String(format!("(not JSON) {body}")));
    Answer {
        status,
        headers,
        body,
    }
}

fn decode_chunked(mut text: &str) -> String {
    let mut decoded = String::new();
    while let Some((size, rest)) = text.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        decoded.push_str(&rest[..size]);
        text = rest[size..].trim_start_matches("\r\n");
    }
    decoded
}

/// The end offsets of the catalog topics only (internal topics such as `-membership` and
/// `-changelog` move on their own).
fn catalog_offsets(platform: &Platform) -> BTreeMap<String, i64> {
    let names: BTreeSet<String> = CATALOG_DATASETS
        .iter()
        .map(|dataset| platform.topic(dataset))
        .collect();
    let offsets = tokio::task::block_in_place(|| platform.end_offsets());
    let offsets: BTreeMap<String, i64> = offsets
        .into_iter()
        .filter(|(topic, _)| names.contains(topic))
        .collect();
    assert_eq!(
        offsets.len(),
        names.len(),
        "every catalog topic has offsets: {offsets:?}"
    );
    offsets
}

/// The catalog offsets once they stopped moving for [`QUIET`] (follow-up writes of the setup,
/// such as unread counts and delivery states, have landed).
async fn settled_offsets(platform: &Platform) -> BTreeMap<String, i64> {
    let deadline = Instant::now() + DEADLINE;
    let mut last = catalog_offsets(platform);
    let mut quiet_since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = catalog_offsets(platform);
        if now == last {
            if quiet_since.elapsed() >= QUIET {
                return now;
            }
        } else {
            last = now;
            quiet_since = Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "the catalog topics did not settle within {DEADLINE:?}: {last:?}"
        );
    }
}

/// A request sent with a plain client, not recorded for the OpenAPI check (for paths and
/// methods the document does not describe).
async fn unrecorded(
    method: reqwest::Method,
    component: &Component,
    path: &str,
    body: &str,
) -> Answer {
    let response = reqwest::Client::new()
        .request(method, format!("{}{path}", component.base_url()))
        .bearer_auth(SYSTEM_TOKEN)
        .header("content-type", "application/json")
        .timeout(Duration::from_secs(30))
        .body(body.to_owned())
        .send()
        .await
        .expect("the API answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("a body");
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
        Value::String(format!("(not JSON) {}", String::from_utf8_lossy(&bytes)))
    });
    Answer {
        status,
        headers,
        body,
    }
}

/// A JSON body of more than [`BODY_LIMIT`] bytes.
fn oversized(field: &str) -> Vec<u8> {
    json!({ field: "x".repeat(BODY_LIMIT * 2) })
        .to_string()
        .into_bytes()
}

fn shorten(text: &str) -> String {
    const MAX: usize = 300;
    if text.len() <= MAX {
        text.to_owned()
    } else {
        let mut end = MAX;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}... ({} bytes)", &text[..end], text.len())
    }
}

/// The outcome of every case of a test.
#[derive(Debug, Default)]
struct Cases {
    passed: Vec<String>,
    failed: Vec<String>,
}

/// What an error answer must be.
#[derive(Debug, Clone, Copy)]
struct Expected<'a> {
    status: u16,
    code: &'a str,
    /// Texts the message must contain (the field, the id).
    mentions: &'a [&'a str],
}

/// A 400 about the request's fields.
const fn invalid<'a>(mentions: &'a [&'a str]) -> Expected<'a> {
    expect(400, "invalid_request", mentions)
}

const fn expect<'a>(status: u16, code: &'a str, mentions: &'a [&'a str]) -> Expected<'a> {
    Expected {
        status,
        code,
        mentions,
    }
}

impl Cases {
    /// POSTs `body` as JSON to `path` with `api` and checks the answer.
    async fn post(
        &mut self,
        api: &Api,
        case: &str,
        path: &str,
        body: Value,
        expected: Expected<'_>,
    ) {
        let request = format!("POST {path} {}", shorten(&body.to_string()));
        let answer = api.call(path, body).await;
        self.check(case, &request, &answer, expected);
    }

    /// POSTs raw bytes with extra headers and checks the answer.
    async fn post_raw(
        &mut self,
        api: &Api,
        case: &str,
        path: &str,
        body: Vec<u8>,
        headers: &[(&str, &str)],
        expected: Expected<'_>,
    ) {
        let request = format!(
            "POST {path} headers {headers:?} body {}",
            shorten(&String::from_utf8_lossy(&body))
        );
        let answer = api.call_raw(path, body, headers).await;
        self.check(case, &request, &answer, expected);
    }

    /// Checks an error answer: status, exactly `{message, code}`, the code, the message naming
    /// what it must, and `WWW-Authenticate` on 401s.
    fn check(&mut self, case: &str, request: &str, answer: &Answer, expected: Expected<'_>) {
        let mut problems = Vec::new();
        if answer.status != expected.status {
            problems.push(format!(
                "status {} instead of {}",
                answer.status, expected.status
            ));
        }
        match answer.body.as_object() {
            None => problems.push("the body is not a JSON object".to_owned()),
            Some(map) => {
                let keys: BTreeSet<&str> = map.keys().map(String::as_str).collect();
                if keys != BTreeSet::from(["code", "message"]) {
                    problems.push(format!("keys {keys:?} instead of exactly message and code"));
                }
                let code = map.get("code");
                if code.and_then(Value::as_str) != Some(expected.code) {
                    problems.push(format!("code {code:?} instead of {:?}", expected.code));
                }
                match map.get("message").and_then(Value::as_str) {
                    None => problems.push("no message text".to_owned()),
                    Some(message) => {
                        for mention in expected.mentions {
                            if !message.contains(mention) {
                                problems.push(format!("the message does not name {mention:?}"));
                            }
                        }
                    }
                }
            }
        }
        if expected.status == 401 && !answer.headers.contains_key("www-authenticate") {
            problems.push("no WWW-Authenticate header on a 401".to_owned());
        }
        if expected.status == 503 && !answer.headers.contains_key("retry-after") {
            problems.push("no Retry-After header on a 503".to_owned());
        }
        if problems.is_empty() {
            eprintln!("PASS {case}");
            self.passed.push(case.to_owned());
        } else {
            let report = format!(
                "{case}\n    request:  {request}\n    expected: {} {:?} naming {:?}\n    actual:   {} {}\n    problems: {}",
                expected.status,
                expected.code,
                expected.mentions,
                answer.status,
                shorten(&answer.body.to_string()),
                problems.join("; ")
            );
            eprintln!("FAIL {report}");
            self.failed.push(report);
        }
    }

    /// A check that is not about one answer.
    fn verdict(&mut self, case: &str, problem: Option<String>) {
        match problem {
            None => {
                eprintln!("PASS {case}");
                self.passed.push(case.to_owned());
            }
            Some(problem) => {
                let report = format!("{case}\n    {problem}");
                eprintln!("FAIL {report}");
                self.failed.push(report);
            }
        }
    }

    /// The offsets check, the OpenAPI check, then fails listing every failed case.
    async fn finish(
        mut self,
        platform: &Platform,
        before: &BTreeMap<String, i64>,
        binary: &str,
        component_dir: &str,
    ) {
        let after = settled_offsets(platform).await;
        let moved: Vec<String> = after
            .iter()
            .filter(|(topic, offset)| before.get(*topic) != Some(*offset))
            .map(|(topic, offset)| format!("{topic}: {:?} -> {offset}", before.get(topic)))
            .collect();
        self.verdict(
            "no record written to any catalog topic by the rejected requests",
            (!moved.is_empty()).then(|| format!("end offsets moved: {moved:?}")),
        );
        let document = openapi_document(component_dir);
        let openapi = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            check_openapi(&platform.exchanges, binary, &document);
        }));
        self.verdict(
            &format!("every answer of {binary} matches {}", document.display()),
            openapi.err().map(|panic| {
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|text| (*text).to_owned()))
                    .unwrap_or_else(|| "the OpenAPI check failed".to_owned())
            }),
        );
        eprintln!(
            "{} cases passed, {} failed",
            self.passed.len(),
            self.failed.len()
        );
        assert!(
            self.failed.is_empty(),
            "{} of {} cases failed:\n{}",
            self.failed.len(),
            self.failed.len() + self.passed.len(),
            self.failed.join("\n")
        );
    }
}

fn only_error(answer: &Answer) -> Option<String> {
    answer.body["message"].as_str().map(str::to_owned)
}

// ---------------------------------------------------------------------------------------------
// The communication service

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_to_the_communication_service_are_refused_and_write_nothing() {
    let platform = Platform::provisioned("bad-input-communication", 3).await;
    let endpoint = ActionEndpoint::start().await;
    // The core as the harness starts it, and an instance just for the body limit: its own
    // application id, so it shares no partitions with the core's instance.
    let application_id = format!("{}.communication-limited", platform.namespace.prefix());
    let mut limited = platform.start(
        "eddy-communication",
        "communication-limited",
        &[
            ("EDDY_MAX_BODY_BYTES", BODY_LIMIT_TEXT),
            ("EDDY_APPLICATION_ID", &application_id),
        ],
    );
    let core = Core::start(&platform).await;
    limited.wait_ready(START_TIMEOUT).await;
    let limited_api = platform.api(&limited);
    let source = core
        .register_source(&platform, "gateway", &endpoint.url)
        .await;
    let ingest = platform
        .api(&core.source_api)
        .with_token(Some(&source.token));
    let api = platform.api(&core.communication);

    // Valid state: two conversations (the first with two messages), a delivered reply, a tag.
    ingest
        .call(
            "/sources.webhook",
            json!({"messages": [
                contact_message("+4917600001", "m1", 1_763_800_000_000),
                contact_message("+4917600001", "m2", 1_763_800_060_000),
                contact_message("+4917600002", "m3", 1_763_800_120_000),
            ]}),
        )
        .await
        .expect(200);
    let first = ids::conversation_id(&source.channel_id, "+4917600001");
    let second = ids::conversation_id(&source.channel_id, "+4917600002");
    poll_answer(
        &api,
        "the second conversation",
        "/messages.list",
        json!({"conversation_id": second}),
        |list| (list["pagination_data"]["total"] == 1).then_some(()),
    )
    .await;
    poll_answer(
        &api,
        "both messages of the first conversation",
        "/messages.list",
        json!({"conversation_id": first}),
        |list| (list["pagination_data"]["total"] == 2).then_some(()),
    )
    .await;
    let sent = api
        .call(
            "/messages.send",
            json!({"conversation_id": first, "message": {"text": "delivered reply"}}),
        )
        .await
        .expect(200);
    let sent_id = sent["id"].as_str().expect("a message id").to_owned();
    poll_answer(
        &api,
        "the reply delivered",
        "/messages.list",
        json!({"conversation_id": first}),
        |list| {
            list["data"]
                .as_array()?
                .iter()
                .find(|message| {
                    message["id"] == sent_id.as_str() && message["delivery_state"] == "delivered"
                })
                .map(|_| ())
        },
    )
    .await;
    platform.write_tag("tag-vip", "VIP").await;
    // The service knows the tag once tagging an unknown conversation is about the conversation.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let answer = api
            .call(
                "/conversations.tag",
                json!({"conversation_id": "no-such-conversation", "tag_id": "tag-vip"}),
            )
            .await;
        if answer.status == 404
            && only_error(&answer).is_some_and(|message| message.contains("conversation"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the tag never became known: {}",
            answer.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let messages_cursor = api
        .call(
            "/messages.list",
            json!({"conversation_id": first, "page_size": 1}),
        )
        .await
        .expect(200)["pagination_data"]["next_cursor"]
        .as_str()
        .expect("a next cursor of the first conversation's messages")
        .to_owned();
    let conversations_cursor = api
        .call("/conversations.list", json!({"page_size": 1}))
        .await
        .expect(200)["pagination_data"]["next_cursor"]
        .as_str()
        .expect("a next cursor of the conversation list")
        .to_owned();

    let before = settled_offsets(&platform).await;
    let mut cases = Cases::default();
    let unauthorized = expect(401, "unauthorized", &[]);
    let unknown = "no-such-conversation";
    let not_found = expect(404, "not_found", &["no-such-conversation"]);

    // Authentication comes first, before the body is parsed or read.
    let anonymous = api.with_token(None);
    let impostor = api.with_token(Some("not-the-system-token-0123456789"));
    cases
        .post(
            &anonymous,
            "no Authorization header",
            "/conversations.info",
            json!({"conversation_id": first}),
            unauthorized,
        )
        .await;
    cases
        .post_raw(
            &anonymous,
            "no Authorization header and a body that is not JSON",
            "/conversations.info",
            b"{not json".to_vec(),
            &[],
            unauthorized,
        )
        .await;
    cases
        .post_raw(
            &limited_api.with_token(None),
            "no Authorization header and a body over the limit",
            "/messages.send",
            oversized("conversation_id"),
            &[],
            unauthorized,
        )
        .await;
    cases
        .post_raw(
            &limited_api.with_token(Some("not-the-system-token-0123456789")),
            "a wrong token and a body over the limit",
            "/conversations.info",
            oversized("conversation_id"),
            &[],
            unauthorized,
        )
        .await;
    cases
        .post(
            &impostor,
            "a wrong token",
            "/conversations.info",
            json!({"conversation_id": first}),
            unauthorized,
        )
        .await;
    cases
        .post_raw(
            &impostor,
            "a wrong token and a body that is not JSON",
            "/messages.send",
            b"{not json".to_vec(),
            &[],
            unauthorized,
        )
        .await;
    cases
        .post_raw(
            &anonymous,
            "a Basic instead of a Bearer token",
            "/conversations.list",
            b"{}".to_vec(),
            &[("authorization", "Basic ZTJlOmUyZQ==")],
            unauthorized,
        )
        .await;
    cases
        .post(
            &impostor,
            "a wrong token on a write",
            "/conversations.set-state",
            json!({"conversation_id": first, "state": "CLOSED"}),
            unauthorized,
        )
        .await;

    // Bodies that do not parse, naming the field.
    cases
        .post_raw(
            &api,
            "malformed JSON",
            "/conversations.info",
            b"{not json".to_vec(),
            &[],
            invalid(&["not valid JSON"]),
        )
        .await;
    cases
        .post_raw(
            &api,
            "JSON with trailing garbage",
            "/conversations.info",
            format!(r#"{{"conversation_id": "{first}"}} x"#).into_bytes(),
            &[],
            invalid(&["not valid JSON"]),
        )
        .await;
    cases
        .post(
            &api,
            "missing conversation_id",
            "/conversations.info",
            json!({}),
            invalid(&["conversation_id"]),
        )
        .await;
    cases
        .post(
            &api,
            "empty conversation_id",
            "/conversations.info",
            json!({"conversation_id": " "}),
            invalid(&["conversation_id"]),
        )
        .await;
    cases
        .post(
            &api,
            "conversation_id of the wrong type",
            "/conversations.info",
            json!({"conversation_id": 5}),
            invalid(&["conversation_id"]),
        )
        .await;
    cases
        .post(
            &api,
            "page_size \"x\" on conversations.list",
            "/conversations.list",
            json!({"page_size": "x"}),
            invalid(&["page_size"]),
        )
        .await;
    cases
        .post(
            &api,
            "page_size \"x\" on messages.list",
            "/messages.list",
            json!({"conversation_id": first, "page_size": "x"}),
            invalid(&["page_size"]),
        )
        .await;
    for size in [0, 101, -1] {
        cases
            .post(
                &api,
                &format!("page_size {size} on conversations.list"),
                "/conversations.list",
                json!({"page_size": size}),
                invalid(&["page_size"]),
            )
            .await;
        cases
            .post(
                &api,
                &format!("page_size {size} on messages.list"),
                "/messages.list",
                json!({"conversation_id": first, "page_size": size}),
                invalid(&["page_size"]),
            )
            .await;
    }
    cases
        .post(
            &api,
            "an unknown field",
            "/conversations.info",
            json!({"conversation_id": first, "colour": "red"}),
            invalid(&["colour"]),
        )
        .await;
    cases
        .post(
            &api,
            "an unknown field on a write",
            "/conversations.mark-read",
            json!({"conversation_id": first, "read_at": 5}),
            invalid(&["read_at"]),
        )
        .await;
    cases
        .post(
            &api,
            "an unknown filter",
            "/conversations.list",
            json!({"filters": {"colour": "red"}}),
            invalid(&["colour"]),
        )
        .await;
    cases
        .post(
            &api,
            "unread_only of the wrong type",
            "/conversations.list",
            json!({"filters": {"unread_only": "yes"}}),
            invalid(&["filters.unread_only"]),
        )
        .await;

    // Unknown conversations.
    for (path, body) in [
        ("/conversations.info", json!({"conversation_id": unknown})),
        (
            "/conversations.tag",
            json!({"conversation_id": unknown, "tag_id": "tag-vip"}),
        ),
        (
            "/conversations.untag",
            json!({"conversation_id": unknown, "tag_id": "tag-vip"}),
        ),
        (
            "/conversations.set-state",
            json!({"conversation_id": unknown, "state": "CLOSED"}),
        ),
        (
            "/conversations.remove-state",
            json!({"conversation_id": unknown}),
        ),
        (
            "/conversations.update-contact",
            json!({"conversation_id": unknown, "display_name": "Ada"}),
        ),
        (
            "/conversations.mark-read",
            json!({"conversation_id": unknown}),
        ),
        ("/messages.list", json!({"conversation_id": unknown})),
        (
            "/messages.send",
            json!({"conversation_id": unknown, "message": {"text": "hello?"}}),
        ),
        (
            "/metadata.upsert",
            json!({"subject": "conversation", "id": unknown, "data": {"priority": 1}}),
        ),
    ] {
        cases
            .post(
                &api,
                &format!("{path} of an unknown conversation"),
                path,
                body,
                not_found,
            )
            .await;
    }

    // Bad values of known conversations.
    cases
        .post(
            &api,
            "set-state LATER",
            "/conversations.set-state",
            json!({"conversation_id": first, "state": "LATER"}),
            invalid(&["state", "LATER"]),
        )
        .await;
    cases
        .post(
            &api,
            "tag with an unknown tag id",
            "/conversations.tag",
            json!({"conversation_id": first, "tag_id": "no-such-tag"}),
            expect(404, "not_found", &["no-such-tag"]),
        )
        .await;
    cases
        .post(
            &api,
            "tag with an empty tag id",
            "/conversations.tag",
            json!({"conversation_id": first, "tag_id": ""}),
            invalid(&["tag_id"]),
        )
        .await;
    cases
        .post(
            &api,
            "update-contact with an empty name",
            "/conversations.update-contact",
            json!({"conversation_id": first, "display_name": ""}),
            invalid(&["display_name"]),
        )
        .await;
    cases
        .post(
            &api,
            "update-contact with a name of 201 characters",
            "/conversations.update-contact",
            json!({"conversation_id": first, "display_name": "a".repeat(201)}),
            invalid(&["display_name"]),
        )
        .await;

    // Sending.
    cases
        .post(
            &api,
            "send with neither conversation_id nor channel_id and source_recipient_id",
            "/messages.send",
            json!({"message": {"text": "to whom?"}}),
            invalid(&["conversation_id"]),
        )
        .await;
    cases
        .post(
            &api,
            "send with a channel_id but no source_recipient_id",
            "/messages.send",
            json!({"channel_id": source.channel_id, "message": {"text": "to whom?"}}),
            invalid(&["source_recipient_id"]),
        )
        .await;
    cases
        .post(&api, "send with both conversation_id and channel_id", "/messages.send", json!({"conversation_id": first, "channel_id": source.channel_id, "source_recipient_id": "+4917600009", "message": {"text": "both"}}), invalid(&["conversation_id"]))
        .await;
    cases
        .post(
            &api,
            "send with message null",
            "/messages.send",
            json!({"conversation_id": first, "message": null}),
            invalid(&["message"]),
        )
        .await;
    cases
        .post(
            &api,
            "send without message",
            "/messages.send",
            json!({"conversation_id": first}),
            invalid(&["message"]),
        )
        .await;
    cases
        .post(&api, "send to an unknown channel_id and source_recipient_id", "/messages.send", json!({"channel_id": "no-such-channel", "source_recipient_id": "+4917600009", "message": {"text": "hello"}}), expect(404, "not_found", &["no-such-channel"]))
        .await;
    cases
        .post_raw(
            &api,
            "send with an Idempotency-Key over 255 characters",
            "/messages.send",
            json!({"conversation_id": first, "message": {"text": "keyed"}})
                .to_string()
                .into_bytes(),
            &[("Idempotency-Key", &"k".repeat(256))],
            invalid(&["Idempotency-Key"]),
        )
        .await;

    // Resending: only failed messages, only known ones.
    cases
        .post(
            &api,
            "resend a delivered message",
            "/messages.resend",
            json!({"message_id": sent_id}),
            expect(409, "conflict", &[sent_id.as_str(), "delivered"]),
        )
        .await;
    cases
        .post(
            &api,
            "resend an unknown message",
            "/messages.resend",
            json!({"message_id": "no-such-message"}),
            expect(404, "not_found", &["no-such-message"]),
        )
        .await;
    cases
        .post(
            &api,
            "resend with an empty message_id",
            "/messages.resend",
            json!({"message_id": ""}),
            invalid(&["message_id"]),
        )
        .await;

    // Metadata.
    cases
        .post(
            &api,
            "metadata.upsert with subject user",
            "/metadata.upsert",
            json!({"subject": "user", "id": first, "data": {"a": 1}}),
            invalid(&["subject", "user"]),
        )
        .await;
    cases
        .post(
            &api,
            "metadata.upsert with data 5",
            "/metadata.upsert",
            json!({"subject": "conversation", "id": first, "data": 5}),
            invalid(&["data"]),
        )
        .await;
    cases
        .post(
            &api,
            "metadata.upsert with data null",
            "/metadata.upsert",
            json!({"subject": "conversation", "id": first, "data": null}),
            invalid(&["data"]),
        )
        .await;
    cases
        .post(
            &api,
            "metadata.upsert of an unknown message",
            "/metadata.upsert",
            json!({"subject": "message", "id": "no-such-message", "data": {"a": 1}}),
            expect(404, "not_found", &["no-such-message"]),
        )
        .await;
    cases
        .post(
            &api,
            "metadata.upsert of an unknown channel",
            "/metadata.upsert",
            json!({"subject": "channel", "id": "no-such-channel", "data": {"a": 1}}),
            expect(404, "not_found", &["no-such-channel"]),
        )
        .await;

    // Cursors: never a 500.
    for (name, cursor) in [
        ("an Airy-style offset \"20\"", "20"),
        ("garbage \"v1.!!\"", "v1.!!"),
        ("base64 that is not a position", "v1.e30"),
        ("an empty cursor", ""),
    ] {
        cases
            .post(
                &api,
                &format!("conversations.list with {name} as cursor"),
                "/conversations.list",
                json!({"cursor": cursor}),
                invalid(&["cursor"]),
            )
            .await;
        cases
            .post(
                &api,
                &format!("messages.list with {name} as cursor"),
                "/messages.list",
                json!({"conversation_id": first, "cursor": cursor}),
                invalid(&["cursor"]),
            )
            .await;
    }
    cases
        .post(
            &api,
            "messages.list with a cursor of another conversation",
            "/messages.list",
            json!({"conversation_id": second, "cursor": messages_cursor}),
            invalid(&["cursor"]),
        )
        .await;
    cases
        .post(
            &api,
            "messages.list with a cursor of the conversation list",
            "/messages.list",
            json!({"conversation_id": first, "cursor": conversations_cursor}),
            invalid(&["cursor"]),
        )
        .await;
    cases
        .post(
            &api,
            "conversations.list with a cursor of a message list",
            "/conversations.list",
            json!({"cursor": messages_cursor}),
            invalid(&["cursor"]),
        )
        .await;

    // The body limit (of the limited instance).
    cases
        .post_raw(
            &limited_api,
            "a body over the limit",
            "/messages.send",
            oversized("conversation_id"),
            &[],
            expect(413, "payload_too_large", &[BODY_LIMIT_TEXT]),
        )
        .await;
    cases
        .post_raw(
            &limited_api,
            "a body over the limit on a read",
            "/conversations.list",
            oversized("cursor"),
            &[],
            expect(413, "payload_too_large", &[BODY_LIMIT_TEXT]),
        )
        .await;
    let answer = chunked(&limited, "/messages.send", BODY_LIMIT + 2048).await;
    cases.check(
        "a chunked body over the limit (no Content-Length)",
        "POST /messages.send, Transfer-Encoding: chunked, 6144 bytes",
        &answer,
        expect(413, "payload_too_large", &[BODY_LIMIT_TEXT]),
    );

    // Paths and methods outside the document (not recorded for the OpenAPI check).
    let answer = unrecorded(
        reqwest::Method::POST,
        &core.communication,
        "/conversations.delete",
        "{}",
    )
    .await;
    cases.check(
        "an unknown path",
        "POST /conversations.delete {}",
        &answer,
        expect(404, "unknown_endpoint", &["/conversations.delete"]),
    );
    let answer = unrecorded(
        reqwest::Method::GET,
        &core.communication,
        "/conversations.list",
        "",
    )
    .await;
    cases.check(
        "GET on an endpoint",
        "GET /conversations.list",
        &answer,
        expect(405, "method_not_allowed", &["GET"]),
    );

    cases
        .finish(&platform, &before, "eddy-communication", "communication")
        .await;
}

// ---------------------------------------------------------------------------------------------
// The source-api

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_to_the_source_api_are_refused_and_write_nothing() {
    let platform = Platform::provisioned("bad-input-source-api", 3).await;
    let endpoint = ActionEndpoint::start().await;
    // The core as the harness starts it, and a second source-api instance just for the body
    // limit.
    let mut limited = platform.start(
        "eddy-source-api",
        "source-api-limited",
        &[
            ("EDDY_ACTION_RETRY_BACKOFF", "100ms"),
            ("EDDY_MAX_BODY_BYTES", BODY_LIMIT_TEXT),
        ],
    );
    let core = Core::start(&platform).await;
    limited.wait_ready(START_TIMEOUT).await;
    let limited_api = platform.api(&limited);
    let source = core
        .register_source(&platform, "gateway", &endpoint.url)
        .await;
    let admin = platform.api(&core.source_api);
    let ingest = admin.with_token(Some(&source.token));
    let communication = platform.api(&core.communication);

    // Valid state: a second, disconnected channel and one ingested conversation.
    let closed = admin
        .call(
            "/sources.channels.create",
            json!({"source_id": "gateway", "source_channel_id": "+4930222"}),
        )
        .await
        .expect(201);
    admin
        .call(
            "/sources.channels.disconnect",
            json!({"channel_id": closed["id"]}),
        )
        .await
        .expect(204);
    ingest
        .call(
            "/sources.webhook",
            json!({"messages": [contact_message("+4917600001", "m1", 1_763_800_000_000)]}),
        )
        .await
        .expect(200);
    poll_answer(
        &communication,
        "the conversation",
        "/conversations.list",
        json!({}),
        |list| (list["data"].as_array()?.len() == 1).then_some(()),
    )
    .await;

    let before = settled_offsets(&platform).await;
    let mut cases = Cases::default();
    let unauthorized = expect(401, "unauthorized", &[]);
    let anonymous = admin.with_token(None);
    let message = |source_message_id: &str| {
        contact_message("+4917600002", source_message_id, 1_763_800_100_000)
    };

    // Ingest: the source's own token, checked before the body.
    let valid_batch = json!({"messages": [message("new-1")]});
    cases
        .post(
            &anonymous,
            "webhook without a token",
            "/sources.webhook",
            valid_batch.clone(),
            unauthorized,
        )
        .await;
    cases
        .post(
            &admin,
            "webhook with the system token",
            "/sources.webhook",
            valid_batch.clone(),
            unauthorized,
        )
        .await;
    cases
        .post(
            &admin.with_token(Some("src_not-a-token")),
            "webhook with an unknown source token",
            "/sources.webhook",
            valid_batch.clone(),
            unauthorized,
        )
        .await;
    cases
        .post_raw(
            &anonymous,
            "webhook without a token and a body that is not JSON",
            "/sources.webhook",
            b"{not json".to_vec(),
            &[],
            unauthorized,
        )
        .await;
    cases
        .post_raw(
            &limited_api.with_token(None),
            "webhook without a token and a body over the limit",
            "/sources.webhook",
            oversized("messages"),
            &[],
            unauthorized,
        )
        .await;

    // Ingest: a batch is checked whole; one bad item writes nothing, not even the good ones.
    let mut bad_time = message("new-2");
    bad_time["sent_at"] = json!("yesterday");
    cases
        .post(
            &ingest,
            "a batch whose second message has a bad sent_at",
            "/sources.webhook",
            json!({"messages": [message("new-1"), bad_time]}),
            invalid(&["messages[1].sent_at"]),
        )
        .await;
    let mut negative_time = message("new-2");
    negative_time["sent_at"] = json!(-5);
    cases
        .post(
            &ingest,
            "a message with a negative sent_at",
            "/sources.webhook",
            json!({"messages": [message("new-1"), negative_time]}),
            invalid(&["messages[1].sent_at"]),
        )
        .await;
    let mut unknown_channel = message("new-3");
    unknown_channel["source_channel_id"] = json!("+4930999");
    cases
        .post(
            &ingest,
            "a message in an unknown channel",
            "/sources.webhook",
            json!({"messages": [unknown_channel]}),
            invalid(&["messages[0].source_channel_id", "+4930999"]),
        )
        .await;
    let mut disconnected = message("new-4");
    disconnected["source_channel_id"] = json!("+4930222");
    cases
        .post(
            &ingest,
            "a message in a disconnected channel",
            "/sources.webhook",
            json!({"messages": [disconnected]}),
            invalid(&["messages[0].source_channel_id", "disconnected"]),
        )
        .await;
    let mut no_content = message("new-5");
    no_content["content"] = Value::Null;
    cases
        .post(
            &ingest,
            "a message with content null",
            "/sources.webhook",
            json!({"messages": [message("new-1"), no_content]}),
            invalid(&["messages[1].content"]),
        )
        .await;
    let mut empty_id = message("new-6");
    empty_id["source_message_id"] = json!("");
    cases
        .post(
            &ingest,
            "a message with an empty source_message_id",
            "/sources.webhook",
            json!({"messages": [empty_id]}),
            invalid(&["messages[0].source_message_id"]),
        )
        .await;
    let mut wrong_type = message("new-7");
    wrong_type["from_contact"] = json!("yes");
    cases
        .post(
            &ingest,
            "a message with from_contact \"yes\"",
            "/sources.webhook",
            json!({"messages": [message("new-1"), wrong_type]}),
            invalid(&["messages[1].from_contact"]),
        )
        .await;
    let mut missing = message("new-8");
    if let Some(fields) = missing.as_object_mut() {
        fields.remove("source_sender_id");
    }
    cases
        .post(
            &ingest,
            "a message without source_sender_id",
            "/sources.webhook",
            json!({"messages": [missing]}),
            invalid(&["source_sender_id"]),
        )
        .await;
    let mut extra = message("new-9");
    extra["colour"] = json!("red");
    cases
        .post(
            &ingest,
            "a message with an unknown field",
            "/sources.webhook",
            json!({"messages": [extra]}),
            invalid(&["colour"]),
        )
        .await;
    cases
        .post_raw(
            &ingest,
            "a webhook body that is not JSON",
            "/sources.webhook",
            b"{not json".to_vec(),
            &[],
            invalid(&["not valid JSON"]),
        )
        .await;
    let metadata_item = |namespace: &str| json!({"namespace": namespace, "source_channel_id": "+4930111", "source_id": "+4917600001", "metadata": {"topic": "billing"}});
    cases
        .post(
            &ingest,
            "metadata with namespace user",
            "/sources.webhook",
            json!({"messages": [message("new-1")], "metadata": [metadata_item("user")]}),
            invalid(&["metadata[0].namespace", "user"]),
        )
        .await;
    cases
        .post(&ingest, "message metadata without source_conversation_id", "/sources.webhook", json!({"metadata": [metadata_item("conversation"), {"namespace": "message", "source_channel_id": "+4930111", "source_id": "m1", "metadata": {"flag": true}}]}), invalid(&["metadata[1].source_conversation_id"]))
        .await;
    let mut not_an_object = metadata_item("conversation");
    not_an_object["metadata"] = json!([1, 2]);
    cases
        .post(
            &ingest,
            "metadata that is not an object",
            "/sources.webhook",
            json!({"metadata": [not_an_object]}),
            invalid(&["metadata[0].metadata"]),
        )
        .await;
    let mut metadata_unknown_channel = metadata_item("conversation");
    metadata_unknown_channel["source_channel_id"] = json!("+4930999");
    cases
        .post(
            &ingest,
            "metadata in an unknown channel",
            "/sources.webhook",
            json!({"metadata": [metadata_unknown_channel]}),
            invalid(&["metadata[0].source_channel_id"]),
        )
        .await;

    // Administration.
    cases
        .post(
            &admin,
            "create a source that exists",
            "/sources.create",
            json!({"source_id": "gateway"}),
            expect(409, "conflict", &["gateway"]),
        )
        .await;
    cases
        .post(
            &admin,
            "create a source with bad id characters",
            "/sources.create",
            json!({"source_id": "bad id/!"}),
            invalid(&["source_id"]),
        )
        .await;
    cases
        .post(
            &admin,
            "create a source with an empty id",
            "/sources.create",
            json!({"source_id": ""}),
            invalid(&["source_id"]),
        )
        .await;
    cases
        .post(
            &admin,
            "create a source with an id over 200 bytes",
            "/sources.create",
            json!({"source_id": "a".repeat(201)}),
            invalid(&["source_id"]),
        )
        .await;
    cases
        .post(
            &admin,
            "create a source with action_endpoint ftp://x",
            "/sources.create",
            json!({"source_id": "other", "action_endpoint": "ftp://x"}),
            invalid(&["action_endpoint"]),
        )
        .await;
    cases
        .post(
            &admin,
            "create a source with action_endpoint that is not a URL",
            "/sources.create",
            json!({"source_id": "other", "action_endpoint": "not a url"}),
            invalid(&["action_endpoint"]),
        )
        .await;
    cases
        .post(
            &admin,
            "create a source with image_url ftp://x",
            "/sources.create",
            json!({"source_id": "other", "image_url": "ftp://x"}),
            invalid(&["image_url"]),
        )
        .await;
    cases
        .post(
            &admin,
            "create a source without source_id",
            "/sources.create",
            json!({"name": "nameless"}),
            invalid(&["source_id"]),
        )
        .await;
    cases
        .post(
            &admin,
            "create a source with an unknown field",
            "/sources.create",
            json!({"source_id": "other", "token": "mine"}),
            invalid(&["token"]),
        )
        .await;
    cases
        .post(
            &admin,
            "create a channel of an unknown source",
            "/sources.channels.create",
            json!({"source_id": "no-such-source", "source_channel_id": "+4930333"}),
            expect(404, "not_found", &["no-such-source"]),
        )
        .await;
    cases
        .post(
            &admin,
            "create a channel with metadata 5",
            "/sources.channels.create",
            json!({"source_id": "gateway", "source_channel_id": "+4930333", "metadata": 5}),
            invalid(&["metadata"]),
        )
        .await;
    cases
        .post(
            &admin,
            "create a channel with an empty source_channel_id",
            "/sources.channels.create",
            json!({"source_id": "gateway", "source_channel_id": ""}),
            invalid(&["source_channel_id"]),
        )
        .await;
    cases
        .post(
            &admin,
            "list the channels of an unknown source",
            "/sources.channels.list",
            json!({"source_id": "no-such-source"}),
            expect(404, "not_found", &["no-such-source"]),
        )
        .await;
    cases
        .post(
            &admin,
            "disconnect an unknown channel",
            "/sources.channels.disconnect",
            json!({"channel_id": "no-such-channel"}),
            expect(404, "not_found", &["no-such-channel"]),
        )
        .await;
    cases
        .post(
            &admin,
            "delete an unknown source",
            "/sources.delete",
            json!({"source_id": "no-such-source"}),
            expect(404, "not_found", &["no-such-source"]),
        )
        .await;
    cases
        .post(
            &admin,
            "sources.list with an unknown field",
            "/sources.list",
            json!({"page_size": 5}),
            invalid(&["page_size"]),
        )
        .await;

    // Administration takes the system token, not a source token.
    for (path, body) in [
        ("/sources.create", json!({"source_id": "other"})),
        ("/sources.list", json!({})),
        ("/sources.delete", json!({"source_id": "gateway"})),
        (
            "/sources.channels.create",
            json!({"source_id": "gateway", "source_channel_id": "+4930333"}),
        ),
        ("/sources.channels.list", json!({"source_id": "gateway"})),
        (
            "/sources.channels.disconnect",
            json!({"channel_id": source.channel_id}),
        ),
    ] {
        cases
            .post(
                &ingest,
                &format!("{path} with a source token"),
                path,
                body.clone(),
                unauthorized,
            )
            .await;
        cases
            .post(
                &anonymous,
                &format!("{path} without a token"),
                path,
                body,
                unauthorized,
            )
            .await;
    }

    // The body limit (of the limited instance).
    cases
        .post_raw(
            &limited_api.with_token(Some(&source.token)),
            "a webhook body over the limit",
            "/sources.webhook",
            oversized("messages"),
            &[],
            expect(413, "payload_too_large", &[BODY_LIMIT_TEXT]),
        )
        .await;
    cases
        .post_raw(
            &limited_api.with_token(Some(&source.token)),
            "an admin body over the limit with a source token",
            "/sources.create",
            oversized("source_id"),
            &[],
            unauthorized,
        )
        .await;
    let answer = chunked(&limited, "/sources.create", BODY_LIMIT + 2048).await;
    cases.check(
        "a chunked admin body over the limit (no Content-Length)",
        "POST /sources.create, Transfer-Encoding: chunked, 6144 bytes",
        &answer,
        expect(413, "payload_too_large", &[BODY_LIMIT_TEXT]),
    );
    cases
        .post_raw(
            &limited_api,
            "an admin body over the limit",
            "/sources.create",
            oversized("source_id"),
            &[],
            expect(413, "payload_too_large", &[BODY_LIMIT_TEXT]),
        )
        .await;

    // Paths and methods outside the document (not recorded for the OpenAPI check).
    let answer = unrecorded(
        reqwest::Method::POST,
        &core.source_api,
        "/sources.update",
        "{}",
    )
    .await;
    cases.check(
        "an unknown path",
        "POST /sources.update {}",
        &answer,
        expect(404, "unknown_endpoint", &["/sources.update"]),
    );
    let answer = unrecorded(reqwest::Method::GET, &core.source_api, "/sources.list", "").await;
    cases.check(
        "GET on an endpoint",
        "GET /sources.list",
        &answer,
        expect(405, "method_not_allowed", &["GET"]),
    );

    cases
        .finish(&platform, &before, "eddy-source-api", "source-api")
        .await;
}
