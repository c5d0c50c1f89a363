//! Monitoring as operators deploy it (README "Monitoring"): the /metrics of a freshly started
//! worker (every labelled series at 0, the `process_*` metrics), `status` and the backlog gauges
//! counting the same rows, the alert rules of `deploy/prometheus/` checked and unit-tested by
//! promtool, and the Grafana dashboard of `deploy/grafana/` querying only what the worker
//! exports. promtool comes from scripts/test.sh (`ensure_promtool`); without it these tests fail.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{self, housekeep, run, stderr, stdout, TestDb};
use crate::fixtures::{Art, Fx};
use housekeep::metrics::{AGE_BUCKETS, BACKLOG_KINDS};
use housekeep::tasks::{Outcome, Task};

const RULES: &str = "deploy/prometheus/housekeep.rules.yml";
const RULE_TESTS: &str = "deploy/prometheus/housekeep.rules.test.yml";
const DASHBOARD: &str = "deploy/grafana/housekeep.json";

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_file(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Run promtool: `HK_TEST_PROMTOOL` (scripts/test.sh installs it and sets it) or `promtool` on
/// the PATH.
fn promtool(args: &[&str]) -> Output {
    let bin = std::env::var_os("HK_TEST_PROMTOOL").map(PathBuf::from).unwrap_or_else(|| "promtool".into());
    Command::new(&bin)
        .args(args)
        .current_dir(repo_file("deploy/prometheus"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; run the suite through scripts/test.sh, which installs promtool", bin.display()))
}

/// A `housekeep worker` on a free port, stopped (SIGTERM, then SIGKILL) when dropped.
struct Worker {
    child: Child,
    port: u16,
    log: PathBuf,
    _store: tempfile::TempDir,
}

impl Worker {
    /// Start a worker on `db` with a local store; `env` adds or overrides `HOUSEKEEP_*` settings.
    /// Returns once /metrics answers with the scheduler started (`housekeep_up 1`).
    fn start(db: &TestDb, env: &[(String, String)]) -> (Worker, String) {
        let store = tempfile::Builder::new().prefix("hk-store").tempdir_in(common::tmp_root()).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = common::tmp_root().join(format!("{}.log", common::unique("worker")));
        let f = std::fs::File::create(&log).unwrap();
        let mut cmd = housekeep();
        cmd.args(["worker", "--listen", &format!("127.0.0.1:{port}")])
            .env("HOUSEKEEP_DATABASE_URL", &db.url)
            .env("HOUSEKEEP_STORE_URL", format!("file://{}", store.path().display()))
            .stdout(Stdio::from(f.try_clone().unwrap()))
            .stderr(Stdio::from(f));
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        let worker = Worker { child: cmd.spawn().unwrap(), port, log, _store: store };
        let metrics = worker.wait_for_metrics(|m| m.contains("\nhousekeep_up 1\n"));
        (worker, metrics)
    }

    /// GET /metrics until `ready` holds for its text (20 s at most).
    fn wait_for_metrics(&self, ready: impl Fn(&str) -> bool) -> String {
        let t0 = Instant::now();
        loop {
            match self.metrics() {
                Ok(text) if ready(&text) => return text,
                _ => {}
            }
            assert!(t0.elapsed() < Duration::from_secs(20), "/metrics not ready after 20 s:\n{}", self.show());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn metrics(&self) -> std::io::Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(s, "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
        let mut buf = String::new();
        s.read_to_string(&mut buf)?;
        match buf.split_once("\r\n\r\n") {
            Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_string()),
            _ => Err(std::io::Error::other(format!("unexpected answer: {buf}"))),
        }
    }

    fn show(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        common::sigterm(self.child.id());
        let t0 = Instant::now();
        while self.child.try_wait().ok().flatten().is_none() {
            if t0.elapsed() > Duration::from_secs(30) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `HOUSEKEEP_TASKS_<TASK>_<KEY>=value` for every task.
fn every_task(key: &str, value: &str) -> Vec<(String, String)> {
    Task::ALL.iter().map(|t| (format!("HOUSEKEEP_TASKS_{}_{key}", t.name().replace('-', "_").to_uppercase()), value.to_string())).collect()
}

/// The samples of a text exposition, keyed by `name{label="value",…}` with the labels sorted.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {l}"));
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let pairs: Vec<(&str, &str)> = rest
                        .trim_end_matches('}')
                        .split(',')
                        .filter(|p| !p.is_empty())
                        .map(|p| p.split_once('=').map(|(k, v)| (k, v.trim_matches('"'))).unwrap())
                        .collect();
                    (name, pairs)
                }
                None => (series, vec![]),
            };
            (key(name, &labels), value.parse().unwrap_or_else(|_| panic!("not a number: {l}")))
        })
        .collect()
}

fn key(name: &str, labels: &[(&str, &str)]) -> String {
    let mut labels = labels.to_vec();
    labels.sort();
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{name}{{{}}}", inner.join(","))
}

/// The value of one series; fails when the series does not exist.
fn value(samples: &BTreeMap<String, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    let k = key(name, labels);
    *samples.get(&k).unwrap_or_else(|| panic!("{k} is not in /metrics:\n{}", samples.keys().cloned().collect::<Vec<_>>().join("\n")))
}

/// Every metric name the exposition holds: sample names and the families of `# TYPE` lines.
fn exported_names(text: &str) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = samples(text).keys().map(|k| k.split('{').next().unwrap().to_string()).collect();
    names.extend(text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.split(' ').next()).map(String::from));
    names
}

/// The `housekeep_*` and `process_*` metric names a text mentions.
fn metric_names_in(text: &str) -> BTreeSet<String> {
    let b = text.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let mut out = BTreeSet::new();
    let mut i = 0;
    while i < b.len() {
        if (i == 0 || !word(b[i - 1])) && (text[i..].starts_with("housekeep_") || text[i..].starts_with("process_")) {
            let end = (i..b.len()).find(|&j| !word(b[j])).unwrap_or(b.len());
            out.insert(text[i..end].to_string());
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

/// Before any run, /metrics already has every series whose labels are known: each task ×
/// outcome, each task's last success, duration, running run, schedule period and budget, each
/// backlog kind, each age bucket, all at 0 (the period and budget are set for the tasks the
/// worker schedules, 0 for the others).
#[tokio::test]
async fn every_labelled_series_exists_at_zero_when_the_worker_starts() {
    let db = TestDb::migrated().await;
    // Scheduled once a year: nothing runs during the test.
    let mut env = every_task("SCHEDULE", "0 0 1 1 *");
    env.push(("HOUSEKEEP_TASKS_STALE_UPLOADS_ENABLED".into(), "false".into()));
    let (worker, text) = Worker::start(&db, &env);
    let m = samples(&text);
    for task in Task::ALL {
        let t = [("task", task.name())];
        for outcome in Outcome::ALL {
            assert_eq!(value(&m, "housekeep_task_runs_total", &[("task", task.name()), ("outcome", outcome.label())]), 0.0);
        }
        for name in [
            "housekeep_task_last_success_timestamp_seconds",
            "housekeep_task_running_since_timestamp_seconds",
            "housekeep_task_duration_seconds_count",
            "housekeep_task_duration_seconds_sum",
        ] {
            assert_eq!(value(&m, name, &t), 0.0, "{name} {t:?}");
        }
        assert_eq!(value(&m, "housekeep_task_duration_seconds_bucket", &[t[0], ("le", "+Inf")]), 0.0);
        let period = value(&m, "housekeep_task_schedule_period_seconds", &t);
        let budget = value(&m, "housekeep_task_time_budget_seconds", &t);
        if task == Task::StaleUploads {
            assert_eq!((period, budget), (0.0, 0.0), "a task the worker does not schedule has no period nor budget");
        } else {
            assert!((365.0 * 86_400.0..=366.0 * 86_400.0).contains(&period), "{task}: period {period} of a yearly schedule");
            assert_eq!(budget, task.spec().time_budget_secs as f64, "{task}");
        }
    }
    for kind in BACKLOG_KINDS {
        assert_eq!(value(&m, "housekeep_backlog", &[("kind", kind)]), 0.0, "{kind}");
    }
    for (_, bucket) in AGE_BUCKETS {
        assert_eq!(value(&m, "housekeep_objects_deleted_total", &[("age_bucket", bucket)]), 0.0);
        assert_eq!(value(&m, "housekeep_objects_deleted_bytes_total", &[("age_bucket", bucket)]), 0.0);
    }
    for name in [
        "housekeep_artifacts_expired_total",
        "housekeep_artifacts_expired_bytes_total",
        "housekeep_unknown_artifacts_locked_total",
        "housekeep_unknown_artifacts_removed_total",
        "housekeep_unknown_artifacts_removed_bytes_total",
        "housekeep_pipelines_enqueued_for_unlock_total",
        "housekeep_pipelines_unlocked_total",
        "housekeep_artifacts_unlocked_total",
        "housekeep_object_delete_errors_total",
        "housekeep_stale_uploads_deleted_total",
    ] {
        assert_eq!(value(&m, name, &[]), 0.0, "{name}");
    }
    assert_eq!(value(&m, "housekeep_up", &[]), 1.0);
    let c = db.client().await;
    let runs: i64 = c.query_one("SELECT count(*) FROM housekeep.runs", &[]).await.unwrap().get(0);
    assert_eq!(runs, 0, "a task ran during the test:\n{}", worker.show());
}

/// The worker exports the usual process metrics (start time, CPU, memory, file descriptors).
#[tokio::test]
async fn the_worker_exports_process_metrics() {
    let db = TestDb::migrated().await;
    let (_worker, text) = Worker::start(&db, &every_task("ENABLED", "false"));
    let m = samples(&text);
    let now = chrono::Utc::now().timestamp() as f64;
    let started = value(&m, "process_start_time_seconds", &[]);
    assert!(now - 120.0 < started && started <= now + 1.0, "process_start_time_seconds {started}, now {now}");
    assert!(value(&m, "process_cpu_seconds_total", &[]) >= 0.0);
    for name in ["process_resident_memory_bytes", "process_virtual_memory_bytes", "process_open_fds", "process_max_fds", "process_threads"]
    {
        assert!(value(&m, name, &[]) > 0.0, "{name}");
    }
}

/// `status` and `housekeep_backlog` count the same rows. SPEC §4: `unknown` resolves expired
/// unknown-lock rows, traces included, so an expired unknown trace is waiting for `unknown` in
/// both; an expired trace with `locked = 0` waits for nothing (expire never takes traces).
#[tokio::test]
async fn status_and_the_backlog_metrics_count_the_same_rows() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let fx = Fx { c: &c };
    let p = fx.project().await;
    let pl = fx.pipeline(p, "main", "success", 0).await;
    // One job per row (a job has one artifact of each type).
    for art in [
        |a: Art| a.expire("-1 day"),
        |a: Art| a.file_type(3).locked(2).expire("-1 day"),
        |a: Art| a.locked(2).expire("-2 days"),
        |a: Art| a.file_type(3).expire("-1 day"),
        |a: Art| a.locked(1).expire("-1 day"),
        |a: Art| a.expire("1 day"),
        |a: Art| a,
    ] {
        let job = fx.job(p, pl).await;
        fx.artifact(art(Art::new(p, job))).await;
    }
    fx.queue(2, "aa/bb/cc/2024_01_01/1/1/artifacts.zip", "-1 hour").await;
    fx.queue(2, "aa/bb/cc/2024_01_01/1/2/artifacts.zip", "1 hour").await;
    let locked = fx.pipeline(p, "main", "success", 1).await;
    c.execute(
        "INSERT INTO housekeep.unlock_requests (pipeline_id, partition_id) SELECT id, partition_id FROM p_ci_pipelines WHERE id = $1",
        &[&locked],
    )
    .await
    .unwrap();

    // No task runs: the gauges come from the worker's first backlog refresh.
    let (worker, _) = Worker::start(&db, &every_task("ENABLED", "false"));
    let m = samples(&worker.wait_for_metrics(|m| m.contains("\nhousekeep_backlog{kind=\"unlock_requests\"} 1\n")));
    let backlog = |kind: &str| value(&m, "housekeep_backlog", &[("kind", kind)]) as i64;

    let o = run(housekeep().args(["status", "--format", "json"]).env("HOUSEKEEP_DATABASE_URL", &db.url));
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&o)));
    let artifacts = |state: &str| v["artifacts"][state]["count"].as_i64().unwrap();
    let status = [
        ("expired_rows", artifacts("expired_unlocked")),
        ("unknown_rows", artifacts("expired_unknown")),
        ("queued_objects", v["queued_objects"]["count"].as_i64().unwrap()),
        ("ready_objects", v["ready_objects"]["count"].as_i64().unwrap()),
        ("unlock_requests", v["unlock_requests"].as_i64().unwrap()),
    ];
    let metrics: Vec<(&str, i64)> = status.iter().map(|(kind, _)| (*kind, backlog(kind))).collect();
    assert_eq!(status.to_vec(), metrics, "status (left) and /metrics (right) disagree:\n{}", stdout(&o));
    assert_eq!(
        metrics,
        [("expired_rows", 1), ("unknown_rows", 2), ("queued_objects", 2), ("ready_objects", 1), ("unlock_requests", 1)],
        "the dataset's counts"
    );
}

#[test]
fn alert_rules_pass_promtool_check() {
    let o = promtool(&["check", "rules", &repo_file(RULES).to_string_lossy()]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("SUCCESS"), "{}", stdout(&o));
}

/// `promtool test rules`: each alert fires in its scenario, and the healthy scenario checks every
/// alert stays silent.
#[test]
fn alert_rules_fire_in_their_scenarios_and_stay_silent_when_healthy() {
    let o = promtool(&["test", "rules", &repo_file(RULE_TESTS).to_string_lossy()]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let tests = read(RULE_TESTS);
    let healthy = tests.split("  - name: ").find(|g| g.starts_with("healthy")).expect("a healthy scenario");
    let rules = read(RULES);
    let alerts: Vec<&str> = rules.lines().filter_map(|l| l.trim().strip_prefix("- alert: ")).collect();
    assert!(alerts.len() >= 7, "{alerts:?}");
    for alert in alerts {
        assert!(healthy.contains(&format!("alertname: {alert}, exp_alerts: []")), "the healthy scenario does not check {alert}");
        assert!(tests.contains(&format!("alertname: {alert}\n        exp_alerts:\n          - exp_labels:")), "no scenario fires {alert}");
    }
}

/// The dashboard is valid JSON, every query parses (promtool), every metric it or the alert
/// rules name is in the worker's /metrics, and every `housekeep_*` metric has a panel.
#[tokio::test]
async fn dashboard_and_alert_rules_use_only_metrics_the_worker_exports() {
    let dashboard: serde_json::Value = serde_json::from_str(&read(DASHBOARD)).expect("the dashboard is valid JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let ids: Vec<i64> = panels.iter().map(|p| p["id"].as_i64().expect("panel id")).collect();
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), ids.len(), "panel ids are unique: {ids:?}");
    let exprs: Vec<&str> = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .map(|t| t["expr"].as_str().expect("every target has an expr"))
        .collect();
    assert!(exprs.len() >= 20, "{exprs:?}");
    let variables: Vec<&str> =
        dashboard["templating"]["list"].as_array().unwrap().iter().filter_map(|v| v["definition"].as_str()).collect();

    // Every query parses: the panels' queries as recording rules, the variables filled in.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        let e = e.replace("$__rate_interval", "5m").replace("$job", ".*").replace("$instance", ".*");
        rules.push_str(&format!("      - record: dashboard_query_{i}\n        expr: {}\n", serde_json::to_string(&e).unwrap()));
    }
    let file = tempfile::Builder::new().suffix(".yml").tempfile_in(common::tmp_root()).unwrap();
    std::fs::write(file.path(), rules).unwrap();
    let o = promtool(&["check", "rules", &file.path().to_string_lossy()]);
    assert!(o.status.success(), "a dashboard query does not parse: {}{}", stdout(&o), stderr(&o));

    let db = TestDb::migrated().await;
    let (_worker, text) = Worker::start(&db, &every_task("ENABLED", "false"));
    let exported = exported_names(&text);
    let used = [exprs.join("\n"), variables.join("\n")].join("\n");
    for (what, text) in [("the dashboard", used.clone()), (RULES, read(RULES)), (RULE_TESTS, read(RULE_TESTS))] {
        let named = metric_names_in(&text);
        assert!(!named.is_empty(), "{what} names no metric");
        let unknown: Vec<&String> = named.iter().filter(|n| !exported.contains(*n)).collect();
        assert!(unknown.is_empty(), "{what} uses metrics the worker does not export: {unknown:?}\nexported: {exported:?}");
    }
    let families: Vec<&str> =
        text.lines().filter_map(|l| l.strip_prefix("# TYPE housekeep_")).filter_map(|l| l.split(' ').next()).collect();
    let shown = metric_names_in(&used);
    for family in families {
        let name = format!("housekeep_{family}");
        assert!(
            shown.iter().any(|s| s == &name || s.strip_prefix(&name).is_some_and(|r| ["_bucket", "_sum", "_count"].contains(&r))),
            "no panel shows {name}"
        );
    }
}

/// Every alert points at its section of the runbook, and the section exists.
#[test]
fn every_alert_has_a_runbook_section() {
    let root = env!("CARGO_MANIFEST_DIR");
    let rules = std::fs::read_to_string(format!("{root}/deploy/prometheus/housekeep.rules.yml")).unwrap();
    let runbook = std::fs::read_to_string(format!("{root}/docs/RUNBOOK.md")).unwrap();
    let alerts: Vec<&str> = rules.lines().filter_map(|l| l.trim().strip_prefix("- alert: ")).collect();
    let urls: Vec<&str> = rules.lines().filter_map(|l| l.trim().strip_prefix("runbook_url: docs/RUNBOOK.md#")).collect();
    assert!(!alerts.is_empty());
    assert_eq!(urls, alerts.iter().map(|a| a.to_lowercase()).collect::<Vec<_>>().iter().map(String::as_str).collect::<Vec<_>>());
    for anchor in urls {
        assert!(runbook.lines().any(|l| l == format!("## {anchor}")), "docs/RUNBOOK.md has no section {anchor}");
    }
}
