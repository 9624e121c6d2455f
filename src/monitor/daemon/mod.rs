//! The `watch` daemon (DESIGN §7): discovery and workers around the persistent job queue.
//!
//! Threads: discovery (file-system events + rescan → queued jobs), then by the config's
//! executor either one worker per configured device (lease → score → commit, each with its own
//! store connection, model and lease owner id), or, with Slurm, a supervisor that keeps enough
//! `filtermon worker` jobs in Slurm for the queue ([`slurm`]) and a follower that runs the work
//! after a commit as those workers commit ([`commits`]); and the main thread, which waits for
//! SIGINT/SIGTERM ([`run`]) or a stop flag ([`run_until`]). Then no worker takes a new job; the
//! current ones may finish within the grace period, else they are returned to the queue and
//! the process exits (an uncommitted transaction is rolled back by SQLite). Slurm worker jobs
//! are left running: they finish their jobs and exit once the queue is idle. Either way the
//! exit status is 0.
//!
//! At start, before any worker runs, the firings that the `on_alert` hook never accepted
//! (the last daemon died first, or the hook failed) are handed to it again: alerts are
//! stored exactly once and delivered at least once (see [`crate::monitor::alerts::hook`]).
//!
//! [`standalone`] runs one worker on its own: `filtermon worker`, what a Slurm job runs.

pub mod commits;
pub mod slurm;
pub mod standalone;
pub mod watcher;
pub mod worker;

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;

use candle_core::Device;

use crate::analysis::stats::aggregate::AggregateOptions;
use crate::engine::scorer::{ScoreSettings, Scorer};
use crate::error::one_line;
use crate::evalset::filter::compile_filters;
use crate::evalset::loaded::LoadedEvalset;
use crate::evalset::prepare::{prepare, PrepareOptions};
use crate::evalset::EvalSet;
use crate::monitor::alerts::Alerter;
use crate::monitor::config::{EvalsetConfig, Executor, WatchConfig};
use crate::monitor::discover::Discoverer;
use crate::monitor::paired_gaps::TokenSets;
use crate::monitor::tensorboard::Appender;
use crate::store::jobs::{owner_id, Job, RetryPolicy, MAX_LOST_LEASES};
use crate::store::{EvalsetRow, Location, RunRow, Store};
use watcher::{Discovery, Wake, WatchedRun};
use worker::{panic_text, AfterCommit, ServedEvalset, Worker};

/// Opens a configured evalset, preparing it first when it has sources and does not exist.
pub fn open_evalset(cfg: &EvalsetConfig) -> anyhow::Result<EvalSet> {
    let exists = cfg.dir.join(crate::evalset::format::FILE_NAME).is_file();
    let es = match &cfg.prepare {
        Some(p) if !exists => {
            tracing::info!(evalset = %cfg.name, dir = %cfg.dir.display(), "preparing evalset");
            let opts = PrepareOptions {
                inputs: p.sources.clone(),
                tokenizer: p.tokenizer.clone(),
                out: cfg.dir.clone(),
                window: p.window,
                ..Default::default()
            };
            prepare(&opts)?.evalset
        }
        _ => EvalSet::open(&cfg.dir)?,
    };
    Ok(es)
}

/// How the daemon runs, besides its config.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Options of the `filtermon` command line that Slurm workers get too, before `worker`
    /// (the log format: a worker logs as its daemon does).
    pub worker_args: Vec<String>,
}

/// Runs the daemon until SIGINT/SIGTERM.
pub fn run(config: &WatchConfig, options: &RunOptions) -> anyhow::Result<()> {
    run_with(config, stop_on_signal()?, options)
}

/// A flag set on SIGINT or SIGTERM.
pub(crate) fn stop_on_signal() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let on_signal = stop.clone();
    ctrlc::set_handler(move || on_signal.store(true, Ordering::SeqCst))
        .context("installing the SIGINT/SIGTERM handler")?;
    Ok(stop)
}

/// Runs the daemon until `stop` is set, then shuts down as on a signal: no new job, the
/// current ones finish within the grace period or go back to the queue. For callers that
/// embed the daemon (the demo); installs no signal handler.
pub fn run_until(config: &WatchConfig, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    run_with(config, stop, &RunOptions::default())
}

/// The executor, checked before anything starts.
enum Launch {
    /// In-process workers on these devices, by worker name.
    Local(Vec<(String, Device)>),
    /// Slurm jobs.
    Slurm(slurm::Launcher),
}

fn run_with(
    config: &WatchConfig,
    stop: Arc<AtomicBool>,
    options: &RunOptions,
) -> anyhow::Result<()> {
    // Every device is opened, and Slurm asked about the worker jobs, before anything starts,
    // so that a missing GPU or a rejected partition stops the daemon at once.
    let launch = match &config.executor {
        Executor::Local => {
            let mut devices = Vec::with_capacity(config.devices.len());
            for (i, spec) in config.devices.iter().enumerate() {
                devices.push((worker_name(&config.devices, i), open_device(config, spec)?));
            }
            Launch::Local(devices)
        }
        Executor::Slurm(settings) => Launch::Slurm(slurm::Launcher::prepare(
            config,
            settings,
            &options.worker_args,
        )?),
    };
    let mut store = Store::open(&config.db)?;
    let evalsets = register_evalsets(config, &mut store)?;
    store.set_primary_filters(&config.primary)?;
    let runs = register_runs(config, &mut store, &evalsets)?;
    let run_ids: Vec<i64> = runs.iter().map(|r| r.id).collect();
    let evalsets = Arc::new(evalsets);
    let after_commit = after_commit(config, &store, &evalsets)?;

    // Discovery and the workers stop on this; it is set on `stop` and when a worker stops on
    // its own, so that the others then shut down as on a signal.
    let halt = Arc::new(AtomicBool::new(false));
    // Discovery wakes each local worker, or the Slurm supervisor, when it queues jobs.
    let wakers = match &launch {
        Launch::Local(devices) => devices.len(),
        Launch::Slurm(_) => 1,
    };
    let (wake_txs, wake_rxs): (Vec<_>, Vec<_>) = (0..wakers).map(|_| mpsc::channel::<()>()).unzip();
    let (event_tx, event_rx) = mpsc::channel::<Wake>();
    let discovery = Discovery {
        store: Store::open(&config.db)?,
        runs,
        discoverer: Discoverer::new(config.daemon.settle),
        rescan: config.daemon.rescan,
        notify_workers: wake_txs.clone(),
        stop: halt.clone(),
    };
    let mut fs_watcher = watcher::watcher(event_tx.clone());
    std::thread::Builder::new()
        .name("discovery".into())
        .spawn(move || discovery.run(&event_rx, &mut fs_watcher))?;
    let stop_discovery = || {
        let _ = event_tx.send(Wake::Stop);
    };

    let devices = match launch {
        Launch::Local(devices) => devices,
        Launch::Slurm(launcher) => {
            let mut wake_rxs = wake_rxs;
            let supervisor = slurm::Supervisor {
                launcher,
                store: Store::open(&config.db)?,
                runs: run_ids.clone(),
                evalsets: evalsets.iter().map(|e| e.id).collect(),
                policy: retry_policy(config),
                wake: wake_rxs.pop().context("the supervisor's wake channel")?,
            };
            let follower = commits::Follower {
                store: Store::open(&config.db)?,
                runs: run_ids,
                evalsets: evalsets.iter().map(|e| e.id).collect(),
                after_commit,
            };
            let result = supervise_slurm(config, supervisor, follower, &stop, &halt);
            stop_discovery();
            tracing::info!("stopped");
            return result;
        }
    };

    let after_commit = Arc::new(Mutex::new(after_commit));
    let owner = owner_id();
    let mut workers = Workers::new(halt.clone());
    for (i, ((name, device), wake_rx)) in devices.into_iter().zip(wake_rxs).enumerate() {
        let mut worker = new_worker(config, &evalsets, &run_ids, &owner, name, device, &halt)?;
        worker.after_commit = Some(after_commit.clone());
        worker.catch_up = i == 0;
        workers.spawn(worker, wake_rx, wake_txs[i].clone())?;
    }
    tracing::info!(owner = %owner, db = %config.db, runs = config.runs.len(),
        evalsets = config.evalsets.len(), workers = ?workers.names(), "watching");

    // Wait for the stop flag or for a worker to stop on its own.
    if let Some(name) = workers.wait(&stop) {
        tracing::info!(worker = %name, "worker stopped on its own; shutting down");
    }
    if stop.load(Ordering::SeqCst) {
        tracing::info!(
            grace_secs = config.daemon.grace.as_secs_f64(),
            "stop requested; taking no new job"
        );
    }
    stop_discovery();
    let result = workers.shut_down(&config.db, config.daemon.grace);
    tracing::info!("stopped");
    result
}

/// Runs the Slurm supervisor and the follower of the workers' commits, each on its own
/// thread, until `stop` (or until one of them fails).
fn supervise_slurm(
    config: &WatchConfig,
    supervisor: slurm::Supervisor,
    follower: commits::Follower,
    stop: &AtomicBool,
    halt: &Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let (done_tx, done_rx) = mpsc::channel::<(&'static str, anyhow::Result<()>)>();
    let spawn = |name: &'static str, f: Box<dyn FnOnce() -> anyhow::Result<()> + Send>| {
        let done = done_tx.clone();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let result = catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| {
                    Err(anyhow::anyhow!("{name} panicked: {}", panic_text(&*p)))
                });
                let _ = done.send((name, result));
            })
    };
    let (h1, h2) = (halt.clone(), halt.clone());
    spawn("slurm", Box::new(move || supervisor.run(&h1)))?;
    spawn("commits", Box::new(move || follower.run(&h2)))?;
    drop(done_tx);
    tracing::info!(
        runs = config.runs.len(),
        evalsets = config.evalsets.len(),
        executor = "slurm",
        "watching"
    );
    let mut result = Ok(());
    let mut running = 2;
    while !stop.load(Ordering::SeqCst) {
        match done_rx.recv_timeout(Duration::from_millis(100)) {
            Ok((name, r)) => {
                running -= 1;
                tracing::info!(thread = name, "stopped on its own; shutting down");
                result = r.with_context(|| format!("the {name} thread stopped"));
                break;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    if stop.load(Ordering::SeqCst) {
        // The worker jobs go on: each finishes its job and exits once the queue is idle, and
        // a restarted daemon finds them by their job name.
        tracing::info!("stop requested; the Slurm worker jobs are left to finish");
    }
    halt.store(true, Ordering::SeqCst);
    // The work after a commit may be halfway through charts: give it the grace period.
    let deadline = Instant::now() + config.daemon.grace;
    while running > 0 {
        match done_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok((name, r)) => {
                running -= 1;
                if let Err(e) = r {
                    tracing::error!(thread = name, error = %one_line(&e), "stopped with an error");
                }
            }
            Err(_) => break,
        }
    }
    result
}

/// Opens a scoring device of the config.
pub(crate) fn open_device(config: &WatchConfig, spec: &str) -> anyhow::Result<Device> {
    crate::engine::device::parse(spec)
        .with_context(|| format!("{}: scoring device", config.path.display()))
}

/// The retry policy of the config's jobs.
fn retry_policy(config: &WatchConfig) -> RetryPolicy {
    RetryPolicy {
        max_attempts: config.daemon.max_attempts,
        max_lost_leases: MAX_LOST_LEASES,
        backoff: config.daemon.retry.as_secs_f64(),
    }
}

/// The work after a commit: paired gaps (when a run has a baseline or a rule pairs
/// checkpoints), TensorBoard scalars, alert rules and charts. Hands the firings that the hook
/// never accepted to it again first.
fn after_commit(
    config: &WatchConfig,
    store: &Store,
    evalsets: &[ServedEvalset],
) -> anyhow::Result<AfterCommit> {
    // Paired gaps need a baseline; `rise` rules pair a run's own checkpoints.
    let mut token_sets = HashMap::new();
    if config.runs.iter().any(|r| r.baseline.is_some()) || Alerter::needs_token_sets(&config.alerts)
    {
        for e in evalsets {
            token_sets.insert(e.id, TokenSets::new(&e.loaded));
        }
    }
    let token_sets = Arc::new(token_sets);
    let alerter = Alerter::new(
        config.alerts.clone(),
        &config.db,
        token_sets.clone(),
        config.resamples,
        config.seed,
    )?;
    // Before any worker can store a new firing, so the hook gets firings in the order they
    // fired. A store error here costs only this start's retry: the firings stay pending.
    match alerter.resend_undelivered(store) {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            alerts = n,
            "alerts not yet delivered sent to the hook again"
        ),
        Err(e) => tracing::error!(error = %one_line(&e), "reading undelivered alerts"),
    }
    let tensorboard = config.tensorboard.as_ref().map(|dir| {
        let runs = config.runs.iter().map(|r| r.name.clone()).collect();
        Appender::new(dir.clone(), runs)
    });
    Ok(AfterCommit {
        alerter,
        tensorboard,
        token_sets,
        paired: bootstrap(config),
        charts: config.charts.clone(),
    })
}

/// Bootstrap settings of the config's per-filter results and paired gaps.
fn bootstrap(config: &WatchConfig) -> AggregateOptions {
    AggregateOptions {
        resamples: config.resamples,
        seed: config.seed,
        by_domain: false,
    }
}

/// A worker of the config on `device`, leasing the jobs of `runs` × `evalsets`, with its own
/// store connection and the lease owner id `<owner>/<name>`; without the work after a commit
/// (a daemon adds its own).
pub(crate) fn new_worker(
    config: &WatchConfig,
    evalsets: &Arc<Vec<ServedEvalset>>,
    runs: &[i64],
    owner: &str,
    name: String,
    device: Device,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<Worker> {
    let tokenizers: HashMap<String, PathBuf> = config
        .runs
        .iter()
        .filter_map(|r| Some((r.name.clone(), r.tokenizer.clone()?)))
        .collect();
    Ok(Worker {
        owner: format!("{owner}/{name}"),
        name,
        store: Store::open(&config.db)?,
        db: config.db.clone(),
        lease: config.daemon.lease,
        policy: retry_policy(config),
        runs: runs.to_vec(),
        tokenizers,
        evalsets: evalsets.clone(),
        scorer: Scorer::new(ScoreSettings {
            device,
            dtype: config.dtype.dtype(),
            batch: config.batch,
        }),
        aggregate: bootstrap(config),
        after_commit: None,
        catch_up: false,
        idle_exit: None,
        stop: stop.clone(),
        current: Arc::new(Mutex::new(None)),
    })
}

/// A process's worker threads, and what it needs to shut them down: each reports here when
/// it stops.
pub(crate) struct Workers {
    slots: Vec<Slot>,
    halt: Arc<AtomicBool>,
    done_tx: mpsc::Sender<(usize, anyhow::Result<()>)>,
    done_rx: mpsc::Receiver<(usize, anyhow::Result<()>)>,
    running: Vec<bool>,
    failure: Option<anyhow::Error>,
}

impl Workers {
    /// No workers yet; `halt` is the flag they stop on.
    pub(crate) fn new(halt: Arc<AtomicBool>) -> Workers {
        let (done_tx, done_rx) = mpsc::channel();
        Workers {
            slots: Vec::new(),
            halt,
            done_tx,
            done_rx,
            running: Vec::new(),
            failure: None,
        }
    }

    /// Starts `worker` on its own thread; `wake` wakes it (`waker` is its sending side).
    pub(crate) fn spawn(
        &mut self,
        worker: Worker,
        wake: mpsc::Receiver<()>,
        waker: mpsc::Sender<()>,
    ) -> anyhow::Result<()> {
        let i = self.slots.len();
        let slot = Slot {
            name: worker.name.clone(),
            owner: worker.owner.clone(),
            current: worker.current.clone(),
            waker,
        };
        let done = self.done_tx.clone();
        // A worker's own exit (a store error, a panic outside scoring) also ends the wait below.
        std::thread::Builder::new()
            .name(format!("worker {}", slot.name))
            .spawn(move || {
                let result =
                    catch_unwind(AssertUnwindSafe(|| worker.run(&wake))).unwrap_or_else(|p| {
                        Err(anyhow::anyhow!("worker panicked: {}", panic_text(&*p)))
                    });
                let _ = done.send((i, result));
            })?;
        self.slots.push(slot);
        self.running.push(true);
        Ok(())
    }

    /// The workers' names.
    pub(crate) fn names(&self) -> Vec<&str> {
        self.slots.iter().map(|s| s.name.as_str()).collect()
    }

    /// Waits for `stop`, or for a worker to stop on its own (whose name it returns).
    pub(crate) fn wait(&mut self, stop: &AtomicBool) -> Option<String> {
        while !stop.load(Ordering::SeqCst) {
            match self.done_rx.recv_timeout(Duration::from_millis(100)) {
                Ok((i, result)) => {
                    self.running[i] = false;
                    self.note_exit(i, result);
                    return Some(self.slots[i].name.clone());
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        None
    }

    /// Stops every worker: no new job; the current ones may finish within `grace`, else they
    /// go back to the queue. Returns the first worker error.
    pub(crate) fn shut_down(mut self, db: &Location, grace: Duration) -> anyhow::Result<()> {
        self.halt.store(true, Ordering::SeqCst);
        for slot in &self.slots {
            let _ = slot.waker.send(());
        }
        let deadline = Instant::now() + grace;
        while self.running.iter().any(|&r| r) {
            match self
                .done_rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok((i, result)) => {
                    self.running[i] = false;
                    self.note_exit(i, result);
                }
                Err(_) => break,
            }
        }
        return_jobs_past_grace(db, &self.slots, &self.running);
        match self.failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Keeps the first worker error for the exit status; logs the others.
    fn note_exit(&mut self, i: usize, result: anyhow::Result<()>) {
        let Err(e) = result else { return };
        let e = e.context(format!("the worker on {} stopped", self.slots[i].name));
        match self.failure {
            None => self.failure = Some(e),
            Some(_) => tracing::error!(error = %one_line(&e), "worker error"),
        }
    }
}

/// Opens (or prepares) every configured evalset and registers it in the store.
pub(crate) fn register_evalsets(
    config: &WatchConfig,
    store: &mut Store,
) -> anyhow::Result<Vec<ServedEvalset>> {
    let mut evalsets = Vec::with_capacity(config.evalsets.len());
    for e in &config.evalsets {
        let es = open_evalset(e).with_context(|| format!("evalset {:?}", e.name))?;
        let filters = compile_filters(&config.filters, es.domains())?;
        let id = store.upsert_evalset(&EvalsetRow {
            name: e.name.clone(),
            hash: es.id().to_string(),
            tokenizer_hash: es.tokenizer_hash().to_string(),
            dir: e.dir.display().to_string(),
            tokens: es.len() as u64,
        })?;
        evalsets.push(ServedEvalset {
            id,
            name: e.name.clone(),
            loaded: LoadedEvalset::new(es, filters)?,
        });
    }
    Ok(evalsets)
}

/// Registers every configured run with the evalsets it is scored on.
pub(crate) fn register_runs(
    config: &WatchConfig,
    store: &mut Store,
    evalsets: &[ServedEvalset],
) -> anyhow::Result<Vec<WatchedRun>> {
    let mut runs = Vec::with_capacity(config.runs.len());
    for r in &config.runs {
        if !r.dir.is_dir() {
            // Allowed (the run may not have started), but a typo in `dir` looks the same.
            tracing::warn!(run = %r.name, dir = %r.dir.display(),
                "run folder does not exist yet; waiting for it");
        }
        let id = store.upsert_run(&RunRow {
            name: r.name.clone(),
            arch: r.arch.clone(),
            dir: r.dir.display().to_string(),
            baseline: r.baseline.clone(),
            tokens_per_step: r.tokens_per_step,
        })?;
        let es_ids = evalsets
            .iter()
            .filter(|e| r.evalsets.contains(&e.name))
            .map(|e| e.id)
            .collect();
        runs.push(WatchedRun {
            config: r.clone(),
            id,
            evalsets: es_ids,
        });
    }
    Ok(runs)
}

/// The jobs of workers still running past the grace period go back to the queue.
fn return_jobs_past_grace(db: &Location, slots: &[Slot], running: &[bool]) {
    for (slot, _) in slots.iter().zip(running).filter(|(_, &r)| r) {
        let job = slot
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(job) = job else { continue };
        let released = Store::open(db).and_then(|mut s| s.release(&job, &slot.owner));
        match released {
            Ok(true) => {
                tracing::info!(job = job.id, worker = %slot.name, "job not finished in the grace period; returned to the queue")
            }
            Ok(false) => {
                tracing::info!(job = job.id, worker = %slot.name, "job finished while being returned")
            }
            Err(e) => {
                tracing::error!(job = job.id, worker = %slot.name, error = %one_line(&e), "cannot return the job; its lease will expire")
            }
        }
    }
}

/// What the main thread knows of a worker: enough to wake it and return its job at shutdown.
struct Slot {
    /// Worker name in logs.
    name: String,
    /// Its lease owner id.
    owner: String,
    /// The job it is scoring.
    current: Arc<Mutex<Option<Job>>>,
    /// Wakes it.
    waker: mpsc::Sender<()>,
}

/// A worker's name: its device, numbered (`cpu#0`, `cpu#1`) where the device is listed more
/// than once, so that every worker has its own lease owner id.
fn worker_name(devices: &[String], i: usize) -> String {
    let spec = &devices[i];
    if devices.iter().filter(|d| *d == spec).count() < 2 {
        return spec.clone();
    }
    let n = devices[..i].iter().filter(|d| *d == spec).count();
    format!("{spec}#{n}")
}

#[cfg(test)]
mod tests {
    use super::worker_name;

    #[test]
    fn worker_names_are_unique() {
        let devices: Vec<String> = ["cpu", "cuda:0", "cpu", "cuda:1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let names: Vec<String> = (0..devices.len())
            .map(|i| worker_name(&devices, i))
            .collect();
        assert_eq!(names, ["cpu#0", "cuda:0", "cpu#1", "cuda:1"]);
    }
}
