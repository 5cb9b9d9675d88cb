package dev.eddy.bench.kafkastreams;

/**
 * The fields of a `dev.eddy.communication.Message` record that the conversation aggregate reads
 * (the Avro record is decoded whole; see {@link MessageDeserializer}).
 */
record Message(
    String id,
    String conversationId,
    String channelId,
    String senderId,
    boolean isFromContact,
    String content,
    long sentAt) {}
