//! The running local stack, started on demand with `scripts/stack start`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use eddy_service::kafka::KafkaArgs;

/// Where the local Kafka broker and schema registry answer.
#[derive(Debug, Clone)]
pub struct Stack {
    /// Kafka `bootstrap.servers`.
    pub bootstrap_servers: String,
    /// Base URL of the Confluent-compatible registry API (`…/apis/ccompat/v7`).
    pub schema_registry_url: String,
}

impl Stack {
    /// Client settings for the local broker.
    pub fn kafka(&self) -> KafkaArgs {
        KafkaArgs::plaintext(&self.bootstrap_servers)
    }
}

static STACK: OnceLock<Stack> = OnceLock::new();

/// The local stack, started if it is not running. The first call in a test process runs
/// `scripts/stack start` (a no-op taking ~0.1 s when the stack is up; `EDDY_*` variables pick
/// ports and directories) and panics with the script's output if the stack cannot start.
pub fn stack() -> &'static Stack {
    STACK.get_or_init(start_stack)
}

/// The workspace root (the folder holding `scripts/` and the root `Cargo.toml`).
///
/// Found at run time from `CARGO_MANIFEST_DIR`, which cargo sets for every test process (the
/// tested package's folder), by walking up to the folder with `scripts/stack`. The path this
/// crate was compiled at is only the fallback: a target dir shared between clones can hold a
/// build of this crate made in another clone.
pub fn repo_dir() -> PathBuf {
    let started_from = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    started_from
        .ancestors()
        .find(|dir| dir.join("scripts/stack").is_file())
        .map(Path::to_path_buf)
        .or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../..")
                .canonicalize()
                .ok()
        })
        .unwrap_or_else(|| {
            panic!(
                "cannot find the workspace root above {}",
                started_from.display()
            )
        })
}

fn start_stack() -> Stack {
    let script = repo_dir().join("scripts/stack");
    let output = Command::new(&script)
        .arg("start")
        .output()
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", script.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the local Kafka stack is required and could not be started ({} start exited with {}).\n\
         stdout:\n{stdout}\nstderr:\n{stderr}",
        script.display(),
        output.status
    );
    let endpoint = |label: &str| {
        stdout
            .lines()
            .find_map(|line| line.strip_prefix(label))
            .map(|value| value.trim().to_owned())
            .unwrap_or_else(|| {
                panic!("scripts/stack start did not print '{label}'; stdout:\n{stdout}")
            })
    };
    Stack {
        bootstrap_servers: endpoint("kafka bootstrap:"),
        schema_registry_url: endpoint("schema registry:"),
    }
}
