package dev.eddy.bench.kafkastreams;

import java.util.Set;
import java.util.concurrent.atomic.LongAdder;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.ProcessorSupplier;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.StoreBuilder;
import org.apache.kafka.streams.state.Stores;

/**
 * Folds each message into its conversation in the `conversations` store (persistent RocksDB,
 * changelogged). Input is already partitioned by conversation id, so the store is keyed by it
 * without a repartition. Every update is written through to RocksDB and the changelog (no record
 * cache), as Eddy's stores do.
 */
final class ConversationProcessor implements Processor<String, Message, Void, Void> {
  static final String STORE = "conversations";

  private final LongAdder processed;
  private KeyValueStore<String, Conversation> conversations;

  private ConversationProcessor(LongAdder processed) {
    this.processed = processed;
  }

  /**
   * Supplies one processor per task and declares the store it uses; every processor adds the
   * messages it folds to `processed`.
   */
  static ProcessorSupplier<String, Message, Void, Void> supplier(LongAdder processed) {
    return new ProcessorSupplier<>() {
      @Override
      public Processor<String, Message, Void, Void> get() {
        return new ConversationProcessor(processed);
      }

      @Override
      public Set<StoreBuilder<?>> stores() {
        return Set.of(
            Stores.keyValueStoreBuilder(
                    Stores.persistentKeyValueStore(STORE),
                    Serdes.String(),
                    Json.serde(Conversation.class))
                .withCachingDisabled());
      }
    };
  }

  @Override
  public void init(ProcessorContext<Void, Void> context) {
    conversations = context.getStateStore(STORE);
  }

  @Override
  public void process(Record<String, Message> record) {
    var message = record.value();
    if (message == null) {
      // A tombstone. Eddy removes the message and recounts; this benchmark skips it.
      return;
    }
    var conversationId = message.conversationId();
    conversations.put(
        conversationId, Conversation.fold(conversations.get(conversationId), message));
    processed.increment();
  }
}
