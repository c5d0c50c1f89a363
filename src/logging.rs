//! Logs through `tracing`: human text on a terminal, JSON lines otherwise (journald, Kubernetes).
//! `HOUSEKEEP_LOG` takes a filter (`info`, `housekeep=debug`); the default is `info`. The
//! migration library is kept at `warn` whatever the filter says, unless the filter names it.
//!
//! JSON lines have the fields of the event at the top level; a field that holds JSON (a run's
//! `counts`, the worker's `tasks`) is written as JSON, not as a string holding it, so that
//! `jq '.counts.deleted'` works. Colours only go to a terminal. While a progress bar is drawn,
//! each line is written above it (the bar is cleared and redrawn around it), so the bar stays
//! visible under a stream of audit records.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::ser::{SerializeMap, Serializer};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::config::LogFormat;

/// Whether logs (and so fatal errors) are JSON lines; set by [`init`].
static JSON: OnceLock<bool> = OnceLock::new();
/// The progress bar on screen, if any: log lines are written above it.
static BAR: Mutex<Option<indicatif::ProgressBar>> = Mutex::new(None);

/// Bytes of log lines handed to the background writer, and bytes it has written: [`drain`]
/// waits for the second to reach the first.
static QUEUED: AtomicU64 = AtomicU64::new(0);
static WRITTEN: AtomicU64 = AtomicU64::new(0);

/// Event fields whose value is JSON text, written as JSON.
const JSON_FIELDS: &[&str] = &["counts", "tasks"];

/// Start logging. Records are formatted on the caller's thread and written by a background
/// thread through a buffer (an audit record per row must not cost a system call per row); none is
/// dropped. Keep the guard until the end of the program: dropping it flushes what is left.
pub fn init(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    let json = wants_json(format);
    let _ = JSON.set(json);
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(64 * 1024)
        .finish(AboveTheBar);
    let builder = tracing_subscriber::fmt().with_env_filter(filter()).with_writer(Counted(writer));
    let _ = if json {
        builder.event_format(JsonLines).try_init()
    } else {
        builder.compact().with_ansi(std::io::stderr().is_terminal()).try_init()
    };
    guard
}

/// `HOUSEKEEP_LOG`, or `info`; the migration library at `warn` unless the filter names it (it
/// logs the paths of the build machine at `info`); the PostgreSQL client never below `info`,
/// whatever the filter says: at `debug` it logs every statement's parameters, which carry token
/// digests and passwords.
fn filter() -> EnvFilter {
    let given = std::env::var("HOUSEKEEP_LOG").ok().filter(|s| !s.trim().is_empty());
    let mut filter = given
        .as_deref()
        .and_then(|s| EnvFilter::try_new(s).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    if !given.is_some_and(|s| s.contains("refinery")) {
        for quiet in ["refinery_core=warn", "refinery=warn"] {
            if let Ok(d) = quiet.parse() {
                filter = filter.add_directive(d);
            }
        }
    }
    if let Ok(d) = "tokio_postgres=info".parse() {
        filter = filter.add_directive(d);
    }
    filter
}

fn wants_json(format: LogFormat) -> bool {
    match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    }
}

/// Whether a fatal error should be printed as a JSON line: as the logs are, or, before logging
/// started (a configuration error), as `HOUSEKEEP_LOG_FORMAT` or the terminal says.
pub fn errors_as_json() -> bool {
    *JSON.get_or_init(|| {
        let format = match std::env::var("HOUSEKEEP_LOG_FORMAT").as_deref() {
            Ok("json") => LogFormat::Json,
            Ok("text") => LogFormat::Text,
            _ => LogFormat::Auto,
        };
        wants_json(format)
    })
}

/// A fatal error as one JSON line: time, level, message (with its causes) and exit code.
pub fn error_line(message: &str, exit_code: i32) -> String {
    serde_json::json!({
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "level": "ERROR",
        "target": "housekeep",
        "message": message,
        "exit_code": exit_code,
    })
    .to_string()
}

/// Wait (at most 2 s) until the background writer has written every line logged so far: a
/// progress bar is finished only after the lines logged while it was shown are drawn above it.
pub fn drain() {
    let target = QUEUED.load(Ordering::Acquire);
    let deadline = Instant::now() + Duration::from_secs(2);
    while WRITTEN.load(Ordering::Acquire) < target && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The background writer's handle, counting the bytes handed to it.
struct Counted(tracing_appender::non_blocking::NonBlocking);

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Counted {
    type Writer = Counted;
    fn make_writer(&'a self) -> Counted {
        Counted(self.0.clone())
    }
}

impl Write for Counted {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.0.write(buf)?;
        QUEUED.fetch_add(n as u64, Ordering::AcqRel);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Draw log lines above `bar` while it is shown; `None` when it is gone.
pub fn set_progress_bar(bar: Option<indicatif::ProgressBar>) {
    if let Ok(mut b) = BAR.lock() {
        *b = bar;
    }
}

/// Standard error, written above the progress bar when one is drawn.
struct AboveTheBar;

impl Write for AboveTheBar {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bar = BAR.lock().ok().and_then(|b| b.clone());
        let n = match bar {
            Some(bar) if !bar.is_finished() => bar.suspend(|| std::io::stderr().write(buf)),
            _ => std::io::stderr().write(buf),
        }?;
        WRITTEN.fetch_add(n as u64, Ordering::AcqRel);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// One JSON object per event: timestamp, level, the event's fields, target.
struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> std::fmt::Result {
        let mut out = Vec::with_capacity(256);
        let mut ser = serde_json::Serializer::new(&mut out);
        let mut map = ser.serialize_map(None).map_err(|_| std::fmt::Error)?;
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        map.serialize_entry("timestamp", &now).map_err(|_| std::fmt::Error)?;
        map.serialize_entry("level", event.metadata().level().as_str())
            .map_err(|_| std::fmt::Error)?;
        let mut fields = Fields { map, failed: false };
        event.record(&mut fields);
        if fields.failed {
            return Err(std::fmt::Error);
        }
        let mut map = fields.map;
        map.serialize_entry("target", event.metadata().target())
            .map_err(|_| std::fmt::Error)?;
        SerializeMap::end(map).map_err(|_| std::fmt::Error)?;
        writeln!(writer, "{}", String::from_utf8_lossy(&out))
    }
}

struct Fields<M> {
    map: M,
    failed: bool,
}

impl<M: SerializeMap> Fields<M> {
    fn put<V: serde::Serialize + ?Sized>(&mut self, field: &Field, value: &V) {
        self.failed |= self.map.serialize_entry(field.name(), value).is_err();
    }
    /// A string field; one of [`JSON_FIELDS`] holding JSON is written as that JSON.
    fn text(&mut self, field: &Field, s: &str) {
        if JSON_FIELDS.contains(&field.name())
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(s)
        {
            return self.put(field, &v);
        }
        self.put(field, s)
    }
}

impl<M: SerializeMap> Visit for Fields<M> {
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, &value)
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, &value)
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, &value)
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, &value)
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.text(field, value)
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, &value.to_string())
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.text(field, &format!("{value:?}"))
    }
}
