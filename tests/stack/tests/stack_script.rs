//! `scripts/stack` tells the truth and fails clearly: status names each part with its address,
//! a busy port is named in the error, and a missing or old Java says Java 17+ is required.
//! Each case uses its own run dir and ports, so the shared stack is never touched.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use eddy_testkit::stack::repo_dir;
use eddy_testkit::{TestNamespace, free_port};

/// Runs `scripts/stack <command>` with a private run dir and private ports (plus `env`).
fn stack_script(namespace: &TestNamespace, command: &str, env: &[(&str, String)]) -> Output {
    let mut script = Command::new(repo_dir().join("scripts/stack"));
    script
        .arg(command)
        .env("EDDY_RUN_DIR", namespace.state_dir("run"))
        .env("EDDY_KAFKA_PORT", free_port().to_string())
        .env("EDDY_KAFKA_CONTROLLER_PORT", free_port().to_string())
        .env("EDDY_REGISTRY_PORT", free_port().to_string());
    for (key, value) in env {
        script.env(key, value);
    }
    script.output().expect("running scripts/stack")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn status_reports_the_running_stack_up_with_its_addresses() {
    let stack = eddy_testkit::stack();
    let output = Command::new(repo_dir().join("scripts/stack"))
        .arg("status")
        .output()
        .expect("running scripts/stack status");
    let stdout = text(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        text(&output.stderr)
    );
    let kafka_line = stdout
        .lines()
        .find(|line| line.starts_with("kafka"))
        .expect("kafka line");
    assert!(kafka_line.contains(" up "), "{stdout}");
    assert!(kafka_line.contains(&stack.bootstrap_servers), "{stdout}");
    let registry_line = stdout
        .lines()
        .find(|line| line.starts_with("registry"))
        .expect("registry line");
    assert!(registry_line.contains(" up "), "{stdout}");
    assert!(
        registry_line.contains(&stack.schema_registry_url),
        "{stdout}"
    );
}

#[test]
fn status_reports_parts_down_with_exit_code_3() {
    let namespace = TestNamespace::new("stack-status-down");
    let kafka_port = free_port();
    let output = stack_script(
        &namespace,
        "status",
        &[("EDDY_KAFKA_PORT", kafka_port.to_string())],
    );
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(3), "{stdout}");
    assert!(
        stdout.contains(&format!("kafka     down  127.0.0.1:{kafka_port}")),
        "{stdout}"
    );
    assert!(
        stdout.contains("registry  down  http://127.0.0.1:"),
        "{stdout}"
    );
}

#[test]
fn a_port_in_use_is_named_in_the_error() {
    let namespace = TestNamespace::new("stack-port-in-use");
    let holder = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = holder.local_addr().expect("address").port();

    let output = stack_script(
        &namespace,
        "start",
        &[("EDDY_REGISTRY_PORT", port.to_string())],
    );
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("port {port} (schema registry) is already in use")),
        "{stderr}"
    );
    assert!(stderr.contains("EDDY_REGISTRY_PORT"), "{stderr}");
    // Nothing was started: ports are checked before anything starts.
    assert!(!stderr.contains("starting kafka"), "{stderr}");

    let output = stack_script(
        &namespace,
        "start",
        &[("EDDY_KAFKA_PORT", port.to_string())],
    );
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("port {port} (Kafka broker) is already in use")),
        "{stderr}"
    );
}

#[test]
fn a_missing_java_says_java_17_is_required() {
    let namespace = TestNamespace::new("stack-no-java");
    let output = stack_script(
        &namespace,
        "start",
        &[("EDDY_JAVA", "/nonexistent/bin/java".to_owned())],
    );
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("Java 17+ is required"), "{stderr}");
    assert!(
        stderr.contains("/nonexistent/bin/java' was not found"),
        "{stderr}"
    );
}

#[test]
fn an_old_java_says_java_17_is_required() {
    let namespace = TestNamespace::new("stack-old-java");
    let fake_java = namespace.state_dir("bin").join("java");
    std::fs::write(
        &fake_java,
        "#!/bin/sh\necho 'openjdk version \"11.0.22\" 2024-01-16' >&2\n",
    )
    .expect("write fake java");
    std::fs::set_permissions(&fake_java, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let output = stack_script(
        &namespace,
        "start",
        &[("EDDY_JAVA", fake_java.display().to_string())],
    );
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("Java 17+ is required"), "{stderr}");
    assert!(stderr.contains("11.0.22"), "{stderr}");
}
