//! `housekeep token create --user NAME --project P --role ROLE [--expires DUR]` (or `--job ID`
//! for a job token) and `housekeep token revoke --id N | --token T | --user NAME`: the Job
//! Artifacts API's tokens on a standalone database. A new token is printed once, alone on
//! stdout; what it is for goes to stderr.

use clap::{Args, Subcommand};

use crate::api::tokens::{self, Grant, Revoke, Role};
use crate::config::Config;
use crate::duration::HumanDuration;
use crate::error::{Error, Result};

#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a personal access token (or, with --job, a job token) and print it, once
    Create(CreateArgs),
    /// Revoke tokens: one by id or by the token itself, or every token of a user
    Revoke(RevokeArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The user the token authenticates (created if new)
    #[arg(long, value_name = "NAME", required_unless_present = "job", conflicts_with = "job")]
    pub user: Option<String>,
    /// The project (id or full path) where the user gets --role
    #[arg(long, value_name = "P", required_unless_present = "job")]
    pub project: Option<String>,
    /// The user's role in the project
    #[arg(long, value_enum, required_unless_present = "job")]
    pub role: Option<Role>,
    /// The token stops working after this long (30d, 1y); without it, it never expires
    #[arg(long, value_name = "DUR")]
    pub expires: Option<HumanDuration>,
    /// Change the user's role in the project when it has another one (every token of the user
    /// acts with the new role)
    #[arg(long)]
    pub change_role: bool,
    /// Instead: a job token for this job, valid while the job is running
    #[arg(long, value_name = "ID", conflicts_with_all = ["project", "role", "expires", "change_role"])]
    pub job: Option<i64>,
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct RevokeArgs {
    /// The token's id (printed on stderr by `token create`)
    #[arg(long, value_name = "N")]
    pub id: Option<i64>,
    /// The token itself (read from standard input when "-")
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Every token of this user
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
}

pub async fn run(a: TokenArgs, config: &Config) -> Result<()> {
    let mut client = super::connect(config).await?;
    crate::db::require_schema(&client).await?;
    match a.command {
        TokenCommand::Create(c) => create(c, &mut client).await,
        TokenCommand::Revoke(r) => {
            let what = match (r.id, r.token, r.user) {
                (Some(id), _, _) => Revoke::Id(id),
                (_, Some(t), _) if t == "-" => Revoke::Token(read_stdin()?),
                (_, Some(t), _) => Revoke::Token(t),
                (_, _, Some(u)) => Revoke::User(u),
                _ => return Err(Error::Input("give --id, --token or --user".into())),
            };
            let n = tokens::revoke(&client, &what).await?;
            eprintln!("token revoke: {n} token(s) revoked");
            Ok(())
        }
    }
}

async fn create(c: CreateArgs, client: &mut tokio_postgres::Client) -> Result<()> {
    let created = match (c.job, c.user, c.project, c.role) {
        (Some(job), ..) => tokens::create_job(client, job).await?,
        (None, Some(user), Some(project), Some(role)) => {
            if user.trim().is_empty() {
                return Err(Error::Input("--user must not be empty".into()));
            }
            let expires = match c.expires {
                Some(d) if d.0.is_zero() => return Err(Error::Input("--expires must be longer than 0s".into())),
                Some(d) => Some(d.0.as_secs_f64()),
                None => None,
            };
            let project_id = crate::db::project::resolve(client, &project).await?;
            let grant = Grant { username: user.trim(), project_id, role, change_role: c.change_role, expires_secs: expires };
            tokens::create_personal(client, grant).await?
        }
        _ => return Err(Error::Input("give --user, --project and --role, or --job".into())),
    };
    match (c.job, created.expires_at) {
        (Some(job), _) => eprintln!("token create: job token for job {job}, valid while the job is running"),
        (None, Some(at)) => eprintln!("token create: token id {}, expires {}", created.id, at.format("%Y-%m-%d %H:%M:%S UTC")),
        (None, None) => eprintln!("token create: token id {}, never expires", created.id),
    }
    println!("{}", created.token);
    Ok(())
}

fn read_stdin() -> Result<String> {
    let mut s = String::new();
    std::io::stdin().read_line(&mut s).map_err(|e| Error::other(format!("reading the token: {e}")))?;
    Ok(s.trim().to_owned())
}
