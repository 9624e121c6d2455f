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
use std::path::{Path, PathBuf};
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
        // After the checks, so that an error at start stays one line.
        if config.devices.len() > 1 {
            // Each job holds one worker; more GPUs per node are more jobs (`max_jobs`).
            tracing::warn!(device = %config.devices[0], devices = config.devices.len(),
                "a Slurm worker job scores on the first configured device only");
        }
        if let Some(file) = config.db.sqlite_path() {
            // Fine when the workers' nodes are this one; over NFS or Lustre, SQLite's locks
            // do not hold.
            tracing::warn!(db = %file.display(),
                "Slurm workers share an SQLite store through the file system: safe only when they \
                 run on this machine; on a cluster, give `db` a postgres:// URL");
        }
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
        let mut state = TickState::default();
        while !stop.load(Ordering::SeqCst) {
            self.tick(&mut state);
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
    fn tick(&mut self, state: &mut TickState) {
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
        match state.known.take() {
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
                    let end = log_ended(id);
                    state.note_end(end.as_ref(), id, &self.launcher.script);
                }
            }
        }
        let mut now_live = live.clone();
        let mut n = to_submit(self.launcher.max_jobs, load, live.len());
        if state.hold_until.is_some_and(|t| Instant::now() < t) {
            n = 0;
        }
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
        state.known = Some(now_live);
    }
}

/// What the supervisor remembers from one tick to the next.
#[derive(Debug, Default)]
struct TickState {
    /// The live worker jobs seen at the last tick; None before the first answer of squeue.
    known: Option<BTreeSet<String>>,
    /// Worker jobs that failed in a row.
    failures: u32,
    /// No submission before this, after failures.
    hold_until: Option<Instant>,
}

impl TickState {
    /// Counts a failed worker job, or resets the count on one that completed. Workers that
    /// fail at once (a device missing on the node, a store the node cannot reach) would
    /// otherwise be resubmitted every tick for as long as the queue has work.
    fn note_end(&mut self, end: Option<&cli::EndedJob>, id: &str, script: &Path) {
        let Some(end) = end else { return };
        if end.state == "COMPLETED" {
            self.failures = 0;
            self.hold_until = None;
        } else if is_failure(&end.state) {
            self.failures = self.failures.saturating_add(1);
            let wait = backoff(self.failures);
            self.hold_until = Some(Instant::now() + wait);
            let output = script.with_file_name(format!("worker-{id}.out"));
            tracing::warn!(slurm_job = %id, state = %end.state, exit_code = %end.exit_code,
                output = %output.display(), failures_in_a_row = self.failures,
                next_submission_secs = wait.as_secs_f64(), "worker job failed");
        }
    }
}

/// Whether a worker job that ended in `state` failed for a reason that a new job would likely
/// meet again. Cancelled jobs (scancel, preemption) and time limits are not such failures.
fn is_failure(state: &str) -> bool {
    ["FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL"].contains(&state)
}

/// The pause in submissions after `failures` worker jobs failed in a row: a tick after the
/// first, doubling up to 5 minutes.
fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    (TICK * 2u32.pow(doublings)).min(Duration::from_secs(300))
}

/// Logs how a worker job ended, as far as Slurm still knows, and returns it.
fn log_ended(id: &str) -> Option<cli::EndedJob> {
    let end = cli::ended(id);
    match &end {
        Some(end) => tracing::info!(slurm_job = %id, state = %end.state,
            exit_code = %end.exit_code, "worker job ended"),
        None => tracing::info!(slurm_job = %id, "worker job ended"),
    }
    end
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

    #[test]
    fn failing_worker_jobs_pause_submissions_longer_each_time_until_one_completes() {
        assert_eq!(backoff(1), TICK);
        assert_eq!(backoff(2), TICK * 2);
        assert_eq!(backoff(3), TICK * 4);
        assert_eq!(backoff(20), Duration::from_secs(300));
        assert_eq!(backoff(u32::MAX), Duration::from_secs(300));

        let end = |state: &str| cli::EndedJob {
            state: state.into(),
            exit_code: "2:0".into(),
        };
        let script = Path::new("/logs/worker.sbatch");
        let mut st = TickState::default();
        st.note_end(Some(&end("FAILED")), "7", script);
        st.note_end(Some(&end("NODE_FAIL")), "8", script);
        assert_eq!(st.failures, 2);
        assert!(st.hold_until.is_some_and(|t| t > Instant::now() + TICK));
        // Cancelled, timed out or forgotten by Slurm: no sign of a broken worker.
        for state in ["CANCELLED", "TIMEOUT", "PREEMPTED"] {
            st.note_end(Some(&end(state)), "9", script);
        }
        st.note_end(None, "10", script);
        assert_eq!(st.failures, 2);
        st.note_end(Some(&end("COMPLETED")), "11", script);
        assert_eq!((st.failures, st.hold_until), (0, None));
    }
}
