//! `filtermon worker`: one worker on its own, as a Slurm job (or any launcher, or by hand) runs
//! it. It scores the jobs of the config's runs × evalsets on the config's first device until
//! the queue has had no due job for the idle time, then exits 0.
//!
//! The store is the only coordination: the worker leases, renews and commits exactly as a
//! daemon's workers do, and reclaims the leases of dead workers. The work after a commit
//! (paired gaps, TensorBoard, alerts, charts) is left to the daemon, which sees the commits in
//! the store. On SIGINT/SIGTERM it takes no new job and returns its current one to the queue
//! at once (Slurm follows SIGTERM with SIGKILL after its KillWait); a worker killed outright
//! loses its lease, which another worker reclaims.

use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use super::{
    new_worker, open_device, register_evalsets, register_runs, stop_on_signal, worker_name, Workers,
};
use crate::monitor::config::WatchConfig;
use crate::store::jobs::owner_id;
use crate::store::Store;

/// Runs one worker on the config's first device until the queue has had no due job for
/// `idle`, or until SIGINT/SIGTERM.
pub fn run(config: &WatchConfig, idle: Duration) -> anyhow::Result<()> {
    let stop = stop_on_signal()?;
    let device = open_device(config, &config.devices[0])?;
    let mut store = Store::open(&config.db)?;
    let evalsets = Arc::new(register_evalsets(config, &mut store)?);
    let runs = register_runs(config, &mut store, &evalsets)?;
    let run_ids: Vec<i64> = runs.iter().map(|r| r.id).collect();
    drop(store);

    let halt = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let owner = owner_id();
    let name = worker_name(&config.devices, 0);
    let mut worker = new_worker(
        config,
        &evalsets,
        &run_ids,
        &owner,
        name.clone(),
        device,
        &halt,
    )?;
    worker.idle_exit = Some(idle);
    let (waker, wake) = mpsc::channel::<()>();
    let mut workers = Workers::new(halt);
    workers.spawn(worker, wake, waker)?;
    tracing::info!(owner = %owner, runs = config.runs.len(), evalsets = config.evalsets.len(),
        worker = %name, idle_secs = idle.as_secs_f64(), "worker started");
    if workers.wait(&stop).is_none() && stop.load(Ordering::SeqCst) {
        tracing::info!("stop requested; returning the current job to the queue");
    }
    // No grace: the job goes back to the queue now, before Slurm's SIGKILL could leave it to
    // wait for its lease to expire.
    let result = workers.shut_down(&config.db, Duration::ZERO);
    tracing::info!("worker stopped");
    result
}
