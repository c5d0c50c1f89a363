//! The background work of `DELETE /projects/:id/artifacts` (202 Accepted): one queue per worker,
//! drained by one task, one project at a time, each project in it at most once. However many
//! requests arrive, at most one `expire-project-artifacts` run is in progress and one more is
//! waiting per project; a request for a project already waiting joins it. What is still queued
//! when the worker stops is not carried over.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::actions::expire_project::ExpireProject;
use crate::registry::Action;
use crate::tasks::context::Context;
use crate::tasks::outcome::Outcome;
use crate::tasks::runner::{RunOptions, run_job};

/// How long a project's run waits for the action's lock (held by a `housekeep
/// expire-project-artifacts` run elsewhere) before it is given up, and logged as such.
const LOCK_WAIT: Duration = Duration::from_secs(600);

#[derive(Clone)]
pub struct ExpiryQueue {
    tx: mpsc::UnboundedSender<i64>,
    /// Projects queued and not started yet.
    waiting: Arc<Mutex<HashSet<i64>>>,
}

impl ExpiryQueue {
    /// The queue, and the task that drains it until `ctx.cancel`.
    pub fn start(ctx: Context) -> ExpiryQueue {
        let (tx, rx) = mpsc::unbounded_channel();
        let waiting = Arc::new(Mutex::new(HashSet::new()));
        tokio::spawn(drain(ctx, rx, waiting.clone()));
        ExpiryQueue { tx, waiting }
    }

    /// Queue the project, unless it is already waiting; false when it was.
    pub fn push(&self, project_id: i64) -> bool {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        if !waiting.insert(project_id) {
            return false;
        }
        if self.tx.send(project_id).is_err() {
            waiting.remove(&project_id);
        }
        true
    }
}

async fn drain(ctx: Context, mut rx: mpsc::UnboundedReceiver<i64>, waiting: Arc<Mutex<HashSet<i64>>>) {
    loop {
        let project_id = tokio::select! {
            _ = ctx.cancel.cancelled() => return,
            p = rx.recv() => match p { Some(p) => p, None => return },
        };
        // Started: a request from now on asks for another run, which sees what changed since.
        waiting.lock().unwrap_or_else(|e| e.into_inner()).remove(&project_id);
        expire(&ctx, project_id).await;
    }
}

/// One project's run, waiting while another run holds the action's lock.
async fn expire(ctx: &Context, project_id: i64) {
    let deadline = tokio::time::Instant::now() + LOCK_WAIT;
    loop {
        match run_job::<ExpireProject>(ctx, Action::ExpireProjectArtifacts.into(), project_id, RunOptions::default()).await {
            Ok(r) if r.outcome == Outcome::Skipped => {
                if tokio::time::Instant::now() >= deadline || ctx.cancel.is_cancelled() {
                    return tracing::warn!(project_id, "API: expiring the project's artifacts given up: another run held the lock for 10 minutes");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Ok(r) => return tracing::info!(project_id, summary = %r.summary(), "API: project artifacts expired"),
            Err(e) => return tracing::error!(project_id, error = %e, "API: expiring the project's artifacts failed"),
        }
    }
}
