//! A small DSL over the processor API for the common cases: map / filter / flat-map, tables
//! materialized from compacted topics, group-by-key aggregation, stream-table and table-table
//! joins, and tombstones (a `None` value) deleting.
//!
//! ```text
//! let mut builder = StreamsBuilder::new("enrichment-v1");
//! let customers = builder.table("customers", StringSerde, JsonSerde::<Customer>::new(), "customers");
//! builder
//!     .stream("orders", StringSerde, JsonSerde::<Order>::new())
//!     .filter(|_, order| order.amount > 0)
//!     .join_table(&customers, |order, customer| Enriched::new(order, customer))
//!     .to(&builder.output("orders-enriched", StringSerde, JsonSerde::new()));
//! let topology = builder.build();
//! ```
//!
//! All inputs are co-partitioned, so joins and aggregations are local to a task. Operations
//! that change the key (`map`, `flat_map`) produce a re-keyed stream, which cannot be joined or
//! grouped: that would need a repartition topic, which eddy-streams does not provide yet.
//! Building such a topology panics with that message.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use crate::processor::{Processor, ProcessorContext, ProcessorError};
use crate::serde::Serde;
use crate::topology::{InputRecord, OutputTopic, StoreDefinition, Topology};

type Downstream<K, V> = Arc<
    dyn Fn(&mut ProcessorContext<'_>, &K, Option<&V>) -> Result<(), ProcessorError> + Send + Sync,
>;
type Source = Arc<
    dyn Fn(&mut ProcessorContext<'_>, &InputRecord<'_>) -> Result<(), ProcessorError> + Send + Sync,
>;

/// A node's consumers; the graph is complete before processing starts and only read after.
struct Node<K, V> {
    downstream: RwLock<Vec<Downstream<K, V>>>,
}

impl<K, V> Node<K, V> {
    fn new() -> Arc<Self> {
        Arc::new(Node {
            downstream: RwLock::new(Vec::new()),
        })
    }

    fn add(&self, consumer: Downstream<K, V>) {
        self.downstream
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(consumer);
    }

    fn forward(
        &self,
        context: &mut ProcessorContext<'_>,
        key: &K,
        value: Option<&V>,
    ) -> Result<(), ProcessorError> {
        let downstream = self
            .downstream
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        for consumer in downstream.iter() {
            consumer(context, key, value)?;
        }
        Ok(())
    }
}

/// Builds a topology from streams and tables.
pub struct StreamsBuilder {
    topology: Topology,
    sources: Arc<Mutex<HashMap<String, Vec<Source>>>>,
}

impl std::fmt::Debug for StreamsBuilder {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("StreamsBuilder")
            .field("topology", &self.topology)
            .finish_non_exhaustive()
    }
}

impl StreamsBuilder {
    pub fn new(application_id: impl Into<String>) -> Self {
        StreamsBuilder {
            topology: Topology::new(application_id),
            sources: Arc::default(),
        }
    }

    /// A stream of the records of `topic`; undecodable records go to the dead-letter topic.
    pub fn stream<K, V>(
        &mut self,
        topic: impl Into<String>,
        key_serde: impl Serde<K>,
        value_serde: impl Serde<V>,
    ) -> KStream<K, V>
    where
        K: Send + Sync + 'static,
        V: Send + Sync + 'static,
    {
        let input = self.topology.input(topic, key_serde, value_serde);
        let topic = input.name().to_owned();
        let node = Node::new();
        let source_node = Arc::clone(&node);
        let source: Source = Arc::new(move |context, record| {
            let (key, value) = input.decode(record)?;
            source_node.forward(context, &key, value.as_ref())
        });
        self.sources
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(topic)
            .or_default()
            .push(source);
        KStream {
            node,
            rekeyed: false,
        }
    }

    /// A table materialized from the compacted `topic` into store `store_name`: the latest value
    /// per key, a tombstone deleting it. Its change stream carries every update.
    pub fn table<K, V>(
        &mut self,
        topic: impl Into<String>,
        key_serde: impl Serde<K> + Clone,
        value_serde: impl Serde<V> + Clone,
        store_name: &str,
    ) -> KTable<K, V>
    where
        K: Send + Sync + 'static,
        V: Send + Sync + 'static,
    {
        let store = self
            .topology
            .store(store_name, key_serde.clone(), value_serde.clone());
        let stream = self.stream(topic, key_serde, value_serde);
        let node = Node::new();
        let table_node = Arc::clone(&node);
        let table_store = store.clone();
        stream.node.add(Arc::new(move |context, key, value| {
            match value {
                Some(value) => context.put(&table_store, key, value)?,
                None => context.delete(&table_store, key)?,
            }
            table_node.forward(context, key, value)
        }));
        KTable { node, store }
    }

    /// A typed output topic to send results to.
    pub fn output<K: 'static, V: 'static>(
        &self,
        topic: impl Into<String>,
        key_serde: impl Serde<K>,
        value_serde: impl Serde<V>,
    ) -> OutputTopic<K, V> {
        self.topology.output(topic, key_serde, value_serde)
    }

    /// Declares a store for an aggregation or join result.
    pub fn store<K: 'static, V: 'static>(
        &mut self,
        name: &str,
        key_serde: impl Serde<K>,
        value_serde: impl Serde<V>,
    ) -> StoreDefinition<K, V> {
        self.topology.store(name, key_serde, value_serde)
    }

    /// The finished topology.
    pub fn build(mut self) -> Topology {
        let sources = Arc::new(std::mem::take(
            &mut *self.sources.lock().unwrap_or_else(PoisonError::into_inner),
        ));
        self.topology.processor(move |_partition| GraphProcessor {
            sources: Arc::clone(&sources),
        });
        self.topology
    }
}

/// Runs a record through the graph from its topic's source.
struct GraphProcessor {
    sources: Arc<HashMap<String, Vec<Source>>>,
}

impl Processor for GraphProcessor {
    fn process(
        &mut self,
        record: &InputRecord<'_>,
        context: &mut ProcessorContext<'_>,
    ) -> Result<(), ProcessorError> {
        for source in self.sources.get(record.topic).into_iter().flatten() {
            source(context, record)?;
        }
        Ok(())
    }
}

/// A stream of keyed records; `None` values are tombstones.
pub struct KStream<K, V> {
    node: Arc<Node<K, V>>,
    /// The key may differ from the input partition's key.
    rekeyed: bool,
}

impl<K: Send + Sync + 'static, V: Send + Sync + 'static> KStream<K, V> {
    fn child<K2: Send + Sync + 'static, V2: Send + Sync + 'static>(
        &self,
        rekeyed: bool,
    ) -> (KStream<K2, V2>, Arc<Node<K2, V2>>) {
        let node = Node::new();
        (
            KStream {
                node: Arc::clone(&node),
                rekeyed: self.rekeyed || rekeyed,
            },
            node,
        )
    }

    /// Keeps the records for which `predicate` holds (tombstones are kept).
    pub fn filter<F>(&self, predicate: F) -> KStream<K, V>
    where
        F: Fn(&K, &V) -> bool + Send + Sync + 'static,
    {
        let (stream, node) = self.child(false);
        self.node
            .add(Arc::new(move |context, key, value| match value {
                Some(present) if !predicate(key, present) => Ok(()),
                _ => node.forward(context, key, value),
            }));
        stream
    }

    /// Transforms each value (tombstones stay tombstones).
    pub fn map_values<V2, F>(&self, mapper: F) -> KStream<K, V2>
    where
        V2: Send + Sync + 'static,
        F: Fn(&K, &V) -> V2 + Send + Sync + 'static,
    {
        let (stream, node) = self.child(false);
        self.node.add(Arc::new(move |context, key, value| {
            let mapped = value.map(|value| mapper(key, value));
            node.forward(context, key, mapped.as_ref())
        }));
        stream
    }

    /// Transforms each record into a new key and value (tombstones are dropped). The result is
    /// re-keyed: it can be sent to a topic but not joined or grouped.
    pub fn map<K2, V2, F>(&self, mapper: F) -> KStream<K2, V2>
    where
        K2: Send + Sync + 'static,
        V2: Send + Sync + 'static,
        F: Fn(&K, &V) -> (K2, V2) + Send + Sync + 'static,
    {
        let (stream, node) = self.child(true);
        self.node
            .add(Arc::new(move |context, key, value| match value {
                Some(value) => {
                    let (new_key, new_value) = mapper(key, value);
                    node.forward(context, &new_key, Some(&new_value))
                }
                None => Ok(()),
            }));
        stream
    }

    /// Turns each record into zero or more records (tombstones are dropped); re-keyed like
    /// [`KStream::map`].
    pub fn flat_map<K2, V2, F>(&self, mapper: F) -> KStream<K2, V2>
    where
        K2: Send + Sync + 'static,
        V2: Send + Sync + 'static,
        F: Fn(&K, &V) -> Vec<(K2, V2)> + Send + Sync + 'static,
    {
        let (stream, node) = self.child(true);
        self.node.add(Arc::new(move |context, key, value| {
            if let Some(value) = value {
                for (new_key, new_value) in mapper(key, value) {
                    node.forward(context, &new_key, Some(&new_value))?;
                }
            }
            Ok(())
        }));
        stream
    }

    /// Sends every record (tombstones included) to `output`.
    pub fn to(&self, output: &OutputTopic<K, V>) {
        let output = output.clone();
        self.node.add(Arc::new(move |context, key, value| {
            context.emit(&output, key, value)
        }));
    }

    /// Inner stream-table join: each stream record whose key is in the table is combined with
    /// the table's current value. Tombstones are dropped.
    pub fn join_table<T, R, F>(&self, table: &KTable<K, T>, joiner: F) -> KStream<K, R>
    where
        T: Send + Sync + 'static,
        R: Send + Sync + 'static,
        F: Fn(&V, &T) -> R + Send + Sync + 'static,
    {
        self.left_join_table(table, move |value, found| {
            found.map(|found| joiner(value, found))
        })
        .filter_present()
    }

    /// Left stream-table join: `joiner` gets the table's value if the key is there.
    pub fn left_join_table<T, R, F>(&self, table: &KTable<K, T>, joiner: F) -> KStream<K, Option<R>>
    where
        T: Send + Sync + 'static,
        R: Send + Sync + 'static,
        F: Fn(&V, Option<&T>) -> Option<R> + Send + Sync + 'static,
    {
        self.require_original_key("join");
        let (stream, node) = self.child(false);
        let store = table.store.clone();
        self.node.add(Arc::new(move |context, key, value| {
            let Some(value) = value else { return Ok(()) };
            let found = context.get(&store, key)?;
            let joined = joiner(value, found.as_ref());
            node.forward(context, key, Some(&joined))
        }));
        stream
    }

    /// Groups by the record key, for [`KGroupedStream::aggregate`].
    pub fn group_by_key(&self) -> KGroupedStream<K, V> {
        self.require_original_key("group");
        KGroupedStream {
            node: Arc::clone(&self.node),
        }
    }

    fn require_original_key(&self, operation: &str) {
        assert!(
            !self.rekeyed,
            "cannot {operation} a re-keyed stream: that needs a repartition topic, which \
             eddy-streams does not provide yet; keep the input key up to this point"
        );
    }
}

impl<K: Send + Sync + 'static, R: Send + Sync + 'static> KStream<K, Option<R>> {
    fn filter_present(&self) -> KStream<K, R> {
        let (stream, node) = self.child(false);
        self.node
            .add(Arc::new(move |context, key, value| match value {
                Some(Some(value)) => node.forward(context, key, Some(value)),
                _ => Ok(()),
            }));
        stream
    }
}

impl<K, V> std::fmt::Debug for KStream<K, V> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("KStream")
            .field("rekeyed", &self.rekeyed)
            .finish_non_exhaustive()
    }
}

/// A stream grouped by its key.
pub struct KGroupedStream<K, V> {
    node: Arc<Node<K, V>>,
}

impl<K: Send + Sync + 'static, V: Send + Sync + 'static> KGroupedStream<K, V> {
    /// Folds the values of each key into `store` (tombstones are ignored); the result is a
    /// table whose changes carry each new aggregate.
    pub fn aggregate<A, I, F>(
        &self,
        store: &StoreDefinition<K, A>,
        initializer: I,
        aggregator: F,
    ) -> KTable<K, A>
    where
        A: Send + Sync + 'static,
        I: Fn() -> A + Send + Sync + 'static,
        F: Fn(&K, &V, A) -> A + Send + Sync + 'static,
    {
        let node = Node::new();
        let table_node = Arc::clone(&node);
        let aggregate_store = store.clone();
        self.node.add(Arc::new(move |context, key, value| {
            let Some(value) = value else { return Ok(()) };
            let current = context
                .get(&aggregate_store, key)?
                .unwrap_or_else(&initializer);
            let updated = aggregator(key, value, current);
            context.put(&aggregate_store, key, &updated)?;
            table_node.forward(context, key, Some(&updated))
        }));
        KTable {
            node,
            store: store.clone(),
        }
    }

    /// Counts the records of each key.
    pub fn count(&self, store: &StoreDefinition<K, u64>) -> KTable<K, u64> {
        self.aggregate(store, || 0, |_, _, count| count + 1)
    }
}

impl<K, V> std::fmt::Debug for KGroupedStream<K, V> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("KGroupedStream")
            .finish_non_exhaustive()
    }
}

/// A table: the latest value per key, kept in a store; its changes flow downstream.
pub struct KTable<K, V> {
    node: Arc<Node<K, V>>,
    store: StoreDefinition<K, V>,
}

impl<K: Send + Sync + 'static, V: Send + Sync + 'static> KTable<K, V> {
    /// The store holding the table (for interactive queries).
    pub fn store(&self) -> &StoreDefinition<K, V> {
        &self.store
    }

    /// The stream of the table's changes (`None` when a key is deleted).
    pub fn to_stream(&self) -> KStream<K, V> {
        let node = Node::new();
        let stream_node = Arc::clone(&node);
        self.node.add(Arc::new(move |context, key, value| {
            stream_node.forward(context, key, value)
        }));
        KStream {
            node,
            rekeyed: false,
        }
    }

    /// Inner table-table join into `result`: the key's joined value while both sides have one,
    /// deleted (a tombstone downstream) when either side is deleted.
    pub fn join<W, R, F>(
        &self,
        other: &KTable<K, W>,
        result: &StoreDefinition<K, R>,
        joiner: F,
    ) -> KTable<K, R>
    where
        W: Send + Sync + 'static,
        R: Send + Sync + 'static,
        F: Fn(&V, &W) -> R + Send + Sync + 'static,
    {
        let node: Arc<Node<K, R>> = Node::new();
        let joiner = Arc::new(joiner);
        // A change on either side recomputes the key from both stores.
        let recompute = {
            let left = self.store.clone();
            let right = other.store.clone();
            let result = result.clone();
            let node = Arc::clone(&node);
            Arc::new(
                move |context: &mut ProcessorContext<'_>, key: &K| -> Result<(), ProcessorError> {
                    let joined = match (context.get(&left, key)?, context.get(&right, key)?) {
                        (Some(left), Some(right)) => Some(joiner(&left, &right)),
                        _ => None,
                    };
                    match &joined {
                        Some(joined) => context.put(&result, key, joined)?,
                        None => {
                            if context.get(&result, key)?.is_none() {
                                return Ok(());
                            }
                            context.delete(&result, key)?;
                        }
                    }
                    node.forward(context, key, joined.as_ref())
                },
            )
        };
        let on_left = Arc::clone(&recompute);
        self.node
            .add(Arc::new(move |context, key, _| on_left(context, key)));
        other
            .node
            .add(Arc::new(move |context, key, _| recompute(context, key)));
        KTable {
            node,
            store: result.clone(),
        }
    }
}

impl<K, V> std::fmt::Debug for KTable<K, V> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("KTable")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}
