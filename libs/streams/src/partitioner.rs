//! Java-compatible key partitioning: Kafka's `Utils.murmur2` and the default partitioner's
//! `toPositive(hash) % partitions`. Producers use librdkafka's `murmur2_random` (the same
//! function); this module lets the runtime and query routing compute where a key lives.

/// Kafka's murmur2 hash of `key` (`org.apache.kafka.common.utils.Utils.murmur2`), as the signed
/// 32-bit value Java returns.
pub fn murmur2(key: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    // Kafka hashes the length as a Java int; keys are far below 2 GiB.
    let mut hash = SEED ^ (key.len() as u32);
    let mut chunks = key.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        hash = hash.wrapping_mul(M);
        hash ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        hash ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        hash ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        hash ^= u32::from(rest[0]);
        hash = hash.wrapping_mul(M);
    }
    hash ^= hash >> 13;
    hash = hash.wrapping_mul(M);
    hash ^= hash >> 15;
    hash as i32
}

/// The partition the Java producer (and librdkafka's `murmur2_random`) picks for a non-empty
/// `key` on a topic with `partitions` partitions.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    assert!(partitions > 0, "a topic has at least one partition");
    (murmur2(key) & 0x7fff_ffff) % partitions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_kafka_utils_murmur2() {
        // Values from Kafka's own UtilsTest and from org.apache.kafka.common.utils.Utils 4.3.1.
        assert_eq!(murmur2(b"21"), -973_932_308);
        assert_eq!(murmur2(b"foobar"), -790_332_482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985_981_536);
        assert_eq!(murmur2(b"abc"), 479_470_107);
        assert_eq!(murmur2(b"conversation-42"), 369_514_871);
    }

    #[test]
    fn partitions_like_the_java_producer() {
        assert_eq!(partition_for_key(b"21", 7), 3);
        assert_eq!(partition_for_key(b"a-little-bit-long-string", 7), 1);
        assert_eq!(partition_for_key(b"conversation-42", 7), 5);
        assert_eq!(partition_for_key(b"abc", 3), 0);
    }
}
