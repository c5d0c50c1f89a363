//! `delete-objects`: remove queued files from the stores, then their queue rows.
//!
//! A batch claims ready rows (`pick_up_at < now`) with a lease (`pick_up_at = now + lease`,
//! `FOR UPDATE SKIP LOCKED`), so several workers split the queue without a coordinator and a
//! crashed worker's rows come back when the lease ends. The claim commits before any store call:
//! no network call happens inside a transaction. Rows whose key a live artifact row still
//! references are dropped from the queue without touching the object. Objects are deleted in
//! bulk with bounded concurrency; "not found" counts as deleted. Only then are the rows of
//! confirmed deletions removed; failures get `attempts + 1`, `last_error` and an exponential
//! back-off (lease, doubling, capped at `max_age`). On shutdown, claimed rows not yet sent to the
//! store get their leases back.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{Outcome, Run};
use crate::error::Result;
use crate::metrics::age_bucket;
use crate::store::layout;

const CLAIM: &str = "
WITH c AS (
  SELECT id, pick_up_at FROM ci_deleted_objects
  WHERE pick_up_at < now() ORDER BY pick_up_at LIMIT $1 FOR UPDATE SKIP LOCKED
)
UPDATE ci_deleted_objects d SET pick_up_at = now() + make_interval(secs => $2)
FROM c WHERE d.id = c.id
RETURNING d.id, d.file_store, d.store_dir, d.file, d.size, d.created_at, c.pick_up_at";

/// Claimed rows whose object a live artifact row references (by `@final` key, or by the hashed
/// key of the artifact id at the end of `store_dir`).
const REFERENCED: &str = "
SELECT o.id FROM ci_deleted_objects o
WHERE o.id = ANY($1) AND (
  EXISTS (SELECT 1 FROM ci_job_artifacts a WHERE a.file_final_path = o.store_dir || '/' || o.file)
  OR EXISTS (SELECT 1 FROM ci_job_artifacts a
             WHERE o.store_dir ~ '/[0-9]{1,18}$'
               AND a.id = substring(o.store_dir FROM '/([0-9]{1,18})$')::bigint
               AND a.file_final_path IS NULL AND a.file = o.file
               AND housekeep_artifact_store_dir(a.project_id, a.created_at, a.job_id, a.id, NULL) = o.store_dir))";

const DONE: &str = "DELETE FROM ci_deleted_objects WHERE id = ANY($1)";

const FAILED: &str = "
UPDATE ci_deleted_objects d SET attempts = d.attempts + 1, last_error = f.err,
  pick_up_at = now() + LEAST(make_interval(secs => $3) * power(2, LEAST(d.attempts, 20)), make_interval(secs => $4))
FROM unnest($1::bigint[], $2::text[]) AS f(id, err) WHERE d.id = f.id";

const GIVE_BACK: &str = "
UPDATE ci_deleted_objects d SET pick_up_at = f.old
FROM unnest($1::bigint[], $2::timestamptz[]) AS f(id, old) WHERE d.id = f.id";

struct Claimed {
    id: i64,
    file_store: i16,
    key: String,
    size: Option<i64>,
    created_at: DateTime<Utc>,
    old_pick_up_at: DateTime<Utc>,
}

pub async fn run(run: &mut Run<'_>) -> Result<()> {
    let client = run.ctx.pool.get().await?;
    if run.dry_run {
        let r = client
            .query_one(
                "SELECT count(*) FILTER (WHERE pick_up_at < now()), COALESCE(sum(size) FILTER (WHERE pick_up_at < now()), 0)::bigint,
                        count(*) FROM ci_deleted_objects",
                &[],
            )
            .await?;
        run.report.add("would_delete", r.get(0));
        run.report.add("would_delete_bytes", r.get(1));
        run.report.add("queued", r.get(2));
        return Ok(());
    }
    let lease = run.cfg.lease.map(|d| d.0).unwrap_or(Duration::from_secs(600));
    let max_backoff = run.cfg.max_age.map(|d| d.0).unwrap_or(Duration::from_secs(86_400));
    let (lease_s, max_s) = (lease.as_secs_f64(), max_backoff.as_secs_f64());
    let concurrency = run.ctx.config.store_concurrency;
    let limit = run.batch_size();
    let claim = client.prepare(CLAIM).await?;
    // Rows that failed in this run are not retried before their back-off ends; this only guards
    // against a zero back-off configuration spinning.
    let mut failed_here: HashSet<i64> = HashSet::new();

    while run.keep_going() {
        let rows: Vec<Claimed> = client
            .query(&claim, &[&limit, &lease_s])
            .await?
            .iter()
            .map(|r| Claimed {
                id: r.get(0),
                file_store: r.get(1),
                key: format!("{}/{}", r.get::<_, String>(2), r.get::<_, String>(3)),
                size: r.get(4),
                created_at: r.get(5),
                old_pick_up_at: r.get(6),
            })
            .collect();
        if rows.is_empty() || rows.iter().all(|r| failed_here.contains(&r.id)) {
            give_back(&**client, &rows).await?;
            break;
        }
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let referenced: HashSet<i64> = client.query(REFERENCED, &[&ids]).await?.iter().map(|r| r.get(0)).collect();

        let mut done: Vec<i64> = Vec::new();
        let mut failed: Vec<(i64, String)> = Vec::new();
        let mut sent: Vec<&Claimed> = Vec::new();
        let mut dropped: Vec<i64> = Vec::new();
        for r in &rows {
            if referenced.contains(&r.id) {
                run.audit.object("kept", Some(r.id), &r.key, r.size, "still referenced by an artifact row; queue row dropped");
                dropped.push(r.id);
            } else if let Err(e) = layout::check_segments(&r.key) {
                failed.push((r.id, format!("refusing to delete \"{}\": {e}", r.key)));
            } else {
                sent.push(r);
            }
        }

        // One bulk delete per store; the rows of each outcome are recorded after.
        let mut by_store: Vec<(i16, Vec<&Claimed>)> = Vec::new();
        for r in sent {
            match by_store.iter_mut().find(|(fs, _)| *fs == r.file_store) {
                Some((_, v)) => v.push(r),
                None => by_store.push((r.file_store, vec![r])),
            }
        }
        let mut not_sent: Vec<&Claimed> = Vec::new();
        for (fs, group) in by_store {
            if run.ctx.cancel.is_cancelled() {
                not_sent.extend(group);
                continue;
            }
            let store = run.ctx.stores.for_file_store(fs);
            let keys: Vec<String> = group.iter().map(|r| store.full_key(&r.key)).collect();
            let results = store.delete_many(&keys, concurrency).await;
            for ((r, key), res) in group.iter().zip(&keys).zip(results) {
                match res {
                    Ok(()) => {
                        let age = (Utc::now() - r.created_at).num_seconds();
                        let bucket = age_bucket(age);
                        run.ctx.metrics.objects_deleted.with_label_values(&[bucket]).inc();
                        run.ctx.metrics.objects_deleted_bytes.with_label_values(&[bucket]).inc_by(r.size.unwrap_or(0).max(0) as u64);
                        run.audit.object("deleted", Some(r.id), key, r.size, "queued for deletion");
                        run.report.add("deleted", 1);
                        run.report.add("deleted_bytes", r.size.unwrap_or(0));
                        done.push(r.id);
                    }
                    Err(e) => failed.push((r.id, truncate(&e.to_string(), 1000))),
                }
            }
        }

        done.extend(&dropped);
        client.execute(DONE, &[&done]).await?;
        if !failed.is_empty() {
            let (fids, errs): (Vec<i64>, Vec<String>) = failed.iter().cloned().unzip();
            client.execute(FAILED, &[&fids, &errs, &lease_s, &max_s]).await?;
            for (id, err) in &failed {
                tracing::warn!(object_id = id, error = %err, "delete failed; will retry after back-off");
                failed_here.insert(*id);
            }
            run.report.add("failed", failed.len() as i64);
            run.ctx.metrics.delete_errors.inc_by(failed.len() as u64);
            run.report.outcome = Outcome::Partial;
        }
        run.report.add("kept_referenced", dropped.len() as i64);
        if !not_sent.is_empty() {
            give_back(&**client, &not_sent.into_iter().collect::<Vec<_>>()).await?;
        }
        if let Some(p) = &run.progress {
            p.inc(rows.len() as u64);
        }
    }
    if run.ctx.cancel.is_cancelled() {
        run.report.outcome = Outcome::Interrupted;
    }
    Ok(())
}

async fn give_back<R: std::borrow::Borrow<Claimed>>(client: &tokio_postgres::Client, rows: &[R]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = rows.iter().map(|r| r.borrow().id).collect();
    let old: Vec<DateTime<Utc>> = rows.iter().map(|r| r.borrow().old_pick_up_at).collect();
    client.execute(GIVE_BACK, &[&ids, &old]).await?;
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
