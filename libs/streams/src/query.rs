//! Interactive queries: reading an application's stores from outside the processing thread,
//! and routing a query to the instance that owns the key.
//!
//! Every instance advertises its HTTP address and the partitions it owns in the compacted topic
//! `<application id>-membership` (keyed by instance id) and reads everyone's entries back, so
//! any instance can tell who owns a key: the partition is the Java-compatible murmur2 partition
//! of the serialized key, as for the input record that wrote it. [`forward`] sends a request on
//! to the owner; lists fan out to [`Queries::instances`] and merge.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use eddy_service::envelope::TRACEPARENT_HEADER;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::partitioner::partition_for_key;
use crate::serde::SerdeError;
use crate::store::PartitionStore;
use crate::topology::StoreDefinition;
use crate::{AppState, StreamsError};

/// Marks a request another instance already forwarded; it is never forwarded again.
pub const FORWARDED_HEADER: &str = "x-eddy-forwarded-by";

/// What an instance advertises in the membership topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    pub instance_id: String,
    /// `host:port` of the instance's query API.
    pub address: String,
    /// Partitions it processes now (empty while rebalancing).
    pub partitions: Vec<i32>,
    /// When this entry was written (milliseconds since the epoch); the newest claim wins.
    pub updated_at_ms: i64,
}

/// Who answers for a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOwner {
    /// This instance owns the key's partition.
    Local,
    /// Another instance does, at this address.
    Remote {
        instance_id: String,
        address: String,
    },
}

/// Why a query cannot be answered here and now.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The application is not RUNNING (restoring, rebalancing, stopping): ask again shortly.
    #[error("the {store} store is not queryable while the application is {state:?}")]
    NotReady { store: String, state: AppState },
    /// No instance claims the key's partition right now (a rebalance is under way).
    #[error("no instance owns partition {partition} of {store} right now")]
    NoOwner { store: String, partition: i32 },
    /// The key's partition is owned by another instance.
    #[error("partition {partition} of {store} is owned by another instance")]
    NotLocal { store: String, partition: i32 },
    #[error("store read failed")]
    Store(#[from] StreamsError),
    #[error("store value: {0}")]
    Serde(#[from] SerdeError),
}

impl IntoResponse for QueryError {
    /// 503 with `Retry-After` for states that pass (restoring, rebalancing, moved partitions),
    /// 500 for a failed read.
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            QueryError::NotReady {
                state: AppState::Restoring,
                ..
            } => (StatusCode::SERVICE_UNAVAILABLE, "restoring"),
            QueryError::NotReady { .. } => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
            QueryError::NoOwner { .. } | QueryError::NotLocal { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "rebalancing")
            }
            QueryError::Store(_) | QueryError::Serde(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "store_error")
            }
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %self, "query failed");
        }
        let body = serde_json::json!({ "message": self.to_string(), "code": code });
        let mut response = (status, axum::Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// Serialized keys `from <= key < to` (`to = None`: to the end) and the walk's direction.
#[derive(Debug, Clone, Copy)]
pub struct KeyRange<'a> {
    pub from: &'a [u8],
    pub to: Option<&'a [u8]>,
    pub order: ScanOrder,
}

/// A walk over serialized keys `from <= key < to` in one direction (see [`scan`]).
#[derive(Debug, Clone)]
pub struct KeyWalk {
    pub from: Vec<u8>,
    pub to: Option<Vec<u8>>,
    pub order: ScanOrder,
}

/// The most entries [`scan`] reads at a time.
const SCAN_CHUNK: usize = 256;

/// Walks partition `partition` of `store` along `walk`, keeping the entries `keep` accepts,
/// until `limit` are kept or the range ends. Reads in chunks, so a selective filter does not
/// load the whole range and a small page does not read more than it needs: the first chunk
/// is what the page still needs (plus one, to tell whether the range goes on), each further
/// one twice the last, up to [`SCAN_CHUNK`].
pub fn scan<V: 'static>(
    queries: &Queries,
    store: &StoreDefinition<String, V>,
    partition: i32,
    walk: KeyWalk,
    limit: usize,
    mut keep: impl FnMut(&str, &V) -> bool,
) -> Result<Vec<(String, V)>, QueryError> {
    let KeyWalk {
        mut from,
        mut to,
        order,
    } = walk;
    let mut kept = Vec::new();
    let mut chunk = limit.saturating_add(1).min(SCAN_CHUNK);
    while kept.len() < limit && to.as_ref().is_none_or(|to| from < *to) {
        let entries = queries.range_in_partition(
            store,
            partition,
            KeyRange {
                from: &from,
                to: to.as_deref(),
                order,
            },
            chunk,
        )?;
        let exhausted = entries.len() < chunk;
        chunk = chunk.saturating_mul(2).min(SCAN_CHUNK);
        let Some(last_key) = entries.last().map(|(key, _)| key.clone()) else {
            break;
        };
        for (key, value) in entries {
            if keep(&key, &value) {
                kept.push((key, value));
                if kept.len() >= limit {
                    return Ok(kept);
                }
            }
        }
        if exhausted {
            break;
        }
        match order {
            ScanOrder::Ascending => from = just_after(&last_key),
            ScanOrder::Descending => to = Some(last_key.into_bytes()),
        }
    }
    Ok(kept)
}

/// The smallest key after every key starting with `prefix` (text keys: the last byte is never
/// 0xff).
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

/// The smallest key after `key`.
pub fn just_after(key: &str) -> Vec<u8> {
    let mut after = key.as_bytes().to_vec();
    after.push(0);
    after
}

/// Which way a range is walked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanOrder {
    Ascending,
    Descending,
}

/// The stores open on this instance, by store name and partition.
pub(crate) type OpenStores = Arc<RwLock<HashMap<(String, i32), Arc<PartitionStore>>>>;
/// Everyone's advertised membership, by instance id.
pub(crate) type Members = Arc<RwLock<BTreeMap<String, InstanceInfo>>>;

/// A cloneable handle for query handlers (HTTP threads) onto a running application.
#[derive(Debug, Clone)]
pub struct Queries {
    pub(crate) instance_id: String,
    pub(crate) partitions: i32,
    pub(crate) stores: OpenStores,
    pub(crate) members: Members,
    pub(crate) state: watch::Receiver<AppState>,
}

impl Queries {
    /// This instance's id in the membership topic.
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// Every instance currently advertised (including this one).
    pub fn instances(&self) -> Vec<InstanceInfo> {
        read(&self.members).values().cloned().collect()
    }

    /// The query address this instance advertises, once its membership entry is known.
    pub fn own_address(&self) -> Option<String> {
        read(&self.members)
            .get(&self.instance_id)
            .map(|member| member.address.clone())
    }

    /// The partition `key` lives on.
    pub fn partition_of<K: 'static, V: 'static>(
        &self,
        store: &StoreDefinition<K, V>,
        key: &K,
    ) -> Result<i32, QueryError> {
        Ok(partition_for_key(&store.encode_key(key)?, self.partitions))
    }

    /// The partition of a record keyed (or partitioned) by `key_bytes`, as the Java-compatible
    /// producer places it.
    pub fn partition_for_bytes(&self, key_bytes: &[u8]) -> i32 {
        partition_for_key(key_bytes, self.partitions)
    }

    /// How many partitions the application's inputs have.
    pub fn partition_count(&self) -> i32 {
        self.partitions
    }

    /// Who answers for `key` of `store`.
    pub fn owner_of<K: 'static, V: 'static>(
        &self,
        store: &StoreDefinition<K, V>,
        key: &K,
    ) -> Result<KeyOwner, QueryError> {
        let partition = self.partition_of(store, key)?;
        self.owner_of_partition(store.name(), partition)
    }

    /// Who answers for `partition` of the store named `store`: for stores whose keys are not
    /// the partitioning key (a conversation's messages are keyed by conversation, time and id,
    /// and live on the conversation's partition).
    pub fn owner_of_partition(&self, store: &str, partition: i32) -> Result<KeyOwner, QueryError> {
        if read(&self.stores).contains_key(&(store.to_owned(), partition)) {
            return Ok(KeyOwner::Local);
        }
        read(&self.members)
            .values()
            .filter(|member| member.partitions.contains(&partition))
            .max_by_key(|member| member.updated_at_ms)
            .filter(|member| member.instance_id != self.instance_id)
            .map(|member| KeyOwner::Remote {
                instance_id: member.instance_id.clone(),
                address: member.address.clone(),
            })
            .ok_or_else(|| QueryError::NoOwner {
                store: store.to_owned(),
                partition,
            })
    }

    /// The partitions of `store` open on this instance, in order.
    pub fn local_partition_numbers<K: 'static, V: 'static>(
        &self,
        store: &StoreDefinition<K, V>,
    ) -> Vec<i32> {
        let mut partitions: Vec<i32> = read(&self.stores)
            .keys()
            .filter(|(name, _)| name == store.name())
            .map(|(_, partition)| *partition)
            .collect();
        partitions.sort_unstable();
        partitions
    }

    /// The value of `key` in partition `partition` of this instance's copy of `store`.
    pub fn get_in_partition<K: 'static, V: 'static>(
        &self,
        store: &StoreDefinition<K, V>,
        partition: i32,
        key: &K,
    ) -> Result<Option<V>, QueryError> {
        self.require_running(store.name())?;
        let local = self.partition_store(store.name(), partition)?;
        match local.get(&store.encode_key(key)?)? {
            Some(bytes) => Ok(Some(store.decode_value(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Entries with `from <= serialized key < to` in partition `partition` of this instance's
    /// copy of `store`, ascending or descending, at most `limit`.
    pub fn range_in_partition<K: 'static, V: 'static>(
        &self,
        store: &StoreDefinition<K, V>,
        partition: i32,
        range: KeyRange<'_>,
        limit: usize,
    ) -> Result<Vec<(K, V)>, QueryError> {
        self.require_running(store.name())?;
        let local = self.partition_store(store.name(), partition)?;
        let entries = match range.order {
            ScanOrder::Ascending => local.range(range.from, range.to, limit)?,
            ScanOrder::Descending => local.range_reverse(range.from, range.to, limit)?,
        };
        entries
            .into_iter()
            .map(|(key, value)| Ok((store.decode_key(&key)?, store.decode_value(&value)?)))
            .collect()
    }

    fn partition_store(
        &self,
        store: &str,
        partition: i32,
    ) -> Result<Arc<PartitionStore>, QueryError> {
        read(&self.stores)
            .get(&(store.to_owned(), partition))
            .cloned()
            .ok_or_else(|| QueryError::NotLocal {
                store: store.to_owned(),
                partition,
            })
    }

    /// The value of `key` in this instance's copy of `store`.
    pub fn get<K: 'static, V: 'static>(
        &self,
        store: &StoreDefinition<K, V>,
        key: &K,
    ) -> Result<Option<V>, QueryError> {
        self.require_running(store.name())?;
        let partition = self.partition_of(store, key)?;
        let local = read(&self.stores)
            .get(&(store.name().to_owned(), partition))
            .cloned()
            .ok_or_else(|| QueryError::NotLocal {
                store: store.name().to_owned(),
                partition,
            })?;
        match local.get(&store.encode_key(key)?)? {
            Some(bytes) => Ok(Some(store.decode_value(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Entries whose serialized key starts with `prefix`, from every partition this instance
    /// owns, at most `limit` per partition, in key order within a partition.
    pub fn local_prefix<K: 'static, V: 'static>(
        &self,
        store: &StoreDefinition<K, V>,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<(K, V)>, QueryError> {
        self.require_running(store.name())?;
        let mut entries = Vec::new();
        for partition_store in self.local_partitions(store.name()) {
            for (key, value) in partition_store.prefix(prefix, limit)? {
                entries.push((store.decode_key(&key)?, store.decode_value(&value)?));
            }
        }
        Ok(entries)
    }

    /// Entries with `from <= serialized key < to` from every partition this instance owns.
    pub fn local_range<K: 'static, V: 'static>(
        &self,
        store: &StoreDefinition<K, V>,
        from: &[u8],
        to: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(K, V)>, QueryError> {
        self.require_running(store.name())?;
        let mut entries = Vec::new();
        for partition_store in self.local_partitions(store.name()) {
            for (key, value) in partition_store.range(from, to, limit)? {
                entries.push((store.decode_key(&key)?, store.decode_value(&value)?));
            }
        }
        Ok(entries)
    }

    /// Ok while the application is RUNNING (every partition it owns is open and restored):
    /// answer from local state only then. Before, a handler that walks the local partitions
    /// would see none and answer an empty list instead of "not ready".
    pub fn ensure_running(&self) -> Result<(), QueryError> {
        self.require_running("every")
    }

    /// True if this request was forwarded by another instance (answer from local state only).
    pub fn is_forwarded(headers: &axum::http::HeaderMap) -> bool {
        headers.contains_key(FORWARDED_HEADER)
    }

    /// Every instance's address, checking that together they own all partitions (otherwise a
    /// rebalance is under way and a merged list would miss data).
    pub fn fan_out_targets(&self) -> Result<Vec<String>, QueryError> {
        let members = read(&self.members);
        for partition in 0..self.partitions {
            if !members
                .values()
                .any(|member| member.partitions.contains(&partition))
            {
                return Err(QueryError::NoOwner {
                    store: "every".to_owned(),
                    partition,
                });
            }
        }
        let mut addresses: Vec<String> = members
            .values()
            .filter(|member| !member.partitions.is_empty())
            .map(|member| member.address.clone())
            .collect();
        addresses.sort();
        addresses.dedup();
        Ok(addresses)
    }

    fn local_partitions(&self, store: &str) -> Vec<Arc<PartitionStore>> {
        read(&self.stores)
            .iter()
            .filter(|((name, _), _)| name == store)
            .map(|(_, partition_store)| Arc::clone(partition_store))
            .collect()
    }

    fn require_running(&self, store: &str) -> Result<(), QueryError> {
        let state = *self.state.borrow();
        if state == AppState::Running {
            Ok(())
        } else {
            Err(QueryError::NotReady {
                store: store.to_owned(),
                state,
            })
        }
    }
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

/// Asks every instance for its local part of a list: `GET http://<address><path>` marked as
/// forwarded, so each answers from its own partitions. Returns the JSON bodies, one per
/// instance, for the caller to merge; fails (503) if a rebalance leaves partitions unowned or an
/// instance does not answer, because a partial list would be wrong.
pub async fn fan_out(
    client: &reqwest::Client,
    queries: &Queries,
    path: &str,
) -> Result<Vec<serde_json::Value>, Response> {
    let targets = queries
        .fan_out_targets()
        .map_err(IntoResponse::into_response)?;
    let mut answers = Vec::with_capacity(targets.len());
    for address in targets {
        let answer = client
            .get(format!("http://{address}{path}"))
            .header(FORWARDED_HEADER, queries.instance_id())
            .send()
            .await
            .and_then(reqwest::Response::error_for_status);
        let body = match answer {
            Ok(answer) => answer.json::<serde_json::Value>().await.ok(),
            Err(_) => None,
        };
        let Some(body) = body else {
            return Err(owner_unavailable(&address));
        };
        answers.push(body);
    }
    Ok(answers)
}

/// Like [`fan_out`] for POST APIs: sends `body` (JSON) to `path` on every instance, marked as
/// forwarded, and returns each instance's JSON answer. Any answer other than 2xx is returned
/// as the response (an instance restoring answers 503, and so does the whole list).
///
/// `pass_on` are headers of the original request to send along (`Authorization`,
/// `traceparent`): the instances check them as if the caller asked them directly.
pub async fn fan_out_post(
    client: &reqwest::Client,
    queries: &Queries,
    path: &str,
    body: &serde_json::Value,
    pass_on: &axum::http::HeaderMap,
) -> Result<Vec<serde_json::Value>, Response> {
    let targets = queries
        .fan_out_targets()
        .map_err(IntoResponse::into_response)?;
    post_to_each(client, queries, &targets, path, body, pass_on).await
}

/// [`fan_out_post`] with this instance's part answered in-process by `local` (what its own
/// endpoint at `path` would answer), so the instance asked does not send the request to
/// itself over HTTP, and no answer of its own is serialized and parsed again. `local` runs
/// while the other instances' requests are under way; their answers are decoded into `T`.
pub async fn fan_out_post_with_local<T, E>(
    client: &reqwest::Client,
    queries: &Queries,
    path: &str,
    body: &serde_json::Value,
    pass_on: &axum::http::HeaderMap,
    local: impl FnOnce() -> Result<T, E>,
) -> Result<Vec<T>, Response>
where
    T: serde::de::DeserializeOwned,
    E: IntoResponse,
{
    let targets = queries
        .fan_out_targets()
        .map_err(IntoResponse::into_response)?;
    let own_address = queries.own_address();
    let others: Vec<String> = targets
        .iter()
        .filter(|address| Some(*address) != own_address.as_ref())
        .cloned()
        .collect();
    let answers_own_part = others.len() < targets.len();
    // join! polls the requests first (sending them), then computes the own part meanwhile.
    let (remote, own) = tokio::join!(
        post_to_each(client, queries, &others, path, body, pass_on),
        async { answers_own_part.then(local).transpose() },
    );
    let mut answers: Vec<T> = own
        .map_err(IntoResponse::into_response)?
        .into_iter()
        .collect();
    for (address, answer) in others.iter().zip(remote?) {
        answers.push(serde_json::from_value(answer).map_err(|_| owner_unavailable(address))?);
    }
    Ok(answers)
}

async fn post_to_each(
    client: &reqwest::Client,
    queries: &Queries,
    targets: &[String],
    path: &str,
    body: &serde_json::Value,
    pass_on: &axum::http::HeaderMap,
) -> Result<Vec<serde_json::Value>, Response> {
    let requests = targets.iter().map(|address| {
        let mut request = client
            .post(format!("http://{address}{path}"))
            .header(FORWARDED_HEADER, queries.instance_id())
            .json(body);
        for name in [header::AUTHORIZATION.as_str(), TRACEPARENT_HEADER] {
            if let Some(value) = pass_on.get(name) {
                request = request.header(name, value);
            }
        }
        request.send()
    });
    let answers = futures::future::join_all(requests).await;
    let mut bodies = Vec::with_capacity(answers.len());
    for (address, answer) in targets.iter().zip(answers) {
        match answer {
            Ok(answer) if answer.status().is_success() => match answer.json().await {
                Ok(body) => bodies.push(body),
                Err(_) => return Err(owner_unavailable(address)),
            },
            Ok(answer) => return Err(relay(answer).await),
            Err(_) => return Err(owner_unavailable(address)),
        }
    }
    Ok(bodies)
}

/// Sends a request whose body is already read on to the instance at `address`: the same
/// method, path, headers and body, marked as forwarded. A request that was already forwarded
/// once is not forwarded again (ownership is moving): it gets a 503 with `Retry-After`.
pub async fn forward_bytes(
    client: &reqwest::Client,
    from_instance: &str,
    address: &str,
    parts: &axum::http::request::Parts,
    body: axum::body::Bytes,
) -> Response {
    if parts.headers.contains_key(FORWARDED_HEADER) {
        return QueryError::NoOwner {
            store: "the requested".to_owned(),
            partition: -1,
        }
        .into_response();
    }
    let path = parts
        .uri
        .path_and_query()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_else(|| "/".to_owned());
    let mut outgoing = client
        .request(parts.method.clone(), format!("http://{address}{path}"))
        .header(FORWARDED_HEADER, from_instance)
        .body(body);
    for (name, value) in &parts.headers {
        if name != header::HOST && name != header::CONTENT_LENGTH {
            outgoing = outgoing.header(name, value);
        }
    }
    match outgoing.send().await {
        Ok(answer) => relay(answer).await,
        Err(error) => {
            tracing::warn!(error = %error, address, "forwarding a query failed");
            owner_unavailable(address)
        }
    }
}

/// Another server's answer as this server's response: status, headers (but the hop-by-hop
/// framing ones) and body.
pub async fn relay(answer: reqwest::Response) -> Response {
    let status = answer.status();
    let headers = answer.headers().clone();
    let bytes = answer.bytes().await.unwrap_or_default();
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    for (name, value) in &headers {
        if name != header::TRANSFER_ENCODING && name != header::CONTENT_LENGTH {
            response.headers_mut().insert(name, value.clone());
        }
    }
    response
}

fn owner_unavailable(address: &str) -> Response {
    let mut response = (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(serde_json::json!({
            "message": format!("the instance at {address} did not answer"),
            "code": "owner_unavailable",
        })),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// Sends `request` on to the instance at `address` and returns its answer. A request that was
/// already forwarded once is not forwarded again (ownership is moving): it gets a 503 with
/// `Retry-After`.
pub async fn forward(
    client: &reqwest::Client,
    from_instance: &str,
    address: &str,
    request: axum::extract::Request,
) -> Response {
    if request.headers().contains_key(FORWARDED_HEADER) {
        return QueryError::NoOwner {
            store: "the requested".to_owned(),
            partition: -1,
        }
        .into_response();
    }
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 16 * 1024 * 1024).await else {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large to forward",
        )
            .into_response();
    };
    forward_bytes(client, from_instance, address, &parts, body).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restoring_answers_503_with_retry_after_never_500() {
        let response = QueryError::NotReady {
            store: "counts".to_owned(),
            state: AppState::Restoring,
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response.headers().get(header::RETRY_AFTER),
            Some(&HeaderValue::from_static("1"))
        );
        for error in [
            QueryError::NotReady {
                store: "counts".to_owned(),
                state: AppState::Rebalancing,
            },
            QueryError::NoOwner {
                store: "counts".to_owned(),
                partition: 2,
            },
            QueryError::NotLocal {
                store: "counts".to_owned(),
                partition: 2,
            },
        ] {
            let response = error.into_response();
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert!(response.headers().contains_key(header::RETRY_AFTER));
        }
    }
}
