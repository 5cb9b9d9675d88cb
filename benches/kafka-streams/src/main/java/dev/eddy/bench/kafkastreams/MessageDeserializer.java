package dev.eddy.bench.kafkastreams;

import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import org.apache.avro.AvroRuntimeException;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.DecoderFactory;
import org.apache.kafka.common.errors.SerializationException;
import org.apache.kafka.common.serialization.Deserializer;

/**
 * Decodes message values in the Confluent wire format (magic byte 0, a big-endian schema id,
 * Avro binary): with the writer schema fetched by id, resolved to the reader schema
 * `message.avsc` compiled into the jar, as Eddy's codec does. A null value (tombstone) decodes
 * to null.
 */
final class MessageDeserializer implements Deserializer<Message> {
  private static final byte MAGIC = 0;
  private static final int HEADER_LENGTH = 5;

  private final SchemaRegistry registry;
  private final Schema readerSchema;
  private final Map<Integer, GenericDatumReader<GenericRecord>> readers = new ConcurrentHashMap<>();

  MessageDeserializer(SchemaRegistry registry) {
    this.registry = registry;
    this.readerSchema = readerSchema();
  }

  static Schema readerSchema() {
    try (InputStream in = MessageDeserializer.class.getResourceAsStream("/avro/message.avsc")) {
      if (in == null) {
        throw new IllegalStateException("avro/message.avsc missing from the jar");
      }
      return new Schema.Parser().parse(in);
    } catch (IOException error) {
      throw new UncheckedIOException("reading avro/message.avsc", error);
    }
  }

  @Override
  public Message deserialize(String topic, byte[] data) {
    if (data == null) {
      return null;
    }
    if (data.length < HEADER_LENGTH || data[0] != MAGIC) {
      throw new SerializationException(
          "record of " + topic + " is not in the Confluent wire format (" + data.length + " bytes)");
    }
    int schemaId = ByteBuffer.wrap(data, 1, 4).getInt();
    try {
      var reader =
          readers.computeIfAbsent(
              schemaId, id -> new GenericDatumReader<>(registry.schema(id), readerSchema));
      var decoder =
          DecoderFactory.get()
              .binaryDecoder(data, HEADER_LENGTH, data.length - HEADER_LENGTH, null);
      var record = reader.read(null, decoder);
      return new Message(
          record.get("id").toString(),
          record.get("conversation_id").toString(),
          record.get("channel_id").toString(),
          record.get("sender_id").toString(),
          (Boolean) record.get("is_from_contact"),
          record.get("content").toString(),
          (Long) record.get("sent_at"));
    } catch (IOException | AvroRuntimeException | UncheckedIOException error) {
      throw new SerializationException(
          "undecodable message of " + topic + " (schema id " + schemaId + ")", error);
    }
  }
}
