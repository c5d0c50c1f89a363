//! Changing a job's or a project's artifacts, as GitLab's API does: keep (`POST
//! …/jobs/:job_id/artifacts/keep`, Developer), delete a job's artifacts now (`DELETE
//! …/jobs/:job_id/artifacts`, Maintainer, 204) and expire a project's deletable artifacts
//! (`DELETE /projects/:id/artifacts`, Maintainer, 202: it runs in the background, as the
//! `expire-project-artifacts` action from [`super::expiry_queue`], and the next `expire` run
//! queues the files).

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::NaiveDateTime;
use serde_json::{json, Value};

use super::auth::{Need, Principal};
use super::error::ApiError;
use super::lookup::Job;
use super::Api;
use crate::actions::job;
use crate::audit::Audit;
use crate::tasks::moved::MovedAudit;

type Answer = Result<Response, ApiError>;

/// `POST /projects/:id/jobs/:job_id/artifacts/keep`: 200 with the job.
pub async fn keep(State(api): State<Api>, Path((id, job_id)): Path<(String, String)>, headers: HeaderMap, RawQuery(q): RawQuery) -> Answer {
    let (a, mut job) = api.admit_job(&headers, q.as_deref(), &id, &job_id, Need::Keep).await?;
    // GitLab keeps only artifacts that can still be downloaded: expired ones are gone.
    if job.downloadable_archive(chrono::Utc::now()).is_none() {
        return Err(ApiError::NotFound("Not Found"));
    }
    job::keep(&a.client, job.id, job.partition_id).await?;
    audit("kept", Subject::Job(job.id), a.who, "API: keep");
    // What keep changed, without reading the job again.
    job.artifacts_expire_at = None;
    if let Some(archive) = job.archive.as_mut() {
        archive.expire_at = None;
    }
    Ok(Json(job_json(&job)).into_response())
}

/// `DELETE /projects/:id/jobs/:job_id/artifacts`: 204, whatever there was to delete.
pub async fn delete_job_artifacts(State(api): State<Api>, Path((id, job_id)): Path<(String, String)>, headers: HeaderMap, RawQuery(q): RawQuery) -> Answer {
    let (a, job) = api.admit_job(&headers, q.as_deref(), &id, &job_id, Need::Delete).await?;
    audit("delete-requested", Subject::Job(job.id), a.who, "API: DELETE job artifacts");
    let mut audit = MovedAudit::with(Audit::new(0, "api"), "deleted", "API: DELETE job artifacts");
    job::delete(&a.client, job.id, job.partition_id, &mut audit).await?;
    audit.finish().await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE /projects/:id/artifacts`: 202; the project's artifacts are expired in the background.
pub async fn delete_project_artifacts(State(api): State<Api>, Path(id): Path<String>, headers: HeaderMap, RawQuery(q): RawQuery) -> Answer {
    let a = api.admit(&headers, q.as_deref(), &id, Need::Delete).await?;
    let project_id = a.project.id;
    audit("expire-requested", Subject::Project(project_id), a.who, "API: DELETE project artifacts");
    drop(a);
    api.expiries.push(project_id);
    Ok((StatusCode::ACCEPTED, Json(json!({ "message": "202 Accepted" }))).into_response())
}

/// What a request acted on.
enum Subject {
    Job(i64),
    Project(i64),
}

/// An audit record of a request: what it did to which job or project, and who asked.
fn audit(action: &str, subject: Subject, by: Principal, reason: &str) {
    let user = who(by);
    match subject {
        Subject::Job(job_id) => tracing::info!(target: "housekeep::audit", task = "api", action, job_id, user, reason),
        Subject::Project(project_id) => tracing::info!(target: "housekeep::audit", task = "api", action, project_id, user, reason),
    }
}

/// Who made a request, for audit records (never a token).
fn who(p: Principal) -> String {
    match p {
        Principal::Anonymous => "anonymous".into(),
        Principal::User { id, .. } => format!("user {id}"),
        Principal::Job { job_id, .. } => format!("job {job_id}"),
    }
}

fn time(t: Option<NaiveDateTime>) -> Value {
    t.map_or(Value::Null, |t| Value::String(t.and_utc().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)))
}

/// The job as GitLab's API presents one (the fields housekeep has).
fn job_json(job: &Job) -> Value {
    json!({
        "id": job.id,
        "name": job.name,
        "ref": job.r#ref,
        "tag": job.tag,
        "status": job.status,
        "created_at": time(job.created_at),
        "finished_at": time(job.finished_at),
        "erased_at": time(job.erased_at),
        "artifacts_expire_at": time(job.artifacts_expire_at),
        "pipeline": { "id": job.pipeline_id, "project_id": job.project_id, "ref": job.pipeline_ref, "status": job.pipeline_status },
        "artifacts_file": job.archive.as_ref().map(|a| json!({ "filename": a.file, "size": a.size })),
    })
}
