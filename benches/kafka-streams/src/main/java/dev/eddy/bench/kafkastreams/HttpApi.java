package dev.eddy.bench.kafkastreams;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.util.Map;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StoreQueryParameters;
import org.apache.kafka.streams.errors.InvalidStateStoreException;
import org.apache.kafka.streams.state.QueryableStoreTypes;
import org.apache.kafka.streams.state.ReadOnlyKeyValueStore;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The HTTP endpoints, on 127.0.0.1 with a fixed pool of handler threads:
 *
 * <ul>
 *   <li>`GET /conversations/{id}`: 200 with the stored conversation, 404 when this instance has
 *       none, 503 while the store is not queryable (starting, rebalancing, restoring);
 *   <li>`GET /ready`: 200 while Kafka Streams is RUNNING, else 503;
 *   <li>`GET /healthz`: 200 unless Kafka Streams is in ERROR or NOT_RUNNING.
 * </ul>
 *
 * Lookups are local only: unlike Eddy, a key owned by another instance is not routed there.
 */
final class HttpApi {
  private static final Logger LOG = LoggerFactory.getLogger(HttpApi.class);
  private static final String CONVERSATIONS = "/conversations/";

  static {
    // The JDK server writes headers and body separately; without TCP_NODELAY, Nagle's algorithm
    // and the client's delayed ACK hold every keep-alive answer for ~40 ms. Read once, when the
    // first server is made.
    System.setProperty("sun.net.httpserver.nodelay", "true");
  }

  private final KafkaStreams streams;
  private final HttpServer server;
  private final ExecutorService executor;
  /** The store handle, fetched on first use and again after it failed. */
  private volatile ReadOnlyKeyValueStore<String, Conversation> store;

  HttpApi(KafkaStreams streams, int port, int threads) throws IOException {
    this.streams = streams;
    this.server = HttpServer.create(new InetSocketAddress("127.0.0.1", port), 1024);
    var threadNumber = new AtomicInteger();
    this.executor =
        Executors.newFixedThreadPool(
            threads,
            task -> {
              var thread = new Thread(task, "http-" + threadNumber.incrementAndGet());
              thread.setDaemon(true);
              return thread;
            });
    server.setExecutor(executor);
    server.createContext("/", this::handle);
  }

  void start() {
    server.start();
    LOG.info("http listening on {}", server.getAddress());
  }

  /** Stops accepting, gives running exchanges `graceSeconds` to finish, then stops the pool. */
  void stop(int graceSeconds) {
    server.stop(graceSeconds);
    executor.shutdown();
    try {
      executor.awaitTermination(graceSeconds, TimeUnit.SECONDS);
    } catch (InterruptedException error) {
      Thread.currentThread().interrupt();
    }
    LOG.info("http stopped");
  }

  private void handle(HttpExchange exchange) throws IOException {
    try {
      if (!"GET".equals(exchange.getRequestMethod())) {
        exchange.getResponseHeaders().set("Allow", "GET");
        respond(exchange, 405, error("method " + exchange.getRequestMethod() + " not allowed"));
        return;
      }
      var path = exchange.getRequestURI().getPath();
      if (path.startsWith(CONVERSATIONS) && path.length() > CONVERSATIONS.length()) {
        conversation(exchange, path.substring(CONVERSATIONS.length()));
      } else if (path.equals("/ready")) {
        var state = streams.state();
        respond(exchange, state == KafkaStreams.State.RUNNING ? 200 : 503, status(state));
      } else if (path.equals("/healthz")) {
        var state = streams.state();
        var failed = state == KafkaStreams.State.ERROR || state == KafkaStreams.State.NOT_RUNNING;
        respond(exchange, failed ? 503 : 200, status(state));
      } else {
        respond(exchange, 404, error("no route for " + path));
      }
    } catch (RuntimeException error) {
      LOG.warn("request failed: {}", error.toString());
      respond(exchange, 500, error("internal error"));
    } finally {
      exchange.close();
    }
  }

  private void conversation(HttpExchange exchange, String id) throws IOException {
    Conversation conversation;
    try {
      conversation = store().get(id);
    } catch (InvalidStateStoreException error) {
      store = null;
      var reason = "store " + ConversationProcessor.STORE + " not queryable: " + error.getMessage();
      respond(exchange, 503, error(reason));
      return;
    }
    if (conversation == null) {
      respond(exchange, 404, error("conversation " + id + " not found"));
    } else {
      respond(exchange, 200, Json.MAPPER.writeValueAsBytes(conversation));
    }
  }

  private ReadOnlyKeyValueStore<String, Conversation> store() {
    var current = store;
    if (current == null) {
      current =
          streams.store(
              StoreQueryParameters.fromNameAndType(
                  ConversationProcessor.STORE, QueryableStoreTypes.keyValueStore()));
      store = current;
    }
    return current;
  }

  private static byte[] status(KafkaStreams.State state) throws JsonProcessingException {
    return Json.MAPPER.writeValueAsBytes(Map.of("state", state.name()));
  }

  private static byte[] error(String message) throws JsonProcessingException {
    return Json.MAPPER.writeValueAsBytes(Map.of("message", message));
  }

  private static void respond(HttpExchange exchange, int status, byte[] body) throws IOException {
    exchange.getResponseHeaders().set("Content-Type", "application/json");
    exchange.sendResponseHeaders(status, body.length);
    exchange.getResponseBody().write(body);
  }
}
