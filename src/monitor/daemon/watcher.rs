//! Discovery: file-system events plus a periodic full rescan turn ready checkpoint folders
//! into queued jobs.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};

use crate::error::one_line;
use crate::monitor::config::RunConfig;
use crate::monitor::discover::Discoverer;
use crate::store::{NewCheckpoint, Store};

/// A run as discovery serves it.
pub struct WatchedRun {
    /// Config.
    pub config: RunConfig,
    /// Store id.
    pub id: i64,
    /// Store ids of the evalsets scored on it.
    pub evalsets: Vec<i64>,
}

/// Wakes the discovery loop.
#[derive(Debug)]
pub enum Wake {
    /// Something changed under a watched folder.
    Event,
    /// Shutting down.
    Stop,
}

/// Bursts of events (a shard being written) trigger at most one scan per this interval.
const EVENT_SCAN_INTERVAL: Duration = Duration::from_millis(100);

/// The discovery loop.
pub struct Discovery {
    /// Store connection of discovery.
    pub store: Store,
    /// Runs.
    pub runs: Vec<WatchedRun>,
    /// Readiness state.
    pub discoverer: Discoverer,
    /// Full rescan interval.
    pub rescan: Duration,
    /// Signalled when jobs are queued: one per in-process worker, or the Slurm supervisor's.
    pub notify_workers: Vec<Sender<()>>,
    /// Set on shutdown.
    pub stop: Arc<AtomicBool>,
}

impl Discovery {
    /// Runs until stopped; `events` carries file-system events (from [`watcher`]).
    pub fn run(mut self, events: &Receiver<Wake>, watcher: &mut Option<RecommendedWatcher>) {
        let mut known: Vec<HashSet<String>> = Vec::with_capacity(self.runs.len());
        for r in &self.runs {
            let names = self.store.checkpoint_names(r.id).unwrap_or_else(|e| {
                tracing::error!(error = %one_line(&e), "cannot read known checkpoints");
                Vec::new()
            });
            known.push(names.into_iter().collect());
        }
        let mut watched: HashSet<PathBuf> = HashSet::new();
        while !self.stop.load(Ordering::SeqCst) {
            if let Some(w) = watcher.as_mut() {
                self.watch_new_folders(w, &mut watched);
            }
            let mut next = Instant::now() + self.rescan;
            for (run, known) in self.runs.iter().zip(known.iter_mut()) {
                let scan = self.discoverer.scan(&run.config, known);
                if let Some(at) = scan.next_check {
                    next = next.min(at);
                }
                for found in scan.ready {
                    let ck = NewCheckpoint {
                        name: found.name.clone(),
                        path: found.path.display().to_string(),
                        step: found.step,
                        tokens: found.step.saturating_mul(run.config.tokens_per_step),
                        anneal: found.anneal,
                    };
                    match self.store.add_checkpoint(run.id, &ck, &run.evalsets) {
                        Ok(jobs) => {
                            known.insert(found.name);
                            tracing::info!(run = %run.config.name, checkpoint = %ck.name, step = ck.step,
                                kind = if ck.anneal { "anneal" } else { "stable" }, jobs, "checkpoint ready");
                            for worker in &self.notify_workers {
                                let _ = worker.send(());
                            }
                        }
                        Err(e) => {
                            tracing::error!(run = %run.config.name, checkpoint = %ck.name,
                                error = %one_line(&e), "cannot queue checkpoint; will try again");
                            next = next.min(Instant::now() + Duration::from_secs(1));
                        }
                    }
                }
            }
            let scanned = Instant::now();
            match events.recv_timeout(next.saturating_duration_since(scanned)) {
                Ok(Wake::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                Ok(Wake::Event) | Err(RecvTimeoutError::Timeout) => {}
            }
            std::thread::sleep(EVENT_SCAN_INTERVAL.saturating_sub(scanned.elapsed()));
            // Everything that arrived meanwhile is covered by the next scan.
            while let Ok(w) = events.try_recv() {
                if matches!(w, Wake::Stop) {
                    return;
                }
            }
        }
    }

    /// Watches run folders (and inboxes) that exist now but were not watched yet.
    fn watch_new_folders(&self, w: &mut RecommendedWatcher, watched: &mut HashSet<PathBuf>) {
        for run in &self.runs {
            let dirs = std::iter::once(&run.config.dir).chain(run.config.inbox.as_ref());
            for dir in dirs {
                if watched.contains(dir) || !dir.is_dir() {
                    continue;
                }
                match w.watch(dir, RecursiveMode::Recursive) {
                    Ok(()) => {
                        watched.insert(dir.clone());
                    }
                    Err(e) => tracing::warn!(dir = %dir.display(), error = %e,
                        "cannot watch folder; relying on the periodic rescan"),
                }
            }
        }
    }
}

/// A file-system watcher that sends [`Wake::Event`] on every change; None (with a warning)
/// where the platform offers none, leaving the rescan to find everything.
pub fn watcher(tx: Sender<Wake>) -> Option<RecommendedWatcher> {
    let handler = move |res: notify::Result<notify::Event>| {
        if res.is_ok() {
            let _ = tx.send(Wake::Event);
        }
    };
    match notify::recommended_watcher(handler) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "no file-system events; relying on the periodic rescan");
            None
        }
    }
}
