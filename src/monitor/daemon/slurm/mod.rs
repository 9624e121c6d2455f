//! The Slurm executor: the daemon keeps enough worker jobs in Slurm for its queue, each
//! running `filtermon worker` ([`super::standalone`]) on a compute node. The daemon itself
//! opens no scoring device and scores nothing.
//!
//! The store is the only coordination. Every tick (and whenever discovery queues jobs) the
//! supervisor reclaims dead leases, counts the due and running jobs of its runs × evalsets,
//! lists its live worker jobs with `squeue` (found by a job name derived from the config's
//! path, so a restarted daemon counts the jobs of the one before), and submits what is
//! missing up to `max_jobs`. A job pending in Slurm or a worker that has just started counts,
//! so the queue is never oversubscribed. A failing `sbatch` or `squeue` is logged and tried
//! again at the next tick; the jobs stay queued in the store meanwhile.

pub mod cli;
pub mod script;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::error::{input_error, one_line};
use crate::monitor::config::{SlurmSettings, WatchConfig};
use crate::store::jobs::{QueueLoad, RetryPolicy};
use crate::store::Store;

/// Interval of the supervisor's ticks.
const TICK: Duration = Duration::from_secs(2);

/// How often a waiting supervisor looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(100);

/// The worker jobs of a config: their name, script and limit.
#[derive(Debug)]
pub struct Launcher {
    /// Job name of the config's workers.
    pub job_name: String,
    /// The sbatch script.
    pub script: PathBuf,
    /// Most live worker jobs.
    pub max_jobs: usize,
}

impl Launcher {
    /// Checks that Slurm's commands are there, writes the sbatch script to
    /// `<logs>/worker.sbatch` (anew at each start, so it runs this executable with this
    /// config) and asks Slurm whether it would run it (`sbatch --test-only`). `worker_args`
    /// go before `worker` on the workers' command line. A missing `sbatch` or a job that Slurm
    /// rejects (a bad partition or account) is an input error.
    pub fn prepare(
        config: &WatchConfig,
        settings: &SlurmSettings,
        worker_args: &[String],
    ) -> anyhow::Result<Launcher> {
        cli::check_sbatch()?;
        if config.devices.len() > 1 {
            // Each job holds one worker; more GPUs per node are more jobs (`max_jobs`).
            tracing::warn!(device = %config.devices[0], devices = config.devices.len(),
                "a Slurm worker job scores on the first configured device only");
        }
        let exe = std::env::current_exe().context("finding the filtermon executable")?;
        let job_name = script::job_name(&config.path);
        let text = script::script(&script::ScriptSpec {
            job_name: &job_name,
            settings,
            exe: &exe,
            worker_args,
            config: &config.path,
        });
        let logs = &settings.logs;
        std::fs::create_dir_all(logs)
            .map_err(|e| input_error(format!("{}: cannot create folder: {e}", logs.display())))?;
        let path = logs.join("worker.sbatch");
        std::fs::write(&path, text)
            .map_err(|e| input_error(format!("{}: cannot write: {e}", path.display())))?;
        cli::test_only(&path).map_err(|e| {
            input_error(format!(
                "{}: Slurm would not run the worker job: {}",
                path.display(),
                one_line(&e)
            ))
        })?;
        tracing::info!(script = %path.display(), job_name = %job_name,
            max_jobs = settings.max_jobs, "Slurm worker script written");
        Ok(Launcher {
            job_name,
            script: path,
            max_jobs: settings.max_jobs,
        })
    }
}

/// How many worker jobs to submit: enough for every due or running job, at most `max_jobs`
/// in all, less those already live (pending, starting or running: each will lease a job).
pub fn to_submit(max_jobs: usize, load: QueueLoad, live: usize) -> usize {
    let wanted = load.due.saturating_add(load.running);
    let wanted = usize::try_from(wanted).unwrap_or(usize::MAX).min(max_jobs);
    wanted.saturating_sub(live)
}

/// Keeps the worker jobs in step with the queue.
pub struct Supervisor {
    /// The worker jobs.
    pub launcher: Launcher,
    /// Its own store connection.
    pub store: Store,
    /// Run ids of the daemon.
    pub runs: Vec<i64>,
    /// Evalset ids of the daemon.
    pub evalsets: Vec<i64>,
    /// For reclaiming dead leases.
    pub policy: RetryPolicy,
    /// Signalled when discovery queues jobs.
    pub wake: Receiver<()>,
}

impl Supervisor {
    /// Ticks until `stop` is set. Never cancels a worker job: on stop they are left to finish
    /// their jobs and exit when the queue is idle.
    pub fn run(mut self, stop: &AtomicBool) -> anyhow::Result<()> {
        let span = tracing::info_span!("slurm", job_name = %self.launcher.job_name);
        let _enter = span.enter();
        // The live worker jobs seen at the last tick; None before the first answer of squeue.
        let mut known: Option<BTreeSet<String>> = None;
        while !stop.load(Ordering::SeqCst) {
            self.tick(&mut known);
            self.wait(stop);
        }
        Ok(())
    }

    /// Waits for the next tick: [`TICK`], or less when discovery queues jobs or `stop` is set.
    fn wait(&self, stop: &AtomicBool) {
        let until = Instant::now() + TICK;
        while !stop.load(Ordering::SeqCst) {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            match self.wake.recv_timeout(left.min(STOP_POLL)) {
                Ok(()) => {
                    // Jobs were queued: one tick covers every wake that came meanwhile.
                    while self.wake.try_recv().is_ok() {}
                    return;
                }
                Err(RecvTimeoutError::Timeout) => {}
                // Discovery has stopped: only the interval is left.
                Err(RecvTimeoutError::Disconnected) => std::thread::sleep(left.min(STOP_POLL)),
            }
        }
    }

    /// Reclaims dead leases, then submits the worker jobs that the queue lacks.
    fn tick(&mut self, known: &mut Option<BTreeSet<String>>) {
        if let Err(e) = self.store.reclaim(self.policy) {
            tracing::error!(error = %one_line(&e), "reclaiming dead leases");
        }
        let load = match self.store.queue_load(&self.runs, &self.evalsets) {
            Ok(load) => load,
            Err(e) => {
                tracing::error!(error = %one_line(&e), "reading the queue; trying again");
                return;
            }
        };
        let live: BTreeSet<String> = match cli::jobs_named(&self.launcher.job_name) {
            Ok(jobs) => jobs
                .into_iter()
                .filter(cli::QueuedJob::is_live)
                .map(|j| j.id)
                .collect(),
            Err(e) => {
                tracing::warn!(error = %one_line(&e), "listing the worker jobs; trying again");
                return;
            }
        };
        match known {
            None if !live.is_empty() => {
                let jobs = live
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(",");
                tracing::info!(jobs = %jobs, "worker jobs of this config already in Slurm");
            }
            None => {}
            Some(before) => {
                for id in before.difference(&live) {
                    log_ended(id);
                }
            }
        }
        let mut now_live = live.clone();
        let n = to_submit(self.launcher.max_jobs, load, live.len());
        for _ in 0..n {
            match cli::submit(&self.launcher.script) {
                Ok(id) => {
                    tracing::info!(slurm_job = %id, due = load.due, running = load.running,
                        live = now_live.len(), "worker job submitted");
                    now_live.insert(id);
                }
                Err(e) => {
                    tracing::error!(error = %one_line(&e), "submitting a worker job; trying again");
                    break;
                }
            }
        }
        *known = Some(now_live);
    }
}

/// Logs how a worker job ended, as far as Slurm still knows.
fn log_ended(id: &str) {
    match cli::ended(id) {
        Some(end) => tracing::info!(slurm_job = %id, state = %end.state,
            exit_code = %end.exit_code, "worker job ended"),
        None => tracing::info!(slurm_job = %id, "worker job ended"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(due: u64, running: u64) -> QueueLoad {
        QueueLoad { due, running }
    }

    #[test]
    fn submissions_cover_the_queue_up_to_max_jobs() {
        // Nothing to do, nothing live.
        assert_eq!(to_submit(4, load(0, 0), 0), 0);
        // A backlog: up to max_jobs.
        assert_eq!(to_submit(4, load(10, 0), 0), 4);
        assert_eq!(to_submit(4, load(2, 0), 0), 2);
        // Workers pending or just started count: no second job for the same work.
        assert_eq!(to_submit(4, load(2, 0), 2), 0);
        assert_eq!(to_submit(4, load(3, 1), 2), 2);
        // A running job's worker is live: the remaining due jobs get their own.
        assert_eq!(to_submit(4, load(1, 1), 1), 1);
        // More live than wanted (idle workers waiting to exit): nothing, nothing cancelled.
        assert_eq!(to_submit(4, load(0, 1), 3), 0);
        assert_eq!(to_submit(2, load(10, 5), 4), 0);
        assert_eq!(to_submit(1, load(u64::MAX, u64::MAX), 0), 1);
    }
}
