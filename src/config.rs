//! Configuration: one TOML file (`--config` or `HOUSEKEEP_CONFIG`), overridden by `HOUSEKEEP_*`
//! environment variables, overridden by flags (SPEC §3).
//!
//! Every key has exactly one environment name, derived from its dotted path
//! (`tasks.delete-objects.concurrency` → `HOUSEKEEP_TASKS_DELETE_OBJECTS_CONCURRENCY`), so the
//! three layers cannot drift apart. Unknown keys and unknown `HOUSEKEEP_*` variables are errors
//! that name the key; every later error names the key and the layer that set it.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub mod error;
pub use error::{ConfigError, Source, ValueError};
use toml::{Table, Value};

use crate::db::url::parse_url;
use crate::duration::HumanDuration;
use crate::error::{Error, Result};
use crate::registry::{Limit, Task};
use crate::schedule::Schedule;
use crate::store::url::StoreUrl;

mod service_links;
pub(crate) mod credentials;

/// Environment variables that are not configuration keys.
const ENV_CONFIG: &str = "HOUSEKEEP_CONFIG";
const ENV_NOT_KEYS: &[&str] = &[ENV_CONFIG, "HOUSEKEEP_LOG"];
/// Keys without a default (absent from a serialized default configuration).
const OPTIONAL_KEYS: &[&str] = &["database_url", "store_url", "local_store_url", "gitlab_secrets_file"];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// PostgreSQL URL (`postgres://user:password@host:5432/db`). A secret: always redacted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    /// Where remote objects (`file_store = 2`) live.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_url: Option<String>,
    /// Where local objects (`file_store = 1`) live.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_store_url: Option<String>,
    /// On a live GitLab database, GitLab's secrets file (`/etc/gitlab/gitlab-secrets.json`, or
    /// a source install's `config/secrets.yml`): its `db_key_base` lets the Job Artifacts API
    /// check GitLab's tokens. Also read from systemd credential `gitlab_secrets`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gitlab_secrets_file: Option<String>,
    /// HTTP listener of the worker (/metrics, /healthz, /readyz).
    pub listen: String,
    /// `auto` (text on a terminal, JSON otherwise), `text` or `json`.
    pub log_format: LogFormat,
    /// Connections in the pool (1 to 1,000).
    pub db_pool_size: usize,
    /// How long to wait for the database before giving up with one clear error (more than 0s).
    pub db_connect_timeout: HumanDuration,
    /// Store requests in flight at once (1 to 10,000).
    pub store_concurrency: usize,
    /// On a live GitLab database, the tasks that change GitLab's artifact rows (`expire`,
    /// `unknown`, `unlock`) run only when named here, after GitLab's own cron workers for them
    /// are turned off (README, "Live GitLab").
    pub gitlab_tasks: Vec<String>,
    pub tasks: Tasks,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Auto,
    Text,
    Json,
}

/// `tasks.<name>`: the configuration of every task of the registry ([`Task`]), in its order.
/// Indexed by task: `config.tasks[Task::Expire].batch_size`.
#[derive(Debug, Clone)]
pub struct Tasks(BTreeMap<Task, TaskConfig>);

impl std::ops::Index<Task> for Tasks {
    type Output = TaskConfig;
    fn index(&self, task: Task) -> &TaskConfig {
        &self.0[&task]
    }
}

impl std::ops::IndexMut<Task> for Tasks {
    fn index_mut(&mut self, task: Task) -> &mut TaskConfig {
        self.0.entry(task).or_insert_with(|| TaskConfig::default_for(task))
    }
}

impl Serialize for Tasks {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(t, c)| (t.name(), c)))
    }
}

/// A table per task name; an unknown name is refused as an unknown key, a task left out keeps
/// its defaults.
impl<'de> Deserialize<'de> for Tasks {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let given = BTreeMap::<String, TaskConfig>::deserialize(d)?;
        let mut tasks = Tasks::default();
        for (name, c) in given {
            let task = Task::from_name(&name).ok_or_else(|| {
                let names: Vec<String> = Task::ALL.iter().map(|t| format!("`{t}`")).collect();
                serde::de::Error::custom(format!("unknown field `{name}`, expected one of {}", names.join(", ")))
            })?;
            tasks.0.insert(task, c);
        }
        Ok(tasks)
    }
}

/// What every task has: whether it runs, when, in which batch size and for how long at most.
/// Task-specific limits (`max_rows`, `lease`, `max_age`) are unset where they do not apply, and
/// setting one there is an error. Every duration is at most 100 years ([`HumanDuration`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TaskConfig {
    pub enabled: bool,
    pub schedule: String,
    /// Rows per batch (1 to 100,000).
    pub batch_size: i64,
    /// More than 0s.
    pub time_budget: HumanDuration,
    /// unknown: rows per run (GitLab's 10,000 per seven minutes), at least 1.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_rows: i64,
    /// delete-objects: how long a claimed row stays leased; the first retry delay doubles from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<HumanDuration>,
    /// delete-objects: longest retry delay. stale-uploads: age at which an upload is stale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<HumanDuration>,
}

/// Only used to check a file on its own; real defaults are per task (`Tasks::default`).
impl Default for TaskConfig {
    fn default() -> Self {
        TaskConfig::new("* * * * *", 1000, 300)
    }
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

impl TaskConfig {
    fn new(schedule: &str, batch_size: i64, time_budget_secs: u64) -> Self {
        TaskConfig {
            enabled: true,
            schedule: schedule.into(),
            batch_size,
            time_budget: HumanDuration::secs(time_budget_secs),
            max_rows: 0,
            lease: None,
            max_age: None,
        }
    }

    /// The settings of a one-off action: its batch size, no schedule, no time budget (it runs
    /// until done or interrupted).
    pub fn one_off(batch_size: i64) -> Self {
        TaskConfig { enabled: false, schedule: String::new(), ..TaskConfig::new("", batch_size, 100 * 365 * 86_400) }
    }

    /// The defaults of `task`, from the registry.
    pub fn default_for(task: Task) -> Self {
        let spec = task.spec();
        let limit = |l: Limit| task.limit_default(l);
        TaskConfig {
            max_rows: limit(Limit::MaxRows).map_or(0, |n| n as i64),
            lease: limit(Limit::Lease).map(HumanDuration::secs),
            max_age: limit(Limit::MaxAge).map(HumanDuration::secs),
            ..TaskConfig::new(spec.schedule, spec.batch_size, spec.time_budget_secs)
        }
    }

    /// A limit the task reads, as set or defaulted: `lease` and `max_age`.
    pub fn duration_limit(&self, task: Task, limit: Limit) -> std::time::Duration {
        let set = match limit {
            Limit::Lease => self.lease,
            Limit::MaxAge => self.max_age,
            Limit::MaxRows => None,
        };
        set.map(|d| d.0).unwrap_or_else(|| std::time::Duration::from_secs(task.limit_default(limit).unwrap_or(0)))
    }
}

impl Default for Tasks {
    fn default() -> Self {
        Tasks(Task::ALL.into_iter().map(|t| (t, TaskConfig::default_for(t))).collect())
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            database_url: None,
            store_url: None,
            local_store_url: None,
            gitlab_secrets_file: None,
            listen: "127.0.0.1:9718".into(),
            log_format: LogFormat::Auto,
            db_pool_size: 8,
            db_connect_timeout: HumanDuration::secs(10),
            store_concurrency: 20,
            gitlab_tasks: Vec::new(),
            tasks: Tasks::default(),
        }
    }
}

/// A value given on the command line for a key: (dotted key, value, flag name).
#[derive(Debug, Clone)]
pub struct FlagOverride {
    pub key: &'static str,
    pub value: String,
    pub flag: &'static str,
}

/// The effective configuration plus the layer each key came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub sources: BTreeMap<String, Source>,
}

impl Loaded {
    pub fn source_of(&self, key: &str) -> Source {
        self.sources.get(key).cloned().unwrap_or(Source::Default)
    }
}

/// Load the configuration from a file, the process environment and flags, and the database
/// password from systemd's credentials ([`credentials`]).
pub fn load(config_flag: Option<&Path>, flags: &[FlagOverride]) -> Result<Loaded> {
    let env: Vec<(String, String)> = std::env::vars().filter(|(k, _)| k.starts_with("HOUSEKEEP_")).collect();
    let loaded = load_from(config_flag, &env, flags)?;
    let credentials_dir = std::env::var_os(credentials::DIRECTORY_ENV);
    credentials::apply(loaded, credentials_dir.as_deref().map(Path::new))
}

/// `load` with an explicit environment (tests).
pub fn load_from(config_flag: Option<&Path>, env: &[(String, String)], flags: &[FlagOverride]) -> Result<Loaded> {
    let env_path = env.iter().find(|(k, _)| k == ENV_CONFIG).map(|(_, v)| PathBuf::from(v));
    let path = config_flag.map(Path::to_path_buf).or(env_path);

    // Defaults first, so a file or variable that sets one key of a section keeps the others.
    let mut table = match Value::try_from(Config::default()) {
        Ok(Value::Table(t)) => t,
        _ => Table::new(),
    };
    let mut sources = BTreeMap::new();
    if let Some(path) = &path {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        // Parsed once as the typed struct for precise messages (line, column, key)…
        let de = toml::Deserializer::parse(&text).map_err(|e| file_error(path, &text, None, &e))?;
        serde_path_to_error::deserialize::<_, Config>(de)
            .map_err(|e| file_error(path, &text, Some(e.path().to_string()), e.inner()))?;
        // …and once as a table to layer the environment and flags over it.
        let file_table = toml::from_str::<Table>(&text).map_err(|e| file_error(path, &text, None, &e))?;
        for key in leaf_keys(&file_table, "") {
            sources.insert(key, Source::File(path.clone()));
        }
        merge(&mut table, file_table);
    }

    let known = known_keys();
    for (name, value) in env {
        // Kubernetes' variables for a Service named housekeep… are not keys: skipped by name and value.
        if ENV_NOT_KEYS.contains(&name.as_str()) || service_links::is_service_link(name, value) {
            continue;
        }
        let key = known
            .iter()
            .find(|(k, _)| env_name(k) == *name)
            .map(|(k, _)| k.clone())
            .ok_or_else(|| ConfigError::UnknownVariable {
                name: name.clone(),
                known: known.keys().map(|k| env_name(k)).collect(),
            })?;
        let source = Source::Env(name.clone());
        set_key(&mut table, &key, typed_value(&known[&key], value, &key, &source)?);
        sources.insert(key, source);
    }
    for f in flags {
        let source = Source::Flag(f.flag.into());
        let kind = known.get(f.key).ok_or_else(|| Error::other(format!("flag {} maps to unknown key {}", f.flag, f.key)))?;
        set_key(&mut table, f.key, typed_value(kind, &f.value, f.key, &source)?);
        sources.insert(f.key.to_string(), source);
    }

    let config: Config = serde_path_to_error::deserialize(Value::Table(table)).map_err(|e| {
        let key = e.path().to_string();
        let origin = sources.get(&key).cloned().unwrap_or(Source::Default);
        let source = ValueError::Invalid(
            escape_controls(&without_quoted_string(e.inner().message())).into_owned(),
        );
        Error::Config {
            key,
            origin,
            source: Box::new(source),
        }
    })?;
    let loaded = Loaded { config, sources };
    validate(&loaded)?;
    Ok(loaded)
}

/// A TOML error as line, column, key and the parser's message. The `toml` crate's own display
/// quotes the offending source line, which may be the one holding the password, so it is not
/// used; string values quoted by serde ("invalid type: string \"…\"") are left out too.
fn file_error(path: &Path, text: &str, key: Option<String>, e: &toml::de::Error) -> Error {
    let position = e.span().map(|span| {
        let before = &text[..span.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, column)
    });
    let key = key
        .filter(|k| !k.is_empty() && k != "." && k != "?")
        .map(|k| escape_controls(&k).into_owned());
    let message = escape_controls(&without_quoted_string(e.message())).into_owned();
    ConfigError::File {
        path: path.to_path_buf(),
        position,
        key,
        message,
    }
    .into()
}

/// serde's "invalid type: string \"x\", expected …" without the string.
fn without_quoted_string(m: &str) -> Cow<'_, str> {
    for lead in ["invalid type: string \"", "invalid value: string \""] {
        if let Some(rest) = m.strip_prefix(lead)
            && let Some(end) = rest.rfind("\", expected")
        {
            return format!("{}a string{}", &lead[..lead.len() - "string \"".len()], &rest[end + 1..]).into();
        }
    }
    m.into()
}

/// Control characters as escapes, so that a key or value never reaches a terminal raw.
fn escape_controls(s: &str) -> Cow<'_, str> {
    if s.chars().any(char::is_control) {
        s.chars().map(|c| if c.is_control() { c.escape_debug().to_string() } else { c.to_string() }).collect::<String>().into()
    } else {
        s.into()
    }
}

/// The environment variable of a dotted key.
pub fn env_name(key: &str) -> String {
    format!("HOUSEKEEP_{}", key.replace(['.', '-'], "_").to_uppercase())
}

/// Every key the configuration has, with a sample value giving its type.
fn known_keys() -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    if let Ok(Value::Table(t)) = Value::try_from(Config::default()) {
        collect_leaves(&t, "", &mut out);
    }
    // Optional task limits do not serialize where unset, so they are added for every task.
    for task in Task::ALL {
        for limit in Limit::ALL {
            let sample = if limit == Limit::MaxRows { Value::Integer(0) } else { Value::String(String::new()) };
            out.entry(format!("tasks.{task}.{}", limit.key())).or_insert(sample);
        }
    }
    for k in OPTIONAL_KEYS {
        out.insert((*k).to_string(), Value::String(String::new()));
    }
    out
}

fn collect_leaves(t: &Table, prefix: &str, out: &mut BTreeMap<String, Value>) {
    for (k, v) in t {
        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match v {
            Value::Table(sub) => collect_leaves(sub, &key, out),
            other => {
                out.insert(key, other.clone());
            }
        }
    }
}

fn leaf_keys(t: &Table, prefix: &str) -> Vec<String> {
    let mut out = BTreeMap::new();
    collect_leaves(t, prefix, &mut out);
    out.into_keys().collect()
}

/// Deep-merge `over` into `base`: tables merge key by key, anything else replaces.
fn merge(base: &mut Table, over: Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(Value::Table(b)), Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

fn typed_value(sample: &Value, raw: &str, key: &str, origin: &Source) -> Result<Value> {
    let err = |source: ValueError| Error::Config {
        key: key.into(),
        origin: origin.clone(),
        source: Box::new(source),
    };
    match sample {
        Value::Integer(_) => raw
            .trim()
            .parse::<i64>()
            .map(Value::Integer)
            .map_err(|_| err(ValueError::NotAnInteger { raw: raw.into() })),
        Value::Boolean(_) => match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(Value::Boolean(true)),
            "false" | "0" | "no" | "off" => Ok(Value::Boolean(false)),
            _ => Err(err(ValueError::NotABoolean { raw: raw.into() })),
        },
        // Lists are comma-separated in the environment and in flags.
        Value::Array(_) => Ok(Value::Array(
            raw.split(',').map(str::trim).filter(|v| !v.is_empty()).map(|v| Value::String(v.to_string())).collect(),
        )),
        _ => Ok(Value::String(raw.to_string())),
    }
}

fn set_key(table: &mut Table, key: &str, value: Value) {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().expect("non-empty key");
    let mut t = table;
    for p in parts {
        t = t
            .entry(p.to_string())
            .or_insert_with(|| Value::Table(Table::new()))
            .as_table_mut()
            .expect("configuration sections are tables");
    }
    t.insert(last.to_string(), value);
}

fn validate(l: &Loaded) -> Result<()> {
    let c = &l.config;
    let check = Checker { l };
    check.urls()?;
    c.listen.parse::<SocketAddr>().map_err(|_| check.err("listen", ValueError::NotAnAddress { value: c.listen.clone() }))?;
    check.within("db_pool_size", i64::try_from(c.db_pool_size).unwrap_or(i64::MAX), DB_POOL_SIZE)?;
    check.within("store_concurrency", i64::try_from(c.store_concurrency).unwrap_or(i64::MAX), STORE_CONCURRENCY)?;
    check.positive("db_connect_timeout", c.db_connect_timeout)?;
    for t in &c.gitlab_tasks {
        if !Task::changing_gitlab_rows().any(|g| g.name() == t) {
            let tasks: Vec<&str> = Task::changing_gitlab_rows().map(Task::name).collect();
            return Err(check.err("gitlab_tasks", ValueError::NotAGitlabTask { task: t.clone(), tasks }));
        }
    }
    for (task, t) in c.tasks.iter() {
        check.task(task, t)?;
    }
    Ok(())
}

/// Checks values, naming the key and the layer that set it. Counts are bounded so that no
/// setting can exhaust memory, connections or file handles by a typo; durations are bounded to
/// 100 years when they are parsed ([`HumanDuration`]).
struct Checker<'a> {
    l: &'a Loaded,
}

impl Checker<'_> {
    fn err(&self, key: &str, source: ValueError) -> Error {
        Error::Config { key: key.into(), origin: self.l.source_of(key), source: Box::new(source) }
    }

    fn within(&self, key: &str, v: i64, (lo, hi): (i64, i64)) -> Result<()> {
        if (lo..=hi).contains(&v) { Ok(()) } else { Err(self.err(key, ValueError::OutOfRange { lo, hi, got: v })) }
    }

    fn positive(&self, key: &str, d: HumanDuration) -> Result<()> {
        if d.0.is_zero() { Err(self.err(key, ValueError::NotPositive)) } else { Ok(()) }
    }

    fn urls(&self) -> Result<()> {
        let c = &self.l.config;
        if let Some(url) = &c.database_url {
            parse_url(url).map_err(|e| self.err("database_url", e.into()))?;
        }
        for (key, v) in [("store_url", &c.store_url), ("local_store_url", &c.local_store_url)] {
            if let Some(url) = v {
                let parsed = StoreUrl::parse(url).map_err(|e| self.err(key, e.into()))?;
                if key == "local_store_url" && !matches!(parsed, StoreUrl::Local { .. }) {
                    return Err(self.err(key, ValueError::NotLocal { shown: redact_url(url) }));
                }
            }
        }
        Ok(())
    }

    /// A task's settings; a limit set on a task that does not read it would be silently ignored,
    /// so it is refused.
    fn task(&self, task: Task, t: &TaskConfig) -> Result<()> {
        let key = |k: &str| format!("tasks.{task}.{k}");
        t.schedule.parse::<Schedule>().map_err(|e| self.err(&key("schedule"), e.into()))?;
        self.within(&key("batch_size"), t.batch_size, BATCH_SIZE)?;
        self.positive(&key("time_budget"), t.time_budget)?;
        let applies = |l: Limit| task.limit_default(l).is_some();
        let not_here = |l: Limit| {
            let tasks: Vec<String> =
                Task::ALL.into_iter().filter(|t| t.limit_default(l).is_some()).map(|t| format!("tasks.{t}")).collect();
            self.err(&key(l.key()), ValueError::NotThisTask { tasks })
        };
        if applies(Limit::MaxRows) {
            self.within(&key("max_rows"), t.max_rows, MAX_ROWS)?;
        } else if t.max_rows != 0 {
            return Err(not_here(Limit::MaxRows));
        }
        for (l, v) in [(Limit::Lease, t.lease), (Limit::MaxAge, t.max_age)] {
            match v {
                Some(d) if applies(l) => self.positive(&key(l.key()), d)?,
                Some(_) => return Err(not_here(l)),
                None => {}
            }
        }
        Ok(())
    }
}

/// Bounds of the counts, inclusive.
pub const DB_POOL_SIZE: (i64, i64) = (1, 1_000);
pub const STORE_CONCURRENCY: (i64, i64) = (1, 10_000);
pub const BATCH_SIZE: (i64, i64) = (1, 100_000);
pub const MAX_ROWS: (i64, i64) = (1, 1_000_000_000);

impl Tasks {
    /// Every task with its configuration, in the registry's order.
    pub fn iter(&self) -> impl Iterator<Item = (Task, &TaskConfig)> {
        self.0.iter().map(|(t, c)| (*t, c))
    }
}

impl Config {
    /// The configuration as TOML with every secret redacted (`housekeep config`).
    pub fn to_redacted_toml(&self) -> String {
        let mut c = self.clone();
        c.database_url = c.database_url.as_deref().map(redact_url);
        c.store_url = c.store_url.as_deref().map(redact_url);
        c.local_store_url = c.local_store_url.as_deref().map(redact_url);
        toml::to_string_pretty(&c).unwrap_or_default()
    }

    pub fn database_url(&self) -> Result<&str> {
        self.database_url.as_deref().ok_or_else(|| {
            Error::config("no database configured: set database_url in the config file, HOUSEKEEP_DATABASE_URL or --database-url")
        })
    }
}

/// A URL or libpq connection string with its password (and any other secret) replaced; see
/// [`crate::db::conninfo::redact`] for the rules.
pub fn redact_url(s: &str) -> String {
    crate::db::conninfo::redact(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn env_names_follow_the_dotted_key() {
        assert_eq!(env_name("database_url"), "HOUSEKEEP_DATABASE_URL");
        assert_eq!(env_name("tasks.delete-objects.lease"), "HOUSEKEEP_TASKS_DELETE_OBJECTS_LEASE");
    }

    #[test]
    fn flags_beat_env_beat_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:1\"\nstore_concurrency = 5\n[tasks.expire]\nbatch_size = 7\n[tasks.unknown]\nschedule = \"0 * * * *\"\n").unwrap();
        let e = env(&[("HOUSEKEEP_LISTEN", "127.0.0.1:2"), ("HOUSEKEEP_STORE_CONCURRENCY", "9")]);
        let flags = [FlagOverride { key: "listen", value: "127.0.0.1:3".into(), flag: "--listen" }];
        let l = load_from(Some(&path), &e, &flags).unwrap();
        assert_eq!(l.config.listen, "127.0.0.1:3");
        assert_eq!(l.config.store_concurrency, 9);
        assert_eq!(l.config.tasks[Task::Expire].batch_size, 7);
        assert_eq!(l.config.tasks[Task::Expire].schedule, "*/7 * * * *");
        assert_eq!(l.config.tasks[Task::Unknown].schedule, "0 * * * *");
        assert_eq!(l.config.tasks[Task::Unknown].max_rows, 10_000);
        assert_eq!(l.config.tasks[Task::Unlock].schedule, "* * * * *");
        assert_eq!(l.source_of("store_concurrency"), Source::Env("HOUSEKEEP_STORE_CONCURRENCY".into()));
    }

    #[test]
    fn unknown_key_in_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:1\"\nstore_concurency = 5\n").unwrap();
        let e = load_from(Some(&path), &[], &[]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("store_concurency"), "{e}");
        assert!(e.to_string().contains("line 2"), "{e}");
    }

    #[test]
    fn unknown_env_variable_is_named() {
        let e = load_from(None, &env(&[("HOUSEKEEP_STORE_UTL", "file:///tmp")]), &[]).unwrap_err();
        assert!(e.to_string().contains("HOUSEKEEP_STORE_UTL"), "{e}");
    }

    #[test]
    fn bad_values_name_key_and_source() {
        let cases = [
            ("HOUSEKEEP_TASKS_EXPIRE_TIME_BUDGET", "5 minutez", "tasks.expire.time_budget"),
            ("HOUSEKEEP_STORE_URL", "ftp://x", "store_url"),
            ("HOUSEKEEP_DATABASE_URL", "mysql://u:hunter2@h/db", "database_url"),
            ("HOUSEKEEP_TASKS_UNLOCK_SCHEDULE", "* * *", "tasks.unlock.schedule"),
            ("HOUSEKEEP_DB_POOL_SIZE", "many", "db_pool_size"),
            ("HOUSEKEEP_LISTEN", "nowhere", "listen"),
        ];
        for (var, value, key) in cases {
            let e = load_from(None, &env(&[(var, value)]), &[]).unwrap_err();
            let msg = e.to_string();
            assert_eq!(e.exit_code(), 2, "{msg}");
            assert!(msg.contains(key) && msg.contains(var), "{var}: {msg}");
            assert!(!msg.contains("hunter2"), "{msg}");
        }
    }

    #[test]
    fn redaction_hides_passwords() {
        assert_eq!(redact_url("postgres://u:hunter2@db:5432/x"), "postgres://u:REDACTED@db:5432/x");
        assert!(!redact_url("postgres://u@db/x?password=hunter2").contains("hunter2"));
        assert_eq!(redact_url("host=db password=hunter2 user=u"), "host=db password=REDACTED user=u");
        let c = Config { database_url: Some("postgres://u:hunter2@db/x".into()), ..Config::default() };
        assert!(!c.to_redacted_toml().contains("hunter2"));
    }

    #[test]
    fn defaults_are_valid_and_match_the_spec() {
        let l = load_from(None, &[], &[]).unwrap();
        let t = &l.config.tasks;
        assert_eq!(t[Task::Unlock].schedule, "* * * * *");
        assert_eq!(t[Task::Unknown].schedule, "*/7 * * * *");
        assert_eq!(t[Task::Expire].schedule, "*/7 * * * *");
        assert_eq!(t[Task::DeleteObjects].schedule, "16 * * * *");
        assert_eq!(t[Task::StaleUploads].schedule, "*/6 * * * *");
        assert_eq!(l.config.listen, "127.0.0.1:9718");
        assert_eq!(l.config.store_concurrency, 20);
    }
}
