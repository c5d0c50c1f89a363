//! Crash-safe CSV manifests: one process per manifest, an append-only output file plus a
//! progress file beside it, and a bounded-memory reader of manifest lines.
//!
//! Protocol: lines are appended and the file fsynced, then the progress — which records the
//! file's committed length — is replaced atomically (write, fsync, rename, fsync directory). On
//! resume the file is truncated back to the committed length. Whatever instant the process dies
//! at, every line is either committed exactly once or dropped and produced again.
//!
//! The protocol assumes a single writer, so `list-orphans` and `delete-orphans` take an OS file
//! lock on `FILE.lock` ([`lock`]) before touching FILE or anything beside it. The lock dies with
//! its process (SIGKILL included), so a crashed holder never blocks the next run; the file holds
//! the holder's pid, host and start time only so that a refused process can say who holds it.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The longest manifest line accepted, terminator excluded. GitLab keys are at most 1,024 bytes;
/// a longer line is not a manifest line, and is never read into memory whole.
pub const MAX_LINE: usize = 4096;

/// `<dir>/<prefix><basename of file><suffix>`.
pub fn beside(file: &Path, prefix: &str, suffix: &str) -> PathBuf {
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    file.with_file_name(format!("{prefix}{name}{suffix}"))
}

fn io_err(path: &Path, e: std::io::Error) -> Error {
    Error::io(path, e)
}

/// A value from user input, escaped (`{:?}`) and cut to a readable length for a message.
pub fn shown(s: &str) -> String {
    const MAX: usize = 256;
    if s.len() <= MAX {
        return format!("{s:?}");
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}… ({} bytes)", &s[..end], s.len())
}

/// Refuse a `--filename` that cannot be a manifest, naming what is wrong with it rather than
/// the files housekeep keeps beside it.
pub fn check_filename(file: &Path) -> Result<()> {
    if file.file_name().is_none() {
        return Err(Error::Input(format!("--filename {file:?} does not name a file")));
    }
    if std::fs::metadata(file).is_ok_and(|m| m.is_dir()) {
        return Err(Error::Input(format!("--filename {file:?} is a directory; give the path of a file")));
    }
    let dir = file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Error::Input(format!("--filename {file:?}: {dir:?} is not a directory"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(Error::Input(format!("--filename {file:?}: the directory {dir:?} does not exist")))
        }
        Err(e) => Err(Error::Input(format!("--filename {file:?}: the directory {dir:?}: {e}"))),
    }
}

/// Who holds a manifest's lock, as written into the lock file.
#[derive(Debug, Serialize, Deserialize)]
struct Holder {
    pid: u32,
    host: String,
    since: String,
    command: String,
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// The exclusive right to work on one manifest; released when dropped or when the process dies.
#[derive(Debug)]
pub struct ManifestLock {
    path: PathBuf,
    file: File,
}

/// Take the lock of `manifest` (`<manifest>.lock`) for `command`, or refuse at once (exit 2)
/// naming the process that holds it.
pub fn lock(manifest: &Path, command: &str) -> Result<ManifestLock> {
    acquire(manifest, command, false)?.ok_or_else(|| Error::other("unreachable: no lock"))
}

/// The lock for a command that only reads the manifest (a dry run): as [`lock`], except that
/// in a directory where no file can be created (a read-only mount) it goes without — no other
/// housekeep can be writing there either.
pub fn lock_to_read(manifest: &Path, command: &str) -> Result<Option<ManifestLock>> {
    acquire(manifest, command, true)
}

fn acquire(manifest: &Path, command: &str, read_only_ok: bool) -> Result<Option<ManifestLock>> {
    check_filename(manifest)?;
    let path = beside(manifest, "", ".lock");
    // A holder that is finishing removes the lock file; what we locked may then be a name that
    // is gone, so check that the path still leads to the locked file, and retry if not.
    for _ in 0..20 {
        let mut file = match OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&path) {
            Ok(f) => f,
            Err(e)
                if read_only_ok
                    && matches!(e.kind(), std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(io_err(&path, e)),
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = (&file).take(4096).read_to_string(&mut text);
                let who = match serde_json::from_str::<Holder>(&text) {
                    Ok(h) => format!("{} (pid {} on host {:?}, since {})", h.command, h.pid, h.host, h.since),
                    Err(_) => "another housekeep process (it has not written its details yet)".to_string(),
                };
                return Err(Error::Input(format!(
                    "{manifest:?} is in use by {who}; only one list-orphans or delete-orphans may work on a manifest at a time. \
                     Wait for it to finish or stop it: its lock ({path:?}) goes with the process, so running again afterwards continues"
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io_err(&path, e)),
        }
        use std::os::unix::fs::MetadataExt;
        let same = match (file.metadata(), std::fs::metadata(&path)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        };
        if !same {
            continue;
        }
        let holder = Holder {
            pid: std::process::id(),
            host: host_name(),
            since: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            command: command.to_string(),
        };
        let text = serde_json::to_vec(&holder)?;
        file.set_len(0)
            .and_then(|_| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(&text))
            .map_err(|e| io_err(&path, e))?;
        return Ok(Some(ManifestLock { path, file }));
    }
    Err(Error::Other(format!("{path:?}: could not take the lock (the file kept changing)")))
}

impl ManifestLock {
    /// Remove temporary files that [`write_atomic`] left for `path` in a crash. Only the lock
    /// holder writes beside its manifest, so every such file belongs to a process that is gone.
    pub fn sweep_temporaries(&self, path: &Path) {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { return };
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let Ok(rd) = std::fs::read_dir(dir) else { return };
        let head = format!(".{name}.");
        for entry in rd.filter_map(|e| e.ok()) {
            let Ok(n) = entry.file_name().into_string() else { continue };
            let Some(rest) = n.strip_prefix(&head).and_then(|r| r.strip_suffix(".tmp")) else { continue };
            let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
            if rest.split_once('.').is_some_and(|(pid, k)| numeric(pid) && numeric(k)) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

impl Drop for ManifestLock {
    fn drop(&mut self) {
        // The name goes first, while the lock is still held; the lock goes with `self.file`.
        let _ = std::fs::remove_file(&self.path);
        let _ = self.file.unlock();
    }
}

/// Replace `path` with `bytes` atomically and durably. The temporary file's name is unique to
/// this process and call, so two writers never share one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let tmp = beside(path, ".", &format!(".{}.{}.tmp", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)));
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp).map_err(|e| io_err(&tmp, e))?;
        f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| io_err(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(d) = File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

pub fn read_progress<P: DeserializeOwned>(path: &Path) -> Result<Option<P>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Input(format!("progress file {path:?} is damaged ({e}); use --force-restart"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path, e)),
    }
}

pub fn write_progress<P: Serialize>(path: &Path, p: &P) -> Result<()> {
    write_atomic(path, &serde_json::to_vec_pretty(p)?)
}

pub fn remove_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(path, e)),
    }
}

/// The length of `path` up to and including its last newline: what is left once a partial last
/// line (a crash while appending) is cut. 0 when the file does not exist.
pub fn whole_lines_len(path: &Path) -> Result<u64> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_err(path, e)),
    };
    let mut end = f.metadata().map_err(|e| io_err(path, e))?.len();
    let mut buf = vec![0u8; 8192];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        f.seek(SeekFrom::Start(start)).and_then(|_| f.read_exact(chunk)).map_err(|e| io_err(path, e))?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// An append-only output file, reopened at its committed length.
pub struct Output {
    path: PathBuf,
    file: File,
    len: u64,
}

impl Output {
    pub fn open_at(path: &Path, committed: u64) -> Result<Output> {
        let mut file = OpenOptions::new().create(true).truncate(false).write(true).read(true).open(path).map_err(|e| io_err(path, e))?;
        let actual = file.metadata().map_err(|e| io_err(path, e))?.len();
        if actual < committed {
            return Err(Error::Input(format!(
                "{path:?} is shorter ({actual} bytes) than its progress file records ({committed}); was it edited? use --force-restart"
            )));
        }
        file.set_len(committed).map_err(|e| io_err(path, e))?;
        file.seek(SeekFrom::Start(committed)).map_err(|e| io_err(path, e))?;
        Ok(Output { path: path.to_path_buf(), file, len: committed })
    }

    pub fn append(&mut self, bytes: &[u8]) -> Result<()> {
        self.file.write_all(bytes).map_err(|e| io_err(&self.path, e))?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Make everything appended durable; returns the committed length.
    pub fn sync(&mut self) -> Result<u64> {
        self.file.sync_data().map_err(|e| io_err(&self.path, e))?;
        Ok(self.len)
    }
}

/// CSV records (RFC 4180 quoting), one line at a time, through one reused writer.
pub struct CsvLines {
    w: csv::Writer<Sink>,
    buf: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

/// Where the reused writer puts its bytes until they are taken.
struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().map_err(|_| std::io::Error::other("poisoned"))?.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Default for CsvLines {
    fn default() -> Self {
        let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let w = csv::WriterBuilder::new()
            .has_headers(false)
            .terminator(csv::Terminator::Any(b'\n'))
            .from_writer(Sink(buf.clone()));
        CsvLines { w, buf }
    }
}

impl CsvLines {
    /// The record as bytes, with a trailing newline.
    pub fn line(&mut self, fields: &[&str]) -> Vec<u8> {
        let _ = self.w.write_record(fields);
        let _ = self.w.flush();
        self.buf.lock().map(|mut b| std::mem::take(&mut *b)).unwrap_or_default()
    }
}

/// One CSV record (RFC 4180 quoting), with a trailing newline.
pub fn csv_line(fields: &[&str]) -> Vec<u8> {
    CsvLines::default().line(fields)
}

/// One physical line of a manifest, without its terminator (`\n` or `\r\n`).
#[derive(Debug, PartialEq, Eq)]
pub enum RawLine<'a> {
    Line(&'a [u8]),
    /// Longer than [`MAX_LINE`]: its length in bytes; its content was never kept.
    TooLong(u64),
}

/// Reads a manifest one physical line at a time through a fixed buffer, numbering lines as an
/// editor does, whatever their endings; a line longer than [`MAX_LINE`] is skipped over, not
/// read into memory.
pub struct LineReader<R> {
    inner: BufReader<R>,
    buf: Vec<u8>,
    line: usize,
    offset: u64,
}

impl<R: Read> LineReader<R> {
    /// A reader whose next line is line number `line + 1`, at byte `offset`.
    pub fn new(inner: R, line: usize, offset: u64) -> LineReader<R> {
        LineReader { inner: BufReader::with_capacity(64 * 1024, inner), buf: Vec::with_capacity(MAX_LINE + 2), line, offset }
    }

    /// The number of the last line returned (1-based).
    pub fn line(&self) -> usize {
        self.line
    }

    /// The byte offset just after the last line returned.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The reader underneath; what it buffered ahead is dropped.
    pub fn into_inner(self) -> R {
        self.inner.into_inner()
    }

    pub fn next_line(&mut self) -> std::io::Result<Option<RawLine<'_>>> {
        self.buf.clear();
        let (mut total, mut too_long, mut any, mut ended) = (0u64, false, false, false);
        loop {
            let chunk = self.inner.fill_buf()?;
            if chunk.is_empty() {
                break;
            }
            any = true;
            let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (chunk.len(), false),
            };
            total += take as u64;
            if !too_long {
                // Room for the line and its \r\n; beyond that it is too long, and dropped.
                if self.buf.len() + take > MAX_LINE + 2 {
                    too_long = true;
                    self.buf.clear();
                } else {
                    self.buf.extend_from_slice(&chunk[..take]);
                }
            }
            self.inner.consume(take);
            if done {
                ended = true;
                break;
            }
        }
        if !any {
            return Ok(None);
        }
        self.line += 1;
        self.offset += total;
        let terminator = match (ended, too_long) {
            (false, _) => 0,
            (true, false) if self.buf.ends_with(b"\r\n") => 2,
            (true, false) => 1,
            (true, true) => 1,
        };
        if too_long {
            return Ok(Some(RawLine::TooLong(total - terminator)));
        }
        let content = &self.buf[..self.buf.len() - terminator as usize];
        if content.len() > MAX_LINE {
            return Ok(Some(RawLine::TooLong(content.len() as u64)));
        }
        Ok(Some(RawLine::Line(content)))
    }
}

/// The fields of one CSV record on one line (RFC 4180: a field in double quotes may hold commas
/// and doubled quotes). Manifest keys never hold a line break, so a record never spans lines.
pub fn split_csv_line(line: &str) -> std::result::Result<Vec<String>, &'static str> {
    let mut fields = Vec::with_capacity(2);
    let mut rest = line;
    loop {
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut field = String::new();
            let mut chars = quoted.char_indices();
            let after = loop {
                match chars.next() {
                    None => return Err("a quoted field is not closed"),
                    Some((i, '"')) => {
                        if quoted[i + 1..].starts_with('"') {
                            field.push('"');
                            chars.next();
                        } else {
                            break &quoted[i + 1..];
                        }
                    }
                    Some((_, c)) => field.push(c),
                }
            };
            fields.push(field);
            if after.is_empty() {
                return Ok(fields);
            }
            rest = after.strip_prefix(',').ok_or("text after a closing quote")?;
        } else {
            match rest.split_once(',') {
                Some((f, r)) => {
                    fields.push(f.to_string());
                    rest = r;
                }
                None => {
                    fields.push(rest.to_string());
                    return Ok(fields);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_truncates_to_the_committed_length() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.csv");
        let mut o = Output::open_at(&p, 0).unwrap();
        o.append(b"a,1\n").unwrap();
        let committed = o.sync().unwrap();
        o.append(b"b,2\n").unwrap();
        drop(o);
        let mut o = Output::open_at(&p, committed).unwrap();
        o.append(b"c,3\n").unwrap();
        o.sync().unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "a,1\nc,3\n");
        assert!(Output::open_at(&p, 100).is_err());
    }

    #[test]
    fn csv_lines_quote_as_rfc4180() {
        assert_eq!(csv_line(&["a/b", "1"]), b"a/b,1\n");
        assert_eq!(csv_line(&["a,\"b\"", "1"]), b"\"a,\"\"b\"\"\",1\n");
        let mut lines = CsvLines::default();
        assert_eq!(lines.line(&["x", "1"]), b"x,1\n");
        assert_eq!(lines.line(&["y,z", "2"]), b"\"y,z\",2\n");
    }

    #[test]
    fn split_reads_back_what_csv_lines_write() {
        for fields in [["a/b", "1"], ["a,\"b\"", "12"], ["we,ird \"pré\"fix/x", "0"], ["", "3"], ["\"", "\"\""]] {
            let line = csv_line(&fields);
            let text = std::str::from_utf8(&line).unwrap().trim_end_matches('\n');
            assert_eq!(split_csv_line(text).unwrap(), fields, "{text}");
        }
        assert_eq!(split_csv_line("a,b,c").unwrap(), ["a", "b", "c"]);
        assert_eq!(split_csv_line("a").unwrap(), ["a"]);
        assert!(split_csv_line("\"a,1").is_err());
        assert!(split_csv_line("\"a\"x,1").is_err());
    }

    #[test]
    fn beside_names_files_next_to_the_manifest() {
        assert_eq!(beside(Path::new("/x/orphans.csv"), "deleted_from--", ""), PathBuf::from("/x/deleted_from--orphans.csv"));
        assert_eq!(beside(Path::new("o.csv"), "", ".progress"), PathBuf::from("o.csv.progress"));
    }

    fn all_lines(data: &[u8]) -> Vec<(usize, u64, String)> {
        let mut r = LineReader::new(data, 0, 0);
        let mut out = Vec::new();
        while let Some(l) = r.next_line().unwrap() {
            let s = match l {
                RawLine::Line(b) => String::from_utf8_lossy(b).into_owned(),
                RawLine::TooLong(n) => format!("<{n} bytes>"),
            };
            out.push((r.line(), r.offset(), s));
        }
        out
    }

    #[test]
    fn lines_are_numbered_physically_whatever_their_endings() {
        let got = all_lines(b"a,1\r\n\r\nb,2\n\nc,3");
        let want = [(1, 5, "a,1"), (2, 7, ""), (3, 11, "b,2"), (4, 12, ""), (5, 15, "c,3")];
        assert_eq!(got, want.map(|(n, o, s)| (n, o, s.to_string())));
        assert!(all_lines(b"").is_empty());
    }

    #[test]
    fn an_over_long_line_is_measured_not_kept() {
        let mut data = b"a,1\n".to_vec();
        data.extend(std::iter::repeat_n(b'x', 1_000_000));
        data.extend_from_slice(b"\r\nb,2\n");
        data.extend(std::iter::repeat_n(b'y', MAX_LINE));
        data.extend_from_slice(b"\n");
        data.extend(std::iter::repeat_n(b'z', MAX_LINE + 1));
        let got = all_lines(&data);
        assert_eq!(got[0].2, "a,1");
        assert_eq!(got[1].2, "<1000001 bytes>");
        assert_eq!((got[2].0, got[2].2.as_str()), (3, "b,2"));
        assert_eq!(got[3].2.len(), MAX_LINE, "exactly MAX_LINE is accepted");
        assert_eq!(got[4].2, format!("<{} bytes>", MAX_LINE + 1));
        assert_eq!(got[4].1, data.len() as u64);
    }

    #[test]
    fn whole_lines_len_cuts_only_a_partial_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.csv");
        assert_eq!(whole_lines_len(&p).unwrap(), 0);
        std::fs::write(&p, "a,1,\nb,2,\n").unwrap();
        assert_eq!(whole_lines_len(&p).unwrap(), 10);
        let mut long = "a,1,\n".to_string();
        long.push_str(&"x".repeat(20_000));
        std::fs::write(&p, &long).unwrap();
        assert_eq!(whole_lines_len(&p).unwrap(), 5);
        std::fs::write(&p, "partial").unwrap();
        assert_eq!(whole_lines_len(&p).unwrap(), 0);
    }

    #[test]
    fn concurrent_atomic_writes_never_share_a_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.progress");
        std::thread::scope(|s| {
            for t in 0..4u8 {
                let p = &p;
                s.spawn(move || {
                    let body = vec![b'a' + t; 64 * 1024];
                    for _ in 0..50 {
                        write_atomic(p, &body).unwrap();
                    }
                });
            }
        });
        let body = std::fs::read(&p).unwrap();
        assert_eq!(body.len(), 64 * 1024);
        assert!(body.iter().all(|b| *b == body[0]), "one writer's content, whole");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, [std::ffi::OsString::from("x.progress")], "no temporary left behind");
    }

    #[test]
    fn a_second_lock_is_refused_naming_the_holder_and_freed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("o.csv");
        let held = lock(&m, "list-orphans").unwrap();
        let err = lock(&m, "delete-orphans").unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let msg = err.to_string();
        assert!(msg.contains(&format!("pid {}", std::process::id())) && msg.contains("list-orphans"), "{msg}");
        drop(held);
        assert!(!dir.path().join("o.csv.lock").exists(), "the lock file goes with the lock");
        let again = lock(&m, "delete-orphans").unwrap();
        // A temporary a crashed writer left beside the progress file is swept; others are not.
        let progress = dir.path().join("o.csv.progress");
        std::fs::write(dir.path().join(".o.csv.progress.123.4.tmp"), "x").unwrap();
        std::fs::write(dir.path().join(".o.csv.progress.x.progress.1.2.tmp"), "x").unwrap();
        again.sweep_temporaries(&progress);
        assert!(!dir.path().join(".o.csv.progress.123.4.tmp").exists());
        assert!(dir.path().join(".o.csv.progress.x.progress.1.2.tmp").exists());
    }

    #[test]
    fn filenames_that_cannot_be_manifests_are_named_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let err = check_filename(dir.path()).unwrap_err().to_string();
        assert!(err.contains("is a directory"), "{err}");
        let missing = dir.path().join("nope/x.csv");
        let err = lock(&missing, "list-orphans").unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("does not exist") && err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn shown_escapes_and_cuts() {
        assert_eq!(shown("a\x1b[31m\r"), "\"a\\u{1b}[31m\\r\"");
        let long = "é".repeat(1000);
        let s = shown(&long);
        assert!(s.len() < 400 && s.ends_with("(2000 bytes)"), "{s}");
    }
}
