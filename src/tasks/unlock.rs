//! `unlock` (keep latest artifacts), as GitLab's `EnqueuePipelinesToUnlockService` and
//! `UnlockPipelineService`. Refs are GitLab's `ci_refs` (merge-request pipelines of a branch share
//! its ref; a branch and a tag of the same name are two refs). For every ref with locked
//! pipelines, the locked pipelines older than the newest finished one are enqueued in
//! `housekeep.unlock_requests` — the queue GitLab keeps in Redis — except the newest finished and
//! the newest successful pipeline (CI sources only) and their same-project descendants (child
//! pipelines, through `ci_sources_pipelines`). `housekeep unlock-ref` enqueues every locked
//! pipeline of a deleted branch or tag. Draining the queue skips pipelines already unlocked, sets
//! the artifacts of the others `locked = 0` in batches, then, in one transaction, their pipeline
//! artifacts, the pipelines' `locked = 0` and the request's removal last: an interrupted drain
//! resumes where it stopped.

use serde::Serialize;

use super::stats::{add_fields, TaskStats};
use super::runner::{BatchTask, Run, Step};
use crate::error::Result;
use crate::metrics::Metrics;

/// Statuses that end a pipeline (GitLab's trigger for unlocking older ones). Sources that are not
/// "CI sources" in GitLab (webide 9, parent_pipeline 12, on-demand DAST 13 and 14, security
/// policies 15, container registry push 16, duo workflow 17, policy schedules 18) never count as
/// the newest pipeline of a ref.
macro_rules! candidates {
    () => {
        "
WITH RECURSIVE refs AS (
  SELECT DISTINCT ci_ref_id FROM p_ci_pipelines WHERE locked = 1 AND ci_ref_id IS NOT NULL
), latest AS (
  SELECT r.ci_ref_id, f.id AS finished_id, f.partition_id AS finished_partition,
         s.id AS success_id, s.partition_id AS success_partition
  FROM refs r
  CROSS JOIN LATERAL (
    SELECT p.id, p.partition_id FROM p_ci_pipelines p
    WHERE p.ci_ref_id = r.ci_ref_id AND p.status IN ('success', 'failed', 'canceled', 'skipped', 'manual')
      AND COALESCE(p.source, 0) NOT IN (9, 12, 13, 14, 15, 16, 17, 18)
    ORDER BY p.id DESC LIMIT 1) f
  LEFT JOIN LATERAL (
    SELECT p.id, p.partition_id FROM p_ci_pipelines p
    WHERE p.ci_ref_id = r.ci_ref_id AND p.status = 'success'
      AND COALESCE(p.source, 0) NOT IN (9, 12, 13, 14, 15, 16, 17, 18)
    ORDER BY p.id DESC LIMIT 1) s ON true
), kept (id, partition_id, project_id) AS (
  SELECT p.id, p.partition_id, p.project_id FROM latest l
  JOIN p_ci_pipelines p ON (p.id = l.finished_id AND p.partition_id = l.finished_partition)
                        OR (p.id = l.success_id AND p.partition_id = l.success_partition)
  UNION
  SELECT c.pipeline_id, c.partition_id, c.project_id FROM kept k
  JOIN ci_sources_pipelines c ON c.source_pipeline_id = k.id AND c.source_partition_id = k.partition_id
  WHERE c.project_id = k.project_id AND c.pipeline_id IS NOT NULL
)
SELECT p.id, p.partition_id FROM latest l
JOIN p_ci_pipelines p ON p.ci_ref_id = l.ci_ref_id
WHERE p.locked = 1 AND p.id < l.finished_id
  AND NOT EXISTS (SELECT 1 FROM kept k WHERE k.id = p.id AND k.partition_id = p.partition_id)"
    };
}
const CANDIDATES: &str = candidates!();

const ENQUEUE: &str = concat!(
    "INSERT INTO housekeep.unlock_requests (pipeline_id, partition_id) SELECT id, partition_id FROM (",
    candidates!(),
    ") c ON CONFLICT (pipeline_id) DO NOTHING RETURNING pipeline_id"
);

/// The next queued pipelines, with whether each is still locked (a pipeline already unlocked,
/// or gone, is only dequeued).
const QUEUED: &str = "
SELECT r.pipeline_id, r.partition_id, COALESCE(p.locked = 1, false) AS locked
FROM housekeep.unlock_requests r
LEFT JOIN p_ci_pipelines p ON p.id = r.pipeline_id AND p.partition_id = r.partition_id
ORDER BY r.enqueued_at, r.pipeline_id LIMIT $1";

const UNLOCK_ARTIFACTS: &str = "
UPDATE p_ci_job_artifacts a SET locked = 0
FROM (SELECT x.id, x.partition_id
      FROM unnest($1::bigint[], $2::bigint[]) AS q(id, partition_id)
      JOIN p_ci_builds b ON b.commit_id = q.id AND b.partition_id = q.partition_id
      JOIN p_ci_job_artifacts x ON x.job_id = b.id AND x.partition_id = b.partition_id
      WHERE x.locked <> 0 LIMIT $3) t
WHERE a.id = t.id AND a.partition_id = t.partition_id";

const UNLOCK_PIPELINE_ARTIFACTS: &str = "
UPDATE ci_pipeline_artifacts a SET locked = 0
FROM unnest($1::bigint[], $2::bigint[]) AS q(id, partition_id)
WHERE a.pipeline_id = q.id AND a.partition_id = q.partition_id AND a.locked IS DISTINCT FROM 0";

const UNLOCK_PIPELINES: &str = "
UPDATE p_ci_pipelines p SET locked = 0, updated_at = now() AT TIME ZONE 'UTC'
FROM unnest($1::bigint[], $2::bigint[]) AS q(id, partition_id)
WHERE p.id = q.id AND p.partition_id = q.partition_id AND p.locked = 1 RETURNING p.id";

const DEQUEUE: &str = "DELETE FROM housekeep.unlock_requests WHERE pipeline_id = ANY($1)";

/// Pipelines drained together; their artifacts are unlocked `batch_size` rows at a time.
const PIPELINES_PER_DRAIN: i64 = 50;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct UnlockStats {
    /// Pipelines enqueued for unlocking.
    pub enqueued: i64,
    /// Queued pipelines that were unlocked already (or gone): only dequeued.
    pub already_unlocked: i64,
    pub artifacts_unlocked: i64,
    pub pipelines_unlocked: i64,
}

impl TaskStats for UnlockStats {
    add_fields!(enqueued, already_unlocked, artifacts_unlocked, pipelines_unlocked);
    fn record(&self, m: &Metrics) {
        m.pipelines_enqueued.inc_by(self.enqueued as u64);
        m.artifacts_unlocked.inc_by(self.artifacts_unlocked as u64);
        m.pipelines_unlocked.inc_by(self.pipelines_unlocked as u64);
    }
    fn items(&self) -> u64 {
        self.artifacts_unlocked as u64
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct UnlockPlan {
    pub would_enqueue: i64,
    pub already_queued: i64,
    pub would_unlock_artifacts: i64,
}

const PLAN_ARTIFACTS: &str = "
SELECT count(*) AS artifacts FROM unnest($1::bigint[], $2::bigint[]) AS q(id, partition_id)
JOIN p_ci_pipelines p ON p.id = q.id AND p.partition_id = q.partition_id AND p.locked = 1
JOIN p_ci_builds b ON b.commit_id = q.id AND b.partition_id = q.partition_id
JOIN p_ci_job_artifacts a ON a.job_id = b.id AND a.partition_id = b.partition_id
WHERE a.locked <> 0";

/// Queued pipelines being drained together.
struct Group {
    ids: Vec<i64>,
    partitions: Vec<i64>,
}

/// A run: enqueue once, then drain the queue a group of pipelines at a time, each group's
/// artifacts `batch_size` rows a step, and the group's pipelines in one last step.
pub struct Unlock {
    client: deadpool_postgres::Object,
    enqueued: bool,
    group: Option<Group>,
    unlock_artifacts: Option<tokio_postgres::Statement>,
}

impl BatchTask for Unlock {
    type Stats = UnlockStats;
    type Plan = UnlockPlan;
    type Args = ();

    async fn open(run: &Run<'_>, (): ()) -> Result<Self> {
        Ok(Unlock { client: run.ctx.pool.get().await?, enqueued: false, group: None, unlock_artifacts: None })
    }

    async fn plan(&mut self, _run: &Run<'_>) -> Result<UnlockPlan> {
        let candidates = self.client.query(CANDIDATES, &[]).await?;
        let queued = self.client.query("SELECT pipeline_id AS id, partition_id FROM housekeep.unlock_requests", &[]).await?;
        let ids: Vec<i64> = candidates.iter().chain(&queued).map(|r| r.get("id")).collect();
        let partitions: Vec<i64> = candidates.iter().chain(&queued).map(|r| r.get("partition_id")).collect();
        let artifacts: i64 = self.client.query_one(PLAN_ARTIFACTS, &[&ids, &partitions]).await?.get("artifacts");
        let queued_ids: std::collections::HashSet<i64> = queued.iter().map(|r| r.get("id")).collect();
        Ok(UnlockPlan {
            would_enqueue: candidates.iter().filter(|c| !queued_ids.contains(&c.get::<_, i64>("id"))).count() as i64,
            already_queued: queued.len() as i64,
            would_unlock_artifacts: artifacts,
        })
    }

    async fn step(&mut self, run: &Run<'_>) -> Result<Step<UnlockStats>> {
        if !self.enqueued {
            self.enqueued = true;
            return Ok(Step::more(self.enqueue(run).await?));
        }
        match self.group.take() {
            None => self.next_group(run).await,
            Some(group) => self.drain(run, group).await,
        }
    }
}

impl Unlock {
    async fn enqueue(&mut self, run: &Run<'_>) -> Result<UnlockStats> {
        let enqueued = self.client.query(ENQUEUE, &[]).await?;
        for r in &enqueued {
            run.audit.pipeline("enqueued", r.get("pipeline_id"), "older than the newest finished pipeline of its ref");
        }
        Ok(UnlockStats { enqueued: enqueued.len() as i64, ..UnlockStats::default() })
    }

    /// Take the next queued pipelines; the ones already unlocked (or gone) are only dequeued,
    /// nothing of theirs changes, not even unknown rows.
    async fn next_group(&mut self, run: &Run<'_>) -> Result<Step<UnlockStats>> {
        let queued = self.client.query(QUEUED, &[&PIPELINES_PER_DRAIN]).await?;
        if queued.is_empty() {
            return Ok(Step::done(UnlockStats::default()));
        }
        let mut group = Group { ids: Vec::new(), partitions: Vec::new() };
        let mut skipped = Vec::new();
        for r in &queued {
            if r.get::<_, bool>("locked") {
                group.ids.push(r.get("pipeline_id"));
                group.partitions.push(r.get("partition_id"));
            } else {
                skipped.push(r.get::<_, i64>("pipeline_id"));
            }
        }
        if !skipped.is_empty() {
            self.client.execute(DEQUEUE, &[&skipped]).await?;
            for id in &skipped {
                run.audit.pipeline("dequeued", *id, "already unlocked");
            }
        }
        if !group.ids.is_empty() {
            self.group = Some(group);
        }
        Ok(Step::more(UnlockStats { already_unlocked: skipped.len() as i64, ..UnlockStats::default() }))
    }

    /// Unlock a batch of the group's artifacts; when none is left, the group's pipelines. An
    /// interrupted group stays locked and queued: the next run finishes it.
    async fn drain(&mut self, run: &Run<'_>, group: Group) -> Result<Step<UnlockStats>> {
        let stmt = match &self.unlock_artifacts {
            Some(s) => s.clone(),
            None => {
                let s = self.client.prepare(UNLOCK_ARTIFACTS).await?;
                self.unlock_artifacts = Some(s.clone());
                s
            }
        };
        let n = self.client.execute(&stmt, &[&group.ids, &group.partitions, &run.batch_size()]).await? as i64;
        if n > 0 {
            self.group = Some(group);
            return Ok(Step::more(UnlockStats { artifacts_unlocked: n, ..UnlockStats::default() }));
        }
        let tx = self.client.transaction().await?;
        // Rows added since the last batch (new uploads copy the pipeline's lock) go with the pipeline.
        let late = tx.execute(&stmt, &[&group.ids, &group.partitions, &i64::MAX]).await? as i64;
        tx.execute(UNLOCK_PIPELINE_ARTIFACTS, &[&group.ids, &group.partitions]).await?;
        let unlocked = tx.query(UNLOCK_PIPELINES, &[&group.ids, &group.partitions]).await?;
        tx.execute(DEQUEUE, &[&group.ids]).await?;
        tx.commit().await?;
        for r in &unlocked {
            run.audit.pipeline("unlocked", r.get("id"), "keep-latest: a newer pipeline finished on the ref");
        }
        Ok(Step::more(UnlockStats { artifacts_unlocked: late, pipelines_unlocked: unlocked.len() as i64, ..UnlockStats::default() }))
    }
}

/// `housekeep unlock-ref`: what GitLab does when a branch or tag is deleted — every locked
/// pipeline of the ref is enqueued; the `unlock` task drains them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct UnlockRefStats {
    pub enqueued: i64,
    pub already_queued: i64,
}

/// The ref is `ci_refs.ref_path` (`refs/heads/NAME`, `refs/tags/NAME`); pipelines that have no
/// `ci_ref_id` are matched by their `ref` and `tag`.
const ENQUEUE_REF: &str = "
WITH pipelines AS (
  SELECT p.id, p.partition_id FROM p_ci_pipelines p
  WHERE p.project_id = $1 AND p.locked = 1
    AND (p.ci_ref_id IN (SELECT id FROM ci_refs WHERE project_id = $1 AND ref_path = $2)
         OR (p.ci_ref_id IS NULL AND p.ref = $3 AND p.tag = $4))
), ins AS (
  INSERT INTO housekeep.unlock_requests (pipeline_id, partition_id) SELECT id, partition_id FROM pipelines
  ON CONFLICT (pipeline_id) DO NOTHING RETURNING pipeline_id
)
SELECT (SELECT count(*) FROM ins) AS enqueued, (SELECT count(*) FROM pipelines) AS pipelines";

pub async fn enqueue_ref(client: &tokio_postgres::Client, project_id: i64, ref_path: &str) -> Result<UnlockRefStats> {
    let (name, tag) = if let Some(n) = ref_path.strip_prefix("refs/heads/") {
        (n, false)
    } else if let Some(n) = ref_path.strip_prefix("refs/tags/") {
        (n, true)
    } else {
        return Err(crate::error::Error::Input(format!(
            "--ref {ref_path:?} is not a full ref: write refs/heads/NAME for a branch or refs/tags/NAME for a tag"
        )));
    };
    let r = client.query_one(ENQUEUE_REF, &[&project_id, &ref_path, &name, &tag]).await?;
    let (enqueued, all): (i64, i64) = (r.get("enqueued"), r.get("pipelines"));
    Ok(UnlockRefStats { enqueued, already_queued: all - enqueued })
}
