//! How busy the store is, for the dashboard and Prometheus: the queue by state, each run's
//! last scoring, and marks that change whenever a page has something new to show.

use std::collections::BTreeMap;

use serde::Serialize;

use super::sql::{params, Exec};
use super::Store;

/// Jobs by state across every run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QueueCounts {
    /// Waiting (including retries not yet due).
    pub queued: u64,
    /// Being scored.
    pub running: u64,
    /// Scored.
    pub done: u64,
    /// Out of attempts.
    pub failed: u64,
}

impl Store {
    /// Jobs by state.
    pub fn queue_counts(&self) -> anyhow::Result<QueueCounts> {
        let mut counts = QueueCounts::default();
        for row in self
            .db
            .query("SELECT state, COUNT(*) FROM jobs GROUP BY state", params![])?
        {
            let (state, n): (String, u64) = (row.get(0)?, row.get(1)?);
            match state.as_str() {
                "queued" => counts.queued = n,
                "running" => counts.running = n,
                "done" => counts.done = n,
                _ => counts.failed = n,
            }
        }
        Ok(counts)
    }

    /// When each run last had a job scored (Unix seconds), for runs that had one.
    pub fn last_scored(&self) -> anyhow::Result<BTreeMap<String, f64>> {
        self.db
            .query(
                "SELECT r.name, MAX(j.finished_at) FROM jobs j
                 JOIN checkpoints c ON c.id = j.checkpoint_id JOIN runs r ON r.id = c.run_id
                 WHERE j.state = 'done' GROUP BY r.name",
                params![],
            )?
            .iter()
            .map(|r| Ok((r.get(0)?, r.get(1)?)))
            .collect()
    }
}

/// What the dashboard tells its pages about: each part changes exactly when a page showing
/// it needs fresh data.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChangeMarks {
    /// Results stored, and the newest commit time.
    pub results: (i64, f64),
    /// Alerts stored, and how many are acknowledged.
    pub alerts: (i64, i64),
    /// Jobs by state.
    pub queue: QueueCounts,
}

impl Store {
    /// The current [`ChangeMarks`].
    pub fn change_marks(&self) -> anyhow::Result<ChangeMarks> {
        let r = self.db.query_one(
            "SELECT (SELECT COUNT(*) FROM results), (SELECT COALESCE(MAX(scored_at), 0) FROM results),
                    (SELECT COUNT(*) FROM alerts), (SELECT COUNT(acked_at) FROM alerts)",
            params![],
        )?;
        Ok(ChangeMarks {
            results: (r.get(0)?, r.get(1)?),
            alerts: (r.get(2)?, r.get(3)?),
            queue: self.queue_counts()?,
        })
    }
}
