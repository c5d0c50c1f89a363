//! One file streamed out of a zip archive in object storage, for
//! `GET /projects/:id/jobs/:job_id/artifacts/*artifact_path`, without downloading the archive.
//!
//! Protocol, all with ranged GETs pinned to the ETag that `head` returned (an archive replaced
//! midway fails with a store error instead of mixing two archives):
//! 1. `head` for the size, then one GET of the last 64 KiB + 22 bytes, where the End Of Central
//!    Directory record lies whatever the length of the archive comment: the last `PK\5\6`
//!    whose comment ends at the end of the object, else, as Go's `archive/zip` (GitLab
//!    Workhorse) does, the last whose comment fits.
//! 2. A Zip64 locator just before it leads to the Zip64 record, whose sizes and offset win.
//! 3. The central directory is refused above [`MAX_CENTRAL_DIRECTORY`], then streamed (or sliced
//!    from the tail when it lies there) and scanned record by record, keeping only the first
//!    record whose name equals the entry byte for byte, as Workhorse does. Sizes and offsets of
//!    that record come from its Zip64 extra field when the 32-bit ones are saturated.
//! 4. One GET of the 30-byte local header (for the lengths of its name and extra field), then
//!    the entry's stream: one GET of exactly the compressed bytes, inflated when deflated, cut
//!    into chunks of at most [`MAX_CHUNK`] bytes, with CRC-32 and size checked at the end.
//!
//! Memory is bounded whatever the archive: the tail (64 KiB), one store chunk, one central
//! directory record (under 200 KiB: three 16-bit lengths), the inflater's window and one output
//! chunk. No allocation follows a size read from the archive beyond those 16-bit lengths.
//!
//! Why hand-written parsing: `async_zip` 0.0.19 reads the central directory behind an
//! `AsyncBufRead + AsyncSeek` (an adapter turning seeks into ranged GETs would be needed), keeps
//! every entry in a `Vec` and sizes it with `Vec::with_capacity` from the entry count in the
//! archive (up to 2^64 with Zip64), and its entry readers borrow the archive reader, so a
//! `'static` stream needs an owning wrapper. `rc-zip` 5 is sans-IO and fits ranged reads well,
//! but its `ArchiveFsm` keeps the whole central directory twice (headers, then entries) without a
//! cap, and guesses a text encoding (CP437, Shift-JIS) that changes names before comparison.
//! Scanning for one name needs only the fixed record layouts, so that part is here (about 200
//! lines); the data path uses `async-compression` (inflate over `tokio-util`'s `StreamReader`)
//! and `crc32fast`. A leaf module: only the store, no other housekeep module.

use std::fmt;
use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use async_compression::tokio::bufread::DeflateDecoder;
use bytes::Bytes;
use futures::stream::{self, BoxStream, Stream, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, GetResult, GetResultPayload, ObjectStore, ObjectStoreExt};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncSeekExt};
use tokio_util::io::{ReaderStream, StreamReader};

/// Largest central directory read (about two million entries with 80-byte names); beyond it the
/// archive is refused with [`ZipEntryError::DirectoryTooLarge`].
pub const MAX_CENTRAL_DIRECTORY: u64 = 256 << 20;

/// Largest chunk an [`Entry`]'s stream yields.
pub const MAX_CHUNK: usize = 64 << 10;

/// Compression method 0: the bytes as they are.
const STORED: u16 = 0;
/// Compression method 8: raw DEFLATE.
const DEFLATED: u16 = 8;

const EOCD_SIGNATURE: u32 = 0x0605_4b50;
const EOCD_LEN: u64 = 22;
const MAX_COMMENT: u64 = u16::MAX as u64;
const LOCATOR_SIGNATURE: u32 = 0x0706_4b50;
const LOCATOR_LEN: u64 = 20;
const ZIP64_EOCD_SIGNATURE: u32 = 0x0606_4b50;
const ZIP64_EOCD_LEN: u64 = 56;
const CENTRAL_SIGNATURE: u32 = 0x0201_4b50;
const CENTRAL_LEN: usize = 46;
const LOCAL_SIGNATURE: u32 = 0x0403_4b50;
const LOCAL_LEN: u64 = 30;
const ZIP64_EXTRA_ID: u16 = 0x0001;
const SATURATED: u32 = u32::MAX;

/// Why an entry could not be opened or streamed. The HTTP layer maps them: `Store` with
/// `object_store::Error::NotFound` is a missing archive, `Corrupt`, `DirectoryTooLarge`,
/// `Unsupported` and `Encrypted` are archives it cannot serve, the rest break a stream already
/// started.
#[derive(Debug, thiserror::Error)]
pub enum ZipEntryError {
    /// The store failed, the object is missing, or it changed since `head`.
    #[error("reading {location}: {source}")]
    Store {
        /// The archive.
        location: Path,
        /// What the store said.
        #[source]
        source: object_store::Error,
    },
    /// Not a zip archive, or a damaged one.
    #[error("{location} is not a readable zip archive: {reason}")]
    Corrupt {
        /// The archive.
        location: Path,
        /// What is wrong, for the log.
        reason: String,
    },
    /// The central directory is larger than [`MAX_CENTRAL_DIRECTORY`].
    #[error("{location}: the central directory has {size} bytes, more than the {limit} read")]
    DirectoryTooLarge {
        /// The archive.
        location: Path,
        /// Its size, as the archive states it.
        size: u64,
        /// [`MAX_CENTRAL_DIRECTORY`].
        limit: u64,
    },
    /// The entry is compressed with a method other than stored (0) or deflate (8).
    #[error(
        "entry {entry:?} is compressed with method {method}; only stored and deflate are served"
    )]
    Unsupported {
        /// The entry's name.
        entry: String,
        /// Its compression method number (12 bzip2, 14 LZMA, 93 zstd, ...).
        method: u16,
    },
    /// The entry is encrypted.
    #[error("entry {entry:?} is encrypted")]
    Encrypted {
        /// The entry's name.
        entry: String,
    },
    /// The compressed data could not be inflated (damaged or cut short).
    #[error("entry {entry:?}: the compressed data is damaged: {source}")]
    Decompress {
        /// The entry's name.
        entry: String,
        /// What the inflater said.
        #[source]
        source: io::Error,
    },
    /// The data inflated to a different length than the central directory states.
    #[error("entry {entry:?}: {actual} bytes where the archive states {expected}")]
    SizeMismatch {
        /// The entry's name.
        entry: String,
        /// The size in the central directory.
        expected: u64,
        /// The bytes produced when the difference was noticed (at the end, or as soon as more
        /// than `expected` came out).
        actual: u64,
    },
    /// The data's CRC-32 differs from the central directory's.
    #[error("entry {entry:?}: CRC-32 {actual:08x} where the archive states {expected:08x}")]
    CrcMismatch {
        /// The entry's name.
        entry: String,
        /// The CRC-32 in the central directory.
        expected: u32,
        /// The CRC-32 of the bytes produced.
        actual: u32,
    },
}

/// The bytes of an entry, uncompressed, in chunks of at most [`MAX_CHUNK`] bytes. After the last
/// chunk comes an error item if the data does not match the central directory's size or CRC-32.
pub type EntryStream = BoxStream<'static, Result<Bytes, ZipEntryError>>;

/// One file found in an archive, ready to stream.
pub struct Entry {
    /// The entry's name in the archive.
    pub name: String,
    /// Its uncompressed size, from the central directory (the `Content-Length`).
    pub size: u64,
    /// Its bytes; reading starts when it is first polled.
    pub stream: EntryStream,
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry").field("name", &self.name).field("size", &self.size).finish()
    }
}

/// Finds `entry` (an exact name, as [`super::artifact_path::validate_artifact_path`] returns it)
/// in the zip archive at `location` and returns its stream, or `None` when the archive has no
/// such file (absent, or a directory: a name ending in `/`).
pub async fn open_entry(
    store: Arc<dyn ObjectStore>,
    location: &Path,
    entry: &str,
) -> Result<Option<Entry>, ZipEntryError> {
    let archive = Archive::open(store, location.clone()).await?;
    let directory = archive.central_directory().await?;
    let Some(record) = archive.find(&directory, entry.as_bytes()).await? else {
        return Ok(None);
    };
    if entry.ends_with('/') {
        return Ok(None);
    }
    if record.flags & 1 != 0 {
        return Err(ZipEntryError::Encrypted { entry: entry.to_owned() });
    }
    if record.method != STORED && record.method != DEFLATED {
        let method = record.method;
        return Err(ZipEntryError::Unsupported { entry: entry.to_owned(), method });
    }
    let compressed = archive.entry_data(&directory, &record).await?;
    let data = decompress(compressed, record.method);
    let stream = Verified::new(location.clone(), entry.to_owned(), &record, data);
    Ok(Some(Entry { name: entry.to_owned(), size: record.uncompressed, stream: stream.boxed() }))
}

/// Where the central directory lies.
struct Directory {
    offset: u64,
    size: u64,
}

/// What the central directory says of the entry looked for.
struct Record {
    flags: u16,
    method: u16,
    crc32: u32,
    compressed: u64,
    uncompressed: u64,
    local_header: u64,
}

/// The archive being read: where it is, its ETag, and its last bytes.
struct Archive {
    store: Arc<dyn ObjectStore>,
    location: Path,
    e_tag: Option<String>,
    /// The object's last `min(size, 22 + 65535)` bytes.
    tail: Bytes,
    tail_start: u64,
}

impl Archive {
    async fn open(store: Arc<dyn ObjectStore>, location: Path) -> Result<Self, ZipEntryError> {
        let meta = store
            .head(&location)
            .await
            .map_err(|source| ZipEntryError::Store { location: location.clone(), source })?;
        let size = meta.size;
        let tail_start = size.saturating_sub(EOCD_LEN + MAX_COMMENT);
        let mut archive =
            Self { store, location, e_tag: meta.e_tag, tail: Bytes::new(), tail_start };
        if size < EOCD_LEN {
            return Err(archive.corrupt(format!("{size} bytes, too short for a zip archive")));
        }
        archive.tail = archive.fetch(tail_start..size).await?;
        Ok(archive)
    }

    /// The central directory's place, from the End Of Central Directory record and, when a
    /// locator precedes it, the Zip64 one.
    async fn central_directory(&self) -> Result<Directory, ZipEntryError> {
        let at = find_eocd(&self.tail)
            .ok_or_else(|| self.corrupt("no end of central directory record".into()))?;
        let eocd = &self.tail[at..];
        let eocd_offset = self.tail_start + at as u64;
        let (directory, end) = match self.zip64_directory(eocd_offset).await? {
            Some(found) => found,
            None => {
                let directory =
                    Directory { size: le32(eocd, 12).into(), offset: le32(eocd, 16).into() };
                (directory, eocd_offset)
            }
        };
        if directory.size > MAX_CENTRAL_DIRECTORY {
            return Err(ZipEntryError::DirectoryTooLarge {
                location: self.location.clone(),
                size: directory.size,
                limit: MAX_CENTRAL_DIRECTORY,
            });
        }
        if directory.offset.checked_add(directory.size).is_none_or(|dir_end| dir_end > end) {
            return Err(self.corrupt(format!(
                "the central directory ({} bytes at {}) overlaps its end record at {end}",
                directory.size, directory.offset
            )));
        }
        Ok(directory)
    }

    /// The directory from the Zip64 end record, and where that record starts, when a Zip64
    /// locator sits right before the end record at `eocd_offset`.
    async fn zip64_directory(
        &self,
        eocd_offset: u64,
    ) -> Result<Option<(Directory, u64)>, ZipEntryError> {
        let Some(locator_offset) = eocd_offset.checked_sub(LOCATOR_LEN) else {
            return Ok(None);
        };
        let locator = self.bytes(locator_offset..eocd_offset).await?;
        if le32(&locator, 0) != LOCATOR_SIGNATURE {
            return Ok(None);
        }
        let record_offset = le64(&locator, 8);
        let record_end = record_offset
            .checked_add(ZIP64_EOCD_LEN)
            .filter(|end| *end <= locator_offset)
            .ok_or_else(|| self.corrupt("the Zip64 locator points past itself".into()))?;
        let record = self.bytes(record_offset..record_end).await?;
        if le32(&record, 0) != ZIP64_EOCD_SIGNATURE {
            return Err(self.corrupt("no Zip64 end of central directory record".into()));
        }
        let directory = Directory { size: le64(&record, 40), offset: le64(&record, 48) };
        Ok(Some((directory, record_offset)))
    }

    /// The first central directory record named `name`, if any.
    async fn find(
        &self,
        directory: &Directory,
        name: &[u8],
    ) -> Result<Option<Record>, ZipEntryError> {
        let range = directory.offset..directory.offset + directory.size;
        let found = match self.cached(&range) {
            Some(bytes) => scan(&mut &bytes[..], name).await,
            None if range.is_empty() => Ok(None),
            None => {
                let chunks = body(self.get(range).await?);
                scan(&mut StreamReader::new(chunks), name).await
            }
        };
        found.map_err(|e| self.io_error(e, "central directory"))
    }

    /// The entry's compressed bytes, after its local header, requested from the store (or
    /// sliced from the tail).
    async fn entry_data(
        &self,
        directory: &Directory,
        record: &Record,
    ) -> Result<BoxStream<'static, io::Result<Bytes>>, ZipEntryError> {
        let header_end = record.local_header.checked_add(LOCAL_LEN);
        let header_end = header_end
            .filter(|end| *end <= directory.offset)
            .ok_or_else(|| self.corrupt("local header overlaps the central directory".into()))?;
        let header = self.bytes(record.local_header..header_end).await?;
        if le32(&header, 0) != LOCAL_SIGNATURE {
            let at = record.local_header;
            return Err(self.corrupt(format!("no local file header at offset {at}")));
        }
        let skip = u64::from(le16(&header, 26)) + u64::from(le16(&header, 28));
        let start = header_end + skip;
        let range = start
            .checked_add(record.compressed)
            .filter(|end| *end <= directory.offset)
            .map(|end| start..end)
            .ok_or_else(|| self.corrupt("entry data overlaps the central directory".into()))?;
        if let Some(bytes) = self.cached(&range) {
            return Ok(stream::once(async { Ok(bytes) }).boxed());
        }
        if range.is_empty() {
            return Ok(stream::empty().boxed());
        }
        Ok(body(self.get(range).await?))
    }

    /// A ranged GET, pinned to the ETag of `head`.
    async fn get(&self, range: Range<u64>) -> Result<GetResult, ZipEntryError> {
        let options = GetOptions {
            range: Some(GetRange::Bounded(range.clone())),
            if_match: self.e_tag.clone(),
            ..GetOptions::default()
        };
        let result = self.store.get_opts(&self.location, options).await;
        let result = result.map_err(|source| self.store_error(source))?;
        if result.range != range {
            let got = &result.range;
            return Err(self.corrupt(format!("asked the store for bytes {range:?}, got {got:?}")));
        }
        Ok(result)
    }

    /// A small range (callers ask for at most the tail's length), whole.
    async fn fetch(&self, range: Range<u64>) -> Result<Bytes, ZipEntryError> {
        let result = self.get(range).await?;
        result.bytes().await.map_err(|source| self.store_error(source))
    }

    /// A small range, from the tail when it lies there.
    async fn bytes(&self, range: Range<u64>) -> Result<Bytes, ZipEntryError> {
        match self.cached(&range) {
            Some(bytes) => Ok(bytes),
            None => self.fetch(range).await,
        }
    }

    /// The range, when the tail holds all of it.
    fn cached(&self, range: &Range<u64>) -> Option<Bytes> {
        let start = usize::try_from(range.start.checked_sub(self.tail_start)?).ok()?;
        let end = usize::try_from(range.end.checked_sub(self.tail_start)?).ok()?;
        (start <= end && end <= self.tail.len()).then(|| self.tail.slice(start..end))
    }

    fn corrupt(&self, reason: String) -> ZipEntryError {
        ZipEntryError::Corrupt { location: self.location.clone(), reason }
    }

    fn store_error(&self, source: object_store::Error) -> ZipEntryError {
        ZipEntryError::Store { location: self.location.clone(), source }
    }

    /// A failure while reading `what` through a reader: the store's, or the archive's fault.
    fn io_error(&self, error: io::Error, what: &str) -> ZipEntryError {
        match into_store_error(error) {
            Ok(source) => self.store_error(source),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                self.corrupt(format!("the {what} is cut short"))
            }
            Err(e) => self.corrupt(format!("{what}: {e}")),
        }
    }
}

/// Where the End Of Central Directory record starts in `tail`: the last signature whose comment
/// ends exactly at the end of the object, else the last whose comment fits (Go's rule, which
/// tolerates bytes appended after the archive). The first rule keeps a comment that itself holds
/// `PK\5\6` from being taken for the record.
fn find_eocd(tail: &[u8]) -> Option<usize> {
    let last = tail.len().checked_sub(EOCD_LEN as usize)?;
    let mut fitting = None;
    for at in (0..=last).rev().filter(|&at| le32(tail, at) == EOCD_SIGNATURE) {
        let end = at + EOCD_LEN as usize + usize::from(le16(tail, at + 20));
        if end == tail.len() {
            return Some(at);
        }
        if end < tail.len() && fitting.is_none() {
            fitting = Some(at);
        }
    }
    fitting
}

/// Reads central directory records until one is named `name` or the directory ends. Only the
/// name of a record as long as `name`, and the extra field of the match, are kept.
async fn scan<R: AsyncBufRead + Unpin>(reader: &mut R, name: &[u8]) -> io::Result<Option<Record>> {
    let mut header = [0u8; CENTRAL_LEN];
    let mut buffer = Vec::new();
    loop {
        if reader.fill_buf().await?.is_empty() {
            return Ok(None);
        }
        reader.read_exact(&mut header).await?;
        if le32(&header, 0) != CENTRAL_SIGNATURE {
            return Err(invalid("a central directory record lacks its signature"));
        }
        let name_len = usize::from(le16(&header, 28));
        let extra_len = usize::from(le16(&header, 30));
        let comment_len = u64::from(le16(&header, 32));
        if name_len == name.len() {
            buffer.resize(name_len, 0);
            reader.read_exact(&mut buffer).await?;
            if buffer == name {
                buffer.resize(extra_len, 0);
                reader.read_exact(&mut buffer).await?;
                return Record::parse(&header, &buffer).map(Some);
            }
        } else {
            skip(reader, name_len as u64).await?;
        }
        skip(reader, extra_len as u64 + comment_len).await?;
    }
}

impl Record {
    /// The record from its fixed part and its extra field. Saturated 32-bit sizes and offset
    /// are taken from the Zip64 extra field, in the order APPNOTE 4.5.3 lists them.
    fn parse(header: &[u8; CENTRAL_LEN], extra: &[u8]) -> io::Result<Self> {
        let mut record = Record {
            flags: le16(header, 8),
            method: le16(header, 10),
            crc32: le32(header, 16),
            compressed: le32(header, 20).into(),
            uncompressed: le32(header, 24).into(),
            local_header: le32(header, 42).into(),
        };
        let mut wanted = [
            (le32(header, 24) == SATURATED).then_some(&mut record.uncompressed),
            (le32(header, 20) == SATURATED).then_some(&mut record.compressed),
            (le32(header, 42) == SATURATED).then_some(&mut record.local_header),
        ];
        if wanted.iter().all(Option::is_none) {
            return Ok(record);
        }
        let Some(mut field) = zip64_field(extra) else {
            return Err(invalid("saturated sizes without a Zip64 extra field"));
        };
        for slot in wanted.iter_mut().flatten() {
            let Some((value, rest)) = field.split_first_chunk::<8>() else {
                return Err(invalid("a Zip64 extra field is too short"));
            };
            **slot = u64::from_le_bytes(*value);
            field = rest;
        }
        Ok(record)
    }
}

/// The data of the Zip64 extended information extra field, if present. A field overrunning
/// the extra block ends the search, as in Go's `archive/zip`.
fn zip64_field(mut extra: &[u8]) -> Option<&[u8]> {
    while extra.len() >= 4 {
        let (id, size) = (le16(extra, 0), usize::from(le16(extra, 2)));
        let data = extra.get(4..4 + size)?;
        if id == ZIP64_EXTRA_ID {
            return Some(data);
        }
        extra = &extra[4 + size..];
    }
    None
}

/// Consumes `count` bytes without copying them anywhere.
async fn skip<R: AsyncBufRead + Unpin>(reader: &mut R, mut count: u64) -> io::Result<()> {
    while count > 0 {
        let available = reader.fill_buf().await?.len();
        if available == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let step = available.min(usize::try_from(count).unwrap_or(usize::MAX));
        reader.consume(step);
        count -= step as u64;
    }
    Ok(())
}

/// The uncompressed bytes, in chunks of at most [`MAX_CHUNK`].
/// Bytes read from a local file at a time.
const LOCAL_READ: usize = 256 << 10;

/// The body of a ranged GET: from a local file, [`LOCAL_READ`] bytes a read (object_store's own
/// stream reads a local file 8 KiB at a time, each read a blocking task of its own, which made a
/// stored entry 5 times slower than the archive); from any other store, as it sends it.
fn body(result: GetResult) -> BoxStream<'static, io::Result<Bytes>> {
    match result.payload {
        GetResultPayload::File(file, _) => {
            let range = result.range;
            stream::once(async move {
                let mut file = tokio::fs::File::from_std(file);
                file.seek(io::SeekFrom::Start(range.start)).await?;
                Ok::<_, io::Error>(ReaderStream::with_capacity(file.take(range.end - range.start), LOCAL_READ))
            })
            .try_flatten()
            .boxed()
        }
        GetResultPayload::Stream(s) => s.map_err(io::Error::other).boxed(),
    }
}

fn decompress(
    compressed: BoxStream<'static, io::Result<Bytes>>,
    method: u16,
) -> BoxStream<'static, io::Result<Bytes>> {
    let reader = StreamReader::new(compressed);
    let reader: Pin<Box<dyn AsyncRead + Send>> = match method {
        DEFLATED => Box::pin(DeflateDecoder::new(reader)),
        _ => Box::pin(reader),
    };
    ReaderStream::with_capacity(reader, MAX_CHUNK).boxed()
}

/// Passes the chunks on, counting and hashing them; ends with an error item when the total
/// exceeds or falls short of the stated size, or when the CRC-32 differs.
struct Verified {
    location: Path,
    entry: String,
    inner: BoxStream<'static, io::Result<Bytes>>,
    hasher: crc32fast::Hasher,
    produced: u64,
    expected_size: u64,
    expected_crc32: u32,
    done: bool,
}

impl Verified {
    fn new(
        location: Path,
        entry: String,
        record: &Record,
        inner: BoxStream<'static, io::Result<Bytes>>,
    ) -> Self {
        Self {
            location,
            entry,
            inner,
            hasher: crc32fast::Hasher::new(),
            produced: 0,
            expected_size: record.uncompressed,
            expected_crc32: record.crc32,
            done: false,
        }
    }

    fn size_mismatch(&self) -> ZipEntryError {
        let (entry, expected, actual) = (self.entry.clone(), self.expected_size, self.produced);
        ZipEntryError::SizeMismatch { entry, expected, actual }
    }

    /// The verdict once the inner stream has ended.
    fn finish(&mut self) -> Option<ZipEntryError> {
        if self.produced != self.expected_size {
            return Some(self.size_mismatch());
        }
        let actual = std::mem::take(&mut self.hasher).finalize();
        (actual != self.expected_crc32).then(|| ZipEntryError::CrcMismatch {
            entry: self.entry.clone(),
            expected: self.expected_crc32,
            actual,
        })
    }
}

impl Stream for Verified {
    type Item = Result<Bytes, ZipEntryError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        let item = match ready!(this.inner.poll_next_unpin(cx)) {
            Some(Ok(chunk)) => {
                this.produced += chunk.len() as u64;
                if this.produced > this.expected_size {
                    Err(this.size_mismatch())
                } else {
                    this.hasher.update(&chunk);
                    return Poll::Ready(Some(Ok(chunk)));
                }
            }
            Some(Err(error)) => Err(match into_store_error(error) {
                Ok(source) => ZipEntryError::Store { location: this.location.clone(), source },
                Err(source) => ZipEntryError::Decompress { entry: this.entry.clone(), source },
            }),
            None => match this.finish() {
                Some(error) => Err(error),
                None => {
                    this.done = true;
                    return Poll::Ready(None);
                }
            },
        };
        this.done = true;
        Poll::Ready(Some(item))
    }
}

/// The store's error inside `error`, when a ranged GET's stream failed; else `error` itself.
fn into_store_error(error: io::Error) -> Result<object_store::Error, io::Error> {
    if !error.get_ref().is_some_and(|inner| inner.is::<object_store::Error>()) {
        return Err(error);
    }
    let kind = error.kind();
    match error.into_inner().map(|inner| inner.downcast::<object_store::Error>()) {
        Some(Ok(source)) => Ok(*source),
        Some(Err(inner)) => Err(io::Error::new(kind, inner)),
        None => Err(kind.into()),
    }
}

fn invalid(reason: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason.to_owned())
}

/// Little-endian fields at fixed offsets; callers pass buffers of known length, and a field
/// outside `bytes` reads as 0 rather than panicking.
fn le16(bytes: &[u8], at: usize) -> u16 {
    bytes.get(at..at + 2).map_or(0, |b| u16::from_le_bytes([b[0], b[1]]))
}

fn le32(bytes: &[u8], at: usize) -> u32 {
    bytes.get(at..at + 4).map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn le64(bytes: &[u8], at: usize) -> u64 {
    bytes.get(at..at + 8).and_then(|b| b.try_into().ok()).map_or(0, u64::from_le_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::PutPayload;
    use object_store::local::LocalFileSystem;
    use object_store::memory::InMemory;
    use sha2::{Digest, Sha256};
    use std::io::{Cursor, Write};
    use zip::CompressionMethod;
    use zip::write::SimpleFileOptions;

    const LOCATION: &str = "2024_01/12/345/artifacts.zip";

    fn stored() -> SimpleFileOptions {
        SimpleFileOptions::default().compression_method(CompressionMethod::Stored)
    }

    fn deflated() -> SimpleFileOptions {
        SimpleFileOptions::default().compression_method(CompressionMethod::Deflated)
    }

    /// An archive of `files` (a name ending in `/` is a directory) with `comment`.
    fn archive(files: &[(&str, &[u8], SimpleFileOptions)], comment: &str) -> Vec<u8> {
        let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, data, options) in files {
            if name.ends_with('/') {
                writer.add_directory(*name, *options).unwrap();
            } else {
                writer.start_file(*name, *options).unwrap();
                writer.write_all(data).unwrap();
            }
        }
        writer.set_comment(comment).unwrap();
        writer.finish().unwrap().into_inner()
    }

    /// A store holding `bytes` at [`LOCATION`], and the directory a local store lives in.
    struct Fixture {
        store: Arc<dyn ObjectStore>,
        _dir: Option<tempfile::TempDir>,
    }

    impl Fixture {
        async fn memory(bytes: Vec<u8>) -> Self {
            let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
            store.put(&Path::from(LOCATION), PutPayload::from(bytes)).await.unwrap();
            Self { store, _dir: None }
        }

        async fn local(bytes: Vec<u8>) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let store: Arc<dyn ObjectStore> =
                Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
            store.put(&Path::from(LOCATION), PutPayload::from(bytes)).await.unwrap();
            Self { store, _dir: Some(dir) }
        }

        async fn both(bytes: Vec<u8>) -> [Self; 2] {
            [Self::memory(bytes.clone()).await, Self::local(bytes).await]
        }

        async fn open(&self, name: &str) -> Result<Option<Entry>, ZipEntryError> {
            open_entry(self.store.clone(), &Path::from(LOCATION), name).await
        }

        /// The entry's bytes, `None` when absent, or the first error.
        async fn read(&self, name: &str) -> Result<Option<Vec<u8>>, ZipEntryError> {
            let Some(entry) = self.open(name).await? else { return Ok(None) };
            let size = entry.size;
            let bytes = collect(entry).await?;
            assert_eq!(bytes.len() as u64, size);
            Ok(Some(bytes))
        }
    }

    async fn collect(entry: Entry) -> Result<Vec<u8>, ZipEntryError> {
        let mut bytes = Vec::new();
        let mut stream = entry.stream;
        while let Some(chunk) = stream.next().await {
            bytes.extend_from_slice(&chunk?);
        }
        Ok(bytes)
    }

    /// Where the central directory record named `name` starts in `bytes`.
    fn central_record(bytes: &[u8], name: &str) -> usize {
        let signature = CENTRAL_SIGNATURE.to_le_bytes();
        (0..bytes.len() - CENTRAL_LEN)
            .find(|&at| {
                bytes[at..at + 4] == signature
                    && usize::from(le16(bytes, at + 28)) == name.len()
                    && &bytes[at + CENTRAL_LEN..at + CENTRAL_LEN + name.len()] == name.as_bytes()
            })
            .unwrap()
    }

    fn log_text(lines: usize) -> Vec<u8> {
        (0..lines)
            .flat_map(|i| format!("{i:06} compiling crate number {}\n", i % 97).into_bytes())
            .collect()
    }

    #[tokio::test]
    async fn stored_and_deflated_entries_stream_their_bytes_from_memory_and_disk() {
        let log = log_text(20_000);
        let bytes = archive(
            &[
                ("readme.txt", b"hello artifacts\n", stored()),
                ("logs/build.log", &log, deflated()),
                ("empty-stored", b"", stored()),
                ("empty-deflated", b"", deflated()),
            ],
            "",
        );
        for fixture in Fixture::both(bytes).await {
            let entry = fixture.open("logs/build.log").await.unwrap().unwrap();
            assert_eq!((entry.name.as_str(), entry.size), ("logs/build.log", log.len() as u64));
            assert_eq!(collect(entry).await.unwrap(), log);
            assert_eq!(fixture.read("readme.txt").await.unwrap().unwrap(), b"hello artifacts\n");
            assert_eq!(fixture.read("empty-stored").await.unwrap().unwrap(), b"");
            assert_eq!(fixture.read("empty-deflated").await.unwrap().unwrap(), b"");
        }
    }

    #[tokio::test]
    async fn nested_names_match_exactly_and_case_sensitively() {
        let bytes = archive(&[("a/b/c.txt", b"deep", deflated()), ("c.txt", b"top", stored())], "");
        for fixture in Fixture::both(bytes).await {
            assert_eq!(fixture.read("a/b/c.txt").await.unwrap().unwrap(), b"deep");
            assert_eq!(fixture.read("c.txt").await.unwrap().unwrap(), b"top");
            for absent in ["b/c.txt", "a/b", "A/b/c.txt", "a/b/c.txt/", "a/b/c.tx"] {
                assert!(fixture.read(absent).await.unwrap().is_none(), "{absent}");
            }
        }
    }

    #[tokio::test]
    async fn a_missing_entry_is_none() {
        let bytes = archive(&[("present.txt", b"x", stored())], "");
        for fixture in Fixture::both(bytes).await {
            assert!(fixture.open("absent.txt").await.unwrap().is_none());
        }
    }

    #[tokio::test]
    async fn a_directory_entry_is_none_and_its_files_are_found() {
        let bytes =
            archive(&[("public/", b"", stored()), ("public/index.html", b"<p>", deflated())], "");
        for fixture in Fixture::both(bytes).await {
            assert!(fixture.open("public/").await.unwrap().is_none());
            assert!(fixture.open("public").await.unwrap().is_none());
            assert_eq!(fixture.read("public/index.html").await.unwrap().unwrap(), b"<p>");
        }
    }

    #[tokio::test]
    async fn an_archive_with_a_64_kib_comment_is_read() {
        // A comment of the largest length puts the end record at the very start of the tail,
        // so the Zip64 locator check reads before it; the comment also carries fake signatures.
        let comment: String =
            "PK\u{5}\u{6} not the end record ".chars().cycle().take(65_535).collect();
        let bytes = archive(&[("a.txt", b"commented", deflated())], &comment);
        assert!(bytes.len() > 65_535 + 22);
        for fixture in Fixture::both(bytes).await {
            assert_eq!(fixture.read("a.txt").await.unwrap().unwrap(), b"commented");
        }
    }

    #[tokio::test]
    async fn a_zip64_archive_is_read_through_its_zip64_records() {
        // More than 65,535 entries make the zip crate write the Zip64 end record and locator;
        // `large_file` gives the big entry a Zip64 extra field with saturated sizes.
        let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for i in 0..65_600 {
            writer.start_file(format!("f/{i}"), stored()).unwrap();
        }
        writer.start_file("last.txt", stored()).unwrap();
        writer.write_all(b"after 65600 files").unwrap();
        writer.start_file("big.log", deflated().large_file(true)).unwrap();
        writer.write_all(&log_text(1000)).unwrap();
        let bytes = writer.finish().unwrap().into_inner();
        let eocd = find_eocd(&bytes).unwrap();
        assert_eq!(le16(&bytes, eocd + 10), u16::MAX, "entry count saturated");
        assert_eq!(le32(&bytes, eocd - 20), LOCATOR_SIGNATURE);
        let big = central_record(&bytes, "big.log");
        assert_eq!(le32(&bytes, big + 20), SATURATED, "compressed size in the Zip64 extra field");

        let fixture = Fixture::local(bytes).await;
        assert_eq!(fixture.read("last.txt").await.unwrap().unwrap(), b"after 65600 files");
        assert_eq!(fixture.read("big.log").await.unwrap().unwrap(), log_text(1000));
        assert_eq!(fixture.read("f/65599").await.unwrap().unwrap(), b"");
        assert!(fixture.read("f/65600").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn an_archive_written_with_data_descriptors_is_read() {
        // A streamed archive (as a runner writing to a pipe makes) has sizes and CRC-32 after
        // the data and zeros in the local headers; the central directory has them right.
        let mut writer = zip::ZipWriter::new_stream(Vec::new());
        writer.start_file("streamed.log", deflated()).unwrap();
        writer.write_all(&log_text(3000)).unwrap();
        writer.start_file("stored.bin", stored()).unwrap();
        writer.write_all(b"raw").unwrap();
        let bytes = writer.finish().unwrap().into_inner();
        assert_ne!(le16(&bytes, 6) & 8, 0, "the first local header announces a data descriptor");
        for fixture in Fixture::both(bytes).await {
            assert_eq!(fixture.read("streamed.log").await.unwrap().unwrap(), log_text(3000));
            assert_eq!(fixture.read("stored.bin").await.unwrap().unwrap(), b"raw");
        }
    }

    #[tokio::test]
    async fn a_foreign_truncated_or_tiny_object_is_corrupt() {
        let good = archive(&[("a.txt", &log_text(5000), deflated())], "");
        let cases = [
            ("text", b"this is not a zip archive at all".repeat(4000)),
            ("truncated end", good[..good.len() - 10].to_vec()),
            ("second half", good[good.len() / 2..].to_vec()),
            ("first half", good[..good.len() / 2].to_vec()),
            ("tiny", b"PK\x05\x06".to_vec()),
            ("empty", Vec::new()),
        ];
        for (what, bytes) in cases {
            for fixture in Fixture::both(bytes.clone()).await {
                let error = fixture.open("a.txt").await.unwrap_err();
                assert!(matches!(error, ZipEntryError::Corrupt { .. }), "{what}: {error}");
            }
        }
    }

    #[tokio::test]
    async fn a_missing_object_is_a_store_not_found() {
        let fixture = Fixture::memory(Vec::new()).await;
        let missing = Path::from("2024_01/12/345/other.zip");
        let error = open_entry(fixture.store.clone(), &missing, "a.txt").await.unwrap_err();
        let ZipEntryError::Store { source, .. } = error else { panic!("{error}") };
        assert!(matches!(source, object_store::Error::NotFound { .. }), "{source}");
    }

    #[tokio::test]
    async fn a_tampered_crc_ends_the_stream_with_a_crc_mismatch() {
        let data = log_text(4000);
        for options in [stored(), deflated()] {
            let mut bytes = archive(&[("a.txt", &data, options)], "");
            let record = central_record(&bytes, "a.txt");
            bytes[record + 16] ^= 0xff;
            for fixture in Fixture::both(bytes.clone()).await {
                let mut stream = fixture.open("a.txt").await.unwrap().unwrap().stream;
                let mut delivered = Vec::new();
                let error = loop {
                    match stream.next().await.unwrap() {
                        Ok(chunk) => delivered.extend_from_slice(&chunk),
                        Err(error) => break error,
                    }
                };
                assert_eq!(delivered, data, "every byte comes before the verdict");
                assert!(matches!(error, ZipEntryError::CrcMismatch { .. }), "{error}");
                assert!(stream.next().await.is_none());
            }
        }
    }

    #[tokio::test]
    async fn damaged_deflate_data_ends_the_stream_with_an_error() {
        let data = log_text(20_000);
        let mut bytes = archive(&[("a.txt", &data, deflated())], "");
        let record = central_record(&bytes, "a.txt");
        let compressed = le32(&bytes, record + 20) as usize;
        let start = 30 + "a.txt".len() + usize::from(le16(&bytes, 28));
        for byte in &mut bytes[start + compressed / 3..start + compressed / 3 + 64] {
            *byte = 0xA5;
        }
        for fixture in Fixture::both(bytes.clone()).await {
            let error = fixture.read("a.txt").await.unwrap_err();
            assert!(
                matches!(
                    error,
                    ZipEntryError::Decompress { .. }
                        | ZipEntryError::CrcMismatch { .. }
                        | ZipEntryError::SizeMismatch { .. }
                ),
                "{error}"
            );
        }
    }

    #[tokio::test]
    async fn a_stream_never_yields_more_than_the_stated_size() {
        // A record understating the size (a zip bomb's trick) stops the stream at that size.
        let data = log_text(50_000);
        let mut bytes = archive(&[("bomb.txt", &data, deflated())], "");
        let record = central_record(&bytes, "bomb.txt");
        bytes[record + 24..record + 28].copy_from_slice(&1000u32.to_le_bytes());
        let fixture = Fixture::local(bytes).await;
        let entry = fixture.open("bomb.txt").await.unwrap().unwrap();
        assert_eq!(entry.size, 1000);
        let mut stream = entry.stream;
        let mut delivered = 0;
        let error = loop {
            match stream.next().await.unwrap() {
                Ok(chunk) => delivered += chunk.len(),
                Err(error) => break error,
            }
        };
        assert!(delivered <= 1000);
        let ZipEntryError::SizeMismatch { expected: 1000, actual, .. } = error else {
            panic!("{error}")
        };
        assert!(actual > 1000 && actual <= 1000 + MAX_CHUNK as u64, "{actual}");
    }

    #[tokio::test]
    async fn a_central_directory_over_the_cap_is_refused_before_it_is_read() {
        let mut eocd = vec![0u8; EOCD_LEN as usize];
        eocd[..4].copy_from_slice(&EOCD_SIGNATURE.to_le_bytes());
        eocd[12..16].copy_from_slice(&(300u32 << 20).to_le_bytes());
        let fixture = Fixture::memory(eocd).await;
        let error = fixture.open("a.txt").await.unwrap_err();
        let ZipEntryError::DirectoryTooLarge { size, limit, .. } = error else { panic!("{error}") };
        assert_eq!((size, limit), (300 << 20, MAX_CENTRAL_DIRECTORY));
    }

    #[tokio::test]
    async fn other_methods_and_encryption_are_typed_errors() {
        let bytes = archive(&[("a.txt", b"payload", stored())], "");
        let record = central_record(&bytes, "a.txt");
        let mut bzip2 = bytes.clone();
        bzip2[record + 10..record + 12].copy_from_slice(&12u16.to_le_bytes());
        let mut encrypted = bytes;
        encrypted[record + 8] |= 1;
        let error = Fixture::memory(bzip2).await.open("a.txt").await.unwrap_err();
        assert!(matches!(error, ZipEntryError::Unsupported { method: 12, .. }), "{error}");
        let error = Fixture::memory(encrypted).await.open("a.txt").await.unwrap_err();
        assert!(matches!(error, ZipEntryError::Encrypted { .. }), "{error}");
    }

    /// 50 MB of log-like bytes: compressible, but not trivially.
    fn large_data(len: usize) -> Vec<u8> {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                b"abcdefghij klmnop\n"[(state % 18) as usize]
            })
            .collect()
    }

    #[tokio::test]
    async fn a_50_mb_deflated_entry_streams_in_bounded_chunks() {
        let data = large_data(50 << 20);
        let options = deflated().compression_level(Some(1));
        let bytes = archive(&[("before.txt", b"x", stored()), ("big.log", &data, options)], "");
        assert!(bytes.len() < data.len(), "deflate shrank it");
        let fixture = Fixture::local(bytes).await;
        let entry = fixture.open("big.log").await.unwrap().unwrap();
        assert_eq!(entry.size, data.len() as u64);
        let (mut hasher, mut total, mut chunks) = (Sha256::new(), 0, 0);
        let mut stream = entry.stream;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.unwrap();
            assert!(chunk.len() <= MAX_CHUNK, "a chunk of {} bytes", chunk.len());
            hasher.update(&chunk);
            total += chunk.len();
            chunks += 1;
        }
        assert_eq!(total, data.len());
        assert!(chunks >= data.len() / MAX_CHUNK);
        assert_eq!(hasher.finalize(), Sha256::digest(&data));
    }

    #[tokio::test]
    async fn an_archive_with_bytes_appended_is_still_read() {
        let mut bytes = archive(&[("a.txt", b"kept", deflated())], "note");
        bytes.extend_from_slice(&[0u8; 100]);
        for fixture in Fixture::both(bytes).await {
            assert_eq!(fixture.read("a.txt").await.unwrap().unwrap(), b"kept");
        }
    }

    /// A store that records the range of every GET and can replace the object right after the
    /// `head`, as a concurrent upload would.
    #[derive(Debug)]
    struct Recording {
        inner: Arc<dyn ObjectStore>,
        ranges: std::sync::Mutex<Vec<Range<u64>>>,
        replace_after_head: std::sync::Mutex<Option<Vec<u8>>>,
    }

    impl Recording {
        fn new(inner: Arc<dyn ObjectStore>, replace_after_head: Option<Vec<u8>>) -> Arc<Self> {
            Arc::new(Self {
                inner,
                ranges: Default::default(),
                replace_after_head: std::sync::Mutex::new(replace_after_head),
            })
        }

        fn ranges(&self) -> Vec<Range<u64>> {
            self.ranges.lock().unwrap().clone()
        }
    }

    impl fmt::Display for Recording {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "Recording({})", self.inner)
        }
    }

    #[async_trait::async_trait]
    impl ObjectStore for Recording {
        async fn put_opts(
            &self,
            location: &Path,
            payload: PutPayload,
            opts: object_store::PutOptions,
        ) -> object_store::Result<object_store::PutResult> {
            self.inner.put_opts(location, payload, opts).await
        }

        async fn put_multipart_opts(
            &self,
            location: &Path,
            opts: object_store::PutMultipartOptions,
        ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
            self.inner.put_multipart_opts(location, opts).await
        }

        async fn get_opts(
            &self,
            location: &Path,
            options: GetOptions,
        ) -> object_store::Result<GetResult> {
            if options.head {
                let result = self.inner.get_opts(location, options).await;
                let replacement = self.replace_after_head.lock().unwrap().take();
                if let Some(bytes) = replacement {
                    self.inner.put(location, PutPayload::from(bytes)).await?;
                }
                return result;
            }
            if let Some(GetRange::Bounded(range)) = &options.range {
                self.ranges.lock().unwrap().push(range.clone());
            }
            self.inner.get_opts(location, options).await
        }

        fn delete_stream(
            &self,
            locations: BoxStream<'static, object_store::Result<Path>>,
        ) -> BoxStream<'static, object_store::Result<Path>> {
            self.inner.delete_stream(locations)
        }

        fn list(
            &self,
            prefix: Option<&Path>,
        ) -> BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
            self.inner.list(prefix)
        }

        async fn list_with_delimiter(
            &self,
            prefix: Option<&Path>,
        ) -> object_store::Result<object_store::ListResult> {
            self.inner.list_with_delimiter(prefix).await
        }

        async fn copy_opts(
            &self,
            from: &Path,
            to: &Path,
            options: object_store::CopyOptions,
        ) -> object_store::Result<()> {
            self.inner.copy_opts(from, to, options).await
        }
    }

    #[tokio::test]
    async fn opening_an_entry_reads_the_tail_its_local_header_and_its_data_only() {
        let payloads: Vec<Vec<u8>> = (0..40).map(|i| large_data(200_000 + i)).collect();
        let files: Vec<(String, &[u8])> =
            payloads.iter().enumerate().map(|(i, p)| (format!("part-{i}.bin"), &p[..])).collect();
        let files: Vec<(&str, &[u8], SimpleFileOptions)> =
            files.iter().map(|(name, data)| (name.as_str(), *data, deflated())).collect();
        let bytes = archive(&files, "");
        let size = bytes.len() as u64;
        let record = central_record(&bytes, "part-7.bin");
        let (compressed, local_header) = (le32(&bytes, record + 20), le32(&bytes, record + 42));
        let local = local_header as usize;
        let skip = u64::from(le16(&bytes, local + 26)) + u64::from(le16(&bytes, local + 28));
        let data_start = u64::from(local_header) + LOCAL_LEN + skip;
        let inner = Fixture::local(bytes).await;
        let store = Recording::new(inner.store.clone(), None);

        let entry = open_entry(store.clone(), &Path::from(LOCATION), "part-7.bin").await.unwrap();
        assert_eq!(collect(entry.unwrap()).await.unwrap(), payloads[7]);
        let expected = vec![
            size - (EOCD_LEN + MAX_COMMENT)..size,
            u64::from(local_header)..u64::from(local_header) + LOCAL_LEN,
            data_start..data_start + u64::from(compressed),
        ];
        assert_eq!(store.ranges(), expected, "the {size}-byte archive is never read whole");
    }

    #[tokio::test]
    async fn an_archive_replaced_after_head_is_a_store_error() {
        let old = archive(&[("a.txt", b"old", stored())], "");
        let new = archive(&[("a.txt", b"new!", stored())], "");
        let inner = Fixture::memory(old).await;
        let store = Recording::new(inner.store.clone(), Some(new));
        let error = open_entry(store, &Path::from(LOCATION), "a.txt").await.unwrap_err();
        let ZipEntryError::Store { source, .. } = error else { panic!("{error}") };
        assert!(matches!(source, object_store::Error::Precondition { .. }), "{source}");
    }

    #[test]
    fn the_open_future_and_the_entry_stream_are_send_for_an_http_handler() {
        fn send<T: Send>(_: &T) {}
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let location = Path::from(LOCATION);
        send(&open_entry(store, &location, "a.txt"));
        let stream: EntryStream = stream::empty().boxed();
        send(&Entry { name: "a.txt".into(), size: 0, stream });
    }
}
