package dev.eddy.bench.kafkastreams;

import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import org.apache.avro.Schema;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Writer schemas by id from a Confluent-compatible schema registry (`GET /schemas/ids/{id}`),
 * fetched once per id and kept for the life of the process (ids are immutable).
 */
final class SchemaRegistry {
  private static final Logger LOG = LoggerFactory.getLogger(SchemaRegistry.class);
  private static final int ATTEMPTS = 3;
  private static final Duration TIMEOUT = Duration.ofSeconds(10);
  private static final ObjectMapper JSON = new ObjectMapper();

  private final URI baseUrl;
  private final HttpClient client;
  private final Map<Integer, Schema> schemas = new ConcurrentHashMap<>();

  SchemaRegistry(URI baseUrl) {
    this.baseUrl = baseUrl;
    this.client = HttpClient.newBuilder().connectTimeout(TIMEOUT).build();
  }

  /** The schema registered under `id`; throws {@link UncheckedIOException} if unavailable. */
  Schema schema(int id) {
    return schemas.computeIfAbsent(id, this::fetch);
  }

  private Schema fetch(int id) {
    var url = URI.create(baseUrl + "/schemas/ids/" + id);
    IOException last = null;
    for (int attempt = 1; attempt <= ATTEMPTS; attempt++) {
      try {
        var response =
            client.send(
                HttpRequest.newBuilder(url)
                    .timeout(TIMEOUT)
                    .header("Accept", "application/json")
                    .GET()
                    .build(),
                HttpResponse.BodyHandlers.ofString());
        if (response.statusCode() == 200) {
          var schemaText = JSON.readTree(response.body()).path("schema").asText(null);
          if (schemaText == null) {
            throw new IOException("answer of " + url + " has no \"schema\" field");
          }
          var schema = new Schema.Parser().parse(schemaText);
          LOG.info("fetched writer schema id={} name={}", id, schema.getFullName());
          return schema;
        }
        last = new IOException(url + " answered " + response.statusCode() + ": " + response.body());
        if (response.statusCode() == 404) {
          break;
        }
      } catch (IOException error) {
        last = error;
      } catch (InterruptedException error) {
        Thread.currentThread().interrupt();
        last = new IOException("interrupted fetching " + url, error);
        break;
      }
      LOG.warn("fetching writer schema id={} failed (attempt {}): {}", id, attempt, last.toString());
      sleep(Duration.ofMillis(200L * attempt));
    }
    throw new UncheckedIOException("writer schema " + id + " unavailable", last);
  }

  private static void sleep(Duration duration) {
    try {
      Thread.sleep(duration.toMillis());
    } catch (InterruptedException error) {
      Thread.currentThread().interrupt();
    }
  }
}
