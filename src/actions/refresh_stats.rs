//! `refresh-stats --filename FILE`: recompute `project_statistics.build_artifacts_size` of the
//! projects listed in a CSV with the header `PROJECT_ID`, as GitLab's
//! `gitlab:refresh_project_statistics_build_artifacts_size` does, without its weakness: the value
//! is never 0 or partial while it runs. Each project is one step in one transaction: its
//! statistics row is locked first, then its artifact rows are summed and the row set to the sum
//! (`storage_size` moved by the same difference). A concurrent expire or delete that removed rows
//! before the lock has decremented the row already and is not in the sum; one that comes after
//! waits for the lock and decrements the new value: the result is exact either way.

use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::tasks::runner::{BatchTask, Run, Step};
use crate::tasks::stats::{add_fields, TaskStats};

const LOCK: &str = "SELECT build_artifacts_size AS old FROM project_statistics WHERE project_id = $1 FOR UPDATE";

const SUM: &str = "SELECT COALESCE(sum(size), 0)::bigint AS total FROM p_ci_job_artifacts WHERE project_id = $1";

const SET: &str = "
UPDATE project_statistics SET build_artifacts_size = $2, storage_size = storage_size - build_artifacts_size + $2
WHERE project_id = $1";

const PLAN: &str = "
SELECT count(*) FILTER (WHERE s.project_id IS NOT NULL) AS projects,
       count(*) FILTER (WHERE s.build_artifacts_size <> t.total) AS would_change,
       count(*) FILTER (WHERE s.project_id IS NULL) AS without_statistics
FROM unnest($1::bigint[]) AS p(id)
LEFT JOIN project_statistics s ON s.project_id = p.id
CROSS JOIN LATERAL (SELECT COALESCE(sum(size), 0)::bigint AS total FROM p_ci_job_artifacts a WHERE a.project_id = p.id) t";

/// A CSV of project ids is read whole: bounded, so a wrong file cannot exhaust memory (64 MiB
/// holds some 3 million ids).
const MAX_CSV_BYTES: u64 = 64 << 20;

/// The project ids of a CSV with the header `PROJECT_ID` (one id a line; blank lines skipped).
/// Every bad line is reported, by number, before anything changes.
pub fn read_project_ids(path: &Path) -> Result<Vec<i64>> {
    let len = std::fs::metadata(path).map_err(|e| Error::Input(format!("{}: {e}", path.display())))?.len();
    if len > MAX_CSV_BYTES {
        return Err(Error::Input(format!(
            "{}: {len} bytes is more than a list of project ids needs (at most {MAX_CSV_BYTES}); split it",
            path.display()
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::Input(format!("{}: {e}", path.display())))?;
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    match lines.next() {
        Some((_, header)) if header.trim().trim_matches('"').eq_ignore_ascii_case("PROJECT_ID") => {}
        _ => return Err(Error::Input(format!("{}: the first line must be the header PROJECT_ID", path.display()))),
    }
    let mut ids = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in lines {
        match line.trim().trim_matches('"').parse::<i64>() {
            Ok(id) if id > 0 => ids.push(id),
            _ => bad.push(format!("line {}: {:?} is not a project id", i + 1, line.chars().take(80).collect::<String>())),
        }
    }
    if !bad.is_empty() {
        return Err(Error::Input(format!("{}: nothing was changed; {}", path.display(), bad.join("; "))));
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RefreshStatsStats {
    /// Projects whose statistics were recomputed.
    pub projects: i64,
    /// Of them, those whose value was wrong and was corrected.
    pub changed: i64,
    /// Listed projects without a statistics row (left alone).
    pub without_statistics: i64,
}

impl TaskStats for RefreshStatsStats {
    add_fields!(projects, changed, without_statistics);
    fn items(&self) -> u64 {
        (self.projects + self.without_statistics) as u64
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RefreshStatsPlan {
    pub projects: i64,
    pub would_change: i64,
    pub without_statistics: i64,
}

pub struct RefreshStats {
    client: deadpool_postgres::Object,
    ids: Vec<i64>,
    next: usize,
}

impl BatchTask for RefreshStats {
    type Stats = RefreshStatsStats;
    type Plan = RefreshStatsPlan;
    /// The project ids, from [`read_project_ids`].
    type Args = Vec<i64>;

    async fn open(run: &Run<'_>, ids: Vec<i64>) -> Result<Self> {
        Ok(RefreshStats { client: run.ctx.pool.get().await?, ids, next: 0 })
    }

    async fn plan(&mut self, _run: &Run<'_>) -> Result<RefreshStatsPlan> {
        let r = self.client.query_one(PLAN, &[&self.ids]).await?;
        Ok(RefreshStatsPlan { projects: r.get("projects"), would_change: r.get("would_change"), without_statistics: r.get("without_statistics") })
    }

    /// One project in one transaction: lock its statistics row, sum its rows, set the sum.
    async fn step(&mut self, _run: &Run<'_>) -> Result<Step<RefreshStatsStats>> {
        let Some(&id) = self.ids.get(self.next) else { return Ok(Step::done(RefreshStatsStats::default())) };
        self.next += 1;
        let tx = self.client.transaction().await?;
        let Some(row) = tx.query_opt(LOCK, &[&id]).await? else {
            tx.commit().await?;
            tracing::warn!(project_id = id, "no project_statistics row; left alone");
            return Ok(Step::more(RefreshStatsStats { without_statistics: 1, ..Default::default() }));
        };
        let old: i64 = row.get("old");
        let total: i64 = tx.query_one(SUM, &[&id]).await?.get("total");
        if total != old {
            tx.execute(SET, &[&id, &total]).await?;
        }
        tx.commit().await?;
        if total != old {
            tracing::info!(project_id = id, was = old, now = total, "build_artifacts_size corrected");
        }
        Ok(Step::more(RefreshStatsStats { projects: 1, changed: i64::from(total != old), without_statistics: 0 }))
    }
}
