//! Audit records: one structured line per destroyed row and deleted object (SPEC §4), emitted
//! through `tracing` under the target `housekeep::audit`, so they land in the same JSON stream
//! as the logs (journald, Kubernetes) and can be filtered by target.

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
    #[allow(clippy::too_many_arguments)]
    pub fn artifact(&self, action: &str, artifact_id: i64, project_id: i64, job_id: i64, file_type: i32, key: &str, size: i64, reason: &str) {
        tracing::info!(
            target: "housekeep::audit",
            run_id = self.run_id,
            task = self.task,
            action,
            artifact_id,
            project_id,
            job_id,
            file_type,
            key,
            size,
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

    /// A pipeline changed (unlocked, enqueued).
    pub fn pipeline(&self, action: &str, pipeline_id: i64, reason: &str) {
        tracing::info!(target: "housekeep::audit", run_id = self.run_id, task = self.task, action, pipeline_id, reason);
    }
}
