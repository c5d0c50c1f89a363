//! Deleting and listing on a `file://` store without ever leaving its root.
//!
//! object_store's `LocalFileSystem` resolves a key by joining it to the root and letting the
//! kernel follow every symbolic link on the way, so a symlinked directory inside the store turned
//! a delete into a delete somewhere else on the machine. Here a key is resolved from a descriptor
//! of the root, one real directory at a time, and no symbolic link is ever followed:
//!
//! - **delete**: the key's directory is opened relative to the root with `openat2(…,
//!   RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH)` (or, where the kernel lacks it, one `openat(…,
//!   O_NOFOLLOW | O_DIRECTORY)` per level), and the last segment is removed with `unlinkat` on
//!   that descriptor. What is checked is what is deleted: there is no window between a check and
//!   the unlink for a directory to be swapped for a link. A key whose directory passes through a
//!   symbolic link is refused with an error naming the key and the link; it never counts as "not
//!   found", which would let `delete-objects` drop the queue row while the file stays. A key whose
//!   last segment is itself a symbolic link removes the link, never its target. A missing file or
//!   directory still means "already deleted".
//! - **list**: directories are opened the same way and read through their descriptors; symbolic
//!   links (to files or directories) are not objects of the store and are skipped with a
//!   warning, as `list-orphans` and `orphan-files` skip them.
//! - **read** (the Job Artifacts API's downloads): the file is opened the same way, with
//!   `O_NOFOLLOW`, and must be a regular file: a link planted in the store serves nothing.
//! - **head** is left to `LocalFileSystem`, which follows links: it only reads metadata, and
//!   answering truthfully lets `verify` see objects of projects whose directories an operator
//!   moved to another disk, and lets `delete-orphans` re-check a line and then report its delete
//!   as failed (exit 3) rather than as "already gone".
//!
//! Keys reach this module already parsed as object_store paths (no empty, `.` or `..` segment, no
//! control character), so every segment is one plain directory entry name.

use std::ffi::CStr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use futures::stream::{BoxStream, StreamExt};
use object_store::ObjectMeta;
use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::error::{Error, Result};

/// The root directory of a `file://` store, held open for the life of the store: every key is
/// resolved from this descriptor, so the root itself is the one path resolved by name.
#[derive(Debug)]
pub struct LocalRoot {
    path: PathBuf,
    fd: OwnedFd,
}

/// Why a key could not be resolved to a directory.
enum Resolve {
    /// A directory on the way does not exist: the object is already gone.
    Missing,
    /// Refused (a symbolic link on the way) or failed, with the error to report for the key.
    Refused(Error),
}

/// Set once `openat2` turns out to be unavailable (old kernel, seccomp filter), so the
/// per-level walk is used from then on without trying it again.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

const DIR_FLAGS: OFlags = OFlags::PATH.union(OFlags::DIRECTORY).union(OFlags::CLOEXEC);
/// Directories a listing reads: never through a link.
const READ_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

impl LocalRoot {
    pub fn open(path: &Path) -> std::io::Result<LocalRoot> {
        // The root may itself be a link (an operator's choice of disk); below it, nothing may.
        let fd = rustix::fs::open(path, DIR_FLAGS, Mode::empty())?;
        Ok(LocalRoot { path: path.to_path_buf(), fd })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Delete one object by its key relative to the root. Blocking: call it from a blocking thread.
    pub fn delete(&self, key: &str) -> Result<()> {
        let (opened, name) = match self.parent(key) {
            Ok(p) => p,
            Err(Resolve::Missing) => return Ok(()),
            Err(Resolve::Refused(e)) => return Err(e),
        };
        let parent = opened.as_ref().map_or(self.fd.as_fd(), |f| f.as_fd());
        // unlinkat never follows a link in its last component: a link is removed as a link.
        match rustix::fs::unlinkat(parent, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(Error::disk(
                format_args!("cannot delete {key:?} in {}", self.path.display()),
                e,
            )),
        }
    }

    /// Open an object for reading by its key, without following any link: a symbolic link, or
    /// one on the way, is refused, and so is anything but a regular file (a FIFO would block the
    /// reader). None when there is no such object. Blocking: call it from a blocking thread.
    pub fn open_file(&self, key: &str) -> Result<Option<std::fs::File>> {
        let (opened, name) = match self.parent(key) {
            Ok(p) => p,
            Err(Resolve::Missing) => return Ok(None),
            Err(Resolve::Refused(e)) => return Err(e),
        };
        let parent = opened.as_ref().map_or(self.fd.as_fd(), |f| f.as_fd());
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(parent, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(Error::disk(format_args!("cannot open {key:?} in {} (a symbolic link is refused)", self.path.display()), e)),
        };
        match rustix::fs::fstat(&fd) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => Ok(Some(std::fs::File::from(fd))),
            Ok(_) => Err(Error::other(format!("{key:?} in {} is not a regular file", self.path.display()))),
            Err(e) => Err(Error::disk(format_args!("cannot read {key:?} in {}", self.path.display()), e)),
        }
    }

    /// The directory of `key`, opened without following links (None: the root itself), and the
    /// key's last segment.
    fn parent<'k>(&self, key: &'k str) -> Result<(Option<OwnedFd>, &'k str), Resolve> {
        match key.rsplit_once('/') {
            Some((dir, name)) => Ok((Some(self.open_dir(key, dir)?), name)),
            None => Ok((None, key)),
        }
    }

    /// Open `dir` (a `/`-separated path below the root, a prefix of `key`) without following links.
    fn open_dir(&self, key: &str, dir: &str) -> Result<OwnedFd, Resolve> {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if !NO_OPENAT2.load(Ordering::Relaxed) {
            use rustix::fs::ResolveFlags;
            let how = ResolveFlags::NO_SYMLINKS | ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
            match rustix::fs::openat2(&self.fd, dir, DIR_FLAGS, Mode::empty(), how) {
                Ok(fd) => return Ok(fd),
                Err(Errno::NOENT) => return Err(Resolve::Missing),
                // Unavailable here: fall back to the walk, which gives the same answers.
                Err(Errno::NOSYS | Errno::PERM | Errno::INVAL | Errno::OPNOTSUPP) => {
                    NO_OPENAT2.store(true, Ordering::Relaxed);
                }
                // Some component is a link or not a directory: the walk says which and why.
                Err(_) => {}
            }
        }
        self.walk_dir(key, dir)
    }

    /// One `openat(O_NOFOLLOW)` per directory level; on a failure, says what is in the way.
    fn walk_dir(&self, key: &str, dir: &str) -> Result<OwnedFd, Resolve> {
        let mut current: Option<OwnedFd> = None;
        let mut end = 0usize;
        for seg in dir.split('/') {
            end += if end == 0 { seg.len() } else { seg.len() + 1 };
            let at = &dir[..end];
            let parent = current.as_ref().map_or(self.fd.as_fd(), |f| f.as_fd());
            // With O_PATH | O_NOFOLLOW a link would be opened as itself; O_DIRECTORY refuses it,
            // and the type is checked as well so that no kernel quirk can let one through.
            let (ft, err) = match rustix::fs::openat(parent, seg, DIR_FLAGS | OFlags::NOFOLLOW, Mode::empty()) {
                Ok(fd) => match rustix::fs::fstat(&fd) {
                    Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                        current = Some(fd);
                        continue;
                    }
                    Ok(st) => (FileType::from_raw_mode(st.st_mode), None),
                    Err(e) => (FileType::Directory, Some(e)),
                },
                Err(Errno::NOENT) => return Err(Resolve::Missing),
                Err(e) => match rustix::fs::statat(parent, seg, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) => (FileType::from_raw_mode(st.st_mode), Some(e)),
                    Err(Errno::NOENT) => return Err(Resolve::Missing),
                    Err(_) => (FileType::Directory, Some(e)),
                },
            };
            return Err(Resolve::Refused(match (ft, err) {
                (FileType::Symlink, _) => Error::Input(format!(
                    "refusing to delete {key:?}: {} is a symbolic link, and housekeep never deletes outside the store root",
                    self.shown(at)
                )),
                (FileType::Directory, Some(e)) => {
                    Error::disk(format_args!("cannot delete {key:?}: {}", self.shown(at)), e)
                }
                _ => Error::StoreFailed(format!(
                    "cannot delete {key:?}: {} is not a directory",
                    self.shown(at)
                )),
            }));
        }
        current.ok_or_else(|| Resolve::Refused(Error::Input(format!("cannot delete {key:?}: empty directory path"))))
    }

    fn shown(&self, rel: &str) -> String {
        format!("{:?}", self.path.join(rel).display().to_string())
    }

    /// Every regular file under `under` (a directory key, the whole root when None) whose key is
    /// greater than `offset`, in no particular order across directories. Symbolic links are
    /// skipped with a warning. Runs on a blocking thread and streams through a small channel.
    pub fn list(self: &Arc<Self>, under: Option<String>, offset: Option<String>) -> BoxStream<'static, Result<ObjectMeta>> {
        const CHUNK: usize = 512;
        let (tx, rx) = tokio::sync::mpsc::channel::<Vec<Result<ObjectMeta>>>(4);
        let root = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let mut out = Sink { tx, chunk: Vec::with_capacity(CHUNK) };
            if let Err(e) = root.walk(under.as_deref(), offset.as_deref(), &mut out, CHUNK) {
                out.chunk.push(Err(e));
            }
            out.flush();
        });
        let mut rx = rx;
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).flat_map(futures::stream::iter).boxed()
    }

    fn walk(
        &self,
        under: Option<&str>,
        offset: Option<&str>,
        out: &mut Sink,
        chunk: usize,
    ) -> Result<()> {
        let Some(start) = self.open_start(under)? else {
            return Ok(());
        };
        // Depth first; a directory's descriptor lives as long as a child of it waits on the stack.
        let mut stack: Vec<(Arc<OwnedFd>, Option<String>, String)> =
            vec![(Arc::new(start), None, under.unwrap_or("").to_string())];
        while let Some((parent, name, key)) = stack.pop() {
            let fd = match &name {
                None => parent,
                Some(n) => {
                    match rustix::fs::openat(&*parent, n.as_str(), READ_FLAGS, Mode::empty()) {
                        Ok(fd) => Arc::new(fd),
                        // Gone since it was read, or replaced by a link: either way nothing to list.
                        Err(Errno::NOENT | Errno::LOOP | Errno::NOTDIR) => continue,
                        Err(e) => return Err(self.listing_failed(&key, e)),
                    }
                }
            };
            for (name, ft) in self.entries(&fd, &key)? {
                let child = if key.is_empty() { name.clone() } else { format!("{key}/{name}") };
                match ft {
                    FileType::Directory => {
                        // Every key below starts with "child/" and so sorts before "child0".
                        if offset.is_some_and(|o| format!("{child}0").as_str() <= o) {
                            continue;
                        }
                        stack.push((Arc::clone(&fd), Some(name), child));
                    }
                    FileType::RegularFile => {
                        if offset.is_some_and(|o| child.as_str() <= o) || is_staging_file(&name) {
                            continue;
                        }
                        let Some(meta) = self.object(&fd, &name, child)? else {
                            continue;
                        };
                        out.chunk.push(Ok(meta));
                        if out.chunk.len() >= chunk && !out.flush() {
                            return Ok(());
                        }
                    }
                    FileType::Symlink => {
                        tracing::warn!(key = ?child, "listing skipped a symbolic link: housekeep never follows links out of the store root");
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    fn listing_failed(&self, what: &str, e: Errno) -> Error {
        Error::disk(format_args!("listing {}: {what}", self.path.display()), e)
    }

    /// The directory a listing starts from (the root, or `under` below it), opened level by
    /// level without following links; None when there is nothing to list (missing, not a
    /// directory, or through a symbolic link, which is skipped with a warning).
    fn open_start(&self, under: Option<&str>) -> Result<Option<OwnedFd>> {
        let mut start: OwnedFd = rustix::fs::openat(&self.fd, ".", READ_FLAGS, Mode::empty())
            .map_err(|e| self.listing_failed(".", e))?;
        let Some(under) = under else {
            return Ok(Some(start));
        };
        for seg in under.split('/') {
            match rustix::fs::openat(&start, seg, READ_FLAGS, Mode::empty()) {
                Ok(fd) => start = fd,
                Err(Errno::NOENT) => return Ok(None),
                Err(e @ (Errno::LOOP | Errno::NOTDIR)) => {
                    if let Ok(st) = rustix::fs::statat(&start, seg, AtFlags::SYMLINK_NOFOLLOW)
                        && FileType::from_raw_mode(st.st_mode) == FileType::Symlink
                    {
                        tracing::warn!(key = ?under, "listing skipped: the directory passes through a symbolic link, which housekeep never follows");
                        return Ok(None);
                    }
                    if e == Errno::NOTDIR {
                        return Ok(None);
                    }
                    return Err(self.listing_failed(under, e));
                }
                Err(e) => return Err(self.listing_failed(under, e)),
            }
        }
        Ok(Some(start))
    }

    /// The entries of the directory `fd` (key `key`) with their types, in reverse name order so
    /// that the stack pops them in order; names that are not UTF-8 are skipped with a warning.
    fn entries(&self, fd: &OwnedFd, key: &str) -> Result<Vec<(String, FileType)>> {
        let mut entries: Vec<(String, FileType)> = Vec::new();
        for entry in Dir::read_from(fd).map_err(|e| self.listing_failed(key, e))? {
            let entry = entry.map_err(|e| self.listing_failed(key, e))?;
            let raw: &CStr = entry.file_name();
            let bytes = raw.to_bytes();
            if bytes == b"." || bytes == b".." {
                continue;
            }
            let Ok(name) = std::str::from_utf8(bytes) else {
                tracing::warn!(dir = ?key, name = ?String::from_utf8_lossy(bytes), "listing skipped a name that is not UTF-8");
                continue;
            };
            let mut ft = entry.file_type();
            if ft == FileType::Unknown {
                ft = match rustix::fs::statat(fd, name, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) => FileType::from_raw_mode(st.st_mode),
                    Err(_) => continue,
                };
            }
            entries.push((name.to_string(), ft));
        }
        entries.sort_unstable_by(|a, b| b.0.cmp(&a.0));
        Ok(entries)
    }

    /// The object of the regular file `name` in the directory `fd`, whose key is `key`; None when
    /// the name is not a valid key (skipped with a warning) or the file is gone.
    fn object(&self, fd: &OwnedFd, name: &str, key: String) -> Result<Option<ObjectMeta>> {
        let Ok(location) = object_store::path::Path::parse(&key) else {
            tracing::warn!(key = ?key, "listing skipped a file whose name is not a valid object key");
            return Ok(None);
        };
        let st = match rustix::fs::statat(fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(self.listing_failed(&key, e)),
        };
        let last_modified = Utc
            .timestamp_opt(st.st_mtime as i64, st.st_mtime_nsec as u32)
            .single()
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        Ok(Some(ObjectMeta {
            location,
            last_modified,
            size: st.st_size.max(0) as u64,
            e_tag: None,
            version: None,
        }))
    }
}

/// `name#123`: a file `LocalFileSystem::put` is still writing (it renames it into place when
/// done). Not an object; `LocalFileSystem` never lists them either.
fn is_staging_file(name: &str) -> bool {
    match name.rsplit_once('#') {
        Some((_, n)) => !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()),
        None => false,
    }
}

struct Sink {
    tx: tokio::sync::mpsc::Sender<Vec<Result<ObjectMeta>>>,
    chunk: Vec<Result<ObjectMeta>>,
}

impl Sink {
    /// Send what is buffered; false once the receiver is gone (the listing was dropped).
    fn flush(&mut self) -> bool {
        if self.chunk.is_empty() {
            return true;
        }
        let cap = self.chunk.capacity();
        self.tx.blocking_send(std::mem::replace(&mut self.chunk, Vec::with_capacity(cap))).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn root() -> (tempfile::TempDir, tempfile::TempDir, LocalRoot) {
        let store = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let r = LocalRoot::open(store.path()).unwrap();
        (store, outside, r)
    }

    fn touch(p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"x").unwrap();
    }

    #[test]
    fn deletes_below_the_root_and_counts_missing_as_done() {
        let (store, _outside, r) = root();
        touch(&store.path().join("a/b/c"));
        touch(&store.path().join("top"));
        r.delete("a/b/c").unwrap();
        r.delete("top").unwrap();
        assert!(!store.path().join("a/b/c").exists());
        assert!(!store.path().join("top").exists());
        // Missing file, missing directory: already deleted.
        r.delete("a/b/c").unwrap();
        r.delete("x/y/z").unwrap();
    }

    #[test]
    fn never_deletes_through_a_symlinked_directory() {
        let (store, outside, r) = root();
        touch(&outside.path().join("victim"));
        std::fs::create_dir_all(store.path().join("a")).unwrap();
        symlink(outside.path(), store.path().join("a/link")).unwrap();
        for walk in [false, true] {
            let err = if walk {
                match r.walk_dir("a/link/victim", "a/link") {
                    Err(Resolve::Refused(e)) => e.to_string(),
                    _ => panic!("the walk must refuse the link"),
                }
            } else {
                r.delete("a/link/victim").unwrap_err().to_string()
            };
            assert!(err.contains("\"a/link/victim\"") && err.contains("symbolic link") && err.contains("never deletes outside"), "{err}");
        }
        assert!(outside.path().join("victim").exists());
        // A link as the last component is removed as a link; its target stays.
        symlink(outside.path().join("victim"), store.path().join("a/file-link")).unwrap();
        r.delete("a/file-link").unwrap();
        assert!(std::fs::symlink_metadata(store.path().join("a/file-link")).is_err());
        assert!(outside.path().join("victim").exists());
    }

    #[test]
    fn a_file_in_the_way_is_an_error_not_a_deletion() {
        let (store, _outside, r) = root();
        touch(&store.path().join("a/file"));
        assert!(r.delete("a/file/x").is_err());
        assert!(matches!(r.walk_dir("a/file/x", "a/file"), Err(Resolve::Refused(_))));
        std::fs::create_dir_all(store.path().join("a/dir")).unwrap();
        assert!(r.delete("a/dir").is_err(), "a directory is not an object");
    }

    #[tokio::test]
    async fn a_root_that_is_itself_a_link_is_the_operators_choice_and_works() {
        let (real, _outside, _) = root();
        let holder = tempfile::tempdir().unwrap();
        let linked = holder.path().join("artifacts");
        symlink(real.path(), &linked).unwrap();
        touch(&real.path().join("a/1"));
        touch(&real.path().join("a/2"));
        let r = Arc::new(LocalRoot::open(&linked).unwrap());
        r.delete("a/1").unwrap();
        assert!(!real.path().join("a/1").exists());
        let listed: Vec<String> = r.list(None, None).map(|m| m.unwrap().location.to_string()).collect().await;
        assert_eq!(listed, ["a/2"]);
    }

    #[tokio::test]
    async fn lists_without_following_links() {
        let (store, outside, r) = root();
        let r = Arc::new(r);
        touch(&outside.path().join("secret/file"));
        touch(&store.path().join("a/1"));
        touch(&store.path().join("a/2"));
        touch(&store.path().join("b/3"));
        touch(&store.path().join("b/x#12"));
        symlink(outside.path(), store.path().join("a/link")).unwrap();
        symlink(outside.path().join("secret/file"), store.path().join("b/flink")).unwrap();
        let keys = |under: Option<&str>, offset: Option<&str>| {
            let s = r.list(under.map(str::to_string), offset.map(str::to_string));
            async move {
                let mut v: Vec<String> = s.map(|m| m.unwrap().location.to_string()).collect().await;
                v.sort();
                v
            }
        };
        assert_eq!(keys(None, None).await, ["a/1", "a/2", "b/3"]);
        assert_eq!(keys(Some("a"), None).await, ["a/1", "a/2"]);
        assert_eq!(keys(None, Some("a/1")).await, ["a/2", "b/3"]);
        assert!(keys(Some("a/link"), None).await.is_empty());
        assert!(keys(Some("nope"), None).await.is_empty());
    }
}
