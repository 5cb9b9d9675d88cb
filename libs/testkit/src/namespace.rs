//! A test's private corner of the shared broker: every topic, group and transactional id it
//! names carries a unique prefix, and its state directories live in a temporary folder that is
//! removed when the namespace is dropped.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use eddy_service::kafka::KafkaArgs;
use tempfile::TempDir;

use crate::stack::{Stack, stack};

static NEXT_NAMESPACE: AtomicU32 = AtomicU32::new(0);

/// Names and directories private to one test.
#[derive(Debug)]
pub struct TestNamespace {
    prefix: String,
    stack: &'static Stack,
    state_root: TempDir,
}

impl TestNamespace {
    /// A namespace for the test named `test_name` on the local stack (started if needed). The
    /// prefix is `test.<test_name>.<process id>.<time>.<counter>`, unique across parallel tests
    /// and repeated runs.
    pub fn new(test_name: &str) -> Self {
        let stack = stack();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos())
            .unwrap_or_default();
        let counter = NEXT_NAMESPACE.fetch_add(1, Ordering::Relaxed);
        let safe_name: String = test_name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .take(80)
            .collect();
        let prefix = format!(
            "test.{safe_name}.{}.{:x}.{counter}",
            std::process::id(),
            nanos % (1 << 40)
        );
        let state_root = tempfile::Builder::new()
            .prefix("eddy-test-")
            .tempdir()
            .unwrap_or_else(|error| panic!("cannot create a temporary state dir: {error}"));
        TestNamespace {
            prefix,
            stack,
            state_root,
        }
    }

    /// The unique prefix of this namespace.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The stack this namespace lives on.
    pub fn stack(&self) -> &'static Stack {
        self.stack
    }

    /// Client settings for the local broker.
    pub fn kafka(&self) -> KafkaArgs {
        self.stack.kafka()
    }

    /// The namespaced name of topic `name`.
    pub fn topic(&self, name: &str) -> String {
        format!("{}.{name}", self.prefix)
    }

    /// The namespaced consumer group id `name`.
    pub fn group(&self, name: &str) -> String {
        format!("{}.{name}", self.prefix)
    }

    /// The namespaced transactional id `name`.
    pub fn transactional_id(&self, name: &str) -> String {
        format!("{}.{name}", self.prefix)
    }

    /// A state directory `name` inside this namespace's temporary folder (created).
    pub fn state_dir(&self, name: &str) -> PathBuf {
        let path = self.state_root.path().join(name);
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|error| panic!("cannot create {}: {error}", path.display()));
        path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_prefixed_and_unique() {
        let first = TestNamespace::new("names are/unique");
        let second = TestNamespace::new("names are/unique");
        assert_ne!(first.prefix(), second.prefix());
        assert!(first.prefix().starts_with("test.names-are-unique."));
        assert_eq!(first.topic("orders"), format!("{}.orders", first.prefix()));
        assert!(first.state_dir("store").is_dir());
        assert!(
            !first
                .state_dir("store")
                .starts_with(second.state_dir("store"))
        );
    }
}
