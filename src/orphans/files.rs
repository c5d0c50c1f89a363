//! `housekeep orphan-files`: orphan artifact directories on a local-disk store.
//!
//! Walks `P/<YYYY_MM_DD>/<job_id>/<artifact_id>` directories (only below date directories, so
//! `@final` and `pipelines/` are never entered), checks the artifact ids against the database 500
//! at a time, and removes the directories of artifacts that have no row and were not modified
//! within `--min-age`. Empty artifact, job and date directories — what deletions leave behind —
//! are removed as well. A dry run (the default) only reports.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use chrono::NaiveDate;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::error::{Error, Result};

const BATCH: usize = 500;

#[derive(Debug, Clone)]
pub struct FilesOptions {
    pub dry_run: bool,
    pub limit: Option<u64>,
    pub min_age: Duration,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct FilesSummary {
    pub artifact_dirs: u64,
    pub orphans: u64,
    pub orphan_bytes: u64,
    pub skipped_recent: u64,
    pub empty_dirs: u64,
}

struct Found {
    path: PathBuf,
    artifact_id: i64,
}

fn is_hex_dir(name: &str, len: usize) -> bool {
    name.len() == len && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Total size and newest modification time of the files below a directory.
fn dir_stats(path: &Path) -> (u64, SystemTime) {
    let mut size = 0;
    let mut newest = SystemTime::UNIX_EPOCH;
    if let Ok(rd) = std::fs::read_dir(path) {
        for e in rd.filter_map(|e| e.ok()) {
            match e.file_type() {
                Ok(t) if t.is_dir() => {
                    let (s, n) = dir_stats(&e.path());
                    size += s;
                    newest = newest.max(n);
                }
                _ => {
                    if let Ok(m) = e.metadata() {
                        size += m.len();
                        newest = newest.max(m.modified().unwrap_or(SystemTime::now()));
                    }
                }
            }
        }
    }
    (size, newest)
}

fn subdirs(path: &Path) -> Vec<(String, PathBuf)> {
    let mut v: Vec<(String, PathBuf)> = std::fs::read_dir(path)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn is_empty_dir(path: &Path) -> bool {
    std::fs::read_dir(path).map(|mut rd| rd.next().is_none()).unwrap_or(false)
}

/// The walk: streams artifact directories; removes (or counts) empty ones on the way back up.
fn walk(root: &Path, dry_run: bool, tx: &mpsc::Sender<Found>, empty: &mut u64) {
    for (d1, p1) in subdirs(root).into_iter().filter(|(n, _)| is_hex_dir(n, 2)) {
        for (d2, p2) in subdirs(&p1).into_iter().filter(|(n, _)| is_hex_dir(n, 2)) {
            for (h, ph) in subdirs(&p2) {
                if !is_hex_dir(&h, 64) || !h.starts_with(&format!("{d1}{d2}")) {
                    continue;
                }
                // Only date directories: never @final, never pipelines/.
                for (_, pdate) in subdirs(&ph).into_iter().filter(|(n, _)| NaiveDate::parse_from_str(n, "%Y_%m_%d").is_ok()) {
                    for (job, pjob) in subdirs(&pdate) {
                        if job.parse::<i64>().is_err() {
                            continue;
                        }
                        for (aid, part) in subdirs(&pjob) {
                            let Ok(artifact_id) = aid.parse::<i64>() else { continue };
                            if is_empty_dir(&part) {
                                *empty += 1;
                                if !dry_run {
                                    let _ = std::fs::remove_dir(&part);
                                }
                                continue;
                            }
                            if tx.blocking_send(Found { path: part, artifact_id }).is_err() {
                                return;
                            }
                        }
                        if !dry_run && is_empty_dir(&pjob) && std::fs::remove_dir(&pjob).is_ok() {
                            *empty += 1;
                        }
                    }
                    if !dry_run && is_empty_dir(&pdate) && std::fs::remove_dir(&pdate).is_ok() {
                        *empty += 1;
                    }
                }
            }
        }
    }
}

/// Find (and unless `opts.dry_run`, remove) the orphan artifact directories below `root`. In a
/// dry run each directory that would be removed is handed to `would_remove` (path, bytes) as it
/// is found, so that nothing grows with the store.
pub async fn orphan_files(
    client: &tokio_postgres::Client,
    root: &Path,
    opts: &FilesOptions,
    mut would_remove: impl FnMut(&Path, u64),
) -> Result<FilesSummary> {
    crate::db::require_schema(client).await?;
    let (tx, mut rx) = mpsc::channel::<Found>(BATCH * 2);
    let walker = {
        let (root, dry_run) = (root.to_path_buf(), opts.dry_run);
        tokio::task::spawn_blocking(move || {
            let mut empty = 0;
            walk(&root, dry_run, &tx, &mut empty);
            empty
        })
    };
    let mut summary = FilesSummary::default();
    let cutoff = SystemTime::now() - opts.min_age;
    let mut batch: Vec<Found> = Vec::with_capacity(BATCH);
    let mut finished = false;
    while !finished {
        match rx.recv().await {
            Some(f) => {
                batch.push(f);
                if batch.len() < BATCH {
                    continue;
                }
            }
            None => finished = true,
        }
        let ids: Vec<i64> = batch.iter().map(|f| f.artifact_id).collect();
        let known: std::collections::HashSet<i64> =
            client.query("SELECT id FROM p_ci_job_artifacts WHERE id = ANY($1)", &[&ids]).await?.iter().map(|r| r.get("id")).collect();
        for f in batch.drain(..) {
            summary.artifact_dirs += 1;
            if known.contains(&f.artifact_id) {
                continue;
            }
            if opts.limit.is_some_and(|l| summary.orphans >= l) {
                continue;
            }
            // A file written recently may be an upload whose row is not committed yet.
            let (size, newest) = dir_stats(&f.path);
            if newest > cutoff {
                summary.skipped_recent += 1;
                continue;
            }
            summary.orphans += 1;
            summary.orphan_bytes += size;
            if opts.dry_run {
                would_remove(&f.path, size);
            } else {
                tokio::fs::remove_dir_all(&f.path)
                    .await
                    .map_err(|e| Error::disk(f.path.display(), e))?;
                tracing::info!(target: "housekeep::audit", action = "removed", path = %f.path.display(), artifact_id = f.artifact_id, size, reason = "no artifact row");
                // The job and date directories may be empty now.
                for dir in f.path.ancestors().skip(1).take(2) {
                    if is_empty_dir(dir) && std::fs::remove_dir(dir).is_ok() {
                        summary.empty_dirs += 1;
                    }
                }
            }
        }
    }
    summary.empty_dirs += walker.await.map_err(|e| Error::join("walk failed", e))?;
    Ok(summary)
}
