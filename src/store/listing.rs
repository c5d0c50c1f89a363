//! Listing a cloud store past keys object_store cannot represent.
//!
//! object_store turns each S3/GCS/Azure list page into `ObjectMeta`s with `Path::parse`, which
//! refuses a key with an empty segment (`a//b`), a `.` or `..` segment, or an ASCII control
//! character, and one such key fails the whole page: every listing stopped at the same place,
//! every time. Nothing of ours can have such a key (layout keys are hex, digits and a few fixed
//! words, SPEC §2), so the listing here skips it with a warning naming it, and loses no valid
//! key on either side:
//!
//! 1. Pages are read with `PaginatedListStore`, whose `offset` (S3 and GCS `start-after`, Azure
//!    `startFrom` minus the key itself) is a plain string, so a listing can resume just after
//!    *exactly* the bad key, not after some valid path near it.
//! 2. When a page fails on a bad key K, the valid keys between the last key delivered (P) and K
//!    are recovered by asking for pages of `m` keys after P: such a page fails exactly when it
//!    reaches K (K is the first bad key after P, since a page converts its keys in order and
//!    stops at the first failure), so a binary search over `m` finds the longest clean run, about
//!    ten small requests per bad key. Its keys are delivered, then listing resumes after K.
//!
//! Bad keys are rare; a listing without them costs exactly what object_store's own does.

use std::sync::Arc;

use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use object_store::list::{PaginatedListOptions, PaginatedListStore};
use object_store::ObjectMeta;

use crate::error::{Error, Result};

/// Keys per request while looking for the clean run before a bad key: S3's and GCS's page size.
const PROBE: usize = 1000;

/// The key object_store refused, when `e` is a list page failing on one.
fn refused_key(e: &object_store::Error) -> Option<&str> {
    use object_store::path::Error as PathError;
    match e {
        object_store::Error::InvalidPath {
            source: PathError::EmptySegment { path } | PathError::BadSegment { path, .. },
        } => Some(path.as_str()),
        _ => None,
    }
}

struct State {
    store: Arc<dyn PaginatedListStore>,
    /// `dir/`, or None for the whole bucket.
    prefix: Option<String>,
    /// Everything up to and including this key has been delivered or skipped.
    after: Option<String>,
    /// Continues the current run of pages; None starts a new run after `after`.
    token: Option<String>,
    done: bool,
    skipped: u64,
}

impl State {
    async fn page(&self, token: Option<String>, max_keys: Option<usize>) -> object_store::Result<(Vec<ObjectMeta>, Option<String>)> {
        let opts = PaginatedListOptions { offset: self.after.clone(), page_token: token, max_keys, ..Default::default() };
        let r = self.store.list_paginated(self.prefix.as_deref(), opts).await?;
        Ok((r.result.objects, r.page_token.filter(|t| !t.is_empty())))
    }

    /// The next batch of objects, or None at the end.
    async fn next(&mut self) -> Result<Option<Vec<ObjectMeta>>> {
        if self.done {
            return Ok(None);
        }
        let token = self.token.take();
        match self.page(token, None).await {
            Ok((objects, token)) => return Ok(Some(self.delivered(objects, token))),
            Err(e) if refused_key(&e).is_some() => {}
            Err(e) => return Err(e.into()),
        }
        // The failed page started right after `after`: find the clean run there.
        let mut bad = match self.page(None, Some(PROBE)).await {
            Ok((objects, token)) => return Ok(Some(self.delivered(objects, token))), // the bad key went away
            Err(e) => match refused_key(&e) {
                Some(k) => k.to_string(),
                None => return Err(e.into()),
            },
        };
        let mut clean = Vec::new();
        let (mut lo, mut hi) = (0usize, PROBE); // a page of `lo` keys lists, one of `hi` fails on `bad`
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            match self.page(None, Some(mid)).await {
                // Fewer keys than asked for: the listing now ends before any bad key (it was
                // deleted meanwhile), or the server pages smaller than `mid`. Either way these
                // keys are clean: deliver them, and the next page goes on from the last one.
                Ok((objects, more)) if objects.len() < mid => {
                    if objects.is_empty() && more.is_some() {
                        return Err(Error::StoreFailed(format!(
                            "listing {:?}: the store answered an empty page that is not the last one",
                            self.prefix.as_deref().unwrap_or("")
                        )));
                    }
                    return Ok(Some(self.delivered(objects, more)));
                }
                Ok((objects, _)) => (lo, clean) = (mid, objects),
                Err(e) => match refused_key(&e) {
                    Some(k) => (hi, bad) = (mid, k.to_string()),
                    None => return Err(e.into()),
                },
            }
        }
        tracing::warn!(
            key = ?bad,
            "listing skipped an object whose key is not a valid object path (empty, . or .. segment, or a \
             control character); no key of ours looks like that"
        );
        self.skipped += 1;
        // Everything up to `bad` is now delivered or skipped; a new run of pages starts after it.
        self.token = None;
        self.after = Some(bad);
        Ok(Some(clean))
    }

    fn delivered(&mut self, objects: Vec<ObjectMeta>, token: Option<String>) -> Vec<ObjectMeta> {
        if let Some(last) = objects.last() {
            self.after = Some(last.location.to_string());
        }
        self.done = token.is_none();
        self.token = token;
        if self.done && self.skipped > 0 {
            tracing::warn!(skipped = self.skipped, prefix = ?self.prefix, "listing done; objects with invalid keys were skipped");
        }
        objects
    }
}

/// Every object under `dir` (a directory, no trailing `/`; the whole bucket when None) whose key
/// is greater than `offset`, in the store's (lexicographic) order, skipping invalid keys.
pub fn list(store: Arc<dyn PaginatedListStore>, dir: Option<String>, offset: Option<String>) -> BoxStream<'static, Result<ObjectMeta>> {
    let state = State {
        store,
        prefix: dir.filter(|d| !d.is_empty()).map(|d| format!("{d}/")),
        after: offset,
        token: None,
        done: false,
        skipped: 0,
    };
    stream::try_unfold(state, |mut s| async move { Ok::<_, Error>(s.next().await?.map(|batch| (batch, s))) })
        .map_ok(|batch| stream::iter(batch.into_iter().map(Ok)))
        .try_flatten()
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::list::PaginatedListResult;
    use object_store::path::Path;
    use object_store::ListResult;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A lexicographic store of raw keys that pages at most `page` keys and converts a page the
    /// way object_store's S3 client does: one bad key fails the whole page.
    struct FakeStore {
        keys: Vec<String>,
        page: usize,
        requests: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl PaginatedListStore for FakeStore {
        async fn list_paginated(&self, prefix: Option<&str>, opts: PaginatedListOptions) -> object_store::Result<PaginatedListResult> {
            self.requests.fetch_add(1, Ordering::Relaxed);
            let start = match (&opts.page_token, &opts.offset) {
                (Some(t), _) => t.parse::<usize>().unwrap(),
                (None, Some(o)) => self.keys.partition_point(|k| k.as_str() <= o.as_str()),
                (None, None) => 0,
            };
            let n = opts.max_keys.unwrap_or(self.page).min(self.page);
            let matching: Vec<(usize, &String)> = self
                .keys
                .iter()
                .enumerate()
                .skip(start)
                .filter(|(_, k)| prefix.is_none_or(|p| k.starts_with(p)))
                .take(n + 1)
                .collect();
            let page = &matching[..matching.len().min(n)];
            let objects = page
                .iter()
                .map(|(_, k)| Ok(ObjectMeta { location: Path::parse(k)?, last_modified: chrono::Utc::now(), size: 1, e_tag: None, version: None }))
                .collect::<object_store::Result<Vec<_>>>()?;
            let page_token = (matching.len() > n).then(|| (page[n - 1].0 + 1).to_string());
            Ok(PaginatedListResult { result: ListResult { common_prefixes: vec![], objects, extensions: Default::default() }, page_token })
        }
    }

    async fn listed(keys: &[&str], page: usize, dir: Option<&str>, offset: Option<&str>) -> (Vec<String>, usize) {
        let mut keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        keys.sort();
        let fake = Arc::new(FakeStore { keys, page, requests: Default::default() });
        let got = list(fake.clone(), dir.map(str::to_string), offset.map(str::to_string))
            .map_ok(|m| m.location.to_string())
            .try_collect::<Vec<_>>()
            .await
            .unwrap();
        (got, fake.requests.load(Ordering::Relaxed))
    }

    #[tokio::test]
    async fn skips_each_bad_key_and_keeps_every_valid_one() {
        let bad = ["p/00/weird//double", "p/3/../x", "p/5/./y", "p/7/ctl\u{1}z", "p/9/trailing//"];
        let good: Vec<String> = (0..40).map(|i| format!("p/{}/{i:03}", i % 10)).collect();
        let mut all: Vec<&str> = good.iter().map(String::as_str).collect();
        all.extend(bad);
        let mut want = good.clone();
        want.sort();
        for page in [1, 2, 3, 7, 1000] {
            let (got, _) = listed(&all, page, Some("p"), None).await;
            assert_eq!(got, want, "page size {page}");
        }
        // From an offset, only what follows it.
        let (got, _) = listed(&all, 3, Some("p"), Some("p/5")).await;
        assert_eq!(got, want.iter().filter(|k| k.as_str() > "p/5").cloned().collect::<Vec<_>>());
        // Only bad keys, or bad keys at both ends.
        assert!(listed(&bad, 2, Some("p"), None).await.0.is_empty());
        let (got, _) = listed(&["p//a", "p/b", "p/c/.."], 1000, None, None).await;
        assert_eq!(got, ["p/b"]);
    }

    #[tokio::test]
    async fn a_clean_listing_costs_one_request_per_page() {
        let good: Vec<String> = (0..10).map(|i| format!("d/{i}")).collect();
        let keys: Vec<&str> = good.iter().map(String::as_str).collect();
        let (got, requests) = listed(&keys, 4, Some("d"), None).await;
        assert_eq!(got.len(), 10);
        assert_eq!(requests, 3);
    }
}
