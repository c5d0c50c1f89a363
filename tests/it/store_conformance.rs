//! One store behaviour, checked on local disk and on the S3 API: put, list under a directory,
//! list from an offset, head, bulk delete, and "not found" counting as deleted.

use crate::common;

use bytes::Bytes;
use common::{listed, Backend, TestStore};
use futures::TryStreamExt;

async fn conformance(backend: Backend) {
    let t = TestStore::new(backend);
    let s = &t.store;
    let k = |rel: &str| s.full_key(rel);
    for rel in ["a/1", "a/2", "a/3/x", "ab/1", "b/1"] {
        s.put(&k(rel), Bytes::from(rel.repeat(10))).await.unwrap();
    }

    // Listing is by whole segments: a/ does not include ab/.
    assert_eq!(listed(s, Some(&k("a")), None).await, vec![k("a/1"), k("a/2"), k("a/3/x")]);
    assert_eq!(listed(s, None, None).await.len(), 5);
    // From an offset, exclusive.
    assert_eq!(listed(s, Some(&k("a")), Some(&k("a/1"))).await, vec![k("a/2"), k("a/3/x")]);
    assert_eq!(listed(s, None, Some(&k("ab/1"))).await, vec![k("b/1")]);

    let meta = s.head(&k("a/2")).await.unwrap().expect("exists");
    assert_eq!(meta.size, 30);
    assert!(s.head(&k("a/nope")).await.unwrap().is_none());

    // Deleting a missing key counts as done; results come back one per key, in order.
    let keys = vec![k("a/1"), k("a/missing"), k("b/1")];
    let results = s.delete_many(&keys, 4).await;
    assert_eq!(results.len(), 3);
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    assert_eq!(listed(s, None, None).await, vec![k("a/2"), k("a/3/x"), k("ab/1")]);

    // Bulk: more keys than one DeleteObjects request takes.
    let many: Vec<String> = (0..1205).map(|i| k(&format!("bulk/{i:05}"))).collect();
    futures::stream::iter(many.iter().map(|key| s.put(key, Bytes::from_static(b"x"))))
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    assert_eq!(listed(s, Some(&k("bulk")), None).await.len(), 1205);
    let results = s.delete_many(&many, 8).await;
    assert_eq!(results.len(), 1205);
    assert!(results.iter().all(|r| r.is_ok()));
    assert!(listed(s, Some(&k("bulk")), None).await.is_empty());
    // …and deleting them all again is still success.
    assert!(s.delete_many(&many, 8).await.iter().all(|r| r.is_ok()));
}

use futures::StreamExt;

#[tokio::test]
async fn conformance_on_local_disk() {
    conformance(Backend::Local).await;
}

#[tokio::test]
async fn conformance_on_s3() {
    conformance(Backend::S3).await;
}

#[tokio::test]
async fn s3_keys_carry_the_prefix() {
    let t = TestStore::new(Backend::S3);
    let prefix = t.url.split_once("://").unwrap().1.split_once('/').unwrap().1.to_string();
    assert_eq!(t.store.prefix(), prefix);
    t.store.put(&t.store.full_key("x/y"), Bytes::from_static(b"1")).await.unwrap();
    let keys = listed(&t.store, None, None).await;
    assert_eq!(keys, vec![format!("{prefix}/x/y")]);
    assert_eq!(t.store.relative(&keys[0]), Some("x/y"));
}
