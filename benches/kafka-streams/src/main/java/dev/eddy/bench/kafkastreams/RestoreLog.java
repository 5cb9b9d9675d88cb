package dev.eddy.bench.kafkastreams;

import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.streams.processor.StateRestoreListener;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/** Logs each store partition's restore from its changelog: what it had to read and how long. */
final class RestoreLog implements StateRestoreListener {
  private static final Logger LOG = LoggerFactory.getLogger(RestoreLog.class);

  private final Map<TopicPartition, Long> startNanos = new ConcurrentHashMap<>();

  @Override
  public void onRestoreStart(
      TopicPartition changelog, String store, long startingOffset, long endingOffset) {
    startNanos.put(changelog, System.nanoTime());
    LOG.info(
        "restoring store={} changelog={} offsets={}..{}",
        store,
        changelog,
        startingOffset,
        endingOffset);
  }

  @Override
  public void onBatchRestored(
      TopicPartition changelog, String store, long batchEndOffset, long numRestored) {}

  @Override
  public void onRestoreEnd(TopicPartition changelog, String store, long totalRestored) {
    var start = startNanos.remove(changelog);
    long millis = start == null ? -1 : (System.nanoTime() - start) / 1_000_000;
    LOG.info(
        "restored store={} changelog={} records={} in {} ms",
        store,
        changelog,
        totalRestored,
        millis);
  }
}
