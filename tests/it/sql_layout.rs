//! The object keys computed in SQL (used when rows move to the deletion queue) are the keys of
//! src/store/layout.rs, for both layouts and across dates and time zones.

use crate::common;

use chrono::{TimeZone, Utc};
use common::TestDb;
use housekeep::store::layout;

#[tokio::test]
async fn sql_keys_match_the_layout() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    // The session time zone must not change the date directory (GitLab uses UTC).
    c.batch_execute("SET TIME ZONE 'Pacific/Kiritimati'").await.unwrap();
    let upload = "0123456789abcdef".repeat(4);
    for (project_id, job_id, id, created) in [
        (1i64, 10i64, 100i64, Utc.with_ymd_and_hms(2026, 1, 31, 23, 30, 0).unwrap()),
        (987_654_321, 5, 6, Utc.with_ymd_and_hms(2025, 12, 1, 0, 0, 1).unwrap()),
    ] {
        let r = c
            .query_one(
                "SELECT housekeep.artifact_store_dir($1, $2, $3, $4, NULL, NULL) || '/' || housekeep.artifact_file('artifacts.zip', NULL),
                        housekeep.artifact_store_dir($1, $2, $3, $4, $5, NULL) || '/' || housekeep.artifact_file('artifacts.zip', $5),
                        housekeep.project_dir($1),
                        housekeep.artifact_store_dir($1, $2, $3, $4, NULL, 2::smallint) || '/' || housekeep.artifact_file('artifacts.zip', NULL)",
                &[&project_id, &created, &job_id, &id, &layout::final_key(project_id, &upload)],
            )
            .await
            .unwrap();
        assert_eq!(r.get::<_, String>(0), layout::hashed_key(project_id, created, job_id, id, "artifacts.zip"));
        assert_eq!(r.get::<_, String>(1), layout::final_key(project_id, &upload));
        assert_eq!(r.get::<_, String>(2), layout::project_dir(project_id));
        assert_eq!(r.get::<_, String>(3), layout::hashed_key(project_id, created, job_id, id, "artifacts.zip"), "file_location 2 is hashed");
    }
}
