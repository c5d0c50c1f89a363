//! `housekeep delete-orphans`: delete the objects of a `list-orphans` manifest.
//!
//! The whole manifest is validated before anything is deleted; every bad line is reported by
//! its physical line number, with keys escaped and over-long lines (over [`MAX_LINE`] bytes)
//! measured, never echoed. The manifest is read twice through a fixed buffer — once to validate,
//! once in batches to delete — so memory does not grow with its size; only a 16-byte hash per
//! key is kept, to find duplicate lines (GitLab's own listing writes them): the first line of a
//! key counts, later ones are skipped and counted.
//!
//! Just before deleting, each key is re-checked: still unreferenced in the database (no artifact
//! row, pending upload or queued deletion) and still of the listed size; otherwise it is skipped
//! with the reason. Deleted objects are appended to `deleted_from--<basename>` beside the
//! manifest as `object_path,object_size,object_version`; that file is never truncated below what
//! earlier runs committed, `--force-restart` included.
//!
//! Exactly once across crashes: before a batch is deleted, its candidates are written to the
//! progress file (`deleted_from--<basename>.progress`); after the deletions, their lines are
//! appended and fsynced, then the progress moves past the batch. A run that finds a pending batch
//! finishes it first: a candidate already gone was deleted by the interrupted run and is recorded;
//! one still there is re-checked and deleted. Lines whose deletion failed are kept in the
//! progress and retried by the next run, before it goes on, the same way: gone by then (a request
//! reported failed may still have deleted), recorded; still there, re-checked and deleted. The
//! deletion is complete only when no line is left failed.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fs::File;
use std::hash::{BuildHasher, RandomState};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::manifest::{self, LineReader, Output, RawLine, MAX_LINE};
use crate::error::{Error, Result};
use crate::store::{layout, Store};

const BATCH: usize = 500;
/// After this many failed deletions a run stops rather than go on against a failing store; the
/// failed lines are kept for the next run.
const MAX_FAILED: usize = 1000;
/// The format of the progress file; an older one is refused with advice, never misread.
const FORMAT: u32 = 2;

#[derive(Debug, Clone)]
pub struct DeleteOptions {
    pub filename: PathBuf,
    pub force_restart: bool,
    pub dry_run: bool,
    pub concurrency: usize,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeleteSummary {
    /// Manifest lines (blank lines not counted, duplicates counted).
    pub lines: u64,
    pub deleted: u64,
    pub deleted_bytes: u64,
    pub skipped_referenced: u64,
    pub skipped_missing: u64,
    pub skipped_size: u64,
    /// Lines whose key an earlier line already has.
    #[serde(default)]
    pub duplicates: u64,
    /// Lines whose deletion failed and that the next run retries.
    pub failed: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Candidate {
    line: usize,
    key: String,
    size: u64,
    version: Option<String>,
}

/// A line whose deletion failed; retried by the next run.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Failed {
    line: usize,
    key: String,
    size: u64,
    version: Option<String>,
}

/// A batch whose deletion may have started, and where the walk stands once it is done.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pending {
    end_line: usize,
    end_offset: u64,
    candidates: Vec<Candidate>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Progress {
    #[serde(default)]
    format: u32,
    /// The manifest when the run started; a changed manifest is refused.
    manifest_len: u64,
    #[serde(default)]
    manifest_sha256: String,
    /// Lines up to this physical line number (ending at this byte offset) are done.
    next_line: usize,
    #[serde(default)]
    next_offset: u64,
    out_len: u64,
    pending: Option<Pending>,
    #[serde(default)]
    failed: Vec<Failed>,
    complete: bool,
    summary: DeleteSummary,
}

pub fn output_path(file: &Path) -> PathBuf {
    manifest::beside(file, "deleted_from--", "")
}

fn progress_path(file: &Path) -> PathBuf {
    manifest::beside(file, "deleted_from--", ".progress")
}

/// One manifest line: (physical line number, full key, size).
type Line = (usize, String, u64);

/// What validation learnt about a manifest.
#[derive(Debug)]
pub struct Scan {
    pub len: u64,
    pub sha256: String,
    /// Manifest lines, blank lines not counted.
    pub lines: u64,
    /// Line numbers whose key an earlier line already has.
    pub duplicates: HashSet<usize>,
}

/// Parse one line into (key, size), checking it is an `@final` key inside the store's prefix.
/// `None` for a blank line.
fn parse_line<'a>(n: usize, raw: RawLine<'a>, store: &Store) -> std::result::Result<Option<(Cow<'a, str>, u64)>, String> {
    let bytes = match raw {
        RawLine::TooLong(len) => {
            return Err(format!("line {n}: {len} bytes long, over the limit of {MAX_LINE} (not shown)"));
        }
        RawLine::Line(b) => b,
    };
    let bytes = if n == 1 { bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes) } else { bytes };
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Err(format!("line {n}: not valid UTF-8"));
    };
    if text.trim().is_empty() {
        return Ok(None);
    }
    // Lines without quotes, nearly all of them, are split without copying.
    let mut fields: Vec<Cow<'a, str>> = if text.contains('"') {
        let fields = manifest::split_csv_line(text).map_err(|e| format!("line {n}: not valid CSV ({e})"))?;
        fields.into_iter().map(Cow::Owned).collect()
    } else {
        text.split(',').map(Cow::Borrowed).collect()
    };
    if fields.len() != 2 {
        return Err(format!("line {n}: expected 2 fields (object_path,object_size), found {}", fields.len()));
    }
    let (size_field, key) = (fields.pop().unwrap_or_default(), fields.pop().unwrap_or_default());
    let Ok(size) = size_field.trim().parse::<u64>() else {
        return Err(format!("line {n}: size {} is not a number", manifest::shown(&size_field)));
    };
    if let Err(e) = layout::check_segments(&key) {
        return Err(format!("line {n}: {}: {e}", manifest::shown(&key)));
    }
    let Some(rel) = store.relative(&key) else {
        return Err(format!("line {n}: {} is outside the store prefix {:?}", manifest::shown(&key), store.prefix()));
    };
    if !matches!(layout::parse(rel), Ok(layout::Key::Final { .. })) {
        return Err(format!("line {n}: {} is not an @final key (P/@final/xx/yy/…)", manifest::shown(&key)));
    }
    Ok(Some((key, size)))
}

fn open_manifest(file: &Path) -> Result<File> {
    File::open(file).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::Input(format!("--filename {file:?} does not exist")),
        _ => Error::InputFile {
            path: file.into(),
            source: e,
        },
    })
}

/// Parse and validate the whole manifest; every bad line is listed.
pub fn validate(file: &Path, store: &Store) -> Result<Scan> {
    /// Counts and hashes the bytes the line reader takes.
    struct Hashing<R> {
        inner: R,
        hash: Sha256,
        len: u64,
    }
    impl<R: Read> Read for Hashing<R> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.hash.update(&buf[..n]);
            self.len += n as u64;
            Ok(n)
        }
    }
    let io = |source: std::io::Error| Error::InputFile {
        path: file.into(),
        source,
    };
    let mut reader = LineReader::new(Hashing { inner: open_manifest(file)?, hash: Sha256::new(), len: 0 }, 0, 0);
    // 128 bits of two independently keyed hashes per key: duplicates are found anew on every
    // run, so the hashes need not be stable, and a collision is out of reach.
    let (h1, h2) = (RandomState::new(), RandomState::new());
    let len = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    let mut seen: HashSet<u128> = HashSet::with_capacity((len / 128).min(1 << 22) as usize);
    let mut duplicates = HashSet::new();
    let mut lines = 0;
    let mut bad = Vec::new();
    loop {
        let n = reader.line() + 1;
        let Some(raw) = reader.next_line().map_err(io)? else { break };
        match parse_line(n, raw, store) {
            Ok(None) => {}
            Ok(Some((key, _))) => {
                lines += 1;
                let digest = (u128::from(h1.hash_one(key.as_bytes())) << 64) | u128::from(h2.hash_one(key.as_bytes()));
                if !seen.insert(digest) {
                    duplicates.insert(n);
                }
            }
            Err(msg) => bad.push(msg),
        }
    }
    if !bad.is_empty() {
        return Err(Error::Input(format!(
            "{file:?}: {} bad line(s); nothing was deleted:\n  {}",
            bad.len(),
            bad.join("\n  ")
        )));
    }
    let h = reader.into_inner();
    Ok(Scan { len: h.len, sha256: hex::encode(h.hash.finalize()), lines, duplicates })
}

/// The validated manifest again, from a position, in batches; duplicate lines are left out, and
/// so is anything appended after validation.
struct Batches<'a> {
    reader: LineReader<File>,
    store: &'a Store,
    duplicates: &'a HashSet<usize>,
    file: &'a Path,
    validated_len: u64,
}

impl<'a> Batches<'a> {
    fn open(file: &'a Path, line: usize, offset: u64, scan: &'a Scan, store: &'a Store) -> Result<Batches<'a>> {
        let mut f = open_manifest(file)?;
        f.seek(SeekFrom::Start(offset))
            .map_err(|source| Error::InputFile {
                path: file.into(),
                source,
            })?;
        Ok(Batches { reader: LineReader::new(f, line, offset), store, duplicates: &scan.duplicates, file, validated_len: scan.len })
    }

    /// Up to `n` lines, and the line number and offset after them; None at the end.
    fn next(&mut self, n: usize) -> Result<Option<(Vec<Line>, usize, u64)>> {
        let mut batch = Vec::with_capacity(n);
        while batch.len() < n && self.reader.offset() < self.validated_len {
            let number = self.reader.line() + 1;
            let raw = match self.reader.next_line() {
                Ok(Some(raw)) => raw,
                Ok(None) => break,
                Err(source) => {
                    return Err(Error::InputFile {
                        path: self.file.into(),
                        source,
                    });
                }
            };
            match parse_line(number, raw, self.store) {
                Ok(Some(_)) if self.duplicates.contains(&number) => {}
                Ok(Some((key, size))) => batch.push((number, key.into_owned(), size)),
                Ok(None) => {}
                Err(msg) => {
                    return Err(Error::Input(format!("{:?} changed while it was being processed: {msg}", self.file)));
                }
            }
        }
        if batch.is_empty() {
            return Ok(None);
        }
        Ok(Some((batch, self.reader.line(), self.reader.offset())))
    }
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
        async move {
            let head = store.head(&key).await;
            (n, key, size, head)
        }
    }))
    .buffered(concurrency.max(1))
    .collect()
    .await;
    let mut out = Vec::new();
    for (n, key, size, head) in heads {
        let rel = store.relative(&key).unwrap_or_default();
        if !unreferenced.contains(rel) {
            tracing::warn!(line = n, key = ?key, "skipped: now referenced (artifact row, pending upload or queued deletion)");
            summary.skipped_referenced += 1;
            continue;
        }
        match head? {
            None => {
                tracing::info!(line = n, key = ?key, "skipped: already gone");
                summary.skipped_missing += 1;
            }
            Some(meta) if meta.size != size => {
                tracing::warn!(line = n, key = ?key, listed = size, now = meta.size, "skipped: size changed since listing");
                summary.skipped_size += 1;
            }
            Some(meta) => out.push(Candidate { line: n, key, size, version: meta.version }),
        }
    }
    Ok(out)
}

/// What one run works with.
struct Run<'a> {
    client: &'a tokio_postgres::Client,
    store: &'a Store,
    concurrency: usize,
    ppath: PathBuf,
    out: Output,
    progress: Progress,
}

impl Run<'_> {
    fn save(&mut self) -> Result<()> {
        self.progress.summary.failed = self.progress.failed.len() as u64;
        manifest::write_progress(&self.ppath, &self.progress)
    }

    /// Delete a pending batch's candidates, record the deleted ones, keep the failed ones, and
    /// move the walk to the batch's end.
    async fn finish(&mut self, pending: Pending) -> Result<()> {
        let (deleted, failed) = delete_batch(self.store, pending.candidates, self.concurrency).await;
        record(&mut self.out, &deleted, &mut self.progress.summary)?;
        self.progress.out_len = self.out.sync()?;
        self.progress.failed.extend(failed);
        self.progress.pending = None;
        self.progress.next_line = pending.end_line;
        self.progress.next_offset = pending.end_offset;
        self.save()
    }

    /// Re-check lines and delete those still orphans; the walk then stands at `end`.
    async fn batch(&mut self, lines: &[Line], end_line: usize, end_offset: u64) -> Result<()> {
        let mut summary = self.progress.summary.clone();
        let candidates = recheck(self.client, self.store, lines, self.concurrency, &mut summary).await?;
        self.progress.summary = summary;
        let pending = Pending { end_line, end_offset, candidates };
        self.progress.pending = Some(pending.clone());
        self.save()?;
        self.finish(pending).await
    }

    /// Candidates whose deletion was attempted — a batch an interrupted run may have started, or
    /// lines whose deletion failed (a failed request may still have deleted): what is gone was
    /// deleted by that attempt and is recorded; what is still there is re-checked and deleted.
    async fn resume(&mut self, pending: Pending) -> Result<()> {
        use futures::StreamExt;
        let heads: Vec<_> = futures::stream::iter(pending.candidates.into_iter().map(|c| {
            let store = self.store.clone();
            async move {
                let head = store.head(&c.key).await;
                (c, head)
            }
        }))
        .buffered(self.concurrency.max(1))
        .collect()
        .await;
        let mut gone = Vec::new();
        let mut still_there = Vec::new();
        for (c, head) in heads {
            if head?.is_some() {
                still_there.push((c.line, c.key, c.size));
            } else {
                gone.push(c);
            }
        }
        record(&mut self.out, &gone, &mut self.progress.summary)?;
        let mut summary = self.progress.summary.clone();
        let candidates = recheck(self.client, self.store, &still_there, self.concurrency, &mut summary).await?;
        self.progress.summary = summary;
        self.finish(Pending { candidates, ..pending }).await
    }

    /// Lines earlier runs failed to delete, first; the failures of this retry go to the back of
    /// the list, for the next run. Until the progress is saved without them, they stay listed as
    /// failed on disk, which makes them safe to retry after a crash, like a pending batch.
    async fn retry_failed(&mut self) -> Result<()> {
        let mut left = self.progress.failed.len();
        while left > 0 {
            let k = left.min(BATCH);
            left -= k;
            let candidates: Vec<Candidate> = self
                .progress
                .failed
                .drain(..k)
                .map(|f| Candidate {
                    line: f.line,
                    key: f.key,
                    size: f.size,
                    version: f.version,
                })
                .collect();
            let (end_line, end_offset) = (self.progress.next_line, self.progress.next_offset);
            self.resume(Pending {
                end_line,
                end_offset,
                candidates,
            })
            .await?;
            self.stop_if_failing()?;
        }
        Ok(())
    }

    /// The rest of the manifest, batch by batch.
    async fn delete_from(&mut self, mut batches: Batches<'_>) -> Result<()> {
        while let Some((lines, end_line, end_offset)) = batches.next(BATCH)? {
            self.batch(&lines, end_line, end_offset).await?;
            self.stop_if_failing()?;
        }
        Ok(())
    }

    /// Stop rather than go on against a failing store once [`MAX_FAILED`] deletions failed; the
    /// failed lines are kept for the next run.
    fn stop_if_failing(&self) -> Result<()> {
        if self.progress.failed.len() >= MAX_FAILED {
            return Err(too_many_failed(&self.progress));
        }
        Ok(())
    }
}

/// Delete the objects of the manifest `opts.filename` (see the module documentation). With
/// `opts.dry_run` this is [`dry_run`] without the list: only the summary counts what would go.
pub async fn delete_orphans(client: &tokio_postgres::Client, store: &Store, opts: &DeleteOptions) -> Result<DeleteSummary> {
    if opts.dry_run {
        return dry_run(client, store, opts, |_, _| {}).await;
    }
    let lock = manifest::lock(&opts.filename, "delete-orphans")?;
    crate::db::require_schema(client).await?;
    let scan = validate(&opts.filename, store)?;

    let (out_path, ppath) = (output_path(&opts.filename), progress_path(&opts.filename));
    lock.sweep_temporaries(&ppath);
    let progress = start_or_resume(opts, &scan, &out_path, &ppath)?;
    if progress.complete {
        tracing::info!(file = ?opts.filename, "deletion already complete; --force-restart starts over");
        return Ok(progress.summary);
    }
    let out = Output::open_at(&out_path, progress.out_len)?;
    let mut run = Run {
        client,
        store,
        concurrency: opts.concurrency,
        ppath,
        out,
        progress,
    };
    run.progress.summary.lines = scan.lines;
    run.progress.summary.duplicates = scan.duplicates.len() as u64;

    if let Some(pending) = run.progress.pending.take() {
        run.resume(pending).await?;
    }
    run.retry_failed().await?;
    let batches = Batches::open(
        &opts.filename,
        run.progress.next_line,
        run.progress.next_offset,
        &scan,
        store,
    )?;
    run.delete_from(batches).await?;
    run.progress.complete = run.progress.failed.is_empty();
    run.save()?;
    Ok(run.progress.summary)
}

/// The progress of the deletion of the validated manifest `scan`: read back to resume (refused
/// when from an older housekeep or another manifest), or recorded anew.
fn start_or_resume(
    opts: &DeleteOptions,
    scan: &Scan,
    out_path: &Path,
    ppath: &Path,
) -> Result<Progress> {
    if opts.force_restart {
        manifest::remove_if_exists(ppath)?;
    }
    match manifest::read_progress::<Progress>(ppath)? {
        Some(p) if p.format != FORMAT => Err(Error::Input(format!(
            "progress file {ppath:?} is from an older housekeep; add --force-restart to start over ({out_path:?} is kept)"
        ))),
        Some(p) if p.manifest_len != scan.len || p.manifest_sha256 != scan.sha256 => {
            Err(Error::Input(format!(
                "{:?} changed since the deletion started ({} bytes, now {}); add --force-restart to start over ({out_path:?} is kept)",
                opts.filename, p.manifest_len, scan.len
            )))
        }
        Some(p) => Ok(p),
        None => {
            // Lines earlier runs recorded stay: a restart appends after them, cutting only a
            // partial last line a crash may have left.
            let out_len = if opts.force_restart {
                manifest::whole_lines_len(out_path)?
            } else if std::fs::metadata(out_path).is_ok_and(|m| m.len() > 0) {
                return Err(Error::Input(format!(
                    "{out_path:?} exists but has no progress file; add --force-restart to start over (its lines are kept)"
                )));
            } else {
                0
            };
            let p = Progress {
                format: FORMAT,
                manifest_len: scan.len,
                manifest_sha256: scan.sha256.clone(),
                next_line: 0,
                next_offset: 0,
                out_len,
                pending: None,
                failed: Vec::new(),
                complete: false,
                summary: DeleteSummary::default(),
            };
            manifest::write_progress(ppath, &p)?;
            Ok(p)
        }
    }
}

/// Validate and re-check; hand each object that would be deleted (full key, size) to
/// `would_delete` as its batch is re-checked, so that nothing grows with the manifest. Writes
/// nothing beside the manifest but the lock, and not even that in a read-only directory.
pub async fn dry_run(
    client: &tokio_postgres::Client,
    store: &Store,
    opts: &DeleteOptions,
    mut would_delete: impl FnMut(&str, u64),
) -> Result<DeleteSummary> {
    let _lock = manifest::lock_to_read(&opts.filename, "delete-orphans --dry-run")?;
    crate::db::require_schema(client).await?;
    let scan = validate(&opts.filename, store)?;
    let mut summary = DeleteSummary { lines: scan.lines, duplicates: scan.duplicates.len() as u64, ..Default::default() };
    let mut batches = Batches::open(&opts.filename, 0, 0, &scan, store)?;
    while let Some((batch, _, _)) = batches.next(BATCH)? {
        for c in recheck(client, store, &batch, opts.concurrency, &mut summary).await? {
            would_delete(&c.key, c.size);
            summary.deleted += 1;
            summary.deleted_bytes += c.size;
        }
    }
    Ok(summary)
}

fn too_many_failed(p: &Progress) -> Error {
    Error::StoreFailed(format!(
        "stopped after line {}: {} deletions failed (is the store failing?); they are kept, and running again retries them first, then continues",
        p.next_line,
        p.failed.len()
    ))
}

/// Delete candidates: (deleted, failed).
async fn delete_batch(store: &Store, candidates: Vec<Candidate>, concurrency: usize) -> (Vec<Candidate>, Vec<Failed>) {
    let keys: Vec<String> = candidates.iter().map(|c| c.key.clone()).collect();
    let results = store.delete_many(&keys, concurrency).await;
    let mut deleted = Vec::new();
    let mut failed = Vec::new();
    for (c, r) in candidates.into_iter().zip(results) {
        match r {
            Ok(()) => deleted.push(c),
            Err(e) => {
                tracing::warn!(line = c.line, key = ?c.key, error = %e, "delete failed; the next run retries it");
                failed.push(Failed { line: c.line, key: c.key, size: c.size, version: c.version });
            }
        }
    }
    (deleted, failed)
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
