//! `deploy/systemd` as systemd reads and runs it: every unit passes `systemd-analyze verify`;
//! every service is sandboxed to an exposure of 2.0 or less (`systemd-analyze security`) and its
//! system-call filter allows every call housekeep makes (traced with strace, since systemd is not
//! there to run the units); the worker does not restart on a configuration error; the services
//! run as their units say — configuration and database password from `$CREDENTIALS_DIRECTORY`,
//! the password never shown — and the worker reports each run in `STATUS=`; the nightly
//! list-orphans resumes a stopped listing and starts a new one once the last one completed.
//!
//! `systemd-analyze` and `strace` are installed by `scripts/test.sh` (`ensure_systemd_tools`);
//! these tests fail when they are missing.

use crate::common;
use crate::fixtures;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Backend, TestDb, TestStore, housekeep, run, stderr, stdout};
use housekeep::store::{Store, layout};

/// Where the units say the binary is; replaced by the built one.
const INSTALLED_BINARY: &str = "/usr/local/bin/housekeep";
const WORKER: &str = "housekeep.service";
const LIST_ORPHANS: &str = "housekeep-list-orphans.service";
const UNITS: [&str; 3] = [WORKER, LIST_ORPHANS, "housekeep-list-orphans.timer"];
const PASSWORD: &str = "Pa$$/w?o#r@d%'\\ ü";

fn units_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/systemd")
}

fn unit_text(name: &str) -> String {
    let path = units_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The values of `key=` in a unit, in order (no continuation lines in our units).
fn values(unit: &str, key: &str) -> Vec<String> {
    let prefix = format!("{key}=");
    unit.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(str::to_string)
        .collect()
}

fn tool(name: &str) -> Command {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{name} is missing: scripts/test.sh installs it (ensure_systemd_tools in scripts/lib.sh)"
    );
    Command::new(name)
}

/// The units of deploy/systemd in a directory of their own, pointing at the built binary.
fn installed_units() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("hk-units")
        .tempdir_in(common::tmp_root())
        .unwrap();
    let names: BTreeSet<String> = std::fs::read_dir(units_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        UNITS.iter().map(|s| s.to_string()).collect(),
        "units in deploy/systemd"
    );
    for name in UNITS {
        let text = unit_text(name).replace(INSTALLED_BINARY, env!("CARGO_BIN_EXE_housekeep"));
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

fn output_text(o: &Output) -> String {
    format!("{}{}", stdout(o), stderr(o))
}

#[test]
fn every_unit_passes_systemd_analyze_verify() {
    let dir = installed_units();
    let o = tool("systemd-analyze")
        .arg("verify")
        .args(UNITS.map(|u| dir.path().join(u)))
        .output()
        .unwrap();
    // Warnings (an unknown key, a missing binary) do not change the exit status: any line about
    // our units is a finding. Lines about the host's own units are not ours to judge.
    let text = output_text(&o);
    let ours: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("housekeep") || l.contains(&*dir.path().to_string_lossy()))
        .collect();
    assert!(
        o.status.success() && ours.is_empty(),
        "systemd-analyze verify: {}\n{text}",
        o.status
    );
}

#[test]
fn every_service_is_sandboxed_to_an_exposure_of_2_or_less() {
    let dir = installed_units();
    for unit in [WORKER, LIST_ORPHANS] {
        let o = tool("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(dir.path().join(unit))
            .output()
            .unwrap();
        let text = output_text(&o);
        assert!(
            o.status.success(),
            "systemd-analyze security {unit}: {}\n{text}",
            o.status
        );
        let score: f64 = text
            .lines()
            .find_map(|l| l.split_once(&format!("Overall exposure level for {unit}: ")))
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no exposure level for {unit}:\n{text}"));
        assert!(
            score <= 2.0,
            "{unit}: exposure {score}, more than 2.0:\n{text}"
        );
    }
}

/// Exit code 2 means a bad configuration or input (SPEC §9): restarting cannot fix it, and a
/// unit that restarts on it loops forever.
#[test]
fn the_worker_is_not_restarted_on_a_configuration_error() {
    let unit = unit_text(WORKER);
    let prevent: Vec<String> = values(&unit, "RestartPreventExitStatus")
        .iter()
        .flat_map(|v| v.split_whitespace().map(str::to_string))
        .collect();
    assert!(
        prevent.iter().any(|s| s == "2"),
        "RestartPreventExitStatus= lacks 2: {prevent:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("housekeep.toml");
    std::fs::write(&config, "listen = \"nowhere\"\n").unwrap();
    let o = run(housekeep().arg("worker").arg("--config").arg(&config));
    assert_eq!(o.status.code(), Some(2), "{}", output_text(&o));
}

/// A service's process set up as systemd would from its unit: ExecStart with the built binary,
/// `LoadCredential=` files in a credentials directory, `Environment=`, `WorkingDirectory=` the
/// state directory; `%d`, `%S`, `${CREDENTIALS_DIRECTORY}` and `$$` expanded.
struct Service {
    _credentials: tempfile::TempDir,
    state: tempfile::TempDir,
    /// Files the test adds (a wrapper of the binary).
    scratch: tempfile::TempDir,
    argv: Vec<String>,
    env: Vec<(String, String)>,
}

impl Service {
    /// `credentials`: the content of each credential the unit loads, by id; the unit must load
    /// exactly these.
    fn new(unit: &str, credentials: &[(&str, &str)]) -> Service {
        let text = unit_text(unit);
        let tmp = |p: &str| {
            tempfile::Builder::new()
                .prefix(p)
                .tempdir_in(common::tmp_root())
                .unwrap()
        };
        let (creds, state, scratch) = (tmp("hk-creds"), tmp("hk-state"), tmp("hk-scratch"));
        let loaded: BTreeSet<String> = values(&text, "LoadCredential")
            .iter()
            .map(|v| {
                v.split_once(':')
                    .map_or(v.as_str(), |(id, _)| id)
                    .to_string()
            })
            .collect();
        let given: BTreeSet<String> = credentials.iter().map(|(id, _)| id.to_string()).collect();
        // Credentials systemd skips when absent and a standalone database does not use.
        let optional = ["gitlab_secrets"];
        let loaded: BTreeSet<String> = loaded.into_iter().filter(|id| !optional.contains(&id.as_str()) || given.contains(id)).collect();
        assert_eq!(loaded, given, "credentials {unit} loads");
        for (id, content) in credentials {
            let path = creds.path().join(id);
            std::fs::write(&path, content).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        }
        let expand = |s: &str| {
            s.replace("%d", &creds.path().to_string_lossy())
                .replace("%S/housekeep", &state.path().to_string_lossy())
                .replace("${CREDENTIALS_DIRECTORY}", &creds.path().to_string_lossy())
                .replace("$$", "$")
                .replace(INSTALLED_BINARY, env!("CARGO_BIN_EXE_housekeep"))
        };
        if let Some(dir) = values(&text, "WorkingDirectory").first() {
            assert_eq!(
                dir, "%S/housekeep",
                "{unit}: the working directory is the state directory"
            );
            assert_eq!(values(&text, "StateDirectory"), ["housekeep"], "{unit}");
        }
        let exec = values(&text, "ExecStart");
        assert_eq!(exec.len(), 1, "{unit}: one ExecStart");
        let argv: Vec<String> = match exec[0]
            .strip_prefix("/bin/sh -c '")
            .and_then(|s| s.strip_suffix('\''))
        {
            Some(script) => vec!["/bin/sh".into(), "-c".into(), expand(script)],
            None => exec[0].split_whitespace().map(expand).collect(),
        };
        let mut env = vec![(
            "CREDENTIALS_DIRECTORY".to_string(),
            creds.path().to_string_lossy().into_owned(),
        )];
        for v in values(&text, "Environment") {
            let (k, val) = v.split_once('=').expect("Environment=KEY=VALUE");
            env.push((k.to_string(), expand(val)));
        }
        Service {
            _credentials: creds,
            state,
            scratch,
            argv,
            env,
        }
    }

    fn command(&self) -> Command {
        self.command_with(&[])
    }

    /// The service's command after `prefix` (strace).
    fn command_with(&self, prefix: &[&str]) -> Command {
        let mut all: Vec<&str> = prefix.to_vec();
        all.extend(self.argv.iter().map(String::as_str));
        let mut c = Command::new(all[0]);
        // systemd starts a service with an environment of its own: PATH, the unit's
        // Environment= and EnvironmentFile= (the store's AWS_* here).
        c.args(&all[1..])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default());
        c.envs(std::env::vars().filter(|(k, _)| k.starts_with("AWS_")));
        c.envs(self.env.iter().cloned())
            .current_dir(self.state.path());
        c
    }
}

/// The configuration file the services get as credential `housekeep.toml`: `database_url` names
/// no password (it comes from credential `database_password`).
fn config(db: &TestDb, store_url: &str, listen: &str, every_second: bool) -> String {
    let mut c = format!(
        "database_url = {:?}\nstore_url = {store_url:?}\nlisten = {listen:?}\n",
        db.url
    );
    if every_second {
        for task in [
            "unlock",
            "unknown",
            "expire",
            "delete-objects",
            "stale-uploads",
        ] {
            c.push_str(&format!("[tasks.{task}]\nschedule = \"* * * * * *\"\n"));
        }
    }
    c
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Reads what a service sends to systemd's notify socket.
struct Notifications {
    sock: UnixDatagram,
    path: PathBuf,
    _dir: tempfile::TempDir,
    lines: Vec<String>,
}

impl Notifications {
    fn bind() -> Notifications {
        let dir = tempfile::Builder::new()
            .prefix("hk-notify")
            .tempdir_in(common::tmp_root())
            .unwrap();
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Notifications {
            sock,
            path,
            _dir: dir,
            lines: Vec::new(),
        }
    }

    /// Read until a line satisfies `want` or `limit` passes.
    fn wait_for(&mut self, limit: Duration, want: impl Fn(&str) -> bool) -> Option<String> {
        let t0 = Instant::now();
        let mut buf = [0u8; 8192];
        loop {
            if let Some(l) = self.lines.iter().find(|l| want(l)) {
                return Some(l.clone());
            }
            if t0.elapsed() > limit {
                return None;
            }
            if let Ok(n) = self.sock.recv(&mut buf) {
                self.lines.extend(
                    String::from_utf8_lossy(&buf[..n])
                        .lines()
                        .map(str::to_string),
                );
            }
        }
    }
}

const TASKS: [&str; 5] = [
    "unlock",
    "unknown",
    "expire",
    "delete-objects",
    "stale-uploads",
];

/// `unlock: done (…) in 0.02s, ended 12:00:01 UTC; next: unknown at 12:00:02 UTC`
fn is_run_status(line: &str) -> bool {
    let Some(s) = line.strip_prefix("STATUS=") else {
        return false;
    };
    let time = |t: &str| {
        t.len() == 12
            && t.ends_with(" UTC")
            && t[..8]
                .split(':')
                .all(|p| p.len() == 2 && p.parse::<u8>().is_ok())
    };
    TASKS.iter().any(|t| s.starts_with(&format!("{t}: done ("))) && {
        let Some((_, tail)) = s.rsplit_once("s, ended ") else {
            return false;
        };
        let Some((ended, next)) = tail.split_once("; next: ") else {
            return false;
        };
        let Some((task, at)) = next.split_once(" at ") else {
            return false;
        };
        time(ended) && TASKS.contains(&task) && time(at)
    }
}

#[tokio::test]
async fn the_worker_runs_as_its_unit_says_and_reports_each_run_in_status() {
    let db = TestDb::migrated().await;
    let t = TestStore::new(Backend::Local);
    let port = free_port();
    let conf = config(&db, &t.url, &format!("127.0.0.1:{port}"), true);
    let service = Service::new(
        WORKER,
        &[
            ("housekeep.toml", &conf),
            ("database_password", &format!("{PASSWORD}\n")),
        ],
    );
    let watchdog_secs: u64 = values(&unit_text(WORKER), "WatchdogSec")[0]
        .parse()
        .unwrap();
    let log = service.scratch.path().join("worker.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let mut notify = Notifications::bind();
    let mut child = service
        .command()
        .env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", (watchdog_secs * 1_000_000).to_string())
        .env("HOUSEKEEP_LOG_FORMAT", "text")
        .stdout(Stdio::from(log_file.try_clone().unwrap()))
        .stderr(Stdio::from(log_file))
        .spawn()
        .unwrap();
    let show = |n: &Notifications| {
        format!(
            "{:?}\n{}",
            n.lines,
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    };

    let ready = notify.wait_for(Duration::from_secs(20), |l| l == "READY=1");
    assert!(ready.is_some(), "no READY=1: {}", show(&notify));
    let status = notify.wait_for(Duration::from_secs(20), is_run_status);
    assert!(
        status.is_some(),
        "no STATUS= after a run: {}",
        show(&notify)
    );
    assert!(
        notify
            .lines
            .iter()
            .any(|l| l.starts_with("STATUS=ready; next: ")),
        "{}",
        show(&notify)
    );

    common::sigterm(child.id());
    let t0 = Instant::now();
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "worker still running after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(exit.code(), Some(0), "{}", show(&notify));
    let everything = show(&notify);
    assert!(
        !everything.contains(PASSWORD) && !everything.contains("Pa%24"),
        "the password was shown: {everything}"
    );
}

fn read_n(s: &mut impl Read, n: usize) -> std::io::Result<Vec<u8>> {
    let mut b = vec![0u8; n];
    s.read_exact(&mut b).map(|()| b)
}

fn read_u32(s: &mut impl Read) -> std::io::Result<usize> {
    Ok(u32::from_be_bytes(read_n(s, 4)?.try_into().unwrap()) as usize)
}

/// A PostgreSQL server that asks the first client for its password in clear text, returns what
/// the client sent (None if it sent none within 20 s) and refuses the login.
fn password_catcher() -> (u16, std::thread::JoinHandle<Option<Vec<u8>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let catch = || -> std::io::Result<Vec<u8>> {
            listener.set_nonblocking(true)?;
            let t0 = Instant::now();
            let mut s = loop {
                match listener.accept() {
                    Ok((s, _)) => break s,
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock
                            && t0.elapsed() < Duration::from_secs(20) =>
                    {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    Err(e) => return Err(e),
                }
            };
            s.set_nonblocking(false)?;
            s.set_read_timeout(Some(Duration::from_secs(20)))?;
            let len = read_u32(&mut s)?;
            read_n(&mut s, len - 4)?; // the startup message
            s.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 3])?; // AuthenticationCleartextPassword
            if read_n(&mut s, 1)? != b"p" {
                return Err(std::io::Error::other("not a password message"));
            }
            let len = read_u32(&mut s)?;
            let mut password = read_n(&mut s, len - 4)?;
            password.pop(); // its NUL
            let mut fields = Vec::new();
            for (code, value) in [
                (b'S', "FATAL"),
                (b'V', "FATAL"),
                (b'C', "28P01"),
                (b'M', "password authentication failed"),
            ] {
                fields.push(code);
                fields.extend_from_slice(value.as_bytes());
                fields.push(0);
            }
            fields.push(0);
            let mut msg = vec![b'E'];
            msg.extend_from_slice(&((fields.len() + 4) as u32).to_be_bytes());
            msg.extend_from_slice(&fields);
            s.write_all(&msg)?;
            Ok(password)
        };
        catch().ok()
    });
    (port, handle)
}

#[test]
fn the_database_password_comes_from_the_credentials_directory_and_is_never_shown() {
    let (port, server) = password_catcher();
    let url = format!("postgres://housekeep@127.0.0.1:{port}/gitlabhq_production?sslmode=disable");
    let creds = tempfile::tempdir().unwrap();
    std::fs::write(
        creds.path().join("database_password"),
        format!("{PASSWORD}\n"),
    )
    .unwrap();
    let with_creds = |args: &[&str], url: &str| {
        run(housekeep()
            .args(args)
            .env("HOUSEKEEP_DATABASE_URL", url)
            .env("CREDENTIALS_DIRECTORY", creds.path()))
    };
    let hidden = |o: &Output| {
        let text = output_text(o);
        assert!(
            !text.contains(PASSWORD) && !text.contains("Pa%24"),
            "the password was shown:\n{text}"
        );
        text
    };

    // Sent to the server as it is, whatever its characters.
    let o = with_creds(&["migrate"], &url);
    assert_eq!(o.status.code(), Some(1), "{}", output_text(&o));
    assert_eq!(
        server.join().unwrap().as_deref(),
        Some(PASSWORD.as_bytes()),
        "the password the server got"
    );
    let text = hidden(&o);
    assert!(text.contains("password authentication failed"), "{text}");

    // Shown redacted.
    let o = with_creds(&["config"], &url);
    assert_eq!(o.status.code(), Some(0), "{}", output_text(&o));
    assert!(
        hidden(&o).contains("password=REDACTED"),
        "{}",
        output_text(&o)
    );

    // Two passwords: refused, neither shown.
    let o = with_creds(
        &["config"],
        &url.replace("housekeep@", "housekeep:other-secret@"),
    );
    assert_eq!(o.status.code(), Some(2), "{}", output_text(&o));
    let text = hidden(&o);
    assert!(
        text.contains("database_password") && !text.contains("other-secret"),
        "{text}"
    );
}

/// `n` unreferenced `@final` objects.
async fn plant_orphans(store: &Store, n: usize) {
    for i in 0..n {
        let key = store.full_key(&layout::final_key(1 + i as i64, &fixtures::upload_id()));
        store
            .put(&key, Bytes::from_static(b"orphan"))
            .await
            .unwrap();
    }
}

/// The nightly list-orphans service, with `--min-age 0s` added (the objects are fresh).
fn list_orphans_service(db: &TestDb, t: &TestStore) -> Service {
    let conf = config(db, &t.url, "127.0.0.1:9718", false);
    let mut service = Service::new(
        LIST_ORPHANS,
        &[("housekeep.toml", &conf), ("database_password", "pw\n")],
    );
    let bin = env!("CARGO_BIN_EXE_housekeep");
    let wrapper = service.scratch.path().join("housekeep");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nexec {bin} \"$@\" --min-age 0s\n"),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    service.argv = service
        .argv
        .iter()
        .map(|a| a.replace(bin, &wrapper.to_string_lossy()))
        .collect();
    service
}

fn manifest_lines(service: &Service) -> usize {
    std::fs::read_to_string(service.state.path().join("orphans.csv"))
        .unwrap()
        .lines()
        .count()
}

#[tokio::test]
async fn nightly_list_orphans_resumes_a_stopped_listing_and_restarts_a_completed_one() {
    let db = TestDb::migrated().await;
    let t = TestStore::new(Backend::Local);
    plant_orphans(&t.store, 3).await;
    let service = list_orphans_service(&db, &t);
    let night = || {
        let o = run(&mut service.command());
        assert_eq!(o.status.code(), Some(0), "{}", output_text(&o));
    };
    night();
    assert_eq!(manifest_lines(&service), 3);

    // A listing stopped after its last page but before it recorded completion is continued:
    // the manifest is kept, the object planted since is not listed.
    plant_orphans(&t.store, 1).await;
    let progress = service.state.path().join("orphans.csv.progress");
    let p = std::fs::read_to_string(&progress).unwrap();
    assert!(p.contains("\"complete\": true"), "{p}");
    std::fs::write(
        &progress,
        p.replace("\"complete\": true", "\"complete\": false"),
    )
    .unwrap();
    night();
    assert_eq!(
        manifest_lines(&service),
        3,
        "a stopped listing was started over"
    );

    // A completed listing is started over, in the same file.
    night();
    assert_eq!(
        manifest_lines(&service),
        4,
        "a completed listing was not started over"
    );
    night();
    assert_eq!(manifest_lines(&service), 4);
}

/// The system calls a process tree made, from `strace -f` output.
fn syscalls(trace: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(trace).unwrap();
    text.lines()
        .filter_map(|l| {
            let call = l.split_once(char::is_whitespace)?.1.trim_start();
            let name: String = call
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            (!name.is_empty() && call[name.len()..].starts_with('(')).then_some(name)
        })
        .collect()
}

/// The system calls of a `SystemCallFilter=` group, its nested groups expanded.
fn filter_group(group: &str, seen: &mut BTreeMap<String, BTreeSet<String>>) -> BTreeSet<String> {
    if let Some(s) = seen.get(group) {
        return s.clone();
    }
    let o = tool("systemd-analyze")
        .args(["syscall-filter", "--no-pager", group])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "systemd-analyze syscall-filter {group}: {}",
        output_text(&o)
    );
    let mut calls = BTreeSet::new();
    for item in stdout(&o)
        .lines()
        .skip(1)
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        if item.starts_with('@') {
            calls.extend(filter_group(item, seen));
        } else {
            calls.insert(item.to_string());
        }
    }
    assert!(!calls.is_empty(), "no system calls in {group}");
    seen.insert(group.to_string(), calls.clone());
    calls
}

/// What a unit's `SystemCallFilter=` lines allow: the allow-list less the `~` deny-lists.
fn allowed_syscalls(unit: &str) -> BTreeSet<String> {
    let mut seen = BTreeMap::new();
    let mut allowed: Option<BTreeSet<String>> = None;
    for line in values(&unit_text(unit), "SystemCallFilter") {
        let (deny, items) = match line.strip_prefix('~') {
            Some(rest) => (true, rest),
            None => (false, line.as_str()),
        };
        let calls: BTreeSet<String> = items
            .split_whitespace()
            .flat_map(|i| {
                if i.starts_with('@') {
                    filter_group(i, &mut seen)
                } else {
                    BTreeSet::from([i.to_string()])
                }
            })
            .collect();
        allowed = Some(match (allowed, deny) {
            (Some(a), true) => &a - &calls,
            (Some(a), false) => &a | &calls,
            (None, false) => calls,
            (None, true) => panic!("{unit}: a deny-list first allows everything else"),
        });
    }
    allowed.unwrap_or_else(|| panic!("{unit} has no SystemCallFilter="))
}

fn assert_within_filter(unit: &str, trace: &Path) {
    let used = syscalls(trace);
    assert!(used.len() > 20, "too few system calls traced: {used:?}");
    let allowed = allowed_syscalls(unit);
    let outside: Vec<&String> = used.difference(&allowed).collect();
    assert!(
        outside.is_empty(),
        "{unit}: SystemCallFilter= refuses {outside:?}, which housekeep calls"
    );
}

#[tokio::test]
async fn the_system_call_filter_allows_every_call_the_services_make() {
    let db = TestDb::migrated().await;
    let local = TestStore::new(Backend::Local);
    let mut c = db.client().await;
    let opts = housekeep::seed::SeedOptions {
        artifacts: 200,
        projects: 2,
        ..Default::default()
    };
    housekeep::seed::seed(
        &mut c,
        Some(&fixtures::stores(&local.store, &local.store)),
        &opts,
    )
    .await
    .unwrap();
    let traces = tempfile::Builder::new()
        .prefix("hk-strace")
        .tempdir_in(common::tmp_root())
        .unwrap();

    // The worker: start, runs of every task (deleting files), /metrics, SIGTERM.
    let port = free_port();
    let conf = config(&db, &local.url, &format!("127.0.0.1:{port}"), true);
    let service = Service::new(
        WORKER,
        &[("housekeep.toml", &conf), ("database_password", "pw\n")],
    );
    let trace = traces.path().join("worker");
    tool("strace");
    let mut notify = Notifications::bind();
    let mut child = service
        .command_with(&["strace", "-f", "-qq", "-o", &trace.to_string_lossy(), "--"])
        .env("NOTIFY_SOCKET", &notify.path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ran = notify.wait_for(Duration::from_secs(30), |l| {
        l.starts_with("STATUS=delete-objects: done")
    });
    assert!(ran.is_some(), "no delete-objects run: {:?}", notify.lines);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    assert!(body.contains("housekeep_up 1"), "{body}");
    // strace's own child is housekeep.
    let children =
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", child.id())).unwrap();
    let pid: u32 = children
        .split_whitespace()
        .next()
        .expect("housekeep under strace")
        .parse()
        .unwrap();
    common::sigterm(pid);
    assert!(child.wait().unwrap().success());
    assert_within_filter(WORKER, &trace);

    // The nightly listing: sh, grep and housekeep list-orphans, on S3.
    let s3 = TestStore::new(Backend::S3);
    plant_orphans(&s3.store, 3).await;
    let service = list_orphans_service(&db, &s3);
    let trace = traces.path().join("list-orphans");
    let o = run(&mut service.command_with(&[
        "strace",
        "-f",
        "-qq",
        "-o",
        &trace.to_string_lossy(),
        "--",
    ]));
    assert_eq!(o.status.code(), Some(0), "{}", output_text(&o));
    assert_eq!(manifest_lines(&service), 3);
    assert_within_filter(LIST_ORPHANS, &trace);
}
