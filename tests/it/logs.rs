//! Logs and output that tools read: JSON log lines whose `counts` and `tasks` are JSON, fatal
//! errors as JSON lines when logs are JSON, no colour codes off a terminal, the migration
//! library kept quiet whatever `HOUSEKEEP_LOG` says, and completions and the manual page without
//! any configuration.

use crate::common::{housekeep, run, stderr, stdout, Backend, TestDb, TestStore};
use crate::fixtures::{Art, Fx};

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"))).collect()
}

#[tokio::test]
async fn json_logs_carry_counts_as_an_object() {
    let db = TestDb::migrated().await;
    let t = TestStore::new(Backend::Local);
    let c = db.client().await;
    let fx = Fx { c: &c };
    let p = fx.project().await;
    let pl = fx.pipeline(p, "main", "success", 0).await;
    let job = fx.job(p, pl).await;
    fx.artifact(Art::new(p, job).expire("-1 day").size(5)).await;
    fx.exact_statistics().await;
    let o = run(housekeep()
        .args(["run", "expire"])
        .env("HOUSEKEEP_DATABASE_URL", &db.url)
        .env("HOUSEKEEP_STORE_URL", &t.url)
        .env("HOUSEKEEP_LOG_FORMAT", "json"));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let lines = json_lines(&stderr(&o));
    let finished = lines.iter().find(|l| l["message"] == "run finished").unwrap_or_else(|| panic!("{}", stderr(&o)));
    assert_eq!(finished["counts"]["expired"], 1, "{finished}");
    assert_eq!(finished["counts"]["expired_bytes"], 5, "{finished}");
    let audit = lines.iter().find(|l| l["target"] == "housekeep::audit").expect("an audit record");
    assert_eq!(audit["size"], 5, "{audit}");
}

#[test]
fn fatal_errors_are_json_lines_when_logs_are_json() {
    let o = run(housekeep().arg("config").env("HOUSEKEEP_LOG_FORMAT", "json").env("HOUSEKEEP_NOT_A_KEY", "1"));
    assert_eq!(o.status.code(), Some(2));
    let lines = json_lines(&stderr(&o));
    assert_eq!(lines.len(), 1, "{}", stderr(&o));
    assert_eq!(lines[0]["level"], "ERROR");
    assert_eq!(lines[0]["exit_code"], 2);
    assert!(lines[0]["message"].as_str().unwrap().contains("HOUSEKEEP_NOT_A_KEY"), "{}", lines[0]);
    // Text stays text.
    let o = run(housekeep().arg("config").env("HOUSEKEEP_LOG_FORMAT", "text").env("HOUSEKEEP_NOT_A_KEY", "1"));
    assert!(stderr(&o).starts_with("housekeep: unknown environment variable HOUSEKEEP_NOT_A_KEY"), "{}", stderr(&o));
}

#[tokio::test]
async fn text_logs_into_a_pipe_have_no_colour_and_migrations_stay_quiet() {
    let db = TestDb::empty().await;
    let o = run(housekeep()
        .args(["--log-format", "text", "migrate"])
        .env("HOUSEKEEP_DATABASE_URL", &db.url)
        .env("HOUSEKEEP_LOG", "info,housekeep::audit=off"));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(!err.contains('\u{1b}'), "colour codes in a pipe: {err:?}");
    assert!(!err.contains("refinery"), "the migration library logged at info: {err}");
}

#[test]
fn completions_and_the_manual_page_need_no_configuration() {
    for shell in ["bash", "zsh", "fish"] {
        let o = run(housekeep().args(["completions", shell]).env("HOUSEKEEP_NOT_A_KEY", "1"));
        assert_eq!(o.status.code(), Some(0), "{shell}: {}", stderr(&o));
        for sub in ["list-orphans", "delete-orphans", "expedite", "delete-old"] {
            assert!(stdout(&o).contains(sub), "{shell} completions lack {sub}");
        }
    }
    let o = run(housekeep().arg("man").env("HOUSEKEEP_NOT_A_KEY", "1"));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let page = stdout(&o);
    assert!(page.starts_with(".ie") || page.contains(".TH housekeep 1"), "{page}");
    for section in [".SH \"LIST-ORPHANS\"", ".SH \"DELETE-OLD\"", "\\-\\-older\\-than", "\\-\\-min\\-age"] {
        assert!(page.contains(section), "the manual page lacks {section}");
    }
}

/// On a terminal, expedite's progress bar is drawn again below each audit line, so it stays on
/// screen under a stream of records (run under `script`, which gives it a pseudo-terminal).
#[tokio::test]
async fn expedite_redraws_its_progress_bar_below_audit_lines_on_a_terminal() {
    let db = TestDb::migrated().await;
    let t = TestStore::new(Backend::Local);
    let c = db.client().await;
    let fx = Fx { c: &c };
    let n = 200;
    for i in 0..n {
        let key = housekeep::store::layout::final_key(1, &format!("{i:064x}"));
        fx.queue(2, &key, "1 hour").await;
    }
    let bin = env!("CARGO_BIN_EXE_housekeep");
    let o = std::process::Command::new("script")
        .args(["-qfec", &format!("{bin} expedite"), "/dev/null"])
        .env("HOUSEKEEP_DATABASE_URL", &db.url)
        .env("HOUSEKEEP_STORE_URL", &t.url)
        .env("HOUSEKEEP_LOG_FORMAT", "text")
        .env("TERM", "xterm")
        .output()
        .expect("script (util-linux)");
    let screen = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{screen}{}", stderr(&o));
    let audit_lines = screen.matches("housekeep::audit").count();
    let bar_draws = screen.matches(&format!("/{n} objects")).count();
    assert_eq!(audit_lines, n, "{screen}");
    // Lines that reach the writer together share one redraw; drawn only at its own ticks (20 a
    // second), the bar would show a handful of times in this run.
    assert!(bar_draws * 4 >= audit_lines, "the bar was drawn {bar_draws} times for {audit_lines} audit lines:\n{screen}");
}
