//! The dashboard under load beside a scoring daemon: `cargo bench --bench serve_load`.
//!
//! A `watch` serving its dashboard scores three runs' checkpoints twice: first with no client,
//! then while 50 clients each hold an event stream open and poll the API every 500 ms for
//! 30 s, loopback only. Reported: requests, errors, latency quantiles (goal: p99 under
//! 100 ms), and the mean scoring time per job without and with the load (goal: at most 10%
//! slower), measured in the same run.

use std::time::Duration;

#[path = "../tests/common/mod.rs"]
mod common;
use common::dashboard::{load, Watched, RUNS};

const CLIENTS: usize = 50;
const SECONDS: u64 = 30;
/// Checkpoints per run in each phase.
const PER_RUN: u64 = 4;

fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len().max(1) as f64
}

fn main() {
    let w = Watched::start("default", "", "");
    let jobs = (RUNS.len() as u64 * PER_RUN) as i64;
    for step in 1..=PER_RUN {
        for (run, _, _) in RUNS {
            w.add_checkpoint(run, step * 100);
        }
    }
    w.wait_done(jobs, Duration::from_secs(1800));
    let quiet = w.score_secs();

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let url = w.url.clone();
    let report = std::thread::scope(|s| {
        let clients = s.spawn(|| {
            rt.block_on(load(
                &url,
                CLIENTS,
                Duration::from_secs(SECONDS),
                Duration::from_millis(500),
            ))
        });
        // The checkpoints of the loaded phase land once every client is connected.
        std::thread::sleep(Duration::from_secs(1));
        for step in PER_RUN + 1..=2 * PER_RUN {
            for (run, _, _) in RUNS {
                w.add_checkpoint(run, step * 100);
            }
        }
        clients.join().expect("clients")
    });
    w.wait_done(2 * jobs, Duration::from_secs(1800));
    let all = w.score_secs();
    let loaded_jobs = all.len() - quiet.len();
    let loaded = &all[quiet.len()..];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{CLIENTS} clients for {SECONDS} s: {} requests, {} errors, {} event streams \
         (fewest events {})",
        report.latencies.len(),
        report.errors.len(),
        report.events.len(),
        report.events.iter().min().copied().unwrap_or(0)
    );
    for e in report.errors.iter().take(5) {
        println!("  error: {e}");
    }
    println!(
        "latency: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms (goal < 100 ms), max {:.2} ms",
        ms(report.quantile(0.5)),
        ms(report.quantile(0.9)),
        ms(report.quantile(0.99)),
        ms(report.quantile(1.0))
    );
    println!(
        "scoring: {:.3} s per job without clients ({} jobs), {:.3} s with them ({} jobs \
         scored during the load): {:.2}x (goal <= 1.10x)",
        mean(&quiet),
        quiet.len(),
        mean(loaded),
        loaded_jobs,
        mean(loaded) / mean(&quiet)
    );
}
