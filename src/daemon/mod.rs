//! The `watch` daemon (DESIGN §7): discovery and a worker around the persistent job queue.
//!
//! Threads: discovery (file-system events + rescan → queued jobs), the worker (lease →
//! score → commit), and the main thread, which waits for SIGINT/SIGTERM ([`run`]) or a stop
//! flag ([`run_until`]). Then the worker takes no new job; the current one may finish within
//! the grace period, else it is returned to the queue and the process exits (its uncommitted
//! transaction, if any, is rolled back by SQLite). Either way the exit status is 0.

pub mod watcher;
pub mod worker;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use anyhow::Context;

use crate::alerts::Alerter;
use crate::checkpoint::discover::Discoverer;
use crate::config::{EvalsetConfig, WatchConfig};
use crate::error::one_line;
use crate::evalset::filter::compile_filters;
use crate::evalset::prepare::{prepare, PrepareOptions};
use crate::evalset::EvalSet;
use crate::paired_gaps::TokenSets;
use crate::stats::aggregate::AggregateOptions;
use crate::store::jobs::{owner_id, RetryPolicy};
use crate::store::{EvalsetRow, RunRow, Store};
use watcher::{Discovery, Wake, WatchedRun};
use worker::{LoadedEvalset, ScoreSettings, Scorer, Worker};

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
/// current one finishes within the grace period or goes back to the queue. For callers that
/// embed the daemon (the demo); installs no signal handler.
pub fn run_until(config: &WatchConfig, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let device = crate::device::parse(&config.device)?;
    let mut store = Store::open(&config.db)?;
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
        evalsets.push(LoadedEvalset::new(id, e.name.clone(), es, filters)?);
    }
    let mut runs = Vec::with_capacity(config.runs.len());
    for r in &config.runs {
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

    let owner = owner_id();
    let current = Arc::new(Mutex::new(None));

    let (wake_tx, wake_rx) = mpsc::channel::<()>();
    let (event_tx, event_rx) = mpsc::channel::<Wake>();
    let discovery = Discovery {
        store: Store::open(&config.db)?,
        runs,
        discoverer: Discoverer::new(config.daemon.settle),
        rescan: config.daemon.rescan,
        notify_worker: wake_tx.clone(),
        stop: stop.clone(),
    };
    let run_ids = discovery.runs.iter().map(|r| r.id).collect();
    let mut fs_watcher = watcher::watcher(event_tx.clone());
    std::thread::Builder::new()
        .name("discovery".into())
        .spawn(move || discovery.run(&event_rx, &mut fs_watcher))?;

    // Paired gaps need a baseline; `rise` rules pair a run's own checkpoints.
    let mut token_sets = std::collections::HashMap::new();
    if config.runs.iter().any(|r| r.baseline.is_some()) || Alerter::needs_token_sets(&config.alerts)
    {
        for e in &evalsets {
            token_sets.insert(e.id, TokenSets::new(e));
        }
    }
    let token_sets = Arc::new(token_sets);
    let alerter = Alerter::new(
        config.alerts.clone(),
        token_sets.clone(),
        config.resamples,
        config.seed,
    )?;
    let bootstrap = AggregateOptions {
        resamples: config.resamples,
        seed: config.seed,
        by_domain: false,
    };
    let worker = Worker {
        store: Store::open(&config.db)?,
        db: config.db.clone(),
        owner: owner.clone(),
        lease: config.daemon.lease,
        policy: RetryPolicy {
            max_attempts: config.daemon.max_attempts,
            backoff: config.daemon.retry.as_secs_f64(),
        },
        runs: run_ids,
        tokenizers: config
            .runs
            .iter()
            .filter_map(|r| Some((r.name.clone(), r.tokenizer.clone()?)))
            .collect(),
        evalsets,
        scorer: Scorer::new(ScoreSettings {
            device,
            dtype: config.dtype.dtype(),
            batch: config.batch,
            aggregate: bootstrap,
        }),
        alerter,
        token_sets,
        paired: bootstrap,
        charts: config.charts.clone(),
        stop: stop.clone(),
        current: current.clone(),
    };
    let (done_tx, done_rx) = mpsc::channel::<anyhow::Result<()>>();
    // The worker's own exit (a store error) also ends the wait below.
    let sig_for_worker = done_tx.clone();
    std::thread::Builder::new()
        .name("worker".into())
        .spawn(move || {
            let _ = sig_for_worker.send(worker.run(&wake_rx));
        })?;
    drop(done_tx);
    tracing::info!(owner = %owner, db = %config.db.display(), runs = config.runs.len(),
        evalsets = config.evalsets.len(), "watching");

    // Wait for the stop flag or for the worker to stop on its own.
    while !stop.load(Ordering::SeqCst) {
        if let Ok(result) = done_rx.try_recv() {
            return result.context("the worker stopped");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    tracing::info!(
        grace_secs = config.daemon.grace.as_secs_f64(),
        "stop requested; taking no new job"
    );
    let _ = event_tx.send(Wake::Stop);
    let _ = wake_tx.send(());
    match done_rx.recv_timeout(config.daemon.grace) {
        Ok(result) => result.context("the worker stopped")?,
        Err(_) => {
            let job = current.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if let Some(job) = job {
                let mut store = Store::open(&config.db)?;
                match store.release(&job, &owner) {
                    Ok(true) => {
                        tracing::info!(job = job.id, "grace period over; job returned to the queue")
                    }
                    Ok(false) => tracing::info!(job = job.id, "job finished while being returned"),
                    Err(e) => {
                        tracing::error!(job = job.id, error = %one_line(&e), "cannot return the job; its lease will expire")
                    }
                }
            }
        }
    }
    tracing::info!("stopped");
    Ok(())
}
