//! `delete-objects`: remove queued files from the stores, then their queue rows.
//!
//! A batch claims ready rows (`pick_up_at < now`) with a lease (`pick_up_at = now + lease`,
//! `FOR UPDATE SKIP LOCKED`, marked in `leased_until` so that `expedite` leaves it alone), so several workers split the queue without a coordinator and a
//! crashed worker's rows come back when the lease ends. The claim commits before any store call:
//! no network call happens inside a transaction. Rows whose key a live artifact row still
//! references are dropped from the queue without touching the object. Objects are deleted in
//! bulk with bounded concurrency; "not found" counts as deleted. Only then are the rows of
//! confirmed deletions removed; failures get `attempts + 1`, `last_error` and an exponential
//! back-off (lease, doubling, capped at `max_age`). The database work of one batch runs while the
//! previous batch's objects are being deleted. On shutdown, claimed rows not yet sent to the
//! store get their leases back.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use serde::Serialize;

use super::outcome::Stopped;
use super::stats::{add_fields, TaskStats};
use super::runner::{BatchTask, Next, Run, Step};
use crate::error::Result;
use crate::metrics::{age_bucket, Metrics};
use crate::registry::{Limit, Task};
use crate::store::layout;

/// Claim ready rows: lease them (`pick_up_at = now + lease`, GitLab's protocol) and mark the
/// lease in housekeep's state, so that `expedite` can tell it from a row queued for later.
const CLAIM: &str = "
WITH c AS (
  SELECT id, pick_up_at FROM ci_deleted_objects
  WHERE pick_up_at < now() AND id <> ALL($3) ORDER BY pick_up_at LIMIT $1 FOR UPDATE SKIP LOCKED
), leased AS (
  UPDATE ci_deleted_objects d SET pick_up_at = now() + make_interval(secs => $2)
  FROM c WHERE d.id = c.id
  RETURNING d.id, d.file_store, d.store_dir, d.file, d.created_at, c.pick_up_at AS old_pick_up_at, d.pick_up_at AS leased_until
), marked AS (
  INSERT INTO housekeep.deleted_object_state AS s (deleted_object_id, leased_until)
  SELECT id, leased_until FROM leased
  ON CONFLICT (deleted_object_id) DO UPDATE SET leased_until = EXCLUDED.leased_until
  RETURNING s.deleted_object_id, s.size
)
SELECT l.id, l.file_store, l.store_dir, l.file, m.size, l.created_at, l.old_pick_up_at, l.leased_until
FROM leased l JOIN marked m ON m.deleted_object_id = l.id";

/// Extend the leases of a claimed batch about to be sent, for the rows still leased to this run
/// (`pick_up_at` as this run set it); the rows returned are the ones still ours.
const RENEW: &str = "
WITH renewed AS (
  UPDATE ci_deleted_objects d SET pick_up_at = now() + make_interval(secs => $3)
  FROM unnest($1::bigint[], $2::timestamptz[]) AS f(id, ours) WHERE d.id = f.id AND d.pick_up_at = f.ours
  RETURNING d.id, d.pick_up_at
), marked AS (
  UPDATE housekeep.deleted_object_state s SET leased_until = r.pick_up_at FROM renewed r WHERE s.deleted_object_id = r.id
)
SELECT id, pick_up_at FROM renewed";

/// Claimed rows whose object a live artifact row references: by `@final` key, by the hashed key
/// (the artifact id ends `store_dir`) or by the legacy key (the job id ends it).
const REFERENCED: &str = "
SELECT o.id FROM ci_deleted_objects o
WHERE o.id = ANY($1) AND (
  EXISTS (SELECT 1 FROM p_ci_job_artifacts a WHERE a.file_final_path = o.store_dir || '/' || o.file)
  OR EXISTS (SELECT 1 FROM p_ci_job_artifacts a
             WHERE o.store_dir ~ '/[0-9]{1,18}$'
               AND (a.id = substring(o.store_dir FROM '/([0-9]{1,18})$')::bigint
                    OR a.job_id = substring(o.store_dir FROM '/([0-9]{1,18})$')::bigint)
               AND a.file_final_path IS NULL AND a.file = o.file
               AND housekeep.artifact_store_dir(a.project_id, a.created_at, a.job_id, a.id, NULL, a.file_location) = o.store_dir))";

/// Rows whose objects are gone: the queue rows, then housekeep's state of them.
const DONE: &str = "
WITH done AS (DELETE FROM ci_deleted_objects WHERE id = ANY($1) RETURNING id)
DELETE FROM housekeep.deleted_object_state WHERE deleted_object_id = ANY($1)";

/// Failed deletions: count the attempt, keep the error, back off (lease, doubling, capped).
const FAILED: &str = "
WITH counted AS (
  INSERT INTO housekeep.deleted_object_state AS s (deleted_object_id, attempts, last_error)
  SELECT id, 1, err FROM unnest($1::bigint[], $2::text[]) AS f(id, err)
  ON CONFLICT (deleted_object_id) DO UPDATE SET attempts = s.attempts + 1, last_error = EXCLUDED.last_error, leased_until = NULL
  RETURNING s.deleted_object_id, s.attempts
)
UPDATE ci_deleted_objects d
SET pick_up_at = now() + LEAST(make_interval(secs => $3) * power(2, LEAST(c.attempts - 1, 20)), make_interval(secs => $4))
FROM counted c WHERE d.id = c.deleted_object_id";

/// Rows another worker claimed after this run's lease ended, or whose lease this run no longer
/// holds, are left alone.
const GIVE_BACK: &str = "
WITH back AS (
  UPDATE ci_deleted_objects d SET pick_up_at = f.old
  FROM unnest($1::bigint[], $2::timestamptz[], $3::timestamptz[]) AS f(id, old, ours)
  WHERE d.id = f.id AND d.pick_up_at = f.ours
  RETURNING d.id
)
UPDATE housekeep.deleted_object_state s SET leased_until = NULL FROM back b WHERE s.deleted_object_id = b.id";

/// State of queue rows that are gone (GitLab's own delete worker removes rows too).
const SWEEP_STATE: &str = "
DELETE FROM housekeep.deleted_object_state s
WHERE NOT EXISTS (SELECT 1 FROM ci_deleted_objects o WHERE o.id = s.deleted_object_id)";

struct Claimed {
    id: i64,
    file_store: i16,
    key: String,
    size: Option<i64>,
    created_at: DateTime<Utc>,
    old_pick_up_at: DateTime<Utc>,
    /// `pick_up_at` as this run's claim (or renewal) set it: the mark of our lease.
    leased_until: DateTime<Utc>,
}

/// A claimed batch: its rows, which of them artifact rows still reference, and when it was claimed.
struct Batch {
    rows: Vec<Claimed>,
    referenced: HashSet<i64>,
    claimed: Instant,
}

/// What one batch came to: rows whose objects are gone (or were never to be deleted) and rows
/// whose deletion failed. Written to the queue by [`record`].
#[derive(Default)]
struct Outcomes {
    done: Vec<i64>,
    failed: Vec<(i64, String)>,
}

/// Queued rows ready now (`pick_up_at < now()`).
macro_rules! ready {
    () => {
        "o.pick_up_at < now()"
    };
}

const PLAN: &str = concat!(
    "SELECT count(*) FILTER (WHERE ",
    ready!(),
    ") AS would_delete,
            COALESCE(sum(s.size) FILTER (WHERE ",
    ready!(),
    "), 0)::bigint AS would_delete_bytes, count(*) AS queued
     FROM ci_deleted_objects o LEFT JOIN housekeep.deleted_object_state s ON s.deleted_object_id = o.id"
);

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DeleteObjectsStats {
    /// Objects deleted (or already gone), their queue rows removed.
    pub deleted: i64,
    pub deleted_bytes: i64,
    /// Deletions that failed; retried after their back-off.
    pub failed: i64,
    /// Queue rows dropped without touching their object, which an artifact row references.
    pub kept_referenced: i64,
}

impl TaskStats for DeleteObjectsStats {
    add_fields!(deleted, deleted_bytes, failed, kept_referenced);
    fn record(&self, m: &Metrics) {
        m.delete_errors.inc_by(self.failed as u64);
    }
    fn items(&self) -> u64 {
        (self.deleted + self.failed + self.kept_referenced) as u64
    }
    fn failed(&self) -> i64 {
        self.failed
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DeleteObjectsPlan {
    pub would_delete: i64,
    pub would_delete_bytes: i64,
    pub queued: i64,
}

/// A run. The database work of one batch overlaps the store calls of the one before: while batch
/// N's objects are being deleted, the rows of batch N-1 are written and batch N+1 is claimed and
/// checked. Claims still commit before their store calls; a crash leaves at most two batches
/// leased, and they come back when their leases end. A batch whose claim is older than half the
/// lease when its turn comes renews its leases first, so a row is never sent on a lease another
/// worker may already hold.
pub struct DeleteObjects {
    client: deadpool_postgres::Object,
    claim: tokio_postgres::Statement,
    lease: Duration,
    lease_s: f64,
    max_s: f64,
    /// The batch claimed and checked, whose objects the next step deletes.
    next: Option<Batch>,
    /// Whether the first batch was claimed.
    primed: bool,
    /// Outcomes of the last batch sent, written while the next one is in flight.
    pending: Outcomes,
    /// Rows that failed in this run are not retried before their back-off ends; this only guards
    /// against a zero back-off configuration spinning.
    failed_here: HashSet<i64>,
}

impl BatchTask for DeleteObjects {
    type Stats = DeleteObjectsStats;
    type Plan = DeleteObjectsPlan;
    type Args = ();

    async fn open(run: &Run<'_>, (): ()) -> Result<Self> {
        let client = run.ctx.pool.get().await?;
        let lease = run.cfg.duration_limit(Task::DeleteObjects, Limit::Lease);
        let max_backoff = run.cfg.duration_limit(Task::DeleteObjects, Limit::MaxAge);
        let claim = client.prepare(CLAIM).await?;
        Ok(DeleteObjects {
            client,
            claim,
            lease,
            lease_s: lease.as_secs_f64(),
            max_s: max_backoff.as_secs_f64(),
            next: None,
            primed: false,
            pending: Outcomes::default(),
            failed_here: HashSet::new(),
        })
    }

    async fn plan(&mut self, _run: &Run<'_>) -> Result<DeleteObjectsPlan> {
        let r = self.client.query_one(PLAN, &[]).await?;
        Ok(DeleteObjectsPlan { would_delete: r.get("would_delete"), would_delete_bytes: r.get("would_delete_bytes"), queued: r.get("queued") })
    }

    async fn step(&mut self, run: &Run<'_>) -> Result<Step<DeleteObjectsStats>> {
        if !self.primed {
            self.primed = true;
            let swept = self.client.execute(SWEEP_STATE, &[]).await?;
            if swept > 0 {
                tracing::debug!(swept, "state of queue rows removed by another worker swept");
            }
            self.next = Some(self.prepare(run, &[]).await?);
        }
        let Some(mut batch) = self.next.take() else { return Ok(Step::done(DeleteObjectsStats::default())) };
        if batch.rows.is_empty() || batch.rows.iter().all(|r| self.failed_here.contains(&r.id)) {
            give_back(&self.client, &batch.rows).await?;
            return Ok(Step::done(DeleteObjectsStats::default()));
        }
        // It was claimed a whole store batch ago: if half its lease is gone, renew the leases
        // still ours and leave the rows another worker took meanwhile to it.
        if batch.claimed.elapsed() > self.lease / 2 {
            self.renew(&mut batch).await?;
            if batch.rows.is_empty() {
                self.next = Some(self.prepare(run, &[]).await?);
                return Ok(Step::more(DeleteObjectsStats::default()));
            }
        }
        self.send(run, batch).await
    }

    /// Write the last outcomes; a batch claimed but not sent (shutdown, the budget spent) gets
    /// its leases back.
    async fn close(&mut self, _run: &Run<'_>) -> Result<DeleteObjectsStats> {
        if let Some(b) = self.next.take() {
            give_back(&self.client, &b.rows).await?;
        }
        record(&self.client, &std::mem::take(&mut self.pending), self.lease_s, self.max_s).await?;
        Ok(DeleteObjectsStats::default())
    }
}

impl DeleteObjects {
    /// Renew the leases of a batch about to be sent, keeping only the rows still ours.
    async fn renew(&self, batch: &mut Batch) -> Result<()> {
        let ids: Vec<i64> = batch.rows.iter().map(|r| r.id).collect();
        let ours: Vec<DateTime<Utc>> = batch.rows.iter().map(|r| r.leased_until).collect();
        let kept: HashMap<i64, DateTime<Utc>> =
            self.client.query(RENEW, &[&ids, &ours, &self.lease_s]).await?.iter().map(|r| (r.get("id"), r.get("pick_up_at"))).collect();
        batch.rows.retain_mut(|r| match kept.get(&r.id) {
            Some(t) => {
                r.leased_until = *t;
                true
            }
            None => false,
        });
        Ok(())
    }

    /// Delete a batch's objects (one bulk delete per store) while the previous batch's outcomes
    /// are written and the next batch is claimed.
    async fn send(&mut self, run: &Run<'_>, batch: Batch) -> Result<Step<DeleteObjectsStats>> {
        let mut stats = DeleteObjectsStats::default();
        let mut outcomes = Outcomes::default();
        let by_store = self.sort(run, &batch, &mut outcomes, &mut stats);
        let more = run.stop_reason().is_none();
        let in_flight: Vec<i64> = batch.rows.iter().map(|r| r.id).collect();
        let previous = std::mem::take(&mut self.pending);
        let database = async {
            record(&self.client, &previous, self.lease_s, self.max_s).await?;
            if more {
                self.prepare(run, &in_flight).await.map(Some)
            } else {
                Ok(None)
            }
        };
        let (sent, following) = tokio::join!(delete_groups(run, &by_store), database);

        let mut not_sent: Vec<&Claimed> = Vec::new();
        for ((_, group), sent) in by_store.iter().zip(sent) {
            match sent {
                Some((keys, results)) => tally(run, group, &keys, results, &mut outcomes, &mut stats),
                None => not_sent.extend(group),
            }
        }
        for (id, err) in &outcomes.failed {
            tracing::warn!(object_id = id, error = %err, "delete failed; will retry after back-off");
            self.failed_here.insert(*id);
        }
        self.pending = outcomes;
        // On a database error this batch's outcomes are not written: its rows come back when their
        // leases end, and "not found" then counts as deleted.
        let following = following?;
        give_back(&self.client, &not_sent).await?;
        if !not_sent.is_empty() {
            if let Some(b) = following {
                give_back(&self.client, &b.rows).await?;
            }
            return Ok(Step { stats, next: Next::Stop(Stopped::Shutdown) });
        }
        self.next = following;
        Ok(Step::more(stats))
    }

    /// Split a batch: rows a live artifact row references are dropped from the queue without
    /// touching their object, rows with an invalid key fail, the others are grouped by store.
    fn sort<'b>(&self, run: &Run<'_>, batch: &'b Batch, outcomes: &mut Outcomes, stats: &mut DeleteObjectsStats) -> Vec<(i16, Vec<&'b Claimed>)> {
        let mut by_store: Vec<(i16, Vec<&Claimed>)> = Vec::new();
        for r in &batch.rows {
            if batch.referenced.contains(&r.id) {
                run.audit.object("kept", Some(r.id), &r.key, r.size, "still referenced by an artifact row; queue row dropped");
                outcomes.done.push(r.id);
                stats.kept_referenced += 1;
            } else if let Err(e) = layout::check_segments(&r.key) {
                outcomes.failed.push((r.id, format!("refusing to delete \"{}\": {e}", r.key)));
                stats.failed += 1;
            } else {
                match by_store.iter_mut().find(|(fs, _)| *fs == r.file_store) {
                    Some((_, v)) => v.push(r),
                    None => by_store.push((r.file_store, vec![r])),
                }
            }
        }
        by_store
    }

    /// Claim the next batch (leaving out the rows of the batch in flight) and find which of its
    /// rows a live artifact row still references.
    async fn prepare(&self, run: &Run<'_>, in_flight: &[i64]) -> Result<Batch> {
        let claimed = Instant::now();
        let rows: Vec<Claimed> = self
            .client
            .query(&self.claim, &[&run.batch_size(), &self.lease_s, &in_flight])
            .await?
            .iter()
            .map(|r| Claimed {
                id: r.get("id"),
                file_store: r.get("file_store"),
                key: format!("{}/{}", r.get::<_, String>("store_dir"), r.get::<_, String>("file")),
                size: r.get("size"),
                created_at: r.get("created_at"),
                old_pick_up_at: r.get("old_pick_up_at"),
                leased_until: r.get("leased_until"),
            })
            .collect();
        if rows.is_empty() {
            return Ok(Batch { rows, referenced: HashSet::new(), claimed });
        }
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let referenced = self.client.query(REFERENCED, &[&ids]).await?.iter().map(|r| r.get("id")).collect();
        Ok(Batch { rows, referenced, claimed })
    }
}

/// The keys sent to each store and their results; None for a store group not started because
/// shutdown came.
type Sent = Vec<Option<(Vec<String>, Vec<Result<()>>)>>;

/// One bulk delete per store; a store group not yet started when shutdown comes is not sent.
async fn delete_groups(run: &Run<'_>, by_store: &[(i16, Vec<&Claimed>)]) -> Sent {
    let mut sent = Vec::new();
    for (fs, group) in by_store {
        if run.ctx.cancel.is_cancelled() {
            sent.push(None);
            continue;
        }
        let store = run.ctx.stores.for_file_store(*fs);
        let keys: Vec<String> = group.iter().map(|r| store.full_key(&r.key)).collect();
        let results = store.delete_many(&keys, run.ctx.config.store_concurrency).await;
        sent.push(Some((keys, results)));
    }
    sent
}

/// Count a store group's results: deletions (metrics by age, audit) and failures.
fn tally(
    run: &Run<'_>,
    group: &[&Claimed],
    keys: &[String],
    results: Vec<Result<()>>,
    outcomes: &mut Outcomes,
    stats: &mut DeleteObjectsStats,
) {
    let m = &run.ctx.metrics;
    for ((r, key), res) in group.iter().zip(keys).zip(results) {
        match res {
            Ok(()) => {
                let bucket = age_bucket((Utc::now() - r.created_at).num_seconds());
                m.objects_deleted.with_label_values(&[bucket]).inc();
                m.objects_deleted_bytes.with_label_values(&[bucket]).inc_by(r.size.unwrap_or(0).max(0) as u64);
                run.audit.object("deleted", Some(r.id), key, r.size, "queued for deletion");
                stats.deleted += 1;
                stats.deleted_bytes += r.size.unwrap_or(0);
                outcomes.done.push(r.id);
            }
            Err(e) => {
                outcomes.failed.push((r.id, truncate(&e.to_string(), 1000)));
                stats.failed += 1;
            }
        }
    }
}

/// Write a batch's outcomes: remove the rows that are done, back off the ones that failed.
async fn record(client: &tokio_postgres::Client, o: &Outcomes, lease_s: f64, max_s: f64) -> Result<()> {
    if !o.done.is_empty() {
        client.execute(DONE, &[&o.done]).await?;
    }
    if !o.failed.is_empty() {
        let (ids, errs): (Vec<i64>, Vec<String>) = o.failed.iter().cloned().unzip();
        client.execute(FAILED, &[&ids, &errs, &lease_s, &max_s]).await?;
    }
    Ok(())
}

async fn give_back<R: std::borrow::Borrow<Claimed>>(client: &tokio_postgres::Client, rows: &[R]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = rows.iter().map(|r| r.borrow().id).collect();
    let old: Vec<DateTime<Utc>> = rows.iter().map(|r| r.borrow().old_pick_up_at).collect();
    let ours: Vec<DateTime<Utc>> = rows.iter().map(|r| r.borrow().leased_until).collect();
    client.execute(GIVE_BACK, &[&ids, &old, &ours]).await?;
    Ok(())
}

fn truncate(s: &str, n: usize) -> String {
    if s.len() <= n {
        return s.to_string();
    }
    let mut end = n;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// What `expedite` found in the queue before draining it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueNow {
    pub queued: i64,
    pub bytes: i64,
    /// Rows a delete-objects run holds a lease on: left to it, never made ready under it.
    pub leased: i64,
}

const QUEUE_NOW: &str = "
SELECT count(*) AS queued, COALESCE(sum(s.size), 0)::bigint AS bytes,
       count(*) FILTER (WHERE s.leased_until > now() AND o.pick_up_at > now()) AS leased
FROM ci_deleted_objects o LEFT JOIN housekeep.deleted_object_state s ON s.deleted_object_id = o.id";

/// Rows to make ready, locked so that no claim can change them meanwhile; rows a claim holds
/// right now are skipped (their lease is being set).
const LOCK_FUTURE: &str = "SELECT id FROM ci_deleted_objects WHERE pick_up_at > now() FOR UPDATE SKIP LOCKED";

/// Of the locked rows, the ones no run holds a lease on become ready. A separate statement, so
/// its snapshot sees every lease committed before the rows were locked. On a live GitLab
/// database ($2 false), a row due within GitLab's 10-minute lease may be leased by GitLab's own
/// delete worker, which leaves no mark: it is left alone unless housekeep backed it off itself.
const MAKE_READY: &str = "
UPDATE ci_deleted_objects o SET pick_up_at = now()
WHERE o.id = ANY($1) AND o.pick_up_at > now()
  AND NOT EXISTS (SELECT 1 FROM housekeep.deleted_object_state s WHERE s.deleted_object_id = o.id AND s.leased_until > now())
  AND ($2 OR o.pick_up_at > now() + interval '10 minutes'
       OR EXISTS (SELECT 1 FROM housekeep.deleted_object_state s WHERE s.deleted_object_id = o.id AND s.attempts > 0))";

/// The queue as it stands (`expedite --dry-run`).
pub async fn queue_now(client: &tokio_postgres::Client) -> Result<QueueNow> {
    let r = client.query_one(QUEUE_NOW, &[]).await?;
    Ok(QueueNow { queued: r.get("queued"), bytes: r.get("bytes"), leased: r.get("leased") })
}

/// `expedite`: make every queued row ready now, except the rows other runs hold leases on;
/// returns how many rows were made ready.
pub async fn make_ready(client: &mut tokio_postgres::Client, standalone: bool) -> Result<u64> {
    let tx = client.transaction().await?;
    let ids: Vec<i64> = tx.query(LOCK_FUTURE, &[]).await?.iter().map(|r| r.get("id")).collect();
    let n = tx.execute(MAKE_READY, &[&ids, &standalone]).await?;
    tx.commit().await?;
    Ok(n)
}
