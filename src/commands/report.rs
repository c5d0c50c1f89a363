//! `housekeep report`: the read-only reports of SPEC §6, as a table, CSV or JSON. The engine
//! ([`crate::reports`]) returns typed rows; this prints them. JSON is an array of objects whose
//! keys are the CSV header's column names.

use std::io::Write;

use clap::{Args, Subcommand, ValueEnum};

use crate::config::Config;
use crate::duration::HumanDuration;
use crate::error::{Error, Result};
use crate::reports::{self, Limit, Row};

#[derive(Debug, Clone, Copy, ValueEnum, Default)]
pub enum Format {
    #[default]
    Table,
    Csv,
    Json,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(subcommand)]
    pub report: Report,
}

/// The options every report takes.
#[derive(Debug, Args)]
pub struct Output {
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
    /// Rows to show, 1 to 1,000,000 [default: 50; top-projects: 20]
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub limit: Option<Limit>,
}

#[derive(Debug, Args)]
pub struct ProjectOutput {
    /// The project: its id or its full path (group/project)
    #[arg(long, value_name = "P")]
    pub project: String,
    #[command(flatten)]
    pub output: Output,
}

#[derive(Debug, Subcommand)]
pub enum Report {
    /// Artifacts that never expire (expire_at NULL), oldest job first; traces left out
    NeverExpiring(Output),
    /// Artifacts that expire more than DUR from now (7d, 3months, 1y), the farthest first
    ExpiringAfter {
        /// How far from now, e.g. 7d, 10d, 2w, 3months, 1y
        #[arg(value_name = "DUR", allow_hyphen_values = true)]
        after: HumanDuration,
        #[command(flatten)]
        output: Output,
    },
    /// The projects storing the most artifact bytes (project_statistics.build_artifacts_size)
    TopProjects(Output),
    /// A project's largest artifacts
    Largest(ProjectOutput),
    /// A project's artifacts, newest first, with their job, size, type, times and object key
    Artifacts(ProjectOutput),
    /// Artifacts of unknown lock status (locked = 2), grouped by expire_at and file_type
    Unknown(Output),
}

pub async fn run(a: ReportArgs, config: &Config) -> Result<()> {
    let client = super::connect(config).await?;
    crate::db::require_schema(&client).await?;
    let rows = |o: &Output| o.limit.unwrap_or(default_limit(reports::DEFAULT_ROWS));
    let out = match &a.report {
        Report::NeverExpiring(o) => render(
            &reports::never_expiring::never_expiring(&client, rows(o)).await?,
            o.format,
        ),
        Report::ExpiringAfter { after, output: o } => render(
            &reports::expiring_after::expiring_after(&client, after.0, rows(o)).await?,
            o.format,
        ),
        Report::TopProjects(o) => {
            let limit = o
                .limit
                .unwrap_or(default_limit(reports::DEFAULT_TOP_PROJECTS));
            render(
                &reports::top_projects::top_projects(&client, limit).await?,
                o.format,
            )
        }
        Report::Largest(p) => {
            let project = crate::db::project::resolve(&client, &p.project).await?;
            render(
                &reports::largest::largest(&client, project, rows(&p.output)).await?,
                p.output.format,
            )
        }
        Report::Artifacts(p) => {
            let project = crate::db::project::resolve(&client, &p.project).await?;
            render(
                &reports::artifacts::artifacts(&client, project, rows(&p.output)).await?,
                p.output.format,
            )
        }
        Report::Unknown(o) => render(
            &reports::unknown::unknown(&client, rows(o)).await?,
            o.format,
        ),
    }?;
    print_all(&out)
}

fn default_limit(n: i64) -> Limit {
    Limit::new(n).expect("the defaults are in range")
}

/// The rows in one format, as the text to print.
pub fn render<R: Row>(rows: &[R], format: Format) -> Result<String> {
    match format {
        Format::Json => {
            let mut s = serde_json::to_string_pretty(rows).map_err(Error::other)?;
            s.push('\n');
            Ok(s)
        }
        Format::Csv => {
            let mut w = csv::Writer::from_writer(Vec::new());
            w.write_record(R::COLUMNS).map_err(Error::other)?;
            for r in rows {
                w.write_record(r.cells()).map_err(Error::other)?;
            }
            String::from_utf8(w.into_inner().map_err(Error::other)?).map_err(Error::other)
        }
        Format::Table => Ok(table(
            R::COLUMNS,
            rows.iter().map(Row::table_cells).collect(),
        )),
    }
}

/// Columns padded to their widest cell, two spaces apart; `(no rows)` under the header when
/// there is nothing to show.
fn table(columns: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = columns.iter().map(|c| c.chars().count()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len().saturating_sub(1);
        let mut l = String::new();
        for (i, (c, w)) in cells.into_iter().zip(&widths).enumerate() {
            if i == last {
                l.push_str(&c);
            } else {
                l.push_str(&format!("{c:<w$}  "));
            }
        }
        l.trim_end().to_string() + "\n"
    };
    let mut s = line(columns.iter().map(|c| c.to_string()).collect());
    if rows.is_empty() {
        s.push_str("(no rows)\n");
    }
    for r in rows {
        s.push_str(&line(r));
    }
    s
}

/// Print to stdout; a reader that went away (`| head`) is not an error.
pub fn print_all(s: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(s.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.map_err(Error::from),
    }
}
