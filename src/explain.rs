//! `housekeep explain --job ID`: why downloading a job's artifacts answers 404, and what to do.
//!
//! GitLab's `GET /jobs/:id/artifacts` answers 404 unless the job's archive row (`file_type` 1)
//! exists, is not expired (or its pipeline is locked, which keeps it) and its object can be
//! read. This reads what the database and the store know about the job — the job and its
//! pipeline, every artifact row, the archive's object, queued deletions of the job's keys,
//! housekeep's runs — and returns one [`Verdict`] with the reason and the fixes, plus what lies
//! outside our data (`needs:`, `dependencies:`, download by ref, permissions) and how to check
//! it. Read-only: nothing is changed, in the database or in the store.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::reports::{ArtifactRow, FileType, Named, artifact_columns, route_join, time};
use crate::store::{Stores, layout};

/// What the data says about the job's archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The archive row exists, is live (or kept) and its object is there (or was not checked):
    /// GitLab serves it; a 404 comes from outside our data.
    Available,
    /// The archive row exists but expired and its pipeline is not locked: GitLab answers 404
    /// already, and housekeeping removes the row on its next run.
    Expired,
    /// The archive row exists but its object is not in the store.
    ObjectMissing,
    /// The row is gone and the job's objects wait in the deletion queue.
    QueuedForDeletion,
    /// The row is gone and nothing is queued: it expired or was deleted, and its file removed.
    Deleted,
    /// The job was erased (artifacts and log).
    Erased,
    /// The job has not finished (or a manual job was never played): nothing to download yet.
    NotFinished,
    /// No archive was ever uploaded for this job.
    NeverUploaded,
}

impl Verdict {
    /// Whether GitLab's download endpoint answers 404 in this state.
    pub fn is_404(self) -> bool {
        self != Verdict::Available
    }
}

/// Whether the archive's object was found in its store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectState {
    Present,
    Missing,
    /// No store configured, or the store could not be asked (see `object_note`).
    NotChecked,
    /// There is no archive row whose object could be checked.
    NoArchive,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobInfo {
    pub id: i64,
    pub project_id: i64,
    pub project_path: Option<String>,
    pub pipeline_id: Option<i64>,
    pub partition_id: i64,
    pub name: Option<String>,
    #[serde(rename = "ref")]
    pub ref_name: Option<String>,
    pub status: Option<String>,
    /// `Ci::Build`, or `Ci::Bridge` for a trigger job.
    #[serde(rename = "type")]
    pub job_type: Option<String>,
    #[serde(serialize_with = "opt_time")]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "opt_time")]
    pub erased_at: Option<DateTime<Utc>>,
    /// Set by GitLab when an archive is uploaded with an expiry (NULL after keep): evidence of
    /// an upload once the rows are gone.
    #[serde(serialize_with = "opt_time")]
    pub artifacts_expire_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PipelineInfo {
    pub id: i64,
    pub status: Option<String>,
    /// `locked = 1`: the pipeline keeps its artifacts past their expiry (keep latest).
    pub locked: bool,
    /// The newest successful pipeline of the job's ref: the one GitLab's download-by-ref
    /// endpoint uses.
    pub latest_successful_on_ref: Option<i64>,
}

/// A queued deletion of one of the job's objects (`ci_deleted_objects`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueuedObject {
    pub id: i64,
    pub key: String,
    #[serde(serialize_with = "as_time")]
    pub queued_at: DateTime<Utc>,
    /// When delete-objects (or GitLab's worker) may remove the object.
    #[serde(serialize_with = "as_time")]
    pub pick_up_at: DateTime<Utc>,
    pub attempts: i32,
    pub last_error: Option<String>,
}

/// A run of housekeep's `expire` or `unknown` task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunInfo {
    pub id: i64,
    pub task: String,
    #[serde(serialize_with = "as_time")]
    pub started_at: DateTime<Utc>,
    pub outcome: Option<String>,
}

/// Everything `explain` found, with its verdict. The JSON keys are these field names.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub job_id: i64,
    pub verdict: Verdict,
    /// Whether GitLab's `GET /jobs/:id/artifacts` answers 404 in this state.
    pub download_404: bool,
    pub reason: String,
    pub fixes: Vec<String>,
    pub job: JobInfo,
    pub pipeline: Option<PipelineInfo>,
    pub archive: Option<ArtifactRow>,
    /// Every artifact row of the job (archive, metadata, trace, reports).
    pub artifacts: Vec<ArtifactRow>,
    pub object: ObjectState,
    pub object_note: Option<String>,
    pub queued: Vec<QueuedObject>,
    /// For a deleted archive: housekeep's first expire or unknown run after it expired.
    pub removed_by_run: Option<RunInfo>,
    /// What else makes a download answer 404, outside the data housekeep reads, and how to
    /// check it.
    pub outside_our_data: Vec<String>,
}

const JOB: &str = "
SELECT b.id, b.project_id, r.path AS project_path, b.commit_id, b.partition_id, b.name, b.ref, b.status, b.type,
       b.finished_at, b.erased_at, b.artifacts_expire_at
FROM p_ci_builds b
LEFT JOIN routes r ON r.source_type = 'Project' AND r.source_id = b.project_id
WHERE b.id = $1";

const PIPELINE: &str = "SELECT id, status, locked FROM p_ci_pipelines WHERE id = $1 AND partition_id = $2";

/// GitLab's download by ref: the newest pipeline of the ref whose status is success.
const LATEST_SUCCESS: &str = "
SELECT id FROM p_ci_pipelines WHERE project_id = $1 AND ref = $2 AND status = 'success' ORDER BY id DESC LIMIT 1";

/// Queued objects of the job's hashed (`P/<date>/<job>/<id>`) or legacy (`<month>/<project>/<job>`)
/// directories. `@final` keys carry no job id, so their queued deletions cannot be told apart.
const QUEUED: &str = "
SELECT o.id, o.store_dir || '/' || o.file AS key, o.created_at, o.pick_up_at,
       COALESCE(s.attempts, 0) AS attempts, s.last_error
FROM ci_deleted_objects o
LEFT JOIN housekeep.deleted_object_state s ON s.deleted_object_id = o.id
WHERE o.project_id = $1 AND (o.store_dir ~ $2 OR o.store_dir ~ $3)
ORDER BY o.id";

const REMOVAL_RUN: &str = "
SELECT id, task, started_at, outcome FROM housekeep.runs
WHERE task = ANY('{expire,unknown}') AND NOT dry_run AND started_at >= $1
  AND outcome IN ('success', 'partial', 'interrupted')
ORDER BY started_at LIMIT 1";

const JOB_ARTIFACTS: &str = concat!(
    "SELECT ",
    artifact_columns!(),
    " FROM (SELECT * FROM p_ci_job_artifacts WHERE job_id = $1 AND partition_id = $2) a ",
    route_join!(),
    " ORDER BY a.file_type, a.id"
);

fn naive_utc(t: Option<NaiveDateTime>) -> Option<DateTime<Utc>> {
    t.map(|t| t.and_utc())
}

/// Explain job `job_id`. `stores` is None when no store is configured: the object is then not
/// checked. An unknown job is bad input (exit 2).
pub async fn explain(client: &tokio_postgres::Client, stores: Option<&Stores>, job_id: i64) -> Result<Explanation> {
    crate::db::require_schema(client).await?;
    let now = Utc::now();
    let job = find_job(client, job_id).await?;

    let pipeline = find_pipeline(client, &job).await?;

    let artifacts: Vec<ArtifactRow> = client
        .query(JOB_ARTIFACTS, &[&job_id, &job.partition_id])
        .await?
        .iter()
        .map(ArtifactRow::from_row)
        .collect();
    let archive = artifacts.iter().find(|a| a.file_type == FileType::ARCHIVE).cloned();

    let (object, object_note) = check_object(archive.as_ref(), stores).await;

    let queued = if archive.is_none() {
        find_queued(client, &job).await?
    } else {
        Vec::new()
    };

    let verdict = decide(&job, pipeline.as_ref(), archive.as_ref(), object, &queued, now);
    let removed_by_run = removal_run(client, verdict, &job).await?;

    let mut e = Explanation {
        job_id,
        verdict,
        download_404: verdict.is_404(),
        reason: String::new(),
        fixes: Vec::new(),
        job,
        pipeline,
        archive,
        artifacts,
        object,
        object_note,
        queued,
        removed_by_run,
        outside_our_data: Vec::new(),
    };
    words(&mut e, now);
    Ok(e)
}

/// The job, or exit 2 naming it.
async fn find_job(client: &tokio_postgres::Client, job_id: i64) -> Result<JobInfo> {
    let j = client.query_opt(JOB, &[&job_id]).await?.ok_or_else(|| {
        Error::Input(format!(
            "--job {job_id}: no such job in p_ci_builds (a wrong id, or the job was deleted with its pipeline, \
             and its artifacts with it)"
        ))
    })?;
    Ok(JobInfo {
        id: j.get("id"),
        project_id: j.get("project_id"),
        project_path: j.get("project_path"),
        pipeline_id: j.get("commit_id"),
        partition_id: j.get("partition_id"),
        name: j.get("name"),
        ref_name: j.get("ref"),
        status: j.get("status"),
        job_type: j.get("type"),
        finished_at: naive_utc(j.get("finished_at")),
        erased_at: naive_utc(j.get("erased_at")),
        artifacts_expire_at: naive_utc(j.get("artifacts_expire_at")),
    })
}

/// The job's pipeline, with the newest successful pipeline of its ref.
async fn find_pipeline(client: &tokio_postgres::Client, job: &JobInfo) -> Result<Option<PipelineInfo>> {
    Ok(match job.pipeline_id {
        Some(pid) => match client.query_opt(PIPELINE, &[&pid, &job.partition_id]).await? {
            Some(p) => {
                let latest = match &job.ref_name {
                    Some(r) => client
                        .query_opt(LATEST_SUCCESS, &[&job.project_id, r])
                        .await?
                        .map(|r| r.get::<_, i64>(0)),
                    None => None,
                };
                Some(PipelineInfo {
                    id: p.get("id"),
                    status: p.get("status"),
                    locked: p.get::<_, i16>("locked") == 1,
                    latest_successful_on_ref: latest,
                })
            }
            None => None,
        },
        None => None,
    })
}

/// Whether the archive's object is in its store (one HEAD call).
async fn check_object(archive: Option<&ArtifactRow>, stores: Option<&Stores>) -> (ObjectState, Option<String>) {
    match (archive, stores) {
        (None, _) => (ObjectState::NoArchive, None),
        (Some(_), None) => (
            ObjectState::NotChecked,
            Some("no store is configured (store_url, local_store_url)".to_string()),
        ),
        (Some(a), Some(s)) => {
            let store = s.for_file_store(a.file_store.0);
            let full = store.full_key(&a.object_key);
            match store.head(&full).await {
                Ok(Some(_)) => (ObjectState::Present, Some(format!("{full} in {}", store.url()))),
                Ok(None) => (ObjectState::Missing, Some(format!("{full} is not in {}", store.url()))),
                Err(e) => (ObjectState::NotChecked, Some(format!("{full}: the store answered: {e}"))),
            }
        }
    }
}

/// The job's objects still in the deletion queue, by hashed or legacy key.
async fn find_queued(client: &tokio_postgres::Client, job: &JobInfo) -> Result<Vec<QueuedObject>> {
    let job_id = job.id;
    let hashed = format!(
        "^{}/[0-9]{{4}}_[0-9]{{2}}_[0-9]{{2}}/{job_id}/[0-9]+$",
        layout::project_dir(job.project_id)
    );
    let legacy = format!("^[0-9]{{4}}_[0-9]{{2}}/{}/{job_id}$", job.project_id);
    Ok(client
        .query(QUEUED, &[&job.project_id, &hashed, &legacy])
        .await?
        .iter()
        .map(|r| QueuedObject {
            id: r.get("id"),
            key: r.get("key"),
            queued_at: r.get("created_at"),
            pick_up_at: r.get("pick_up_at"),
            attempts: r.get("attempts"),
            last_error: r.get("last_error"),
        })
        .collect())
}

/// For a deleted archive, housekeep's first expire or unknown run after the job's expiry.
async fn removal_run(client: &tokio_postgres::Client, verdict: Verdict, job: &JobInfo) -> Result<Option<RunInfo>> {
    Ok(match (verdict, job.artifacts_expire_at) {
        (Verdict::Deleted, Some(expired)) => client.query_opt(REMOVAL_RUN, &[&expired]).await?.map(|r| RunInfo {
            id: r.get("id"),
            task: r.get("task"),
            started_at: r.get("started_at"),
            outcome: r.get("outcome"),
        }),
        _ => None,
    })
}

const UNFINISHED: [&str; 7] = [
    "created",
    "pending",
    "running",
    "waiting_for_resource",
    "preparing",
    "scheduled",
    "manual",
];

/// The verdict, from the facts alone.
fn decide(
    job: &JobInfo,
    pipeline: Option<&PipelineInfo>,
    archive: Option<&ArtifactRow>,
    object: ObjectState,
    queued: &[QueuedObject],
    now: DateTime<Utc>,
) -> Verdict {
    let Some(a) = archive else {
        return if job.erased_at.is_some() {
            Verdict::Erased
        } else if !queued.is_empty() {
            Verdict::QueuedForDeletion
        } else if job.status.as_deref().is_some_and(|s| UNFINISHED.contains(&s)) {
            Verdict::NotFinished
        } else if job.artifacts_expire_at.is_some() {
            Verdict::Deleted
        } else {
            Verdict::NeverUploaded
        };
    };
    let locked = pipeline.is_some_and(|p| p.locked);
    if a.expire_at.is_some_and(|t| t < now) && !locked {
        Verdict::Expired
    } else if object == ObjectState::Missing {
        Verdict::ObjectMissing
    } else {
        Verdict::Available
    }
}

const KEEP: &str = "keep it: the Keep button on the job page, `POST /api/v4/jobs/ID/artifacts/keep`, or `housekeep keep --job ID` (expire_at becomes NULL)";
const EXPIRE_IN: &str = "for the next runs, set a longer `artifacts:expire_in` on the job in .gitlab-ci.yml (or `expire_in: never`); the instance default is 30 days";
const KEEP_LATEST: &str = "to keep the newest artifacts of each branch whatever their expiry, leave the project's \"Keep artifacts from most recent successful jobs\" setting on (CI/CD settings > Artifacts)";
const RETRY: &str = "retry the job (or run a new pipeline) to upload a new archive";

/// The reason, the fixes and the checks outside our data, in words.
fn words(e: &mut Explanation, now: DateTime<Utc>) {
    let status = e.job.status.clone().unwrap_or_else(|| "unknown".into());
    let w = Words { e, now, status: &status };
    let (reason, fixes) = match e.verdict {
        Verdict::Available => words_available(&w),
        Verdict::Expired => words_expired(&w),
        Verdict::ObjectMissing => words_object_missing(&w),
        Verdict::QueuedForDeletion => words_queued_for_deletion(&w),
        Verdict::Deleted => words_deleted(&w),
        Verdict::Erased => words_erased(&w),
        Verdict::NotFinished => words_not_finished(&w),
        Verdict::NeverUploaded => words_never_uploaded(&w),
    };
    e.reason = reason;
    e.fixes = fixes;
    e.outside_our_data = outside(e);
}

/// What the reason and fixes of a verdict are written from.
#[derive(Clone, Copy)]
struct Words<'a> {
    e: &'a Explanation,
    now: DateTime<Utc>,
    status: &'a str,
}

impl Words<'_> {
    /// A fix with this job's id in place of `ID`.
    fn fill(&self, s: &str) -> String {
        s.replace("ID", &self.e.job_id.to_string())
    }
}

/// The reason and fixes of [`Verdict::Available`].
fn words_available(c: &Words<'_>) -> (String, Vec<String>) {
    let Words { e, now, .. } = *c;
    let a = e.archive.as_ref().expect("an archive");
    let why = match a.expire_at {
        None => "it never expires (expire_at is NULL: kept, or `expire_in: never`)".to_string(),
        Some(t) if t < now => format!(
            "it expired at {} but its pipeline {} is locked, which keeps it (the latest artifacts of its ref); \
             once a newer pipeline of the ref finishes, the unlock task unlocks it and it is removed",
            time(&t),
            e.pipeline.as_ref().map(|p| p.id.to_string()).unwrap_or_default()
        ),
        Some(t) => format!("it expires at {}", time(&t)),
    };
    let object = match e.object {
        ObjectState::Present => "its object is in the store".to_string(),
        _ => format!("its object was not checked ({})", e.object_note.as_deref().unwrap_or("no store")),
    };
    (
        format!("GitLab serves this archive: the row exists, {why}, and {object}. A 404 comes from outside our data; see below."),
        Vec::new(),
    )
}

/// The reason and fixes of [`Verdict::Expired`].
fn words_expired(c: &Words<'_>) -> (String, Vec<String>) {
    let Words { e, .. } = *c;
    let a = e.archive.as_ref().expect("an archive");
    let when = a.expire_at.as_ref().map(time).unwrap_or_default();
    let next = match a.locked.0 {
        Some(0) => "the expire task moves it to the deletion queue on its next run".to_string(),
        Some(2) | None => "its lock status is unknown (a row from before GitLab 15.0's housekeeping): the unknown task removes it on its next run, since its pipeline is not locked".to_string(),
        _ => "the row is still marked locked while its pipeline is not: the unlock task is releasing the pipeline, and the expire task then removes it".to_string(),
    };
    (
        format!("The archive expired at {when} and its pipeline is not locked, so GitLab answers 404 already; {next}."),
        vec![
            format!("while the row still exists it can be saved: {}", c.fill(KEEP)),
            EXPIRE_IN.into(),
            KEEP_LATEST.into(),
        ],
    )
}

/// The reason and fixes of [`Verdict::ObjectMissing`].
fn words_object_missing(c: &Words<'_>) -> (String, Vec<String>) {
    let Words { e, .. } = *c;
    let a = e.archive.as_ref().expect("an archive");
    (
        format!(
            "The archive row exists (key {}, {} store) but its object is missing: {}. Nothing in the database can bring it back.",
            a.object_key,
            a.file_store.name(),
            e.object_note.clone().unwrap_or_default()
        ),
        vec![
            RETRY.into(),
            "check that store_url / local_store_url point where GitLab writes this store's objects (bucket and prefix, or directory)"
                .into(),
            "run `housekeep verify` to list every row whose object is missing".into(),
        ],
    )
}

/// The reason and fixes of [`Verdict::QueuedForDeletion`].
fn words_queued_for_deletion(c: &Words<'_>) -> (String, Vec<String>) {
    let Words { e, .. } = *c;
    let first = e.queued.iter().map(|q| q.pick_up_at).min().map(|t| time(&t)).unwrap_or_default();
    (
        format!(
            "The archive row was deleted (expired, or deleted through the API or a bulk deletion) and {} of the job's objects wait \
             in the deletion queue; delete-objects removes them from {first} on.",
            e.queued.len()
        ),
        vec![format!("it is too late to keep it: {RETRY}"), EXPIRE_IN.into(), KEEP_LATEST.into()],
    )
}

/// The reason and fixes of [`Verdict::Deleted`].
fn words_deleted(c: &Words<'_>) -> (String, Vec<String>) {
    let Words { e, .. } = *c;
    let when = e.job.artifacts_expire_at.as_ref().map(time).unwrap_or_default();
    let run = match &e.removed_by_run {
        Some(r) => format!(
            "; housekeep's first {} run after that was run {} at {} ({})",
            r.task,
            r.id,
            time(&r.started_at),
            r.outcome.clone().unwrap_or_default()
        ),
        None => {
            "; no housekeep run since then removed rows (GitLab's own ExpireBuildArtifactsWorker, the API or a bulk deletion did)".into()
        }
    };
    (
        format!(
            "The archive was uploaded with an expiry ({when}) and has been deleted since: no row and nothing left in the \
             deletion queue (its file is gone){run}. housekeep's audit records (target housekeep::audit) carry each deleted \
             row's ids and key."
        ),
        vec![format!("it is too late to keep it: {RETRY}"), EXPIRE_IN.into(), KEEP_LATEST.into()],
    )
}

/// The reason and fixes of [`Verdict::Erased`].
fn words_erased(c: &Words<'_>) -> (String, Vec<String>) {
    let Words { e, .. } = *c;
    (
        format!(
            "The job was erased at {} (its artifacts and log were removed).",
            e.job.erased_at.as_ref().map(time).unwrap_or_default()
        ),
        vec![RETRY.into()],
    )
}

/// The reason and fixes of [`Verdict::NotFinished`].
fn words_not_finished(c: &Words<'_>) -> (String, Vec<String>) {
    let Words { status, .. } = *c;
    (
        format!("The job is {status}: artifacts are uploaded when it finishes, so there is nothing to download yet."),
        vec![if status == "manual" {
            "play the manual job".into()
        } else {
            "wait for the job to finish".into()
        }],
    )
}

/// The reason and fixes of [`Verdict::NeverUploaded`].
fn words_never_uploaded(c: &Words<'_>) -> (String, Vec<String>) {
    let Words { e, status, .. } = *c;
    let bridge = e.job.job_type.as_deref() == Some("Ci::Bridge");
    let mut fixes = Vec::new();
    let why = if bridge {
        fixes.push("download from the jobs of the downstream pipeline instead".into());
        "it is a trigger job (Ci::Bridge), which has no artifacts".to_string()
    } else {
        match status {
            "failed" => {
                fixes.push("add `artifacts:when: always` (or `on_failure`) to upload artifacts of failed jobs".into());
                "the job failed, and `artifacts:when` defaults to `on_success`".to_string()
            }
            "canceled" | "skipped" => {
                fixes.push("run the job to the end".into());
                format!("the job was {status} before it could upload anything")
            }
            _ => {
                fixes.push(
                    "check that `artifacts:paths` (or `untracked`) in .gitlab-ci.yml match files the job creates: the job log says \
                     \"Uploading artifacts...\" or \"No files to upload\""
                        .into(),
                );
                fixes.push("check the job log for a failed upload (413: larger than the maximum artifacts size)".into());
                format!("the job is {status} but uploaded no archive")
            }
        }
    };
    (
        format!(
            "No archive was ever uploaded for this job: {why}. (No archive row, nothing queued, and no expiry recorded on the \
             job; an archive kept forever and then deleted would leave no trace either.)"
        ),
        fixes,
    )
}

fn outside(e: &Explanation) -> Vec<String> {
    let name = e.job.name.clone().unwrap_or_else(|| "NAME".into());
    let r = e.job.ref_name.clone().unwrap_or_else(|| "REF".into());
    let by_ref = match &e.pipeline {
        Some(p) => match p.latest_successful_on_ref {
            Some(l) if l == p.id => format!("this job's pipeline {l} is that pipeline"),
            Some(l) => format!("that is pipeline {l}, not this job's pipeline {}", p.id),
            None => format!("ref {r} has no successful pipeline, so it answers 404"),
        },
        None => "this job's pipeline was not found".into(),
    };
    vec![
        format!(
            "`needs:` / `dependencies:`: a job downloads only the artifacts of the jobs it names in its own pipeline; check that the \
             downloading job lists \"{name}\" (and not `needs: [{{job: {name}, artifacts: false}}]` or `dependencies: []`), and that \
             it runs in pipeline {}",
            e.job.pipeline_id.map(|p| p.to_string()).unwrap_or_default()
        ),
        format!(
            "download by ref (`/projects/:id/jobs/artifacts/{r}/download?job={name}`, `needs:project`, `needs:pipeline`) uses the \
             newest successful pipeline of the ref and the newest job of that name in it with an archive: {by_ref}"
        ),
        "permissions: GitLab answers 404, not 403, to a user or CI_JOB_TOKEN without read access to the project's jobs \
         (private project, job token allowlist)"
            .into(),
    ]
}

fn as_time<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&time(t))
}

fn opt_time<S: serde::Serializer>(t: &Option<DateTime<Utc>>, s: S) -> std::result::Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&time(t)),
        None => s.serialize_none(),
    }
}

impl Explanation {
    /// The explanation for a person.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let j = &self.job;
        s.push_str(&format!(
            "job {} ({}) of project {} ({}), pipeline {}, ref {}: {}\n",
            j.id,
            j.name.as_deref().unwrap_or("-"),
            j.project_id,
            j.project_path.as_deref().unwrap_or("-"),
            j.pipeline_id.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            j.ref_name.as_deref().unwrap_or("-"),
            j.status.as_deref().unwrap_or("-"),
        ));
        let verdict = serde_json::to_value(self.verdict)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        s.push_str(&format!(
            "verdict: {verdict} ({})\n\n{}\n",
            if self.download_404 {
                "a download answers 404"
            } else {
                "a download is served"
            },
            self.reason
        ));
        if !self.fixes.is_empty() {
            s.push_str("\nwhat to do:\n");
            for f in &self.fixes {
                s.push_str(&format!("  - {f}\n"));
            }
        }
        s.push_str("\nartifact rows:\n");
        if self.artifacts.is_empty() {
            s.push_str("  (none)\n");
        }
        for a in &self.artifacts {
            s.push_str(&format!(
                "  {} {} {} locked={} expire_at={} {}:{}\n",
                a.artifact_id,
                a.file_type.name(),
                a.size.map(crate::reports::human_bytes).unwrap_or_else(|| "-".into()),
                a.locked.name(),
                a.expire_at.as_ref().map(time).unwrap_or_else(|| "never".into()),
                a.file_store.name(),
                a.object_key
            ));
        }
        if !self.queued.is_empty() {
            s.push_str("queued for deletion:\n");
            for q in &self.queued {
                s.push_str(&format!(
                    "  {} {} pick_up_at={} attempts={}\n",
                    q.id,
                    q.key,
                    time(&q.pick_up_at),
                    q.attempts
                ));
            }
        }
        s.push_str("\nif a download still answers 404, check what housekeep cannot see:\n");
        for o in &self.outside_our_data {
            s.push_str(&format!("  - {o}\n"));
        }
        s
    }
}
