//! delete-objects under store faults and under concurrency, through a store wrapper that counts
//! delete calls per key and fails a deterministic fraction of them: every object ends up deleted,
//! failures are recorded and retried with back-off, a queue row never goes before its object
//! (guarantee 2), and three workers at once delete every object exactly once (guarantee 6).

use housekeep::tasks::{DeleteObjectsStats};
use crate::common;
use crate::fixtures;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::StreamExt;
use housekeep::store::{Store, Stores};
use housekeep::tasks::{Outcome, Stopped, Task};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use common::{Backend, TestDb, TestStore};
use fixtures::faulty::{faulty_store, slow_queue, Faulty};
use fixtures::Fx;

/// Every full key in the store, in one listing.
async fn listed(store: &Store) -> HashSet<String> {
    common::listed(store, None, None).await.into_iter().collect()
}

async fn queued(c: &tokio_postgres::Client) -> HashSet<String> {
    fixtures::queue_keys(c).await.into_keys().collect()
}

async fn twenty_percent_of_deletes_fail(backend: Backend, bulk: bool) {
    const N: usize = 120;
    let db = TestDb::migrated().await;
    let t = TestStore::new(backend);
    let c = db.client().await;
    let fx = Fx { c: &c };
    let p = fx.project().await;
    let mut keys = Vec::new();
    for i in 0..N {
        let key = if i % 2 == 0 {
            housekeep::store::layout::final_key(p, &fixtures::upload_id())
        } else {
            housekeep::store::layout::hashed_key(p, chrono::Utc::now(), 700_000 + i as i64, 600_000 + i as i64, "artifacts.zip")
        };
        keys.push(key);
    }
    futures::stream::iter(keys.iter().map(|k| fixtures::put(&t.store, k))).buffer_unordered(16).collect::<Vec<()>>().await;
    for k in &keys {
        fx.queue(2, k, "-1 minute").await;
    }
    let (store, counts) = faulty_store(&t, 20, bulk);
    let mut config = fixtures::config(&db);
    config.tasks[housekeep::registry::Task::DeleteObjects].batch_size = 25;
    config.store_concurrency = 4;
    let ctx = fixtures::context(config, Stores { remote: store.clone(), local: store }).await;
    let full = |k: &str| t.store.full_key(k);

    let mut runs = 0;
    loop {
        runs += 1;
        let r = fixtures::run(&ctx, Task::DeleteObjects).await;
        let left = queued(&c).await;
        let present_keys = listed(&t.store).await;
        // Guarantee 2: a key gone from the queue is gone from the store; a key still queued
        // failed (before reaching the store), so its object is still there.
        for k in &keys {
            let present = present_keys.contains(&full(k));
            if left.contains(k) {
                assert!(present, "run {runs}: {k} is still queued but its object is gone");
            } else {
                assert!(!present, "run {runs}: queue row of {k} removed while its object exists (guarantee 2)");
            }
        }
        let failed_now: Vec<String> = {
            let c = counts.lock().unwrap();
            c.failed.iter().filter(|(_, n)| *n == runs).map(|(k, _)| k.clone()).collect()
        };
        assert_eq!(r.stats::<DeleteObjectsStats>().failed, failed_now.len() as i64, "run {runs}: {r:?}");
        assert_eq!(left.len(), failed_now.len(), "run {runs}: the rows left are exactly the failed ones");
        assert_eq!(r.outcome, if failed_now.is_empty() { Outcome::Success } else { Outcome::Partial }, "{r:?}");
        // Failures are recorded: attempts, last error, back-off = lease (10m) * 2^(attempts-1).
        let rows = c
            .query(
                "SELECT o.store_dir || '/' || o.file, COALESCE(s.attempts, 0), s.last_error, extract(epoch FROM o.pick_up_at - now())::float8
                 FROM ci_deleted_objects o LEFT JOIN housekeep.deleted_object_state s ON s.deleted_object_id = o.id",
                &[],
            )
            .await
            .unwrap();
        for row in &rows {
            let (key, attempts, err, wait): (String, i32, Option<String>, f64) = (row.get(0), row.get(1), row.get(2), row.get(3));
            assert!(failed_now.contains(&full(&key)), "run {runs}: {key} left in the queue without failing");
            assert_eq!(attempts, runs as i32, "{key}");
            let err = err.unwrap_or_default();
            assert!(err.contains("injected failure"), "run {runs}: last_error of {key}: {err:?}");
            let backoff = 600.0 * 2f64.powi(attempts - 1);
            assert!(wait > backoff - 60.0 && wait <= backoff + 1.0, "run {runs}: {key} waits {wait}s, expected {backoff}s");
        }
        if runs == 1 {
            assert!(!rows.is_empty(), "20% of {N} deletes should fail in the first run");
        }
        if rows.is_empty() {
            break;
        }
        assert!(runs < 15, "still {} rows queued after {runs} runs", rows.len());
        // Skip the back-off.
        c.execute("UPDATE ci_deleted_objects SET pick_up_at = now() - interval '1 second'", &[]).await.unwrap();
    }
    assert!(runs >= 2);
    let c = counts.lock().unwrap();
    for k in &keys {
        assert_eq!(c.forwarded.get(&full(k)), Some(&1), "{k}: deletes passed to the store");
        assert!(c.attempts[&full(k)] >= 1);
    }
    assert_eq!(c.forwarded.len(), N);
}

#[tokio::test]
async fn twenty_percent_failing_deletes_on_local_disk_end_with_everything_deleted() {
    twenty_percent_of_deletes_fail(Backend::Local, false).await;
}

#[tokio::test]
async fn twenty_percent_failing_bulk_deletes_on_s3_end_with_everything_deleted() {
    twenty_percent_of_deletes_fail(Backend::S3, true).await;
}

/// A request-level failure of a bulk delete (every key of the request fails) leaves every row
/// queued with its error, and deletes nothing.
#[tokio::test]
async fn failing_every_delete_keeps_every_row_with_its_error() {
    let db = TestDb::migrated().await;
    let t = TestStore::new(Backend::Local);
    let c = db.client().await;
    let fx = Fx { c: &c };
    let p = fx.project().await;
    let mut keys = Vec::new();
    for _ in 0..10 {
        let k = housekeep::store::layout::final_key(p, &fixtures::upload_id());
        fixtures::put(&t.store, &k).await;
        fx.queue(2, &k, "-1 minute").await;
        keys.push(k);
    }
    // One row has failed many times already: its back-off is capped at max_age (1 day).
    let (dir, file) = housekeep::store::layout::split_dir_file(&keys[0]);
    let n = c
        .execute(
            "UPDATE housekeep.deleted_object_state s SET attempts = 12 FROM ci_deleted_objects o
             WHERE s.deleted_object_id = o.id AND o.store_dir = $1 AND o.file = $2",
            &[&dir, &file],
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    let (store, counts) = faulty_store(&t, 100, true);
    let ctx = fixtures::context(fixtures::config(&db), Stores { remote: store.clone(), local: store }).await;
    let r = fixtures::run(&ctx, Task::DeleteObjects).await;
    assert_eq!((r.stats::<DeleteObjectsStats>().deleted, r.stats::<DeleteObjectsStats>().failed), (0, 10), "{r:?}");
    assert_eq!(r.outcome, Outcome::Partial);
    assert_eq!(fx.count("SELECT count(*) FROM ci_deleted_objects o LEFT JOIN housekeep.deleted_object_state s ON s.deleted_object_id = o.id WHERE s.attempts = 1 AND s.last_error LIKE '%injected%'").await, 9);
    let capped: f64 = c
        .query_one(
            "SELECT extract(epoch FROM o.pick_up_at - now())::float8 FROM ci_deleted_objects o LEFT JOIN housekeep.deleted_object_state s ON s.deleted_object_id = o.id
             WHERE s.attempts = 13 AND o.store_dir = $1 AND o.file = $2",
            &[&dir, &file],
        )
        .await
        .unwrap()
        .get(0);
    assert!(capped > 86_400.0 - 60.0 && capped <= 86_400.0, "back-off after 13 attempts: {capped}s, expected the 1-day cap");
    for k in &keys {
        assert!(fixtures::exists(&t.store, k).await);
    }
    assert!(counts.lock().unwrap().forwarded.is_empty());
    assert_eq!(ctx.metrics.delete_errors.get(), 10);
}

/// Three workers (three contexts with pools of their own, one shared store) drain 100,000
/// queued objects at once: each object is deleted exactly once and the queue ends empty. The
/// objects live in memory behind the counting wrapper, each delete taking a millisecond, so
/// the workers' batches overlap as they would against a real store.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_workers_delete_100000_objects_exactly_once() {
    const N: i64 = 100_000;
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let started = Instant::now();
    // 256 directories of about 390 objects, @final-shaped keys.
    c.execute(
        "WITH q AS (
           INSERT INTO ci_deleted_objects (file_store, pick_up_at, store_dir, file, project_id, created_at)
           SELECT 2, now() - interval '1 minute',
                  housekeep.project_dir(1) || '/@final/' || lpad(to_hex(i % 256), 2, '0') || '/00',
                  lpad(to_hex(i), 60, '0'), 1, now()
           FROM generate_series(1, $1::bigint) AS i
           RETURNING id
         )
         INSERT INTO housekeep.deleted_object_state (deleted_object_id, size) SELECT id, 1 FROM q",
        &[&N],
    )
    .await
    .unwrap();
    let keys: Vec<String> = c
        .query("SELECT store_dir || '/' || file FROM ci_deleted_objects", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(keys.len() as i64, N);
    let memory: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    futures::stream::iter(keys.iter().map(|k| {
        let m = memory.clone();
        async move { m.put(&Path::from(k.as_str()), PutPayload::from_static(b"x")).await.unwrap() }
    }))
    .buffer_unordered(64)
    .collect::<Vec<_>>()
    .await;
    eprintln!("seeded {N} queued objects in {:.1}s", started.elapsed().as_secs_f64());

    let mut wrapper = Faulty::new(memory.clone(), 0);
    wrapper.delay = Duration::from_millis(1);
    let counts = wrapper.counts.clone();
    let store = Store::from_parts(Arc::new(wrapper), "", "faulty+memory://", false);
    let mut contexts = Vec::new();
    for _ in 0..3 {
        let mut config = fixtures::config(&db);
        config.store_concurrency = 32;
        contexts.push(fixtures::context(config, Stores { remote: store.clone(), local: store.clone() }).await);
    }
    let t0 = Instant::now();
    let handles: Vec<_> = contexts
        .into_iter()
        .map(|ctx| tokio::spawn(async move { fixtures::run(&ctx, Task::DeleteObjects).await }))
        .collect();
    let mut per_worker = Vec::new();
    for h in handles {
        let r = h.await.unwrap();
        assert_eq!(r.outcome, Outcome::Success, "{r:?}");
        assert_eq!(r.stats::<DeleteObjectsStats>().failed, 0, "{r:?}");
        per_worker.push(r.stats::<DeleteObjectsStats>().deleted);
    }
    eprintln!("three workers deleted {per_worker:?} in {:.1}s", t0.elapsed().as_secs_f64());
    assert_eq!(per_worker.iter().sum::<i64>(), N, "deleted per worker: {per_worker:?}");
    assert!(per_worker.iter().all(|&n| n > 0), "every worker should have had a share: {per_worker:?}");
    assert_eq!(Fx { c: &c }.count("SELECT count(*) FROM ci_deleted_objects").await, 0, "the queue should be empty");

    let left = memory.list(None).count().await;
    assert_eq!(left, 0, "objects left in the store");
    let counts = counts.lock().unwrap();
    assert!(counts.failed.is_empty());
    assert_eq!(counts.forwarded.len() as i64, N, "objects whose delete reached the store");
    let twice: Vec<(&String, &u32)> = counts.forwarded.iter().filter(|(_, n)| **n != 1).take(10).collect();
    assert!(twice.is_empty(), "objects deleted more than once (guarantee 6): {twice:?}");
}

/// Deletes go out with bounded concurrency: never more than `store_concurrency` at once, and
/// more than one when there is work for it.
#[tokio::test]
async fn deletes_stay_within_the_configured_concurrency() {
    let (db, _t, store, counts) = slow_queue(60, Duration::from_millis(20)).await;
    let mut config = fixtures::config(&db);
    config.store_concurrency = 5;
    config.tasks[housekeep::registry::Task::DeleteObjects].batch_size = 30;
    let ctx = fixtures::context(config, Stores { remote: store.clone(), local: store }).await;
    let r = fixtures::run(&ctx, Task::DeleteObjects).await;
    assert_eq!(r.stats::<DeleteObjectsStats>().deleted, 60, "{r:?}");
    let max = counts.lock().unwrap().max_in_flight;
    assert!((2..=5).contains(&max), "deletes in flight at most: {max}, configured 5");
}

/// A run stops starting batches when its time budget is spent: the batch under way finishes,
/// no row stays leased, and the next run goes on.
#[tokio::test]
async fn delete_objects_respects_its_time_budget() {
    let (db, t, store, _counts) = slow_queue(100, Duration::from_millis(50)).await;
    let c = db.client().await;
    let fx = Fx { c: &c };
    let mut config = fixtures::config(&db);
    config.store_concurrency = 1;
    config.tasks[housekeep::registry::Task::DeleteObjects].batch_size = 5;
    config.tasks[housekeep::registry::Task::DeleteObjects].time_budget = housekeep::duration::HumanDuration::secs(1);
    let ctx = fixtures::context(config, Stores { remote: store.clone(), local: store }).await;
    let t0 = Instant::now();
    let r = fixtures::run(&ctx, Task::DeleteObjects).await;
    let took = t0.elapsed();
    assert_eq!((r.stopped, r.outcome), (Stopped::Budget, Outcome::Success), "{r:?}");
    let deleted = r.stats::<DeleteObjectsStats>().deleted;
    assert!((5..100).contains(&deleted) && deleted % 5 == 0, "whole batches only: {r:?}");
    assert!(took < Duration::from_millis(3500), "a 1 s budget took {took:?} (all 100 deletes take 5 s)");
    assert_eq!(fx.count("SELECT count(*) FROM ci_deleted_objects").await, 100 - deleted);
    assert_eq!(fx.count("SELECT count(*) FROM ci_deleted_objects WHERE pick_up_at > now()").await, 0, "rows left leased");
    let objects = listed(&t.store).await.len() as i64;
    assert_eq!(objects, 100 - deleted);
}

/// The next batch is claimed while the current one's deletes are in flight. Even with a lease
/// shorter than a batch's store calls, the rows in flight are not claimed again: every object is
/// sent to the store exactly once.
#[tokio::test]
async fn a_lease_shorter_than_a_batch_never_sends_an_object_twice() {
    let (db, t, store, counts) = slow_queue(40, Duration::from_millis(30)).await;
    let c = db.client().await;
    let fx = Fx { c: &c };
    let mut config = fixtures::config(&db);
    config.store_concurrency = 1;
    config.tasks[housekeep::registry::Task::DeleteObjects].batch_size = 10;
    config.tasks[housekeep::registry::Task::DeleteObjects].lease = Some(housekeep::duration::HumanDuration(Duration::from_millis(50)));
    let ctx = fixtures::context(config, Stores { remote: store.clone(), local: store }).await;
    let r = fixtures::run(&ctx, Task::DeleteObjects).await;
    assert_eq!((r.stats::<DeleteObjectsStats>().deleted, r.outcome), (40, Outcome::Success), "{r:?}");
    assert_eq!(fx.count("SELECT count(*) FROM ci_deleted_objects").await, 0);
    assert!(listed(&t.store).await.is_empty());
    let counts = counts.lock().unwrap();
    assert_eq!(counts.forwarded.len(), 40);
    let twice: Vec<(&String, &u32)> = counts.forwarded.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "objects sent to the store more than once: {twice:?}");
}

/// A batch claimed while the one before was in flight waits a whole batch before it is sent.
/// Worker A's batches take 1 s in the store (10 × 100 ms), its lease is 1.5 s: its second batch,
/// claimed at 0 s, is sent from 1 s to 2 s. Worker B starts at 1.7 s, when that claim's first
/// lease has ended. A renews the leases before sending, so B finds nothing to take and no object
/// goes to the store twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leases_claimed_ahead_are_renewed_before_their_batch_is_sent() {
    let (db, t, slow, counts) = slow_queue(20, Duration::from_millis(100)).await;
    let c = db.client().await;
    let mut fast = Faulty::new(t.inner(), 0);
    fast.counts = counts.clone();
    let fast = Store::from_parts(Arc::new(fast), "", "fast+file://", false);
    let context = |store: Store| {
        let mut config = fixtures::config(&db);
        config.store_concurrency = 1;
        config.tasks[housekeep::registry::Task::DeleteObjects].batch_size = 10;
        config.tasks[housekeep::registry::Task::DeleteObjects].lease = Some(housekeep::duration::HumanDuration(Duration::from_millis(1500)));
        fixtures::context(config, Stores { remote: store.clone(), local: store })
    };
    let (a, b) = (context(slow).await, context(fast).await);
    let worker_a = tokio::spawn(async move { fixtures::run(&a, Task::DeleteObjects).await });
    tokio::time::sleep(Duration::from_millis(1700)).await;
    let rb = fixtures::run(&b, Task::DeleteObjects).await;
    let ra = worker_a.await.unwrap();
    for r in [&ra, &rb] {
        assert_eq!((r.outcome, r.stats::<DeleteObjectsStats>().failed), (Outcome::Success, 0), "{r:?}");
    }
    assert_eq!((ra.stats::<DeleteObjectsStats>().deleted, rb.stats::<DeleteObjectsStats>().deleted), (20, 0), "A: {ra:?}\nB: {rb:?}");
    assert_eq!(Fx { c: &c }.count("SELECT count(*) FROM ci_deleted_objects").await, 0);
    assert!(listed(&t.store).await.is_empty(), "objects left in the store");
    let counts = counts.lock().unwrap();
    let twice: Vec<(&String, &u32)> = counts.forwarded.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "objects sent to the store more than once: {twice:?}");
    assert_eq!(counts.forwarded.len(), 20);
}

/// A fake S3 endpoint: `answer(request head, body)` gives each response's status line and XML
/// body; the bulk deletes (POST ?delete) are counted.
type Answer = fn(&str, &str) -> (&'static str, String);

async fn fake_s3_endpoint(answer: Answer) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let deletes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = deletes.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else { return };
            let counter = counter.clone();
            tokio::spawn(async move {
                // Read the head and the body, then answer and close.
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                let head_end = loop {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
                    .unwrap_or(0);
                while buf.len() < head_end + len {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                if head.starts_with("post ") && head.lines().next().unwrap_or("").contains("?delete") {
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                let (status, body) = answer(&head, &String::from_utf8_lossy(&buf[head_end..]));
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (url, deletes)
}

/// A transient store error (503) is retried a bounded number of times with back-off inside the
/// run (1 request + 5 retries), then recorded on the queue row, which backs off; the run says
/// partial (exit 3) and the row stays.
#[tokio::test(flavor = "multi_thread")]
async fn transient_store_errors_are_retried_a_bounded_number_of_times_then_recorded() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let fx = Fx { c: &c };
    let p = fx.project().await;
    let key = housekeep::store::layout::final_key(p, &fixtures::upload_id());
    fx.queue(2, &key, "-1 minute").await;
    let (endpoint, deletes) = fake_s3_endpoint(|_, _| {
        ("503 Service Unavailable", "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>".into())
    })
    .await;
    let t0 = Instant::now();
    let o = run_against(&endpoint, &db).await;
    let took = t0.elapsed();
    assert_eq!(o.status.code(), Some(3), "{}", common::stderr(&o));
    assert_eq!(deletes.load(std::sync::atomic::Ordering::SeqCst), 6, "one bulk delete and five retries");
    assert!(took < Duration::from_secs(25), "retries are bounded in time: {took:?}");
    let row = c.query_one("SELECT COALESCE(s.attempts, 0), s.last_error, o.pick_up_at > now() FROM ci_deleted_objects o LEFT JOIN housekeep.deleted_object_state s ON s.deleted_object_id = o.id", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 1);
    let err: String = row.get(1);
    assert!(err.contains("503") || err.to_lowercase().contains("slow"), "last_error: {err}");
    assert!(row.get::<_, bool>(2), "the row backs off");
}

/// `housekeep run delete-objects` on `db`'s queue against a fake S3 endpoint.
async fn run_against(endpoint: &str, db: &TestDb) -> std::process::Output {
    let (endpoint, url) = (endpoint.to_string(), db.url.clone());
    tokio::task::spawn_blocking(move || {
        common::housekeep()
            .args(["run", "delete-objects"])
            .env("HOUSEKEEP_DATABASE_URL", url)
            .env("HOUSEKEEP_STORE_URL", "s3://partial-bucket")
            .env("AWS_ENDPOINT_URL", &endpoint)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

/// A bulk delete reply that reports some keys as failed (200 with <Error> entries): only the
/// rows of keys reported deleted go; the others keep their row with the store's error code and
/// back off (guarantee 2).
#[tokio::test(flavor = "multi_thread")]
async fn keys_a_bulk_delete_reports_as_failed_keep_their_rows() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let fx = Fx { c: &c };
    let p = fx.project().await;
    let mut keys = Vec::new();
    for i in 0..6 {
        // The key's last segment starts with "dead" for the keys the endpoint refuses.
        let u = fixtures::upload_id();
        let id = format!("{}{}{}", &u[..4], if i % 3 == 0 { "dead" } else { "beef" }, &u[8..]);
        let key = housekeep::store::layout::final_key(p, &id);
        fx.queue(2, &key, "-1 minute").await;
        keys.push(key);
    }
    let (endpoint, deletes) = fake_s3_endpoint(|_, body| {
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?><DeleteResult>");
        for part in body.split("<Key>").skip(1) {
            let key = part.split("</Key>").next().unwrap_or_default();
            if key.rsplit('/').next().unwrap_or_default().starts_with("dead") {
                out += &format!("<Error><Key>{key}</Key><Code>AccessDenied</Code><Message>Access Denied</Message></Error>");
            } else {
                out += &format!("<Deleted><Key>{key}</Key></Deleted>");
            }
        }
        ("200 OK", out + "</DeleteResult>")
    })
    .await;
    let o = run_against(&endpoint, &db).await;
    assert_eq!(o.status.code(), Some(3), "partial: {}", common::stderr(&o));
    assert_eq!(deletes.load(std::sync::atomic::Ordering::SeqCst), 1, "six keys, one bulk request");
    let left: HashMap<String, (i32, String)> = c
        .query("SELECT o.store_dir || '/' || o.file, COALESCE(s.attempts, 0), s.last_error FROM ci_deleted_objects o LEFT JOIN housekeep.deleted_object_state s ON s.deleted_object_id = o.id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    let denied: HashSet<String> = keys.iter().filter(|k| k.rsplit('/').next().unwrap().starts_with("dead")).cloned().collect();
    assert_eq!(denied.len(), 2);
    assert_eq!(left.keys().cloned().collect::<HashSet<_>>(), denied, "exactly the denied keys keep their rows");
    for (k, (attempts, err)) in &left {
        assert_eq!(*attempts, 1, "{k}");
        assert!(err.contains("AccessDenied"), "{k}: {err}");
    }
}
