//! `housekeep report`: the read-only reports GitLab administrators run from a Rails console
//! (SPEC §6), each one query on GitLab's own indexes, bounded by a row limit, so that each
//! answers in under 2 s on 10 million artifact rows (docs/BENCHMARKS.md has the plans).
//!
//! One file per report. Each returns typed rows, never text: [`ArtifactRow`] for the four
//! listings of artifacts (never-expiring, expiring-after, largest, artifacts), [`ProjectRow`]
//! for top-projects and [`UnknownRow`] for the unknown-lock summary. [`Row`] names a row's
//! columns once, in order, for every format: the JSON keys and the CSV header are the same
//! snake_case names (a unit test holds them together), and values are GitLab's enum names
//! (`archive`, `unknown`, `remote`) and RFC 3339 UTC times.

pub mod artifacts;
pub mod expiring_after;
pub mod largest;
pub mod never_expiring;
pub mod top_projects;
pub mod unknown;

use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Serialize, Serializer};

/// Rows of a report, as GitLab's console snippets default to (`.limit(50)`).
pub const DEFAULT_ROWS: i64 = 50;
/// Projects of `top-projects`, as GitLab's snippet (`.limit(20)`).
pub const DEFAULT_TOP_PROJECTS: i64 = 20;

/// How many rows a report returns: at least 1, at most [`Limit::MAX`] (a report is read by a
/// person or a script, not a dump of the table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit(i64);

impl Limit {
    pub const MAX: i64 = 1_000_000;

    pub fn new(n: i64) -> Result<Limit, String> {
        if (1..=Self::MAX).contains(&n) {
            Ok(Limit(n))
        } else {
            Err(format!("{n} rows: the limit is a whole number from 1 to {}", Self::MAX))
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

impl FromStr for Limit {
    type Err = String;
    fn from_str(s: &str) -> Result<Limit, String> {
        let t = s.trim();
        let n: i64 = t
            .parse()
            .map_err(|_| format!("{t:?} is not a number of rows: give a whole number from 1 to {}", Self::MAX))?;
        Limit::new(n)
    }
}

/// A report's rows in every format: the column names (the JSON keys and the CSV header) and
/// each row's values as text.
pub trait Row: Serialize {
    /// The column names, in order; the same as the keys the row serializes to.
    const COLUMNS: &'static [&'static str];
    /// The values for CSV, in column order; an absent value is empty.
    fn cells(&self) -> Vec<String>;
    /// The values for a table a person reads: sizes in KiB/MiB/GiB, times to the second, and
    /// `-` for an absent value. The default is [`Row::cells`].
    fn table_cells(&self) -> Vec<String> {
        self.cells()
    }
}

/// One artifact row, as the listings return it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArtifactRow {
    pub artifact_id: i64,
    pub project_id: i64,
    /// The project's full path (GitLab's `routes`); None when the project has no route.
    pub project_path: Option<String>,
    pub job_id: i64,
    #[serde(serialize_with = "as_name")]
    pub file_type: FileType,
    /// Bytes; GitLab's column is nullable.
    pub size: Option<i64>,
    #[serde(serialize_with = "as_name")]
    pub locked: Locked,
    #[serde(serialize_with = "as_time")]
    pub created_at: DateTime<Utc>,
    /// None: never expires.
    #[serde(serialize_with = "as_opt_time")]
    pub expire_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "as_name")]
    pub file_store: FileStore,
    /// The object's key in its store, without the store's prefix (SPEC §2 layouts).
    pub object_key: String,
}

impl Row for ArtifactRow {
    const COLUMNS: &'static [&'static str] = &[
        "artifact_id",
        "project_id",
        "project_path",
        "job_id",
        "file_type",
        "size",
        "locked",
        "created_at",
        "expire_at",
        "file_store",
        "object_key",
    ];
    fn cells(&self) -> Vec<String> {
        vec![
            self.artifact_id.to_string(),
            self.project_id.to_string(),
            self.project_path.clone().unwrap_or_default(),
            self.job_id.to_string(),
            self.file_type.name(),
            opt(self.size),
            self.locked.name(),
            time(&self.created_at),
            self.expire_at.as_ref().map(time).unwrap_or_default(),
            self.file_store.name(),
            self.object_key.clone(),
        ]
    }
    fn table_cells(&self) -> Vec<String> {
        vec![
            self.artifact_id.to_string(),
            self.project_id.to_string(),
            self.project_path.clone().unwrap_or_else(|| "-".into()),
            self.job_id.to_string(),
            self.file_type.name(),
            self.size.map(human_bytes).unwrap_or_else(|| "-".into()),
            self.locked.name(),
            short_time(&self.created_at),
            self.expire_at.as_ref().map(short_time).unwrap_or_else(|| "never".into()),
            self.file_store.name(),
            self.object_key.clone(),
        ]
    }
}

/// The columns every artifact listing selects, from a subquery `a` over `p_ci_job_artifacts`
/// (already filtered, ordered and limited, so that the project's path and the object key are
/// computed for the returned rows only).
macro_rules! artifact_columns {
    () => {
        "
  a.id AS artifact_id, a.project_id, r.path AS project_path, a.job_id, a.file_type, a.size,
  a.locked, a.created_at, a.expire_at, a.file_store::smallint AS file_store,
  housekeep.artifact_store_dir(a.project_id, a.created_at, a.job_id, a.id, a.file_final_path, a.file_location)
    || '/' || COALESCE(housekeep.artifact_file(a.file, a.file_final_path), '') AS object_key"
    };
}
pub(crate) use artifact_columns;

/// Joins the project's route to the subquery `a`.
macro_rules! route_join {
    () => {
        "LEFT JOIN routes r ON r.source_type = 'Project' AND r.source_id = a.project_id"
    };
}
pub(crate) use route_join;

impl ArtifactRow {
    pub(crate) fn from_row(r: &tokio_postgres::Row) -> ArtifactRow {
        ArtifactRow {
            artifact_id: r.get("artifact_id"),
            project_id: r.get("project_id"),
            project_path: r.get("project_path"),
            job_id: r.get("job_id"),
            file_type: FileType(r.get("file_type")),
            size: r.get("size"),
            locked: Locked(r.get("locked")),
            created_at: r.get("created_at"),
            expire_at: r.get("expire_at"),
            file_store: FileStore(r.get::<_, i16>("file_store")),
            object_key: r.get("object_key"),
        }
    }
}

/// One project of `top-projects`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProjectRow {
    pub project_id: i64,
    pub project_path: Option<String>,
    /// `project_statistics.build_artifacts_size`: bytes, as GitLab counts them.
    pub build_artifacts_size: i64,
}

impl Row for ProjectRow {
    const COLUMNS: &'static [&'static str] = &["project_id", "project_path", "build_artifacts_size"];
    fn cells(&self) -> Vec<String> {
        vec![
            self.project_id.to_string(),
            self.project_path.clone().unwrap_or_default(),
            self.build_artifacts_size.to_string(),
        ]
    }
    fn table_cells(&self) -> Vec<String> {
        vec![
            self.project_id.to_string(),
            self.project_path.clone().unwrap_or_else(|| "-".into()),
            human_bytes(self.build_artifacts_size),
        ]
    }
}

/// One group of the unknown-lock summary: rows of `locked = 2` sharing `expire_at` and
/// `file_type`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnknownRow {
    #[serde(serialize_with = "as_time")]
    pub expire_at: DateTime<Utc>,
    #[serde(serialize_with = "as_name")]
    pub file_type: FileType,
    #[serde(serialize_with = "as_name")]
    pub locked: Locked,
    pub count: i64,
    pub bytes: i64,
}

impl Row for UnknownRow {
    const COLUMNS: &'static [&'static str] = &["expire_at", "file_type", "locked", "count", "bytes"];
    fn cells(&self) -> Vec<String> {
        vec![
            time(&self.expire_at),
            self.file_type.name(),
            self.locked.name(),
            self.count.to_string(),
            self.bytes.to_string(),
        ]
    }
    fn table_cells(&self) -> Vec<String> {
        vec![
            short_time(&self.expire_at),
            self.file_type.name(),
            self.locked.name(),
            self.count.to_string(),
            human_bytes(self.bytes),
        ]
    }
}

/// A value with a GitLab enum name.
pub trait Named {
    fn name(&self) -> String;
}

fn as_name<S: Serializer, T: Named>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&v.name())
}

fn as_time<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&time(t))
}

fn as_opt_time<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&time(t)),
        None => s.serialize_none(),
    }
}

/// `ci_job_artifacts.file_type`, shown by GitLab's name (`archive`, `trace`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileType(pub i32);

impl FileType {
    pub const ARCHIVE: FileType = FileType(1);
    pub const TRACE: FileType = FileType(3);
}

impl Named for FileType {
    fn name(&self) -> String {
        let n = match self.0 {
            1 => "archive",
            2 => "metadata",
            3 => "trace",
            4 => "junit",
            5 => "sast",
            6 => "dependency_scanning",
            7 => "container_scanning",
            8 => "dast",
            9 => "codequality",
            101 => "license_scanning",
            11 => "performance",
            12 => "metrics",
            13 => "metrics_referee",
            14 => "network_referee",
            15 => "lsif",
            16 => "dotenv",
            17 => "cobertura",
            18 => "terraform",
            19 => "accessibility",
            20 => "cluster_applications",
            21 => "secret_detection",
            22 => "requirements",
            23 => "coverage_fuzzing",
            24 => "browser_performance",
            25 => "load_performance",
            26 => "api_fuzzing",
            27 => "cluster_image_scanning",
            28 => "cyclonedx",
            29 => "requirements_v2",
            30 => "annotations",
            31 => "repository_xray",
            32 => "jacoco",
            33 => "scip",
            34 => "sarif",
            other => return other.to_string(),
        };
        n.to_string()
    }
}

/// `ci_job_artifacts.locked`: GitLab's `unlocked` 0, `artifacts_locked` 1, `unknown` 2 (NULL is
/// shown as `unknown`, the column's default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Locked(pub Option<i16>);

impl Named for Locked {
    fn name(&self) -> String {
        match self.0 {
            Some(0) => "unlocked".into(),
            Some(1) => "artifacts_locked".into(),
            Some(2) | None => "unknown".into(),
            Some(other) => other.to_string(),
        }
    }
}

/// `ci_job_artifacts.file_store`: `local` 1, `remote` 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStore(pub i16);

impl Named for FileStore {
    fn name(&self) -> String {
        match self.0 {
            1 => "local".into(),
            2 => "remote".into(),
            other => other.to_string(),
        }
    }
}

/// RFC 3339 in UTC with as many fractional digits as the value has: `2025-01-02T03:04:05Z`.
pub fn time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn short_time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

fn opt(v: Option<i64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

/// Bytes for a person: `512 B`, `1.5 KiB`, `3.2 GiB`.
pub fn human_bytes(n: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v.abs() >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys<T: Row>(row: &T) -> Vec<String> {
        match serde_json::to_value(row).unwrap() {
            serde_json::Value::Object(m) => {
                let mut k: Vec<String> = m.keys().cloned().collect();
                k.sort();
                k
            }
            other => panic!("not an object: {other}"),
        }
    }

    fn sorted(v: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn json_keys_are_the_csv_columns() {
        let t: DateTime<Utc> = "2025-01-02T03:04:05Z".parse().unwrap();
        let a = ArtifactRow {
            artifact_id: 1,
            project_id: 2,
            project_path: None,
            job_id: 3,
            file_type: FileType(1),
            size: Some(10),
            locked: Locked(Some(0)),
            created_at: t,
            expire_at: None,
            file_store: FileStore(2),
            object_key: "k".into(),
        };
        assert_eq!(keys(&a), sorted(ArtifactRow::COLUMNS));
        assert_eq!(a.cells().len(), ArtifactRow::COLUMNS.len());
        assert_eq!(a.table_cells().len(), ArtifactRow::COLUMNS.len());
        let p = ProjectRow {
            project_id: 1,
            project_path: Some("g/p".into()),
            build_artifacts_size: 5,
        };
        assert_eq!(keys(&p), sorted(ProjectRow::COLUMNS));
        assert_eq!(p.cells().len(), ProjectRow::COLUMNS.len());
        let u = UnknownRow {
            expire_at: t,
            file_type: FileType(4),
            locked: Locked(Some(2)),
            count: 3,
            bytes: 30,
        };
        assert_eq!(keys(&u), sorted(UnknownRow::COLUMNS));
        assert_eq!(u.cells(), ["2025-01-02T03:04:05Z", "junit", "unknown", "3", "30"]);
    }

    #[test]
    fn limits_are_bounded() {
        assert_eq!("50".parse::<Limit>().unwrap().get(), 50);
        for bad in ["0", "-1", "1000001", "ten", "", "1.5"] {
            assert!(bad.parse::<Limit>().is_err(), "{bad}");
        }
    }

    #[test]
    fn names_are_gitlabs() {
        assert_eq!(FileType(1).name(), "archive");
        assert_eq!(FileType(101).name(), "license_scanning");
        assert_eq!(FileType(99).name(), "99");
        assert_eq!(Locked(Some(1)).name(), "artifacts_locked");
        assert_eq!(Locked(None).name(), "unknown");
        assert_eq!(FileStore(1).name(), "local");
        assert_eq!(time(&"2025-01-02T03:04:05.25Z".parse().unwrap()), "2025-01-02T03:04:05.250Z");
    }
}
