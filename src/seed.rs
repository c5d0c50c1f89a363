//! `housekeep seed`: a realistic, deterministic dataset for demos, tests and benchmarks.
//!
//! Projects with pipelines on several refs and mixed statuses; per pipeline a build job (archive,
//! metadata, trace), a test job (junit, trace) and a lint job (trace); `expire_at` in the past,
//! the future and NULL; `locked` 0/1/2 as GitLab leaves them (recent pipelines locked, old ones
//! unlocked, very old rows unknown); both object layouts. Then the things housekeeping exists
//! for: queued deletions, pending direct uploads (fresh and stale), planted orphans, pipeline
//! artifacts that must never be touched, and rows whose object is missing.
//!
//! Rows go in through binary COPY. Ids continue after the largest existing ones, so seeding twice
//! adds a second dataset. Given the same `--seed` and starting state, ids, sizes, states and keys
//! are the same; times are relative to the moment of seeding.

use std::collections::HashMap;

use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

use crate::error::{Error, Result};
use crate::store::layout;
use crate::store::Stores;

#[derive(Debug, Clone)]
pub struct SeedOptions {
    pub seed: u64,
    pub projects: i64,
    pub artifacts: i64,
    pub orphans: i64,
    pub objects: bool,
}

impl Default for SeedOptions {
    fn default() -> Self {
        SeedOptions { seed: 42, projects: 10, artifacts: 2000, orphans: 25, objects: true }
    }
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SeedReport {
    pub projects: i64,
    pub pipelines: i64,
    pub jobs: i64,
    pub artifacts: i64,
    pub artifact_bytes: i64,
    pub queued_objects: i64,
    pub pending_uploads: i64,
    pub orphans: i64,
    pub missing_objects: i64,
    pub objects_written: i64,
    pub object_bytes_written: i64,
}

const REFS: [(&str, bool); 4] = [("main", false), ("develop", false), ("feature/login", false), ("v1.0.0", true)];
const JOBS: [&str; 3] = ["build", "test", "lint"];
/// (job index, file_type, file_format, file name)
const ARTIFACTS: [(usize, i16, i16, &str); 6] = [
    (0, 1, 2, "artifacts.zip"),
    (0, 2, 3, "metadata.gz"),
    (0, 3, 1, "job.log"),
    (1, 4, 3, "junit.xml.gz"),
    (1, 3, 1, "job.log"),
    (2, 3, 1, "job.log"),
];
/// Days of history the dataset spans.
const HISTORY_DAYS: i64 = 60;

struct Pipeline {
    id: i64,
    project_id: i64,
    ref_idx: usize,
    status: &'static str,
    locked: i16,
    created_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
}

/// One object to write: (file_store, layout key, size, modification time).
struct ObjectToWrite {
    file_store: i16,
    key: String,
    size: i64,
    mtime: DateTime<Utc>,
}

async fn next_id(client: &tokio_postgres::Client, table: &str) -> Result<i64> {
    // Table names come from this module's constants, never from input.
    let row = client.query_one(&format!("SELECT COALESCE(max(id), 0) + 1 FROM {table}"), &[]).await?;
    Ok(row.get(0))
}

async fn copy_in<'a>(
    client: &tokio_postgres::Client,
    statement: &str,
    types: &[Type],
    rows: impl Iterator<Item = Vec<Box<dyn ToSql + Sync + Send + 'a>>>,
) -> Result<u64> {
    let sink = client.copy_in(statement).await?;
    let writer = BinaryCopyInWriter::new(sink, types);
    futures::pin_mut!(writer);
    for row in rows {
        let refs: Vec<&(dyn ToSql + Sync)> = row.iter().map(|b| b.as_ref() as &(dyn ToSql + Sync)).collect();
        writer.as_mut().write(&refs).await?;
    }
    Ok(writer.finish().await?)
}

macro_rules! row {
    ($($v:expr),* $(,)?) => { vec![$(Box::new($v) as Box<dyn ToSql + Sync + Send>),*] };
}

fn upload_id(rng: &mut StdRng) -> String {
    let mut b = [0u8; 16];
    rng.fill(&mut b);
    hex::encode(Sha256::digest(b))
}

fn log_uniform(rng: &mut StdRng, lo: i64, hi: i64) -> i64 {
    let (l, h) = ((lo as f64).ln(), (hi as f64).ln());
    rng.random_range(l..h).exp() as i64
}

/// Seed the database (and, unless `objects` is off, the stores).
pub async fn seed(client: &mut tokio_postgres::Client, stores: Option<&Stores>, opts: &SeedOptions) -> Result<SeedReport> {
    if opts.projects < 1 || opts.artifacts < 0 || opts.orphans < 0 {
        return Err(Error::Input("--projects must be at least 1; --artifacts and --orphans at least 0".into()));
    }
    crate::db::require_schema(client).await?;
    let now = Utc::now();
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let mut report = SeedReport::default();
    let mut objects: Vec<ObjectToWrite> = Vec::new();

    let first_project = next_id(client, "projects").await?;
    let first_pipeline = next_id(client, "ci_pipelines").await?;
    let first_build = next_id(client, "ci_builds").await?;
    let first_artifact = next_id(client, "ci_job_artifacts").await?;

    // Projects: one in ten has keep-latest off.
    let project_ids: Vec<i64> = (0..opts.projects).map(|i| first_project + i).collect();
    let keep_latest: HashMap<i64, bool> = project_ids.iter().map(|&p| (p, rng.random_range(0..10) != 0)).collect();
    report.projects = copy_in(
        client,
        "COPY projects (id, full_path, keep_latest_artifact, created_at) FROM STDIN BINARY",
        &[Type::INT8, Type::TEXT, Type::BOOL, Type::TIMESTAMPTZ],
        project_ids.iter().map(|&p| row![p, format!("group-{}/project-{p}", p % 7), keep_latest[&p], now - Duration::days(400)]),
    )
    .await? as i64;

    // Pipelines, oldest first, spread over the history.
    let n_pipelines = (opts.artifacts + ARTIFACTS.len() as i64 - 1) / ARTIFACTS.len() as i64;
    let span = Duration::days(HISTORY_DAYS).num_seconds();
    let mut pipelines = Vec::with_capacity(n_pipelines as usize);
    for i in 0..n_pipelines {
        let created_at = now - Duration::seconds(span - span * i / n_pipelines.max(1)) - Duration::minutes(5);
        let recent = now - created_at < Duration::hours(2);
        let status = match rng.random_range(0..100) {
            _ if recent && rng.random_range(0..3) == 0 => "running",
            0..=59 => "success",
            60..=84 => "failed",
            85..=92 => "canceled",
            93..=96 => "skipped",
            _ => "manual",
        };
        let finished_at = (status != "running").then(|| created_at + Duration::minutes(rng.random_range(1..30)));
        let project_id = project_ids[(i % opts.projects) as usize];
        // feature/login was abandoned five weeks ago: its last pipelines stay locked past expiry.
        let mut ref_idx = ((i / opts.projects) % REFS.len() as i64) as usize;
        if ref_idx == 2 && now - created_at < Duration::days(35) {
            ref_idx = 0;
        }
        pipelines.push(Pipeline {
            id: first_pipeline + i,
            project_id,
            ref_idx,
            status,
            locked: 0,
            created_at,
            finished_at,
        });
    }
    // Locks as GitLab leaves them: with keep-latest on, the newest finished and the newest
    // successful pipeline of each ref stay locked, and recent ones wait for the unlock task.
    let mut newest_finished: HashMap<(i64, usize), usize> = HashMap::new();
    let mut newest_success: HashMap<(i64, usize), usize> = HashMap::new();
    for (i, p) in pipelines.iter().enumerate() {
        if p.finished_at.is_some() {
            newest_finished.insert((p.project_id, p.ref_idx), i);
        }
        if p.status == "success" {
            newest_success.insert((p.project_id, p.ref_idx), i);
        }
    }
    let keepers: std::collections::HashSet<usize> = newest_finished.values().chain(newest_success.values()).copied().collect();
    for (i, p) in pipelines.iter_mut().enumerate() {
        let kept = keep_latest[&p.project_id];
        p.locked = i16::from(kept && (keepers.contains(&i) || now - p.created_at < Duration::days(14)));
    }
    report.pipelines = copy_in(
        client,
        "COPY ci_pipelines (id, project_id, ref, tag, sha, status, source, locked, created_at, updated_at, finished_at) FROM STDIN BINARY",
        &[Type::INT8, Type::INT8, Type::TEXT, Type::BOOL, Type::TEXT, Type::TEXT, Type::INT2, Type::INT2, Type::TIMESTAMPTZ, Type::TIMESTAMPTZ, Type::TIMESTAMPTZ],
        pipelines.iter().map(|p| {
            let (r, tag) = REFS[p.ref_idx];
            let sha = hex::encode(&Sha256::digest(p.id.to_le_bytes())[..20]);
            let source: i16 = if p.id % 11 == 0 { 4 } else { 1 };
            row![p.id, p.project_id, r.to_string(), tag, sha, p.status.to_string(), source, p.locked, p.created_at, p.finished_at.unwrap_or(p.created_at), p.finished_at]
        }),
    )
    .await? as i64;

    // Jobs: three per pipeline, ids in pipeline order.
    let job_id = |pi: usize, j: usize| first_build + (pi * JOBS.len() + j) as i64;
    let job_status = |p: &Pipeline, j: usize| -> &'static str {
        match (p.status, j) {
            ("failed", 1) => "failed",
            ("failed", _) | ("success", _) | ("manual", _) => "success",
            ("running", 2) => "running",
            ("running", _) => "success",
            (s, _) => s,
        }
    };
    report.jobs = copy_in(
        client,
        "COPY ci_builds (id, project_id, commit_id, name, ref, status, created_at, finished_at, artifacts_expire_at) FROM STDIN BINARY",
        &[Type::INT8, Type::INT8, Type::INT8, Type::TEXT, Type::TEXT, Type::TEXT, Type::TIMESTAMPTZ, Type::TIMESTAMPTZ, Type::TIMESTAMPTZ],
        pipelines.iter().enumerate().flat_map(|(pi, p)| {
            let status = (0..JOBS.len()).map(|j| job_status(p, j)).collect::<Vec<_>>();
            (0..JOBS.len()).map(move |j| {
                let finished = if status[j] == "running" { None } else { p.finished_at.or(Some(p.created_at + Duration::minutes(3))) };
                let expire = (j == 0).then(|| p.created_at + Duration::days(30));
                row![job_id(pi, j), p.project_id, p.id, JOBS[j].to_string(), REFS[p.ref_idx].0.to_string(), status[j].to_string(), p.created_at, finished, expire]
            })
        }),
    )
    .await? as i64;

    // Artifacts.
    let mut artifact_rows = Vec::new();
    let mut aid = first_artifact;
    'outer: for (pi, p) in pipelines.iter().enumerate() {
        for &(j, file_type, file_format, file) in ARTIFACTS.iter() {
            if aid - first_artifact >= opts.artifacts {
                break 'outer;
            }
            let created_at = p.finished_at.unwrap_or(p.created_at + Duration::minutes(2));
            let age = now - p.created_at;
            let is_trace = file_type == 3;
            let locked: i16 = if age > Duration::days(45) && rng.random_range(0..10) < 7 { 2 } else { p.locked };
            let expire_at = if is_trace {
                (rng.random_range(0..10) < 4).then(|| created_at + Duration::days(30))
            } else {
                (rng.random_range(0..10) != 0).then(|| created_at + Duration::days(30))
            };
            let file_store: i16 = if rng.random_range(0..10) < 8 { 2 } else { 1 };
            let size = match file_type {
                1 => log_uniform(&mut rng, 1024, 65_536),
                2 => log_uniform(&mut rng, 100, 2048),
                3 => log_uniform(&mut rng, 1024, 20_480),
                _ => log_uniform(&mut rng, 512, 5120),
            };
            let direct = !is_trace && file_store == 2 && age < Duration::days(40) && rng.random_range(0..10) < 7;
            let final_path = direct.then(|| layout::final_key(p.project_id, &upload_id(&mut rng)));
            let missing = rng.random_range(0..100) == 0;
            let jid = job_id(pi, j);
            if opts.objects {
                if missing {
                    report.missing_objects += 1;
                } else {
                    let key = final_path.clone().unwrap_or_else(|| layout::hashed_key(p.project_id, created_at, jid, aid, file));
                    objects.push(ObjectToWrite { file_store, key, size, mtime: created_at });
                }
            }
            report.artifact_bytes += size;
            artifact_rows.push((aid, p.project_id, jid, file_type, file_format, size, file_store, file, final_path, expire_at, locked, created_at));
            aid += 1;
        }
    }
    report.artifacts = copy_in(
        client,
        "COPY ci_job_artifacts (id, project_id, job_id, file_type, file_format, file_location, size, file_store, file, file_final_path, expire_at, locked, created_at, updated_at) FROM STDIN BINARY",
        &[Type::INT8, Type::INT8, Type::INT8, Type::INT2, Type::INT2, Type::INT2, Type::INT8, Type::INT2, Type::TEXT, Type::TEXT, Type::TIMESTAMPTZ, Type::INT2, Type::TIMESTAMPTZ, Type::TIMESTAMPTZ],
        artifact_rows.into_iter().map(|(id, pid, jid, ft, ff, size, fs, file, fp, exp, locked, created)| {
            row![id, pid, jid, ft, ff, 2i16, size, fs, file.to_string(), fp, exp, locked, created, created]
        }),
    )
    .await? as i64;

    // Ids no row has: for the files of artifacts deleted earlier (queued, or orphaned).
    let unused_job = job_id(pipelines.len(), 0) + 1000;
    // Already queued deletions: artifacts deleted earlier whose files still wait (ids beyond ours).
    let n_queued = (opts.artifacts / 100).max(5);
    let mut queued = Vec::new();
    for q in 0..n_queued {
        let project_id = project_ids[rng.random_range(0..project_ids.len())];
        let created = now - Duration::days(rng.random_range(31..59));
        let key = layout::hashed_key(project_id, created, unused_job + q, aid + 1000 + q, "artifacts.zip");
        let (dir, file) = layout::split_dir_file(&key);
        let pick_up_at = if q % 2 == 0 { now - Duration::hours(rng.random_range(1..20)) } else { now + Duration::minutes(rng.random_range(5..60)) };
        let size = log_uniform(&mut rng, 1024, 65_536);
        queued.push((project_id, dir.to_string(), file.to_string(), pick_up_at, size));
        if opts.objects {
            objects.push(ObjectToWrite { file_store: 2, key, size, mtime: created });
        }
    }
    report.queued_objects = copy_in(
        client,
        "COPY ci_deleted_objects (file_store, pick_up_at, store_dir, file, project_id, created_at, size) FROM STDIN BINARY",
        &[Type::INT2, Type::TIMESTAMPTZ, Type::TEXT, Type::TEXT, Type::INT8, Type::TIMESTAMPTZ, Type::INT8],
        queued.into_iter().map(|(pid, dir, file, pick, size)| row![2i16, pick, dir, file, pid, now, size]),
    )
    .await? as i64;

    // Pending direct uploads: half fresh, half stale (older than 3 h).
    let n_pending = (opts.projects / 2).max(4);
    let mut pending = Vec::new();
    for i in 0..n_pending {
        let project_id = project_ids[rng.random_range(0..project_ids.len())];
        let key = layout::final_key(project_id, &upload_id(&mut rng));
        let created = if i % 2 == 0 { now - Duration::minutes(10) } else { now - Duration::hours(rng.random_range(4..48)) };
        if opts.objects {
            objects.push(ObjectToWrite { file_store: 2, key: key.clone(), size: log_uniform(&mut rng, 1024, 65_536), mtime: created });
        }
        pending.push((key, created));
    }
    report.pending_uploads = copy_in(
        client,
        "COPY pending_direct_uploads (object_key, created_at) FROM STDIN BINARY",
        &[Type::TEXT, Type::TIMESTAMPTZ],
        pending.into_iter().map(|(k, c)| row![k, c]),
    )
    .await? as i64;

    // Orphans (objects no row knows) and pipeline artifacts (never to be touched).
    if opts.objects {
        for i in 0..opts.orphans {
            let project_id = project_ids[rng.random_range(0..project_ids.len())];
            let mtime = now - Duration::days(rng.random_range(1..30));
            let size = log_uniform(&mut rng, 1024, 65_536);
            // Two in three are leaked direct uploads; the rest are hashed directories on local disk.
            if i % 3 != 2 {
                objects.push(ObjectToWrite { file_store: 2, key: layout::final_key(project_id, &upload_id(&mut rng)), size, mtime });
            } else {
                let key = layout::hashed_key(project_id, mtime, unused_job + 100_000 + i, aid + 100_000 + i, "artifacts.zip");
                objects.push(ObjectToWrite { file_store: 1, key, size, mtime });
            }
        }
        report.orphans = opts.orphans;
        for (i, p) in pipelines.iter().enumerate().filter(|(i, _)| i % 10 == 0) {
            let key = format!("{}/pipelines/{}/artifacts/{}/code_coverage.json", layout::project_dir(p.project_id), p.id, i + 1);
            objects.push(ObjectToWrite { file_store: 2, key, size: 512, mtime: p.created_at });
        }
    }

    // Totals kept exact from the start.
    client
        .execute(
            "INSERT INTO project_statistics (project_id, build_artifacts_size)
             SELECT p.id, COALESCE((SELECT sum(a.size) FROM ci_job_artifacts a WHERE a.project_id = p.id), 0)
             FROM projects p WHERE p.id >= $1
             ON CONFLICT (project_id) DO UPDATE SET build_artifacts_size = EXCLUDED.build_artifacts_size",
            &[&first_project],
        )
        .await?;
    for (table, seq) in [("projects", "projects_id_seq"), ("ci_pipelines", "ci_pipelines_id_seq"), ("ci_builds", "ci_builds_id_seq"), ("ci_job_artifacts", "ci_job_artifacts_id_seq")] {
        client.execute(&format!("SELECT setval('{seq}', (SELECT COALESCE(max(id), 1) FROM {table}))"), &[]).await?;
    }
    client.execute("ANALYZE", &[]).await?;

    if opts.objects {
        let stores = stores.ok_or_else(|| Error::config("seeding objects needs a store; pass --no-objects to seed rows only"))?;
        write_objects(stores, objects, &mut report).await?;
    }
    Ok(report)
}

/// Deterministic content of a given size.
fn content(key: &str, size: i64) -> Bytes {
    let seed = Sha256::digest(key.as_bytes());
    Bytes::from(seed.iter().copied().cycle().take(size as usize).collect::<Vec<u8>>())
}

async fn write_objects(stores: &Stores, objects: Vec<ObjectToWrite>, report: &mut SeedReport) -> Result<()> {
    let results: Vec<Result<i64>> = futures::stream::iter(objects.into_iter().map(|o| async move {
        let store = stores.for_file_store(o.file_store);
        store.put(&store.full_key(&o.key), content(&o.key, o.size)).await?;
        // On local disk, age the file as the artifact's creation time, as a real installation would.
        if let Some(root) = store.local_root() {
            let path = root.join(store.full_key(&o.key));
            let f = std::fs::File::options().write(true).open(&path)?;
            f.set_modified(o.mtime.into())?;
        }
        Ok(o.size)
    }))
    .buffer_unordered(32)
    .collect()
    .await;
    for r in results {
        let size = r?;
        report.objects_written += 1;
        report.object_bytes_written += size;
    }
    Ok(())
}
