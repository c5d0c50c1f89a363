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

use super::{Outcome, Run};
use crate::error::Result;
use crate::metrics::age_bucket;
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

pub async fn run(run: &mut Run<'_>) -> Result<()> {
    let client = run.ctx.pool.get().await?;
    if run.dry_run {
        let r = client
            .query_one(
                "SELECT count(*) FILTER (WHERE o.pick_up_at < now()) AS would_delete,
                        COALESCE(sum(s.size) FILTER (WHERE o.pick_up_at < now()), 0)::bigint AS would_delete_bytes,
                        count(*) AS queued
                 FROM ci_deleted_objects o LEFT JOIN housekeep.deleted_object_state s ON s.deleted_object_id = o.id",
                &[],
            )
            .await?;
        for key in ["would_delete", "would_delete_bytes", "queued"] {
            run.report.add(key, r.get(key));
        }
        return Ok(());
    }
    let lease = run.cfg.lease.map(|d| d.0).unwrap_or(Duration::from_secs(600));
    let max_backoff = run.cfg.max_age.map(|d| d.0).unwrap_or(Duration::from_secs(86_400));
    let (lease_s, max_s) = (lease.as_secs_f64(), max_backoff.as_secs_f64());
    let concurrency = run.ctx.config.store_concurrency;
    let limit = run.batch_size();
    let swept = client.execute(SWEEP_STATE, &[]).await?;
    if swept > 0 {
        tracing::debug!(swept, "state of queue rows removed by another worker swept");
    }
    let claim = client.prepare(CLAIM).await?;
    let ctx = run.ctx;
    // Rows that failed in this run are not retried before their back-off ends; this only guards
    // against a zero back-off configuration spinning.
    let mut failed_here: HashSet<i64> = HashSet::new();
    // The database work of one batch overlaps the store calls of the one before: while batch N's
    // objects are being deleted, the rows of batch N-1 are written and batch N+1 is claimed and
    // checked. Claims still commit before their store calls; a crash leaves at most two batches
    // leased, and they come back when their leases end. A batch whose claim is older than half
    // the lease when its turn comes renews its leases first, so a row is never sent on a lease
    // another worker may already hold.
    let mut pending = Outcomes::default();
    let mut next = if run.keep_going() { Some(prepare(&client, &claim, limit, lease_s, &[]).await?) } else { None };

    while let Some(Batch { mut rows, referenced, claimed }) = next.take() {
        // A batch claimed while the last one was in flight is given back if shutdown or the end
        // of the time budget came meanwhile.
        if rows.is_empty() || rows.iter().all(|r| failed_here.contains(&r.id)) || !run.keep_going() {
            give_back(&client, &rows).await?;
            break;
        }
        // It was claimed a whole store batch ago: if half its lease is gone, renew the leases
        // still ours and leave the rows another worker took meanwhile to it.
        if claimed.elapsed() > lease / 2 {
            let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
            let ours: Vec<DateTime<Utc>> = rows.iter().map(|r| r.leased_until).collect();
            let kept: HashMap<i64, DateTime<Utc>> =
                client.query(RENEW, &[&ids, &ours, &lease_s]).await?.iter().map(|r| (r.get("id"), r.get("pick_up_at"))).collect();
            rows.retain_mut(|r| match kept.get(&r.id) {
                Some(t) => {
                    r.leased_until = *t;
                    true
                }
                None => false,
            });
            if rows.is_empty() {
                next = Some(prepare(&client, &claim, limit, lease_s, &[]).await?);
                continue;
            }
        }
        let mut outcomes = Outcomes::default();
        let mut by_store: Vec<(i16, Vec<&Claimed>)> = Vec::new();
        let mut kept = 0;
        for r in &rows {
            if referenced.contains(&r.id) {
                run.audit.object("kept", Some(r.id), &r.key, r.size, "still referenced by an artifact row; queue row dropped");
                outcomes.done.push(r.id);
                kept += 1;
            } else if let Err(e) = layout::check_segments(&r.key) {
                outcomes.failed.push((r.id, format!("refusing to delete \"{}\": {e}", r.key)));
            } else {
                match by_store.iter_mut().find(|(fs, _)| *fs == r.file_store) {
                    Some((_, v)) => v.push(r),
                    None => by_store.push((r.file_store, vec![r])),
                }
            }
        }
        run.report.add("kept_referenced", kept);

        let more = run.keep_going();
        let in_flight: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let previous = std::mem::take(&mut pending);
        // One bulk delete per store; a store group not yet started when shutdown comes is not sent.
        let deletes = async {
            let mut sent = Vec::new();
            for (fs, group) in &by_store {
                if ctx.cancel.is_cancelled() {
                    sent.push(None);
                    continue;
                }
                let store = ctx.stores.for_file_store(*fs);
                let keys: Vec<String> = group.iter().map(|r| store.full_key(&r.key)).collect();
                let results = store.delete_many(&keys, concurrency).await;
                sent.push(Some((keys, results)));
            }
            sent
        };
        let database = async {
            record(&client, &previous, lease_s, max_s).await?;
            if more {
                prepare(&client, &claim, limit, lease_s, &in_flight).await.map(Some)
            } else {
                Ok(None)
            }
        };
        let (sent, following) = tokio::join!(deletes, database);

        let mut not_sent: Vec<&Claimed> = Vec::new();
        for ((_, group), sent) in by_store.iter().zip(sent) {
            let Some((keys, results)) = sent else {
                not_sent.extend(group);
                continue;
            };
            for ((r, key), res) in group.iter().zip(&keys).zip(results) {
                match res {
                    Ok(()) => {
                        let age = (Utc::now() - r.created_at).num_seconds();
                        let bucket = age_bucket(age);
                        ctx.metrics.objects_deleted.with_label_values(&[bucket]).inc();
                        ctx.metrics.objects_deleted_bytes.with_label_values(&[bucket]).inc_by(r.size.unwrap_or(0).max(0) as u64);
                        run.audit.object("deleted", Some(r.id), key, r.size, "queued for deletion");
                        run.report.add("deleted", 1);
                        run.report.add("deleted_bytes", r.size.unwrap_or(0));
                        outcomes.done.push(r.id);
                    }
                    Err(e) => outcomes.failed.push((r.id, truncate(&e.to_string(), 1000))),
                }
            }
        }
        if !outcomes.failed.is_empty() {
            for (id, err) in &outcomes.failed {
                tracing::warn!(object_id = id, error = %err, "delete failed; will retry after back-off");
                failed_here.insert(*id);
            }
            run.report.add("failed", outcomes.failed.len() as i64);
            ctx.metrics.delete_errors.inc_by(outcomes.failed.len() as u64);
            run.report.outcome = Outcome::Partial;
        }
        if let Some(p) = &run.progress {
            p.inc(rows.len() as u64);
        }
        pending = outcomes;
        // On a database error this batch's outcomes are not written: its rows come back when their
        // leases end, and "not found" then counts as deleted.
        let following = following?;
        give_back(&client, &not_sent).await?;
        if !not_sent.is_empty() {
            if let Some(b) = following {
                give_back(&client, &b.rows).await?;
            }
            break;
        }
        next = following;
    }
    record(&client, &pending, lease_s, max_s).await?;
    if ctx.cancel.is_cancelled() {
        run.report.outcome = Outcome::Interrupted;
    }
    Ok(())
}

/// Claim the next batch (leaving out the rows of the batch in flight) and find which of its rows
/// a live artifact row still references.
async fn prepare(
    client: &tokio_postgres::Client,
    claim: &tokio_postgres::Statement,
    limit: i64,
    lease_s: f64,
    in_flight: &[i64],
) -> Result<Batch> {
    let claimed = Instant::now();
    let rows: Vec<Claimed> = client
        .query(claim, &[&limit, &lease_s, &in_flight])
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
    let referenced = client.query(REFERENCED, &[&ids]).await?.iter().map(|r| r.get(0)).collect();
    Ok(Batch { rows, referenced, claimed })
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
    let ids: Vec<i64> = tx.query(LOCK_FUTURE, &[]).await?.iter().map(|r| r.get(0)).collect();
    let n = tx.execute(MAKE_READY, &[&ids, &standalone]).await?;
    tx.commit().await?;
    Ok(n)
}
