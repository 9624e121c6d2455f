//! Following the commits of workers in other processes (Slurm jobs): the daemon polls the
//! store and, when new results are in, runs the same work after a commit that its in-process
//! workers run ([`AfterCommit`]): paired gaps, TensorBoard scalars, alert rules, then charts.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::worker::AfterCommit;
use crate::error::one_line;
use crate::store::jobs::DoneMark;
use crate::store::Store;

/// How often the store is asked for new commits: one grouped count of done jobs.
const POLL: Duration = Duration::from_secs(2);

/// Least time between two chart redraws while workers are still committing, as in-process
/// workers do it.
const CHART_EVERY: Duration = Duration::from_secs(10);

/// Runs the work after a commit for commits made elsewhere.
pub struct Follower {
    /// Its own store connection.
    pub store: Store,
    /// Run ids of the daemon.
    pub runs: Vec<i64>,
    /// Evalset ids of the daemon.
    pub evalsets: Vec<i64>,
    /// The work after a commit.
    pub after_commit: AfterCommit,
}

impl Follower {
    /// Catches up on what was committed before this start, then follows new commits until
    /// `stop` is set. Store errors are logged and retried at the next poll.
    pub fn run(mut self, stop: &AtomicBool) -> anyhow::Result<()> {
        let span = tracing::info_span!("commits");
        let _enter = span.enter();
        // What was committed before a restart, or while no daemon ran (gaps and firings are
        // stored once).
        let mut seen = self.marks().unwrap_or_default();
        self.after_commit.update(&mut self.store);
        self.after_commit.draw_charts(&self.store, None);
        let mut stale: Vec<i64> = Vec::new();
        let mut drawn = Instant::now();
        while !stop.load(Ordering::SeqCst) {
            sleep_unless(stop, POLL);
            let Some(marks) = self.marks() else { continue };
            let changed: Vec<i64> = marks
                .iter()
                .filter(|(es, mark)| seen.get(es) != Some(mark))
                .map(|(es, _)| *es)
                .collect();
            seen = marks;
            if !changed.is_empty() {
                self.after_commit.update(&mut self.store);
                for es in changed {
                    if !stale.contains(&es) {
                        stale.push(es);
                    }
                }
            }
            // As in-process workers do: at once when nothing is left to score, else at most
            // every CHART_EVERY, so a backlog is not drawn after each checkpoint.
            if !stale.is_empty() && (drawn.elapsed() >= CHART_EVERY || self.queue_idle()) {
                self.after_commit.draw_charts(&self.store, Some(&stale));
                stale.clear();
                drawn = Instant::now();
            }
        }
        if !stale.is_empty() {
            self.after_commit.draw_charts(&self.store, Some(&stale));
        }
        Ok(())
    }

    fn marks(&self) -> Option<BTreeMap<i64, DoneMark>> {
        self.store
            .done_marks(&self.runs, &self.evalsets)
            .map_err(|e| tracing::error!(error = %one_line(&e), "reading the scored jobs"))
            .ok()
    }

    /// Whether no job is due or running.
    fn queue_idle(&self) -> bool {
        self.store
            .queue_load(&self.runs, &self.evalsets)
            .is_ok_and(|l| l.due == 0 && l.running == 0)
    }
}

/// Sleeps for `d`, waking early when `stop` is set.
fn sleep_unless(stop: &AtomicBool, d: Duration) {
    let until = Instant::now() + d;
    while !stop.load(Ordering::SeqCst) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}
