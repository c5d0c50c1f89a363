//! `housekeep seed`: a realistic, deterministic dataset for demos, tests and benchmarks.
//!
//! Projects with pipelines on several refs and mixed statuses; per pipeline a build job (archive,
//! metadata, trace), a test job (junit, trace) and a lint job (trace); `expire_at` in the past,
//! the future and NULL; `locked` 0/1/2 as GitLab leaves them (recent pipelines locked, old ones
//! unlocked, very old rows unknown); both object layouts. Then the things housekeeping exists
//! for: queued deletions, pending direct uploads (fresh and stale), planted orphans, pipeline
//! artifacts that must never be touched, and rows whose object is missing.
//!
//! The rows are GitLab's: pipelines, jobs and artifacts spread over three partitions (100 and 101
//! in the first partition tables, 102 in `gitlab_partitions_dynamic`), refs in `ci_refs`, full
//! paths in `routes`, some artifacts in the legacy layout (`file_location = 1`).
//!
//! Rows go in through binary COPY. Ids continue the sequences (GitLab's id triggers assign them
//! to pipelines, jobs and artifacts in insertion order), so seeding twice adds a second dataset;
//! seed a database nothing else writes to meanwhile. Given the same `--seed` and starting state,
//! ids, sizes, states and keys are the same; times are relative to the moment of seeding.

use std::collections::HashMap;

use bytes::Bytes;
use chrono::{DateTime, Duration, NaiveDateTime, Utc};
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
/// The namespace every seeded project lives in.
const NAMESPACE_ID: i64 = 1;
const JOBS: [&str; 3] = ["build", "test", "lint"];
/// (job index, file_type, file_format, file name)
const ARTIFACTS: [(usize, i32, i16, &str); 6] = [
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
    partition_id: i64,
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

/// The next free id of a table whose ids seed chooses itself.
async fn next_id(client: &tokio_postgres::Client, table: Table) -> Result<i64> {
    let sql = match table {
        Table::Projects => "SELECT COALESCE(max(id), 0) + 1 AS next FROM projects",
        Table::CiRefs => "SELECT COALESCE(max(id), 0) + 1 AS next FROM ci_refs",
    };
    Ok(client.query_one(sql, &[]).await?.get("next"))
}

/// Tables whose ids seed chooses (the partitioned ones get theirs from GitLab's id triggers).
#[derive(Clone, Copy)]
enum Table {
    Projects,
    CiRefs,
}

/// The next value a sequence hands out.
async fn next_from_sequence(client: &tokio_postgres::Client, seq: &str) -> Result<i64> {
    let row = client.query_one("SELECT COALESCE(pg_sequence_last_value($1::text::regclass), 0) + 1 AS next", &[&seq]).await?;
    Ok(row.get("next"))
}

/// After `n` rows were inserted through an id trigger: they must have got `first..first + n`.
async fn check_sequence(client: &tokio_postgres::Client, seq: &str, first: i64, n: i64) -> Result<()> {
    let last = next_from_sequence(client, seq).await? - 1;
    if n > 0 && last != first + n - 1 {
        return Err(Error::other(format!(
            "another process inserted rows while seeding ({seq} is at {last}, expected {}); seed a database nothing else writes to",
            first + n - 1
        )));
    }
    Ok(())
}

/// The partition of a pipeline (and its jobs and artifacts) created at `t`: the oldest rows in
/// GitLab's first partitions, the newest in a dynamic one, as on an installation that has been
/// through partition rollovers.
fn partition_for(now: DateTime<Utc>, t: DateTime<Utc>) -> i64 {
    match (now - t).num_days() {
        d if d > 40 => 100,
        d if d > 20 => 101,
        _ => 102,
    }
}

fn naive(t: DateTime<Utc>) -> NaiveDateTime {
    t.naive_utc()
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
    let ids = Ids {
        project: next_id(client, Table::Projects).await?,
        ci_ref: next_id(client, Table::CiRefs).await?,
        pipeline: next_from_sequence(client, "ci_pipelines_id_seq").await?,
        build: next_from_sequence(client, "ci_builds_id_seq").await?,
        artifact: next_from_sequence(client, "ci_job_artifacts_id_seq").await?,
    };
    let mut s = Seeding {
        opts,
        now: Utc::now(),
        rng: StdRng::seed_from_u64(opts.seed),
        report: SeedReport::default(),
        objects: Vec::new(),
        ids,
        project_ids: (0..opts.projects).map(|i| ids.project + i).collect(),
        keep_latest: HashMap::new(),
    };
    s.insert_projects(client).await?;
    let pipelines = s.plan_pipelines();
    s.insert_pipelines(client, &pipelines).await?;
    s.insert_jobs(client, &pipelines).await?;
    let next_artifact = s.insert_artifacts(client, &pipelines).await?;
    // Ids no row has: for the files of artifacts deleted earlier (queued, or orphaned).
    let unused = (ids.job(pipelines.len(), 0) + 1000, next_artifact);
    s.insert_queued(client, unused).await?;
    s.insert_pending(client).await?;
    if opts.objects {
        s.plan_orphans(&pipelines, unused);
    }
    s.insert_statistics(client).await?;
    client.execute("ANALYZE", &[]).await?;
    if opts.objects {
        let stores = stores.ok_or_else(|| Error::config("seeding objects needs a store; pass --no-objects to seed rows only"))?;
        write_objects(stores, std::mem::take(&mut s.objects), &mut s.report).await?;
    }
    Ok(s.report)
}

/// The first id of each kind this seeding uses; ids follow in insertion order.
#[derive(Clone, Copy)]
struct Ids {
    project: i64,
    ci_ref: i64,
    pipeline: i64,
    build: i64,
    artifact: i64,
}

impl Ids {
    /// One ci_ref per project and ref.
    fn ci_ref(&self, project_id: i64, ref_idx: usize) -> i64 {
        self.ci_ref + (project_id - self.project) * REFS.len() as i64 + ref_idx as i64
    }
    /// Jobs: three per pipeline, ids in pipeline order.
    fn job(&self, pipeline_idx: usize, j: usize) -> i64 {
        self.build + (pipeline_idx * JOBS.len() + j) as i64
    }
}

/// A job's status from its pipeline's: the test job is the one that fails a failed pipeline.
fn job_status(p: &Pipeline, j: usize) -> &'static str {
    match (p.status, j) {
        ("failed", 1) => "failed",
        ("failed", _) | ("success", _) | ("manual", _) => "success",
        ("running", 2) => "running",
        ("running", _) => "success",
        (s, _) => s,
    }
}

/// One seeding in progress: its randomness, what it reported and the objects still to write.
struct Seeding<'a> {
    opts: &'a SeedOptions,
    now: DateTime<Utc>,
    rng: StdRng,
    report: SeedReport,
    objects: Vec<ObjectToWrite>,
    ids: Ids,
    project_ids: Vec<i64>,
    keep_latest: HashMap<i64, bool>,
}

impl Seeding<'_> {
    /// Projects with their full paths (routes), CI settings and refs.
    async fn insert_projects(&mut self, client: &tokio_postgres::Client) -> Result<()> {
        // One project in ten has keep-latest off.
        self.keep_latest = self.project_ids.iter().map(|&p| (p, self.rng.random_range(0..10) != 0)).collect();
        let created = naive(self.now - Duration::days(400));
        self.report.projects = copy_in(
            client,
            "COPY projects (id, name, path, namespace_id, created_at, updated_at) FROM STDIN BINARY",
            &[Type::INT8, Type::VARCHAR, Type::VARCHAR, Type::INT8, Type::TIMESTAMP, Type::TIMESTAMP],
            self.project_ids.iter().map(|&p| row![p, format!("project-{p}"), format!("project-{p}"), NAMESPACE_ID, created, created]),
        )
        .await? as i64;
        client.execute("SELECT setval('projects_id_seq', (SELECT COALESCE(max(id), 1) FROM projects))", &[]).await?;
        copy_in(
            client,
            "COPY routes (source_id, source_type, path, name, namespace_id, created_at, updated_at) FROM STDIN BINARY",
            &[Type::INT8, Type::VARCHAR, Type::VARCHAR, Type::VARCHAR, Type::INT8, Type::TIMESTAMP, Type::TIMESTAMP],
            self.project_ids.iter().map(|&p| {
                let path = format!("group-{}/project-{p}", p % 7);
                row![p, "Project".to_string(), path.clone(), path, NAMESPACE_ID, created, created]
            }),
        )
        .await?;
        copy_in(
            client,
            "COPY project_ci_cd_settings (project_id, keep_latest_artifact) FROM STDIN BINARY",
            &[Type::INT8, Type::BOOL],
            self.project_ids.iter().map(|&p| row![p, self.keep_latest[&p]]),
        )
        .await?;
        // One ci_ref per project and ref: refs/heads/NAME for branches, refs/tags/NAME for tags.
        let ids = self.ids;
        copy_in(
            client,
            "COPY ci_refs (id, project_id, ref_path) FROM STDIN BINARY",
            &[Type::INT8, Type::INT8, Type::TEXT],
            self.project_ids.iter().flat_map(|&p| {
                REFS.iter().enumerate().map(move |(i, (name, tag))| {
                    let path = if *tag { format!("refs/tags/{name}") } else { format!("refs/heads/{name}") };
                    row![ids.ci_ref(p, i), p, path]
                })
            }),
        )
        .await?;
        client.execute("SELECT setval('ci_refs_id_seq', (SELECT COALESCE(max(id), 1) FROM ci_refs))", &[]).await?;
        Ok(())
    }

    /// Pipelines, oldest first, spread over the history, locked as GitLab leaves them.
    fn plan_pipelines(&mut self) -> Vec<Pipeline> {
        let n_pipelines = (self.opts.artifacts + ARTIFACTS.len() as i64 - 1) / ARTIFACTS.len() as i64;
        let span = Duration::days(HISTORY_DAYS).num_seconds();
        let mut pipelines = Vec::with_capacity(n_pipelines as usize);
        for i in 0..n_pipelines {
            let created_at = self.now - Duration::seconds(span - span * i / n_pipelines.max(1)) - Duration::minutes(5);
            let recent = self.now - created_at < Duration::hours(2);
            let status = match self.rng.random_range(0..100) {
                _ if recent && self.rng.random_range(0..3) == 0 => "running",
                0..=59 => "success",
                60..=84 => "failed",
                85..=92 => "canceled",
                93..=96 => "skipped",
                _ => "manual",
            };
            let finished_at = (status != "running").then(|| created_at + Duration::minutes(self.rng.random_range(1..30)));
            let project_id = self.project_ids[(i % self.opts.projects) as usize];
            // feature/login was abandoned five weeks ago: its last pipelines stay locked past expiry.
            let mut ref_idx = ((i / self.opts.projects) % REFS.len() as i64) as usize;
            if ref_idx == 2 && self.now - created_at < Duration::days(35) {
                ref_idx = 0;
            }
            pipelines.push(Pipeline {
                id: self.ids.pipeline + i,
                partition_id: partition_for(self.now, created_at),
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
            let kept = self.keep_latest[&p.project_id];
            p.locked = i16::from(kept && (keepers.contains(&i) || self.now - p.created_at < Duration::days(14)));
        }
        pipelines
    }

    async fn insert_pipelines(&mut self, client: &tokio_postgres::Client, pipelines: &[Pipeline]) -> Result<()> {
        let ids = self.ids;
        self.report.pipelines = copy_in(
            client,
            "COPY p_ci_pipelines (partition_id, project_id, ref, tag, sha, status, source, locked, ci_ref_id, created_at, updated_at, finished_at) FROM STDIN BINARY",
            &[Type::INT8, Type::INT8, Type::VARCHAR, Type::BOOL, Type::VARCHAR, Type::VARCHAR, Type::INT4, Type::INT2, Type::INT8, Type::TIMESTAMP, Type::TIMESTAMP, Type::TIMESTAMP],
            pipelines.iter().map(|p| {
                let (r, tag) = REFS[p.ref_idx];
                let sha = hex::encode(&Sha256::digest(p.id.to_le_bytes())[..20]);
                let source: i32 = if p.id % 11 == 0 { 4 } else { 1 };
                row![
                    p.partition_id,
                    p.project_id,
                    r.to_string(),
                    tag,
                    sha,
                    p.status.to_string(),
                    source,
                    p.locked,
                    ids.ci_ref(p.project_id, p.ref_idx),
                    naive(p.created_at),
                    naive(p.finished_at.unwrap_or(p.created_at)),
                    p.finished_at.map(naive)
                ]
            }),
        )
        .await? as i64;
        check_sequence(client, "ci_pipelines_id_seq", self.ids.pipeline, self.report.pipelines).await?;
        Ok(())
    }

    async fn insert_jobs(&mut self, client: &tokio_postgres::Client, pipelines: &[Pipeline]) -> Result<()> {
        self.report.jobs = copy_in(
            client,
            "COPY p_ci_builds (partition_id, project_id, commit_id, name, ref, tag, type, status, created_at, finished_at, artifacts_expire_at) FROM STDIN BINARY",
            &[Type::INT8, Type::INT8, Type::INT8, Type::VARCHAR, Type::VARCHAR, Type::BOOL, Type::VARCHAR, Type::VARCHAR, Type::TIMESTAMP, Type::TIMESTAMP, Type::TIMESTAMP],
            pipelines.iter().flat_map(|p| {
                let status = (0..JOBS.len()).map(|j| job_status(p, j)).collect::<Vec<_>>();
                (0..JOBS.len()).map(move |j| {
                    let finished = if status[j] == "running" { None } else { p.finished_at.or(Some(p.created_at + Duration::minutes(3))) };
                    let expire = (j == 0).then(|| p.created_at + Duration::days(30));
                    let (r, tag) = REFS[p.ref_idx];
                    row![
                        p.partition_id,
                        p.project_id,
                        p.id,
                        JOBS[j].to_string(),
                        r.to_string(),
                        tag,
                        "Ci::Build".to_string(),
                        status[j].to_string(),
                        naive(p.created_at),
                        finished.map(naive),
                        expire.map(naive)
                    ]
                })
            }),
        )
        .await? as i64;
        check_sequence(client, "ci_builds_id_seq", self.ids.build, self.report.jobs).await?;
        Ok(())
    }

    /// Artifacts of the jobs; returns the id after the last one.
    async fn insert_artifacts(&mut self, client: &tokio_postgres::Client, pipelines: &[Pipeline]) -> Result<i64> {
        let mut artifact_rows = Vec::new();
        let mut aid = self.ids.artifact;
        'outer: for (pi, p) in pipelines.iter().enumerate() {
            for &(j, file_type, file_format, file) in ARTIFACTS.iter() {
                if aid - self.ids.artifact >= self.opts.artifacts {
                    break 'outer;
                }
                let created_at = p.finished_at.unwrap_or(p.created_at + Duration::minutes(2));
                let age = self.now - p.created_at;
                let is_trace = file_type == 3;
                let locked: i16 = if age > Duration::days(45) && self.rng.random_range(0..10) < 7 { 2 } else { p.locked };
                let expire_at = if is_trace {
                    (self.rng.random_range(0..10) < 4).then(|| created_at + Duration::days(30))
                } else {
                    (self.rng.random_range(0..10) != 0).then(|| created_at + Duration::days(30))
                };
                let file_store: i32 = if self.rng.random_range(0..10) < 8 { 2 } else { 1 };
                let size = match file_type {
                    1 => log_uniform(&mut self.rng, 1024, 65_536),
                    2 => log_uniform(&mut self.rng, 100, 2048),
                    3 => log_uniform(&mut self.rng, 1024, 20_480),
                    _ => log_uniform(&mut self.rng, 512, 5120),
                };
                let direct = !is_trace && file_store == 2 && age < Duration::days(40) && self.rng.random_range(0..10) < 7;
                let final_path = direct.then(|| layout::final_key(p.project_id, &upload_id(&mut self.rng)));
                // Old local files of installations from before hashed storage.
                let legacy = !direct && file_store == 1 && age > Duration::days(45) && self.rng.random_range(0..4) == 0;
                let file_location: i16 = if legacy { 1 } else { 2 };
                let missing = self.rng.random_range(0..100) == 0;
                let jid = self.ids.job(pi, j);
                if self.opts.objects {
                    if missing {
                        self.report.missing_objects += 1;
                    } else {
                        let key = match &final_path {
                            Some(k) => k.clone(),
                            None if legacy => legacy_key(p.project_id, created_at, jid, file),
                            None => layout::hashed_key(p.project_id, created_at, jid, aid, file),
                        };
                        self.objects.push(ObjectToWrite { file_store: file_store as i16, key, size, mtime: created_at });
                    }
                }
                self.report.artifact_bytes += size;
                artifact_rows.push((p.partition_id, p.project_id, jid, file_type, file_format, file_location, size, file_store, file, final_path, expire_at, locked, created_at));
                aid += 1;
            }
        }
        self.report.artifacts = copy_in(
            client,
            "COPY p_ci_job_artifacts (partition_id, project_id, job_id, file_type, file_format, file_location, size, file_store, file, file_final_path, expire_at, locked, created_at, updated_at) FROM STDIN BINARY",
            &[Type::INT8, Type::INT8, Type::INT8, Type::INT4, Type::INT2, Type::INT2, Type::INT8, Type::INT4, Type::VARCHAR, Type::TEXT, Type::TIMESTAMPTZ, Type::INT2, Type::TIMESTAMPTZ, Type::TIMESTAMPTZ],
            artifact_rows.into_iter().map(|(part, pid, jid, ft, ff, fl, size, fs, file, fp, exp, locked, created)| {
                row![part, pid, jid, ft, ff, fl, size, fs, file.to_string(), fp, exp, locked, created, created]
            }),
        )
        .await? as i64;
        check_sequence(client, "ci_job_artifacts_id_seq", self.ids.artifact, self.report.artifacts).await?;
        Ok(aid)
    }

    /// Already queued deletions: artifacts deleted earlier whose files still wait (ids beyond ours).
    async fn insert_queued(&mut self, client: &tokio_postgres::Client, (unused_job, aid): (i64, i64)) -> Result<()> {
        let n_queued = (self.opts.artifacts / 100).max(5);
        let mut queued = Vec::new();
        for q in 0..n_queued {
            let project_id = self.project_ids[self.rng.random_range(0..self.project_ids.len())];
            let created = self.now - Duration::days(self.rng.random_range(31..59));
            let key = layout::hashed_key(project_id, created, unused_job + q, aid + 1000 + q, "artifacts.zip");
            let (dir, file) = layout::split_dir_file(&key);
            let pick_up_at = if q % 2 == 0 { self.now - Duration::hours(self.rng.random_range(1..20)) } else { self.now + Duration::minutes(self.rng.random_range(5..60)) };
            let size = log_uniform(&mut self.rng, 1024, 65_536);
            queued.push((project_id, dir.to_string(), file.to_string(), pick_up_at, size));
            if self.opts.objects {
                self.objects.push(ObjectToWrite { file_store: 2, key, size, mtime: created });
            }
        }
        let (q_pids, q_dirs, q_files, q_picks, q_sizes) = queued.into_iter().fold(
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new()),
            |mut v, (pid, dir, file, pick, size)| {
                v.0.push(pid);
                v.1.push(dir);
                v.2.push(file);
                v.3.push(pick);
                v.4.push(size);
                v
            },
        );
        self.report.queued_objects = client
            .execute(
                "WITH q AS (
                   SELECT nextval('ci_deleted_objects_id_seq') AS id, u.*
                   FROM unnest($1::bigint[], $2::text[], $3::text[], $4::timestamptz[], $5::bigint[]) AS u(project_id, store_dir, file, pick_up_at, size)
                 ), queued AS (
                   INSERT INTO ci_deleted_objects (id, file_store, pick_up_at, store_dir, file, project_id) SELECT id, 2, pick_up_at, store_dir, file, project_id FROM q
                 )
                 INSERT INTO housekeep.deleted_object_state (deleted_object_id, size) SELECT id, size FROM q",
                &[&q_pids, &q_dirs, &q_files, &q_picks, &q_sizes],
            )
            .await? as i64;
        Ok(())
    }

    /// Pending direct uploads: half fresh, half stale (older than 3 h).
    async fn insert_pending(&mut self, client: &tokio_postgres::Client) -> Result<()> {
        let n_pending = (self.opts.projects / 2).max(4);
        let mut pending = Vec::new();
        for i in 0..n_pending {
            let project_id = self.project_ids[self.rng.random_range(0..self.project_ids.len())];
            let key = layout::final_key(project_id, &upload_id(&mut self.rng));
            let created = if i % 2 == 0 { self.now - Duration::minutes(10) } else { self.now - Duration::hours(self.rng.random_range(4..48)) };
            if self.opts.objects {
                self.objects.push(ObjectToWrite { file_store: 2, key: key.clone(), size: log_uniform(&mut self.rng, 1024, 65_536), mtime: created });
            }
            pending.push((key, created));
        }
        self.report.pending_uploads = copy_in(
            client,
            "COPY housekeep.pending_direct_uploads (object_key, created_at) FROM STDIN BINARY",
            &[Type::TEXT, Type::TIMESTAMPTZ],
            pending.into_iter().map(|(k, c)| row![k, c]),
        )
        .await? as i64;
        Ok(())
    }

    /// Orphans (objects no row knows) and pipeline artifacts (never to be touched).
    fn plan_orphans(&mut self, pipelines: &[Pipeline], (unused_job, aid): (i64, i64)) {
        for i in 0..self.opts.orphans {
            let project_id = self.project_ids[self.rng.random_range(0..self.project_ids.len())];
            let mtime = self.now - Duration::days(self.rng.random_range(1..30));
            let size = log_uniform(&mut self.rng, 1024, 65_536);
            // Two in three are leaked direct uploads; the rest are hashed directories on local disk.
            if i % 3 != 2 {
                self.objects.push(ObjectToWrite { file_store: 2, key: layout::final_key(project_id, &upload_id(&mut self.rng)), size, mtime });
            } else {
                let key = layout::hashed_key(project_id, mtime, unused_job + 100_000 + i, aid + 100_000 + i, "artifacts.zip");
                self.objects.push(ObjectToWrite { file_store: 1, key, size, mtime });
            }
        }
        self.report.orphans = self.opts.orphans;
        for (i, p) in pipelines.iter().enumerate().filter(|(i, _)| i % 10 == 0) {
            let key = format!("{}/pipelines/{}/artifacts/{}/code_coverage.json", layout::project_dir(p.project_id), p.id, i + 1);
            self.objects.push(ObjectToWrite { file_store: 2, key, size: 512, mtime: p.created_at });
        }
    }

    /// Totals kept exact from the start; storage_size is the sum of its parts, as in GitLab.
    async fn insert_statistics(&self, client: &tokio_postgres::Client) -> Result<()> {
        client
            .execute(
                "INSERT INTO project_statistics (project_id, namespace_id, repository_size, build_artifacts_size, storage_size)
                 SELECT p.id, p.namespace_id, 1048576 * (1 + p.id % 50), t.total, 1048576 * (1 + p.id % 50) + t.total
                 FROM projects p
                 CROSS JOIN LATERAL (SELECT COALESCE(sum(a.size), 0)::bigint AS total FROM p_ci_job_artifacts a WHERE a.project_id = p.id) t
                 WHERE p.id >= $1",
                &[&self.ids.project],
            )
            .await?;
        Ok(())
    }
}

/// The legacy key of an artifact (`file_location = 1`): `YYYY_MM/<project_id>/<job_id>/<file>`.
fn legacy_key(project_id: i64, created_at: DateTime<Utc>, job_id: i64, file: &str) -> String {
    format!("{}/{project_id}/{job_id}/{file}", created_at.format("%Y_%m"))
}

/// Deterministic content of a given size.
fn content(key: &str, size: i64) -> Bytes {
    let seed = Sha256::digest(key.as_bytes());
    Bytes::from(seed.iter().copied().cycle().take(size as usize).collect::<Vec<u8>>())
}

async fn write_objects(stores: &Stores, objects: Vec<ObjectToWrite>, report: &mut SeedReport) -> Result<()> {
    let results: Vec<Result<i64>> = futures::stream::iter(objects.into_iter().map(|o| async move {
        let store = stores.for_file_store(o.file_store);
        // Dated as the artifact's creation time, as a real installation's would be.
        store.put_dated(&store.full_key(&o.key), content(&o.key, o.size), o.mtime.into()).await?;
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
