//! Workspace binaries as real child processes: start one with its environment, talk to it,
//! stop it with SIGTERM or SIGINT, or kill it with SIGKILL for crash tests.

use std::ffi::OsString;
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

use crate::TestNamespace;

/// The path of workspace binary `name` in the target dir this test was built into. If it is not
/// built yet, builds it with `cargo build --bin <name>` first.
pub fn workspace_binary(name: &str) -> PathBuf {
    // Test executables live in <target>/<profile>/deps/; binaries in <target>/<profile>/.
    let current = std::env::current_exe()
        .unwrap_or_else(|error| panic!("cannot find the test executable: {error}"));
    let profile_dir = current
        .parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("unexpected test executable path {}", current.display()));
    let binary = profile_dir.join(name);
    if !binary.exists() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
        let mut build = Command::new(cargo);
        build.args(["build", "--bin", name]);
        if profile_dir
            .file_name()
            .is_some_and(|profile| profile == "release")
        {
            build.arg("--release");
        }
        let status = build
            .current_dir(crate::stack::repo_dir())
            .status()
            .unwrap_or_else(|error| panic!("cannot run cargo to build {name}: {error}"));
        assert!(status.success(), "cargo build --bin {name} failed");
    }
    assert!(
        binary.exists(),
        "workspace binary {name} not found at {}",
        binary.display()
    );
    binary
}

/// The test ports: 20000–31999, below the kernel's ephemeral range (32768 and up).
const FIRST_TEST_PORT: u32 = 20_000;
const TEST_PORT_COUNT: u32 = 12_000;

/// The next unused offset in the test port range: each test process walks the range from its
/// own starting point and never hands out a port twice.
fn next_port_offsets(count: u32) -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id().wrapping_mul(7_919)) % TEST_PORT_COUNT,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    NEXT.fetch_add(count, Ordering::SeqCst)
}

fn is_free(port: u32) -> bool {
    u16::try_from(port).is_ok_and(|port| TcpListener::bind(("127.0.0.1", port)).is_ok())
}

/// A TCP port on 127.0.0.1 that was free a moment ago (for a child's listen address).
///
/// Ports come from 20000–31999, below the kernel's ephemeral range (32768 and up): a port
/// the kernel handed out for `bind(0)` could be given to any process's next outgoing
/// connection before the child listens on it ("Address already in use" in parallel tests).
/// Each test process walks the range from its own starting point and never hands out a port
/// twice.
pub fn free_port() -> u16 {
    for _ in 0..TEST_PORT_COUNT {
        let port = FIRST_TEST_PORT + next_port_offsets(1) % TEST_PORT_COUNT;
        if is_free(port) {
            return port as u16;
        }
    }
    panic!(
        "no free port in {FIRST_TEST_PORT}..{}",
        FIRST_TEST_PORT + TEST_PORT_COUNT
    )
}

/// The first of `len` consecutive TCP ports on 127.0.0.1 that were all free a moment ago, for
/// a program that numbers its ports from a base (`scripts/up`'s `EDDY_COMPONENT_PORT_BASE`).
/// From the same range and walk as [`free_port`], so the block stays below the ephemeral range
/// and no port of it is handed out again by this process.
pub fn free_port_block(len: u16) -> u16 {
    let len = u32::from(len.max(1));
    assert!(
        len <= TEST_PORT_COUNT / 4,
        "a block of {len} ports is too large"
    );
    for _ in 0..TEST_PORT_COUNT / len {
        let offset = next_port_offsets(len) % TEST_PORT_COUNT;
        if offset + len > TEST_PORT_COUNT {
            continue; // would run past the range's end; the walk wraps to its start
        }
        let first = FIRST_TEST_PORT + offset;
        if (first..first + len).all(is_free) {
            return first as u16;
        }
    }
    panic!(
        "no {len} consecutive free ports in {FIRST_TEST_PORT}..{}",
        FIRST_TEST_PORT + TEST_PORT_COUNT
    )
}

/// Builds the command line of a component process.
#[derive(Debug)]
pub struct ComponentCommand {
    name: String,
    command: Command,
    log_path: PathBuf,
}

impl ComponentCommand {
    /// Workspace binary `name`; its stdout and stderr go to `<state dir>/<name>.log` in the
    /// namespace, and it gets the namespace's Kafka bootstrap servers.
    pub fn new(namespace: &TestNamespace, name: &str) -> Self {
        Self::for_program(namespace, name, workspace_binary(name))
    }

    /// Any program (a script, a tool), with the same log and environment handling.
    pub fn for_program(namespace: &TestNamespace, name: &str, program: impl AsRef<Path>) -> Self {
        let mut command = Command::new(program.as_ref());
        command
            .env(
                "EDDY_KAFKA_BOOTSTRAP_SERVERS",
                &namespace.stack().bootstrap_servers,
            )
            .env(
                "EDDY_SCHEMA_REGISTRY_URL",
                &namespace.stack().schema_registry_url,
            )
            .stdin(Stdio::null());
        let log_path = namespace.state_dir("logs").join(format!("{name}.log"));
        ComponentCommand {
            name: name.to_owned(),
            command,
            log_path,
        }
    }

    /// Logs to `<state dir>/logs/<log_name>.log` instead (several instances of one binary).
    pub fn log_as(mut self, namespace: &TestNamespace, log_name: &str) -> Self {
        self.log_path = namespace.state_dir("logs").join(format!("{log_name}.log"));
        self
    }

    pub fn arg(mut self, argument: impl AsRef<std::ffi::OsStr>) -> Self {
        self.command.arg(argument);
        self
    }

    pub fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Self {
        self.command.env(key, value);
        self
    }

    pub fn env_remove(mut self, key: &str) -> Self {
        self.command.env_remove(key);
        self
    }

    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.command.current_dir(dir);
        self
    }

    /// Starts the process.
    pub fn spawn(mut self) -> ComponentProcess {
        let log = File::create(&self.log_path)
            .unwrap_or_else(|error| panic!("cannot create {}: {error}", self.log_path.display()));
        let log_for_stderr = log
            .try_clone()
            .unwrap_or_else(|error| panic!("cannot duplicate a log file handle: {error}"));
        let child = self
            .command
            .stdout(log)
            .stderr(log_for_stderr)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", self.name));
        ComponentProcess {
            name: self.name,
            child,
            log_path: self.log_path,
            exit_status: None,
        }
    }
}

/// A running (or finished) child process. Dropping it kills the process if it still runs.
#[derive(Debug)]
pub struct ComponentProcess {
    name: String,
    child: Child,
    log_path: PathBuf,
    exit_status: Option<ExitStatus>,
}

impl ComponentProcess {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process wrote to stdout and stderr so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Where the process's output goes.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Asks the process to stop gracefully (SIGTERM, as Kubernetes does).
    pub fn terminate(&self) {
        self.send(Signal::SIGTERM);
    }

    /// Ctrl-C (SIGINT).
    pub fn interrupt(&self) {
        self.send(Signal::SIGINT);
    }

    /// Kills the process at once with SIGKILL (`kill -9`): no cleanup runs, as in a crash.
    pub fn kill_9(&mut self) -> ExitStatus {
        self.send(Signal::SIGKILL);
        self.wait_for_exit(Duration::from_secs(10))
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.try_exit_status().is_none()
    }

    /// Waits for the process to exit and returns its status; panics with its output if it is
    /// still running after `timeout`.
    pub fn wait_for_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit_status() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} still running {timeout:?} after it was asked to stop; output:\n{}",
                self.name,
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn try_exit_status(&mut self) -> Option<ExitStatus> {
        if self.exit_status.is_none() {
            self.exit_status = self
                .child
                .try_wait()
                .unwrap_or_else(|error| panic!("cannot query {}: {error}", self.name));
        }
        self.exit_status
    }

    fn send(&self, signal: Signal) {
        if self.exit_status.is_some() {
            return;
        }
        let pid = Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(i32::MAX));
        if let Err(error) = signal::kill(pid, signal) {
            panic!("cannot send {signal} to {}: {error}", self.name);
        }
    }
}

impl Drop for ComponentProcess {
    /// A process still running when its test ends (or fails) gets SIGTERM and a few seconds to
    /// stop what it started (`scripts/up` stops its stack and components), then SIGKILL.
    fn drop(&mut self) {
        if self.exit_status.is_none() && matches!(self.child.try_wait(), Ok(None)) {
            self.terminate();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod port_tests {
    use super::*;

    #[test]
    fn port_blocks_stay_below_the_ephemeral_range_and_are_not_handed_out_again() {
        let first = u32::from(free_port_block(200));
        let block = first..first + 200;
        assert!(
            first >= FIRST_TEST_PORT && block.end <= FIRST_TEST_PORT + TEST_PORT_COUNT,
            "block {block:?} outside the test range"
        );
        assert!(
            block.clone().all(is_free),
            "every port of {block:?} is free"
        );
        for _ in 0..500 {
            let port = u32::from(free_port());
            assert!(!block.contains(&port), "{port} was handed out twice");
        }
        let second = u32::from(free_port_block(200));
        assert!(
            second >= block.end || second + 200 <= first,
            "blocks overlap: {first} and {second}"
        );
    }
}
