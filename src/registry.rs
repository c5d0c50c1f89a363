//! The tasks of the housekeeping pipeline (SPEC §4), each described once: its name, its lock,
//! its configuration keys with their defaults, and the GitLab cron worker doing the same job.
//! The configuration, the worker, `status` and the CLI all read this table; the engine of each
//! task is in [`crate::tasks`].
//!
//! Adding a task: a variant here, its [`TaskSpec`] in [`Task::spec`], and its step in
//! `crate::tasks` (a [`crate::tasks::BatchTask`] and its line in [`crate::tasks::run`]).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    Unlock,
    Unknown,
    Expire,
    DeleteObjects,
    StaleUploads,
}

/// A task-specific limit: a configuration key that only some tasks read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `max_rows`: rows per run.
    MaxRows,
    /// `lease`: how long a claimed row stays leased.
    Lease,
    /// `max_age`: the longest retry delay (delete-objects) or the age at which an upload is
    /// stale (stale-uploads).
    MaxAge,
}

impl Limit {
    pub const ALL: [Limit; 3] = [Limit::MaxRows, Limit::Lease, Limit::MaxAge];

    /// The configuration key under `tasks.<task>`.
    pub fn key(self) -> &'static str {
        match self {
            Limit::MaxRows => "max_rows",
            Limit::Lease => "lease",
            Limit::MaxAge => "max_age",
        }
    }
}

/// Everything fixed about a task.
#[derive(Debug, Clone, Copy)]
pub struct TaskSpec {
    /// The name in the CLI, the configuration (`tasks.<name>`), logs and metric labels.
    pub name: &'static str,
    /// The advisory lock (`pg_locks.objid` holds its low 32 bits) that keeps two runs of the task
    /// apart; None for a task that shares its work through row leases.
    pub lock_key: Option<i64>,
    /// Whether the task changes GitLab's own artifact rows: on a live GitLab database it runs only
    /// when `gitlab_tasks` names it.
    pub changes_gitlab_rows: bool,
    /// GitLab's cron worker doing the same job, to turn off before housekeep takes over.
    pub gitlab_worker: &'static str,
    /// Default crontab schedule.
    pub schedule: &'static str,
    /// Default rows (or objects, or pipelines' artifacts) per batch.
    pub batch_size: i64,
    /// Default time budget of a run, in seconds.
    pub time_budget_secs: u64,
    /// The limits the task reads, with their defaults (`max_rows` a count, the others seconds).
    pub limits: &'static [(Limit, u64)],
}

const LOCKS: i64 = 0x686b_7461_0000;

const UNLOCK: TaskSpec = TaskSpec {
    name: "unlock",
    lock_key: Some(LOCKS + 1),
    changes_gitlab_rows: true,
    gitlab_worker: "Ci::ScheduleUnlockPipelinesInQueueCronWorker",
    schedule: "* * * * *",
    batch_size: 1000,
    time_budget_secs: 10 * 60,
    limits: &[],
};

const UNKNOWN: TaskSpec = TaskSpec {
    name: "unknown",
    lock_key: Some(LOCKS + 2),
    changes_gitlab_rows: true,
    gitlab_worker: "Ci::UpdateLockedUnknownArtifactsWorker",
    schedule: "*/7 * * * *",
    batch_size: 1000,
    time_budget_secs: 5 * 60,
    // GitLab's 10,000 rows per seven minutes.
    limits: &[(Limit::MaxRows, 10_000)],
};

const EXPIRE: TaskSpec = TaskSpec {
    name: "expire",
    lock_key: Some(LOCKS + 3),
    changes_gitlab_rows: true,
    gitlab_worker: "ExpireBuildArtifactsWorker",
    schedule: "*/7 * * * *",
    // 10,000 rows a batch: within 0.9 of one set-based statement on a stock PostgreSQL
    // (docs/BENCHMARKS.md), transactions of well under a second.
    batch_size: 10_000,
    time_budget_secs: 5 * 60,
    limits: &[],
};

const DELETE_OBJECTS: TaskSpec = TaskSpec {
    name: "delete-objects",
    lock_key: None,
    changes_gitlab_rows: false,
    gitlab_worker: "Ci::ScheduleDeleteObjectsCronWorker",
    schedule: "16 * * * *",
    batch_size: 1000,
    time_budget_secs: 50 * 60,
    limits: &[(Limit::Lease, 10 * 60), (Limit::MaxAge, 86_400)],
};

const STALE_UPLOADS: TaskSpec = TaskSpec {
    name: "stale-uploads",
    lock_key: Some(LOCKS + 5),
    changes_gitlab_rows: false,
    gitlab_worker: "ObjectStorage::DeleteStaleDirectUploadsWorker",
    schedule: "*/6 * * * *",
    batch_size: 1000,
    time_budget_secs: 250,
    limits: &[(Limit::MaxAge, 3 * 3600)],
};

impl Task {
    /// In the order `worker --once` runs them.
    pub const ALL: [Task; 5] = [Task::Unlock, Task::Unknown, Task::Expire, Task::DeleteObjects, Task::StaleUploads];

    pub fn spec(self) -> &'static TaskSpec {
        match self {
            Task::Unlock => &UNLOCK,
            Task::Unknown => &UNKNOWN,
            Task::Expire => &EXPIRE,
            Task::DeleteObjects => &DELETE_OBJECTS,
            Task::StaleUploads => &STALE_UPLOADS,
        }
    }

    pub fn name(self) -> &'static str {
        self.spec().name
    }

    pub fn lock_key(self) -> Option<i64> {
        self.spec().lock_key
    }

    pub fn from_name(name: &str) -> Option<Task> {
        Task::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The default of a limit this task reads; None when it does not read it.
    pub fn limit_default(self, limit: Limit) -> Option<u64> {
        self.spec().limits.iter().find(|(l, _)| *l == limit).map(|(_, v)| *v)
    }

    /// The tasks that change GitLab's artifact rows (`gitlab_tasks` may name them).
    pub fn changing_gitlab_rows() -> impl Iterator<Item = Task> {
        Task::ALL.into_iter().filter(|t| t.spec().changes_gitlab_rows)
    }
}

/// A one-off bulk action (SPEC §6): run on demand on the batch runner, never scheduled. Its
/// batch size is fixed here; it has no time budget (it runs until done or interrupted, and a
/// second run resumes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// `delete-old artifacts`: the artifacts of jobs finished before a date.
    DeleteOldArtifacts,
    /// `delete-old jobs`: erase jobs finished before a date (artifacts and log).
    DeleteOldJobs,
    /// `delete-old pipelines`: delete pipelines finished before a date (jobs, artifacts, logs).
    DeleteOldPipelines,
    /// `expire-project-artifacts`: expire a project's deletable artifacts now.
    ExpireProjectArtifacts,
    /// `keep --job ID`: a job's artifacts never expire.
    Keep,
    /// `delete-artifacts --job ID`: delete a job's artifacts now.
    #[serde(rename = "delete-artifacts")]
    DeleteJobArtifacts,
    /// `refresh-stats --filename FILE`: recompute the projects' `build_artifacts_size`.
    RefreshStats,
}

/// Everything fixed about an action.
#[derive(Debug, Clone, Copy)]
pub struct ActionSpec {
    pub name: &'static str,
    /// The advisory lock keeping two runs of the action apart.
    pub lock_key: i64,
    /// Rows (or jobs, or pipelines) per batch.
    pub batch_size: i64,
}

impl Action {
    pub fn spec(self) -> &'static ActionSpec {
        const fn spec(name: &'static str, n: i64, batch_size: i64) -> ActionSpec {
            ActionSpec { name, lock_key: LOCKS + n, batch_size }
        }
        const DELETE_OLD_ARTIFACTS: ActionSpec = spec("delete-old-artifacts", 10, 1000);
        const DELETE_OLD_JOBS: ActionSpec = spec("delete-old-jobs", 11, 500);
        // Pipelines a batch: each brings its jobs and their artifacts along.
        const DELETE_OLD_PIPELINES: ActionSpec = spec("delete-old-pipelines", 12, 50);
        // GitLab's ExpireProjectBuildArtifactsWorker: 1,000 rows a batch.
        const EXPIRE_PROJECT_ARTIFACTS: ActionSpec = spec("expire-project-artifacts", 13, 1000);
        // One job: one step, whatever the batch size.
        const KEEP: ActionSpec = spec("keep", 14, 1);
        const DELETE_JOB_ARTIFACTS: ActionSpec = spec("delete-artifacts", 15, 1);
        // One project a step, each in its own transaction.
        const REFRESH_STATS: ActionSpec = spec("refresh-stats", 16, 1);
        match self {
            Action::DeleteOldArtifacts => &DELETE_OLD_ARTIFACTS,
            Action::DeleteOldJobs => &DELETE_OLD_JOBS,
            Action::DeleteOldPipelines => &DELETE_OLD_PIPELINES,
            Action::ExpireProjectArtifacts => &EXPIRE_PROJECT_ARTIFACTS,
            Action::Keep => &KEEP,
            Action::DeleteJobArtifacts => &DELETE_JOB_ARTIFACTS,
            Action::RefreshStats => &REFRESH_STATS,
        }
    }
}

/// What the batch runner runs: a task of the pipeline or a one-off bulk action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(untagged)]
pub enum Job {
    Task(Task),
    Action(Action),
}

impl Job {
    /// The name in logs, metric labels, audit records and `housekeep.runs`.
    pub fn name(self) -> &'static str {
        match self {
            Job::Task(t) => t.name(),
            Job::Action(a) => a.spec().name,
        }
    }

    pub fn lock_key(self) -> Option<i64> {
        match self {
            Job::Task(t) => t.lock_key(),
            Job::Action(a) => Some(a.spec().lock_key),
        }
    }
}

impl From<Task> for Job {
    fn from(t: Task) -> Job {
        Job::Task(t)
    }
}

impl From<Action> for Job {
    fn from(a: Action) -> Job {
        Job::Action(a)
    }
}

impl std::fmt::Display for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::fmt::Display for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_locks_and_serde_agree() {
        let mut locks = std::collections::HashSet::new();
        for t in Task::ALL {
            assert_eq!(serde_json::to_value(t).unwrap(), serde_json::Value::String(t.name().into()));
            assert_eq!(Task::from_name(t.name()), Some(t));
            assert_eq!(<Task as clap::ValueEnum>::from_str(t.name(), false), Ok(t));
            if let Some(k) = t.lock_key() {
                assert!(locks.insert(k), "{t} shares its lock");
            }
        }
        assert!(Task::ALL.windows(2).all(|w| w[0] < w[1]), "ALL is in declaration order");
        let actions = [
            Action::DeleteOldArtifacts,
            Action::DeleteOldJobs,
            Action::DeleteOldPipelines,
            Action::ExpireProjectArtifacts,
            Action::Keep,
            Action::DeleteJobArtifacts,
            Action::RefreshStats,
        ];
        for a in actions {
            assert_eq!(serde_json::to_value(a).unwrap(), serde_json::Value::String(a.spec().name.into()));
            assert!(locks.insert(a.spec().lock_key), "{} shares its lock", a.spec().name);
            assert!(Task::from_name(a.spec().name).is_none());
        }
    }
}
