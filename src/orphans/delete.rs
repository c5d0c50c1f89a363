//! `housekeep delete-orphans`: delete the objects of a `list-orphans` manifest.
//!
//! The whole manifest is validated before anything is deleted; every bad line is reported by
//! number. Just before deleting, each key is re-checked: still unreferenced in the database (no
//! artifact row, pending upload or queued deletion) and still of the listed size; otherwise it is
//! skipped with the reason. Deleted objects are appended to `deleted_from--<basename>` beside the
//! manifest as `object_path,object_size,object_version`.
//!
//! Exactly once across crashes: before a batch is deleted, its candidates are written to the
//! progress file (`deleted_from--<basename>.progress`); after the deletions, their lines are
//! appended and fsynced, then the progress moves past the batch. A run that finds a pending batch
//! finishes it first: a candidate already gone was deleted by the interrupted run and is recorded;
//! one still there is re-checked and deleted.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::manifest::{self, Output};
use crate::error::{Error, Result};
use crate::store::{layout, Store};

const BATCH: usize = 500;

#[derive(Debug, Clone)]
pub struct DeleteOptions {
    pub filename: PathBuf,
    pub force_restart: bool,
    pub dry_run: bool,
    pub concurrency: usize,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeleteSummary {
    pub lines: u64,
    pub deleted: u64,
    pub deleted_bytes: u64,
    pub skipped_referenced: u64,
    pub skipped_missing: u64,
    pub skipped_size: u64,
    pub failed: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Candidate {
    key: String,
    size: u64,
    version: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Progress {
    /// Length of the manifest when the run started; a changed manifest is refused.
    manifest_len: u64,
    /// Lines before this index are done.
    next_line: usize,
    out_len: u64,
    /// A batch whose deletion may have started: (line index after the batch, candidates).
    pending: Option<(usize, Vec<Candidate>)>,
    complete: bool,
    summary: DeleteSummary,
}

pub fn output_path(file: &Path) -> PathBuf {
    manifest::beside(file, "deleted_from--", "")
}

fn progress_path(file: &Path) -> PathBuf {
    manifest::beside(file, "deleted_from--", ".progress")
}

/// One manifest line: (line number, full key, size).
type Line = (usize, String, u64);

/// Parse and validate the whole manifest; every bad line is listed.
pub fn validate(file: &Path, store: &Store) -> Result<Vec<Line>> {
    let data = std::fs::read(file).map_err(|e| Error::Input(format!("{}: {e}", file.display())))?;
    let mut rdr = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(&data[..]);
    let mut lines = Vec::new();
    let mut bad = Vec::new();
    for (i, rec) in rdr.records().enumerate() {
        let n = i + 1;
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                let n = e.position().map(|p| p.line() as usize).unwrap_or(n);
                bad.push(format!("line {n}: not valid CSV ({e})"));
                continue;
            }
        };
        let n = rec.position().map(|p| p.line() as usize).unwrap_or(n);
        if rec.len() != 2 {
            bad.push(format!("line {n}: expected 2 fields (object_path,object_size), found {}", rec.len()));
            continue;
        }
        let (key, size) = (&rec[0], &rec[1]);
        let Ok(size) = size.trim().parse::<u64>() else {
            bad.push(format!("line {n}: size \"{size}\" is not a number"));
            continue;
        };
        if let Err(e) = layout::check_segments(key) {
            bad.push(format!("line {n}: \"{key}\": {e}"));
            continue;
        }
        let Some(rel) = store.relative(key) else {
            bad.push(format!("line {n}: \"{key}\" is outside the store prefix \"{}\"", store.prefix()));
            continue;
        };
        if !matches!(layout::parse(rel), Ok(layout::Key::Final { .. })) {
            bad.push(format!("line {n}: \"{key}\" is not an @final key (P/@final/xx/yy/…)"));
            continue;
        }
        lines.push((n, key.to_string(), size));
    }
    if !bad.is_empty() {
        return Err(Error::Input(format!(
            "{}: {} bad line(s); nothing was deleted:\n  {}",
            file.display(),
            bad.len(),
            bad.join("\n  ")
        )));
    }
    Ok(lines)
}

/// Re-check a batch: returns the candidates still safe to delete, counting the skipped ones.
async fn recheck(
    client: &tokio_postgres::Client,
    store: &Store,
    batch: &[Line],
    concurrency: usize,
    summary: &mut DeleteSummary,
) -> Result<Vec<Candidate>> {
    use futures::StreamExt;
    let rels: Vec<&str> = batch.iter().filter_map(|(_, k, _)| store.relative(k)).collect();
    let unreferenced: HashSet<String> = super::unreferenced(client, &rels).await?;
    let heads: Vec<_> = futures::stream::iter(batch.iter().map(|(n, key, size)| {
        let store = store.clone();
        let (n, key, size) = (*n, key.clone(), *size);
        async move { (n, key.clone(), size, store.head(&key).await) }
    }))
    .buffered(concurrency.max(1))
    .collect()
    .await;
    let mut out = Vec::new();
    for (n, key, size, head) in heads {
        let rel = store.relative(&key).unwrap_or_default();
        if !unreferenced.contains(rel) {
            tracing::warn!(line = n, key, "skipped: now referenced (artifact row, pending upload or queued deletion)");
            summary.skipped_referenced += 1;
            continue;
        }
        match head? {
            None => {
                tracing::info!(line = n, key, "skipped: already gone");
                summary.skipped_missing += 1;
            }
            Some(meta) if meta.size != size => {
                tracing::warn!(line = n, key, listed = size, now = meta.size, "skipped: size changed since listing");
                summary.skipped_size += 1;
            }
            Some(meta) => out.push(Candidate { key, size, version: meta.version }),
        }
    }
    Ok(out)
}

pub async fn delete_orphans(client: &tokio_postgres::Client, store: &Store, opts: &DeleteOptions) -> Result<DeleteSummary> {
    crate::db::require_schema(client).await?;
    let lines = validate(&opts.filename, store)?;
    let manifest_len = std::fs::metadata(&opts.filename).map(|m| m.len()).unwrap_or(0);

    if opts.dry_run {
        let mut summary = DeleteSummary { lines: lines.len() as u64, ..Default::default() };
        for batch in lines.chunks(BATCH) {
            for c in recheck(client, store, batch, opts.concurrency, &mut summary).await? {
                println!("would delete {} ({} bytes)", c.key, c.size);
                summary.deleted += 1;
                summary.deleted_bytes += c.size;
            }
        }
        return Ok(summary);
    }

    let (out_path, ppath) = (output_path(&opts.filename), progress_path(&opts.filename));
    if opts.force_restart {
        manifest::remove_if_exists(&ppath)?;
        manifest::remove_if_exists(&out_path)?;
    }
    let mut progress = match manifest::read_progress::<Progress>(&ppath)? {
        Some(p) if p.manifest_len != manifest_len => {
            return Err(Error::Input(format!(
                "{} changed since the deletion started ({} bytes, now {manifest_len}); add --force-restart to start over",
                opts.filename.display(),
                p.manifest_len
            )));
        }
        Some(p) => p,
        None => {
            if std::fs::metadata(&out_path).map(|m| m.len() > 0).unwrap_or(false) {
                return Err(Error::Input(format!(
                    "{} exists but has no progress file; add --force-restart to start over",
                    out_path.display()
                )));
            }
            let p = Progress { manifest_len, next_line: 0, out_len: 0, pending: None, complete: false, summary: DeleteSummary::default() };
            manifest::write_progress(&ppath, &p)?;
            p
        }
    };
    if progress.complete {
        tracing::info!(file = %opts.filename.display(), "deletion already complete; --force-restart starts over");
        return Ok(progress.summary);
    }
    progress.summary.lines = lines.len() as u64;
    let mut out = Output::open_at(&out_path, progress.out_len)?;

    // Finish a batch an interrupted run may have started deleting.
    if let Some((end, candidates)) = progress.pending.take() {
        let still_there: Vec<Line> = {
            let mut v = Vec::new();
            for c in &candidates {
                if store.head(&c.key).await?.is_some() {
                    v.push((0, c.key.clone(), c.size));
                }
            }
            v
        };
        let gone: Vec<Candidate> = candidates.iter().filter(|c| !still_there.iter().any(|(_, k, _)| *k == c.key)).cloned().collect();
        let mut summary = progress.summary.clone();
        let recheck_ok = recheck(client, store, &still_there, opts.concurrency, &mut summary).await?;
        progress.summary = summary;
        let mut all = gone;
        all.extend(delete_batch(store, recheck_ok, opts.concurrency, &mut progress.summary).await);
        record(&mut out, &all, &mut progress.summary)?;
        progress.out_len = out.sync()?;
        progress.next_line = end;
        manifest::write_progress(&ppath, &progress)?;
    }

    while progress.next_line < lines.len() {
        let end = (progress.next_line + BATCH).min(lines.len());
        let batch = &lines[progress.next_line..end];
        let mut summary = progress.summary.clone();
        let candidates = recheck(client, store, batch, opts.concurrency, &mut summary).await?;
        progress.summary = summary;
        progress.pending = Some((end, candidates.clone()));
        manifest::write_progress(&ppath, &progress)?;
        let deleted = delete_batch(store, candidates, opts.concurrency, &mut progress.summary).await;
        record(&mut out, &deleted, &mut progress.summary)?;
        progress.out_len = out.sync()?;
        progress.pending = None;
        progress.next_line = end;
        manifest::write_progress(&ppath, &progress)?;
    }
    progress.complete = true;
    manifest::write_progress(&ppath, &progress)?;
    Ok(progress.summary)
}

async fn delete_batch(store: &Store, candidates: Vec<Candidate>, concurrency: usize, summary: &mut DeleteSummary) -> Vec<Candidate> {
    let keys: Vec<String> = candidates.iter().map(|c| c.key.clone()).collect();
    let results = store.delete_many(&keys, concurrency).await;
    let mut deleted = Vec::new();
    for (c, r) in candidates.into_iter().zip(results) {
        match r {
            Ok(()) => deleted.push(c),
            Err(e) => {
                tracing::warn!(key = c.key, error = %e, "delete failed");
                summary.failed += 1;
            }
        }
    }
    deleted
}

fn record(out: &mut Output, deleted: &[Candidate], summary: &mut DeleteSummary) -> Result<()> {
    let mut csv = manifest::CsvLines::default();
    for c in deleted {
        out.append(&csv.line(&[&c.key, &c.size.to_string(), c.version.as_deref().unwrap_or("")]))?;
        summary.deleted += 1;
        summary.deleted_bytes += c.size;
    }
    Ok(())
}
