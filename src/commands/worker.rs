//! `filtermon worker`: one worker for a watch config's queue, until the queue is idle.

use std::time::Duration;

use crate::commands::cli::WorkerArgs;
use crate::error::input_error;
use crate::monitor::config::{Executor, WatchConfig, DEFAULT_WORKER_IDLE};

/// Runs the command.
pub fn run(args: &WorkerArgs) -> anyhow::Result<()> {
    let config = WatchConfig::load(&args.config)?;
    let idle = match (args.idle_secs, &config.executor) {
        (Some(secs), _) => idle_secs(secs)?,
        (None, Executor::Slurm(s)) => s.worker_idle,
        (None, Executor::Local) => DEFAULT_WORKER_IDLE,
    };
    crate::monitor::daemon::standalone::run(&config, idle)
}

/// `--idle-secs` as a duration: a number of seconds > 0.
fn idle_secs(secs: f64) -> anyhow::Result<Duration> {
    if secs > 0.0 && secs.is_finite() {
        Ok(Duration::from_secs_f64(secs))
    } else {
        Err(input_error(format!(
            "--idle-secs: must be a number of seconds > 0, not {secs}"
        )))
    }
}
