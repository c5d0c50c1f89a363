//! `housekeep status`: what is in the database and the store right now, in one screen.
//!
//! Artifacts by the state housekeeping sees them in (expired and deletable, locked, unknown,
//! never expiring, traces), the deletion queue, pending uploads, and, when asked, orphans and
//! rows whose object is missing, found by listing the store.

use std::collections::HashSet;

use futures::StreamExt;
use serde::Serialize;

use crate::error::Result;
use crate::store::{layout, Stores};

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Bucket {
    /// The stable snake_case name of the state (`expired_unlocked`, …): the key in JSON.
    #[serde(skip)]
    pub key: String,
    /// The state in words, for people.
    pub label: String,
    pub count: i64,
    pub bytes: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// In JSON an object keyed by state: `expired_unlocked`, `expired_unknown`,
    /// `expired_locked`, `not_expired`, `never_expire`, `traces`.
    #[serde(serialize_with = "by_key")]
    pub artifacts: Vec<Bucket>,
    pub queued_objects: Bucket,
    pub ready_objects: Bucket,
    pub pending_uploads: i64,
    pub stale_uploads: i64,
    /// The age at which a pending upload counts as stale.
    #[serde(skip)]
    pub stale_after: std::time::Duration,
    pub locked_pipelines: i64,
    pub unlock_requests: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreScan>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct StoreScan {
    pub objects: i64,
    pub bytes: i64,
    pub orphan_final_objects: i64,
    pub orphan_bytes: i64,
    pub rows_missing_object: i64,
}

/// Artifact states; the order is the order of the report.
const ARTIFACT_STATES: &str = "
SELECT s.key, s.label, count(a.id) AS count, COALESCE(sum(a.size), 0)::bigint AS bytes
FROM (VALUES (1, 'expired_unlocked', 'expired, unlocked (expire deletes)'),
             (2, 'expired_unknown', 'expired, unknown lock (unknown resolves)'),
             (3, 'expired_locked', 'expired, locked (kept as latest)'),
             (4, 'not_expired', 'not expired yet'),
             (5, 'never_expire', 'never expire (expire_at NULL)'),
             (6, 'traces', 'traces (never expired by housekeeping)')) AS s(n, key, label)
LEFT JOIN (
  SELECT id, size, CASE
    -- unknown resolves expired unknown-lock traces too (SPEC §4), as housekeep_backlog counts them
    WHEN locked = 2 AND expire_at < now() THEN 2
    WHEN file_type = 3 THEN 6
    WHEN expire_at IS NULL THEN 5
    WHEN expire_at >= now() THEN 4
    WHEN locked = 0 THEN 1
    WHEN locked = 2 THEN 2
    ELSE 3 END AS n
  FROM p_ci_job_artifacts) a ON a.n = s.n
GROUP BY s.n, s.key, s.label ORDER BY s.n";

fn by_key<S: serde::Serializer>(buckets: &[Bucket], s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_map(buckets.iter().map(|b| (b.key.as_str(), b)))
}

/// The summary; `stale_after` is the age at which a pending upload is stale (the stale-uploads
/// task's `max_age`).
pub async fn status(client: &tokio_postgres::Client, stores: Option<&Stores>, stale_after: std::time::Duration) -> Result<Status> {
    crate::db::require_schema(client).await?;
    let artifacts = client
        .query(ARTIFACT_STATES, &[])
        .await?
        .iter()
        .map(|r| Bucket { key: r.get("key"), label: r.get("label"), count: r.get("count"), bytes: r.get("bytes") })
        .collect();
    let q = client
        .query_one(
            "SELECT count(*) AS queued, COALESCE(sum(s.size), 0)::bigint AS queued_bytes,
                    count(*) FILTER (WHERE o.pick_up_at < now()) AS ready,
                    COALESCE(sum(s.size) FILTER (WHERE o.pick_up_at < now()), 0)::bigint AS ready_bytes
             FROM ci_deleted_objects o LEFT JOIN housekeep.deleted_object_state s ON s.deleted_object_id = o.id",
            &[],
        )
        .await?;
    let p = client
        .query_one(
            "SELECT (SELECT count(*) FROM housekeep.pending_direct_uploads) AS pending_uploads,
                    (SELECT count(*) FROM housekeep.pending_direct_uploads WHERE created_at < now() - make_interval(secs => $1)) AS stale_uploads,
                    (SELECT count(*) FROM p_ci_pipelines WHERE locked = 1) AS locked_pipelines,
                    (SELECT count(*) FROM housekeep.unlock_requests) AS unlock_requests",
            &[&stale_after.as_secs_f64()],
        )
        .await?;
    let store = match stores {
        Some(s) => Some(scan(client, s).await?),
        None => None,
    };
    Ok(Status {
        artifacts,
        queued_objects: Bucket { key: "queued_objects".into(), label: "queued objects".into(), count: q.get("queued"), bytes: q.get("queued_bytes") },
        ready_objects: Bucket { key: "ready_objects".into(), label: "ready to delete now".into(), count: q.get("ready"), bytes: q.get("ready_bytes") },
        pending_uploads: p.get("pending_uploads"),
        stale_uploads: p.get("stale_uploads"),
        stale_after,
        locked_pipelines: p.get("locked_pipelines"),
        unlock_requests: p.get("unlock_requests"),
        store,
    })
}

/// List the stores once: count objects, `@final` objects no row, upload or queued deletion
/// knows, and rows whose object is missing. Meant for demo-sized stores; `list-orphans` and
/// `verify` are the tools for real ones.
async fn scan(client: &tokio_postgres::Client, stores: &Stores) -> Result<StoreScan> {
    let mut out = StoreScan::default();
    let mut seen: HashSet<(i16, String)> = HashSet::new();
    let same = stores.local.url() == stores.remote.url();
    let mut finals = Vec::new();
    for (fs, store) in [(2i16, &stores.remote), (1i16, &stores.local)] {
        if fs == 1 && same {
            break;
        }
        let mut list = store.list(None);
        while let Some(meta) = list.next().await {
            let meta = meta?;
            out.objects += 1;
            out.bytes += meta.size as i64;
            let full = meta.location.to_string();
            let Some(rel) = store.relative(&full) else { continue };
            if matches!(layout::parse(rel), Ok(layout::Key::Final { .. })) {
                finals.push((rel.to_string(), meta.size as i64));
            }
            seen.insert((fs, rel.to_string()));
        }
    }
    for chunk in finals.chunks(1000) {
        let keys: Vec<&str> = chunk.iter().map(|(k, _)| k.as_str()).collect();
        let orphans = crate::orphans::unreferenced(client, &keys).await?;
        for (k, size) in chunk {
            if orphans.contains(k) {
                out.orphan_final_objects += 1;
                out.orphan_bytes += size;
            }
        }
    }
    // Rows whose object is missing, in id order, a page at a time.
    let mut last = 0i64;
    loop {
        let rows = client
            .query(
                "SELECT id, file_store::smallint AS file_store,
                        housekeep.artifact_store_dir(project_id, created_at, job_id, id, file_final_path, file_location) || '/' ||
                        COALESCE(housekeep.artifact_file(file, file_final_path), '') AS key
                 FROM p_ci_job_artifacts WHERE id > $1 ORDER BY id LIMIT 10000",
                &[&last],
            )
            .await?;
        let Some(row) = rows.last() else { break };
        last = row.get("id");
        for r in &rows {
            let key: String = r.get("key");
            let fs: i16 = r.get("file_store");
            let fs = if same { 2 } else { fs };
            if !seen.contains(&(fs, key)) {
                out.rows_missing_object += 1;
            }
        }
    }
    Ok(out)
}

fn human_bytes(n: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

impl Status {
    pub fn to_table(&self) -> String {
        let mut s = String::from("ARTIFACTS                                      ROWS        BYTES\n");
        let line = |s: &mut String, b: &Bucket| s.push_str(&format!("  {:<42} {:>8} {:>12}\n", b.label, b.count, human_bytes(b.bytes)));
        for b in &self.artifacts {
            line(&mut s, b);
        }
        s.push_str("DELETION QUEUE (ci_deleted_objects)\n");
        line(&mut s, &self.queued_objects);
        line(&mut s, &self.ready_objects);
        s.push_str(&format!(
            "PIPELINES\n  {:<42} {:>8}\n  {:<42} {:>8}\nDIRECT UPLOADS\n  {:<42} {:>8}\n  {:<42} {:>8}\n",
            "locked (keeping artifacts)", self.locked_pipelines, "queued for unlock", self.unlock_requests,
            "pending", self.pending_uploads, &format!("stale (older than {})", humantime::format_duration(self.stale_after)), self.stale_uploads
        ));
        if let Some(st) = &self.store {
            s.push_str(&format!(
                "STORE\n  {:<42} {:>8} {:>12}\n  {:<42} {:>8} {:>12}\n  {:<42} {:>8}\n",
                "objects", st.objects, human_bytes(st.bytes),
                "orphan @final objects", st.orphan_final_objects, human_bytes(st.orphan_bytes),
                "rows whose object is missing", st.rows_missing_object
            ));
        }
        s
    }
}
