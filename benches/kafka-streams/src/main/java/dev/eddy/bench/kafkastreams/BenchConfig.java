package dev.eddy.bench.kafkastreams;

import java.net.URI;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/** The application's settings, all from `BENCH_*` environment variables. */
record BenchConfig(
    String bootstrapServers,
    URI registryUrl,
    String inputTopic,
    String applicationId,
    Path stateDir,
    String processingGuarantee,
    long commitIntervalMs,
    int streamThreads,
    int httpPort,
    int httpThreads) {

  /** A setting that is missing or malformed; the message names the variable. */
  static final class InvalidConfig extends Exception {
    private static final long serialVersionUID = 1L;

    InvalidConfig(String message) {
      super(message);
    }
  }

  static BenchConfig fromEnv(Map<String, String> env) throws InvalidConfig {
    var reader = new Reader(env);
    var config =
        new BenchConfig(
            reader.required("BENCH_BOOTSTRAP_SERVERS"),
            reader.uri("BENCH_REGISTRY_URL"),
            reader.required("BENCH_INPUT_TOPIC"),
            reader.required("BENCH_APPLICATION_ID"),
            reader.path("BENCH_STATE_DIR"),
            reader.optional("BENCH_PROCESSING_GUARANTEE", "exactly_once_v2"),
            reader.number("BENCH_COMMIT_INTERVAL_MS", 100, 0),
            (int) reader.number("BENCH_STREAM_THREADS", 1, 1),
            (int) reader.number("BENCH_HTTP_PORT", 8090, 0),
            (int) reader.number("BENCH_HTTP_THREADS", 8, 1));
    if (!List.of("exactly_once_v2", "at_least_once").contains(config.processingGuarantee())) {
      reader.problems.add(
          "BENCH_PROCESSING_GUARANTEE must be exactly_once_v2 or at_least_once, not '"
              + config.processingGuarantee()
              + "'");
    }
    if (config.httpPort() > 65535) {
      reader.problems.add("BENCH_HTTP_PORT must be at most 65535");
    }
    if (!reader.problems.isEmpty()) {
      throw new InvalidConfig(String.join("; ", reader.problems));
    }
    return config;
  }

  /** Reads variables, collecting every problem so one run reports them all. */
  private static final class Reader {
    private final Map<String, String> env;
    private final List<String> problems = new ArrayList<>();

    Reader(Map<String, String> env) {
      this.env = env;
    }

    String required(String name) {
      var value = env.get(name);
      if (value == null || value.isBlank()) {
        problems.add(name + " is required");
        return "";
      }
      return value.trim();
    }

    String optional(String name, String fallback) {
      var value = env.get(name);
      return value == null || value.isBlank() ? fallback : value.trim();
    }

    URI uri(String name) {
      var value = required(name);
      if (value.isEmpty()) {
        return URI.create("http://invalid");
      }
      try {
        var uri = URI.create(value.replaceAll("/+$", ""));
        if (!"http".equals(uri.getScheme()) && !"https".equals(uri.getScheme())) {
          problems.add(name + " must be an http(s) URL, not '" + value + "'");
        }
        return uri;
      } catch (IllegalArgumentException error) {
        problems.add(name + " is not a URL: " + error.getMessage());
        return URI.create("http://invalid");
      }
    }

    Path path(String name) {
      var value = required(name);
      return Path.of(value.isEmpty() ? "." : value);
    }

    long number(String name, long fallback, long minimum) {
      var value = optional(name, null);
      if (value == null) {
        return fallback;
      }
      try {
        var number = Long.parseLong(value);
        if (number < minimum) {
          problems.add(name + " must be at least " + minimum + ", not " + number);
        }
        return number;
      } catch (NumberFormatException error) {
        problems.add(name + " must be a whole number, not '" + value + "'");
        return fallback;
      }
    }
  }
}
