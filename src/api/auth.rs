//! Who a request is and what it may do in a project.
//!
//! Credentials, as GitLab takes them: a personal access token in the `PRIVATE-TOKEN` header (or
//! `private_token` parameter, or `Authorization: Bearer`), or a job token in the `JOB-TOKEN`
//! header (or `job_token` parameter). A token that is given but not valid — unknown, expired,
//! revoked, or the token of a job that is not running — is refused (401) whatever the project.
//!
//! Roles are GitLab's access levels. Reading a project's artifacts needs Reporter, or none in a
//! public project (and any signed-in user in an internal one); keeping needs Developer; deleting
//! needs Maintainer. A job token reads the artifacts of its own project and nothing else.
//!
//! Tokens are checked against housekeep's own tables on a standalone database, and against
//! GitLab's on a live GitLab database ([`super::gitlab_auth`]).

use axum::http::HeaderMap;

use super::error::ApiError;
use super::gitlab_auth::GitlabAuth;
use super::lookup::{Project, INTERNAL, PUBLIC};
use super::token;
use crate::error::Result;

/// GitLab's access levels.
pub const GUEST: i16 = 10;
pub const REPORTER: i16 = 20;
pub const DEVELOPER: i16 = 30;
pub const MAINTAINER: i16 = 40;

/// The credentials a request carries (the first of each kind GitLab looks at).
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    None,
    Personal(String),
    Job(String),
    /// A credential header that is not text (refused, never taken for no credentials).
    Invalid,
}

/// Never shows a token, so that no log line can carry one.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credentials::None => "None",
            Credentials::Personal(_) => "Personal(…)",
            Credentials::Job(_) => "Job(…)",
            Credentials::Invalid => "Invalid",
        })
    }
}

impl Credentials {
    /// From the headers, then the query string.
    pub fn from_request(headers: &HeaderMap, query: Option<&str>) -> Credentials {
        let credential_headers = ["private-token", "job-token", "authorization"];
        if credential_headers.iter().any(|h| headers.get(*h).is_some_and(|v| v.to_str().is_err())) {
            return Credentials::Invalid;
        }
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let param = |name: &str| {
            query.and_then(|q| url::form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned()))
        };
        let bearer = header("authorization").and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned())
        });
        if let Some(t) = header("private-token").or_else(|| param("private_token")).or(bearer) {
            return Credentials::Personal(t);
        }
        if let Some(t) = header("job-token").or_else(|| param("job_token")) {
            return Credentials::Job(t);
        }
        Credentials::None
    }
}

/// Who is asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal {
    Anonymous,
    User { id: i64, admin: bool },
    /// A running job, by its token; on a GitLab database it stands for the user who started it.
    Job { job_id: i64, project_id: i64, user_id: Option<i64> },
}

/// What a request wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Read,
    Keep,
    Delete,
}

impl Need {
    fn level(self) -> i16 {
        match self {
            Need::Read => REPORTER,
            Need::Keep => DEVELOPER,
            Need::Delete => MAINTAINER,
        }
    }
}

/// Where tokens and roles are looked up.
#[derive(Clone)]
pub enum Authority {
    /// housekeep's tables in schema `housekeep`.
    Standalone,
    /// GitLab's tables, with the secret its digests need (None: not configured, so no token
    /// of GitLab's can be checked).
    Gitlab(Option<GitlabAuth>),
}

/// A valid token's user; `last_used_at` is written at most every 10 minutes, as GitLab does, so
/// that downloads do not each write a row.
const STANDALONE_PAT: &str = "
WITH t AS (
  SELECT id, user_id, last_used_at FROM housekeep.personal_access_tokens
  WHERE token_digest = $1 AND NOT revoked AND (expires_at IS NULL OR expires_at > now())
), used AS (
  UPDATE housekeep.personal_access_tokens p SET last_used_at = now() FROM t
  WHERE p.id = t.id AND (t.last_used_at IS NULL OR t.last_used_at < now() - interval '10 minutes')
)
SELECT user_id FROM t";

const STANDALONE_JOB: &str = "
SELECT b.id, b.project_id, b.status, NULL::bigint AS user_id FROM housekeep.job_tokens t
JOIN p_ci_builds b ON b.id = t.job_id AND b.partition_id = t.partition_id
WHERE t.token_digest = $1";

const STANDALONE_ROLE: &str = "SELECT access_level FROM housekeep.project_members WHERE user_id = $1 AND project_id = $2";

impl Authority {
    /// The principal the credentials prove; 401 for credentials that prove nothing. Job tokens
    /// count only for downloads, as in GitLab (elsewhere they are not looked at, so the request
    /// has no credentials).
    pub async fn authenticate(&self, client: &tokio_postgres::Client, creds: &Credentials, need: Need) -> std::result::Result<Principal, ApiError> {
        let write = need != Need::Read;
        let found = match (self, creds) {
            (_, Credentials::None) => return Ok(Principal::Anonymous),
            (_, Credentials::Invalid) => None,
            (_, Credentials::Job(_)) if write => None,
            (Authority::Standalone, Credentials::Personal(t)) => client
                .query_opt(STANDALONE_PAT, &[&token::digest(t)])
                .await?
                .map(|r| Principal::User { id: r.get("user_id"), admin: false }),
            (Authority::Standalone, Credentials::Job(t)) => running_job(client.query_opt(STANDALONE_JOB, &[&token::digest(t)]).await?),
            (Authority::Gitlab(Some(g)), Credentials::Personal(t)) => match g.personal(client, t, write).await? {
                Some(u) if !u.active || !u.scope_allows => return Err(ApiError::Forbidden),
                u => u.map(|u| Principal::User { id: u.id, admin: u.admin }),
            },
            (Authority::Gitlab(Some(g)), Credentials::Job(t)) => running_job(g.job(client, t).await?),
            (Authority::Gitlab(None), _) => None,
        };
        found.ok_or(ApiError::Unauthorized)
    }

    /// The principal's access level in the project (0: none).
    async fn level(&self, client: &tokio_postgres::Client, who: Principal, project: &Project) -> Result<i16> {
        Ok(match who {
            Principal::Anonymous => 0,
            Principal::User { admin: true, .. } => 50,
            Principal::Job { project_id, .. } if project_id != project.id => 0,
            Principal::Job { user_id: Some(id), .. } if matches!(self, Authority::Gitlab(_)) => GitlabAuth::level(client, id, project.id).await?,
            Principal::Job { .. } => REPORTER,
            Principal::User { id, .. } => match self {
                Authority::Standalone => client.query_opt(STANDALONE_ROLE, &[&id, &project.id]).await?.map_or(0, |r| r.get("access_level")),
                Authority::Gitlab(_) => GitlabAuth::level(client, id, project.id).await?,
            },
        })
    }

    /// Allow the request, or say why not: 401 for a stranger to a project that is not public,
    /// 404 for a signed-in user who cannot see the project (GitLab does not tell it exists),
    /// 403 for one who can see it but whose role is too low. Returns the principal's access
    /// level in the project.
    pub async fn authorize(&self, client: &tokio_postgres::Client, who: Principal, project: &Project, need: Need) -> std::result::Result<i16, ApiError> {
        let level = self.level(client, who, project).await?;
        if project.builds_disabled && level > 0 {
            return Err(ApiError::Forbidden);
        }
        if level >= need.level() {
            return Ok(level);
        }
        let visible = project.visibility_level >= PUBLIC || (project.visibility_level >= INTERNAL && matches!(who, Principal::User { .. }));
        let open = visible && project.builds_open && !project.builds_disabled;
        match (need, who) {
            (Need::Read, _) if open => Ok(level),
            (_, Principal::Anonymous) => Err(ApiError::Unauthorized),
            _ if level >= GUEST || visible => Err(ApiError::Forbidden),
            _ => Err(ApiError::NotFound("Project Not Found")),
        }
    }
}

/// Whether an archive with GitLab's `accessibility` (0 public, 1 private: Developers and up,
/// 2 none: nobody) may be downloaded by `who`, whose access level is `level`: 401 for an
/// anonymous request, 403 otherwise.
pub fn may_download(accessibility: i16, who: Principal, level: i16) -> std::result::Result<(), ApiError> {
    match accessibility {
        0 => Ok(()),
        1 if level >= DEVELOPER => Ok(()),
        _ if who == Principal::Anonymous => Err(ApiError::Unauthorized),
        _ => Err(ApiError::Forbidden),
    }
}

/// A job token's job, if it is running or canceling (a job's token is valid only while the job
/// executes).
fn running_job(row: Option<tokio_postgres::Row>) -> Option<Principal> {
    let r = row?;
    matches!(r.get::<_, Option<String>>("status").as_deref(), Some("running" | "canceling")).then(|| Principal::Job {
        job_id: r.get("id"),
        project_id: r.get("project_id"),
        user_id: r.get("user_id"),
    })
}
