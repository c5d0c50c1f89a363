//! Audit records: one structured line per destroyed row and deleted object (SPEC §4), emitted
//! through `tracing` under the target `housekeep::audit`, so they land in the same JSON stream
//! as the logs (journald, Kubernetes) and can be filtered by target.

/// The artifact row an audit record is about.
#[derive(Debug, Clone, Copy)]
pub struct ArtifactRecord<'a> {
    pub artifact_id: i64,
    pub project_id: i64,
    pub job_id: i64,
    pub file_type: i32,
    /// Its object's key in the store ("" for a row with no file).
    pub key: &'a str,
    pub size: i64,
}

#[derive(Debug, Clone)]
pub struct Audit {
    run_id: i64,
    task: &'static str,
}

impl Audit {
    /// Records of run `run_id` of the task named `task`.
    pub fn new(run_id: i64, task: &'static str) -> Audit {
        Audit { run_id, task }
    }

    /// An artifact row destroyed (moved to the deletion queue) or changed.
    pub fn artifact(&self, action: &str, a: &ArtifactRecord<'_>, reason: &str) {
        tracing::info!(
            target: "housekeep::audit",
            run_id = self.run_id,
            task = self.task,
            action,
            artifact_id = a.artifact_id,
            project_id = a.project_id,
            job_id = a.job_id,
            file_type = a.file_type,
            key = a.key,
            size = a.size,
            reason,
        );
    }

    /// An object deleted from a store (or a queue row dropped without deleting its object).
    pub fn object(&self, action: &str, object_id: Option<i64>, key: &str, size: Option<i64>, reason: &str) {
        tracing::info!(
            target: "housekeep::audit",
            run_id = self.run_id,
            task = self.task,
            action,
            object_id,
            key,
            size,
            reason,
        );
    }

    /// A job changed (erased, its artifacts kept).
    pub fn job(&self, action: &str, job_id: i64, reason: &str) {
        tracing::info!(target: "housekeep::audit", run_id = self.run_id, task = self.task, action, job_id, reason);
    }

    /// A pipeline changed (unlocked, enqueued).
    pub fn pipeline(&self, action: &str, pipeline_id: i64, reason: &str) {
        tracing::info!(target: "housekeep::audit", run_id = self.run_id, task = self.task, action, pipeline_id, reason);
    }
}
