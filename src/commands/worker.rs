//! `housekeep worker`: the daemon (the scheduler, the HTTP listener and systemd's notify
//! protocol live in [`crate::worker`]), or with `--once` every enabled task once, in order, with
//! a summary line per task.

use clap::Args;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::worker::{OnceRun, Step};

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Run unlock, unknown, expire, delete-objects and stale-uploads once each, in that order, and exit
    #[arg(long)]
    pub once: bool,
    /// HTTP listener address [env: HOUSEKEEP_LISTEN] [default: 127.0.0.1:9718]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
}

pub async fn run(a: WorkerArgs, config: &Config) -> Result<()> {
    let ctx = super::context(config).await?;
    if a.once {
        let run = crate::worker::run_once(&ctx).await;
        print_once(&run);
        run.result
    } else {
        // `--listen` is already merged into the configuration.
        let listen = config.listen.parse().map_err(|_| Error::config("listen: not an address"))?;
        crate::worker::run_daemon(ctx, listen).await
    }
}

fn print_once(run: &OnceRun) {
    for step in &run.steps {
        match step {
            Step::Skipped(task) => println!("{task}: skipped on a live GitLab database (not in gitlab_tasks)"),
            Step::Ran(report) => println!("{}", report.summary()),
        }
    }
}
