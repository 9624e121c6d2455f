//! The `watch` daemon (DESIGN §7): discovery and workers around the persistent job queue.
//!
//! Threads: discovery (file-system events + rescan → queued jobs), one worker per configured
//! device (lease → score → commit, each with its own store connection, model and lease owner
//! id), and the main thread, which waits for SIGINT/SIGTERM ([`run`]) or a stop flag
//! ([`run_until`]). Then no worker takes a new job; the current ones may finish within the
//! grace period, else they are returned to the queue and the process exits (an uncommitted
//! transaction is rolled back by SQLite). Either way the exit status is 0.
//!
//! At start, before any worker runs, the firings that the `on_alert` hook never accepted
//! (the last daemon died first, or the hook failed) are handed to it again: alerts are
//! stored exactly once and delivered at least once (see [`crate::monitor::alerts::hook`]).

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

use crate::analysis::stats::aggregate::AggregateOptions;
use crate::engine::scorer::{ScoreSettings, Scorer};
use crate::error::one_line;
use crate::evalset::filter::compile_filters;
use crate::evalset::loaded::LoadedEvalset;
use crate::evalset::prepare::{prepare, PrepareOptions};
use crate::evalset::EvalSet;
use crate::monitor::alerts::Alerter;
use crate::monitor::config::{EvalsetConfig, WatchConfig};
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

/// Runs the daemon until SIGINT/SIGTERM.
pub fn run(config: &WatchConfig) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let on_signal = stop.clone();
    ctrlc::set_handler(move || on_signal.store(true, Ordering::SeqCst))
        .context("installing the SIGINT/SIGTERM handler")?;
    run_until(config, stop)
}

/// Runs the daemon until `stop` is set, then shuts down as on a signal: no new job, the
/// current ones finish within the grace period or go back to the queue. For callers that
/// embed the daemon (the demo); installs no signal handler.
pub fn run_until(config: &WatchConfig, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    // Every device is opened before anything starts, so a missing GPU stops the daemon at once.
    let mut devices = Vec::with_capacity(config.devices.len());
    for (i, spec) in config.devices.iter().enumerate() {
        let device = crate::engine::device::parse(spec)
            .with_context(|| format!("{}: scoring device", config.path.display()))?;
        devices.push((worker_name(&config.devices, i), device));
    }
    let mut store = Store::open(&config.db)?;
    let evalsets = register_evalsets(config, &mut store)?;
    store.set_primary_filters(&config.primary)?;
    let runs = register_runs(config, &mut store, &evalsets)?;

    // Discovery and the workers stop on this; it is set on `stop` and when a worker stops on
    // its own, so that the others then shut down as on a signal.
    let halt = Arc::new(AtomicBool::new(false));
    let (wake_txs, wake_rxs): (Vec<_>, Vec<_>) =
        devices.iter().map(|_| mpsc::channel::<()>()).unzip();
    let (event_tx, event_rx) = mpsc::channel::<Wake>();
    let discovery = Discovery {
        store: Store::open(&config.db)?,
        runs,
        discoverer: Discoverer::new(config.daemon.settle),
        rescan: config.daemon.rescan,
        notify_workers: wake_txs.clone(),
        stop: halt.clone(),
    };
    let run_ids: Vec<i64> = discovery.runs.iter().map(|r| r.id).collect();
    let mut fs_watcher = watcher::watcher(event_tx.clone());
    std::thread::Builder::new()
        .name("discovery".into())
        .spawn(move || discovery.run(&event_rx, &mut fs_watcher))?;

    // Paired gaps need a baseline; `rise` rules pair a run's own checkpoints.
    let mut token_sets = std::collections::HashMap::new();
    if config.runs.iter().any(|r| r.baseline.is_some()) || Alerter::needs_token_sets(&config.alerts)
    {
        for e in &evalsets {
            token_sets.insert(e.id, TokenSets::new(&e.loaded));
        }
    }
    let token_sets = Arc::new(token_sets);
    let evalsets = Arc::new(evalsets);
    let alerter = Alerter::new(
        config.alerts.clone(),
        &config.db,
        token_sets.clone(),
        config.resamples,
        config.seed,
    )?;
    // Before any worker can store a new firing, so the hook gets firings in the order they
    // fired. A store error here costs only this start's retry: the firings stay pending.
    match alerter.resend_undelivered(&store) {
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
    let after_commit = Arc::new(Mutex::new(AfterCommit {
        alerter,
        tensorboard,
    }));
    let bootstrap = AggregateOptions {
        resamples: config.resamples,
        seed: config.seed,
        by_domain: false,
    };
    let tokenizers: HashMap<String, PathBuf> = config
        .runs
        .iter()
        .filter_map(|r| Some((r.name.clone(), r.tokenizer.clone()?)))
        .collect();

    let owner = owner_id();
    let (done_tx, done_rx) = mpsc::channel::<(usize, anyhow::Result<()>)>();
    let mut slots: Vec<Slot> = Vec::with_capacity(devices.len());
    for (i, ((name, device), wake_rx)) in devices.into_iter().zip(wake_rxs).enumerate() {
        let slot = Slot {
            owner: format!("{owner}/{name}"),
            name,
            current: Arc::new(Mutex::new(None)),
        };
        let worker = Worker {
            name: slot.name.clone(),
            store: Store::open(&config.db)?,
            db: config.db.clone(),
            owner: slot.owner.clone(),
            lease: config.daemon.lease,
            policy: RetryPolicy {
                max_attempts: config.daemon.max_attempts,
                max_lost_leases: MAX_LOST_LEASES,
                backoff: config.daemon.retry.as_secs_f64(),
            },
            runs: run_ids.clone(),
            tokenizers: tokenizers.clone(),
            evalsets: evalsets.clone(),
            scorer: Scorer::new(ScoreSettings {
                device,
                dtype: config.dtype.dtype(),
                batch: config.batch,
            }),
            aggregate: bootstrap,
            after_commit: after_commit.clone(),
            catch_up: i == 0,
            token_sets: token_sets.clone(),
            paired: bootstrap,
            charts: config.charts.clone(),
            stop: halt.clone(),
            current: slot.current.clone(),
        };
        let done = done_tx.clone();
        // A worker's own exit (a store error, a panic outside scoring) also ends the wait below.
        std::thread::Builder::new()
            .name(format!("worker {}", slot.name))
            .spawn(move || {
                let result = catch_unwind(AssertUnwindSafe(|| worker.run(&wake_rx)))
                    .unwrap_or_else(|p| {
                        Err(anyhow::anyhow!("worker panicked: {}", panic_text(&*p)))
                    });
                let _ = done.send((i, result));
            })?;
        slots.push(slot);
    }
    drop(done_tx);
    let names: Vec<&str> = slots.iter().map(|s| s.name.as_str()).collect();
    tracing::info!(owner = %owner, db = %config.db, runs = config.runs.len(),
        evalsets = config.evalsets.len(), workers = ?names, "watching");

    // Wait for the stop flag or for a worker to stop on its own.
    let mut running = vec![true; slots.len()];
    let mut failure: Option<anyhow::Error> = None;
    while !stop.load(Ordering::SeqCst) {
        match done_rx.recv_timeout(Duration::from_millis(100)) {
            Ok((i, result)) => {
                running[i] = false;
                tracing::info!(worker = %slots[i].name, "worker stopped on its own; shutting down");
                note_exit(&mut failure, &slots[i], result);
                break;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    if stop.load(Ordering::SeqCst) {
        tracing::info!(
            grace_secs = config.daemon.grace.as_secs_f64(),
            "stop requested; taking no new job"
        );
    }
    halt.store(true, Ordering::SeqCst);
    let _ = event_tx.send(Wake::Stop);
    for tx in &wake_txs {
        let _ = tx.send(());
    }
    let deadline = Instant::now() + config.daemon.grace;
    while running.iter().any(|&r| r) {
        match done_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok((i, result)) => {
                running[i] = false;
                note_exit(&mut failure, &slots[i], result);
            }
            Err(_) => break,
        }
    }
    return_jobs_past_grace(&config.db, &slots, &running);
    tracing::info!("stopped");
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Opens (or prepares) every configured evalset and registers it in the store.
fn register_evalsets(
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
fn register_runs(
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
                tracing::info!(job = job.id, worker = %slot.name, "grace period over; job returned to the queue")
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

/// What the main thread knows of a worker: enough to return its job at shutdown.
struct Slot {
    /// Worker name in logs.
    name: String,
    /// Its lease owner id.
    owner: String,
    /// The job it is scoring.
    current: Arc<Mutex<Option<Job>>>,
}

/// Keeps the first worker error for the exit status; logs the others.
fn note_exit(failure: &mut Option<anyhow::Error>, slot: &Slot, result: anyhow::Result<()>) {
    let Err(e) = result else { return };
    let e = e.context(format!("the worker on {} stopped", slot.name));
    match failure {
        None => *failure = Some(e),
        Some(_) => tracing::error!(error = %one_line(&e), "worker error"),
    }
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
