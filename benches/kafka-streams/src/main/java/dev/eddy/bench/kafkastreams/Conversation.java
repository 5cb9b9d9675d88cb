package dev.eddy.bench.kafkastreams;

/**
 * A conversation as the `conversations` store holds it (JSON, snake_case field names): the
 * counterpart of the core of Eddy's `Conversation` (channel, creation time, count, last message),
 * without metadata.
 *
 * @param createdAt the smallest `sent_at` seen (epoch milliseconds)
 * @param messageCount how many message records the conversation has seen
 * @param lastMessage the message with the greatest `sent_at`, ties going to the greatest id
 */
record Conversation(
    String conversationId,
    String channelId,
    long createdAt,
    long messageCount,
    LastMessage lastMessage) {

  /** The newest message of a conversation. */
  record LastMessage(
      String id, String senderId, boolean isFromContact, String content, long sentAt) {

    static LastMessage of(Message message) {
      return new LastMessage(
          message.id(),
          message.senderId(),
          message.isFromContact(),
          message.content(),
          message.sentAt());
    }

    /** Whether `message` is newer: a later `sent_at`, or the same one and a greater id. */
    boolean isOlderThan(Message message) {
      return message.sentAt() > sentAt
          || (message.sentAt() == sentAt && message.id().compareTo(id) > 0);
    }
  }

  /** The conversation after `message`; `previous` is null for a conversation's first message. */
  static Conversation fold(Conversation previous, Message message) {
    if (previous == null) {
      return new Conversation(
          message.conversationId(),
          message.channelId(),
          message.sentAt(),
          1,
          LastMessage.of(message));
    }
    var last = previous.lastMessage();
    return new Conversation(
        previous.conversationId(),
        previous.channelId(),
        Math.min(previous.createdAt(), message.sentAt()),
        previous.messageCount() + 1,
        last == null || last.isOlderThan(message) ? LastMessage.of(message) : last);
  }
}
