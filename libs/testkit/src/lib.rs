//! Integration-test support for Eddy. Tests run against the real local stack (Apache Kafka in
//! KRaft mode and Apicurio Registry, see `scripts/stack`), never a mock:
//!
//! - [`stack()`] makes sure the stack is running (starting it with `scripts/stack start` if it
//!   is not) and fails the test loudly when it cannot be started;
//! - [`TestNamespace`] gives each test its own topic prefix, consumer groups, transactional ids
//!   and state directories, so tests run in parallel without seeing each other's data;
//! - [`records`] creates topics, produces and consumes until a predicate holds, with a deadline;
//! - [`process`] spawns a workspace binary as a child process (SIGTERM, SIGINT, kill -9);
//! - [`wait`] polls a condition with a deadline (never a bare sleep);
//! - [`python_tools()`] is a Python with pinned packages (fastavro) for ecosystem checks.
//!
//! Helpers panic with a message saying what failed: a test that cannot reach its
//! infrastructure must fail, never pass by skipping.

pub mod namespace;
pub mod process;
pub mod python;
pub mod records;
pub mod stack;
pub mod wait;

pub use namespace::TestNamespace;
pub use process::{
    ComponentCommand, ComponentProcess, free_port, free_port_block, workspace_binary,
};
pub use python::python_tools;
pub use records::{ConsumedRecord, TopicSpec};
pub use stack::{Stack, stack};
pub use wait::{poll_until, wait_for_http_status};
