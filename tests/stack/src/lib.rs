//! Tests only: see `tests/`. Proof that the local stack is a real Kafka broker and schema registry.
