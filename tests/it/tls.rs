//! TLS to PostgreSQL with libpq's `sslmode` meanings. The test server (scripts/test.sh) accepts
//! TLS with a certificate for the name "localhost" only, signed by the CA in `HK_TEST_PG_CA`.

use crate::common;

use std::time::Duration;

use common::TestDb;

/// Connect as housekeep does; Ok(whether the session is encrypted) or the error's text.
async fn session_ssl(url: &str) -> Result<bool, String> {
    let c = housekeep::db::connect_one(url, Duration::from_secs(10)).await.map_err(|e| e.to_string())?;
    let row = c.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await.map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

fn ca() -> String {
    std::env::var("HK_TEST_PG_CA").expect("HK_TEST_PG_CA: run the tests through scripts/test.sh")
}

/// The test database's URL on `host` with these query parameters.
fn url(db: &TestDb, host: &str, query: &str) -> String {
    let u = db.url.replacen("@127.0.0.1:", &format!("@{host}:"), 1);
    if query.is_empty() { u } else { format!("{u}?{query}") }
}

#[tokio::test]
async fn sslmode_disable_prefer_and_require() {
    let db = TestDb::empty().await;
    assert_eq!(session_ssl(&url(&db, "127.0.0.1", "sslmode=disable")).await, Ok(false));
    // The default, prefer, encrypts when the server offers it, without checking the certificate.
    assert_eq!(session_ssl(&url(&db, "127.0.0.1", "")).await, Ok(true));
    assert_eq!(session_ssl(&url(&db, "127.0.0.1", "sslmode=require")).await, Ok(true));
    assert_eq!(session_ssl(&url(&db, "127.0.0.1", "sslmode=require&application_name=tls-test")).await, Ok(true));
}

#[tokio::test]
async fn verify_full_checks_the_chain_and_the_host_name() {
    let db = TestDb::empty().await;
    let ca = ca();
    let ok = session_ssl(&url(&db, "localhost", &format!("sslmode=verify-full&sslrootcert={ca}"))).await;
    assert_eq!(ok, Ok(true));
    // The certificate names "localhost", not 127.0.0.1.
    let e = session_ssl(&url(&db, "127.0.0.1", &format!("sslmode=verify-full&sslrootcert={ca}"))).await.unwrap_err();
    assert!(e.contains("cannot reach the database at 127.0.0.1") && e.to_lowercase().contains("certificate"), "{e}");
    // Not signed by any of the system's roots.
    let e = session_ssl(&url(&db, "localhost", "sslmode=verify-full")).await.unwrap_err();
    assert!(e.to_lowercase().contains("certificate") || e.contains("root"), "{e}");
}

#[tokio::test]
async fn verify_ca_and_a_root_certificate_check_the_chain_but_not_the_name() {
    let db = TestDb::empty().await;
    let ca = ca();
    assert_eq!(session_ssl(&url(&db, "127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={ca}"))).await, Ok(true));
    // As libpq: require with a root certificate checks the chain.
    assert_eq!(session_ssl(&url(&db, "127.0.0.1", &format!("sslmode=require&sslrootcert={ca}"))).await, Ok(true));
    // A root certificate that did not sign the server's: refused.
    let other = tempfile::NamedTempFile::new().unwrap();
    let server_cert = std::path::Path::new(&ca).with_file_name("server.crt");
    std::fs::copy(&server_cert, other.path()).unwrap();
    let e = session_ssl(&url(&db, "127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={}", other.path().display())))
        .await
        .unwrap_err();
    assert!(e.to_lowercase().contains("certificate"), "{e}");
}

#[test]
fn bad_tls_settings_exit_2_naming_the_key() {
    let o = common::run(
        common::housekeep().args(["status"]).env("HOUSEKEEP_DATABASE_URL", "postgres://u@127.0.0.1:1/db?sslmode=allow"),
    );
    assert_eq!(o.status.code(), Some(2), "{}", common::stderr(&o));
    assert!(common::stderr(&o).contains("database_url") && common::stderr(&o).contains("sslmode"), "{}", common::stderr(&o));
    let o = common::run(
        common::housekeep()
            .args(["status"])
            .env("HOUSEKEEP_DATABASE_URL", "postgres://u@127.0.0.1:1/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem"),
    );
    assert_eq!(o.status.code(), Some(2), "{}", common::stderr(&o));
    assert!(common::stderr(&o).contains("/nonexistent/ca.pem"), "{}", common::stderr(&o));
}
