//! `housekeep report` and `housekeep explain`: each report in each format returns exactly the
//! rows of a hand-built dataset, in order; `--limit` and `--project` (id or path) work; bad
//! input exits 2 and changes nothing; a report runs on a GitLab-shaped database; and `explain`
//! names each situation a download answers 404 in, with its fix.

use crate::common;
use crate::fixtures;

use std::process::Output;

use chrono::{DateTime, Utc};
use common::{Backend, TestDb, TestStore, housekeep, run, stderr, stdout};
use fixtures::{Art, Artifact, Fx};
use housekeep::reports::time;
use serde_json::{Value, json};

const ARTIFACT_COLUMNS: [&str; 11] = [
    "artifact_id",
    "project_id",
    "project_path",
    "job_id",
    "file_type",
    "size",
    "locked",
    "created_at",
    "expire_at",
    "file_store",
    "object_key",
];

/// GitLab's bulk-set expiry of old rows (the troubleshooting page's example).
const T0: &str = "2021-06-21T22:00:00Z";

fn hk(db: &TestDb, args: &[&str]) -> Output {
    run(housekeep()
        .args(args)
        .env("HOUSEKEEP_DATABASE_URL", &db.url)
        .env("HOUSEKEEP_LOG", "warn"))
}

fn hk_store(db: &TestDb, store: &TestStore, args: &[&str]) -> Output {
    run(housekeep()
        .args(args)
        .env("HOUSEKEEP_DATABASE_URL", &db.url)
        .env("HOUSEKEEP_STORE_URL", &store.url)
        .env("HOUSEKEEP_LOG", "warn"))
}

fn type_name(t: i16) -> &'static str {
    match t {
        1 => "archive",
        2 => "metadata",
        3 => "trace",
        4 => "junit",
        _ => panic!("type {t} not used here"),
    }
}

/// The row a listing must return for `a`.
async fn row(c: &tokio_postgres::Client, a: &Artifact, locked: &str) -> Value {
    let created: DateTime<Utc> = c
        .query_one(
            "SELECT created_at FROM p_ci_job_artifacts WHERE id = $1",
            &[&a.id],
        )
        .await
        .unwrap()
        .get(0);
    json!({
        "artifact_id": a.id,
        "project_id": a.project_id,
        "project_path": format!("group/p-{}", a.project_id),
        "job_id": a.job_id,
        "file_type": type_name(a.file_type),
        "size": a.size,
        "locked": locked,
        "created_at": time(&created),
        "expire_at": a.expire_at.map(|t| time(&t)),
        "file_store": if a.file_store == 1 { "local" } else { "remote" },
        "object_key": a.key,
    })
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The report `args` gives exactly `expected`, in order, as JSON (an array of objects), as CSV
/// (the same names as header, the same values) and as a table (the same header, one line per
/// row, in order).
fn check_formats(db: &TestDb, args: &[&str], columns: &[&str], expected: &[Value]) {
    let with = |format: &str| {
        let mut a = args.to_vec();
        a.extend(["--format", format]);
        let o = hk(db, &a);
        assert_eq!(o.status.code(), Some(0), "{a:?}: {}", stderr(&o));
        stdout(&o)
    };
    let got: Value = serde_json::from_str(&with("json")).unwrap();
    assert_eq!(got, Value::Array(expected.to_vec()), "{args:?} as JSON");
    for r in expected {
        let keys: Vec<&String> = r.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), columns.len(), "{keys:?}");
    }

    let csv_text = with("csv");
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(csv_text.as_bytes());
    assert_eq!(
        rdr.headers().unwrap().iter().collect::<Vec<_>>(),
        columns,
        "{args:?} CSV header"
    );
    let records: Vec<Vec<String>> = rdr
        .records()
        .map(|r| r.unwrap().iter().map(str::to_string).collect())
        .collect();
    let want: Vec<Vec<String>> = expected
        .iter()
        .map(|r| columns.iter().map(|c| cell(&r[*c])).collect())
        .collect();
    assert_eq!(records, want, "{args:?} as CSV");

    let table = with("table");
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        columns,
        "{args:?} table header"
    );
    if expected.is_empty() {
        assert_eq!(&lines[1..], ["(no rows)"], "{table}");
    } else {
        assert_eq!(lines.len(), expected.len() + 1, "{table}");
        for (line, r) in lines[1..].iter().zip(expected) {
            // Tables show times to the second with a space: compare the date.
            let want = cell(&r[columns[0]]);
            assert_eq!(
                line.split_whitespace().next().unwrap(),
                want.split('T').next().unwrap(),
                "{table}"
            );
        }
    }
}

struct Dataset {
    db: TestDb,
    pa: i64,
    pb: i64,
    pc: i64,
    a: Vec<Value>,
    b: Vec<Value>,
}

/// Three projects:
/// - A: job 1 with a never-expiring archive (500 B), metadata expiring in 400 days (50 B) and a
///   never-expiring trace (700 B); job 2 with an archive expiring in 10 days (900 B) and a
///   locked junit report expiring in 800 days (300 B);
/// - B: unknown-lock rows: a never-expiring archive (1000 B) and a junit report (20 B); two
///   archives (200 B, 400 B) and a metadata file (30 B) all expiring at GitLab's bulk-set
///   2021-06-21 22:00; an expired trace (5 B); and an unlocked archive expiring in 5 days as
///   large as the first (1000 B);
/// - C: no artifacts.
///
/// Statistics are exact: A 2,450 B, B 2,655 B, C 0.
async fn dataset() -> Dataset {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let fx = Fx { c: &c };
    let (pa, pb, pc) = (fx.project().await, fx.project().await, fx.project().await);

    let p = fx.pipeline(pa, "main", "success", 0).await;
    let (j1, j2) = (fx.job(pa, p).await, fx.job(pa, p).await);
    let a1 = fx.artifact(Art::new(pa, j1).size(500)).await;
    let a2 = fx
        .artifact(Art::new(pa, j1).file_type(2).size(50).expire("400 days"))
        .await;
    let a3 = fx
        .artifact(Art::new(pa, j1).file_type(3).size(700).local())
        .await;
    let a4 = fx
        .artifact(Art::new(pa, j2).size(900).expire("10 days").final_path())
        .await;
    let a5 = fx
        .artifact(
            Art::new(pa, j2)
                .file_type(4)
                .size(300)
                .expire("800 days")
                .locked(1),
        )
        .await;

    let p = fx.pipeline(pb, "main", "success", 0).await;
    let (k1, k2, k3, k4) = (
        fx.job(pb, p).await,
        fx.job(pb, p).await,
        fx.job(pb, p).await,
        fx.job(pb, p).await,
    );
    let b1 = fx
        .artifact(Art::new(pb, k1).size(1000).locked(2).legacy().local())
        .await;
    let mut b2 = fx
        .artifact(
            Art::new(pb, k1)
                .file_type(4)
                .size(20)
                .locked(2)
                .expire("-3 days"),
        )
        .await;
    let mut b3 = fx
        .artifact(Art::new(pb, k2).size(200).locked(2).expire("-3 days"))
        .await;
    let mut b4 = fx
        .artifact(
            Art::new(pb, k2)
                .file_type(2)
                .size(30)
                .locked(2)
                .expire("-3 days"),
        )
        .await;
    let b5 = fx
        .artifact(
            Art::new(pb, k2)
                .file_type(3)
                .size(5)
                .locked(2)
                .expire("-1 days"),
        )
        .await;
    let b6 = fx
        .artifact(Art::new(pb, k3).size(1000).expire("5 days"))
        .await;
    let mut b7 = fx
        .artifact(Art::new(pb, k4).size(400).locked(2).expire("-3 days"))
        .await;
    let t0: DateTime<Utc> = T0.parse().unwrap();
    for x in [&mut b2, &mut b3, &mut b4, &mut b7] {
        c.execute(
            "UPDATE p_ci_job_artifacts SET expire_at = $2 WHERE id = $1",
            &[&x.id, &t0],
        )
        .await
        .unwrap();
        x.expire_at = Some(t0);
    }
    fx.exact_statistics().await;

    let mut a = Vec::new();
    for (x, l) in [
        (&a1, "unlocked"),
        (&a2, "unlocked"),
        (&a3, "unlocked"),
        (&a4, "unlocked"),
        (&a5, "artifacts_locked"),
    ] {
        a.push(row(&c, x, l).await);
    }
    let mut b = Vec::new();
    for (x, l) in [
        (&b1, "unknown"),
        (&b2, "unknown"),
        (&b3, "unknown"),
        (&b4, "unknown"),
        (&b5, "unknown"),
        (&b6, "unlocked"),
        (&b7, "unknown"),
    ] {
        b.push(row(&c, x, l).await);
    }
    Dataset {
        db,
        pa,
        pb,
        pc,
        a,
        b,
    }
}

#[tokio::test]
async fn each_report_returns_exactly_its_rows_in_each_format() {
    let d = dataset().await;
    let (a, b) = (&d.a, &d.b);
    let db = &d.db;

    // Never expiring, oldest job first; the trace is left out.
    check_formats(
        db,
        &["report", "never-expiring"],
        &ARTIFACT_COLUMNS,
        &[a[0].clone(), b[0].clone()],
    );
    // Expiring more than a year from now, the farthest first; then everything still to expire.
    check_formats(
        db,
        &["report", "expiring-after", "1y"],
        &ARTIFACT_COLUMNS,
        &[a[4].clone(), a[1].clone()],
    );
    check_formats(
        db,
        &["report", "expiring-after", "365d"],
        &ARTIFACT_COLUMNS,
        &[a[4].clone(), a[1].clone()],
    );
    check_formats(
        db,
        &["report", "expiring-after", "0"],
        &ARTIFACT_COLUMNS,
        &[a[4].clone(), a[1].clone(), a[3].clone(), b[5].clone()],
    );
    check_formats(
        db,
        &["report", "expiring-after", "1000d"],
        &ARTIFACT_COLUMNS,
        &[],
    );
    // Projects by build_artifacts_size.
    let project = |id: i64, size: i64| json!({"project_id": id, "project_path": format!("group/p-{id}"), "build_artifacts_size": size});
    check_formats(
        db,
        &["report", "top-projects"],
        &["project_id", "project_path", "build_artifacts_size"],
        &[project(d.pb, 2655), project(d.pa, 2450), project(d.pc, 0)],
    );
    // A project's largest, by size, the newer first on a tie; traces included.
    let pb = d.pb.to_string();
    check_formats(
        db,
        &["report", "largest", "--project", &pb],
        &ARTIFACT_COLUMNS,
        &[
            b[5].clone(),
            b[0].clone(),
            b[6].clone(),
            b[2].clone(),
            b[3].clone(),
            b[1].clone(),
            b[4].clone(),
        ],
    );
    // A project's artifacts, newest first.
    let pa = d.pa.to_string();
    check_formats(
        db,
        &["report", "artifacts", "--project", &pa],
        &ARTIFACT_COLUMNS,
        &[
            a[4].clone(),
            a[3].clone(),
            a[2].clone(),
            a[1].clone(),
            a[0].clone(),
        ],
    );
    check_formats(
        db,
        &["report", "artifacts", "--project", &d.pc.to_string()],
        &ARTIFACT_COLUMNS,
        &[],
    );
    // Unknown lock status, by expire_at and file_type; the never-expiring unknown row is not in it.
    let t5 = b[4]["expire_at"].clone();
    let group = |t: Value, ft: &str, count: i64, bytes: i64| json!({"expire_at": t, "file_type": ft, "locked": "unknown", "count": count, "bytes": bytes});
    check_formats(
        db,
        &["report", "unknown"],
        &["expire_at", "file_type", "locked", "count", "bytes"],
        &[
            group(json!(T0), "archive", 2, 600),
            group(json!(T0), "metadata", 1, 30),
            group(json!(T0), "junit", 1, 20),
            group(t5, "trace", 1, 5),
        ],
    );
}

#[tokio::test]
async fn limit_and_project_by_id_or_path() {
    let d = dataset().await;
    let (a, b) = (&d.a, &d.b);
    let db = &d.db;
    check_formats(
        db,
        &["report", "never-expiring", "--limit", "1"],
        &ARTIFACT_COLUMNS,
        &[a[0].clone()],
    );
    check_formats(
        db,
        &["report", "expiring-after", "0", "--limit", "2"],
        &ARTIFACT_COLUMNS,
        &[a[4].clone(), a[1].clone()],
    );
    let o = hk(
        db,
        &["report", "top-projects", "--limit", "1", "--format", "json"],
    );
    let top: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(top.as_array().unwrap().len(), 1);
    assert_eq!(top[0]["project_id"], json!(d.pb));
    let path = format!("group/p-{}", d.pb);
    check_formats(
        db,
        &["report", "largest", "--project", &path, "--limit", "3"],
        &ARTIFACT_COLUMNS,
        &[b[5].clone(), b[0].clone(), b[6].clone()],
    );
    let path = format!("group/p-{}", d.pa);
    check_formats(
        db,
        &["report", "artifacts", "--project", &path, "--limit", "2"],
        &ARTIFACT_COLUMNS,
        &[a[4].clone(), a[3].clone()],
    );
    let o = hk(
        db,
        &["report", "unknown", "--limit", "2", "--format", "csv"],
    );
    assert_eq!(stdout(&o).lines().count(), 3, "{}", stdout(&o));
}

#[tokio::test]
async fn the_defaults_are_gitlabs_50_rows_and_20_projects() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let fx = Fx { c: &c };
    let mut projects = Vec::new();
    for _ in 0..22 {
        projects.push(fx.project().await);
    }
    let p = fx.pipeline(projects[0], "main", "success", 0).await;
    for _ in 0..52 {
        let j = fx.job(projects[0], p).await;
        fx.artifact(Art::new(projects[0], j)).await;
    }
    let rows = |args: &[&str]| {
        let mut a = args.to_vec();
        a.extend(["--format", "json"]);
        let o = hk(&db, &a);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        serde_json::from_str::<Value>(&stdout(&o))
            .unwrap()
            .as_array()
            .unwrap()
            .len()
    };
    let first = projects[0].to_string();
    assert_eq!(rows(&["report", "never-expiring"]), 50);
    assert_eq!(rows(&["report", "artifacts", "--project", &first]), 50);
    assert_eq!(rows(&["report", "largest", "--project", &first]), 50);
    assert_eq!(rows(&["report", "top-projects"]), 20);
}

#[tokio::test]
async fn bad_input_exits_2_with_a_clear_message_and_changes_nothing() {
    let d = dataset().await;
    let c = d.db.client().await;
    let before = fixtures::digest(&c).await;
    let cases: [(&[&str], &str); 12] = [
        (
            &["report", "largest", "--project", "999999"],
            "no such project",
        ),
        (
            &["report", "artifacts", "--project", "nobody/nothing"],
            "no such project",
        ),
        (&["report", "expiring-after", "-1h"], "not a duration"),
        (&["report", "expiring-after", "soon"], "not a duration"),
        (&["report", "expiring-after", "10"], "no unit"),
        (&["report", "expiring-after", "101y"], "100 years"),
        (&["report", "never-expiring", "--limit", "0"], "from 1 to"),
        (&["report", "top-projects", "--limit", "-5"], "from 1 to"),
        (
            &["report", "unknown", "--limit", "ten"],
            "not a number of rows",
        ),
        (&["report", "never-expiring", "--format", "xml"], "xml"),
        (&["explain", "--job", "0"], "not a job id"),
        (&["explain", "--job", "123456789"], "no such job"),
    ];
    for (args, message) in cases {
        let o = hk(&d.db, args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(message), "{args:?}: {}", stderr(&o));
        assert!(stdout(&o).is_empty(), "{args:?}: {}", stdout(&o));
    }
    assert_eq!(
        fixtures::digest(&c).await,
        before,
        "a report changed the database"
    );
}

/// A report on a database shaped as GitLab's: rows from both partitions (one of them in
/// gitlab_partitions_dynamic), found by full path, and GitLab's tables left as they were.
#[tokio::test]
async fn reports_and_explain_work_on_a_gitlab_shaped_database() {
    let db = crate::live_gitlab::gitlab_db().await;
    let c = db.client().await;
    let o = hk(&db, &["migrate"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let project = crate::live_gitlab::project(&c, "grp/app").await;
    let mut ids = Vec::new();
    let mut jobs = Vec::new();
    for partition in [100i64, 101] {
        let row = c
            .query_one(
                "WITH p AS (INSERT INTO p_ci_pipelines (partition_id, project_id, ref, status, source, locked, created_at, updated_at)
                            VALUES ($1, $2, 'main', 'success', 1, 0, now(), now()) RETURNING id, partition_id),
                      b AS (INSERT INTO p_ci_builds (partition_id, project_id, commit_id, name, ref, type, status, created_at)
                            SELECT partition_id, $2, id, 'build', 'main', 'Ci::Build', 'success', now() FROM p RETURNING id, partition_id)
                 INSERT INTO p_ci_job_artifacts (partition_id, project_id, job_id, file_type, size, file_store, file, expire_at, locked, created_at, updated_at)
                 SELECT partition_id, $2, id, 1, 100 * $1, 2, 'artifacts.zip', NULL, 0, now(), now() FROM b RETURNING id, job_id",
                &[&partition, &project],
            )
            .await
            .unwrap();
        ids.push(row.get::<_, i64>(0));
        jobs.push(row.get::<_, i64>(1));
    }
    for args in [
        ["report", "artifacts", "--project", "grp/app"],
        ["report", "largest", "--project", "grp/app"],
    ] {
        let mut a = args.to_vec();
        a.extend(["--format", "json"]);
        let o = hk(&db, &a);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let rows: Value = serde_json::from_str(&stdout(&o)).unwrap();
        let got: Vec<i64> = rows
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["artifact_id"].as_i64().unwrap())
            .collect();
        assert_eq!(
            got,
            [ids[1], ids[0]],
            "{args:?}: both partitions, the newer (and larger) first"
        );
        assert_eq!(rows[0]["project_path"], "grp/app");
    }
    let o = hk(&db, &["report", "never-expiring", "--format", "csv"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o).lines().count(), 3, "{}", stdout(&o));
    for args in [
        &["report", "top-projects"][..],
        &["report", "unknown"],
        &["report", "expiring-after", "7d"],
    ] {
        let o = hk(&db, args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
    }
    let o = hk(
        &db,
        &["explain", "--job", &jobs[1].to_string(), "--format", "json"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let e: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(e["verdict"], "available");
    assert_eq!(e["archive"]["artifact_id"], json!(ids[1]));
}

// ---------------------------------------------------------------------------------------------
// explain
// ---------------------------------------------------------------------------------------------

fn explain(db: &TestDb, store: &TestStore, job: i64) -> Value {
    let o = hk_store(
        db,
        store,
        &["explain", "--job", &job.to_string(), "--format", "json"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    serde_json::from_str(&stdout(&o)).unwrap()
}

fn explain_text(db: &TestDb, store: &TestStore, job: i64) -> String {
    let o = hk_store(db, store, &["explain", "--job", &job.to_string()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    stdout(&o)
}

fn fixes(e: &Value) -> String {
    e["fixes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

const EXPLAIN_KEYS: [&str; 14] = [
    "job_id",
    "verdict",
    "download_404",
    "reason",
    "fixes",
    "job",
    "pipeline",
    "archive",
    "artifacts",
    "object",
    "object_note",
    "queued",
    "removed_by_run",
    "outside_our_data",
];

#[tokio::test]
async fn explain_names_each_situation_with_its_fix() {
    let db = TestDb::migrated().await;
    let t = TestStore::new(Backend::Local);
    let c = db.client().await;
    let fx = Fx { c: &c };
    let p = fx.project().await;
    let unlocked = fx.pipeline(p, "main", "success", 0).await;
    let locked = fx.pipeline(p, "main", "success", 1).await;

    // Available: never expires, object present; the JSON has its stable keys.
    let j = fx.job(p, unlocked).await;
    let a = fx.artifact(Art::new(p, j)).await;
    fixtures::put(&t.store, &a.key).await;
    let e = explain(&db, &t, j);
    let mut keys: Vec<&str> = e.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    let mut want = EXPLAIN_KEYS.to_vec();
    want.sort();
    assert_eq!(keys, want);
    assert_eq!(
        (
            e["verdict"].as_str(),
            e["download_404"].as_bool(),
            e["object"].as_str()
        ),
        (Some("available"), Some(false), Some("present"))
    );
    assert_eq!(e["archive"]["artifact_id"], json!(a.id));
    assert_eq!(
        e["pipeline"]["latest_successful_on_ref"],
        json!(locked),
        "download by ref uses the newest successful pipeline"
    );
    assert!(e["outside_our_data"].to_string().contains("needs:"), "{e}");
    let text = explain_text(&db, &t, j);
    assert!(
        text.contains("verdict: available") && text.contains("dependencies:"),
        "{text}"
    );

    // Kept: expired, but its pipeline is locked (the latest of its ref).
    let j = fx.job(p, locked).await;
    let a = fx
        .artifact(Art::new(p, j).expire("-2 days").locked(1))
        .await;
    fixtures::put(&t.store, &a.key).await;
    let e = explain(&db, &t, j);
    assert_eq!(e["verdict"], "available");
    assert!(e["reason"].as_str().unwrap().contains("locked"), "{e}");

    // Object missing: the row is there, the object is not.
    let j = fx.job(p, unlocked).await;
    let a = fx.artifact(Art::new(p, j).expire("30 days")).await;
    let e = explain(&db, &t, j);
    assert_eq!(
        (
            e["verdict"].as_str(),
            e["download_404"].as_bool(),
            e["object"].as_str()
        ),
        (Some("object_missing"), Some(true), Some("missing"))
    );
    assert!(e["reason"].as_str().unwrap().contains(&a.key), "{e}");
    assert!(
        fixes(&e).contains("housekeep verify") && fixes(&e).contains("retry the job"),
        "{e}"
    );

    // Never uploaded: a failed job with only its log.
    let j = fx.job(p, unlocked).await;
    c.execute(
        "UPDATE p_ci_builds SET status = 'failed' WHERE id = $1",
        &[&j],
    )
    .await
    .unwrap();
    fx.artifact(Art::new(p, j).file_type(3)).await;
    let e = explain(&db, &t, j);
    assert_eq!(
        (
            e["verdict"].as_str(),
            e["download_404"].as_bool(),
            e["object"].as_str()
        ),
        (Some("never_uploaded"), Some(true), Some("no_archive"))
    );
    assert!(fixes(&e).contains("when: always"), "{e}");
    assert_eq!(e["artifacts"].as_array().unwrap().len(), 1);
    // … and a successful job that uploaded nothing: check artifacts:paths.
    let j = fx.job(p, unlocked).await;
    let e = explain(&db, &t, j);
    assert_eq!(e["verdict"], "never_uploaded");
    assert!(fixes(&e).contains("artifacts:paths"), "{e}");

    // Not finished yet.
    let j = fx.job(p, unlocked).await;
    c.execute(
        "UPDATE p_ci_builds SET status = 'running', finished_at = NULL WHERE id = $1",
        &[&j],
    )
    .await
    .unwrap();
    assert_eq!(explain(&db, &t, j)["verdict"], "not_finished");

    // Erased.
    let j = fx.job(p, unlocked).await;
    c.execute(
        "UPDATE p_ci_builds SET erased_at = now() AT TIME ZONE 'UTC' WHERE id = $1",
        &[&j],
    )
    .await
    .unwrap();
    let e = explain(&db, &t, j);
    assert_eq!(e["verdict"], "erased");
    assert!(e["job"]["erased_at"].is_string());

    // Expired, unlocked and still a row: 404 already, the expire task removes it; keep saves it.
    let j = fx.job(p, unlocked).await;
    c.execute(
        "UPDATE p_ci_builds SET artifacts_expire_at = (now() - interval '2 days') AT TIME ZONE 'UTC' WHERE id = $1",
        &[&j],
    )
    .await
    .unwrap();
    let a = fx.artifact(Art::new(p, j).expire("-2 days")).await;
    fixtures::put(&t.store, &a.key).await;
    let e = explain(&db, &t, j);
    assert_eq!(
        (e["verdict"].as_str(), e["download_404"].as_bool()),
        (Some("expired"), Some(true))
    );
    assert!(e["reason"].as_str().unwrap().contains("expire task"), "{e}");
    assert!(
        fixes(&e).contains("housekeep keep --job") && fixes(&e).contains("expire_in"),
        "{e}"
    );
    // An unknown-lock row expired the same way is the unknown task's.
    let j2 = fx.job(p, unlocked).await;
    fx.artifact(Art::new(p, j2).expire("-2 days").locked(2))
        .await;
    assert!(
        explain(&db, &t, j2)["reason"]
            .as_str()
            .unwrap()
            .contains("unknown task")
    );

    // Queued for deletion: the expire task moved the row to the queue.
    let o = hk_store(&db, &t, &["run", "expire"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let e = explain(&db, &t, j);
    assert_eq!(
        (e["verdict"].as_str(), e["download_404"].as_bool()),
        (Some("queued_for_deletion"), Some(true))
    );
    let queued: Vec<&str> = e["queued"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["key"].as_str().unwrap())
        .collect();
    assert_eq!(queued, [a.key.as_str()]);
    assert!(fixes(&e).contains("too late"), "{e}");

    // Deleted: delete-objects removed the object and the queue row; the expire run is named.
    let o = hk_store(&db, &t, &["run", "delete-objects"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!fixtures::exists(&t.store, &a.key).await);
    let e = explain(&db, &t, j);
    assert_eq!(
        (e["verdict"].as_str(), e["download_404"].as_bool()),
        (Some("deleted"), Some(true))
    );
    assert_eq!(e["removed_by_run"]["task"], "expire", "{e}");
    assert!(e["queued"].as_array().unwrap().is_empty());
    let text = explain_text(&db, &t, j);
    assert!(
        text.contains("verdict: deleted") && text.contains("expire run"),
        "{text}"
    );
}

/// Without a store, explain still answers from the database and says the object was not checked.
#[tokio::test]
async fn explain_without_a_store_does_not_check_the_object() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let fx = Fx { c: &c };
    let p = fx.project().await;
    let pl = fx.pipeline(p, "main", "success", 0).await;
    let j = fx.job(p, pl).await;
    fx.artifact(Art::new(p, j)).await;
    let o = hk(
        &db,
        &["explain", "--job", &j.to_string(), "--format", "json"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let e: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        (e["verdict"].as_str(), e["object"].as_str()),
        (Some("available"), Some("not_checked"))
    );
    assert!(
        e["object_note"].as_str().unwrap().contains("no store"),
        "{e}"
    );
}
