//! `housekeep list-orphans`: `@final` objects that no artifact row references, that are not a
//! pending direct upload, not already queued for deletion, and older than `--min-age`, appended
//! to FILE as `object_path,object_size` (full key, RFC 4180 quoting, no header).
//!
//! The key space is walked one leading hash directory (`00` … `ff`) at a time, in order, each in
//! key order; `--shard I/N` takes the directories whose number is I modulo N, so N processes
//! together produce exactly the unsharded result. A listing task feeds pages of up to 1,000 keys
//! through a small channel while the previous page is checked against the database (one query
//! per page), so listing and checks overlap and memory stays flat. Every half second (and at the
//! end), FILE is fsynced and the progress file beside it (`FILE.progress`) records the directory,
//! the last key and FILE's committed length (see [`super::manifest`]): killed at any instant and
//! run again with the same arguments, the command continues after the last committed page, and
//! FILE holds every orphan exactly once. One process at a time works on FILE (the lock of
//! [`super::manifest::lock`]); a second one is refused at once.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use object_store::ObjectMeta;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::manifest::{self, Output};
use crate::error::{Error, Result};
use crate::store::{layout, Store};

const PAGE: usize = 1000;
const COMMIT_EVERY: Duration = Duration::from_millis(500);
/// GitLab deletes a direct upload left unfinished for this long (`DeleteStaleDirectUploadsWorker`).
const STALE_UPLOAD_WINDOW: Duration = Duration::from_secs(3 * 3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

/// Why `--shard` was refused; each names the text as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    #[error("\"{0}\" is not I/N (for example 0/4)")]
    NotAShard(String),
    #[error("\"{text}\" is not a number")]
    NotANumber {
        text: String,
        #[source]
        source: std::num::ParseIntError,
    },
    #[error("\"{0}\": N must be 1 to 256 and I from 0 to N-1")]
    OutOfRange(String),
}

impl std::str::FromStr for Shard {
    type Err = ShardError;
    fn from_str(s: &str) -> std::result::Result<Shard, ShardError> {
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| ShardError::NotAShard(s.into()))?;
        let index: u32 = i.trim().parse().map_err(|source| ShardError::NotANumber {
            text: i.into(),
            source,
        })?;
        let count: u32 = n.trim().parse().map_err(|source| ShardError::NotANumber {
            text: n.into(),
            source,
        })?;
        if count == 0 || count > 256 || index >= count {
            return Err(ShardError::OutOfRange(s.into()));
        }
        Ok(Shard { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// The leading hash directories of this shard, in order.
    pub fn dirs(&self) -> Vec<String> {
        (0u32..256).filter(|d| d % self.count == self.index).map(|d| format!("{d:02x}")).collect()
    }
}

#[derive(Debug, Clone)]
pub struct ListOptions {
    pub filename: PathBuf,
    pub force_restart: bool,
    pub min_age: Duration,
    pub shard: Shard,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ListSummary {
    pub scanned: u64,
    pub orphans: u64,
    pub bytes: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Progress {
    /// The arguments the listing was started with; a resume must use the same.
    args: String,
    /// Position in the shard's directory list.
    dir_index: usize,
    /// Last key handled in that directory.
    after: Option<String>,
    file_len: u64,
    complete: bool,
    summary: ListSummary,
}

pub fn progress_path(file: &Path) -> PathBuf {
    manifest::beside(file, "", ".progress")
}


/// List the orphans of `store` into `opts.filename`, resuming where an earlier run stopped (see
/// the module documentation).
pub async fn list_orphans(
    client: &tokio_postgres::Client,
    store: &Store,
    opts: &ListOptions,
    progress_bar: Option<indicatif::ProgressBar>,
) -> Result<ListSummary> {
    refuse_uploads_in_flight(client, opts).await?;
    // One process per manifest: a second one (or a delete-orphans of FILE) is refused here.
    let lock = manifest::lock(&opts.filename, "list-orphans")?;
    let args = format!(
        "store={} min_age={}s shard={}",
        store.url(),
        opts.min_age.as_secs(),
        opts.shard
    );
    let ppath = progress_path(&opts.filename);
    lock.sweep_temporaries(&ppath);
    let progress = start_or_resume(opts, &ppath, args)?;
    if progress.complete {
        tracing::info!(file = ?opts.filename, "listing already complete; --force-restart starts over");
        return Ok(progress.summary);
    }
    let out = Output::open_at(&opts.filename, progress.file_len)?;
    // Unsharded, the whole prefix is one listing (fewest requests); sharded, one per directory.
    let dirs = if opts.shard.count == 1 {
        vec![String::new()]
    } else {
        opts.shard.dirs()
    };
    let cutoff: DateTime<Utc> =
        Utc::now() - chrono::Duration::from_std(opts.min_age).unwrap_or(chrono::Duration::MAX);

    let (pages, lister) = spawn_lister(
        store,
        dirs.clone(),
        progress.dir_index,
        progress.after.clone(),
    );
    let mut listing = Listing {
        out,
        ppath,
        progress,
        last_commit: std::time::Instant::now(),
        csv: manifest::CsvLines::default(),
    };
    let checked = checked_pages(pages, client, store, cutoff);
    futures::pin_mut!(checked);
    while let Some(page) = checked.next().await {
        listing.record(page?)?;
        if let Some(p) = &progress_bar {
            p.set_position(listing.progress.dir_index as u64);
            p.set_message(format!(
                "{} scanned, {} orphans",
                listing.progress.summary.scanned, listing.progress.summary.orphans
            ));
        }
    }
    lister
        .await
        .map_err(|e| Error::join("listing task failed", e))?;
    listing.finish(dirs.len())
}

/// On a live GitLab database, refuse a `--min-age` below GitLab's stale-upload window.
async fn refuse_uploads_in_flight(
    client: &tokio_postgres::Client,
    opts: &ListOptions,
) -> Result<()> {
    let mode = crate::db::require_schema(client).await?;
    if mode == crate::db::migrate::Mode::Gitlab && opts.min_age < STALE_UPLOAD_WINDOW {
        // GitLab keeps pending direct uploads in Redis, which housekeep does not read: an upload
        // in flight is only known to be over once it is older than GitLab's stale-upload window.
        return Err(Error::Input(format!(
            "--min-age {}s is below GitLab's 3h stale-upload window: on a live GitLab database pending uploads are in Redis, \
             which housekeep does not read, so a younger object may be an upload in flight; use --min-age 3h or more",
            opts.min_age.as_secs()
        )));
    }
    Ok(())
}

/// The progress of a listing started with `args`: read back to resume, or recorded anew (FILE
/// emptied first with `--force-restart`).
fn start_or_resume(opts: &ListOptions, ppath: &Path, args: String) -> Result<Progress> {
    if opts.force_restart {
        manifest::remove_if_exists(ppath)?;
        std::fs::write(&opts.filename, b"").map_err(|e| Error::io(&opts.filename, e))?;
    }
    match manifest::read_progress::<Progress>(ppath)? {
        Some(p) if p.args != args => Err(Error::Input(format!(
            "{:?} was started with other arguments ({}); run with the same ones to resume, or add --force-restart",
            opts.filename, p.args
        ))),
        Some(p) => Ok(p),
        None => {
            if opts.filename.exists() && std::fs::metadata(&opts.filename).map(|m| m.len() > 0).unwrap_or(false) {
                return Err(Error::Input(format!(
                    "{:?} already has lines but no progress file; add --force-restart to start over",
                    opts.filename
                )));
            }
            // Recorded before the first line is written, so a crash at any point leaves a progress file.
            let p = Progress { args, dir_index: 0, after: None, file_len: 0, complete: false, summary: ListSummary::default() };
            manifest::write_progress(ppath, &p)?;
            Ok(p)
        }
    }
}

/// Up to [`PAGE`] listed objects of the directory `dir_index`; `dir_done` on its last page.
struct Page {
    dir_index: usize,
    objects: Vec<ObjectMeta>,
    dir_done: bool,
}

/// A page once checked against the database.
struct CheckedPage {
    dir_index: usize,
    dir_done: bool,
    /// The page's last listed key, where a resume starts after.
    last: Option<String>,
    /// `@final` objects on the page.
    scanned: u64,
    /// (full key, size) of the orphans, in listing order.
    orphans: Vec<(String, u64)>,
}

/// List the directories from `start_dir` (after the key `after` in that one) in a task that runs
/// ahead of the checks by at most two pages.
fn spawn_lister(
    store: &Store,
    dirs: Vec<String>,
    start_dir: usize,
    after: Option<String>,
) -> (mpsc::Receiver<Result<Page>>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel::<Result<Page>>(2);
    let store = store.clone();
    let lister = tokio::spawn(async move {
        for (i, dir) in dirs.iter().enumerate().skip(start_dir) {
            let after = if i == start_dir { after.clone() } else { None };
            if !send_pages(&store, &tx, i, dir, after.as_deref()).await {
                return;
            }
        }
    });
    (rx, lister)
}

/// Send the pages of one directory; false when the listing must stop (an error was sent, or
/// the receiving side is gone).
async fn send_pages(
    store: &Store,
    tx: &mpsc::Sender<Result<Page>>,
    dir_index: usize,
    dir: &str,
    after: Option<&str>,
) -> bool {
    let mut stream = store.list_final(dir, after);
    let mut objects = Vec::with_capacity(PAGE);
    while let Some(item) = stream.next().await {
        match item {
            Ok(meta) => {
                objects.push(meta);
                if objects.len() == PAGE {
                    let page = Page {
                        dir_index,
                        objects: std::mem::take(&mut objects),
                        dir_done: false,
                    };
                    if tx.send(Ok(page)).await.is_err() {
                        return false;
                    }
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return false;
            }
        }
    }
    tx.send(Ok(Page {
        dir_index,
        objects,
        dir_done: true,
    }))
    .await
    .is_ok()
}

/// Pages are parsed and checked against the database two at a time (queries pipeline on the
/// connection); results come back in listing order.
fn checked_pages<'a>(
    mut pages: mpsc::Receiver<Result<Page>>,
    client: &'a tokio_postgres::Client,
    store: &'a Store,
    cutoff: DateTime<Utc>,
) -> impl futures::Stream<Item = Result<CheckedPage>> + 'a {
    futures::stream::poll_fn(move |cx| pages.poll_recv(cx))
        .map(move |page| async move { check_page(client, store, cutoff, page?).await })
        .buffered(2)
}

/// The `@final` objects of a page older than `cutoff` that nothing in the database references.
async fn check_page(
    client: &tokio_postgres::Client,
    store: &Store,
    cutoff: DateTime<Utc>,
    page: Page,
) -> Result<CheckedPage> {
    let mut scanned = 0u64;
    let mut finals: Vec<(String, String, u64)> = Vec::new(); // (full key, relative key, size)
    for meta in &page.objects {
        let full = meta.location.to_string();
        let Some(rel) = store.relative(&full) else {
            continue;
        };
        if !matches!(layout::parse(rel), Ok(layout::Key::Final { .. })) {
            continue;
        }
        scanned += 1;
        if meta.last_modified < cutoff {
            let rel = rel.to_string();
            finals.push((full, rel, meta.size));
        }
    }
    let rels: Vec<&str> = finals.iter().map(|(_, r, _)| r.as_str()).collect();
    let unreferenced = super::unreferenced(client, &rels).await?;
    let orphans = finals
        .into_iter()
        .filter(|(_, rel, _)| unreferenced.contains(rel))
        .map(|(full, _, size)| (full, size))
        .collect();
    let last = page.objects.last().map(|m| m.location.to_string());
    Ok(CheckedPage {
        dir_index: page.dir_index,
        dir_done: page.dir_done,
        last,
        scanned,
        orphans,
    })
}

/// FILE and its progress while the listing runs.
struct Listing {
    out: Output,
    ppath: PathBuf,
    progress: Progress,
    last_commit: std::time::Instant,
    csv: manifest::CsvLines,
}

impl Listing {
    /// Append a checked page's orphans and move the position past it; commit now and then.
    fn record(&mut self, page: CheckedPage) -> Result<()> {
        let progress = &mut self.progress;
        progress.summary.scanned += page.scanned;
        for (full, size) in &page.orphans {
            self.out
                .append(&self.csv.line(&[full, &size.to_string()]))?;
            progress.summary.orphans += 1;
            progress.summary.bytes += size;
        }
        if page.dir_done {
            progress.dir_index = page.dir_index + 1;
            progress.after = None;
        } else {
            progress.dir_index = page.dir_index;
            progress.after = page.last;
        }
        // Commit (fsync FILE, then the progress) at most every COMMIT_EVERY: each commit costs
        // three fsyncs, and a resume only redoes the pages since the last one.
        if self.last_commit.elapsed() >= COMMIT_EVERY {
            self.progress.file_len = self.out.sync()?;
            manifest::write_progress(&self.ppath, &self.progress)?;
            self.last_commit = std::time::Instant::now();
        }
        Ok(())
    }

    /// The last commit, marking the listing complete.
    fn finish(mut self, dirs: usize) -> Result<ListSummary> {
        self.progress.file_len = self.out.sync()?;
        self.progress.complete = true;
        self.progress.dir_index = dirs;
        manifest::write_progress(&self.ppath, &self.progress)?;
        Ok(self.progress.summary)
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_the_leading_directories() {
        let mut all: Vec<String> = Vec::new();
        for i in 0..3 {
            all.extend(Shard { index: i, count: 3 }.dirs());
        }
        all.sort();
        assert_eq!(all, Shard { index: 0, count: 1 }.dirs());
        assert_eq!(all.len(), 256);
        for bad in ["3/3", "1", "a/2", "0/0", "0/257"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        assert_eq!("1/4".parse::<Shard>().unwrap(), Shard { index: 1, count: 4 });
    }

}
