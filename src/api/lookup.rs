//! What a request names, found in the database: the project (`:id` is a numeric id or a
//! URL-encoded full path), the job and its archive, the latest successful pipeline of a ref.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Serialize;

use crate::error::Result;

/// GitLab's `projects.visibility_level`.
pub const PUBLIC: i32 = 20;
pub const INTERNAL: i32 = 10;

/// A project as a request names it.
#[derive(Debug, Clone, Copy)]
pub struct Project {
    pub id: i64,
    pub visibility_level: i32,
    /// Whoever can see the project may read its jobs (GitLab: `public_builds` on, and CI/CD
    /// open to everyone with access in `project_features.builds_access_level`); otherwise
    /// members only.
    pub builds_open: bool,
    /// CI/CD (or the repository) is turned off for the project: nobody reads its jobs.
    pub builds_disabled: bool,
}

/// The project of full path `$2`: the exact path, else the path in any case (GitLab's routes
/// are found case-insensitively); the second lookup runs only when the first finds nothing.
macro_rules! by_path {
    () => {
        "(SELECT source_id FROM routes WHERE source_type = 'Project' AND path = $2
          UNION ALL
          (SELECT source_id FROM routes WHERE source_type = 'Project' AND lower(path) = lower($2) LIMIT 1)
          LIMIT 1)"
    };
}

/// `$1` an id or NULL, `$2` a full path or NULL. Standalone: every project's jobs are open.
const STANDALONE_PROJECT: &str = concat!(
    "SELECT p.id, p.visibility_level, true AS builds_open, false AS builds_disabled FROM projects p
     WHERE p.id = COALESCE($1, ",
    by_path!(),
    ")"
);

/// On GitLab's tables: also the project's CI visibility; projects being deleted or hidden are
/// not found, as GitLab's API does not find them.
const GITLAB_PROJECT: &str = concat!(
    "SELECT p.id, p.visibility_level,
            p.public_builds IS NOT FALSE AND COALESCE(f.builds_access_level, 20) >= 20 AS builds_open,
            COALESCE(f.builds_access_level, 20) = 0 OR COALESCE(f.repository_access_level, 20) = 0 AS builds_disabled
     FROM projects p LEFT JOIN project_features f ON f.project_id = p.id
     WHERE p.pending_delete IS NOT TRUE AND p.hidden IS NOT TRUE AND p.id = COALESCE($1, ",
    by_path!(),
    ")"
);

/// The project `id` names (its id, or its full path, already percent-decoded), on GitLab's
/// tables when `gitlab`.
pub async fn project(client: &tokio_postgres::Client, id: &str, gitlab: bool) -> Result<Option<Project>> {
    let (by_id, by_path) = match id.parse::<i64>() {
        Ok(n) => (Some(n), None),
        Err(_) => (None, Some(id)),
    };
    let sql = if gitlab { GITLAB_PROJECT } else { STANDALONE_PROJECT };
    Ok(client.query_opt(sql, &[&by_id, &by_path]).await?.map(|r| Project {
        id: r.get("id"),
        visibility_level: r.get("visibility_level"),
        builds_open: r.get::<_, Option<bool>>("builds_open").unwrap_or(false),
        builds_disabled: r.get::<_, Option<bool>>("builds_disabled").unwrap_or(false),
    }))
}

/// The columns of a job and of its archive row (`file_type` 1), if any; `$1` is the job's
/// project. The archive's object key is computed as the deletion queue computes it.
macro_rules! job_select {
    () => {
        "SELECT b.id, b.partition_id, b.project_id, b.name, b.ref, b.tag, b.status, b.created_at, b.finished_at, b.erased_at,
                b.artifacts_expire_at, p.id AS pipeline_id, p.ref AS pipeline_ref, p.status AS pipeline_status,
                p.locked = 1 AS pipeline_locked,
                a.id AS archive_id, a.size AS archive_size, a.accessibility::smallint AS archive_accessibility, a.file_store::smallint AS archive_file_store, a.expire_at AS archive_expire_at,
                housekeep.artifact_file(a.file, a.file_final_path) AS archive_file,
                housekeep.artifact_store_dir(a.project_id, a.created_at, a.job_id, a.id, a.file_final_path, a.file_location)
                  || '/' || housekeep.artifact_file(a.file, a.file_final_path) AS archive_key
         FROM p_ci_builds b
         JOIN p_ci_pipelines p ON p.id = b.commit_id AND p.partition_id = b.partition_id
         LEFT JOIN p_ci_job_artifacts a ON a.job_id = b.id AND a.partition_id = b.partition_id AND a.file_type = 1 "
    };
}

const JOB: &str = concat!(job_select!(), "WHERE b.id = $2 AND b.project_id = $1 AND b.type = 'Ci::Build'");

/// The latest job named `$3` with an archive, in the newest successful pipeline of ref `$2`
/// (any source) or that pipeline's child pipelines in the same project — GitLab's
/// `latest_successful_build_for_ref`.
const LATEST_FOR_REF: &str = concat!(
    "WITH pl AS (
       SELECT id, partition_id FROM p_ci_pipelines WHERE project_id = $1 AND ref = $2 AND status = 'success' ORDER BY id DESC LIMIT 1
     ), family AS (
       SELECT id, partition_id FROM pl
       UNION ALL
       SELECT s.pipeline_id, s.partition_id FROM ci_sources_pipelines s JOIN pl ON s.source_pipeline_id = pl.id
       WHERE s.source_partition_id = pl.partition_id AND s.project_id = $1
     ) ",
    job_select!(),
    "JOIN family f ON f.id = b.commit_id AND f.partition_id = b.partition_id
     WHERE b.project_id = $1 AND b.name = $3 AND b.type = 'Ci::Build' AND a.id IS NOT NULL
     ORDER BY b.id DESC LIMIT 1"
);

/// A job's archive: where its object is.
#[derive(Debug, Clone, Serialize)]
pub struct Archive {
    pub id: i64,
    pub size: Option<i64>,
    pub file_store: i16,
    /// The file name (`artifacts.zip`).
    pub file: String,
    /// The object's key, relative to the store's prefix.
    #[serde(skip)]
    pub key: String,
    pub expire_at: Option<DateTime<Utc>>,
    /// GitLab's `accessibility`: 0 public, 1 private (Developers and up), 2 none.
    pub accessibility: i16,
}

/// A job of the project, with its archive.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: i64,
    pub partition_id: i64,
    pub project_id: i64,
    pub name: Option<String>,
    pub r#ref: Option<String>,
    pub tag: Option<bool>,
    pub status: Option<String>,
    pub created_at: Option<NaiveDateTime>,
    pub finished_at: Option<NaiveDateTime>,
    pub erased_at: Option<NaiveDateTime>,
    pub artifacts_expire_at: Option<NaiveDateTime>,
    pub pipeline_id: i64,
    pub pipeline_ref: Option<String>,
    pub pipeline_status: Option<String>,
    pub pipeline_locked: bool,
    pub archive: Option<Archive>,
}

impl Job {
    fn from_row(r: &tokio_postgres::Row) -> Job {
        let archive = r.get::<_, Option<i64>>("archive_id").map(|id| Archive {
            id,
            size: r.get("archive_size"),
            file_store: r.get("archive_file_store"),
            file: r.get::<_, Option<String>>("archive_file").unwrap_or_default(),
            key: r.get::<_, Option<String>>("archive_key").unwrap_or_default(),
            expire_at: r.get("archive_expire_at"),
            accessibility: r.get::<_, Option<i16>>("archive_accessibility").unwrap_or(0),
        });
        Job {
            id: r.get("id"),
            partition_id: r.get("partition_id"),
            project_id: r.get("project_id"),
            name: r.get("name"),
            r#ref: r.get("ref"),
            tag: r.get("tag"),
            status: r.get("status"),
            created_at: r.get("created_at"),
            finished_at: r.get("finished_at"),
            erased_at: r.get("erased_at"),
            artifacts_expire_at: r.get("artifacts_expire_at"),
            pipeline_id: r.get("pipeline_id"),
            pipeline_ref: r.get("pipeline_ref"),
            pipeline_status: r.get("pipeline_status"),
            pipeline_locked: r.get::<_, Option<bool>>("pipeline_locked").unwrap_or(false),
            archive,
        }
    }

    /// The archive, when it can be downloaded by the job's id: GitLab serves it while it has not
    /// expired, or while its pipeline is locked (the latest of its ref).
    pub fn downloadable_archive(&self, now: DateTime<Utc>) -> Option<&Archive> {
        self.archive
            .as_ref()
            .filter(|a| a.expire_at.is_none_or(|at| at > now) || self.pipeline_locked)
    }
}

/// Job `job_id` of project `project_id` (jobs of other projects are not found).
pub async fn job(client: &tokio_postgres::Client, project_id: i64, job_id: i64) -> Result<Option<Job>> {
    Ok(client.query_opt(JOB, &[&project_id, &job_id]).await?.as_ref().map(Job::from_row))
}

/// The job named `name` of the latest successful pipeline of `ref_name` that has an archive.
pub async fn latest_for_ref(client: &tokio_postgres::Client, project_id: i64, ref_name: &str, name: &str) -> Result<Option<Job>> {
    Ok(client
        .query_opt(LATEST_FOR_REF, &[&project_id, &ref_name, &name])
        .await?
        .as_ref()
        .map(Job::from_row))
}
