//! The command line as a user meets it: help, configuration errors (exit 2, naming the key and
//! where it was set), an unreachable database (one line), and secrets never printed.

use crate::common;

use common::{housekeep, run, stderr, stdout};

const SECRET: &str = "s3cr3t-hunter2";

#[test]
fn help_lists_the_commands() {
    let o = run(housekeep().arg("--help"));
    assert!(o.status.success());
    let out = stdout(&o);
    for cmd in ["migrate", "config", "seed", "status", "Exit codes"] {
        assert!(out.contains(cmd), "{cmd} missing from:\n{out}");
    }
}

#[test]
fn unknown_subcommand_is_usage_error() {
    let o = run(housekeep().arg("frobnicate"));
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn unknown_key_in_config_file_exits_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("housekeep.toml");
    std::fs::write(&path, "store_url = \"file:///tmp\"\n[tasks.expire]\nbatch_sise = 10\n").unwrap();
    let o = run(housekeep().arg("--config").arg(&path).arg("config"));
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("batch_sise") && err.contains("housekeep.toml"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one message: {err}");
}

#[test]
fn bad_values_exit_2_naming_key_and_source() {
    let cases = [
        ("HOUSEKEEP_STORE_URL", "s4://bucket", "store_url"),
        ("HOUSEKEEP_DATABASE_URL", "postgres://u:pw@[bad", "database_url"),
        ("HOUSEKEEP_TASKS_EXPIRE_TIME_BUDGET", "5 fortnights", "tasks.expire.time_budget"),
        ("HOUSEKEEP_TASKS_UNLOCK_SCHEDULE", "every minute", "tasks.unlock.schedule"),
        ("HOUSEKEEP_STOER_URL", "file:///tmp", "HOUSEKEEP_STOER_URL"),
    ];
    for (var, value, key) in cases {
        let o = run(housekeep().arg("config").env(var, value));
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{var}={value}: {err}");
        assert!(err.contains(key) && err.contains(var), "{var}={value}: {err}");
    }
    let o = run(housekeep().args(["--store-url", "file://relative", "config"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--store-url"), "{}", stderr(&o));
}

#[test]
fn missing_config_file_exits_2() {
    let o = run(housekeep().args(["--config", "/nonexistent/housekeep.toml", "config"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("/nonexistent/housekeep.toml"));
}

#[test]
fn flags_override_environment_override_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "store_concurrency = 3\nlisten = \"127.0.0.1:1000\"\n").unwrap();
    let o = run(housekeep()
        .arg("--config")
        .arg(&path)
        .args(["--store-url", "s3://from-flag", "config"])
        .env("HOUSEKEEP_STORE_URL", "s3://from-env")
        .env("HOUSEKEEP_LISTEN", "127.0.0.1:2000"));
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("store_url = \"s3://from-flag\""), "{out}");
    assert!(out.contains("listen = \"127.0.0.1:2000\""), "{out}");
    assert!(out.contains("store_concurrency = 3"), "{out}");
}

#[test]
fn config_never_prints_secrets() {
    let url = format!("postgres://housekeep:{SECRET}@db.example:5432/ci");
    let o = run(housekeep().arg("config").env("HOUSEKEEP_DATABASE_URL", &url));
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(!out.contains(SECRET), "{out}");
    assert!(out.contains("postgres://housekeep:REDACTED@db.example:5432/ci"), "{out}");
}

#[test]
fn unreachable_database_is_one_clear_line_without_secrets() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("postgres://housekeep:{SECRET}@127.0.0.1:{port}/ci");
    let started = std::time::Instant::now();
    let o = run(housekeep().arg("migrate").env("HOUSEKEEP_DATABASE_URL", &url));
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains(&format!("cannot reach the database at 127.0.0.1:{port}/ci")), "{err}");
    assert!(!err.contains(SECRET), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}

#[test]
fn missing_database_url_is_a_usage_error() {
    let o = run(housekeep().arg("migrate"));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("HOUSEKEEP_DATABASE_URL"), "{}", stderr(&o));
}

#[test]
fn shipped_example_config_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/housekeep.toml");
    let o = run(housekeep().args(["--config", path, "config"]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("[tasks.delete-objects]"));
}
