//! Managing housekeep's own API tokens (standalone database): what `housekeep token` does.
//! Creating a personal access token also gives its user the role in the project; the token is
//! returned once and stored only as its digest.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::token::{self, TokenKind};
use crate::error::{Error, Result};

/// A role, with GitLab's access level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    Guest,
    Reporter,
    Developer,
    Maintainer,
    Owner,
}

impl Role {
    pub fn access_level(self) -> i16 {
        match self {
            Role::Guest => 10,
            Role::Reporter => 20,
            Role::Developer => 30,
            Role::Maintainer => 40,
            Role::Owner => 50,
        }
    }
}

/// A token just made: shown once.
#[derive(Clone, Serialize)]
pub struct Created {
    pub id: i64,
    pub token: String,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Never shows the token.
impl std::fmt::Debug for Created {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Created").field("id", &self.id).field("expires_at", &self.expires_at).finish_non_exhaustive()
    }
}

/// The user's id, the user created if new (two runs at once both get the one row).
const UPSERT_USER: &str = "
INSERT INTO housekeep.api_users (username) VALUES ($1)
ON CONFLICT (username) DO UPDATE SET username = EXCLUDED.username RETURNING id";

const ROLE: &str = "SELECT access_level FROM housekeep.project_members WHERE user_id = $1 AND project_id = $2 FOR UPDATE";

const SET_ROLE: &str = "
INSERT INTO housekeep.project_members (user_id, project_id, access_level) VALUES ($1, $2, $3)
ON CONFLICT (user_id, project_id) DO UPDATE SET access_level = EXCLUDED.access_level";

const INSERT_PAT: &str = "
INSERT INTO housekeep.personal_access_tokens (user_id, name, token_digest, expires_at)
VALUES ($1, $2, $3, now() + make_interval(secs => $4::float8)) RETURNING id, expires_at";

const INSERT_JOB_TOKEN: &str = "
INSERT INTO housekeep.job_tokens (token_digest, job_id, partition_id)
SELECT $1, id, partition_id FROM p_ci_builds WHERE id = $2 RETURNING job_id AS id, NULL::timestamptz AS expires_at";

/// Refuse on a live GitLab database, whose tokens are GitLab's to make.
async fn standalone_only(client: &tokio_postgres::Client) -> Result<()> {
    if crate::db::migrate::mode(client).await? == crate::db::migrate::Mode::Gitlab {
        return Err(Error::Input(
            "this is a live GitLab database: the API takes GitLab's own tokens; create them in GitLab".into(),
        ));
    }
    Ok(())
}

/// What a personal access token is for.
#[derive(Debug, Clone, Copy)]
pub struct Grant<'a> {
    /// The user (created if new).
    pub username: &'a str,
    pub project_id: i64,
    /// The user's role in the project. A role is the user's, not the token's: every token of
    /// the user acts with it.
    pub role: Role,
    /// Whether an existing, different role of the user in the project may be changed.
    pub change_role: bool,
    /// The token expires after this many seconds (never when None).
    pub expires_secs: Option<f64>,
}

/// A personal access token for `grant.username`, with `grant.role` in the project. A user who has
/// another role there keeps it (exit 2) unless `change_role`: a new token must not silently
/// change what the user's other tokens may do.
pub async fn create_personal(client: &mut tokio_postgres::Client, grant: Grant<'_>) -> Result<Created> {
    let Grant { username, project_id, role, change_role, expires_secs } = grant;
    standalone_only(client).await?;
    let token = token::generate(TokenKind::Personal);
    let tx = client.transaction().await?;
    let user_id: i64 = tx.query_one(UPSERT_USER, &[&username]).await?.get("id");
    let current: Option<i16> = tx.query_opt(ROLE, &[&user_id, &project_id]).await?.map(|r| r.get("access_level"));
    if let Some(level) = current.filter(|l| *l != role.access_level() && !change_role) {
        return Err(Error::Input(format!(
            "{username} already has access level {level} in project {project_id} (every token of the user acts with it); \
             add --change-role to make it {role:?} ({})",
            role.access_level()
        )));
    }
    tx.execute(SET_ROLE, &[&user_id, &project_id, &role.access_level()]).await?;
    let name = format!("housekeep token create --project {project_id}");
    let r = tx.query_one(INSERT_PAT, &[&user_id, &name, &token::digest(&token), &expires_secs]).await?;
    tx.commit().await?;
    Ok(Created { id: r.get("id"), token, expires_at: r.get("expires_at") })
}

/// A job token for job `job_id`: valid while the job runs.
pub async fn create_job(client: &tokio_postgres::Client, job_id: i64) -> Result<Created> {
    standalone_only(client).await?;
    let token = token::generate(TokenKind::Job);
    let r = client
        .query_opt(INSERT_JOB_TOKEN, &[&token::digest(&token), &job_id])
        .await?
        .ok_or_else(|| Error::Input(format!("--job {job_id}: no such job")))?;
    Ok(Created { id: r.get("id"), token, expires_at: r.get("expires_at") })
}

/// What to revoke.
#[derive(Clone)]
pub enum Revoke {
    /// One token, by its id.
    Id(i64),
    /// One token, by the token itself.
    Token(String),
    /// Every token of a user.
    User(String),
}

/// Revoke tokens; returns how many were valid and are now revoked. Nothing matching is exit 2.
pub async fn revoke(client: &tokio_postgres::Client, what: &Revoke) -> Result<u64> {
    standalone_only(client).await?;
    let n = match what {
        Revoke::Id(id) => client.execute("UPDATE housekeep.personal_access_tokens SET revoked = true WHERE id = $1", &[id]).await?,
        Revoke::Token(t) => {
            let d = token::digest(t);
            client.execute("UPDATE housekeep.personal_access_tokens SET revoked = true WHERE token_digest = $1", &[&d]).await?
                + client.execute("DELETE FROM housekeep.job_tokens WHERE token_digest = $1", &[&d]).await?
        }
        Revoke::User(u) => {
            client
                .execute(
                    "UPDATE housekeep.personal_access_tokens t SET revoked = true FROM housekeep.api_users u
                     WHERE u.id = t.user_id AND u.username = $1",
                    &[u],
                )
                .await?
        }
    };
    if n == 0 {
        return Err(Error::Input(format!("no token matches {}", describe(what))));
    }
    Ok(n)
}

/// Never shows a token.
impl std::fmt::Debug for Revoke {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&describe(self))
    }
}

fn describe(what: &Revoke) -> String {
    match what {
        Revoke::Id(id) => format!("--id {id}"),
        Revoke::Token(_) => "the token given".into(),
        Revoke::User(u) => format!("--user {u:?}"),
    }
}
