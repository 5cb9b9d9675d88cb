package dev.eddy.bench.kafkastreams;

import java.io.IOException;
import java.time.Duration;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.LongAdder;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.Serializer;
import org.apache.kafka.streams.CloseOptions;
import org.apache.kafka.streams.CloseOptions.GroupMembershipOperation;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Named;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import sun.misc.Signal;

/**
 * A Kafka Streams reference for Eddy's `communication` service: messages in, one changelogged
 * RocksDB store of conversations, interactive queries over HTTP. Configuration from `BENCH_*`
 * variables (exit 2 when invalid); SIGTERM or SIGINT closes it cleanly (exit 0); a failed stream
 * thread ends it with exit 1.
 */
public final class Main {
  private static final Logger LOG = LoggerFactory.getLogger(Main.class);
  private static final Duration CLOSE_TIMEOUT = Duration.ofSeconds(30);
  private static final int HTTP_GRACE_SECONDS = 1;
  private static final Duration PROGRESS_INTERVAL = Duration.ofSeconds(10);

  private Main() {}

  public static void main(String[] args) throws IOException, InterruptedException {
    BenchConfig config;
    try {
      config = BenchConfig.fromEnv(System.getenv());
    } catch (BenchConfig.InvalidConfig error) {
      System.err.println("kafka-streams-bench: invalid configuration: " + error.getMessage());
      System.exit(2);
      return;
    }
    try {
      System.exit(run(config));
    } catch (IOException error) {
      System.err.println("kafka-streams-bench: " + error.getMessage());
      System.exit(1);
    }
  }

  static int run(BenchConfig config) throws IOException, InterruptedException {
    long startNanos = System.nanoTime();
    var processed = new LongAdder();
    var topology = topology(config, processed);
    LOG.info("{}", topology.describe());
    var streams = new KafkaStreams(topology, properties(config));

    var stop = new CountDownLatch(1);
    var failed = new AtomicBoolean();
    streams.setStateListener(
        (now, before) -> {
          LOG.info(
              "kafka streams state {} -> {} ({} ms after start)",
              before,
              now,
              elapsedMillis(startNanos));
          if (now == KafkaStreams.State.ERROR) {
            failed.set(true);
            stop.countDown();
          }
        });
    streams.setGlobalStateRestoreListener(new RestoreLog());
    streams.setUncaughtExceptionHandler(
        error -> {
          LOG.error("stream thread failed; closing the client", error);
          return StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });

    // Bound before Kafka Streams starts, so a taken port fails fast.
    HttpApi http;
    try {
      http = new HttpApi(streams, config.httpPort(), config.httpThreads());
    } catch (IOException error) {
      streams.close();
      throw new IOException(
          "cannot listen on 127.0.0.1:" + config.httpPort() + ": " + error.getMessage(), error);
    }
    var closed = new AtomicBoolean();
    Runnable close =
        () -> {
          if (closed.compareAndSet(false, true)) {
            LOG.info("shutting down");
            http.stop(HTTP_GRACE_SECONDS);
            // Leave the group as Eddy does, so a restarted instance gets its partitions at once
            // instead of after the old member's session timeout (45 s).
            var options =
                CloseOptions.timeout(CLOSE_TIMEOUT)
                    .withGroupMembershipOperation(GroupMembershipOperation.LEAVE_GROUP);
            if (!streams.close(options)) {
              LOG.warn("kafka streams did not close within {}", CLOSE_TIMEOUT);
            }
            LOG.info("stopped after {} messages", processed.sum());
          }
        };
    // SIGTERM and SIGINT end the wait below, so the process closes and exits 0 rather than the
    // JVM's 143; the hook covers any other way out.
    Signal.handle(new Signal("TERM"), signal -> stop.countDown());
    Signal.handle(new Signal("INT"), signal -> stop.countDown());
    Runtime.getRuntime().addShutdownHook(new Thread(close, "shutdown"));

    var progress = reportProgress(processed);
    http.start();
    streams.start();
    stop.await();
    progress.shutdownNow();
    close.run();
    return failed.get() ? 1 : 0;
  }

  /** Messages, read with the writer schema by id, folded into the `conversations` store. */
  static Topology topology(BenchConfig config, LongAdder processed) {
    Serializer<Message> noSerializer =
        (topic, message) -> {
          throw new UnsupportedOperationException("messages are only read");
        };
    var messages =
        Serdes.serdeFrom(
            noSerializer, new MessageDeserializer(new SchemaRegistry(config.registryUrl())));
    var builder = new StreamsBuilder();
    builder.stream(
            config.inputTopic(), Consumed.with(Serdes.String(), messages).withName("messages"))
        .process(ConversationProcessor.supplier(processed), Named.as("fold-conversations"));
    return builder.build();
  }

  static Properties properties(BenchConfig config) {
    var properties = new Properties();
    properties.put(StreamsConfig.APPLICATION_ID_CONFIG, config.applicationId());
    properties.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, config.bootstrapServers());
    properties.put(StreamsConfig.STATE_DIR_CONFIG, config.stateDir().toString());
    properties.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, config.processingGuarantee());
    properties.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, config.commitIntervalMs());
    properties.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, config.streamThreads());
    // The dev stack is a single broker.
    properties.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, 1);
    properties.put(
        StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");
    // There is no global store: this only quiets one of the two warnings Kafka Streams 4.3 logs
    // about the processing exception handler being off for global threads (the other comes
    // from a configuration it builds internally).
    properties.put(StreamsConfig.PROCESSING_EXCEPTION_HANDLER_GLOBAL_ENABLED_CONFIG, true);
    return properties;
  }

  /** Logs the messages folded so far every interval in which the count moved. */
  private static ScheduledExecutorService reportProgress(
      LongAdder processed) {
    var scheduler =
        Executors.newSingleThreadScheduledExecutor(
            task -> {
              var thread = new Thread(task, "progress");
              thread.setDaemon(true);
              return thread;
            });
    var last = new long[] {0};
    long seconds = PROGRESS_INTERVAL.toSeconds();
    scheduler.scheduleAtFixedRate(
        () -> {
          long total = processed.sum();
          if (total != last[0]) {
            LOG.info(
                "processed {} messages ({}/s over the last {} s)",
                total,
                (total - last[0]) / seconds,
                seconds);
            last[0] = total;
          }
        },
        seconds,
        seconds,
        TimeUnit.SECONDS);
    return scheduler;
  }

  private static long elapsedMillis(long startNanos) {
    return TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - startNanos);
  }
}
