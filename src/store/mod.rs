//! Object stores: `file://`, `s3://`, `gs://` and `az://` URLs, built on object_store.
//!
//! A [`Store`] takes and returns *full* keys (store prefix included), the form CSV manifests carry;
//! [`Store::full_key`] turns a layout key into one. Deleting a key that is already gone counts as
//! done, and bulk deletes report one result per key, in order, whatever the backend does.
//!
//! Two guarantees hold here, once, for every caller: a `file://` store never deletes or lists
//! through a symbolic link, so nothing outside its root is ever deleted ([`local`]); and a cloud
//! listing skips, with a warning, the keys object_store cannot represent instead of failing on
//! them ([`listing`]).

pub mod layout;
mod walk;
mod listing;
pub mod local;
pub mod url;
pub mod error;

use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use object_store::list::PaginatedListStore;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload};

use crate::db::conninfo::redact as redact_url;
use crate::error::{Error, Result};
pub use error::OpenError;
pub use url::{StoreUrl, StoreUrlError};

/// S3 DeleteObjects takes at most 1,000 keys a request.
pub const BULK_DELETE_MAX: usize = 1000;

/// Retries of one cloud request on a transient failure (5xx, 429, timeouts, connection errors):
/// at most 5, with jittered exponential back-off from 100 ms up to 5 s, and never past 20 s from
/// the first attempt, so a shutdown still ends within its 30 s. What still fails is recorded on
/// the queue row, which backs off in its turn.
pub fn retry_config() -> object_store::RetryConfig {
    object_store::RetryConfig {
        backoff: object_store::BackoffConfig {
            init_backoff: std::time::Duration::from_millis(100),
            max_backoff: std::time::Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: 5,
        retry_timeout: std::time::Duration::from_secs(20),
    }
}

/// One object store plus the prefix every key of ours lives under.
#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    prefix: String,
    url: String,
    bulk_delete: bool,
    /// A `file://` store's root: deletes and listings go through it, never through `inner`.
    local: Option<Arc<local::LocalRoot>>,
    /// The same store as `inner`, page by page, for listings that survive odd keys.
    paged: Option<Arc<dyn PaginatedListStore>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("url", &self.url).finish()
    }
}

impl Store {
    /// Build a store from its URL. Credentials, region and endpoint come from the standard
    /// environment variables of each cloud (`AWS_*`, `GOOGLE_*`, `AZURE_*`).
    pub fn open(url: &str) -> Result<Store> {
        let shown = redact_url(url);
        let parsed = StoreUrl::parse(url)?;
        let open_err = |e: OpenError| Error::StoreOpen {
            url: shown.clone(),
            source: e,
        };
        let build_err = |e: object_store::Error| open_err(OpenError::Build(e));
        type Parts = (Arc<dyn ObjectStore>, String, bool, Option<Arc<local::LocalRoot>>, Option<Arc<dyn PaginatedListStore>>);
        let (inner, prefix, bulk, local, paged): Parts = match parsed {
            StoreUrl::Local { root } => {
                if !root.is_dir() {
                    return Err(open_err(OpenError::NoDirectory(root)));
                }
                let fs = object_store::local::LocalFileSystem::new_with_prefix(&root).map_err(build_err)?;
                let local = local::LocalRoot::open(&root).map_err(|source| {
                    open_err(OpenError::Root {
                        root: root.clone(),
                        source,
                    })
                })?;
                (Arc::new(fs), String::new(), false, Some(Arc::new(local)), None)
            }
            StoreUrl::S3 { bucket, prefix } => {
                let mut b = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket).with_retry(retry_config());
                let endpoint = std::env::var("AWS_ENDPOINT_URL_S3")
                    .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
                    .or_else(|_| std::env::var("AWS_ENDPOINT"))
                    .unwrap_or_default();
                if endpoint.starts_with("http://") {
                    b = b.with_allow_http(true);
                }
                if std::env::var("AWS_REGION").is_err() && std::env::var("AWS_DEFAULT_REGION").is_err() {
                    b = b.with_region("us-east-1");
                }
                let s = Arc::new(b.build().map_err(build_err)?);
                (s.clone(), prefix, true, None, Some(s))
            }
            StoreUrl::Gcs { bucket, prefix } => {
                let b = object_store::gcp::GoogleCloudStorageBuilder::from_env().with_bucket_name(bucket).with_retry(retry_config());
                let s = Arc::new(b.build().map_err(build_err)?);
                (s.clone(), prefix, true, None, Some(s))
            }
            StoreUrl::Azure { container, prefix } => {
                let b = object_store::azure::MicrosoftAzureBuilder::from_env().with_container_name(container).with_retry(retry_config());
                let s = Arc::new(b.build().map_err(build_err)?);
                (s.clone(), prefix, true, None, Some(s))
            }
        };
        Ok(Store { inner, prefix, url: shown, bulk_delete: bulk, local, paged })
    }

    /// Wrap any object store (fault-injecting wrappers in tests).
    pub fn from_parts(inner: Arc<dyn ObjectStore>, prefix: &str, url: &str, bulk_delete: bool) -> Store {
        Store {
            inner,
            prefix: prefix.trim_matches('/').to_string(),
            url: url.to_string(),
            bulk_delete,
            local: None,
            paged: None,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
    pub fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }
    /// The directory of a `file://` store.
    pub fn local_root(&self) -> Option<&std::path::Path> {
        self.local.as_deref().map(local::LocalRoot::path)
    }

    /// The full key (with the store prefix) of a layout key.
    pub fn full_key(&self, key: &str) -> String {
        if self.prefix.is_empty() { key.to_string() } else { format!("{}/{key}", self.prefix) }
    }

    /// The layout key of a full key, or None when it is outside the prefix.
    pub fn relative<'a>(&self, full: &'a str) -> Option<&'a str> {
        if self.prefix.is_empty() {
            return Some(full);
        }
        full.strip_prefix(self.prefix.as_str())?.strip_prefix('/')
    }

    /// The object-store path of a full key; a key the store cannot name is refused.
    pub fn path(full: &str) -> Result<Path> {
        Path::parse(full).map_err(|source| Error::Key {
            key: full.into(),
            source,
        })
    }

    pub async fn put(&self, full: &str, data: Bytes) -> Result<()> {
        self.inner
            .put(&Self::path(full)?, PutPayload::from_bytes(data))
            .await
            .map_err(|e| Error::store(full, e))?;
        Ok(())
    }

    /// Metadata of one object; None when it does not exist. On a `file://` store this follows
    /// symbolic links (it only reads; see [`local`]).
    /// On a `file://` store, the object at `full` opened for reading without following any
    /// link, with its size (see [`local`]); None when there is none. Err on other stores.
    pub async fn open_local(&self, full: &str) -> Result<Option<(std::fs::File, u64)>> {
        let path = Self::path(full)?;
        let root = self.local.clone().ok_or_else(|| Error::other(format!("store {} is not on local disk", self.url)))?;
        let file = tokio::task::spawn_blocking(move || root.open_file(path.as_ref()))
            .await
            .map_err(|e| Error::join(format!("opening {full:?} did not finish"), e))??;
        Ok(match file {
            Some(f) => {
                let size = f.metadata().map_err(|e| Error::disk(format_args!("cannot read {full:?}"), e))?.len();
                Some((f, size))
            }
            None => None,
        })
    }

    /// Whether this is a `file://` store.
    pub fn is_local(&self) -> bool {
        self.local.is_some()
    }

    /// The object at `full`, to stream from; None when there is none.
    pub async fn get(&self, full: &str) -> Result<Option<object_store::GetResult>> {
        match self.inner.get(&Self::path(full)?).await {
            Ok(r) => Ok(Some(r)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Error::store(full, e)),
        }
    }

    pub async fn head(&self, full: &str) -> Result<Option<ObjectMeta>> {
        match self.inner.head(&Self::path(full)?).await {
            Ok(m) => Ok(Some(m)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Error::store(full, e)),
        }
    }

    /// The `@final` objects under one leading hash directory (`""` for the whole store), in key
    /// order, after `after` (a full key): what a resumable orphan listing walks.
    pub fn list_final(&self, dir: &str, after: Option<&str>) -> BoxStream<'static, Result<ObjectMeta>> {
        match &self.local {
            // S3, GCS and Azure list in lexicographic order, which is the layout's key order.
            None if dir.is_empty() => self.list_from(None, after),
            None => self.list_from(Some(&self.full_key(dir)), after),
            Some(root) => walk::final_objects(root.path().to_path_buf(), dir.to_string(), after.map(str::to_string)),
        }
    }

    /// Write an object dated `modified` where the store keeps modification times (local disk;
    /// cloud stores date objects themselves): `seed` ages its files as a real installation's.
    pub async fn put_dated(&self, full: &str, data: Bytes, modified: std::time::SystemTime) -> Result<()> {
        self.put(full, data).await?;
        if let Some(root) = &self.local {
            let path = root.path().join(full);
            let f = std::fs::File::options()
                .write(true)
                .open(&path)
                .map_err(|e| Error::disk(path.display(), e))?;
            f.set_modified(modified)
                .map_err(|e| Error::disk(path.display(), e))?;
        }
        Ok(())
    }

    /// Every object whose full key starts with the directory `under` (the whole store prefix when None).
    pub fn list(&self, under: Option<&str>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.list_from(under, None)
    }

    /// Like [`Store::list`], keeping only keys greater than `offset`. Listing order is the
    /// backend's: lexicographic on S3 and GCS, unspecified on local disk. Keys object_store
    /// cannot represent (`a//b`, `.`/`..` segments, control characters) and, on local disk,
    /// symbolic links are skipped with a warning naming them.
    pub fn list_from(&self, under: Option<&str>, offset: Option<&str>) -> BoxStream<'static, Result<ObjectMeta>> {
        let dir = match under {
            Some(u) => Some(u.trim_matches('/').to_string()),
            None if !self.prefix.is_empty() => Some(self.prefix.clone()),
            None => None,
        };
        let dir = match dir.as_deref().map(Self::path).transpose() {
            Ok(d) => d,
            Err(e) => return stream::once(async move { Err(e) }).boxed(),
        };
        let offset = match offset.map(Self::path).transpose() {
            Ok(o) => o,
            Err(e) => return stream::once(async move { Err(e) }).boxed(),
        };
        if let Some(root) = &self.local {
            return root.list(dir.map(|d| d.to_string()), offset.map(|o| o.to_string()));
        }
        if let Some(paged) = &self.paged {
            return listing::list(paged.clone(), dir.map(|d| d.to_string()), offset.map(|o| o.to_string()));
        }
        let s = match offset {
            Some(o) => self.inner.list_with_offset(dir.as_ref(), &o),
            None => self.inner.list(dir.as_ref()),
        };
        s.map_err(Error::from).boxed()
    }

    /// Delete objects by full key, `concurrency` requests in flight. Returns one result per key, in
    /// the order given; a key that does not exist counts as deleted. Stores with a bulk API get up
    /// to 1,000 keys per request.
    pub async fn delete_many(&self, keys: &[String], concurrency: usize) -> Vec<Result<()>> {
        let concurrency = concurrency.max(1);
        // Futures own their data (a cheap Store clone, owned keys) so the caller stays Send.
        // Local deletes are blocking system calls: each runs on a blocking thread.
        if !self.bulk_delete {
            let futs: Vec<_> = keys
                .iter()
                .map(|k| {
                    let (s, k) = (self.clone(), k.clone());
                    async move { s.delete_one(&k).await }
                })
                .collect();
            return stream::iter(futs).buffered(concurrency).collect().await;
        }
        let futs: Vec<_> = keys
            .chunks(BULK_DELETE_MAX)
            .map(|c| {
                let (s, c) = (self.clone(), c.to_vec());
                async move { s.delete_chunk(&c).await }
            })
            .collect();
        let per_chunk: Vec<Vec<Result<()>>> = stream::iter(futs).buffered(concurrency).collect().await;
        per_chunk.into_iter().flatten().collect()
    }

    async fn delete_one(&self, full: &str) -> Result<()> {
        let path = Self::path(full)?;
        if let Some(root) = &self.local {
            let root = root.clone();
            return tokio::task::spawn_blocking(move || root.delete(path.as_ref()))
                .await
                .map_err(|e| Error::join(format!("delete of {full:?} did not finish"), e))?;
        }
        match self.inner.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Error::store(full, e)),
        }
    }

    async fn delete_chunk(&self, keys: &[String]) -> Vec<Result<()>> {
        let mut paths = Vec::with_capacity(keys.len());
        let mut bad: Vec<Option<Error>> = keys.iter().map(|_| None).collect();
        for (i, k) in keys.iter().enumerate() {
            match Self::path(k) {
                Ok(p) => paths.push(Ok(p)),
                Err(e) => bad[i] = Some(e),
            }
        }
        let sent = paths.len();
        let results: Vec<object_store::Result<Path>> =
            self.inner.delete_stream(stream::iter(paths).boxed()).collect().await;
        // A request-level failure yields fewer results than keys: then every key in it failed.
        let mut results = if results.len() == sent {
            results.into_iter().map(|r| r.map(|_| ())).collect::<Vec<_>>()
        } else {
            let msg = results
                .iter()
                .find_map(|r| r.as_ref().err().map(|e| e.to_string()))
                .unwrap_or_else(|| "bulk delete returned fewer results than keys".into());
            (0..sent).map(|_| Err(object_store::Error::Generic { store: "bulk delete", source: msg.clone().into() })).collect()
        }
        .into_iter();
        bad.into_iter()
            .zip(keys)
            .map(|(b, key)| match b {
                Some(e) => Err(e),
                None => match results.next().expect("one result per sent key") {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(Error::store(key, e)),
                },
            })
            .collect()
    }
}

/// The stores of a configuration: `remote` serves `file_store = 2`, `local` serves `file_store = 1`;
/// when only one URL is set it serves both.
#[derive(Clone, Debug)]
pub struct Stores {
    pub remote: Store,
    pub local: Store,
}

impl Stores {
    /// The stores of `store_url` (remote) and `local_store_url` (local).
    pub fn open(store_url: Option<&str>, local_store_url: Option<&str>) -> Result<Stores> {
        let remote = store_url.map(Store::open).transpose()?;
        let local = local_store_url.map(Store::open).transpose()?;
        match (remote, local) {
            (Some(r), Some(l)) => Ok(Stores { remote: r, local: l }),
            (Some(r), None) => Ok(Stores { local: r.clone(), remote: r }),
            (None, Some(l)) => Ok(Stores { remote: l.clone(), local: l }),
            (None, None) => Err(Error::config(
                "no store configured: set store_url (HOUSEKEEP_STORE_URL, --store-url) or local_store_url",
            )),
        }
    }

    /// The store of a `file_store` value (1 local, 2 remote).
    pub fn for_file_store(&self, file_store: i16) -> &Store {
        if file_store == 1 { &self.local } else { &self.remote }
    }

    /// The directory of the local store, for `command`, which works on its files directly;
    /// refused, naming `command`, when that store is not on local disk.
    pub fn local_disk(&self, command: &str) -> Result<&std::path::Path> {
        self.local.local_root().ok_or_else(|| {
            Error::config(format!(
                "{command} works on a local-disk store: set local_store_url (or store_url) to a file:// URL"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_and_relative_keys() {
        let s = Store::from_parts(Arc::new(object_store::memory::InMemory::new()), "pre/fix", "mem://", false);
        assert_eq!(s.full_key("a/b"), "pre/fix/a/b");
        assert_eq!(s.relative("pre/fix/a/b"), Some("a/b"));
        assert_eq!(s.relative("pre/fixa/b"), None);
        assert_eq!(s.relative("other/a"), None);
    }
}
