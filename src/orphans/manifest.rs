//! Crash-safe CSV manifests: an append-only output file plus a progress file beside it.
//!
//! Protocol: lines are appended and the file fsynced, then the progress — which records the
//! file's committed length — is replaced atomically (write, fsync, rename, fsync directory). On
//! resume the file is truncated back to the committed length. Whatever instant the process dies
//! at, every line is either committed exactly once or dropped and produced again.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};

/// `<dir>/<prefix><basename of file><suffix>`.
pub fn beside(file: &Path, prefix: &str, suffix: &str) -> PathBuf {
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    file.with_file_name(format!("{prefix}{name}{suffix}"))
}

fn io_err(path: &Path, e: std::io::Error) -> Error {
    Error::Other(format!("{}: {e}", path.display()))
}

/// Replace `path` with `bytes` atomically and durably.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = beside(path, ".", ".tmp");
    let mut f = File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| io_err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    Ok(())
}

pub fn read_progress<P: DeserializeOwned>(path: &Path) -> Result<Option<P>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Input(format!("progress file {} is damaged ({e}); use --force-restart", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path, e)),
    }
}

pub fn write_progress<P: Serialize>(path: &Path, p: &P) -> Result<()> {
    write_atomic(path, &serde_json::to_vec_pretty(p).map_err(Error::other)?)
}

pub fn remove_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(path, e)),
    }
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
                "{} is shorter ({actual} bytes) than its progress file records ({committed}); was it edited? use --force-restart",
                path.display()
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
    fn beside_names_files_next_to_the_manifest() {
        assert_eq!(beside(Path::new("/x/orphans.csv"), "deleted_from--", ""), PathBuf::from("/x/deleted_from--orphans.csv"));
        assert_eq!(beside(Path::new("o.csv"), "", ".progress"), PathBuf::from("o.csv.progress"));
    }
}
