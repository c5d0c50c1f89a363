//! The `@final` objects of a local-disk store in key order, for resumable orphan listings: a
//! sorted walk that only descends into `@final` below project directories (`P = d1/d2/H`), never
//! follows a symbolic link, resumes after a key, and streams its objects in chunks from a blocking
//! thread. Cloud stores list in this order already.

use std::cmp::Ordering;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use futures::stream::{BoxStream, StreamExt};
use object_store::ObjectMeta;
use tokio::sync::mpsc;

use crate::error::{Error, Result};

/// Segment-wise key order: the order of a sorted directory walk, and S3's order for layout keys.
pub(crate) fn key_cmp(a: &str, b: &str) -> Ordering {
    a.split('/').cmp(b.split('/'))
}

/// A sorted walk of `root/dir` that only descends into `@final` below project directories, run
/// on a blocking thread and streamed through a small channel.
pub(crate) fn final_objects(root: PathBuf, dir: String, after: Option<String>) -> BoxStream<'static, Result<ObjectMeta>> {
    // Objects travel in chunks: one wake-up of the async side per chunk, not per object.
    const CHUNK: usize = 512;
    let (tx, rx) = mpsc::channel::<Vec<Result<ObjectMeta>>>(4);
    tokio::task::spawn_blocking(move || {
        let mut chunk: Vec<Result<ObjectMeta>> = Vec::with_capacity(CHUNK);
        let start = if dir.is_empty() { (root.clone(), String::new(), 0) } else { (root.join(&dir), dir.clone(), 1) };
        // A shard's leading directory is opened by name: a link there is skipped, as below it.
        if !dir.is_empty() && std::fs::symlink_metadata(&start.0).is_ok_and(|m| m.file_type().is_symlink()) {
            return;
        }
        let mut stack: Vec<(PathBuf, String, usize)> = vec![start];
        while let Some((path, key, depth)) = stack.pop() {
            let rd = match std::fs::read_dir(&path) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    chunk.push(Err(Error::disk(path.display(), e)));
                    let _ = tx.blocking_send(chunk);
                    return;
                }
            };
            let mut entries: Vec<(String, std::fs::DirEntry)> =
                rd.filter_map(|e| e.ok()).filter_map(|e| Some((e.file_name().into_string().ok()?, e))).collect();
            entries.sort_by(|a, b| b.0.cmp(&a.0)); // reversed: the stack pops the smallest first
            let mut files = Vec::new();
            for (name, entry) in entries {
                let Ok(ft) = entry.file_type() else { continue };
                let child_key = if key.is_empty() { name.clone() } else { format!("{key}/{name}") };
                if ft.is_dir() {
                    // P = d1/d2/H; under H only @final holds direct uploads.
                    if depth == 3 && name != "@final" {
                        continue;
                    }
                    if let Some(a) = &after {
                        // Skip subtrees entirely before the resume point.
                        if key_cmp(&child_key, a) == Ordering::Less && !a.starts_with(&format!("{child_key}/")) {
                            continue;
                        }
                    }
                    stack.push((entry.path(), child_key, depth + 1));
                } else if ft.is_file() {
                    if after.as_deref().is_some_and(|a| key_cmp(&child_key, a) != Ordering::Greater) {
                        continue;
                    }
                    files.push((entry, child_key));
                }
            }
            // With the layout, a directory holds either files or directories, so emitting a
            // directory's files when it is visited keeps the key order.
            files.reverse();
            for (entry, child_key) in files {
                let meta = match entry.metadata() {
                    Ok(m) => m,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => {
                        chunk.push(Err(Error::disk(entry.path().display(), e)));
                        let _ = tx.blocking_send(chunk);
                        return;
                    }
                };
                let Ok(location) = object_store::path::Path::parse(&child_key) else { continue };
                let last_modified = meta.modified().map(DateTime::<Utc>::from).unwrap_or_else(|_| Utc::now());
                chunk.push(Ok(ObjectMeta { location, last_modified, size: meta.len(), e_tag: None, version: None }));
                if chunk.len() == CHUNK && tx.blocking_send(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK))).is_err() {
                    return;
                }
            }
        }
        if !chunk.is_empty() {
            let _ = tx.blocking_send(chunk);
        }
    });
    let mut rx = rx;
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).flat_map(futures::stream::iter).boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_order_is_segment_order() {
        assert_eq!(key_cmp("ab/c", "ab-d/c"), Ordering::Less);
        assert_eq!(key_cmp("a/b/c", "a/b"), Ordering::Greater);
        assert_eq!(key_cmp("a/0/1", "a/@final/1"), Ordering::Less);
    }
}
