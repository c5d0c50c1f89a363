//! Secrets in odd places and values validation used to accept: passwords holding every URL- and
//! quote-special character in every form a database URL can take (never printed, percent-encoded
//! ones still connect), TOML errors that used to quote the password's line, durations and counts
//! that used to panic or mean "unlimited", and a database lost mid-run.

use std::io::{Read, Write};
use std::time::Duration;

use housekeep::config::{self, redact_url};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use proptest::prelude::*;

use crate::common::{housekeep, run, stderr, stdout, TestDb};

/// Appears in every generated password, between its random parts: a leak of any piece of a
/// password split at a special character still carries it.
const MARK: &str = "Qz7Vk";

fn password() -> impl Strategy<Value = String> {
    let chars: Vec<char> = (0x20u8..0x7f).map(char::from).chain(['é', 'ß', '€', '日', '🔑', '\u{a0}']).collect();
    let piece = proptest::collection::vec(proptest::sample::select(chars), 1..12).prop_map(String::from_iter);
    (piece.clone(), piece).prop_map(|(a, b)| format!("{MARK}{a}{MARK}{b}{MARK}"))
}

/// Every printable ASCII character that is not a letter or digit, and some that are not ASCII.
fn every_special_character() -> String {
    let specials: String = (0x20u8..0x7f).map(char::from).filter(|c| !c.is_ascii_alphanumeric()).collect();
    format!("{MARK}{specials}é€🔑{MARK}")
}

fn encode(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

/// A libpq single-quoted value.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn env(url: &str) -> Vec<(String, String)> {
    vec![("HOUSEKEEP_DATABASE_URL".to_string(), url.to_string())]
}

fn assert_hidden(what: &str, shown: &str, pw: &str) {
    assert!(
        !shown.contains(MARK) && !shown.contains(pw) && !shown.contains(&encode(pw)),
        "{what} shows (part of) the password {pw:?}:\n{shown}"
    );
}

/// The URL forms a password can take, each well-formed and broken (a port that is not a number).
fn forms(pw: &str) -> Vec<(&'static str, String, String)> {
    let (enc, q) = (encode(pw), quote(pw));
    vec![
        ("raw userinfo", format!("postgres://hkuser:{pw}@db.example:5432/hk"), format!("postgres://hkuser:{pw}@db.example:54x/hk")),
        ("encoded userinfo", format!("postgres://hkuser:{enc}@db.example:5432/hk"), format!("postgres://hkuser:{enc}@db.example:54x/hk")),
        (
            "?password=",
            format!("postgres://hkuser@db.example:5432/hk?password={enc}&application_name=hk"),
            format!("postgres://hkuser@db.example:54x/hk?password={enc}"),
        ),
        (
            "key=value",
            format!("host=db.example port=5432 user=hkuser password={q} dbname=hk"),
            format!("host=db.example port=54x user=hkuser password={q} dbname=hk"),
        ),
        ("key=value, quote left open", format!("host=db.example password = {q} dbname=hk"), format!("host=db.example password={}", &q[..q.len() - 1])),
    ]
}

fn check_password_never_shown(pw: &str) {
    for (form, good, broken) in forms(pw) {
        for url in [&good, &broken] {
            assert_hidden(&format!("redact_url ({form})"), &redact_url(url), pw);
        }
        match config::load_from(None, &env(&good), &[]) {
            Ok(l) => {
                assert_hidden(&format!("housekeep config ({form})"), &l.config.to_redacted_toml(), pw);
                let (cfg, _) = housekeep::db::parse_url(&good).unwrap();
                assert_hidden(&format!("describe_target ({form})"), &housekeep::db::describe_target(&cfg), pw);
                if form != "raw userinfo" {
                    assert_eq!(cfg.get_password(), Some(pw.as_bytes()), "{form}: the password as the server gets it");
                }
            }
            Err(e) => {
                assert_ne!(form, "encoded userinfo", "{e}");
                assert_ne!(form, "?password=", "{e}");
                assert_ne!(form, "key=value", "{e}");
                assert_eq!(e.exit_code(), 2);
                assert_hidden(&format!("the error of {form}"), &e.to_string(), pw);
            }
        }
        let e = config::load_from(None, &env(&broken), &[]).expect_err(form);
        assert_eq!(e.exit_code(), 2, "{e}");
        assert_hidden(&format!("the error of a broken {form}"), &e.to_string(), pw);

        // The same in a config file, once with a syntax error on the password's own line.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("housekeep.toml");
        std::fs::write(&path, format!("database_url = {}\n", toml_string(&good))).unwrap();
        if let Ok(l) = config::load_from(Some(&path), &[], &[]) {
            assert_hidden(&format!("housekeep config from a file ({form})"), &l.config.to_redacted_toml(), pw);
        }
        std::fs::write(&path, format!("listen = \"127.0.0.1:1\"\ndatabase_url = {} trailing\n", toml_string(&good))).unwrap();
        let e = config::load_from(Some(&path), &[], &[]).expect_err("a syntax error");
        assert!(e.to_string().contains("line 2"), "{e}");
        assert_hidden(&format!("a TOML syntax error ({form})"), &e.to_string(), pw);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn generated_passwords_are_never_shown(pw in password()) {
        check_password_never_shown(&pw);
    }
}

#[test]
fn a_password_of_every_special_character_is_never_shown() {
    check_password_never_shown(&every_special_character());
    // One special character at a time, where each splits URLs differently.
    for c in "/#?@:%&=' \"\\".chars() {
        check_password_never_shown(&format!("{MARK}ab{c}cd{MARK}"));
    }
}

#[test]
fn the_examples_of_the_report_are_redacted_and_refused() {
    for (url, secret) in [
        ("postgres://root:ab/S3cret@host/db", "S3cret"),
        ("postgres://root:ab@S3cret@127.0.0.1:1/db", "S3cret"),
        ("postgres://root:ab?S3cret@host/db", "S3cret"),
        ("postgres://root:ab#S3cret@host/db", "S3cret"),
    ] {
        let o = run(housekeep().arg("config").env("HOUSEKEEP_DATABASE_URL", url));
        let (out, err) = (stdout(&o), stderr(&o));
        assert_eq!(o.status.code(), Some(2), "{url}: {out}{err}");
        assert!(!out.contains(secret) && !err.contains(secret), "{url}: {out}{err}");
        assert!(err.contains("database_url") && err.contains("percent-encode") && err.contains("%40"), "{err}");
        // Nothing connects, looks a host up, or names a host cut out of the password.
        let o = run(housekeep().arg("migrate").env("HOUSEKEEP_DATABASE_URL", url));
        assert_eq!(o.status.code(), Some(2), "{url}: {}", stderr(&o));
        assert!(!stderr(&o).contains(secret), "{}", stderr(&o));
    }
    for (url, secret) in [
        ("host=db password='a b' user=u", "a b"),
        ("host=db password = hunter2 user=u", "hunter2"),
        (r"host=db password='it\'s-Qz7' user=u", "s-Qz7"),
    ] {
        let o = run(housekeep().arg("config").env("HOUSEKEEP_DATABASE_URL", url));
        assert!(o.status.success(), "{url}: {}", stderr(&o));
        let out = stdout(&o);
        assert!(out.contains("password=REDACTED") && !out.contains(secret), "{url}: {out}");
        assert!(out.contains("host=db") && out.contains("user=u"), "{out}");
    }
}

#[test]
fn toml_errors_never_quote_the_source() {
    let secret = "S3cret-Qz7Vk";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("housekeep.toml");
    for (text, line) in [
        (format!("database_url = \"postgres://u:{secret}@h/db\" oops\n"), "line 1"),
        (format!("listen = \"127.0.0.1:1\"\ndatabase_url = 'postgres://u:{secret}@h/db\n"), "line 2"),
        (format!("db_pool_size = \"postgres://u:{secret}@h/db\"\n"), "line 1"),
        (format!("[tasks.expire]\nbatch_size = \"{secret}\"\n"), "line 2"),
    ] {
        std::fs::write(&path, &text).unwrap();
        let o = run(housekeep().arg("--config").arg(&path).arg("config"));
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{text}: {err}");
        assert!(!err.contains("Qz7Vk") && !err.contains("S3cret"), "{text}: {err}");
        assert!(err.contains(line) && err.contains("column") && err.contains("housekeep.toml"), "{text}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
}

/// The values of the report that panicked (exit 101) or failed at run time (exit 1), and counts
/// that silently meant something else: each is refused when the configuration is read, naming
/// the key and where it was set.
#[test]
fn values_validation_used_to_accept_exit_2_naming_the_key() {
    for (var, value, key) in [
        ("HOUSEKEEP_TASKS_EXPIRE_TIME_BUDGET", "400000000000y", "tasks.expire.time_budget"),
        ("HOUSEKEEP_TASKS_DELETE_OBJECTS_TIME_BUDGET", "1000000y", "tasks.delete-objects.time_budget"),
        ("HOUSEKEEP_TASKS_DELETE_OBJECTS_LEASE", "1000000y", "tasks.delete-objects.lease"),
        ("HOUSEKEEP_TASKS_DELETE_OBJECTS_MAX_AGE", "1000000y", "tasks.delete-objects.max_age"),
        ("HOUSEKEEP_TASKS_STALE_UPLOADS_MAX_AGE", "1000000y", "tasks.stale-uploads.max_age"),
        ("HOUSEKEEP_DB_CONNECT_TIMEOUT", "1000000y", "db_connect_timeout"),
        ("HOUSEKEEP_DB_CONNECT_TIMEOUT", "0s", "db_connect_timeout"),
        ("HOUSEKEEP_TASKS_UNLOCK_TIME_BUDGET", "0s", "tasks.unlock.time_budget"),
        ("HOUSEKEEP_TASKS_DELETE_OBJECTS_LEASE", "0s", "tasks.delete-objects.lease"),
        ("HOUSEKEEP_TASKS_UNKNOWN_MAX_ROWS", "0", "tasks.unknown.max_rows"),
        ("HOUSEKEEP_TASKS_UNKNOWN_MAX_ROWS", "-1", "tasks.unknown.max_rows"),
        ("HOUSEKEEP_TASKS_EXPIRE_MAX_ROWS", "100", "tasks.expire.max_rows"),
        ("HOUSEKEEP_TASKS_EXPIRE_LEASE", "5m", "tasks.expire.lease"),
        ("HOUSEKEEP_TASKS_UNLOCK_MAX_AGE", "5m", "tasks.unlock.max_age"),
        ("HOUSEKEEP_TASKS_EXPIRE_BATCH_SIZE", "100001", "tasks.expire.batch_size"),
        ("HOUSEKEEP_TASKS_EXPIRE_BATCH_SIZE", "-5", "tasks.expire.batch_size"),
        ("HOUSEKEEP_STORE_CONCURRENCY", "10001", "store_concurrency"),
        ("HOUSEKEEP_DB_POOL_SIZE", "1001", "db_pool_size"),
        ("HOUSEKEEP_TASKS_UNLOCK_SCHEDULE", "61 * * * *", "tasks.unlock.schedule"),
        ("HOUSEKEEP_TASKS_UNLOCK_SCHEDULE", "@reboot", "tasks.unlock.schedule"),
    ] {
        let o = run(housekeep().arg("config").env(var, value));
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{var}={value}: {err}");
        assert!(err.contains(key) && err.contains(var), "{var}={value}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // In a file: the key, the line and the file.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("housekeep.toml");
    std::fs::write(&path, "[tasks.expire]\nbatch_size = 10\ntime_budget = \"400000000000y\"\n").unwrap();
    let o = run(housekeep().arg("--config").arg(&path).arg("config"));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("tasks.expire.time_budget") && err.contains("line 3") && err.contains("100 years"), "{err}");
    // Flags: through their value parsers, before anything is read or connected.
    for args in [
        &["list-orphans", "--filename", "x.csv", "--min-age", "1000000y"][..],
        &["orphan-files", "--min-age", "1000000y"],
        &["orphan-files", "--limit", "0"],
        &["seed", "--projects", "100000000000"],
    ] {
        let o = run(housekeep().args(args));
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(args[args.len() - 2]), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// A password of every special character, percent-encoded, connects as the role it belongs to;
/// a server that asks for it gets it byte for byte; and no output shows it.
#[tokio::test]
async fn a_percent_encoded_password_of_every_special_character_connects() {
    let db = TestDb::migrated().await;
    let pw = every_special_character();
    let role = crate::common::unique("hk role@/?#");
    let admin = db.client().await;
    let ddl: String = admin
        .query_one("SELECT format('CREATE ROLE %I LOGIN SUPERUSER PASSWORD %L', $1::text, $2::text)", &[&role, &pw])
        .await
        .unwrap()
        .get(0);
    admin.batch_execute(&ddl).await.unwrap();

    let (base, name) = db.url.rsplit_once('/').unwrap();
    let host = base.rsplit_once('@').unwrap().1;
    let url = format!("postgres://{}:{}@{host}/{name}", encode(&role), encode(&pw));
    let client = housekeep::db::connect_one(&url, Duration::from_secs(10)).await.expect("connects");
    let user: String = client.query_one("SELECT current_user::text", &[]).await.unwrap().get(0);
    assert_eq!(user, role);

    // A server that asks for a cleartext password receives exactly this one.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || receive_password(listener));
    let fake = format!("postgres://{}:{}@127.0.0.1:{port}/{name}?sslmode=disable", encode(&role), encode(&pw));
    let Err(e) = housekeep::db::connect_one(&fake, Duration::from_secs(10)).await else { panic!("the fake server refuses") };
    assert_eq!(server.join().unwrap(), pw.as_bytes());
    assert_hidden("a refused connection", &e.to_string(), &pw);

    for args in [&["config"][..], &["status"], &["status", "--format", "json"]] {
        let o = run(housekeep().args(args).env("HOUSEKEEP_DATABASE_URL", &url));
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        assert_hidden(&format!("{args:?}"), &(stdout(&o) + &stderr(&o)), &pw);
    }
    // Unreachable: the error names host, port and database, never the password.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let unreachable = format!("postgres://{}:{}@127.0.0.1:{closed}/{name}", encode(&role), encode(&pw));
    let o = run(housekeep().arg("migrate").env("HOUSEKEEP_DATABASE_URL", &unreachable));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains(&format!("127.0.0.1:{closed}/{name}")), "{}", stderr(&o));
    assert_hidden("an unreachable database", &stderr(&o), &pw);

    drop(client);
    let _ = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", &[&role]).await;
    let drop_role: String = admin.query_one("SELECT format('DROP ROLE IF EXISTS %I', $1::text)", &[&role]).await.unwrap().get(0);
    let _ = admin.batch_execute(&drop_role).await;
}

/// Plays a PostgreSQL server that asks for a cleartext password: returns the password sent.
fn receive_password(listener: std::net::TcpListener) -> Vec<u8> {
    let (mut s, _) = listener.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let read_message = |s: &mut std::net::TcpStream, typed: bool| {
        let mut tag = [0u8; 1];
        if typed {
            s.read_exact(&mut tag).unwrap();
        }
        let mut len = [0u8; 4];
        s.read_exact(&mut len).unwrap();
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize - 4];
        s.read_exact(&mut body).unwrap();
        (tag[0], body)
    };
    let (_, startup) = read_message(&mut s, false);
    assert_eq!(&startup[..4], &196608u32.to_be_bytes(), "protocol 3.0 startup");
    // AuthenticationCleartextPassword.
    s.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 3]).unwrap();
    let (tag, mut body) = read_message(&mut s, true);
    assert_eq!(tag, b'p');
    assert_eq!(body.pop(), Some(0), "the password is NUL-terminated");
    // ErrorResponse, so that the client gives up at once.
    let fields = b"SFATAL\0C28P01\0Mpassword authentication failed\0\0";
    let mut reply = vec![b'E'];
    reply.extend_from_slice(&(fields.len() as u32 + 4).to_be_bytes());
    reply.extend_from_slice(fields);
    let _ = s.write_all(&reply);
    body
}

/// A backend terminated mid-query: the error says the connection was lost mid-run, that the
/// work committed is kept and that running again continues, with the target, and exits 1.
#[tokio::test]
async fn a_database_lost_mid_run_says_so() {
    let db = TestDb::empty().await;
    let client = housekeep::db::connect_one(&db.url, Duration::from_secs(10)).await.unwrap();
    let pid: i32 = client.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    let admin = db.client().await;
    let sleeping = tokio::spawn(async move {
        let r = client.simple_query("SELECT pg_sleep(30)").await;
        (r.err(), client)
    });
    // Terminate once the query is running.
    for _ in 0..100 {
        let running: bool = admin
            .query_one("SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND query LIKE '%pg_sleep%')", &[&pid])
            .await
            .unwrap()
            .get(0);
        if running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let killed: bool = admin.query_one("SELECT pg_terminate_backend($1)", &[&pid]).await.unwrap().get(0);
    assert!(killed);
    let (e, client) = tokio::time::timeout(Duration::from_secs(20), sleeping).await.unwrap().unwrap();
    // host:port/database; the database is the one this process last connected to, which other
    // tests running in the same process may change, so only the server is compared.
    let target = format!(" at {}/", db.url.rsplit_once('@').unwrap().1.rsplit_once('/').unwrap().0);
    let mid_query = housekeep::error::Error::from(e.expect("the query fails"));
    // And the next statement on the same client, which finds the connection closed.
    let next = housekeep::error::Error::from(client.simple_query("SELECT 1").await.expect_err("closed"));
    for e in [mid_query, next] {
        let msg = e.to_string();
        assert_eq!(e.exit_code(), 1, "{msg}");
        assert!(msg.contains("connection to the database") && msg.contains("lost mid-run"), "{msg}");
        assert!(msg.contains("work committed so far is kept") && msg.contains("running the command again continues"), "{msg}");
        assert!(msg.contains(&target), "{target}: {msg}");
    }
}
