//! `housekeep verify`: exactly the rows whose object is missing, on local disk and S3.

use crate::common;

use common::{housekeep, run, stderr, Backend, TestDb, TestStore};
use housekeep::seed::{seed, SeedOptions};
use housekeep::store::Stores;

async fn finds_exactly_the_missing_objects(backend: Backend) {
    let db = TestDb::migrated().await;
    let t = TestStore::new(backend);
    let stores = Stores { remote: t.store.clone(), local: t.store.clone() };
    let mut c = db.client().await;
    let r = seed(&mut c, Some(&stores), &SeedOptions { artifacts: 900, projects: 3, ..SeedOptions::default() }).await.unwrap();
    assert!(r.missing_objects > 0);
    // One more: delete the object of a known row.
    let row = c
        .query_one(
            "SELECT id, housekeep.artifact_store_dir(project_id, created_at, job_id, id, file_final_path, file_location) || '/' ||
                    housekeep.artifact_file(file, file_final_path)
             FROM p_ci_job_artifacts ORDER BY id DESC LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    let (id, key): (i64, String) = (row.get(0), row.get(1));
    t.store.delete_many(&[t.store.full_key(&key)], 1).await.into_iter().for_each(|r| r.unwrap());

    let o = run(housekeep().arg("verify").env("HOUSEKEEP_DATABASE_URL", &db.url).env("HOUSEKEEP_STORE_URL", &t.url));
    assert!(o.status.success(), "{}", stderr(&o));
    let mut rdr = csv::ReaderBuilder::new().has_headers(true).from_reader(&o.stdout[..]);
    let rows: Vec<csv::StringRecord> = rdr.records().map(|r| r.unwrap()).collect();
    let expected = r.missing_objects as usize + 1;
    assert_eq!(rows.len(), expected);
    assert!(rows.iter().any(|r| r[0] == id.to_string() && r[3] == t.store.full_key(&key)), "{rows:?}");
    for r in &rows {
        assert!(t.store.head(&r[3]).await.unwrap().is_none(), "{} exists", &r[3]);
    }
}

#[tokio::test]
async fn verify_finds_exactly_the_missing_objects_on_local_disk() {
    finds_exactly_the_missing_objects(Backend::Local).await;
}

#[tokio::test]
async fn verify_finds_exactly_the_missing_objects_on_s3() {
    finds_exactly_the_missing_objects(Backend::S3).await;
}
