//! GitLab's Job Artifacts API (SPEC §7), served under `/api/v4` by the worker's listener:
//! downloading a job's archive (by job id, or by ref and job name), one file out of it, keeping
//! a job's artifacts, deleting a job's or a project's artifacts. Who may do what is in [`auth`];
//! answers that are not a file are JSON, errors as GitLab words them ([`error`]).
//!
//! Downloads stream from the store: nothing is held but the chunk in flight, and no database
//! connection is held while the body is sent.

pub mod artifact_path;
pub mod auth;
pub mod download;
pub mod error;
pub mod expiry_queue;
pub mod gitlab_auth;
pub mod gitlab_jwt;
pub mod gitlab_secrets;
pub mod lookup;
pub mod manage;
pub mod token;
pub mod tokens;
pub mod zip_entry;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, Method};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post};

use self::auth::{Authority, Credentials, Need, Principal};
use self::error::ApiError;
use self::expiry_queue::ExpiryQueue;
use self::gitlab_auth::GitlabAuth;
use self::lookup::Project;
use crate::db::migrate::{GITLAB_API_COLUMNS, Mode, missing_columns, mode};
use crate::error::{Error, Result};
use crate::tasks::context::Context;

/// What every request handler gets.
#[derive(Clone)]
pub struct Api {
    pub ctx: Context,
    pub authority: Authority,
    /// `DELETE /projects/:id/artifacts`'s background runs.
    pub expiries: ExpiryQueue,
}

impl Api {
    /// The API of this database: housekeep's tokens on a standalone database, GitLab's (with the
    /// `db_key_base` of `gitlab_secrets_file`) on a live GitLab database.
    pub async fn new(ctx: Context) -> Result<Api> {
        let client = ctx.pool.get().await?;
        let authority = match mode(&client).await? {
            Mode::Standalone => Authority::Standalone,
            Mode::Gitlab => {
                let missing = missing_columns(&client, GITLAB_API_COLUMNS).await?;
                if !missing.is_empty() {
                    tracing::error!(
                        missing = %missing.join(", "),
                        "GitLab's tables lack what the Job Artifacts API reads: its requests will fail (500); the housekeeping tasks are not affected"
                    );
                }
                match gitlab_authority(ctx.config.gitlab_secrets_file.as_deref())? {
                    Authority::Gitlab(Some(g)) => Authority::Gitlab(Some(g.load_job_token_key(&client).await)),
                    other => other,
                }
            }
        };
        drop(client);
        let expiries = ExpiryQueue::start(ctx.clone());
        Ok(Api { ctx, authority, expiries })
    }

    /// Who asks, which project `id` names, and whether the one may do `need` in the other;
    /// returns the connection the checks used, for the handler's lookups.
    async fn admit(&self, headers: &HeaderMap, query: Option<&str>, id: &str, need: Need) -> std::result::Result<Admitted, ApiError> {
        let creds = Credentials::from_request(headers, query);
        let client = self.ctx.pool.get().await?;
        let who = self.authority.authenticate(&client, &creds, need).await?;
        let gitlab = matches!(self.authority, Authority::Gitlab(_));
        let Some(project) = lookup::project(&client, id, gitlab).await? else {
            return Err(match who {
                Principal::Anonymous => ApiError::Unauthorized,
                _ => ApiError::NotFound("Project Not Found"),
            });
        };
        let level = self.authority.authorize(&client, who, &project, need).await?;
        Ok(Admitted { client, who, project, level })
    }
}

impl Api {
    /// [`Api::admit`], then job `job_id` of the project (404 for a job id that is not one of
    /// the project's).
    async fn admit_job(&self, headers: &HeaderMap, query: Option<&str>, id: &str, job_id: &str, need: Need) -> std::result::Result<(Admitted, lookup::Job), ApiError> {
        let a = self.admit(headers, query, id, need).await?;
        let job_id: i64 = job_id.parse().map_err(|_| ApiError::NotFound("Not found"))?;
        let job = lookup::job(&a.client, a.project.id, job_id).await?.ok_or(ApiError::NotFound("Not found"))?;
        Ok((a, job))
    }
}

/// GitLab's tokens are checked with the `db_key_base` of GitLab's secrets file, when there is one.
fn gitlab_authority(configured: Option<&str>) -> Result<Authority> {
    let Some(path) = gitlab_secrets::locate(configured) else {
        tracing::warn!("no gitlab_secrets_file: the Job Artifacts API cannot check GitLab's tokens and answers 401 to every token");
        return Ok(Authority::Gitlab(None));
    };
    let key = gitlab_secrets::db_key_base(&path).map_err(|e| Error::config(e.to_string()))?;
    Ok(Authority::Gitlab(Some(GitlabAuth::new(&key))))
}

/// A request that passed [`Api::admit`].
pub struct Admitted {
    pub client: deadpool_postgres::Object,
    pub who: Principal,
    pub project: Project,
    /// The principal's access level in the project (0: none, as in a public project).
    pub level: i16,
}

/// The routes, to be nested under `/api/v4`. Each answer is counted in
/// `housekeep_api_requests_total{endpoint, code}`.
pub fn router(api: Api) -> Router {
    Router::new()
        .route("/projects/{id}/jobs/{job_id}/artifacts", get(download::archive).delete(manage::delete_job_artifacts))
        .route("/projects/{id}/jobs/{job_id}/artifacts/keep", post(manage::keep))
        .route("/projects/{id}/jobs/{job_id}/artifacts/{*artifact_path}", get(download::file))
        .route("/projects/{id}/jobs/artifacts/{ref_name}/download", get(download::archive_for_ref))
        .route("/projects/{id}/jobs/artifacts/{ref_name}/raw/{*artifact_path}", get(download::file_for_ref))
        .route("/projects/{id}/artifacts", delete(manage::delete_project_artifacts))
        .route_layer(middleware::from_fn_with_state(api.clone(), count))
        .fallback(|| async { ApiError::NotFound("Not Found") })
        .with_state(api)
}

/// Count the answer by endpoint and status code.
async fn count(State(api): State<Api>, matched: Option<MatchedPath>, req: Request, next: Next) -> Response {
    let endpoint = endpoint(req.method(), matched.as_ref().map_or("", |m| m.as_str()));
    let response = next.run(req).await;
    if let Some(e) = endpoint {
        api.ctx.metrics.api_requests.with_label_values(&[e, response.status().as_str()]).inc();
    }
    response
}

/// The `endpoint` label of a route (see [`crate::metrics::API_ENDPOINTS`]).
fn endpoint(method: &Method, route: &str) -> Option<&'static str> {
    let read = method == Method::GET || method == Method::HEAD;
    Some(match () {
        _ if route.ends_with("/jobs/{job_id}/artifacts") && read => "download",
        _ if route.ends_with("/jobs/{job_id}/artifacts") && method == Method::DELETE => "delete_job_artifacts",
        _ if route.ends_with("/artifacts/keep") => "keep",
        _ if route.ends_with("/jobs/{job_id}/artifacts/{*artifact_path}") => "file",
        _ if route.ends_with("/download") => "download_by_ref",
        _ if route.ends_with("/raw/{*artifact_path}") => "file_by_ref",
        _ if route.ends_with("/projects/{id}/artifacts") => "delete_project_artifacts",
        _ => return None,
    })
}
