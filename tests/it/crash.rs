//! Crashes and signals with the real binary (guarantee 5): SIGKILL at random instants during
//! `housekeep run expire`, `unknown`, `stale-uploads`, `unlock` and `delete-objects` (local disk
//! and S3), then the same command again to completion, must lose nothing and duplicate nothing;
//! SIGTERM stops a run or the worker cleanly, giving back unused leases.

use housekeep::tasks::UnlockStats;
use crate::common;
use crate::fixtures;

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{housekeep, Backend, TestDb, TestStore};
use fixtures::{assert_accounted, assert_no_duplicate_queue_rows, assert_statistics_exact, Artifact};
use housekeep::seed::{seed, SeedOptions};
use housekeep::store::{layout, Store};
use rand::Rng;
use tokio_postgres::Client;

const TRIALS: usize = 5;

/// Every artifact row with its layout key (computed here, not by the SQL functions), and
/// whether `expire` would take it now.
/// Rows expiring within a minute of now are left out: whether a run takes them depends on when
/// it starts.
async fn artifacts(c: &Client) -> Vec<(Artifact, bool, i16)> {
    c.query(
        "SELECT id, project_id, job_id, created_at, file, file_final_path, COALESCE(size, 0), file_store::smallint, file_type::smallint, locked,
                (expire_at < now() AND locked = 0 AND file_type <> 3) AS expirable,
                expire_at BETWEEN now() - interval '1 minute' AND now() + interval '1 minute' AS borderline,
                file_location = 1 AS legacy
         FROM p_ci_job_artifacts WHERE file IS NOT NULL OR file_final_path IS NOT NULL ORDER BY id",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .filter(|r| !r.get::<_, Option<bool>>(11).unwrap_or(false))
    .map(|r| {
        let (id, project_id, job_id): (i64, i64, i64) = (r.get(0), r.get(1), r.get(2));
        let final_path: Option<String> = r.get(5);
        let created_at: chrono::DateTime<chrono::Utc> = r.get(3);
        let key = match final_path {
            Some(k) => k,
            None if r.get::<_, Option<bool>>(12) == Some(true) => {
                format!("{}/{project_id}/{job_id}/{}", created_at.format("%Y_%m"), r.get::<_, String>(4))
            }
            None => layout::hashed_key(project_id, created_at, job_id, id, &r.get::<_, String>(4)),
        };
        let a = Artifact {
            id,
            project_id,
            job_id,
            file_type: r.get(8),
            file_store: r.get(7),
            size: r.get(6),
            key,
            expire_at: None,
        };
        (a, r.get::<_, Option<bool>>(10).unwrap_or(false), r.get(9))
    })
    .collect()
}

/// The command with a test's database and store.
fn command(db: &TestDb, store_url: &str, log: &std::path::Path) -> Command {
    let mut cmd = housekeep();
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    cmd.env("HOUSEKEEP_DATABASE_URL", &db.url)
        .env("HOUSEKEEP_STORE_URL", store_url)
        .env("HOUSEKEEP_LOG", "warn")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log));
    cmd
}

fn log_path(name: &str) -> PathBuf {
    common::tmp_root().join(format!("{}.log", common::unique(name)))
}

fn show_log(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// How the trial picks its instant: after a random delay, or once the work passed a random point.
#[derive(Debug, Clone, Copy)]
enum KillAt {
    Delay(Duration),
    /// When the progress counter reaches this value.
    Progress(i64),
}

/// Start `cmd`, SIGKILL it at the chosen instant; returns the exit status, whether the
/// process was still running when killed, and how long it ran.
async fn kill_during(mut cmd: Command, c: &Client, progress_sql: &str, at: KillAt) -> (ExitStatus, bool, Duration) {
    let mut child: Child = cmd.spawn().expect("spawn housekeep");
    let t0 = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status, false, t0.elapsed());
        }
        let fire = match at {
            KillAt::Delay(d) => t0.elapsed() >= d,
            KillAt::Progress(p) => c.query_one(progress_sql, &[]).await.unwrap().get::<_, i64>(0) >= p,
        };
        if fire {
            let running = child.try_wait().unwrap().is_none();
            let _ = child.kill();
            let ran = t0.elapsed();
            return (child.wait().unwrap(), running, ran);
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "the run neither finished nor reached the kill point");
        tokio::time::sleep(Duration::from_millis(if matches!(at, KillAt::Delay(_)) { 1 } else { 2 })).await;
    }
}

/// Even trials kill at a random point of the work; odd ones after a random delay up to the run
/// time estimated from the trials before (process start-up included).
fn pick(trial: usize, total: i64, max_delay: Duration) -> KillAt {
    let mut rng = rand::rng();
    if trial.is_multiple_of(2) || max_delay.is_zero() {
        KillAt::Progress(rng.random_range(1..total.max(2)))
    } else {
        KillAt::Delay(Duration::from_micros(rng.random_range(0..max_delay.as_micros() as u64)))
    }
}

/// Kills across the trials of one test: picks each trial's instant, learns the run time from the
/// trials before, and counts the kills that landed while work was left.
#[derive(Default)]
struct Kills {
    estimate: Duration,
    mid_run: usize,
}

impl Kills {
    /// Run `cmd` and SIGKILL it at this trial's instant; `progress_sql` counts the work done, out
    /// of `total`. Returns the work done when it died.
    async fn trial(&mut self, trial: usize, cmd: Command, c: &Client, progress_sql: &str, total: i64) -> i64 {
        let at = pick(trial, total, self.estimate);
        let (status, running, ran) = kill_during(cmd, c, progress_sql, at).await;
        common::wait_for_housekeep_backends(c).await;
        let done: i64 = c.query_one(progress_sql, &[]).await.unwrap().get(0);
        eprintln!("trial {trial}: kill at {at:?} after {ran:?}: {status}, {done} of {total} done");
        if let KillAt::Progress(_) = at {
            self.estimate = self.estimate.max(ran.mul_f64(total as f64 / done.max(1) as f64).min(Duration::from_secs(5)));
        }
        if running && done < total {
            self.mid_run += 1;
        }
        done
    }

    fn assert_some_mid_run(&self, task: &str) {
        assert!(self.mid_run >= 1, "no trial killed {task} in the middle of its work");
    }
}

/// SIGKILL `housekeep run expire` at random instants; after each crash and after running it again
/// to completion, every expirable artifact is a row or exactly one queue row, never both nor
/// neither, nothing else changed, and the project totals are exact.
#[tokio::test]
async fn sigkill_during_expire_loses_and_duplicates_nothing() {
    let mut kills = Kills::default();
    for trial in 0..TRIALS {
        let db = TestDb::migrated().await;
        let t = TestStore::new(Backend::Local);
        let mut c = db.client().await;
        seed(&mut c, None, &SeedOptions { artifacts: 8000, projects: 5, objects: false, seed: trial as u64, ..Default::default() })
            .await
            .unwrap();
        let all = artifacts(&c).await;
        let expirable: Vec<Artifact> = all.iter().filter(|(_, e, _)| *e).map(|(a, _, _)| a.clone()).collect();
        let others: Vec<(i64, i16)> = all.iter().filter(|(_, e, _)| !*e).map(|(a, _, l)| (a.id, *l)).collect();
        let everything: Vec<Artifact> = all.iter().map(|(a, _, _)| a.clone()).collect();
        let queued_before: i64 = c.query_one("SELECT count(*) FROM ci_deleted_objects", &[]).await.unwrap().get(0);
        assert!(expirable.len() > 500, "dataset too small: {} expirable rows", expirable.len());
        assert_statistics_exact(&c).await;

        let log = log_path("expire");
        let mut cmd = command(&db, &t.url, &log);
        cmd.args(["run", "expire"]).env("HOUSEKEEP_TASKS_EXPIRE_BATCH_SIZE", "10");
        let progress = format!("SELECT count(*) - {queued_before} FROM ci_deleted_objects");
        kills.trial(trial, cmd, &c, &progress, expirable.len() as i64).await;

        // After the crash.
        let check = |when: &'static str| {
            let (c, everything, others) = (&c, &everything, &others);
            async move {
                c.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ").await.unwrap();
                assert_accounted(c, everything, None).await;
                assert_no_duplicate_queue_rows(c).await;
                assert_statistics_exact(c).await;
                // Nothing but expirable rows moved, and no lock changed.
                let rows: std::collections::HashMap<i64, i16> =
                    c.query("SELECT id, locked FROM p_ci_job_artifacts", &[]).await.unwrap().iter().map(|r| (r.get(0), r.get(1))).collect();
                for (id, locked) in others {
                    assert_eq!(rows.get(id), Some(locked), "{when}: artifact {id} is not expirable and must stay as it was");
                }
                c.batch_execute("COMMIT").await.unwrap();
            }
        };
        check("after SIGKILL").await;

        // Again, to completion.
        let mut cmd = command(&db, &t.url, &log);
        let o = cmd.args(["run", "expire"]).env("HOUSEKEEP_TASKS_EXPIRE_BATCH_SIZE", "200").status().unwrap();
        assert!(o.success(), "second run: {o}\n{}", show_log(&log));
        check("after the second run").await;
        let ids = fixtures::artifact_ids(&c).await;
        let queued = fixtures::queue_keys(&c).await;
        for a in &expirable {
            assert!(!ids.contains(&a.id), "artifact {} still a row after a complete run", a.id);
            assert_eq!(queued.get(&a.key), Some(&1), "artifact {} ({}) queued once", a.id, a.key);
        }
        assert_eq!(queued.values().sum::<i64>(), queued_before + expirable.len() as i64);
    }
    kills.assert_some_mid_run("expire");
}

/// Write a small object at each key (local store, straight to disk, four threads).
async fn write_objects(store: &Store, keys: &[String]) {
    use futures::StreamExt;
    let Some(root) = store.local_root() else {
        futures::stream::iter(keys.iter().map(|k| fixtures::put(store, k))).buffer_unordered(16).collect::<Vec<_>>().await;
        return;
    };
    std::thread::scope(|s| {
        for part in keys.chunks(keys.len() / 4 + 1) {
            s.spawn(move || {
                for k in part {
                    let path = root.join(store.full_key(k));
                    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                    std::fs::write(path, b"object").unwrap();
                }
            });
        }
    });
}

/// The keys of every object in the store (as the task addresses them, without the store's prefix).
async fn objects(store: &Store) -> HashSet<String> {
    use futures::TryStreamExt;
    let prefix = store.full_key("");
    let all: Vec<String> = store.list(None).map_ok(|m| m.location.to_string()).try_collect().await.unwrap();
    all.into_iter().map(|k| k.strip_prefix(&prefix).map(str::to_string).unwrap_or(k)).collect()
}

/// A dataset for delete-objects: the seed's rows, expired into the queue, with an object on disk
/// for every queued key and for one live row in eight, every queue row ready, and 20 queue rows
/// whose keys live rows still reference. Returns (queued keys not referenced, referenced keys,
/// live keys with an object).
async fn delete_dataset(db: &TestDb, store: &Store, seed_n: u64) -> (Vec<String>, Vec<String>, Vec<String>) {
    let mut c = db.client().await;
    seed(&mut c, None, &SeedOptions { artifacts: 6000, projects: 5, objects: false, seed: seed_n, ..Default::default() })
        .await
        .unwrap();
    {
        let ctx = fixtures::context(fixtures::config(db), fixtures::stores(store, store)).await;
        fixtures::run(&ctx, housekeep::tasks::Task::Expire).await;
    }
    let live: Vec<Artifact> = artifacts(&c).await.into_iter().map(|(a, _, _)| a).collect();
    let referenced: Vec<&Artifact> = live.iter().step_by(live.len() / 20).take(20).collect();
    for a in &referenced {
        let (dir, file) = layout::split_dir_file(&a.key);
        c.execute("INSERT INTO ci_deleted_objects (file_store, store_dir, file, project_id) VALUES (2, $1, $2, $3)", &[&dir, &file, &a.project_id])
            .await
            .unwrap();
    }
    let referenced: Vec<String> = referenced.into_iter().map(|a| a.key.clone()).collect();
    c.execute("UPDATE ci_deleted_objects SET pick_up_at = now() - interval '1 second'", &[]).await.unwrap();
    let referenced_set: HashSet<&String> = referenced.iter().collect();
    let queued: Vec<String> = fixtures::queue_keys(&c).await.into_keys().filter(|k| !referenced_set.contains(k)).collect();
    let live_keys: Vec<String> =
        live.iter().step_by(8).map(|a| a.key.clone()).chain(referenced.iter().cloned()).collect();
    write_objects(store, &queued).await;
    write_objects(store, &live_keys).await;
    (queued, referenced, live_keys)
}

/// Guarantees 1 and 2 on the dataset above, at any point: a key no longer queued has no object
/// (unless a live row references it), and no object of a live row is gone.
async fn check_delete_state(c: &Client, store: &Store, queued: &[String], live: &[String], when: &str) {
    let left = fixtures::queue_keys(c).await;
    let have = objects(store).await;
    for k in queued {
        assert!(left.contains_key(k) || !have.contains(k), "{when}: queue row of {k} removed but the object exists (guarantee 2)");
    }
    for k in live {
        assert!(have.contains(k), "{when}: object {k} of a live artifact row was deleted (guarantee 1)");
    }
    assert_no_duplicate_queue_rows(c).await;
}

/// SIGKILL `housekeep run delete-objects` at random instants; after each crash queue rows are
/// only gone with their objects; after the leases end, running it again empties the queue.
#[tokio::test]
async fn sigkill_during_delete_objects_on_local_disk_loses_and_duplicates_nothing() {
    sigkill_during_delete_objects(Backend::Local, TRIALS).await;
}

#[tokio::test]
async fn sigkill_during_delete_objects_on_s3_loses_and_duplicates_nothing() {
    sigkill_during_delete_objects(Backend::S3, 2).await;
}

/// SIGKILL `housekeep run unknown` at random instants. Each batch is one transaction, so after a
/// crash every expired unknown row is either untouched (`locked = 2`) or in its final state:
/// `locked = 1` when its pipeline is locked, otherwise (traces included) gone with exactly one
/// queue row; totals stay exact. Running it again resolves all.
#[tokio::test]
async fn sigkill_during_unknown_leaves_every_row_untouched_or_resolved() {
    let mut kills = Kills::default();
    for trial in 0..TRIALS {
        let db = TestDb::migrated().await;
        let t = TestStore::new(Backend::Local);
        let mut c = db.client().await;
        seed(&mut c, None, &SeedOptions { artifacts: 8000, projects: 5, objects: false, seed: 50 + trial as u64, ..Default::default() })
            .await
            .unwrap();
        let everything: Vec<Artifact> = artifacts(&c).await.into_iter().map(|(a, _, _)| a).collect();
        // The final state of each expired unknown row: Some(locked) if it stays, None if it goes.
        let fate: std::collections::HashMap<i64, Option<i16>> = c
            .query(
                "SELECT a.id, CASE WHEN p.locked = 1 THEN 1 END::smallint
                 FROM p_ci_job_artifacts a
                 LEFT JOIN p_ci_builds b ON b.id = a.job_id AND b.partition_id = a.partition_id
                 LEFT JOIN p_ci_pipelines p ON p.id = b.commit_id AND p.partition_id = b.partition_id
                 WHERE a.locked = 2 AND a.expire_at < now() - interval '1 minute'",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let others: std::collections::HashMap<i64, i16> = c
            .query(
                "SELECT id, locked FROM p_ci_job_artifacts
                 WHERE NOT (locked = 2 AND expire_at < now() + interval '1 minute')",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let goes = fate.values().filter(|f| f.is_none()).count();
        assert!(fate.len() > 300 && goes > 100, "dataset too small: {} unknown rows, {goes} to remove", fate.len());
        assert_statistics_exact(&c).await;

        let log = log_path("unknown");
        let env = [("HOUSEKEEP_TASKS_UNKNOWN_BATCH_SIZE", "10"), ("HOUSEKEEP_TASKS_UNKNOWN_MAX_ROWS", "1000000")];
        let mut cmd = command(&db, &t.url, &log);
        cmd.args(["run", "unknown"]).envs(env);
        let ids: Vec<i64> = fate.keys().copied().collect();
        let progress = format!(
            "SELECT {} - count(*) FROM p_ci_job_artifacts WHERE locked = 2 AND id = ANY('{{{}}}'::bigint[])",
            ids.len(),
            ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
        );
        kills.trial(trial, cmd, &c, &progress, ids.len() as i64).await;

        let check = |when: &'static str, complete: bool| {
            let (c, everything, fate, others) = (&c, &everything, &fate, &others);
            async move {
                c.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ").await.unwrap();
                assert_accounted(c, everything, None).await;
                assert_no_duplicate_queue_rows(c).await;
                assert_statistics_exact(c).await;
                let rows: std::collections::HashMap<i64, i16> =
                    c.query("SELECT id, locked FROM p_ci_job_artifacts", &[]).await.unwrap().iter().map(|r| (r.get(0), r.get(1))).collect();
                for (id, end) in fate {
                    let now = rows.get(id).copied();
                    let ok = now == *end || (!complete && now == Some(2));
                    assert!(ok, "{when}: unknown row {id} is {now:?}, should be untouched or {end:?}");
                }
                for (id, locked) in others {
                    assert_eq!(rows.get(id), Some(locked), "{when}: artifact {id} is not an expired unknown row and must stay as it was");
                }
                c.batch_execute("COMMIT").await.unwrap();
            }
        };
        check("after SIGKILL", false).await;
        let o = command(&db, &t.url, &log).args(["run", "unknown"]).envs(env).status().unwrap();
        assert!(o.success(), "second run: {o}\n{}", show_log(&log));
        check("after the second run", true).await;
    }
    kills.assert_some_mid_run("unknown");
}

/// SIGKILL `housekeep run stale-uploads` at random instants. An object goes before its entry, so
/// after a crash every stale entry either still exists or is gone with its object; young entries
/// and objects an artifact row references stay; running it again clears every stale entry.
#[tokio::test]
async fn sigkill_during_stale_uploads_deletes_no_entry_before_its_object() {
    const N: usize = 600;
    let mut kills = Kills::default();
    for trial in 0..TRIALS {
        let db = TestDb::migrated().await;
        let t = fixtures::shm_store();
        let c = db.client().await;
        let fx = fixtures::Fx { c: &c };
        let p = fx.project().await;
        let (mut stale, mut young) = (Vec::new(), Vec::new());
        for i in 0..N + 20 {
            let key = layout::final_key(p, &fixtures::upload_id());
            if i < N {
                fx.pending_upload(&key, "4 hours").await;
                stale.push(key);
            } else {
                fx.pending_upload(&key, "10 minutes").await;
                young.push(key);
            }
        }
        // A stale entry whose object an artifact row took after all: only the entry goes.
        let pl = fx.pipeline(p, "main", "success", 0).await;
        let j = fx.job(p, pl).await;
        let saved = fx.artifact(fixtures::Art::new(p, j).final_path()).await;
        fx.pending_upload(&saved.key, "5 hours").await;
        let all: Vec<String> = stale.iter().chain(&young).chain([&saved.key]).cloned().collect();
        write_objects(&t.store, &all).await;

        let log = log_path("stale");
        let env = [("HOUSEKEEP_TASKS_STALE_UPLOADS_BATCH_SIZE", "10")];
        let mut cmd = command(&db, &t.url, &log);
        cmd.args(["run", "stale-uploads"]).envs(env);
        let progress = format!("SELECT {} - count(*) FROM housekeep.pending_direct_uploads", N + 21);
        kills.trial(trial, cmd, &c, &progress, N as i64 + 1).await;

        let check = |when: &'static str| {
            let (c, store, stale, young, saved) = (&c, &t.store, &stale, &young, &saved.key);
            async move {
                let entries: HashSet<String> =
                    c.query("SELECT object_key FROM housekeep.pending_direct_uploads", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
                let have = objects(store).await;
                for k in stale {
                    assert!(entries.contains(k) || !have.contains(k), "{when}: entry of {k} removed but its object exists");
                }
                for k in young {
                    assert!(entries.contains(k) && have.contains(k), "{when}: young upload {k} was touched");
                }
                assert!(have.contains(saved), "{when}: the object an artifact row references was deleted");
                entries
            }
        };
        check("after SIGKILL").await;
        let o = command(&db, &t.url, &log).args(["run", "stale-uploads"]).envs(env).status().unwrap();
        assert!(o.success(), "second run: {o}\n{}", show_log(&log));
        let entries = check("after the second run").await;
        assert_eq!(entries, young.iter().cloned().collect::<HashSet<_>>(), "only the young entries are left");
        let have = objects(&t.store).await;
        assert!(stale.iter().all(|k| !have.contains(k)), "stale objects left after a complete run");
    }
    kills.assert_some_mid_run("stale-uploads");
}

/// A store for one trial, kept alive (its directory or prefix) as long as the trial runs.
struct Dataset {
    store: Store,
    url: String,
    _keep: Box<dyn std::any::Any>,
}

async fn sigkill_during_delete_objects(backend: Backend, trials: usize) {
    let mut kills = Kills::default();
    for trial in 0..trials {
        let db = TestDb::migrated().await;
        // Local disk in /dev/shm where there is one, so the deletes are quick and kills land mid-run.
        let t = match backend {
            Backend::Local => {
                let s = fixtures::shm_store();
                (s.store.clone(), s.url.clone(), Box::new(s) as Box<dyn std::any::Any>)
            }
            _ => {
                let s = TestStore::new(backend);
                (s.store.clone(), s.url.clone(), Box::new(s) as Box<dyn std::any::Any>)
            }
        };
        let t = Dataset { store: t.0, url: t.1, _keep: t.2 };
        let c = db.client().await;
        let (queued, referenced, live) = delete_dataset(&db, &t.store, 100 + trial as u64).await;
        let total = (queued.len() + referenced.len()) as i64;
        assert!(queued.len() > 500, "dataset too small: {} queued", queued.len());

        let log = log_path("delete");
        let env = [("HOUSEKEEP_TASKS_DELETE_OBJECTS_BATCH_SIZE", "10"), ("HOUSEKEEP_TASKS_DELETE_OBJECTS_LEASE", "500ms")];
        let mut cmd = command(&db, &t.url, &log);
        cmd.args(["run", "delete-objects"]).envs(env);
        let progress = format!("SELECT {total} - count(*) FROM ci_deleted_objects");
        kills.trial(trial, cmd, &c, &progress, total).await;
        check_delete_state(&c, &t.store, &queued, &live, "after SIGKILL").await;

        // Leases of the killed run end after 500 ms; then the same command finishes the job.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let o = command(&db, &t.url, &log).args(["run", "delete-objects"]).envs(env).status().unwrap();
        assert!(o.success(), "second run: {o}\n{}", show_log(&log));
        check_delete_state(&c, &t.store, &queued, &live, "after the second run").await;
        let left: i64 = c.query_one("SELECT count(*) FROM ci_deleted_objects", &[]).await.unwrap().get(0);
        assert_eq!(left, 0, "the queue should be empty");
        let have = objects(&t.store).await;
        for k in &queued {
            assert!(!have.contains(k), "{k} still exists after a complete run");
        }
        for k in &referenced {
            assert!(have.contains(k), "{k} is referenced by a row and was deleted");
        }
    }
    kills.assert_some_mid_run("delete-objects");
}

/// SIGTERM in the middle of `housekeep run delete-objects` (on S3): the current batch finishes,
/// claimed rows not sent to the store get their leases back, the exit code says interrupted
/// (130) or done (0), and an immediate second run finishes the queue.
#[tokio::test]
async fn sigterm_during_delete_objects_gives_back_unused_leases() {
    let db = TestDb::migrated().await;
    let t = TestStore::new(Backend::S3);
    let c = db.client().await;
    let fx = fixtures::Fx { c: &c };
    let p = fx.project().await;
    let keys: Vec<String> = (0..400).map(|_| layout::final_key(p, &fixtures::upload_id())).collect();
    futures::StreamExt::collect::<Vec<()>>(futures::StreamExt::buffer_unordered(
        futures::stream::iter(keys.iter().map(|k| fixtures::put(&t.store, k))),
        32,
    ))
    .await;
    for k in &keys {
        fx.queue(2, k, "-1 minute").await;
    }
    let log = log_path("sigterm");
    let mut child = command(&db, &t.url, &log)
        .args(["run", "delete-objects"])
        .env("HOUSEKEEP_TASKS_DELETE_OBJECTS_BATCH_SIZE", "5")
        .spawn()
        .unwrap();
    // Once some rows are done, ask it to stop.
    let t0 = Instant::now();
    loop {
        let left: i64 = c.query_one("SELECT count(*) FROM ci_deleted_objects", &[]).await.unwrap().get(0);
        if left < 390 || child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    common::sigterm(child.id());
    let t1 = Instant::now();
    let status = child.wait().unwrap();
    let waited = t1.elapsed();
    assert!(matches!(status.code(), Some(0) | Some(130)), "exit {status}\n{}", show_log(&log));
    assert!(waited < Duration::from_secs(30), "took {waited:?} to stop");
    let left: i64 = c.query_one("SELECT count(*) FROM ci_deleted_objects", &[]).await.unwrap().get(0);
    eprintln!("SIGTERM: {status} after {waited:?}, {left} rows left");
    assert!(left > 0 && status.code() == Some(130), "the run should have been interrupted mid-way: {status}, {left} left");
    // No lease outlives the run: every row left is ready again, none failed.
    let leased: i64 =
        c.query_one(
            "SELECT count(*) FROM ci_deleted_objects o LEFT JOIN housekeep.deleted_object_state s ON s.deleted_object_id = o.id
             WHERE o.pick_up_at > now() OR s.attempts > 0",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(leased, 0, "rows still leased after SIGTERM");
    // Guarantee 2.
    let queued: HashSet<String> = fixtures::queue_keys(&c).await.into_keys().collect();
    for k in &keys {
        assert_eq!(fixtures::exists(&t.store, k).await, queued.contains(k), "{k}: object present iff still queued");
    }
    let o = command(&db, &t.url, &log).args(["run", "delete-objects"]).status().unwrap();
    assert!(o.success(), "{o}\n{}", show_log(&log));
    let left: i64 = c.query_one("SELECT count(*) FROM ci_deleted_objects", &[]).await.unwrap().get(0);
    assert_eq!(left, 0);
}

/// SIGTERM to a busy worker (every task due every second on a seeded dataset): exit 0 within 30 s.
#[tokio::test]
async fn sigterm_stops_a_busy_worker_with_exit_0_within_30s() {
    let db = TestDb::migrated().await;
    let t = TestStore::new(Backend::Local);
    let mut c = db.client().await;
    seed(&mut c, Some(&fixtures::stores(&t.store, &t.store)), &SeedOptions { artifacts: 1500, projects: 4, ..Default::default() })
        .await
        .unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let log = log_path("worker");
    let mut cmd = command(&db, &t.url, &log);
    cmd.args(["worker", "--listen", &format!("127.0.0.1:{port}")]);
    for task in ["UNLOCK", "UNKNOWN", "EXPIRE", "DELETE_OBJECTS", "STALE_UPLOADS"] {
        cmd.env(format!("HOUSEKEEP_TASKS_{task}_SCHEDULE"), "* * * * * *");
        cmd.env(format!("HOUSEKEEP_TASKS_{task}_BATCH_SIZE"), "10");
    }
    let mut child = cmd.spawn().unwrap();
    // Wait until tasks are running.
    let t0 = Instant::now();
    loop {
        let n: i64 = c.query_one("SELECT count(*) FROM housekeep.runs", &[]).await.unwrap().get(0);
        if n >= 3 {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "worker exited early\n{}", show_log(&log));
        assert!(t0.elapsed() < Duration::from_secs(30), "no task ran\n{}", show_log(&log));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    common::sigterm(child.id());
    let t1 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t1.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("worker still running 30 s after SIGTERM\n{}", show_log(&log));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(0), "{status}\n{}", show_log(&log));
    eprintln!("worker stopped in {:?}", t1.elapsed());
    // No run was left without an outcome.
    let open: i64 = c.query_one("SELECT count(*) FROM housekeep.runs WHERE finished_at IS NULL", &[]).await.unwrap().get(0);
    assert_eq!(open, 0, "runs without an outcome after a clean stop");
}

/// The lock state of every pipeline and artifact, as one digest.
async fn lock_digest(c: &Client) -> String {
    c.query_one(
        "SELECT md5(concat_ws('|',
           (SELECT string_agg(id || ':' || locked, ',' ORDER BY id) FROM p_ci_pipelines),
           (SELECT string_agg(id || ':' || locked, ',' ORDER BY id) FROM p_ci_job_artifacts)))",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

/// SIGKILL `housekeep run unlock` at random instants: a pipeline is never marked unlocked while
/// one of its artifacts is still locked, and running it again ends exactly where one
/// uninterrupted run ends (checked against the same dataset unlocked in one go).
#[tokio::test]
async fn sigkill_during_unlock_resumes_to_the_same_end_state() {
    const UNLOCK_TRIALS: usize = 3;
    let opts = |seed_n: u64| SeedOptions { artifacts: 8000, projects: 5, objects: false, seed: seed_n, ..Default::default() };
    let mut killed_mid_run = 0;
    for trial in 0..UNLOCK_TRIALS {
        let (db, control) = (TestDb::migrated().await, TestDb::migrated().await);
        let t = TestStore::new(Backend::Local);
        let mut c = db.client().await;
        seed(&mut c, None, &opts(trial as u64)).await.unwrap();
        seed(&mut control.client().await, None, &opts(trial as u64)).await.unwrap();
        let cc = control.client().await;
        assert_eq!(lock_digest(&c).await, lock_digest(&cc).await, "the seed is not deterministic");
        let expected = {
            let ctx = fixtures::context(fixtures::config(&control), fixtures::stores(&t.store, &t.store)).await;
            let r = fixtures::run(&ctx, housekeep::tasks::Task::Unlock).await;
            assert!(r.stats::<UnlockStats>().pipelines_unlocked > 50, "dataset too small: {r:?}");
            lock_digest(&cc).await
        };
        let locked_before: Vec<i64> =
            c.query("SELECT id FROM p_ci_pipelines WHERE locked = 1", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
        let total: i64 = cc
            .query_one("SELECT count(*) FROM p_ci_pipelines WHERE locked = 0 AND id = ANY($1)", &[&locked_before])
            .await
            .unwrap()
            .get(0);

        let log = log_path("unlock");
        let mut cmd = command(&db, &t.url, &log);
        cmd.args(["run", "unlock"]).env("HOUSEKEEP_TASKS_UNLOCK_BATCH_SIZE", "5");
        // Progress: artifacts unlocked so far (pipelines go last, in bulk).
        let progress = "SELECT count(*) FROM p_ci_job_artifacts WHERE locked = 0".to_string();
        let base: i64 = c.query_one(&progress, &[]).await.unwrap().get(0);
        let to_unlock: i64 = cc.query_one(&progress, &[]).await.unwrap().get::<_, i64>(0) - base;
        let at = match pick(trial, to_unlock, Duration::ZERO) {
            KillAt::Progress(p) => KillAt::Progress(base + p),
            d => d,
        };
        let (status, running, ran) = kill_during(cmd, &c, &progress, at).await;
        common::wait_for_housekeep_backends(&c).await;
        let unlocked: i64 = c
            .query_one("SELECT count(*) FROM p_ci_pipelines WHERE locked = 0 AND id = ANY($1)", &[&locked_before])
            .await
            .unwrap()
            .get(0);
        eprintln!("trial {trial}: kill at {at:?} after {ran:?}: {status}, {unlocked} of {total} pipelines unlocked");
        if running && unlocked < total {
            killed_mid_run += 1;
        }
        let bad: i64 = c
            .query_one(
                "SELECT count(*) FROM p_ci_pipelines p
                 JOIN p_ci_builds b ON b.commit_id = p.id AND b.partition_id = p.partition_id
                 JOIN p_ci_job_artifacts a ON a.job_id = b.id AND a.partition_id = b.partition_id
                 WHERE p.locked = 0 AND p.id = ANY($1) AND a.locked <> 0",
                &[&locked_before],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(bad, 0, "after SIGKILL: unlocked pipelines with locked artifacts");

        let o = command(&db, &t.url, &log).args(["run", "unlock"]).status().unwrap();
        assert!(o.success(), "{o}\n{}", show_log(&log));
        assert_eq!(lock_digest(&c).await, expected, "trial {trial}: the resumed unlock ended elsewhere than one full run");
    }
    assert!(killed_mid_run >= 1, "no trial killed unlock in the middle of its work");
}
